"""The one place that picks a backend for each fused op.

Models and losses call the functions here; only this module imports ``ecgfast.kernels``
(lazily), so a machine without Triton or a GPU runs the eager references.

Backends:
    "eager"      the plain-PyTorch reference in :mod:`ecgfast.ops`.
    "streaming"  plain PyTorch that never materialises the large intermediate (NT-Xent).
    "triton"     Triton kernels (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1).
    "auto"       the fastest backend available for the tensors at hand.
"""

from __future__ import annotations

import torch

from ecgfast import ops

BACKENDS = ("auto", "eager", "streaming", "triton")

# What exists for each op today. A backend listed in BACKENDS but not here is refused
# with an error that says so, never silently replaced.
_AVAILABLE = {
    "nt_xent": ("auto", "eager"),
    "encoder_block": ("auto", "eager"),
}


def check_backend(op: str, backend: str, argname: str = "backend") -> str:
    """Validate a backend name for ``op`` and return it; raise ValueError otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"{argname} must be one of {BACKENDS}, got {backend!r}")
    if backend not in _AVAILABLE[op]:
        raise ValueError(
            f"{argname}={backend!r} is not available for {op} in this version of ecgfast "
            f"(available: {_AVAILABLE[op]})"
        )
    return backend


def resolve_nt_xent_backend(backend: str, z: torch.Tensor) -> str:
    """Concrete backend for NT-Xent on embeddings like ``z`` (2N rows)."""
    check_backend("nt_xent", backend)
    return "eager" if backend == "auto" else backend


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, backend: str) -> torch.Tensor:
    """Dispatch NT-Xent; arguments already validated by :func:`ecgfast.losses.nt_xent`."""
    resolved = resolve_nt_xent_backend(backend, z1)
    if resolved == "eager":
        return ops.nt_xent_reference(z1, z2, temperature)
    raise AssertionError(f"unhandled backend {resolved!r}")  # pragma: no cover


def resolve_encoder_backend(backend: str, x: torch.Tensor | None = None) -> str:
    """Concrete backend for the encoder blocks on inputs like ``x``."""
    check_backend("encoder_block", backend)
    return "eager" if backend == "auto" else backend


def encoder_block(block, x: torch.Tensor, backend: str) -> torch.Tensor:
    """Run one :class:`ecgfast.layers.EncoderBlock` on ``x`` with the chosen backend."""
    resolved = resolve_encoder_backend(backend, x)
    if resolved == "eager":
        return ops.encoder_block(
            x,
            block.conv1.weight,
            block.conv1.bias,
            block.conv2.weight,
            block.conv2.bias,
            block.se.parameters_tuple() if block.se is not None else None,
            (block.shortcut.weight, block.shortcut.bias) if block.shortcut is not None else None,
            residual=block.residual,
            act=block.activation,
            negative_slope=block.negative_slope,
            p=block.dropout,
            training=block.training,
            pool_size=block.pool_size,
            pool_stride=block.pool_stride,
        )
    raise AssertionError(f"unhandled backend {resolved!r}")  # pragma: no cover
