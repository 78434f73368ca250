"""What every Triton kernel file shares: interpreter-aware buffers, the fp32 dot mode,
the launch device, the keyed-random hash. Op-specific code stays in the op's own file."""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl  # noqa: F401 (a @triton.jit function needs it in its globals)

from ecgfast.ops.backend import triton_interpreting as interpreting  # the one TRITON_INTERPRET read
from ecgfast.precision import fp32_dot_precision


@triton.jit
def mix32(x):
    """The in-kernel copy of :func:`ecgfast.keyed.mix32`, the bijective 32-bit hash of the
    keyed draws: ``x`` is a uint32 tensor (bitcast int32 with ``.to(tl.uint32,
    bitcast=True)``), shifts are logical and products wrap modulo 2^32, so the kernels draw
    bit for bit what :func:`ecgfast.keyed.dropout_keep` (the reference) draws."""
    x ^= x >> 16
    x *= 0x7FEB352D
    x ^= x >> 15
    x *= 0x846CA68B
    x ^= x >> 16
    return x


def buffer_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of a kernel's output buffers: fp32 for bf16 under the CPU interpreter.

    The interpreter casts fp32 -> bf16 by truncation (the GPU rounds to nearest even), which
    biases every stored value; there the kernels store fp32 and PyTorch rounds.
    """
    return torch.float32 if interpreting() and dtype == torch.bfloat16 else dtype


def dot_input_precision(dtype: torch.dtype, kind: str) -> str:
    """``tl.dot`` input precision for inputs of ``dtype``: PyTorch's fp32 choice for the
    matching ``kind`` ("matmul" or "conv", see :func:`ecgfast.precision.fp32_dot_precision`),
    "ieee" under the interpreter (numpy has no tf32) and for 16-bit inputs (ignored there)."""
    if dtype != torch.float32 or interpreting():
        return "ieee"
    return fp32_dot_precision(kind)


def launch_device(x: torch.Tensor, grid: tuple[int, ...] | None = None, what: str = ""):
    """Context that makes ``x``'s CUDA device current for a launch (Triton launches on the
    current device); a no-op for CPU tensors. With ``grid``, first :func:`check_grid`
    (ValueError naming ``what`` when the grid is over CUDA's limits)."""
    if grid is not None:
        check_grid(grid, what)
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def partial_sums(bsz: int, channels: int, n_tiles: int, like: torch.Tensor, needed: bool):
    """The fp32 (bsz, channels, n_tiles) buffer a kernel writes its per-time-tile partial
    sums to (summed in PyTorch: deterministic, no atomics), or ``like`` as the unused
    pointer argument when ``needed`` is false."""
    if not needed:
        return like
    return torch.empty((bsz, channels, n_tiles), device=like.device, dtype=torch.float32)


#: Largest flat element offset the kernels' int32 index arithmetic reaches.
MAX_INT32_OFFSET = 2**31 - 1
#: CUDA's grid limits: axis 0 up to 2^31 - 1 programs, axes 1 and 2 up to 65535 (so the
#: kernels put the batch, the axis that grows, on axis 0).
GRID_LIMITS = (2**31 - 1, 65535, 65535)


def check_grid(grid: tuple[int, ...], what: str) -> None:
    """ValueError naming ``what`` when ``grid`` exceeds :data:`GRID_LIMITS`."""
    for axis, (n, limit) in enumerate(zip(grid, GRID_LIMITS)):
        if n > limit:
            raise ValueError(f"{what}: {n} programs on grid axis {axis}, more than CUDA allows "
                             f"({limit}); grid {tuple(grid)}")


#: Input dtypes of every Triton kernel (fp32 accumulation inside).
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
