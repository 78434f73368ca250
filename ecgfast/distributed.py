"""torch.distributed helpers: an all-gather with an exact backward, and process-group setup.

The contrastive loss needs every rank's embeddings as negatives. :func:`gather_with_grad`
concatenates a tensor from all ranks (rank order) and keeps the graph: its backward
SUM-reduces the incoming gradient over ranks (``all_reduce``) and returns this rank's slice.
The sum matters: the global loss depends on this rank's rows through every rank's copy of
the gathered tensor, so the gradient of ``sum_k L_k`` with respect to those rows is the sum
of every rank's gradient for that slice. Returning only the local slice of the local
gradient (a bug lightly's gather once had) drops the other ranks' terms.

:func:`ecgfast.losses.nt_xent` (``gather_distributed=True``) builds on these: each rank
computes the loss terms of its own anchor rows against every rank's embeddings, a
:class:`ecgfast.ops.nt_xent_distributed.RowShard` of the global batch.

Training-loop helpers (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)::

    ctx = init_process_group_from_env()          # gloo on CPU, nccl on CUDA; no-op alone
    model = wrap_ddp(model, ctx)                 # DistributedDataParallel when distributed
    loss = NTXentLoss(0.5, gather_distributed=True)(z1, z2)
    ...
    if ctx.is_main: save(...)
    destroy_process_group()
"""

from __future__ import annotations

import dataclasses
import gc
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def row_counts(n_local: int, device: torch.device, group) -> list[int]:
    """Every rank's row count, in rank order: one small all-gather, read back to the host
    once (a synchronisation per call, kept because ranks may hold different numbers of rows,
    e.g. the last batch of an epoch, and the gather's buffer sizes depend on them)."""
    world = dist.get_world_size(group)
    n = torch.tensor([n_local], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n, group=group)
    return torch.cat(counts).tolist()


def all_gather_rows(x: torch.Tensor, counts: list[int], group) -> torch.Tensor:
    """Concatenate ``x`` (counts[rank], ...) from every rank, in rank order (no autograd).

    Row counts may differ between ranks: pad to the largest, gather, trim.
    """
    x = x.contiguous()
    n_max = max(counts)
    padded = x
    if x.shape[0] < n_max:
        padded = torch.cat([x, x.new_zeros((n_max - x.shape[0],) + tuple(x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:c] for p, c in zip(parts, counts)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group, counts: list[int] | None = None):
        if counts is None:
            counts = row_counts(x.shape[0], x.device, group)
        rank = dist.get_rank(group)
        ctx.group = group
        ctx.start = sum(counts[:rank])
        ctx.count = counts[rank]
        return all_gather_rows(x, counts, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.start : ctx.start + ctx.count], None, None


def gather_with_grad(x: torch.Tensor, group=None, counts: list[int] | None = None
                     ) -> torch.Tensor:
    """All-gather ``x`` (N_k, ...) from every rank into (sum_k N_k, ...), in rank order.

    Differentiable: the backward all-reduces (SUM) the gradient and returns this rank's
    rows. Shapes beyond the first dimension, dtype and device must match across ranks.
    ``counts``: every rank's N_k when known (None: gathered first, see :func:`row_counts`).
    Without an initialised process group (or with one rank) it returns ``x`` unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return x
    if dist.get_world_size(group) == 1:
        return x
    return _GatherWithGrad.apply(x, group, counts)


@dataclasses.dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank``/``world_size`` (0/1 when not distributed)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_process_group_from_env(device: str | torch.device | None = None) -> DistContext:
    """Initialise torch.distributed from torchrun's environment, or do nothing.

    Reads RANK, WORLD_SIZE and LOCAL_RANK (set by ``torchrun --nproc_per_node K``). With
    WORLD_SIZE > 1: backend "nccl" when ``device`` is CUDA (or, when ``device`` is None,
    when CUDA is available), "gloo" otherwise; on CUDA this rank uses ``cuda:LOCAL_RANK``.
    With no WORLD_SIZE or WORLD_SIZE == 1: returns a single-process context.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if world <= 1:
        return DistContext(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, device, backend)


def wrap_ddp(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` unchanged."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if ctx.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[ctx.device.index])
    return DistributedDataParallel(model)


def destroy_process_group() -> None:
    """Tear down the process group if one is initialised.

    Garbage is collected first: a DistributedDataParallel wrapper no longer referenced can
    still wait in a reference cycle, and its reducer, freed at interpreter exit after its
    process group, aborted gloo processes at exit now and then (SIGABRT, "terminate
    called without an active exception") after a run that had finished and saved.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
