"""Conv1d (stride 1, 'same' padding) with bias, activation, dropout and the SE squeeze fused.

``y = dropout(act(conv1d_same(x, W) + b))`` for x (B, C_in, L), W (C_out, C_in, K) and
y (B, C_out, L), the reference being :func:`ecgfast.ops.encoder_block.conv_act_dropout`. 'Same'
padding puts (K - 1) // 2 zeros on the left and the rest (one more for even K) on the right.

Kernels, in launch order:

- ``_conv1d_fwd_kernel``: one program per (sample, BLOCK_T time steps, BLOCK_CO output
  channels), the batch on grid axis 0 (axes 1 and 2 stop at 65535). The convolution is an
  implicit GEMM: with the reduction index r = ci * K + k over R = C_in * K, ``y^T[t, co] =
  sum_r X^T[t, r] W^T[r, co]`` where ``X^T[t, r] = x[ci, t + k - pad]`` is gathered tile
  by tile (BLOCK_T x BLOCK_R, zero outside [0, L)) and never stored; each tile pair goes
  through ``tl.dot`` (fp32 accumulation). Time is the GEMM's M axis (64 rows, what sm_90's
  warpgroup MMA needs), channels its N axis; K and the left pad are runtime arguments (one
  compiled kernel serves every kernel size). C_in = 1 (the first layer, R = K) takes the
  DIRECT path instead: K rank-1 updates ``acc += x[t + k - pad] W[:, k]`` on the FMA
  units, since a ``tl.dot`` operand must be at least 16 wide and one channel gives no
  reuse to feed a tensor core with. The epilogue adds the bias, applies relu / leaky_relu,
  applies keyed dropout (:mod:`ecgfast.keyed`: element j = c * L + t of sample b is kept
  iff ``mix32(mix32(j) ^ keys[b]) >> 8 >= keep_thr``, ``keep_thr = keep_threshold(p)``,
  in uint32 arithmetic; the program's key is loaded once), and with ``WRITE_SUMS`` writes
  per-(sample, channel, time tile) partial sums of y for the squeeze-excitation mean
  (summed over tiles in PyTorch: deterministic, no atomics). The dropout mask is never
  stored. Since the mask is a function of the sample's key and (c, t) only, it does not
  depend on the batch a sample sits in nor on the tiles, and it is the one
  :func:`ecgfast.keyed.dropout_keep` gives the eager reference.
- ``_act_dropout_bwd_kernel``: the element-wise backward, one pass:
  ``gz = (gy + gsum[b, c]) * act'(y) * keep * 1/(1-p)``, where ``keep`` is recomputed
  from (keys[b], j), b = n // (C_out L) and j = n - b C_out L for the flat index n (the key
  loaded per element), and ``act'`` is read off the sign of the saved output y (y > 0 iff
  the pre-activation was > 0 for a kept element; a dropped element has gradient 0
  anyway). Needs ``negative_slope >= 0``.
- The weight, bias and input gradients of the convolution itself go through aten's
  ``convolution_backward`` on ``gz`` (cuDNN on CUDA).

Saved for backward: x, W, y (the output, which is the next layer's input or the SE /
pool input, so usually saved anyway) and the (B,) keys: no pre-activation, no mask.
Backward allocates gz, the size of y (as eager autograd does), plus a padded copy of x for
even K (aten pads symmetrically).

Under TRITON_INTERPRET=1 (CPU tests) bf16 outputs are staged in fp32 buffers and rounded
by PyTorch: the interpreter casts fp32 -> bf16 by truncation, the GPU to nearest even.

Dtypes: x and W in fp32, bf16 or fp16 (the same dtype); accumulation in fp32; y in x's
dtype; the SE partial sums in fp32. ``tl.dot`` ``input_precision`` for fp32: PyTorch's
cuDNN convolution setting (:func:`ecgfast.kernels._common.dot_input_precision` with
"conv"), so the eager model computes the same way; ignored for bf16/fp16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ecgfast.kernels._common import (
    MAX_INT32_OFFSET,
    buffer_dtype,
    dot_input_precision,
    interpreting,
    launch_device,
    mix32,
    partial_sums,
)
from ecgfast.keyed import keep_threshold
from ecgfast.ops.encoder_block import grad_like

ACT_CODES = {"none": 0, "relu": 1, "leaky_relu": 2}
#: Flat indices into y (and the dropout's per-sample index j) are int32, and the
#: element-wise backward's last block reaches up to BWD_BLOCK_INTERPRET - 1 past the end:
#: both stay below 2^31.
MAX_NUMEL = MAX_INT32_OFFSET - 2**15


def conv_config(c_in: int, c_out: int, k: int, length: int = 2560, ieee_fp32: bool = False,
                interpret: bool | None = None) -> dict:
    """Production launch configuration for one conv layer (block sizes, warps, stages).

    DIRECT (C_in = 1): BLOCK_CO x BLOCK_T FMA tile. Otherwise the implicit GEMM tile
    BLOCK_CO x BLOCK_T with BLOCK_R-deep reduction steps. Under TRITON_INTERPRET=1 (numpy on
    the CPU; ``interpret`` None reads the environment) the tiles are large so that few
    programs run. ``ieee_fp32`` (fp32 with exact
    "ieee" dots, which run on the FMA units with both operands in registers) halves
    BLOCK_R so that sm_80 does not spill.
    """
    direct = c_in == 1
    block_co = min(128, max(16, triton.next_power_of_2(c_out)))
    if interpreting() if interpret is None else interpret:
        return {"BLOCK_CO": block_co,
                "BLOCK_T": min(4096, max(16, triton.next_power_of_2(length))),
                "BLOCK_R": min(128, max(16, triton.next_power_of_2(c_in * k))),
                "DIRECT": direct, "num_warps": 4, "num_stages": 1}
    if direct:
        return {"BLOCK_CO": min(block_co, 64), "BLOCK_T": 128, "BLOCK_R": 16, "DIRECT": True,
                "num_warps": 4, "num_stages": 2}
    return {"BLOCK_CO": block_co, "BLOCK_T": 64, "BLOCK_R": 16 if ieee_fp32 else 32,
            "DIRECT": False, "num_warps": 4 if block_co <= 64 else 8, "num_stages": 3}


@triton.jit
def _conv1d_fwd_kernel(X, W, BIAS, Y, PART, KEYS, keep_thr, drop_scale, negative_slope,
                       C_out, L, R, K, PAD_LEFT, n_tblocks, stride_xb, stride_xc,
                       BLOCK_CO: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
                       DIRECT: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                       DROPOUT: tl.constexpr, WRITE_SUMS: tl.constexpr,
                       INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # Tiles are time-major, (BLOCK_T, BLOCK_CO): time is the GEMM's M axis (64-128 rows,
    # what sm_90's warpgroup MMA wants), output channels its N axis (32-128).
    b = tl.program_id(0)  # batch on axis 0: axes 1 and 2 stop at 65535
    pid_t = tl.program_id(1)
    pid_c = tl.program_id(2)
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    co = pid_c * BLOCK_CO + tl.arange(0, BLOCK_CO)
    t_ok = t < L
    co_ok = co < C_out
    x_base = X + b.to(tl.int64) * stride_xb
    acc = tl.zeros((BLOCK_T, BLOCK_CO), dtype=tl.float32)
    if DIRECT:
        # C_in == 1: R == K; K rank-1 updates on the FMA units.
        for k in range(K):
            w = tl.load(W + co * R + k, mask=co_ok, other=0.0).to(tl.float32)
            src = t + (k - PAD_LEFT)
            xv = tl.load(x_base + src, mask=(src >= 0) & (src < L), other=0.0).to(tl.float32)
            acc += xv[:, None] * w[None, :]
    else:
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            r_ok = r < R
            ci = r // K
            kk = r % K
            # implicit im2col tile X^T[t, r] = x[ci, t + k - pad], zero outside [0, L)
            src = t[:, None] + (kk[None, :] - PAD_LEFT)
            xv = tl.load(x_base + ci[None, :] * stride_xc + src,
                         mask=r_ok[None, :] & (src >= 0) & (src < L), other=0.0)
            w = tl.load(W + co[None, :] * R + r[:, None],
                        mask=co_ok[None, :] & r_ok[:, None], other=0.0)
            if UPCAST:  # the CPU interpreter's numpy matmul has no bf16
                w = w.to(tl.float32)
                xv = xv.to(tl.float32)
            acc = tl.dot(xv, w, acc, input_precision=INPUT_PRECISION)
    # epilogue: bias -> activation -> dropout -> (SE partial sums) -> store
    if HAS_BIAS:
        acc += tl.load(BIAS + co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
    if ACT == 1:
        acc = tl.maximum(acc, 0.0)
    elif ACT == 2:
        acc = tl.where(acc > 0, acc, acc * negative_slope)
    row = b * C_out + co  # (sample, channel) row of y, int32
    offs = row[None, :] * L + t[:, None]
    if DROPOUT:  # keyed: element j = c * L + t of sample b (ecgfast.keyed.dropout_keep)
        key = tl.load(KEYS + b).to(tl.uint32, bitcast=True)
        j = (co[None, :] * L + t[:, None]).to(tl.uint32, bitcast=True)
        bits = (mix32(mix32(j) ^ key) >> 8).to(tl.int32, bitcast=True)
        acc = tl.where(bits >= keep_thr, acc * drop_scale, 0.0)
    mask = t_ok[:, None] & co_ok[None, :]
    tl.store(Y + offs.to(tl.int64), acc.to(Y.dtype.element_ty), mask=mask)
    if WRITE_SUMS:
        part = tl.sum(tl.where(mask, acc, 0.0), axis=0)
        tl.store(PART + row.to(tl.int64) * n_tblocks + pid_t, part, mask=co_ok)


@triton.jit
def _act_dropout_bwd_kernel(GY, GSUM, Y, GZ, KEYS, keep_thr, drop_scale, negative_slope,
                            L, row_size, numel, BLOCK: tl.constexpr, ACT: tl.constexpr,
                            DROPOUT: tl.constexpr, HAS_GY: tl.constexpr,
                            HAS_GSUM: tl.constexpr):
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = n < numel
    g = tl.zeros((BLOCK,), dtype=tl.float32)
    if HAS_GY:
        g += tl.load(GY + n, mask=ok, other=0.0).to(tl.float32)
    if HAS_GSUM:  # d(sum_t y[b, c, t]) / dy = 1: broadcast over time
        g += tl.load(GSUM + n // L, mask=ok, other=0.0)
    y = tl.load(Y + n, mask=ok, other=0.0).to(tl.float32)
    if ACT == 1:
        g = tl.where(y > 0, g, 0.0)
    elif ACT == 2:
        g = tl.where(y > 0, g, g * negative_slope)
    if DROPOUT:  # the forward's mask, recomputed: sample b = n // (C_out L), j within it
        b = n // row_size
        key = tl.load(KEYS + b, mask=ok, other=0).to(tl.uint32, bitcast=True)
        j = (n - b * row_size).to(tl.uint32, bitcast=True)
        bits = (mix32(mix32(j) ^ key) >> 8).to(tl.int32, bitcast=True)
        g = tl.where(bits >= keep_thr, g * drop_scale, 0.0)
    tl.store(GZ + n, g.to(GZ.dtype.element_ty), mask=ok)


def slope_supported(act: str, negative_slope: float) -> bool:
    """The backward reads the activation's slope off the output's sign: leaky_relu needs
    ``negative_slope >= 0``."""
    return act != "leaky_relu" or negative_slope >= 0


def _fwd(x, weight, bias, act, negative_slope, p, keys, write_sums):
    bsz, c_in, length = x.shape
    c_out, _, k = weight.shape
    x = x.contiguous()
    weight = weight.contiguous()
    precision = dot_input_precision(x.dtype, "conv")
    cfg = conv_config(c_in, c_out, k, length,
                      ieee_fp32=x.dtype == torch.float32 and precision == "ieee")
    y = torch.empty((bsz, c_out, length), device=x.device, dtype=buffer_dtype(x.dtype))
    n_tblocks = triton.cdiv(length, cfg["BLOCK_T"])
    part = partial_sums(bsz, c_out, n_tblocks, y, write_sums)
    grid = (bsz, n_tblocks, triton.cdiv(c_out, cfg["BLOCK_CO"]))
    with launch_device(x, grid, f"Triton conv of length {length}"):
        _conv1d_fwd_kernel[grid](
            x, weight, bias if bias is not None else weight, y, part,
            keys if keys is not None else x, keep_threshold(p), 1.0 / (1.0 - p),
            negative_slope,
            c_out, length, c_in * k, k, (k - 1) // 2, n_tblocks, x.stride(0), x.stride(1),
            BLOCK_CO=cfg["BLOCK_CO"], BLOCK_T=cfg["BLOCK_T"],
            BLOCK_R=cfg["BLOCK_R"], DIRECT=cfg["DIRECT"], HAS_BIAS=bias is not None,
            ACT=ACT_CODES[act], DROPOUT=keys is not None, WRITE_SUMS=write_sums,
            INPUT_PRECISION=precision,
            UPCAST=interpreting() and x.dtype != torch.float32,
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
    sums = part.sum(dim=-1) if write_sums else None
    return y.to(x.dtype), sums


#: Elements per program of the element-wise backward (the CPU interpreter, which pays per
#: program and per operation, gets large blocks).
BWD_BLOCK = 1024
BWD_BLOCK_INTERPRET = 2**15


def _act_dropout_bwd(gy, gsums, y, act, negative_slope, p, keys):
    numel = y.numel()
    gz = torch.empty_like(y, dtype=buffer_dtype(y.dtype))
    block = BWD_BLOCK_INTERPRET if interpreting() else BWD_BLOCK
    grid = (triton.cdiv(numel, block),)
    with launch_device(y, grid, "Triton conv backward"):
        _act_dropout_bwd_kernel[grid](
            gy.contiguous() if gy is not None else y,
            gsums.contiguous().float() if gsums is not None else y,
            y, gz, keys if keys is not None else y, keep_threshold(p), 1.0 / (1.0 - p),
            negative_slope, y.shape[-1], y.shape[1] * y.shape[2], numel,
            BLOCK=block, ACT=ACT_CODES[act], DROPOUT=keys is not None, HAS_GY=gy is not None,
            HAS_GSUM=gsums is not None, num_warps=4,
        )
    return gz.to(y.dtype)


class Conv1dActDropout(torch.autograd.Function):
    """``(y, sums) = conv_act_dropout(x, W, b)``, sums = y.sum(-1) in fp32 when asked for.

    forward(x, weight, bias, act, negative_slope, p, keys, write_sums); ``keys``: the
    samples' dropout keys, a contiguous int32 (B,) tensor on x's device, or None for no
    dropout (pass None when p == 0). Not checked here: the encoder block's backend
    (:mod:`ecgfast.kernels.encoder_block`) launches it with arguments dispatch accepted.
    ``sums`` is None unless ``write_sums``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, act, negative_slope, p, keys, write_sums):
        y, sums = _fwd(x, weight, bias, act, negative_slope, p, keys, write_sums)
        ctx.save_for_backward(x, weight, y, keys)
        ctx.conf = (act, negative_slope, p, bias is not None)
        ctx.set_materialize_grads(False)
        return y, sums

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gsums):
        x, weight, y, keys = ctx.saved_tensors
        act, negative_slope, p, has_bias = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if (gy is None and gsums is None) or not (need_x or need_w or need_b):
            return (None,) * 8
        gz = _act_dropout_bwd(gy, gsums, y, act, negative_slope, p, keys)
        k = weight.shape[-1]
        pad_left, pad_right = (k - 1) // 2, k - 1 - (k - 1) // 2
        if pad_left == pad_right:
            xin, pad = x, pad_left
        else:  # aten pads symmetrically: pad x by hand for even K
            xin, pad = torch.nn.functional.pad(x, (pad_left, pad_right)), 0
        gx, gw, gb = torch.ops.aten.convolution_backward(
            gz, xin, weight, [weight.shape[0]] if has_bias else None, [1], [pad], [1],
            False, [0], 1, [need_x, need_w, need_b and has_bias])
        if need_x and xin is not x:
            gx = gx[..., pad_left:pad_left + x.shape[-1]]
        if need_w:
            gw = grad_like(gw, weight)
        return gx, gw, gb, None, None, None, None, None
