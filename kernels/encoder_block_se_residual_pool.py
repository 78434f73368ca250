"""SE scale + residual + max pool of an encoder block in one pass, forward and backward.

``out = pool(a * f + W_s x + b_s)``, the reference being
:func:`ecgfast.ops.encoder_block.se_residual_pool`: f (B, C, L) the block's second conv output,
a (B, C) the squeeze-excitation weights (or none), x (B, C_in, L) the block input (or no
shortcut), W_s (C, C_in, 1) with b_s (C,) a 1x1 projection (or the identity, C_in == C),
and the pool either MaxPool1d(POOL, STRIDE) -> (B, C, (L - POOL) // STRIDE + 1) or a global
max over time -> (B, C).

Kernels:

- ``_se_residual_pool_fwd_kernel``: one program per (sample, BLOCK_T pooled outputs,
  BLOCK_C channels), the batch on grid axis 0 (axes 1 and 2 stop at 65535); tiles are
  time-major (time is the projection GEMM's M axis). Local pool: for each of the POOL
  window offsets i, the pre-pool tile ``y[j * STRIDE + i, c]`` is computed in registers
  (f and x loaded, the projection as a ``tl.dot`` over C_in in BLOCK_CIN >= 16 chunks,
  zero-padded, or one rank-1 FMA update when C_in = 1) and folded into a running max and
  argmax; windows overlap, so the projection of each time step is
  recomputed POOL / STRIDE times (4 for MaxPool1d(8, 2)) instead of stored. Global max: the
  program walks the time axis in BLOCK_T tiles. Writes the pooled output and the argmax:
  the window offset in int8 (local pool, POOL <= 127) or the time index in int32 (global).
  y itself never reaches memory.
- ``_se_residual_pool_bwd_kernel``: one program per (sample, BLOCK_T time steps, BLOCK_C
  channels) gathers the pooled gradient back to time, ``gy[t] = sum_j [argmax_j == t] g_j``
  over the at most ceil(POOL / STRIDE) windows holding t (no atomics, deterministic), then
  writes ``gf = a * gy``, the per-tile partial sums of ``f * gy`` for ``ga`` and, when there
  is a shortcut, gy itself, whose 1x1 projection backward (two small GEMMs) runs in PyTorch.

Ties: the first maximum of a window gets the gradient, as in ``max_pool1d``; the
reference's global max (``amax``) splits it evenly among tied maxima instead. Both are
valid subgradients; they differ only on exact ties (bf16 values, or all-zero ReLU channels,
whose gradient the ReLU then zeroes anyway).

Saved for backward: f, a, x, W_s (already alive: f is the conv output the conv saves, x
the block input) and the int8 argmax, B x C x L_out bytes.

Dtypes: f, x, W_s, b_s in fp32, bf16 or fp16 (one dtype), a in that dtype or fp32; all
arithmetic in fp32; output in f's dtype. ``tl.dot`` input precision as in
:mod:`ecgfast.kernels.encoder_block_conv1d` (PyTorch's cuDNN convolution setting for fp32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ecgfast.kernels._common import (
    buffer_dtype,
    dot_input_precision,
    interpreting,
    launch_device,
    partial_sums,
)
from ecgfast.ops.encoder_block import grad_like

RES_NONE, RES_IDENTITY, RES_PROJECTION = 0, 1, 2


def pool_config(c: int, c_in: int, length: int = 1277, ieee_fp32: bool = False,
                interpret: bool | None = None) -> dict:
    """Production launch configuration (block sizes, warps) for C channels, C_in inputs and
    ``length`` pooled outputs. ``ieee_fp32`` (exact fp32 dots, on the FMA units with the
    operands in registers) uses 16-wide C_in chunks so that sm_80 does not spill."""
    block_cin = min(16 if ieee_fp32 else 64, max(16, triton.next_power_of_2(c_in)))
    if interpreting() if interpret is None else interpret:  # numpy on the CPU: big tiles
        return {"BLOCK_C": min(128, max(16, triton.next_power_of_2(c))),
                "BLOCK_T": min(4096, max(16, triton.next_power_of_2(length))),
                "BLOCK_CIN": block_cin, "num_warps": 4}
    return {"BLOCK_C": min(64, max(16, triton.next_power_of_2(c))), "BLOCK_T": 64,
            "BLOCK_CIN": block_cin, "num_warps": 8}


def pool_bwd_config(length: int = 1277, interpret: bool | None = None) -> dict:
    """Launch configuration of the (element-wise) backward: BLOCK_C x BLOCK_T tiles."""
    if interpreting() if interpret is None else interpret:
        return {"BLOCK_C": 128, "BLOCK_T": min(4096, max(16, triton.next_power_of_2(length))),
                "num_warps": 4}
    return {"BLOCK_C": 16, "BLOCK_T": 128, "num_warps": 4}


@triton.jit
def _pre_pool_tile(F, X, WS, a, bs, b, c, c_ok, t, t_ok, C, C_in, L,
                   HAS_SE: tl.constexpr, RES: tl.constexpr, PROJ_DOT: tl.constexpr,
                   BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_CIN: tl.constexpr,
                   INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """fp32 tile ``a * f + W_s x + b_s`` at times t (BLOCK_T) and channels c (BLOCK_C),
    time-major (BLOCK_T, BLOCK_C): time is the projection GEMM's M axis."""
    mask = t_ok[:, None] & c_ok[None, :]
    row = b * C + c
    y = tl.load(F + row[None, :].to(tl.int64) * L + t[:, None], mask=mask,
                other=0.0).to(tl.float32)
    if HAS_SE:
        y = y * a[None, :]
    if RES == 1:
        y += tl.load(X + row[None, :].to(tl.int64) * L + t[:, None], mask=mask,
                     other=0.0).to(tl.float32)
    elif RES == 2:
        x_base = X + b.to(tl.int64) * C_in * L
        if PROJ_DOT:
            acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
            for ci0 in range(0, C_in, BLOCK_CIN):
                ci = ci0 + tl.arange(0, BLOCK_CIN)
                ci_ok = ci < C_in
                xv = tl.load(x_base + ci[None, :] * L + t[:, None],
                             mask=t_ok[:, None] & ci_ok[None, :], other=0.0)
                w = tl.load(WS + c[None, :] * C_in + ci[:, None],
                            mask=ci_ok[:, None] & c_ok[None, :], other=0.0)
                if UPCAST:  # the CPU interpreter's numpy matmul has no bf16
                    w = w.to(tl.float32)
                    xv = xv.to(tl.float32)
                acc = tl.dot(xv, w, acc, input_precision=INPUT_PRECISION)
            y += acc
        else:
            for ci in range(C_in):
                w = tl.load(WS + c * C_in + ci, mask=c_ok, other=0.0).to(tl.float32)
                xv = tl.load(x_base + ci * L + t, mask=t_ok, other=0.0).to(tl.float32)
                y += xv[:, None] * w[None, :]
        y += bs[None, :]
    return y


@triton.jit
def _se_residual_pool_fwd_kernel(F, A, X, WS, BS, OUT, ARG, C, C_in, L, L_out,
                                 POOL: tl.constexpr, STRIDE: tl.constexpr,
                                 HAS_SE: tl.constexpr, RES: tl.constexpr,
                                 PROJ_DOT: tl.constexpr, BLOCK_C: tl.constexpr,
                                 BLOCK_T: tl.constexpr, BLOCK_CIN: tl.constexpr,
                                 INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    b = tl.program_id(0)  # batch on axis 0: axes 1 and 2 stop at 65535
    pid_j = tl.program_id(1)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    row = b * C + c
    a = tl.zeros((BLOCK_C,), dtype=tl.float32)
    bs = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_SE:
        a = tl.load(A + row, mask=c_ok, other=0.0).to(tl.float32)
    if RES == 2:
        bs = tl.load(BS + c, mask=c_ok, other=0.0).to(tl.float32)
    if POOL == 0:  # global max over time
        best = tl.full((BLOCK_C,), float("-inf"), dtype=tl.float32)
        arg = tl.zeros((BLOCK_C,), dtype=tl.int32)
        for t0 in range(0, L, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            t_ok = t < L
            v = _pre_pool_tile(F, X, WS, a, bs, b, c, c_ok, t, t_ok, C, C_in, L, HAS_SE, RES,
                               PROJ_DOT, BLOCK_C, BLOCK_T, BLOCK_CIN, INPUT_PRECISION, UPCAST)
            v = tl.where(t_ok[:, None], v, float("-inf"))
            m = tl.max(v, axis=0)
            idx = tl.argmax(v, axis=0)
            upd = m > best  # strict: the first maximum wins, as in torch
            arg = tl.where(upd, t0 + idx, arg)
            best = tl.where(upd, m, best)
        tl.store(OUT + row, best.to(OUT.dtype.element_ty), mask=c_ok)
        tl.store(ARG + row, arg, mask=c_ok)
    else:
        j = pid_j * BLOCK_T + tl.arange(0, BLOCK_T)
        j_ok = j < L_out
        best = tl.full((BLOCK_T, BLOCK_C), float("-inf"), dtype=tl.float32)
        arg = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.int32)
        for i in range(POOL):
            v = _pre_pool_tile(F, X, WS, a, bs, b, c, c_ok, j * STRIDE + i, j_ok, C, C_in, L,
                               HAS_SE, RES, PROJ_DOT, BLOCK_C, BLOCK_T, BLOCK_CIN,
                               INPUT_PRECISION, UPCAST)
            upd = v > best
            arg = tl.where(upd, i, arg)
            best = tl.where(upd, v, best)
        offs = row[None, :].to(tl.int64) * L_out + j[:, None]
        mask = j_ok[:, None] & c_ok[None, :]
        tl.store(OUT + offs, best.to(OUT.dtype.element_ty), mask=mask)
        tl.store(ARG + offs, arg.to(ARG.dtype.element_ty), mask=mask)


@triton.jit
def _se_residual_pool_bwd_kernel(GOUT, ARG, F, A, GF, GY, PART, C, L, L_out, n_tblocks,
                                 POOL: tl.constexpr, STRIDE: tl.constexpr, NQ: tl.constexpr,
                                 HAS_SE: tl.constexpr, WRITE_GY: tl.constexpr,
                                 BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr):
    b = tl.program_id(0)
    pid_t = tl.program_id(1)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    c_ok = c < C
    t_ok = t < L
    mask = c_ok[:, None] & t_ok[None, :]
    row = (b * C + c).to(tl.int64)
    if POOL == 0:
        am = tl.load(ARG + row, mask=c_ok, other=-1)
        go = tl.load(GOUT + row, mask=c_ok, other=0.0).to(tl.float32)
        gy = tl.where(t[None, :] == am[:, None], go[:, None], 0.0)
    else:
        gy = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)
        j_hi = t // STRIDE
        for q in range(NQ):  # the windows j with j * STRIDE <= t < j * STRIDE + POOL
            j = j_hi - q
            ok = t_ok & (j >= 0) & (j < L_out) & (t - j * STRIDE < POOL)
            m2 = c_ok[:, None] & ok[None, :]
            offs = row[:, None] * L_out + j[None, :]
            am = tl.load(ARG + offs, mask=m2, other=-1).to(tl.int32)
            go = tl.load(GOUT + offs, mask=m2, other=0.0).to(tl.float32)
            gy += tl.where(m2 & (j[None, :] * STRIDE + am == t[None, :]), go, 0.0)
    offs_t = row[:, None] * L + t[None, :]
    if WRITE_GY:
        tl.store(GY + offs_t, gy.to(GY.dtype.element_ty), mask=mask)
    if HAS_SE:
        a = tl.load(A + row, mask=c_ok, other=0.0).to(tl.float32)
        f = tl.load(F + offs_t, mask=mask, other=0.0).to(tl.float32)
        tl.store(PART + row * n_tblocks + pid_t, tl.sum(f * gy, axis=1), mask=c_ok)
        tl.store(GF + offs_t, (gy * a[:, None]).to(GF.dtype.element_ty), mask=mask)
    else:
        tl.store(GF + offs_t, gy.to(GF.dtype.element_ty), mask=mask)


#: The local pool's argmax is an int8 window offset.
MAX_POOL_SIZE = 127


class SEResidualPool(torch.autograd.Function):
    """``pool(a * f + W_s x + b_s)``; forward(f, a, x, ws, bs, pool_size, pool_stride).

    ``a`` None: no SE; ``x`` None: no shortcut; ``ws`` None with x: identity. ``pool_size``
    None: global max -> (B, C); else MaxPool1d(pool_size, pool_stride).
    """

    @staticmethod
    def forward(ctx, f, a, x, ws, bs, pool_size, pool_stride):
        f = f.contiguous()
        bsz, c, length = f.shape
        res = RES_NONE if x is None else (RES_IDENTITY if ws is None else RES_PROJECTION)
        c_in = x.shape[1] if x is not None else c
        x_c = x.contiguous() if x is not None else f
        ws2 = ws.reshape(c, c_in).contiguous() if ws is not None else f
        a_c = a.contiguous() if a is not None else f
        bs_c = bs if bs is not None else (torch.zeros(c, device=f.device, dtype=f.dtype)
                                          if ws is not None else f)
        l_pool = 1 if pool_size is None else (length - pool_size) // pool_stride + 1
        precision = dot_input_precision(f.dtype, "conv")
        cfg = pool_config(c, c_in, length if pool_size is None else l_pool,
                          ieee_fp32=f.dtype == torch.float32 and precision == "ieee")
        if pool_size is None:
            out = torch.empty((bsz, c), device=f.device, dtype=buffer_dtype(f.dtype))
            arg = torch.empty((bsz, c), device=f.device, dtype=torch.int32)
            l_out, pool, n_j = 1, 0, 1
        else:
            l_out = (length - pool_size) // pool_stride + 1
            out = torch.empty((bsz, c, l_out), device=f.device, dtype=buffer_dtype(f.dtype))
            arg = torch.empty((bsz, c, l_out), device=f.device, dtype=torch.int8)
            pool, n_j = pool_size, triton.cdiv(l_out, cfg["BLOCK_T"])
        grid = (bsz, n_j, triton.cdiv(c, cfg["BLOCK_C"]))
        with launch_device(f, grid, f"Triton SE-residual-pool of length {length}"):
            _se_residual_pool_fwd_kernel[grid](
                f, a_c, x_c, ws2, bs_c, out, arg, c, c_in, length, l_out,
                POOL=pool, STRIDE=pool_stride, HAS_SE=a is not None, RES=res,
                PROJ_DOT=c_in > 1, BLOCK_C=cfg["BLOCK_C"], BLOCK_T=cfg["BLOCK_T"],
                BLOCK_CIN=cfg["BLOCK_CIN"], INPUT_PRECISION=precision,
                UPCAST=interpreting() and f.dtype != torch.float32,
                num_warps=cfg["num_warps"],
            )
        ctx.save_for_backward(f, a, x, ws, arg)
        ctx.conf = (pool, pool_stride, l_out, bs is not None)
        return out.to(f.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        f, a, x, ws, arg = ctx.saved_tensors
        pool, stride, l_out, has_bs = ctx.conf
        need_f, need_a, need_x, need_ws, need_bs = ctx.needs_input_grad[:5]
        bsz, c, length = f.shape
        cfg = pool_bwd_config(length)
        has_se = a is not None
        # gy gets its own buffer when a shortcut needs it and it differs from gf (SE), or
        # when it would be returned twice (identity shortcut, no SE: gf == gx)
        write_gy = x is not None and (has_se or ws is None)
        gf = torch.empty_like(f, dtype=buffer_dtype(f.dtype))
        gy = torch.empty_like(gf) if write_gy else gf
        n_t = triton.cdiv(length, cfg["BLOCK_T"])
        part = partial_sums(bsz, c, n_t, gf, has_se)
        grid = (bsz, n_t, triton.cdiv(c, cfg["BLOCK_C"]))
        with launch_device(f, grid, f"Triton SE-residual-pool backward of length {length}"):
            _se_residual_pool_bwd_kernel[grid](
                gout.contiguous(), arg, f, a if has_se else f, gf, gy, part, c, length,
                l_out, n_t, POOL=pool, STRIDE=stride,
                NQ=triton.cdiv(pool, stride) if pool else 1, HAS_SE=has_se,
                WRITE_GY=write_gy, BLOCK_C=cfg["BLOCK_C"], BLOCK_T=cfg["BLOCK_T"],
                num_warps=cfg["num_warps"],
            )
        gf, gy = gf.to(f.dtype), gy.to(f.dtype)
        ga = part.sum(-1).to(a.dtype) if has_se and need_a else None
        gx = gws = gbs = None
        if x is not None:
            if ws is None:
                gx = gy if need_x else None
            else:
                w2 = ws.reshape(c, x.shape[1])
                if need_x:
                    gx = torch.matmul(w2.t(), gy)
                if need_ws:
                    gws = grad_like(torch.einsum("bol,bil->oi", gy, x).reshape(ws.shape), ws)
                if need_bs and has_bs:
                    gbs = gy.sum(dim=(0, 2))
        return (gf if need_f else None), ga, gx, gws, gbs, None, None
