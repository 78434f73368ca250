"""The one place a backend is chosen for each fused op.

Every backend of an op takes the same inputs and declares itself in its own module
(``BACKEND``, a :class:`~ecgfast.ops.backend.Backend`: the function that runs it, its
:class:`~ecgfast.ops.backend.Capabilities`, its limits). This module knows where each
backend lives (:data:`_MODULES`), imports it lazily (so a machine without Triton or a GPU
runs the references), orders the backends for ``"auto"``, formats the reasons a backend
was refused, and runs the chosen one (:func:`nt_xent`, :func:`encoder_block`). Under
tracing (:func:`ecgfast.ops.backend.tracing`) a backend that is not traceable is replaced
by "eager".

Backend names: "eager" (the plain-PyTorch reference in :mod:`ecgfast.ops`), "streaming"
(plain PyTorch that never materialises the large intermediate), "triton" (Triton kernels
on CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``), "auto" (the first backend
of :func:`auto_order` that can run on the inputs). An explicit backend that cannot run
is an error naming every reason, never a silent substitution.
"""

from __future__ import annotations

import importlib
import warnings

import torch

from ecgfast.ops.backend import Backend, tracing

BACKENDS = ("auto", "eager", "streaming", "triton")

#: Where each op's backends live; each module defines ``BACKEND``.
_MODULES = {
    "nt_xent": {
        "eager": "ecgfast.ops.nt_xent",
        "streaming": "ecgfast.ops.nt_xent_streaming",
        "triton": "ecgfast.kernels.nt_xent",
    },
    "encoder_block": {
        "eager": "ecgfast.ops.encoder_block",
        "triton": "ecgfast.kernels.encoder_block",
    },
}

#: "auto" uses the streaming NT-Xent on non-CUDA devices from this many rows (2N) up.
NT_XENT_STREAMING_MIN_ROWS = 4096


class BackendUnavailable(ValueError):
    """A backend cannot run: not installed, or not for these inputs."""


# ------------------------------------------------------------------ lookup


def available(op: str) -> tuple[str, ...]:
    """Backend names ``op`` accepts ("auto" first)."""
    return ("auto", *_MODULES[op])


def check_backend(op: str, backend: str, argname: str = "backend") -> str:
    """Validate a backend name for ``op`` and return it; raise ValueError otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"{argname} must be one of {BACKENDS}, got {backend!r}")
    if backend not in available(op):
        raise ValueError(f"{argname}={backend!r} is not available for {op} in this version of "
                         f"ecgfast (available: {available(op)})")
    return backend


def load(op: str, name: str) -> Backend:
    """The :class:`Backend` ``name`` of ``op``; BackendUnavailable if it cannot be imported."""
    check_backend(op, name)
    try:
        module = importlib.import_module(_MODULES[op][name])
    except ImportError as err:  # pragma: no cover - triton is a Linux dependency
        raise BackendUnavailable(f"{op} backend {name!r} is unavailable: {err}") from err
    return module.BACKEND


def auto_order(op: str, x: torch.Tensor, n_rows: int | None = None) -> tuple[str, ...]:
    """Backends "auto" tries for ``op`` on inputs like ``x``, fastest first.

    NT-Xent (``n_rows``: 2N over all ranks): triton, streaming, eager on CUDA; on other
    devices streaming first from 2N >= :data:`NT_XENT_STREAMING_MIN_ROWS` rows, eager
    first below. Encoder block: triton then eager on CUDA, eager elsewhere.
    """
    if op == "nt_xent":
        if x.is_cuda:
            return ("triton", "streaming", "eager")
        big = (n_rows if n_rows is not None else 2 * x.shape[0]) >= NT_XENT_STREAMING_MIN_ROWS
        return ("streaming", "eager") if big else ("eager", "streaming")
    if op == "encoder_block":
        return ("triton", "eager") if x.is_cuda else ("eager",)
    raise ValueError(f"unknown op {op!r}")


_AUTO_WARNED: set[str] = set()


def _refusal(backend: str, op: str, reasons: list[str]) -> str:
    return f"backend={backend!r} cannot run {op}: " + "; ".join(reasons)


def select(op: str, requested: str, *inputs, n_rows: int | None = None) -> Backend:
    """The backend that runs ``op`` on ``inputs`` (the op's common arguments).

    An explicit name is returned if it can run, else BackendUnavailable with every reason.
    Under :func:`tracing` a backend that is not traceable is replaced by "eager" (the
    same maths). "auto" returns the first of :func:`auto_order` that can run; skipping
    a CUDA-preferred backend warns once per reason.
    """
    check_backend(op, requested)
    if requested != "auto":
        try:
            backend = load(op, requested)
        except BackendUnavailable:
            if tracing():
                return load(op, "eager")
            raise
        if not backend.capabilities.traceable and tracing():
            return load(op, "eager")
        reasons = backend.not_supported_reasons(*inputs)
        if reasons:
            raise BackendUnavailable(_refusal(requested, op, reasons))
        return backend
    order = auto_order(op, inputs[0], n_rows)
    skipped = []
    for name in order:
        try:
            backend = load(op, name)
        except BackendUnavailable as err:
            skipped.append(str(err))
            continue
        reasons = backend.not_supported_reasons(*inputs)
        if not reasons:
            if skipped and inputs[0].is_cuda and not tracing():
                message = f"{op} backend 'auto' falls back to {name}: " + " | ".join(skipped)
                if message not in _AUTO_WARNED:
                    _AUTO_WARNED.add(message)
                    warnings.warn(message, RuntimeWarning, stacklevel=3)
            return backend
        skipped.append(_refusal(name, op, reasons))
    raise BackendUnavailable(f"no backend can run {op}: " + " | ".join(skipped))


def resolve(op: str, requested: str, *inputs, n_rows: int | None = None) -> str:
    """Name of the backend :func:`select` picks (for tests and logs)."""
    return select(op, requested, *inputs, n_rows=n_rows).name


# ------------------------------------------------------------------ the ops


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, backend: str,
            shard=None) -> torch.Tensor:
    """NT-Xent with the chosen backend; arguments validated by :func:`ecgfast.losses.nt_xent`.

    ``shard``: this rank's :class:`ecgfast.ops.nt_xent_distributed.RowShard` when the batch
    is spread over ranks (every backend then computes its own anchor rows against the gathered
    batch and returns the global loss), None otherwise.
    """
    n_rows = None if shard is None else 2 * shard.total
    chosen = select("nt_xent", backend, z1, z2, temperature, shard, n_rows=n_rows)
    return chosen.run(z1, z2, temperature, shard)


def encoder_block(x: torch.Tensor, params, spec, dropout_keys, backend: str) -> torch.Tensor:
    """One encoder block with the chosen backend, ``(x, params, spec, dropout_keys)`` as
    :func:`ecgfast.ops.encoder_block.encoder_block` takes them (a
    :class:`~ecgfast.ops.encoder_block.BlockParams`, a :class:`~ecgfast.ops.encoder_block.BlockSpec`
    and None or the (2, B) int32 dropout keys)."""
    chosen = select("encoder_block", backend, x, params, spec, dropout_keys)
    return chosen.run(x, params, spec, dropout_keys)

