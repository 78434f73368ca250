"""What the encoder-block kernel tests share: the device, tolerances, small shapes, the
error measure, leaf copies of inputs and the production autograd Functions called with
keywords.

Imported as a plain module by the ``test_encoder_block_triton*.py`` files beside it (pytest
puts a test file's folder on ``sys.path``). Importing it imports the kernels, so it sets
TRITON_INTERPRET first when there is no CUDA GPU (conftest.py does too, at collection).

Tolerances (normwise relative error, ||got - want|| / ||want||, against a float32 reference
computed from the same, dtype-rounded, inputs and parameters):

- float32: 1e-5 under the interpreter (fp32 "ieee" dot); 1e-4 on CUDA, where conftest.py
  turns TF32 off for both the kernels and cuDNN (fp32 sums in another order).
- bfloat16, one kernel: 1e-2 (one rounding of the output to bf16, 2^-9 relative, plus the
  bf16 rounding of the output gradient); float16 (CUDA only): 2e-3.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # conftest.py does this too; harmless when already set
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ecgfast.kernels.encoder_block_conv1d import Conv1dActDropout
from ecgfast.kernels.encoder_block_se_residual_pool import SEResidualPool
from ecgfast.keyed import KeyedRandom
from ecgfast.ops.encoder_block import se_residual_pool as se_residual_pool_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
FP32_TOL = 1e-5 if INTERPRET else 1e-4
KERNEL_TOL = {torch.float32: FP32_TOL, torch.bfloat16: 1e-2, torch.float16: 2e-3}
DTYPES = [torch.float32, torch.bfloat16] + ([] if INTERPRET else [torch.float16])
#: Small, awkward widths for the whole-encoder grid (interpreter time); block 3's
#: shortcut (C_in = 20) takes the tl.dot projection, block 1's (C_in = 1) the FMA one.
#: Pool 5/2 instead of 8/2 and short kernels keep the interpreter's per-operation cost down;
#: the production shapes run in test_encoder_production_widths_match_eager.
SMALL = {"filters": (12, 20, 36), "kernel_sizes": (7, 4, 3), "se_reduction": 4, "pool_size": 5}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def leaves(*tensors, dtype=torch.float32):
    """Leaf copies on DEVICE in ``dtype`` and fp32 leaves of the same rounded values (the
    reference's inputs); None stays None."""
    low = [None if t is None else t.to(DEVICE, dtype).detach().requires_grad_() for t in tensors]
    ref = [None if t is None else t.detach().float().requires_grad_() for t in low]
    return low, ref


def grads(out, inputs, grad_out):
    """Gradients of ``out`` for every input that is not None (None where it is)."""
    present = [t for t in inputs if t is not None]
    got = torch.autograd.grad(out, present, grad_out)
    it = iter(got)
    return [None if t is None else next(it) for t in inputs]


def dropout_keys(seed: int, n: int, layers: int = 1) -> torch.Tensor:
    """Keyed-dropout keys of ``n`` samples on DEVICE: (n,) for one layer, else (layers, n)."""
    keys = KeyedRandom.for_batch(seed, n, DEVICE).dropout_keys(layers, DEVICE)
    return keys[0] if layers == 1 else keys


def conv1d_act_dropout(x, weight, bias, *, act="relu", negative_slope=0.2, p=0.0, keys=None,
                       write_sums=False):
    """The production conv Function, :class:`Conv1dActDropout`, with keywords: ``(y, sums)``
    (``sums`` None unless ``write_sums``); ``keys`` (B,) int32, used when p > 0."""
    return Conv1dActDropout.apply(x, weight, bias, act, float(negative_slope), float(p),
                                  keys.contiguous() if p > 0 else None, bool(write_sums))


def se_residual_pool(f, a, x, shortcut_weight, shortcut_bias, *, pool_size, pool_stride):
    """The production SE + residual + pool Function, :class:`SEResidualPool`, with the
    reference :func:`ecgfast.ops.encoder_block.se_residual_pool`'s arguments."""
    return SEResidualPool.apply(f, a, x, shortcut_weight, shortcut_bias, pool_size,
                                int(pool_stride))


def pool_reference(*args, pool_size, pool_stride, ties):
    """The reference; with ``ties`` (bf16/fp16 values tie), the global max's gradient goes
    to the first maximum, as in the kernel and max_pool1d (amax splits it among ties)."""
    if pool_size is None and ties:
        return se_residual_pool_ref(*args, pool_size=1, pool_stride=1).max(dim=-1).values
    return se_residual_pool_ref(*args, pool_size=pool_size, pool_stride=pool_stride)
