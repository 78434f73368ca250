"""What every backend of a fused op declares, and the facts of the running process it reads.

Each backend module (the references and the streaming backend in :mod:`ecgfast.ops`, the
Triton kernels in ``ecgfast.kernels``) defines ``BACKEND``, a :class:`Backend`: the
function that runs it with the op's common signature, the devices and dtypes it supports
(:class:`Capabilities`) and the op-specific limits it cannot run under (``limits``,
returning reasons). :mod:`ecgfast.dispatch` knows where the backends live and picks one;
this module sits below every backend, so a backend imports nothing above itself.

The facts a backend reads here, each from one place:

- :func:`triton_interpreting`: whether Triton runs in its interpreter (the only reader
  of ``TRITON_INTERPRET``);
- :func:`tracing`: whether code is being traced (``torch.jit``, ``torch.compile``, ONNX
  export), under which only backends that declare ``traceable`` run, and the eager
  encoder conv keeps aten's backward (exporters see a plain ``conv1d``).

The fp32 ``tl.dot`` precision of the Triton ops is a precision decision and lives with
the others in :func:`ecgfast.precision.fp32_dot_precision`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def triton_interpreting() -> bool:
    """True when Triton kernels run in its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def tracing() -> bool:
    """True under ``torch.jit`` tracing, ``torch.compile`` or ONNX export."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export())


def dtype_names(dtypes) -> str:
    """``(float32, bfloat16, float16)`` -> "float32, bfloat16 or float16" (for messages)."""
    names = [str(d).removeprefix("torch.") for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports.

    Attributes:
        devices: device types it runs on (``None``: any, "meta" included).
        dtypes: floating dtypes of its input tensors.
        triton: Triton kernels: CUDA tensors, or CPU ones under the interpreter.
        traceable: runs under tracing/compile/export (see :func:`tracing`).
    """

    devices: tuple[str, ...] | None = None
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16,
                                       torch.float16)
    triton: bool = False
    traceable: bool = True

    def reasons(self, x: torch.Tensor) -> list[str]:
        """Why a backend with these capabilities cannot take ``x`` (empty when it can)."""
        out = []
        device = x.device.type
        if self.triton:
            if device != "cuda" and not (device == "cpu" and triton_interpreting()):
                out.append(f"it needs CUDA tensors, got {x.device} (TRITON_INTERPRET=1 runs "
                           "the kernels on CPU tensors, for tests)")
        elif self.devices is not None and device not in self.devices:
            out.append(f"it runs on {'/'.join(self.devices)} tensors, got {x.device}")
        if x.dtype not in self.dtypes:
            out.append(f"it takes {dtype_names(self.dtypes)} inputs, got {x.dtype}")
        if not self.traceable and tracing():
            out.append("it cannot run under tracing, torch.compile or ONNX export")
        return out


def _no_limits(*args, **kwargs) -> list[str]:
    return []


@dataclass(frozen=True)
class Backend:
    """One backend of one op: ``run(*inputs)`` with the op's common signature.

    ``limits(*inputs)`` returns op-specific reasons it cannot run (beyond the device and
    dtype of the first tensor input, which :attr:`capabilities` covers).
    """

    op: str
    name: str
    run: Callable
    capabilities: Capabilities = field(default_factory=Capabilities)
    limits: Callable[..., list[str]] = _no_limits

    def not_supported_reasons(self, *inputs) -> list[str]:
        return self.capabilities.reasons(inputs[0]) + list(self.limits(*inputs))
