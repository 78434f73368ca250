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

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _interpreter_broken() -> str | None:
    """Why the interpreter cannot run the kernels here (None: it can). Triton before 3.8
    fails in its interpreter with numpy 2.4 or newer; the interpreted tests need Triton
    3.8+ or numpy older than 2.4 (a CUDA GPU runs them without the interpreter)."""
    try:
        import numpy
        import triton
    except ImportError:
        return None
    version = lambda v: tuple(int(p) for p in v.split(".")[:2])
    if version(triton.__version__) < (3, 8) and version(numpy.__version__) >= (2, 4):
        return (f"Triton {triton.__version__}'s interpreter does not run with numpy "
                f"{numpy.__version__} (needs Triton >= 3.8 or numpy < 2.4)")
    return None


#: The test files that run Triton kernels (in the interpreter when there is no CUDA GPU).
INTERPRETED = ("test_nt_xent_triton.py", "test_encoder_block_triton.py",
               "test_encoder_block_triton_conv1d.py",
               "test_encoder_block_triton_se_residual_pool.py")


def pytest_collection_modifyitems(config, items):
    reason = None if torch.cuda.is_available() else _interpreter_broken()
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
