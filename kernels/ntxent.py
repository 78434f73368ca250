"""NT-Xent (SimCLR) loss in Triton, never building the 2N x 2N similarity matrix.

With ``x = cat(z1, z2)`` (2N x D), ``r_i = 1 / max(||x_i||, eps)``, ``z_i = r_i x_i``,
``s_ij = r_i r_j (x_i . x_j) / tau`` for ``j != i`` and ``p(i) = (i + N) mod 2N``::

    loss = 1/2N sum_i (lse_i - s_{i,p(i)}),     lse_i = logsumexp_{j != i} s_ij

Kernels, in launch order:

- ``_rnorm_kernel``: r_i per row (2N floats).
- ``_ntxent_fwd_kernel``: one program per BLOCK_M rows; online log-sum-exp (base 2) over
  BLOCK_N-column tiles of ``x x^T``, the diagonal masked, K-loop over D in BLOCK_K chunks.
  Writes lse_i and the positive logit s_{i,p(i)}; nothing else reaches global memory.
- ``_ntxent_bwd_kernel``: recomputes the tiles from lse and accumulates, per row tile,
  both the row term and the column term of ``dz = (G + G^T) z / tau`` (``s`` is symmetric,
  so tile (I, J) of ``G^T`` is ``exp(s_IJ - lse_J)``: one ``s`` tile gives both), minus the
  positive one-hot::

      dz_i = g / (2N tau) * sum_j (exp(s_ij - lse_i) + exp(s_ij - lse_j) - 2 [j == p(i)]) z_j

  The output D is split over grid axis 1 in BLOCK_DOUT chunks (one chunk for D <= 128).
- ``_normalize_bwd_kernel``: ``dx_i = r_i (dz_i - z_i (z_i . dz_i))``, cast to the input dtype.

Dtypes: x in fp32, bf16 or fp16 (:data:`BACKEND`), read natively; every ``tl.dot``
accumulates in fp32. The ``x x^T`` dot takes the raw inputs (exact products for bf16/fp16);
the backward's second dot takes ``P`` (values in [-2, 2]) and the normalised ``z`` in the
input dtype. ``input_precision`` ("ieee" or "tf32") selects the fp32 dot mode (through
dispatch: PyTorch's matmul setting); it is ignored for bf16/fp16. Every ``tl.dot`` operand
is at least 16 wide on each axis (D is padded with masked loads up to BLOCK_K >= 16).

Production configurations (``FWD_CONFIGS``, ``BWD_CONFIGS``) are listed next to the kernels
and are what :mod:`ecgfast.kernels.aot` compiles for sm_80 and sm_90.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ecgfast.dispatch import Backend, BackendUnavailable, Capabilities, dtype_names
from ecgfast.kernels._common import (KERNEL_DTYPES, dot_input_precision, interpreting,
                                     launch_device)

NORM_EPS = 1e-12
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453

#: Production configs per family ("16bit": bf16/fp16, "fp32": fp32 with tf32 dots,
#: "fp32-ieee": fp32 with exact dots on the FMA units): the first for 2N < 8192, the second
#: (bigger row tile) from 2N >= 8192. BLOCK_K (the D chunk of the x x^T dot) is
#: next_pow2(clamp(D, 16, BLOCK_K_MAX)); BLOCK_DOUT (dz columns per program)
#: next_pow2(clamp(D, 16, 128)). Chosen among candidates compiled for sm_80 and sm_90 at
#: D = 128 with several Triton versions as ones that spill no registers with any of them
#: (register allocation differs between versions; "ieee" keeps fp32 operands in registers,
#: hence its narrower tiles and single-stage backward loops). tests/kernels/test_aot.py
#: checks them; the versions and the candidates that spilled are in benchmarks/README.md
#: ("Ahead-of-time compilation").
def _configs(*tiles):
    """``triton.Config`` list from (BLOCK_M, BLOCK_N, num_warps, num_stages) tuples."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st)
            for m, n, w, st in tiles]


FWD_CONFIGS = {
    "16bit": _configs((64, 64, 4, 3), (128, 64, 8, 3)),
    "fp32": _configs((64, 64, 4, 3), (128, 64, 8, 3)),
    "fp32-ieee": _configs((64, 32, 8, 3), (128, 64, 8, 2)),
}
BWD_CONFIGS = {
    "16bit": _configs((64, 64, 4, 2), (128, 32, 8, 2)),
    "fp32": _configs((64, 16, 8, 2), (128, 16, 8, 2)),
    "fp32-ieee": _configs((64, 16, 8, 1), (128, 16, 8, 1)),
}
BLOCK_K_MAX = {"16bit": 64, "fp32": 32, "fp32-ieee": 32}
#: Rows per program of the row-wise kernels (_rnorm_kernel, _normalize_bwd_kernel).
ROWWISE_BLOCK_M = 16
#: Small fixed config used under TRITON_INTERPRET=1 (numpy, CPU): the smallest legal tiles.
INTERPRET_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16}


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
def _sim_tile(X, rows, row_ok, cols, col_ok, D, stride_xm,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Raw (BLOCK_M, BLOCK_N) tile of x x^T, fp32 accumulation, K-loop over D."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < D
        a = tl.load(X + rows[:, None] * stride_xm + offs_k[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        bt = tl.load(X + cols[None, :] * stride_xm + offs_k[:, None],
                     mask=col_ok[None, :] & k_ok[:, None], other=0.0)
        acc = _dot(a, bt, acc, INPUT_PRECISION, UPCAST)
    return acc


@triton.jit
def _ntxent_fwd_kernel(X, RNORM, LSE, POS, n_rows, half, row_start, row_count, D, stride_xm,
                       scale_log2,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # this program's anchor rows: view program_id(1), local rows [local0, local0 + BLOCK_M)
    # of the owned range [row_start, row_start + row_count) of that view
    view = tl.program_id(1)
    local0 = tl.program_id(0) * BLOCK_M
    local = local0 + tl.arange(0, BLOCK_M)
    row0 = view * half + row_start + local0
    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = local < row_count
    # s in base 2: s2_ij = x_i . x_j * (r_i * log2(e) / tau) * r_j
    row_scale = tl.load(RNORM + rows, mask=row_ok, other=0.0) * scale_log2
    pos_col = tl.where(rows < half, rows + half, rows - half)
    pos_lo = tl.min(pos_col, axis=0)
    pos_hi = tl.max(pos_col, axis=0)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    pos_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for n0 in range(0, n_rows, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_rows
        acc = _sim_tile(X, rows, row_ok, cols, col_ok, D, stride_xm,
                        BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION, UPCAST)
        col_r = tl.load(RNORM + cols, mask=col_ok, other=0.0)
        s = acc * row_scale[:, None] * col_r[None, :]
        # Masks only on the few tiles that need them (keeps registers for the rest).
        if (n0 + BLOCK_N > pos_lo) & (n0 <= pos_hi):  # holds some positives
            pos_i += tl.sum(tl.where(cols[None, :] == pos_col[:, None], s, 0.0), axis=1)
        if (n0 + BLOCK_N > n_rows) | ((n0 + BLOCK_N > row0) & (n0 < row0 + BLOCK_M)):
            s = tl.where(col_ok[None, :] & (rows[:, None] != cols[None, :]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # row with nothing valid yet
        l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), axis=1)
        m_i = m_new
    lse = (m_i + tl.log2(l_i)) * 0.6931471805599453
    out = view * row_count + local
    tl.store(LSE + out, lse, mask=row_ok)
    tl.store(POS + out, pos_i * 0.6931471805599453, mask=row_ok)


@triton.jit
def _ntxent_bwd_kernel(X, RNORM, LSE, DZ, GRAD, n_rows, half, row_start, row_count, D,
                       stride_xm, stride_dzm, scale_log2, grad_scale,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       BLOCK_DOUT: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                       UPCAST: tl.constexpr):
    view = tl.program_id(2)  # anchor rows as in the forward kernel
    local0 = tl.program_id(0) * BLOCK_M
    local = local0 + tl.arange(0, BLOCK_M)
    row0 = view * half + row_start + local0
    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = local < row_count
    offs_d = tl.program_id(1) * BLOCK_DOUT + tl.arange(0, BLOCK_DOUT)
    d_ok = offs_d < D
    row_scale = tl.load(RNORM + rows, mask=row_ok, other=0.0) * scale_log2
    lse2_row = tl.load(LSE + rows, mask=row_ok, other=0.0) * 1.4426950408889634
    pos_col = tl.where(rows < half, rows + half, rows - half)
    pos_lo = tl.min(pos_col, axis=0)
    pos_hi = tl.max(pos_col, axis=0)
    acc_dz = tl.zeros((BLOCK_M, BLOCK_DOUT), dtype=tl.float32)
    for n0 in range(0, n_rows, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_rows
        acc = _sim_tile(X, rows, row_ok, cols, col_ok, D, stride_xm,
                        BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION, UPCAST)
        col_r = tl.load(RNORM + cols, mask=col_ok, other=0.0)
        lse2_col = tl.load(LSE + cols, mask=col_ok, other=0.0) * 1.4426950408889634
        s2 = acc * row_scale[:, None] * col_r[None, :]
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
        # z_j = r_j x_j for the output columns of this program, in the input dtype
        xc = tl.load(X + cols[:, None] * stride_xm + offs_d[None, :],
                     mask=col_ok[:, None] & d_ok[None, :], other=0.0)
        zc = (xc.to(tl.float32) * col_r[:, None]).to(xc.dtype)
        acc_dz = _dot(a.to(xc.dtype), zc, acc_dz, INPUT_PRECISION, UPCAST)
    g = tl.load(GRAD).to(tl.float32) * grad_scale  # upstream grad / (2N tau)
    out = view * row_count + local
    tl.store(DZ + out[:, None] * stride_dzm + offs_d[None, :], acc_dz * g,
             mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _normalize_bwd_kernel(X, RNORM, DZ, DX, n_rows, D, stride_xm, stride_dzm,
                          stride_dxm, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    r = tl.load(RNORM + rows, mask=row_ok, other=0.0)
    dot = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = row_ok[:, None] & (offs_k[None, :] < D)
        x = tl.load(X + rows[:, None] * stride_xm + offs_k[None, :],
                    mask=mask, other=0.0).to(tl.float32)
        dz = tl.load(DZ + rows[:, None] * stride_dzm + offs_k[None, :], mask=mask, other=0.0)
        dot += tl.sum(x * r[:, None] * dz, axis=1)
    for k0 in range(0, D, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = row_ok[:, None] & (offs_k[None, :] < D)
        x = tl.load(X + rows[:, None] * stride_xm + offs_k[None, :],
                    mask=mask, other=0.0).to(tl.float32)
        dz = tl.load(DZ + rows[:, None] * stride_dzm + offs_k[None, :], mask=mask, other=0.0)
        dx = (dz - x * r[:, None] * dot[:, None]) * r[:, None]
        tl.store(DX + rows[:, None] * stride_dxm + offs_k[None, :],
                 dx.to(DX.dtype.element_ty), mask=mask)


def _family(dtype, input_precision: str) -> str:
    if dtype != torch.float32:
        return "16bit"
    return "fp32-ieee" if input_precision == "ieee" else "fp32"


def _block_k(d: int, family: str = "16bit") -> int:
    """K chunk of the x x^T dot: D padded to a power of two >= 16, at most BLOCK_K_MAX."""
    return triton.next_power_of_2(min(max(d, 16), BLOCK_K_MAX[family]))


def _block_dout(d: int) -> int:
    """Output columns of dz per program: D padded to a power of two >= 16, at most 128."""
    return triton.next_power_of_2(min(max(d, 16), 128))


def _pick(configs, family: str, n_rows: int, override: dict | None) -> dict:
    """Fixed production choice: the bigger row tile only when there are rows to fill it."""
    if override is not None:
        return dict(override, num_warps=4, num_stages=1)
    if interpreting():
        return dict(INTERPRET_CONFIG, num_warps=4, num_stages=1)
    cfg = configs[family][1] if n_rows >= 8192 else configs[family][0]
    return dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


class TritonNTXent(torch.autograd.Function):
    """Launches the kernels above; saves x (2N x D, input dtype), r and lse (2N fp32).

    ``shard`` None: this process holds the whole batch. Otherwise this rank's
    :class:`~ecgfast.distributed.RowShard`, with ``z1_all``, ``z2_all`` the gathered batch
    (no grad): the kernels run on its own anchor rows only, the LSE values are all-gathered
    and the loss all-reduced; the backward needs no communication (its column term reads
    every row's LSE) and returns ``grad_scale`` times the own rows' gradient.
    """

    @staticmethod
    def forward(ctx, z1, z2, temperature: float, input_precision: str, tiles: dict | None,
                shard=None, z1_all=None, z2_all=None):
        from ecgfast.distributed import RowShard

        shard = RowShard.whole(z1.shape[0]) if shard is None else shard
        # (2N, D) in the input dtype; O(N D), never O(N^2)
        x = torch.cat([z1, z2] if z1_all is None else [z1_all, z2_all], dim=0)
        two_n, d = x.shape
        upcast = interpreting() and x.dtype == torch.bfloat16
        rnorm = torch.empty(two_n, dtype=torch.float32, device=x.device)
        lse = torch.empty(2 * shard.count, dtype=torch.float32, device=x.device)
        pos = torch.empty_like(lse)
        family = _family(x.dtype, input_precision)
        block_k = _block_k(d, family)
        cfg = _pick(FWD_CONFIGS, family, 2 * shard.count, tiles)
        grid = (triton.cdiv(shard.count, cfg["BLOCK_M"]), 2)
        with launch_device(x):
            _rnorm_kernel[(triton.cdiv(two_n, ROWWISE_BLOCK_M),)](
                x, rnorm, two_n, d, x.stride(0), BLOCK_M=ROWWISE_BLOCK_M, BLOCK_K=block_k)
            _ntxent_fwd_kernel[grid](
                x, rnorm, lse, pos, two_n, two_n // 2, shard.start, shard.count, d,
                x.stride(0), LOG2E / temperature, BLOCK_K=block_k,
                INPUT_PRECISION=input_precision, UPCAST=upcast, **cfg)
        ctx.save_for_backward(x, rnorm, shard.gather_rows(lse))
        ctx.temperature = temperature
        ctx.input_precision = input_precision
        ctx.shard = shard
        ctx.tiles = tiles
        return shard.all_sum((lse - pos).sum()) / two_n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        x, rnorm, lse = ctx.saved_tensors
        shard = ctx.shard
        two_n, d = x.shape
        upcast = interpreting() and x.dtype == torch.bfloat16
        dz = torch.empty((2 * shard.count, d), dtype=torch.float32, device=x.device)
        family = _family(x.dtype, ctx.input_precision)
        cfg = _pick(BWD_CONFIGS, family, 2 * shard.count, ctx.tiles)
        block_d = _block_dout(d)
        grid = (triton.cdiv(shard.count, cfg["BLOCK_M"]), triton.cdiv(d, block_d), 2)
        grad = grad_loss.detach().reshape(1).to(torch.float32).contiguous()
        own_x, own_rnorm = shard.own_rows(x), shard.own_rows(rnorm)
        dx = torch.empty((2 * shard.count, d), dtype=x.dtype, device=x.device)
        with launch_device(x):
            _ntxent_bwd_kernel[grid](
                x, rnorm, lse, dz, grad, two_n, two_n // 2, shard.start, shard.count, d,
                x.stride(0), dz.stride(0), LOG2E / ctx.temperature,
                shard.grad_scale / (two_n * ctx.temperature),
                BLOCK_K=_block_k(d, family), BLOCK_DOUT=block_d,
                INPUT_PRECISION=ctx.input_precision, UPCAST=upcast, **cfg)
            _normalize_bwd_kernel[(triton.cdiv(2 * shard.count, ROWWISE_BLOCK_M),)](
                own_x, own_rnorm, dz, dx, 2 * shard.count, d, own_x.stride(0), dz.stride(0),
                dx.stride(0), BLOCK_M=ROWWISE_BLOCK_M, BLOCK_K=block_d)
        n = shard.count
        return dx[:n], dx[n:], None, None, None, None, None, None


def nt_xent_triton(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
                   input_precision: str = "ieee", tiles: dict | None = None,
                   shard=None) -> torch.Tensor:
    """NT-Xent with the Triton kernels. z1, z2: (N, D) of one dtype that :data:`BACKEND`
    takes (fp32/bf16/fp16), on a CUDA device (or CPU under TRITON_INTERPRET=1).
    ``input_precision``: "ieee" or "tf32" (fp32 inputs). ``tiles``: optional
    ``{"BLOCK_M": m, "BLOCK_N": n}`` (powers of two >= 16) replacing the production configs,
    for tests. ``shard``: this rank's :class:`~ecgfast.distributed.RowShard` of a
    distributed batch (None: all is here). Returns the fp32 mean over the 2N rows (of the
    global batch). Checks the kernel-only arguments, and each view against
    :data:`BACKEND`'s capabilities (dispatch's path, :func:`_run`, skips both checks).
    """
    if input_precision not in ("ieee", "tf32"):
        raise ValueError(f"input_precision must be 'ieee' or 'tf32', got {input_precision!r}")
    if tiles is not None:
        for key in ("BLOCK_M", "BLOCK_N"):
            v = tiles.get(key)
            if not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"tiles[{key!r}] must be a power of two >= 16, got {v!r}")
    capabilities = BACKEND.capabilities
    for name, z in (("z1", z1), ("z2", z2)):
        if z.dtype not in capabilities.dtypes:
            raise TypeError(f"triton NT-Xent: {name} must be "
                            f"{dtype_names(capabilities.dtypes)}, got {z.dtype}")
        reasons = capabilities.reasons(z)
        if reasons:
            raise BackendUnavailable(f"triton NT-Xent cannot take {name}: " + "; ".join(reasons))
    if z1.dtype != z2.dtype:
        raise TypeError(f"triton NT-Xent: z1 is {z1.dtype} but z2 is {z2.dtype}")
    return _apply(z1, z2, temperature, input_precision, tiles, shard)


def _apply(z1, z2, temperature, input_precision, tiles, shard):
    z1_all, z2_all = (None, None) if shard is None else shard.gather_views(z1, z2)
    return TritonNTXent.apply(z1, z2, float(temperature), input_precision, tiles, shard,
                              z1_all, z2_all)


def _run(z1, z2, temperature, shard=None):
    """The dispatch entry: inputs already validated by :func:`ecgfast.losses.nt_xent` and
    accepted by :data:`BACKEND`; mixed dtypes are promoted, the fp32 dot mode follows
    PyTorch's matmul setting."""
    if z1.dtype != z2.dtype:
        dtype = torch.promote_types(z1.dtype, z2.dtype)
        z1, z2 = z1.to(dtype), z2.to(dtype)
    return _apply(z1, z2, temperature, dot_input_precision(z1.dtype, "matmul"), None, shard)


#: CUDA tensors (CPU ones under the interpreter) in fp32, bf16 or fp16.
BACKEND = Backend("nt_xent", "triton", _run,
                  Capabilities(dtypes=KERNEL_DTYPES, triton=True))
