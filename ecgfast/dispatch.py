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
    "nt_xent": ("auto", "eager", "streaming", "triton"),
    "encoder_block": ("auto", "eager", "triton"),
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


#: "auto" uses the streaming NT-Xent on non-CUDA devices from this many rows (2N) up.
NT_XENT_STREAMING_MIN_ROWS = 4096
_NT_XENT_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _triton_interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_nt_xent_backend(backend: str, z: torch.Tensor, n_total: int | None = None) -> str:
    """Concrete backend for NT-Xent on embeddings like ``z`` (one view, N rows; ``n_total``
    rows over all ranks of a distributed batch, default N).

    "auto": "triton" for CUDA tensors in fp32/bf16/fp16 (fp64 goes to "streaming"),
    "streaming" elsewhere when 2N >= ``NT_XENT_STREAMING_MIN_ROWS``, "eager" otherwise.
    An explicit "triton" on a non-CUDA tensor is refused unless TRITON_INTERPRET=1.
    """
    check_backend("nt_xent", backend)
    if backend == "auto":
        if z.is_cuda:
            return "triton" if z.dtype in _NT_XENT_TRITON_DTYPES else "streaming"
        n = z.shape[0] if n_total is None else n_total
        return "streaming" if 2 * n >= NT_XENT_STREAMING_MIN_ROWS else "eager"
    if backend == "triton":
        if not z.is_cuda and not _triton_interpreting():
            raise ValueError(
                f"backend='triton' needs CUDA tensors, but the embeddings are on {z.device} "
                "(use backend='streaming' or 'eager' on the CPU; TRITON_INTERPRET=1 runs the "
                "kernels on the CPU for tests)"
            )
        if z.dtype not in _NT_XENT_TRITON_DTYPES:
            raise ValueError(
                f"backend='triton' takes float32, bfloat16 or float16 embeddings, got {z.dtype} "
                "(use backend='streaming' for float64)"
            )
    return backend


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, backend: str,
            shard=None) -> torch.Tensor:
    """Dispatch NT-Xent; arguments already validated by :func:`ecgfast.losses.nt_xent`.

    ``shard``: this rank's :class:`ecgfast.distributed.RowShard` when the batch is spread
    over ranks (every backend then computes its own anchor rows against the gathered
    batch and returns the global loss), None otherwise.
    """
    resolved = resolve_nt_xent_backend(backend, z1, None if shard is None else shard.total)
    if resolved == "eager":
        if shard is None:
            return ops.nt_xent_reference(z1, z2, temperature)
        keys = shard.gather_with_grad(z1), shard.gather_with_grad(z2)
        part = ops.nt_xent_rows_reference(*keys, temperature, shard.start, shard.count)
        return shard.join_loss(part / (2 * shard.total))
    if resolved == "streaming":
        from ecgfast.streaming import nt_xent_streaming

        return nt_xent_streaming(z1, z2, temperature, shard=shard)
    if resolved == "triton":
        try:
            from ecgfast.kernels.ntxent import nt_xent_triton
        except ImportError as err:  # pragma: no cover - triton is a Linux dependency
            raise ValueError(f"backend='triton' is unavailable: cannot import Triton ({err})") from err
        if z1.dtype != z2.dtype:
            dtype = torch.promote_types(z1.dtype, z2.dtype)
            z1, z2 = z1.to(dtype), z2.to(dtype)
        return nt_xent_triton(z1, z2, temperature, input_precision=_fp32_dot_precision(),
                              shard=shard)
    raise AssertionError(f"unhandled backend {resolved!r}")  # pragma: no cover


def _fp32_dot_precision() -> str:
    """The fp32 ``tl.dot`` mode for NT-Xent: PyTorch's own choice for fp32 CUDA matmuls.

    "tf32" when ``torch.backends.cuda.matmul`` allows TF32, else "ieee" (PyTorch's default).
    """
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    if precision in ("tf32", "ieee"):
        return precision
    return "tf32" if matmul.allow_tf32 else "ieee"


_ENCODER_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ENCODER_AUTO_WARNED: set = set()


def _encoder_triton_refusal(x: torch.Tensor | None, block=None) -> str | None:
    """Why the Triton encoder cannot run on ``x`` (None when it can)."""
    if x is None:
        return None
    if not x.is_cuda and not _triton_interpreting():
        return (f"backend='triton' needs CUDA tensors, but the input is on {x.device} (use "
                "backend='eager' or 'auto' on the CPU; TRITON_INTERPRET=1 runs the kernels on "
                "the CPU for tests)")
    if x.dtype not in _ENCODER_TRITON_DTYPES:
        return (f"backend='triton' takes float32, bfloat16 or float16 inputs, got {x.dtype} "
                "(use backend='eager')")
    if block is not None and block.activation == "leaky_relu" and block.negative_slope < 0:
        return (f"backend='triton' needs negative_slope >= 0, got {block.negative_slope} "
                "(use backend='eager')")
    return None


def resolve_encoder_backend(backend: str, x: torch.Tensor | None = None, block=None) -> str:
    """Concrete backend for the encoder blocks on inputs like ``x``.

    "auto": "triton" for CUDA tensors in fp32/bf16/fp16 when Triton imports, "eager"
    otherwise (a one-time warning when a CUDA input cannot take the kernels). Tracing
    (ONNX export, torch.jit) and torch.compile always get "eager", the same maths.
    An explicit "triton" that cannot run raises ValueError naming the reason.
    """
    check_backend("encoder_block", backend)
    if backend == "eager" or x is None:
        return "eager" if backend == "auto" else backend
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return "eager"
    refusal = _encoder_triton_refusal(x, block)
    if backend == "auto":
        if not x.is_cuda:
            return "eager"
        if refusal is None:
            try:
                import ecgfast.kernels.encoder_block  # noqa: F401
            except ImportError as err:  # pragma: no cover - triton is a Linux dependency
                refusal = f"Triton cannot be imported ({err})"
        if refusal is not None:
            if refusal not in _ENCODER_AUTO_WARNED:
                import warnings

                _ENCODER_AUTO_WARNED.add(refusal)
                warnings.warn(f"encoder backend 'auto' falls back to eager: {refusal}",
                              RuntimeWarning, stacklevel=3)
            return "eager"
        return "triton"
    if refusal is not None:
        raise ValueError(refusal)
    return backend


def encoder_block(block, x: torch.Tensor, backend: str) -> torch.Tensor:
    """Run one :class:`ecgfast.layers.EncoderBlock` on ``x`` with the chosen backend."""
    resolved = resolve_encoder_backend(backend, x, block)
    if resolved == "triton":
        try:
            from ecgfast.kernels.encoder_block import encoder_block_triton
        except ImportError as err:  # pragma: no cover - triton is a Linux dependency
            raise ValueError(f"backend='triton' is unavailable: cannot import Triton ({err})") from err
        return encoder_block_triton(block, x)
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
