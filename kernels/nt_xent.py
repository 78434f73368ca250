"""NT-Xent (SimCLR) loss in Triton, never building the 2N x 2N similarity matrix.

With ``x = cat(z1, z2)`` (2N x D), ``r_i = 1 / max(||x_i||, eps)``, ``z_i = r_i x_i``,
``s_ij = r_i r_j (x_i . x_j) / tau`` for ``j != i`` and ``p(i) = (i + N) mod 2N``::

    loss = 1/2N sum_i (lse_i - s_{i,p(i)}),     lse_i = logsumexp_{j != i} s_ij

Kernels, in launch order (built like Triton's fused-attention tutorial):

- ``_rnorm_kernel``: r_i per row (2N floats).
- ``_nt_xent_fwd_kernel``: one program per (BLOCK_M anchor rows, view, column split). With
  D <= 256 (``ONE_TILE``) the row block is loaded once, D padded to ``BLOCK_D`` (a power of
  two), and each BLOCK_N-column tile of ``x x^T`` is one full-D ``tl.dot``, so the column
  loop is the long, software-pipelined loop; larger D loops over D in BLOCK_D chunks per
  tile. Online log-sum-exp (base 2), the diagonal masked. Writes each split's running max
  and sum and the positive logit; a merge in PyTorch (2N x splits floats) gives lse_i.
- ``_nt_xent_bwd_kernel``: recomputes the tiles from lse and accumulates, per row tile,
  both the row term and the column term of ``dz = (G + G^T) z / tau`` (``s`` is symmetric,
  so tile (I, J) of ``G^T`` is ``exp(s_IJ - lse_J)``: one ``s`` tile gives both), minus the
  positive one-hot::

      dz_i = g / (2N tau) * sum_j (exp(s_ij - lse_i) + exp(s_ij - lse_j) - 2 [j == p(i)]) z_j

  With ONE_TILE one load of the column rows serves both the similarity tile and the
  ``P . z`` operand; larger D also splits the output D over grid axis 1 in 128-wide chunks.
  Column splits (when row tiles give < 2 programs per SM: 2N = 8192 then fills an H200)
  write partial dz, summed in PyTorch.
- ``_normalize_bwd_kernel``: ``dx_i = r_i (dz_i - z_i (z_i . dz_i))``, cast to the input dtype.

Dtypes: x in fp32, bf16 or fp16 (:data:`BACKEND`), read natively; every ``tl.dot``
accumulates in fp32. The ``x x^T`` dot takes the raw inputs (exact products for bf16/fp16);
the backward's second dot takes ``P`` (values in [-2, 2]) and the normalised ``z`` in the
input dtype. ``input_precision`` ("ieee" or "tf32") selects the fp32 dot mode (through
dispatch: PyTorch's matmul setting); it is ignored for bf16/fp16. Every ``tl.dot`` operand
is at least 16 wide on each axis (D is padded with masked loads up to BLOCK_D >= 16).
Offsets are int32: 2N x D must stay below 2^31 (2N = 2^20 with D <= 1024 does), which
:func:`_limits` checks.

Production configurations (per dtype family and D range) and their choice per shape are in
:mod:`ecgfast.kernels.nt_xent_configs`; :mod:`ecgfast.kernels.aot` compiles them for sm_80
and sm_90.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ecgfast.kernels._common import (
    KERNEL_DTYPES,
    MAX_INT32_OFFSET,
    check_grid,
    dot_input_precision,
    interpreting,
    launch_device,
)
from ecgfast.kernels.nt_xent_configs import (
    BWD_CONFIGS,
    CHUNK_DOUT,
    FWD_CONFIGS,
    ONE_TILE_MAX_D,
    ROWWISE_BLOCK_M,
    block_d,
    column_splits,
    family,
    merge_splits,
    pick,
    sm_count,
)
from ecgfast.ops.backend import Backend, Capabilities, dtype_names
from ecgfast.ops.nt_xent_distributed import RowShard

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453

@triton.jit
def _dot(a, b, acc, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # UPCAST is only set under the CPU interpreter, whose numpy matmul cannot take bf16.
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=INPUT_PRECISION)


@triton.jit
def _rnorm_kernel(X, RNORM, n_rows, D, stride_xm,
                  BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    ss = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(X + rows[:, None] * stride_xm + offs_k[None, :],
                    mask=row_ok[:, None] & (offs_k[None, :] < D), other=0.0).to(tl.float32)
        ss += tl.sum(x * x, axis=1)
    rnorm = 1.0 / tl.maximum(tl.sqrt(ss), 1e-12)
    tl.store(RNORM + rows, rnorm, mask=row_ok)


@triton.jit
def _col_tile(X, RNORM, q, rows, row_ok, row_scale, n0, n_rows, D, stride_xm,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              ONE_TILE: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """The column tile [n0, n0 + BLOCK_N): its columns, their mask and inverse norms, the
    (BLOCK_M, BLOCK_N) scaled similarities s = (x x^T)_ij r_i log2(e) / tau r_j in fp32
    and, with ONE_TILE, the (BLOCK_N, BLOCK_D) column rows loaded for them (one full-D dot
    against the resident row block ``q``); otherwise a loop over D in BLOCK_D chunks (the
    returned column rows are unused)."""
    cols = n0 + tl.arange(0, BLOCK_N)
    col_ok = cols < n_rows
    offs_d = tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if ONE_TILE:
        k = tl.load(X + cols[:, None] * stride_xm + offs_d[None, :],
                    mask=col_ok[:, None] & (offs_d[None, :] < D), other=0.0)
        acc = _dot(q, tl.trans(k), acc, INPUT_PRECISION, UPCAST)
    else:
        k = q
        for k0 in range(0, D, BLOCK_D):
            d = k0 + offs_d
            d_ok = d < D
            a = tl.load(X + rows[:, None] * stride_xm + d[None, :],
                        mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            bt = tl.load(X + cols[None, :] * stride_xm + d[:, None],
                         mask=col_ok[None, :] & d_ok[:, None], other=0.0)
            acc = _dot(a, bt, acc, INPUT_PRECISION, UPCAST)
    col_r = tl.load(RNORM + cols, mask=col_ok, other=0.0)
    return cols, col_ok, col_r, acc * row_scale[:, None] * col_r[None, :], k


@triton.jit
def _anchor_rows(X, RNORM, half, row_start, row_count, D, stride_xm, scale_log2, view,
                 BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ONE_TILE: tl.constexpr):
    """This program's anchor rows (local rows [local0, local0 + BLOCK_M) of the owned range
    [row_start, row_start + row_count) of ``view``), their base-2 scale r_i log2(e) / tau,
    their positives' columns (and the least and greatest of them) and, with ONE_TILE, the
    row block itself, loaded once."""
    local0 = tl.program_id(0) * BLOCK_M
    local = local0 + tl.arange(0, BLOCK_M)
    row0 = view * half + row_start + local0
    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = local < row_count
    row_scale = tl.load(RNORM + rows, mask=row_ok, other=0.0) * scale_log2
    pos_col = tl.where(rows < half, rows + half, rows - half)
    offs_d = tl.arange(0, BLOCK_D)
    if ONE_TILE:
        q = tl.load(X + rows[:, None] * stride_xm + offs_d[None, :],
                    mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    else:  # the chunked path loads the rows chunk by chunk
        q = tl.zeros((BLOCK_M, BLOCK_D), dtype=X.dtype.element_ty)
    pos_lo = tl.min(pos_col, axis=0)
    pos_hi = tl.max(pos_col, axis=0)
    return local0, local, row0, rows, row_ok, row_scale, pos_col, pos_lo, pos_hi, q


@triton.jit
def _nt_xent_fwd_kernel(X, RNORM, MAX2, SUM2, POS, n_rows, half, row_start, row_count, D,
                       stride_xm, cols_per_split, scale_log2,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       ONE_TILE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                       UPCAST: tl.constexpr):
    view = tl.program_id(1)
    split = tl.program_id(2)
    _local0, local, row0, rows, row_ok, row_scale, pos_col, pos_lo, pos_hi, q = _anchor_rows(
        X, RNORM, half, row_start, row_count, D, stride_xm, scale_log2, view, BLOCK_M,
        BLOCK_D, ONE_TILE)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    pos_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    c_lo = split * cols_per_split
    for n0 in range(c_lo, tl.minimum(c_lo + cols_per_split, n_rows), BLOCK_N):
        cols, col_ok, _col_r, s, _k = _col_tile(X, RNORM, q, rows, row_ok, row_scale, n0,
                                                n_rows, D, stride_xm, BLOCK_M, BLOCK_N,
                                                BLOCK_D, ONE_TILE, INPUT_PRECISION, UPCAST)
        # Masks only on the few tiles that need them (keeps registers for the rest).
        if (n0 + BLOCK_N > pos_lo) & (n0 <= pos_hi):  # holds some positives
            pos_i += tl.sum(tl.where(cols[None, :] == pos_col[:, None], s, 0.0), axis=1)
        if (n0 + BLOCK_N > n_rows) | ((n0 + BLOCK_N > row0) & (n0 < row0 + BLOCK_M)):
            s = tl.where(col_ok[None, :] & (rows[:, None] != cols[None, :]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # row with nothing valid yet
        l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), axis=1)
        m_i = m_new
    out = split * 2 * row_count + view * row_count + local
    tl.store(MAX2 + out, m_i, mask=row_ok)
    tl.store(SUM2 + out, l_i, mask=row_ok)
    tl.store(POS + out, pos_i * 0.6931471805599453, mask=row_ok)


@triton.jit
def _nt_xent_bwd_kernel(X, RNORM, LSE, DZ, GRAD, n_rows, half, row_start, row_count, D,
                       stride_xm, stride_dzm, stride_dzs, cols_per_split, scale_log2,
                       grad_scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_DOUT: tl.constexpr,
                       ONE_TILE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                       UPCAST: tl.constexpr):
    view = tl.program_id(1) % 2  # axis 1: view, then (chunked D only) the output D chunk
    split = tl.program_id(2)
    local0, local, row0, rows, row_ok, row_scale, pos_col, pos_lo, pos_hi, q = _anchor_rows(
        X, RNORM, half, row_start, row_count, D, stride_xm, scale_log2, view, BLOCK_M,
        BLOCK_D, ONE_TILE)
    offs_d = (tl.program_id(1) // 2) * BLOCK_DOUT + tl.arange(0, BLOCK_DOUT)
    d_ok = offs_d < D
    lse2_row = tl.load(LSE + rows, mask=row_ok, other=0.0) * 1.4426950408889634
    acc_dz = tl.zeros((BLOCK_M, BLOCK_DOUT), dtype=tl.float32)
    c_lo = split * cols_per_split
    for n0 in range(c_lo, tl.minimum(c_lo + cols_per_split, n_rows), BLOCK_N):
        cols, col_ok, col_r, s2, k = _col_tile(X, RNORM, q, rows, row_ok, row_scale, n0,
                                               n_rows, D, stride_xm, BLOCK_M, BLOCK_N, BLOCK_D,
                                               ONE_TILE, INPUT_PRECISION, UPCAST)
        lse2_col = tl.load(LSE + cols, mask=col_ok, other=0.0) * 1.4426950408889634
        # Only tiles on the diagonal or the padded edges are masked. Masked before exp:
        # s_ii - lse_i or 0 - lse_j could overflow (fp16) and meet a zero z_j (NaN).
        if ((n0 + BLOCK_N > n_rows) | (local0 + BLOCK_M > row_count)
                | ((n0 + BLOCK_N > row0) & (n0 < row0 + BLOCK_M))):
            valid = row_ok[:, None] & col_ok[None, :] & (rows[:, None] != cols[None, :])
            s2 = tl.where(valid, s2, float("-inf"))
        # row term exp(s_ij - lse_i) + column term exp(s_ji - lse_j), s symmetric
        a = tl.exp2(s2 - lse2_row[:, None]) + tl.exp2(s2 - lse2_col[None, :])
        if (n0 + BLOCK_N > pos_lo) & (n0 <= pos_hi):  # holds some positives
            a = a - tl.where(cols[None, :] == pos_col[:, None], 2.0, 0.0)
        # z_j = r_j x_j for this program's output columns, in the input dtype: with
        # ONE_TILE the column rows the similarity tile loaded
        if not ONE_TILE:
            k = tl.load(X + cols[:, None] * stride_xm + offs_d[None, :],
                        mask=col_ok[:, None] & d_ok[None, :], other=0.0)
        zc = (k.to(tl.float32) * col_r[:, None]).to(k.dtype)
        acc_dz = _dot(a.to(k.dtype), zc, acc_dz, INPUT_PRECISION, UPCAST)
    g = tl.load(GRAD).to(tl.float32) * grad_scale  # upstream grad / (2N tau)
    out = view * row_count + local
    tl.store(DZ + split * stride_dzs + out[:, None] * stride_dzm + offs_d[None, :],
             acc_dz * g, mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _x_dz_chunk(X, DZ, rows, row_ok, k0, D, stride_xm, stride_dzm, BLOCK_K: tl.constexpr):
    """Columns [k0, k0 + BLOCK_K) of the rows of x (in fp32) and of dz, with their mask."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    mask = row_ok[:, None] & (offs_k[None, :] < D)
    x = tl.load(X + rows[:, None] * stride_xm + offs_k[None, :], mask=mask, other=0.0)
    dz = tl.load(DZ + rows[:, None] * stride_dzm + offs_k[None, :], mask=mask, other=0.0)
    return offs_k, mask, x.to(tl.float32), dz


@triton.jit
def _normalize_bwd_kernel(X, RNORM, DZ, DX, n_rows, D, stride_xm, stride_dzm,
                          stride_dxm, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    r = tl.load(RNORM + rows, mask=row_ok, other=0.0)
    dot = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        _, _, x, dz = _x_dz_chunk(X, DZ, rows, row_ok, k0, D, stride_xm, stride_dzm, BLOCK_K)
        dot += tl.sum(x * r[:, None] * dz, axis=1)
    for k0 in range(0, D, BLOCK_K):
        offs_k, mask, x, dz = _x_dz_chunk(X, DZ, rows, row_ok, k0, D, stride_xm, stride_dzm,
                                          BLOCK_K)
        dx = (dz - x * r[:, None] * dot[:, None]) * r[:, None]
        tl.store(DX + rows[:, None] * stride_dxm + offs_k[None, :],
                 dx.to(DX.dtype.element_ty), mask=mask)


class TritonNTXent(torch.autograd.Function):
    """Launches the kernels above; saves x (2N x D, input dtype), r and lse (2N fp32).

    ``shard`` None: this process holds the whole batch. Otherwise this rank's
    :class:`~ecgfast.ops.nt_xent_distributed.RowShard`, with ``z1_all``, ``z2_all`` the
    gathered batch (no grad): the kernels run on its own anchor rows only, the LSE values
    are all-gathered and the loss all-reduced; the backward needs no communication (its
    column term reads every row's LSE) and returns ``grad_scale`` times the own rows'
    gradient.
    """

    @staticmethod
    def forward(ctx, z1, z2, temperature: float, input_precision: str, shard=None,
                z1_all=None, z2_all=None):
        shard = RowShard.whole(z1.shape[0]) if shard is None else shard
        # (2N, D) in the input dtype; O(N D), never O(N^2)
        x = torch.cat([z1, z2] if z1_all is None else [z1_all, z2_all], dim=0)
        two_n, d = x.shape
        upcast = interpreting() and x.dtype == torch.bfloat16
        rnorm = torch.empty(two_n, dtype=torch.float32, device=x.device)
        fam = family(x.dtype, input_precision)
        bd = block_d(d, fam)
        cfg = pick(FWD_CONFIGS, fam, d, 2 * shard.count)
        row_programs = triton.cdiv(shard.count, cfg["BLOCK_M"])
        splits, per_split = column_splits(2 * row_programs, two_n, cfg["BLOCK_N"], sm_count(x))
        parts = torch.empty((3, splits, 2 * shard.count), dtype=torch.float32, device=x.device)
        grid = (row_programs, 2, splits)
        with launch_device(x, grid, "Triton NT-Xent forward"):
            _rnorm_kernel[(triton.cdiv(two_n, ROWWISE_BLOCK_M),)](
                x, rnorm, two_n, d, x.stride(0), BLOCK_M=ROWWISE_BLOCK_M,
                BLOCK_K=min(bd, 128))
            _nt_xent_fwd_kernel[grid](
                x, rnorm, parts[0], parts[1], parts[2], two_n, two_n // 2, shard.start,
                shard.count, d, x.stride(0), per_split, LOG2E / temperature, BLOCK_D=bd,
                ONE_TILE=d <= ONE_TILE_MAX_D, INPUT_PRECISION=input_precision, UPCAST=upcast,
                **cfg)
        lse, pos = merge_splits(*parts)
        ctx.save_for_backward(x, rnorm, shard.gather_rows(lse))
        ctx.temperature = temperature
        ctx.input_precision = input_precision
        ctx.shard = shard
        return shard.all_sum((lse - pos).sum()) / two_n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        x, rnorm, lse = ctx.saved_tensors
        shard = ctx.shard
        two_n, d = x.shape
        upcast = interpreting() and x.dtype == torch.bfloat16
        fam = family(x.dtype, ctx.input_precision)
        cfg = pick(BWD_CONFIGS, fam, d, 2 * shard.count)
        one_tile = d <= ONE_TILE_MAX_D
        bd = block_d(d, fam)
        block_dout = bd if one_tile else CHUNK_DOUT
        n_dout = triton.cdiv(d, block_dout)
        row_programs = triton.cdiv(shard.count, cfg["BLOCK_M"])
        splits, per_split = column_splits(2 * n_dout * row_programs, two_n, cfg["BLOCK_N"],
                                          sm_count(x))
        dz = torch.empty((splits, 2 * shard.count, d), dtype=torch.float32, device=x.device)
        grid = (row_programs, 2 * n_dout, splits)
        check_grid(grid, "Triton NT-Xent backward")
        grad = grad_loss.detach().reshape(1).to(torch.float32).contiguous()
        own_x, own_rnorm = shard.own_rows(x), shard.own_rows(rnorm)
        dx = torch.empty((2 * shard.count, d), dtype=x.dtype, device=x.device)
        with launch_device(x):
            _nt_xent_bwd_kernel[grid](
                x, rnorm, lse, dz, grad, two_n, two_n // 2, shard.start, shard.count, d,
                x.stride(0), dz.stride(1), dz.stride(0), per_split, LOG2E / ctx.temperature,
                shard.grad_scale / (two_n * ctx.temperature), BLOCK_D=bd,
                BLOCK_DOUT=block_dout, ONE_TILE=one_tile,
                INPUT_PRECISION=ctx.input_precision, UPCAST=upcast, **cfg)
            dz = dz[0] if splits == 1 else dz.sum(dim=0)
            _normalize_bwd_kernel[(triton.cdiv(2 * shard.count, ROWWISE_BLOCK_M),)](
                own_x, own_rnorm, dz, dx, 2 * shard.count, d, own_x.stride(0), dz.stride(0),
                dx.stride(0), BLOCK_M=ROWWISE_BLOCK_M, BLOCK_K=min(block_dout, 128))
        n = shard.count
        return dx[:n], dx[n:], None, None, None, None, None


def _limits(z1, z2=None, temperature=None, shard=None) -> list[str]:
    """What the kernels cannot take beyond the first view's device and dtype: a second view
    of another dtype family, and 2N x D (2N over every rank) past their int32 offsets."""
    reasons = []
    if z2 is not None and z2.dtype not in KERNEL_DTYPES:
        reasons.append(f"it takes {dtype_names(KERNEL_DTYPES)} inputs, got z2 of {z2.dtype}")
    rows = 2 * (z1.shape[0] if shard is None else shard.total)
    d = z1.shape[-1] if z1.dim() == 2 else 1
    if rows * d > MAX_INT32_OFFSET:
        reasons.append(f"2N x D = {rows} x {d} = {rows * d} elements, more than its int32 "
                       f"offsets reach ({MAX_INT32_OFFSET}); use backend='streaming'")
    return reasons


def _run(z1, z2, temperature, shard=None):
    """The backend's entry (the only one): inputs validated by :func:`ecgfast.losses.nt_xent`
    and accepted by :data:`BACKEND`; two views of different dtypes run in the wider one, the
    fp32 dot mode follows PyTorch's matmul setting. ``shard``: see :class:`TritonNTXent`."""
    if z1.dtype != z2.dtype:
        dtype = torch.promote_types(z1.dtype, z2.dtype)
        z1, z2 = z1.to(dtype), z2.to(dtype)
    z1_all, z2_all = (None, None) if shard is None else shard.gather_views(z1, z2)
    return TritonNTXent.apply(z1, z2, float(temperature), dot_input_precision(z1.dtype, "matmul"),
                              shard, z1_all, z2_all)


#: CUDA tensors (CPU ones under the interpreter) in fp32, bf16 or fp16.
BACKEND = Backend("nt_xent", "triton", _run,
                  Capabilities(dtypes=KERNEL_DTYPES, triton=True), _limits)
