"""Kernel tests run the Triton kernels on the CPU under TRITON_INTERPRET=1 when there is no
CUDA GPU. Triton reads the variable when a kernel is decorated (module import), so it is set
here, at collection time, before any test module imports ``ecgfast.kernels``."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
