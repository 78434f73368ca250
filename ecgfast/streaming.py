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

Extra memory is O(block_rows * block_cols + N * D): a few tiles and a handful of (2N, D)
buffers, never O(N^2). Works on any device; the math runs in fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import torch

#: Same eps as ``torch.nn.functional.normalize``.
NORM_EPS = 1e-12

#: Default tile: 256 rows x 16384 columns (16 MiB of fp32). Rows: enough for efficient
#: matmuls (32-row strips of 131072 columns ran about 1.6x slower per row than 256-row ones
#: on the 2-core dev VM). Columns: whole rows up to 2N = 16384, where 4096- and 1024-column
#: tiles were slower on that VM (more passes per element, no cache benefit seen).
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


def _positive_index(two_n: int, device: torch.device) -> torch.Tensor:
    n = two_n // 2
    return torch.cat([torch.arange(n, two_n, device=device), torch.arange(0, n, device=device)])


class StreamingNTXent(torch.autograd.Function):
    """NT-Xent by tiles with recomputation in backward.

    Args (forward): z1, z2 (N, D) any floating dtype and strides; ``temperature`` > 0 (float);
    ``block_rows`` x ``block_cols`` tile. Returns the scalar loss in
    ``promote(dtype, float32)``.
    """

    @staticmethod
    def forward(ctx, z1, z2, temperature: float, block_rows: int, block_cols: int):
        compute_dtype = torch.promote_types(z1.dtype, torch.float32)
        x = torch.cat([z1, z2], dim=0).to(compute_dtype)
        two_n = x.shape[0]
        z, _ = _normalise(x)
        zt = z.T.contiguous()  # (D, 2N): contiguous right operand for every tile
        inv_tau = 1.0 / temperature
        pos_index = _positive_index(two_n, x.device)
        lse = torch.empty(two_n, dtype=compute_dtype, device=x.device)
        positive = torch.empty_like(lse)
        for r0 in range(0, two_n, block_rows):
            r1 = min(r0 + block_rows, two_n)
            zr = z[r0:r1] * inv_tau
            rows = torch.arange(r1 - r0, device=x.device)
            m = torch.full((r1 - r0,), float("-inf"), dtype=compute_dtype, device=x.device)
            l_sum = torch.zeros_like(m)
            for c0 in range(0, two_n, block_cols):
                c1 = min(c0 + block_cols, two_n)
                s = torch.mm(zr, zt[:, c0:c1])  # tile (B, C) of s
                # positive logits that fall in this tile, taken from the same product
                col = pos_index[r0:r1] - c0
                inside = (col >= 0) & (col < c1 - c0)
                positive[r0:r1][inside] = s[rows[inside], col[inside]]
                s.diagonal(offset=r0 - c0).fill_(float("-inf"))  # global i == j
                m_new = torch.maximum(m, s.amax(dim=1))
                m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
                l_sum = l_sum * torch.exp(m - m_safe) + s.sub_(m_safe[:, None]).exp_().sum(1)
                m = m_new
                del s
            lse[r0:r1] = m + torch.log(l_sum)
        loss = (lse - positive).mean()
        ctx.save_for_backward(z1, z2, lse)
        ctx.temperature = temperature
        ctx.blocks = (block_rows, block_cols)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        z1, z2, lse = ctx.saved_tensors
        temperature = ctx.temperature
        block_rows, block_cols = ctx.blocks
        compute_dtype = lse.dtype
        n = z1.shape[0]
        x = torch.cat([z1, z2], dim=0).to(compute_dtype)
        two_n = x.shape[0]
        z, rnorm = _normalise(x)
        zt = z.T.contiguous()
        inv_tau = 1.0 / temperature
        # Positive term: -2 z_{p(i)}, the row and the column contribution of the one-hot.
        dz = torch.cat([z[n:], z[:n]], dim=0).mul_(-2.0)
        for r0 in range(0, two_n, block_rows):
            r1 = min(r0 + block_rows, two_n)
            zr = z[r0:r1] * inv_tau
            for c0 in range(0, two_n, block_cols):
                c1 = min(c0 + block_cols, two_n)
                p = torch.mm(zr, zt[:, c0:c1])  # tile of s, recomputed
                p.sub_(lse[r0:r1, None]).exp_()
                p.diagonal(offset=r0 - c0).zero_()
                dz[r0:r1].addmm_(p, z[c0:c1])  # row term  P z
                dz[c0:c1].addmm_(p.T, z[r0:r1])  # column term  P^T z
                del p
        dz.mul_(grad_loss.to(compute_dtype) * (inv_tau / two_n))
        # Normalisation backward: dx = (dz - z (z . dz)) * rnorm.
        dx = (dz - z * (z * dz).sum(dim=1, keepdim=True)).mul_(rnorm)
        grad_z1 = dx[:n].to(z1.dtype) if ctx.needs_input_grad[0] else None
        grad_z2 = dx[n:].to(z2.dtype) if ctx.needs_input_grad[1] else None
        return grad_z1, grad_z2, None, None, None


def nt_xent_streaming(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    block_rows: int | None = None,
    block_cols: int | None = None,
) -> torch.Tensor:
    """NT-Xent with O(block_rows * block_cols + N * D) extra memory (same value as the
    reference).

    Args:
        z1, z2: (N, D) embeddings of the two views, any floating dtype, any strides.
        temperature: tau > 0.
        block_rows, block_cols: tile of the similarity matrix processed at once; defaults
            :func:`default_block_rows`, :func:`default_block_cols` (256 x 16384).

    Returns:
        Scalar, fp32 (fp64 for fp64 inputs): mean over the 2N rows.
    """
    two_n = 2 * z1.shape[0]
    block_rows = default_block_rows(two_n) if block_rows is None else block_rows
    block_cols = default_block_cols(two_n) if block_cols is None else block_cols
    for name, value in (("block_rows", block_rows), ("block_cols", block_cols)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return StreamingNTXent.apply(z1, z2, float(temperature), block_rows, block_cols)
