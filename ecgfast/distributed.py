"""torch.distributed helpers: an all-gather with an exact backward, and process-group setup.

The contrastive loss needs every rank's embeddings as negatives. :func:`gather_with_grad`
concatenates a tensor from all ranks (rank order) and keeps the graph: its backward
SUM-reduces the incoming gradient over ranks (``all_reduce``) and returns this rank's slice.
The sum matters: the global loss depends on this rank's rows through every rank's copy of
the gathered tensor, so the gradient of ``sum_k L_k`` with respect to those rows is the sum
of every rank's gradient for that slice. Returning only the local slice of the local
gradient (lightly issue #1528) drops the other ranks' terms.

With :func:`ecgfast.losses.nt_xent` (``gather_distributed=True``) each rank computes the loss
terms of its own anchor rows against every rank's embeddings (a :class:`RowShard` of the
global batch), so the work per rank is 1/world_size of the single-process loss, not all of
it. The value returned on every rank is the loss of the whole global batch (one scalar
all-reduce); the gradient reaching this rank's embeddings is ``world_size`` times the
single-process gradient of those rows, and DistributedDataParallel's average over ranks
turns that into exactly the single-process parameter gradient.

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
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _row_counts(n_local: int, device: torch.device, group) -> list[int]:
    """Every rank's row count, in rank order: one small all-gather, read back to the host
    once (a synchronisation per call, kept because ranks may hold different numbers of rows,
    e.g. the last batch of an epoch, and the gather's buffer sizes depend on them)."""
    world = dist.get_world_size(group)
    n = torch.tensor([n_local], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n, group=group)
    return torch.cat(counts).tolist()


def _all_gather_rows(x: torch.Tensor, counts: list[int], group) -> torch.Tensor:
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
            counts = _row_counts(x.shape[0], x.device, group)
        rank = dist.get_rank(group)
        ctx.group = group
        ctx.start = sum(counts[:rank])
        ctx.count = counts[rank]
        return _all_gather_rows(x, counts, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.start : ctx.start + ctx.count], None, None


def gather_with_grad(x: torch.Tensor, group=None) -> torch.Tensor:
    """All-gather ``x`` (N_k, ...) from every rank into (sum_k N_k, ...), in rank order.

    Differentiable: the backward all-reduces (SUM) the gradient and returns this rank's
    rows. Shapes beyond the first dimension, dtype and device must match across ranks.
    Without an initialised process group (or with one rank) it returns ``x`` unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return x
    if dist.get_world_size(group) == 1:
        return x
    return _GatherWithGrad.apply(x, group)


@dataclasses.dataclass(frozen=True)
class RowShard:
    """The anchor rows one process computes NT-Xent terms for, and how shards are joined.

    The global batch has ``total`` pairs: view 1 is rows ``[0, total)`` and view 2 rows
    ``[total, 2 total)`` of ``x = cat(z1_all, z2_all)``. This process owns rows
    ``[start, start + count)`` of each view (its own embeddings; ``counts`` holds every
    rank's count in rank order). A backend given a shard computes the loss terms of those
    2 * count anchor rows against all 2 * total columns, joins the per-row log-sum-exps and
    the loss over ranks (:meth:`gather_rows`, :meth:`all_sum`), and returns the gradient of
    the global loss for its own rows, times :attr:`grad_scale`. ``RowShard.whole(n)`` is
    one process owning everything: no communication, scale 1.
    """

    start: int
    count: int
    total: int
    counts: tuple[int, ...] = ()
    group: object = None

    @classmethod
    def whole(cls, n: int) -> RowShard:
        return cls(0, n, n)

    @classmethod
    def of_process_group(cls, n_local: int, device: torch.device, group=None) -> RowShard:
        """This rank's shard: row counts gathered from every rank of ``group``."""
        counts = _row_counts(n_local, device, group)
        rank = dist.get_rank(group)
        return cls(sum(counts[:rank]), n_local, sum(counts), tuple(counts), group)

    @property
    def world_size(self) -> int:
        return max(1, len(self.counts))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def grad_scale(self) -> float:
        """The factor on this rank's gradient: world_size, which DDP's average divides out."""
        return float(self.world_size)

    def row_ranges(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The owned rows of ``x``: ``(start, start + count)`` in view 1, the same in view 2."""
        a = self.start
        return (a, a + self.count), (self.total + a, self.total + a + self.count)

    @property
    def owns_all(self) -> bool:
        """This process owns every row (rows of ``x`` and own rows coincide, in order)."""
        return self.count == self.total

    def own_rows(self, t: torch.Tensor) -> torch.Tensor:
        """The owned rows of a (2 total, ...) tensor in the row order of ``x``, as
        (2 count, ...) [view 1; view 2]: ``t`` itself when this process owns every row."""
        if self.owns_all:
            return t
        (a1, b1), (a2, b2) = self.row_ranges()
        return torch.cat([t[a1:b1], t[a2:b2]])

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(count, ...) from every rank -> (total, ...) in rank order (no autograd)."""
        if not self.distributed:
            return x
        return _all_gather_rows(x, list(self.counts), self.group)

    def gather_views(self, z1: torch.Tensor, z2: torch.Tensor):
        """The global batch's two views without grad, ``(z1_all, z2_all)``; ``(None, None)``
        when not distributed (the local views are the global ones)."""
        if not self.distributed:
            return None, None
        return self.gather(z1.detach()), self.gather(z2.detach())

    def gather_with_grad(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`gather_with_grad` with this shard's known row counts (no extra
        all-gather of the counts)."""
        if not self.distributed:
            return x
        return _GatherWithGrad.apply(x, self.group, list(self.counts))

    def gather_rows(self, v: torch.Tensor) -> torch.Tensor:
        """Per-anchor values (2 count, ...) ordered [view 1; view 2] -> (2 total, ...) in the
        global row order of ``x``."""
        if not self.distributed:
            return v
        return torch.cat([self.gather(v[: self.count]), self.gather(v[self.count :])])

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over ranks (a copy; ``t`` itself when not distributed)."""
        if not self.distributed:
            return t
        t = t.detach().clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def join_loss(self, part: torch.Tensor) -> torch.Tensor:
        """From this rank's share of the loss (differentiable) to the global loss value with
        ``grad_scale`` times the share's gradient (the eager backend's join)."""
        if not self.distributed:
            return part
        scaled = part * self.grad_scale
        return scaled + (self.all_sum(part) - scaled).detach()


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
    """Tear down the process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
