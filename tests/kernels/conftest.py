"""What the kernel tests need, and the interpreter switch.

Requirements: torch and Triton installed, and either a CUDA GPU of compute capability 8.0 or
newer (the kernels run there) or none (they run on the CPU in Triton's interpreter, slowly,
on small shapes); no network. Without a CUDA GPU, TRITON_INTERPRET=1 is set here, at
collection time, before any test module imports ``ecgfast.kernels`` (Triton reads the
variable when a kernel is decorated, at module import).

On CUDA every kernel test runs with TF32 off for PyTorch's fp32 matmuls and convolutions
(the kernels follow that setting): TF32 noise flips ReLU masks and pool argmaxes, and one
flip is a 2-3 % gradient error. Tests of TF32 itself set it explicitly."""

import os

import pytest
import torch
from common import interpreter_broken  # benchmarks/common.py, on pytest's pythonpath

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


#: The test files that run Triton kernels (in the interpreter when there is no CUDA GPU).
INTERPRETED = ("test_nt_xent_triton.py", "test_encoder_block_triton.py",
               "test_encoder_block_triton_conv1d.py",
               "test_encoder_block_triton_se_residual_pool.py",
               "test_nt_xent_triton_production.py", "test_encoder_block_triton_autocast.py")


def pytest_collection_modifyitems(config, items):
    reason = None if torch.cuda.is_available() else interpreter_broken()
    if reason:
        for item in items:
            if item.path.name in INTERPRETED:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _fp32_strict_on_cuda():
    if not torch.cuda.is_available():
        yield
        return
    nodes = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    saved = [n.fp32_precision for n in nodes]
    for n in nodes:
        n.fp32_precision = "ieee"
    try:
        yield
    finally:
        for n, v in zip(nodes, saved):
            n.fp32_precision = v
