"""Distributed NT-Xent: the share of the anchor rows one rank computes (:class:`RowShard`).

With :func:`ecgfast.losses.nt_xent` (``gather_distributed=True``) each rank computes the loss
terms of its own anchor rows against every rank's embeddings (a :class:`RowShard` of the
global batch), so the work per rank is 1/world_size of the single-process loss, not all of
it. Every backend of the op takes the shard as its last argument. The value returned on
every rank is the loss of the whole global batch (one scalar all-reduce); the gradient
reaching this rank's embeddings is ``world_size`` times the single-process gradient of
those rows, and DistributedDataParallel's average over ranks turns that into exactly the
single-process parameter gradient. The collectives themselves are those of
:mod:`ecgfast.distributed`.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from ecgfast.distributed import all_gather_rows, gather_with_grad, row_counts


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
        counts = row_counts(n_local, device, group)
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
        return all_gather_rows(x, list(self.counts), self.group)

    def gather_views(self, z1: torch.Tensor, z2: torch.Tensor):
        """The global batch's two views without grad, ``(z1_all, z2_all)``; ``(None, None)``
        when not distributed (the local views are the global ones)."""
        if not self.distributed:
            return None, None
        return self.gather(z1.detach()), self.gather(z2.detach())

    def gather_with_grad(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`ecgfast.distributed.gather_with_grad` with this shard's known row counts
        (no extra all-gather of the counts)."""
        if not self.distributed:
            return x
        return gather_with_grad(x, self.group, list(self.counts))

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
