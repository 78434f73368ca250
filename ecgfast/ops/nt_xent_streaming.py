"""Streaming NT-Xent: plain PyTorch that never builds the 2N x 2N similarity matrix.

The loss (see :func:`ecgfast.ops.nt_xent_reference`) is, with ``z = normalise(cat(z1, z2))``
(2N x D), ``s = z z^T / tau`` with the diagonal excluded and ``p(i) = (i + N) mod 2N``::

    loss = mean_i ( lse_i - s_{i,p(i)} ),      lse_i = logsumexp_{j != i} s_ij

Forward walks strips of ``block_rows`` rows; within a strip it walks ``block_cols``-column
tiles of ``s`` with an online (running max, rescaled sum) log-sum-exp, so one tile of
``block_rows x block_cols`` values is alive at a time. Only the inputs and the 2N per-row
LSE values are saved. Backward recomputes each tile from the LSE::

    dL/ds_ij = g / 2N * (P_ij - [j == p(i)]),    P_ij = exp(s_ij - lse_i), P_ii = 0
    dL/dz    = g / (2N tau) * (P z + P^T z - 2 z_{p(.)})     (row term + column term)
    dL/dx_i  = (dz_i - z_i (z_i . dz_i)) / max(||x_i||, eps)  (normalisation backward)

Distributed (a :class:`ecgfast.ops.nt_xent_distributed.RowShard`): a rank walks only its
own anchor rows against every column of the gathered batch, all-gathers their LSE values and
all-reduces the loss. Its backward needs no communication: as ``s`` is symmetric, a tile of
its own rows I also gives the column term, ``(P^T)_IJ = exp(s_IJ - lse_J)``::

    dL/dz_i  = g / (2N tau) * sum_j (exp(s_ij - lse_i) + exp(s_ij - lse_j) - 2 [j == p(i)]) z_j

That costs a second exp per element, so one process holding the whole batch keeps the
``P^T z`` form (one exp per element; the measured cost of the two-exp form is in
benchmarks/README.md, "Streaming NT-Xent: design measurements").

Extra memory is O(block_rows * block_cols + N * D): a few tiles and a handful of (2N, D)
buffers, never O(N^2). Works on any device ("meta" included: no data-dependent shapes, no
host synchronisation); the math runs in fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import torch

from ecgfast.ops.backend import Backend, Capabilities
from ecgfast.ops.nt_xent_distributed import RowShard

#: Same eps as ``torch.nn.functional.normalize``.
NORM_EPS = 1e-12

#: Default tile: 256 rows x 16384 columns (16 MiB of fp32). Rows: strips tall enough for
#: efficient matmuls; columns: whole rows up to 2N = 16384, as narrower tiles only add
#: passes over each row (the timings behind both: benchmarks/README.md, "Streaming NT-Xent:
#: design measurements").
DEFAULT_BLOCK_ROWS = 256
DEFAULT_BLOCK_COLS = 16384


def default_block_rows(two_n: int) -> int:
    """Rows per strip: ``min(2N, DEFAULT_BLOCK_ROWS)``."""
    return max(1, min(two_n, DEFAULT_BLOCK_ROWS))


def default_block_cols(two_n: int) -> int:
    """Columns per tile: ``min(2N, DEFAULT_BLOCK_COLS)``."""
    return max(1, min(two_n, DEFAULT_BLOCK_COLS))


def _normalise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(z, rnorm)`` with ``z = x * rnorm``, ``rnorm = 1 / max(||x||, eps)`` (per row)."""
    rnorm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(NORM_EPS).reciprocal_()
    return x * rnorm, rnorm


class StreamingNTXent(torch.autograd.Function):
    """NT-Xent by tiles with recomputation in backward.

    Args (forward): z1, z2 (N, D) any floating dtype and strides; ``temperature`` > 0 (float);
    ``block_rows`` x ``block_cols`` tile; ``shard``: None (this process holds the whole
    batch) or this rank's :class:`~ecgfast.ops.nt_xent_distributed.RowShard`, with
    ``z1_all``, ``z2_all`` the gathered batch (no grad). Returns the scalar loss of the whole
    batch in ``promote(dtype, float32)``.
    """

    @staticmethod
    def forward(ctx, z1, z2, temperature: float, block_rows: int, block_cols: int,
                shard=None, z1_all=None, z2_all=None):
        shard = RowShard.whole(z1.shape[0]) if shard is None else shard
        compute_dtype = torch.promote_types(z1.dtype, torch.float32)
        keys = (z1, z2) if z1_all is None else (z1_all, z2_all)
        z, _ = _normalise(torch.cat(keys, dim=0).to(compute_dtype))
        two_n = z.shape[0]
        zt = z.T.contiguous()  # (D, 2N): contiguous right operand for every tile
        inv_tau = 1.0 / temperature
        # this shard's rows, [view 1; view 2]; written in place strip by strip (small
        # tensors kept alive between the tiles fragmented the heap: RSS grew by GiBs)
        lse = torch.empty(2 * shard.count, dtype=z.dtype, device=z.device)
        positive = torch.empty_like(lse)
        out = 0
        for a, b in shard.row_ranges():
            for r0 in range(a, b, block_rows):
                r1 = min(r0 + block_rows, b)
                _strip_lse(z, zt, r0, r1, inv_tau, block_cols, lse[out : out + r1 - r0],
                           positive[out : out + r1 - r0])
                out += r1 - r0
        loss = shard.all_sum((lse - positive).sum()) / two_n
        ctx.save_for_backward(*keys, shard.gather_rows(lse))
        ctx.temperature = temperature
        ctx.blocks = (block_rows, block_cols)
        ctx.shard = shard
        ctx.dtypes = (z1.dtype, z2.dtype)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        k1, k2, lse = ctx.saved_tensors
        shard = ctx.shard
        block_rows, block_cols = ctx.blocks
        z, rnorm = _normalise(torch.cat([k1, k2], dim=0).to(lse.dtype))
        two_n, half = z.shape[0], z.shape[0] // 2
        zt = z.T.contiguous()
        inv_tau = 1.0 / ctx.temperature
        # the positive one-hot's row and column terms: -2 z_{p(i)}, for the own rows
        dz = shard.own_rows(torch.roll(z, half, dims=0)).mul_(-2.0)
        out = 0
        for a, b in shard.row_ranges():
            for r0 in range(a, b, block_rows):
                r1 = min(r0 + block_rows, b)
                zr = z[r0:r1] * inv_tau
                for c0 in range(0, two_n, block_cols):
                    c1 = min(c0 + block_cols, two_n)
                    s = torch.mm(zr, zt[:, c0:c1])  # tile of s, recomputed
                    s.diagonal(offset=r0 - c0).fill_(float("-inf"))  # global i == j
                    if shard.owns_all:  # P_IJ = exp(s_IJ - lse_I) once; the column term as P^T z
                        p = s.sub_(lse[r0:r1, None]).exp_()
                        dz[r0:r1].addmm_(p, z[c0:c1])
                        dz[c0:c1].addmm_(p.T, z[r0:r1])
                    else:  # other ranks own the rows of the column term: exp(s_ij - lse_j)
                        p = torch.sub(s, lse[r0:r1, None]).exp_()  # two tiles alive
                        p.add_(s.sub_(lse[None, c0:c1]).exp_())
                        dz[out : out + r1 - r0].addmm_(p, z[c0:c1])
                    del s, p
                out += r1 - r0
        scale = grad_loss.to(lse.dtype) * (shard.grad_scale * inv_tau / two_n)
        dz.mul_(scale)
        # Normalisation backward: dx = (dz - z (z . dz)) * rnorm, for the own rows.
        zo, ro = shard.own_rows(z), shard.own_rows(rnorm)
        dx = (dz - zo * (zo * dz).sum(dim=1, keepdim=True)).mul_(ro)
        n = shard.count
        grad_z1 = dx[:n].to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        grad_z2 = dx[n:].to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return grad_z1, grad_z2, None, None, None, None, None, None


def _strip_lse(z, zt, r0: int, r1: int, inv_tau: float, block_cols: int, lse, positive):
    """LSE and positive logit of rows [r0, r1) of ``s`` (global row indices), online over
    ``block_cols``-column tiles, written into ``lse`` and ``positive`` (r1 - r0 each)."""
    two_n, half = z.shape[0], z.shape[0] // 2
    zr = z[r0:r1] * inv_tau
    pos_index = (torch.arange(r0, r1, device=z.device) + half) % two_n
    m = torch.full((r1 - r0,), float("-inf"), dtype=z.dtype, device=z.device)
    l_sum = torch.zeros_like(m)
    for c0 in range(0, two_n, block_cols):
        c1 = min(c0 + block_cols, two_n)
        s = torch.mm(zr, zt[:, c0:c1])  # tile (B, C) of s
        # positive logits that fall in this tile, taken from the same product; a gather
        # and a select rather than boolean indexing (no data-dependent shape, no sync)
        col = pos_index - c0
        inside = (col >= 0) & (col < c1 - c0)
        picked = s.gather(1, col.clamp(0, c1 - c0 - 1)[:, None]).squeeze(1)
        positive.copy_(torch.where(inside, picked, positive))
        s.diagonal(offset=r0 - c0).fill_(float("-inf"))  # global i == j
        m_new = torch.maximum(m, s.amax(dim=1))
        m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        l_sum = l_sum * torch.exp(m - m_safe) + s.sub_(m_safe[:, None]).exp_().sum(1)
        m = m_new
        del s
    torch.add(m, torch.log(l_sum), out=lse)


def nt_xent_streaming(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    block_rows: int | None = None,
    block_cols: int | None = None,
    shard=None,
) -> torch.Tensor:
    """NT-Xent with O(block_rows * block_cols + N * D) extra memory (same value as the
    reference).

    Args:
        z1, z2: (N, D) embeddings of the two views, any floating dtype, any strides.
        temperature: tau > 0.
        block_rows, block_cols: tile of the similarity matrix processed at once; defaults
            :func:`default_block_rows`, :func:`default_block_cols` (256 x 16384).
        shard: this rank's :class:`~ecgfast.ops.nt_xent_distributed.RowShard` of a distributed batch
            (None: the whole batch is here). The views are gathered from every rank; this
            rank computes its own rows' terms (see :class:`StreamingNTXent`).

    Returns:
        Scalar, fp32 (fp64 for fp64 inputs): mean over the 2N rows (of the global batch).
    """
    z1_all, z2_all = (None, None) if shard is None else shard.gather_views(z1, z2)
    two_n = 2 * (z1.shape[0] if z1_all is None else z1_all.shape[0])
    block_rows = default_block_rows(two_n) if block_rows is None else block_rows
    block_cols = default_block_cols(two_n) if block_cols is None else block_cols
    for name, value in (("block_rows", block_rows), ("block_cols", block_cols)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return StreamingNTXent.apply(z1, z2, float(temperature), block_rows, block_cols, shard,
                                 z1_all, z2_all)


def _run(z1, z2, temperature, shard=None):
    return nt_xent_streaming(z1, z2, temperature, shard=shard)


#: Any device ("meta" included) and the default floating dtypes (fp32, fp64, bf16, fp16).
BACKEND = Backend("nt_xent", "streaming", _run, Capabilities(devices=None))
