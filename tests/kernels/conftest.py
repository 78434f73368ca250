"""Kernel tests run the Triton kernels on the CPU under TRITON_INTERPRET=1 when there is no
CUDA GPU. Triton reads the variable when a kernel is decorated (module import), so it is set
here, at collection time, before any test module imports ``ecgfast.kernels``.

On CUDA every kernel test runs with TF32 off for PyTorch's fp32 matmuls and convolutions
(the kernels follow that setting): TF32 noise flips ReLU masks and pool argmaxes, and one
flip is a 2-3 % gradient error. Tests of TF32 itself set it explicitly."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _interpreter_broken() -> str | None:
    """Why the interpreter cannot run the kernels here (None: it can): Triton < 3.8's
    interpreter fails with numpy >= 2.4 (the lent GPU image has Triton 3.6, numpy 2.5)."""
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


INTERPRETED = ("test_nt_xent_triton.py", "test_encoder_block_triton.py",
               "test_encoder_block_triton_dispatch.py", "test_encoder_block_triton_keys.py")


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
