"""Mixed precision, decided here: the run's dtype and gradient scaler, and how the ops
that autocast cannot see run under it.

``--precision`` / :attr:`ecgfast.training.PretrainConfig.precision`, resolved once per run
by :class:`Precision`:

- "fp32": no autocast.
- "bf16": ``torch.autocast(device, bfloat16)``; on CUDA it needs a GPU that supports
  bf16 (``torch.cuda.is_bf16_supported()``); on the CPU it runs everywhere (with native
  instructions on CPUs with AVX-512 BF16 / AMX, converted through fp32 elsewhere).
- "fp16": autocast in float16 with a :class:`torch.amp.GradScaler` (the scaled loss keeps
  small fp16 gradients from flushing to zero); CUDA only, refused on the CPU.
- "auto": bf16 on CUDA GPUs that support it and on CPUs that compute it natively (AMX-BF16
  or AVX512-BF16, :func:`cpu_has_native_bf16`: measured faster than fp32 on such a CPU
  with the same loss curve: benchmarks/README.md), fp32 elsewhere (bf16 without those
  instructions was not measured faster, so it is not chosen for the user).

The training step runs every forward pass under :meth:`Precision.autocast`. Parameters,
the loss and the optimizer state stay fp32: autocast casts the inputs of its listed ops,
and the ops it cannot see (the dispatched backends, the losses) run through
:func:`op_precision` by the rule :data:`OP_PRECISION` gives each: the encoder block in the
autocast dtype (its input and parameters cast at the dispatch boundary: the Triton
autograd Functions are not seen by autocast, and the eager CPU conv backward needs one
dtype), the losses in fp32. The rule holds under any ``torch.autocast``, ours or the
caller's own training loop's.

A non-finite loss under fp16 skips the step and halves the scale (what the scaler does
for non-finite gradients); :data:`MAX_CONSECUTIVE_SKIPS` skipped steps in a row stop the
run (:func:`ecgfast.training.pretrain` raises ``TrainingDivergedError``). Under fp32 and
bf16 the first non-finite loss stops it.

fp32 inputs of the Triton ops' ``tl.dot`` follow PyTorch's own TF32 setting for the
matching cuBLAS or cuDNN op (:func:`fp32_dot_precision`).
"""

from __future__ import annotations

import contextlib
import math

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: fp16 steps in a row with a non-finite loss before the run stops.
MAX_CONSECUTIVE_SKIPS = 5


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    return name


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16), from
    torch's own CPU detection (cpuinfo), else from the kernel's CPU flags on Linux."""
    try:
        capability = torch._C._cpu._get_cpu_capability()
        return bool(capability.get("amx_bf16") or capability.get("avx512_bf16"))
    except (AttributeError, RuntimeError):  # a torch without it: read the flags
        pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """"fp32", "bf16" or "fp16" for ``name`` on ``device``; ValueError when the device
    cannot run it."""
    check_precision(name)
    cuda = device.type == "cuda"
    if name == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if name == "fp16" and not cuda:
        raise ValueError(f"precision='fp16' needs a CUDA device (fp16 autocast with a gradient "
                         f"scaler), got {device}; use 'bf16' or 'fp32' on the CPU")
    if name == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision='bf16': {torch.cuda.get_device_name(device)} does not "
                         "support bfloat16; use 'fp16' or 'fp32'")
    return name


def fp32_dot_precision(kind: str) -> str:
    """The fp32 ``tl.dot`` mode of the Triton ops, "tf32" or "ieee": what PyTorch would use
    itself for the matching op.

    ``kind`` "matmul" follows ``torch.backends.cuda.matmul`` (cuBLAS), "conv" follows
    ``torch.backends.cudnn.conv`` (cuDNN). Read through the ``fp32_precision`` API where
    PyTorch has it (the legacy ``allow_tf32`` getters raise once that API is in use, and
    its getter already resolves inheritance from the global setting), else through the
    legacy flags.
    """
    if kind == "matmul":
        node, flags = torch.backends.cuda.matmul, torch.backends.cuda.matmul
    elif kind == "conv":
        node, flags = getattr(torch.backends.cudnn, "conv", None), torch.backends.cudnn
    else:
        raise ValueError(f"kind must be 'matmul' or 'conv', got {kind!r}")
    precision = getattr(node, "fp32_precision", None) if node is not None else None
    if precision is not None:
        return "tf32" if precision == "tf32" else "ieee"
    return "tf32" if flags.allow_tf32 else "ieee"


#: How each op that autocast does not see runs while autocast is on (autocast is off
#: inside each): "autocast": in the autocast dtype, its floating-point tensors (input and
#: parameters) cast to it; "as given": on its inputs as they come (NT-Xent: every backend
#: accumulates in fp32 by itself); "fp32": half-precision inputs cast to fp32, whether
#: autocast is on or not (the pretext loss's binary cross entropies).
OP_PRECISION = {
    "encoder_block": "autocast",
    "nt_xent": "as given",
    "transformation_recognition_loss": "fp32",
}
_HALF = (torch.float16, torch.bfloat16)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs in on ``device_type`` now, or None when it is off (or the
    device type has no autocast, e.g. "meta")."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except RuntimeError:
        pass
    return None


@contextlib.contextmanager
def op_precision(op: str, *inputs):
    """The op ``op`` by its rule in :data:`OP_PRECISION`: yields ``inputs`` cast as the
    rule says (tensors, also inside tuples such as a block's parameters), and turns
    autocast off until the block ends when it is on for the first tensor's device::

        with op_precision("nt_xent", z1, z2) as (a, b):
            loss = dispatch.nt_xent(a, b, ...)
    """
    rule = OP_PRECISION[op]
    device_type = next(_tensors(inputs)).device.type
    dtype = autocast_dtype(device_type)
    if rule == "fp32":
        inputs = _cast(inputs, lambda t: t.float() if t.dtype in _HALF else t)
    elif rule == "autocast" and dtype is not None:
        inputs = _cast(inputs, lambda t: t.to(dtype) if t.is_floating_point() else t)
    if dtype is None:
        yield inputs
        return
    with torch.autocast(device_type, enabled=False):
        yield inputs


def _tensors(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, tuple):
            yield from _tensors(a)


def _cast(args: tuple, cast) -> tuple:
    """``args`` with ``cast`` applied to every tensor, inside tuples (named ones too)."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = cast(a)
        elif isinstance(a, tuple):
            parts = _cast(a, cast)
            a = type(a)(*parts) if hasattr(a, "_fields") else type(a)(parts)
        out.append(a)
    return tuple(out)


class Precision:
    """One run's precision: :meth:`autocast` for the forward passes, :meth:`scale` for the
    loss before backward, :meth:`step` for the optimizer (unscale, skip on overflow, update).

    ``name``: a :data:`PRECISIONS` entry, resolved for ``device`` by
    :func:`resolve_precision`. Its :meth:`state_dict` (the scaler's, JSON numbers) goes in
    the checkpoint so a resumed fp16 run continues with the same scale.
    """

    def __init__(self, name: str, device: torch.device):
        self.name = resolve_precision(name, device)
        self.device_type = device.type
        self.dtype = DTYPES[self.name]
        self.scaler = (torch.amp.GradScaler(device.type) if self.name == "fp16" else None)
        self.skipped_in_a_row = 0

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss if self.scaler is None else self.scaler.scale(loss)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def skip(self) -> bool:
        """Record a step whose loss was not finite; True when the run may go on (fp16,
        fewer than :data:`MAX_CONSECUTIVE_SKIPS` in a row), False when it must stop."""
        if self.scaler is None:
            return False
        self.skipped_in_a_row += 1
        self._set_scaler(self.scaler.get_scale() * self.scaler.get_backoff_factor(), 0)
        return self.skipped_in_a_row < MAX_CONSECUTIVE_SKIPS

    def finished_step(self) -> None:
        self.skipped_in_a_row = 0

    def state_dict(self) -> dict:
        if self.scaler is None:
            return {}
        return {"scale": float(self.scaler.get_scale()),
                "growth_tracker": int(self.scaler.state_dict()["_growth_tracker"]),
                "skipped_in_a_row": self.skipped_in_a_row}

    def load_state_dict(self, state: dict, where: str = "checkpoint") -> None:
        if self.scaler is None or not state:
            return
        scale, tracker = state.get("scale"), state.get("growth_tracker")
        skipped = state.get("skipped_in_a_row", 0)
        if not (isinstance(scale, float) and math.isfinite(scale) and scale > 0
                and isinstance(tracker, int) and tracker >= 0 and isinstance(skipped, int)):
            raise ValueError(f"{where}: invalid gradient scaler state {state!r}")
        self._set_scaler(scale, tracker)
        self.skipped_in_a_row = skipped

    def _set_scaler(self, scale: float, growth_tracker: int) -> None:
        self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": scale,
                                     "_growth_tracker": growth_tracker})
