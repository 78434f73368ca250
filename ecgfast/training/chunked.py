"""Chunked contrastive steps (GradCache) and the training step that runs them.

A contrastive loss needs the whole batch's embeddings at once, the encoder does not: a
:class:`ChunkedStep` embeds the batch in chunks of ``chunk_size`` windows, so that the
activations alive at a time are one chunk's, whatever the batch (Gao et al., "Scaling
Deep Contrastive Learning Batch Size under Memory Limited Setup", 2021):

1. under ``no_grad``, :meth:`~ecgfast.objectives.Contrastive.embed` each chunk;
2. :meth:`~ecgfast.objectives.Contrastive.join` on the whole batch's embeddings (under
   ``torchrun`` the loss gathers every rank's, as unchunked) and its gradient with
   respect to the embeddings (:meth:`ChunkedStep.backward`);
3. each chunk again with gradients, and backward of that chunk's rows of the embedding
   gradient, plus its share ``m / n`` of any per-window loss (``both``: the
   transformation loss).

Every random draw of a step (augmentations, dropout masks in the eager and the Triton
encoder, the pretext heads' dropout) comes from one :class:`~ecgfast.keyed.KeyedRandom`
over the batch, keyed by window: chunk ``[a, b)`` embeds with ``random.select(slice(a,
b))`` and so draws exactly what its windows draw in the unchunked pass, in pass 1 and
again in pass 3. The chunked step therefore computes the unchunked step's loss and
gradients, to float round-off (the convolutions of a chunk may round differently from
the whole batch's), whatever the chunk size.

The batch is cut into ``ceil(n / chunk_size)`` chunks in order; the last one is smaller
when ``chunk_size`` does not divide ``n``. A batch of at most ``chunk_size`` windows takes
the ordinary one-pass step. Under DDP the chunked step does not go
through DistributedDataParallel's forward: every rank accumulates its chunks' gradients
locally and :func:`average_gradients` averages them over ranks in one all-reduce.

``chunk_size="auto"`` (:func:`auto_chunk_size`): the largest chunk whose tensors saved for
backward, measured on a probe of :data:`AUTO_PROBE_WINDOWS` windows, take at most
:data:`AUTO_MEMORY_FRACTION` of the free memory: ``torch.cuda.mem_get_info`` on CUDA,
``MemAvailable`` of ``/proc/meminfo`` on the CPU (no chunking where that is unknown). The
other half is the margin for backward's temporaries, the embeddings and the loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from ecgfast.keyed import KeyedRandom
from ecgfast.precision import Precision, check_precision
from ecgfast.training.optim import LRSchedule, build_optimizer, check_optimizer_options, scaled_lr

AUTO_PROBE_WINDOWS = 16
AUTO_MEMORY_FRACTION = 0.5


def check_chunk_size(chunk_size, batch_size: int, objective: str):
    """Validate ``PretrainConfig.chunk_size``: None, "auto" or an int in [1, batch_size]."""
    if chunk_size is None:
        return None
    if objective == "transform":
        raise ValueError("chunk_size: the transformation objective has nothing to chunk (its "
                         "loss is a mean over windows: lower batch_size instead); chunking is "
                         "for the contrastive objectives")
    if chunk_size == "auto":
        return chunk_size
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, 'auto' or None, got {chunk_size!r}")
    if chunk_size > batch_size:
        raise ValueError(f"chunk_size ({chunk_size}) is larger than batch_size ({batch_size}); "
                         "leave it unset for one pass over the whole batch")
    return chunk_size


def check_step_options(cfg) -> None:
    """Check the step options of a :class:`ecgfast.training.PretrainConfig`."""
    check_chunk_size(cfg.chunk_size, cfg.batch_size, cfg.objective)
    check_precision(cfg.precision)
    check_optimizer_options(cfg)


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in order; the last may be shorter."""
    return [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]


class ChunkedStep:
    """Passes 1 and 2 of the module docstring for ``objective`` on ``windows`` (n, C, L).

    After construction :attr:`loss` (the whole batch's, no graph to the encoder) and
    :attr:`metrics` are known; :meth:`backward` accumulates every parameter's gradient.
    ``random``: the step's :class:`~ecgfast.keyed.KeyedRandom` over the n windows.
    ``autocast``: a callable returning the context the forward passes run in.
    """

    def __init__(self, objective, windows: torch.Tensor, random: KeyedRandom, chunk_size: int,
                 autocast):
        if not isinstance(random, KeyedRandom) or len(random) != windows.shape[0]:
            raise TypeError(f"ChunkedStep needs an ecgfast.keyed.KeyedRandom over the batch's "
                            f"{windows.shape[0]} windows (a torch.Generator's draws depend on "
                            f"the chunking), got {random!r}")
        self.objective, self.windows, self.random = objective, windows, random
        self.autocast = autocast
        self.bounds = chunk_bounds(windows.shape[0], chunk_size)
        n = windows.shape[0]
        views1, views2 = [], []
        local, metrics = None, {}
        with torch.no_grad(), autocast():
            for a, b in self.bounds:
                z, part, m = objective.embed(windows[a:b], random.select(slice(a, b)))
                views1.append(z[: b - a])
                views2.append(z[b - a:])
                share = (b - a) / n
                if part is not None:
                    local = part * share if local is None else local + part * share
                for k, v in m.items():
                    metrics[k] = v * share if k not in metrics else metrics[k] + v * share
        self.z1 = torch.cat(views1).requires_grad_()
        self.z2 = torch.cat(views2).requires_grad_()
        with autocast():
            self._joined, self.metrics = objective.join(self.z1, self.z2, local, metrics)
        self.loss = self._joined.detach()

    def backward(self, scale=lambda t: t) -> None:
        """Gradients of the loss (``scale``\\ d, e.g. by a GradScaler) into every
        parameter's ``.grad``, chunk by chunk."""
        g1, g2 = torch.autograd.grad(scale(self._joined), [self.z1, self.z2])
        n = self.windows.shape[0]
        for a, b in self.bounds:
            with self.autocast():
                z, part, _ = self.objective.embed(self.windows[a:b],
                                                  self.random.select(slice(a, b)))
            outputs, grads = [z], [torch.cat([g1[a:b], g2[a:b]]).to(z.dtype)]
            if part is not None:
                outputs.append(scale(part * ((b - a) / n)))
                grads.append(None)
            torch.autograd.backward(outputs, grads)


def average_gradients(parameters) -> None:
    """Average ``.grad`` over the ranks of the default process group: one all-reduce of
    all gradients flattened into one buffer (what DDP does, bucketed, in backward)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: the CUDA driver's figure, or MemAvailable on Linux CPUs."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def saved_bytes_per_window(objective, windows: torch.Tensor, autocast) -> float:
    """Bytes autograd saves for backward per window, from one ``embed`` of ``windows``
    (keyed draws of its own: the run's random streams are not touched)."""
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    random = KeyedRandom.for_batch(0, windows.shape[0], windows.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        out = objective.embed(windows, random)
    del out
    return saved / windows.shape[0]


def auto_chunk_size(objective, windows: torch.Tensor, autocast) -> int:
    """``chunk_size="auto"`` for batches like ``windows`` (module docstring); the smallest
    over ranks under torch.distributed."""
    n = windows.shape[0]
    free = free_memory_bytes(windows.device)
    chunk = n
    if free is not None:
        per_window = saved_bytes_per_window(objective, windows[:AUTO_PROBE_WINDOWS], autocast)
        chunk = max(1, min(n, int(AUTO_MEMORY_FRACTION * free // max(per_window, 1.0))))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([chunk], device=windows.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        chunk = int(t)
    return chunk


class StepResult(NamedTuple):
    """``loss`` (detached), ``metrics`` and ``status``: "ok", "skipped" (fp16: a
    non-finite loss, step skipped) or "diverged" (a non-finite loss that stops the run)."""

    loss: torch.Tensor
    metrics: dict
    status: str


class TrainStep:
    """One optimizer step of :func:`ecgfast.training.pretrain`: forward (chunked or not)
    under the run's precision, the finiteness check (agreed by every rank), the lr of the
    schedule, backward, the optimizer.

    Built by :meth:`build` from a ``PretrainConfig``; ``model`` is ``objective`` or its DDP
    wrapper. :meth:`state_dict` (JSON numbers: schedule, gradient scaler, the resolved
    "auto" chunk size) goes in the checkpoint beside the optimizer's state.
    """

    def __init__(self, model, objective, optimizer, schedule: LRSchedule,
                 precision: Precision, chunk_size, world: int):
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.schedule, self.precision = schedule, precision
        self.chunk_size, self.world = chunk_size, world

    @classmethod
    def build(cls, config, model, objective, world: int, device: torch.device) -> TrainStep:
        lr = scaled_lr(config.lr, config.batch_size * world, config.lr_scaling)
        optimizer = build_optimizer(config.optimizer, objective, lr, config.weight_decay,
                                    config.momentum)
        schedule = LRSchedule(lr, config.lr_schedule, config.warmup_epochs,
                              config.schedule_epochs or config.epochs)
        return cls(model, objective, optimizer, schedule, Precision(config.precision, device),
                   config.chunk_size, world)

    def __call__(self, x: torch.Tensor, random: KeyedRandom, epoch: int, step: int,
                 steps: int) -> StepResult:
        """Step ``step`` of ``steps`` in epoch ``epoch`` (0-based) on windows ``x``, with the
        step's random source ``random`` (a :class:`~ecgfast.keyed.KeyedRandom` over x's
        windows: the chunked and the one-pass step then draw the same)."""
        if self.chunk_size == "auto":
            self.chunk_size = auto_chunk_size(self.objective, x, self.precision.autocast)
        chunked = None
        if self.chunk_size is not None and x.shape[0] > self.chunk_size:
            chunked = ChunkedStep(self.objective, x, random, self.chunk_size,
                                  self.precision.autocast)
            loss, metrics = chunked.loss, chunked.metrics
        else:
            with self.precision.autocast():
                loss, metrics = self.model(x, random)
        finite = torch.isfinite(loss.detach()).float()
        if self.world > 1:  # every rank stops (or skips) together, or none does
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite):
            status = "skipped" if self.precision.skip() else "diverged"
            return StepResult(loss.detach(), metrics, status)
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.schedule.apply(self.optimizer, epoch, step, steps)
        if chunked is not None:
            chunked.backward(self.precision.scale)
            if self.world > 1:
                average_gradients(self.objective.parameters())
        else:
            self.precision.scale(loss).backward()
        self.precision.step(self.optimizer)
        self.precision.finished_step()
        return StepResult(loss.detach(), {**metrics, "lr": lr}, "ok")

    def state_dict(self) -> dict:
        return {"schedule": self.schedule.state_dict(),
                "grad_scaler": self.precision.state_dict(),
                "chunk_size": self.chunk_size}

    def load_state_dict(self, state: dict | None, where: str = "checkpoint") -> None:
        if not state:
            return
        if not isinstance(state, dict):
            raise ValueError(f"{where}: invalid training step state {state!r}")
        self.schedule.load_state_dict(state.get("schedule") or {}, where)
        self.precision.load_state_dict(state.get("grad_scaler") or {}, where)
        saved = state.get("chunk_size")
        if self.chunk_size == "auto" and isinstance(saved, int) and not isinstance(saved, bool):
            self.chunk_size = max(1, saved)  # the size the run resolved, for an exact resume
