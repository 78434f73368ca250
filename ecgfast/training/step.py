"""One optimizer step of :func:`~ecgfast.training.pretrain`.

:class:`TrainStep` runs, for a batch of windows and its keyed random draws:

1. the forward pass under the run's precision (:class:`ecgfast.precision.Precision`): one
   pass, or the chunked passes of :class:`~ecgfast.training.chunked.ChunkedStep` when the
   batch is larger than the run's chunk size;
2. the finiteness check of the loss, agreed by every rank (a non-finite loss skips the
   step under fp16, stops the run otherwise);
3. the learning rate of the schedule (:class:`~ecgfast.training.optim.LRSchedule`);
4. backward (scaled under fp16), and under DDP for the chunked step the average of the
   gradients over ranks (:func:`average_gradients`; the one-pass step averages inside
   DistributedDataParallel's backward);
5. the optimizer step.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.distributed as dist

from ecgfast.keyed import KeyedRandom
from ecgfast.precision import Precision
from ecgfast.training.chunked import ChunkedStep
from ecgfast.training.optim import LRSchedule, build_optimizer, scaled_lr


class StepResult(NamedTuple):
    """``loss`` (detached), ``metrics`` and ``status``: "ok", "skipped" (fp16: a
    non-finite loss, step skipped) or "diverged" (a non-finite loss that stops the run)."""

    loss: torch.Tensor
    metrics: dict
    status: str


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


class TrainStep:
    """One optimizer step (module docstring), built by :meth:`build`.

    ``model`` is ``objective`` or its DDP wrapper; ``chunk_size`` the run's resolved chunk
    size (None: one pass). :meth:`state_dict` (JSON numbers: the schedule, the gradient
    scaler, the chunk size) goes in the checkpoint beside the optimizer's state.
    """

    def __init__(self, model, objective, optimizer, schedule: LRSchedule,
                 precision: Precision, chunk_size: int | None, world: int):
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.schedule, self.precision = schedule, precision
        self.chunk_size, self.world = chunk_size, world

    @classmethod
    def build(cls, config, model, objective, precision: Precision, chunk_size: int | None,
              world: int = 1) -> TrainStep:
        """The step of a :class:`~ecgfast.training.PretrainConfig`: its optimizer, with the
        learning rate scaled for the global batch of ``world`` ranks, and its schedule."""
        lr = scaled_lr(config.lr, config.batch_size * world, config.lr_scaling)
        optimizer = build_optimizer(config.optimizer, objective, lr, config.weight_decay,
                                    config.momentum)
        schedule = LRSchedule(lr, config.lr_schedule, config.warmup_epochs,
                              config.schedule_epochs or config.epochs)
        return cls(model, objective, optimizer, schedule, precision, chunk_size, world)

    def __call__(self, x: torch.Tensor, random: KeyedRandom, epoch: int, step: int,
                 steps: int) -> StepResult:
        """Step ``step`` of ``steps`` in epoch ``epoch`` (0-based) on windows ``x``, with the
        step's random source ``random`` (a :class:`~ecgfast.keyed.KeyedRandom` over x's
        windows: the chunked and the one-pass step then draw the same)."""
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
                "chunk_size": self.chunk_size,
                "precision": self.precision.name}  # "auto" resolved on this machine

    def load_state_dict(self, state: dict, where: str = "checkpoint") -> None:
        """Restore the schedule and the gradient scaler (the chunk size is the run's, see
        :func:`~ecgfast.training.chunked.resolve_chunk_size`). A run resumed in another
        precision than it trained in (``"auto"`` resolves per machine) is warned about."""
        saved = state.get("precision")
        if saved is not None and saved != self.precision.name:
            warnings.warn(f"{where}: the run trained in {saved} and resumes in "
                          f"{self.precision.name} (precision 'auto' resolves per machine); pass "
                          f"--precision {saved} to keep it", stacklevel=2)
        self.schedule.load_state_dict(state.get("schedule") or {}, where)
        self.precision.load_state_dict(state.get("grad_scaler") or {}, where)
