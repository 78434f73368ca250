"""One encoder block on the Triton backend: three fused kernels and the tiny SE MLP.

``encoder_block_triton(x, params, spec, dropout_keys)`` computes ``pool(SE(F(x)) + W_s x)``
as :func:`ecgfast.ops.encoder_block.encoder_block` does, from the same inputs (plain
tensors in a :class:`~ecgfast.ops.encoder_block.BlockParams`, a
:class:`~ecgfast.ops.encoder_block.BlockSpec`), in launch order:

1. :class:`ecgfast.kernels.encoder_block_conv1d.Conv1dActDropout`: conv1 + bias + act +
   dropout -> h.
2. the same for conv2 -> f, with the per-(sample, channel) sums of f for the SE squeeze
   written by the conv epilogue (so f is not read again for the mean).
3. the excitation MLP on the (B, C) means, in PyTorch (the reference's
   :func:`ecgfast.ops.encoder_block.se_excite`).
4. :class:`ecgfast.kernels.encoder_block_se_residual_pool.SEResidualPool`: SE scale, 1x1
   shortcut or identity, max pool (or global max), writing only the pooled output and an
   int8 argmax.

Dropout keys are the op's input, not drawn here: ``dropout_keys`` None (no dropout) or an
int32 (2, B) tensor on x's device, row 0 conv1's per-sample keys, row 1 conv2's. The caller
makes them: :class:`ecgfast.layers.EncoderBlock` in training takes them from its caller
(:meth:`ecgfast.keyed.KeyedRandom.dropout_keys`, so a chunked batch replays the masks of
the unchunked one) or draws them with ``KeyedRandom.from_default_generator``. Each conv's
mask is a function of its sample's key and of (c, t) only (kernels/encoder_block_conv1d.py),
the very mask the eager backend draws from the same keys; backward recomputes it from the
keys.

What the backend supports is declared in :data:`BACKEND` and checked once by
:mod:`ecgfast.dispatch`; this is the kernels' only entry, and the autograd Functions it
launches trust what dispatch accepted (shapes, dtypes, devices, keys).
"""

from __future__ import annotations

import torch

from ecgfast.kernels._common import KERNEL_DTYPES
from ecgfast.kernels.encoder_block_conv1d import MAX_NUMEL, Conv1dActDropout, slope_supported
from ecgfast.kernels.encoder_block_se_residual_pool import MAX_POOL_SIZE, SEResidualPool
from ecgfast.ops.backend import Backend, Capabilities
from ecgfast.ops.encoder_block import BlockParams, BlockSpec, check_dropout_keys, se_excite


def encoder_block_triton(x: torch.Tensor, params: BlockParams, spec: BlockSpec,
                         dropout_keys: torch.Tensor | None) -> torch.Tensor:
    """One block on x (B, C_in, L) with the kernels; arguments as
    :func:`ecgfast.ops.encoder_block.encoder_block` (``dropout_keys``: module docstring)."""
    p = spec.dropout if dropout_keys is not None else 0.0
    keys1, keys2 = (dropout_keys[0].contiguous(), dropout_keys[1].contiguous()) if p > 0 \
        else (None, None)
    act, slope = spec.activation, float(spec.negative_slope)
    h, _ = Conv1dActDropout.apply(x, params.conv1_weight, params.conv1_bias, act, slope, p,
                                  keys1, False)
    f, sums = Conv1dActDropout.apply(h, params.conv2_weight, params.conv2_bias, act, slope,
                                     p, keys2, spec.attention)
    a = None
    if spec.attention:
        mean = (sums / f.shape[-1]).to(f.dtype)
        a = se_excite(mean, *params.se)
    return SEResidualPool.apply(f, a, x if spec.residual else None, params.shortcut_weight,
                                params.shortcut_bias, spec.pool_size, spec.pool_stride)


def _limits(x: torch.Tensor, params: BlockParams, spec: BlockSpec,
            dropout_keys: torch.Tensor | None) -> list[str]:
    """Why the kernels cannot run a block (beyond x's device and dtype): they index the
    tensors by pointer, so every shape and key is checked here, before any launch."""
    reasons = []
    if x.dim() != 3 or x.shape[1] != spec.in_channels:
        reasons.append(f"it needs x of shape (B, {spec.in_channels}, L), got {tuple(x.shape)}")
    elif spec.pool_size is not None and x.shape[-1] < spec.pool_size:
        reasons.append(f"it needs a length >= pool_size {spec.pool_size}, got {x.shape[-1]}")
    for (name, want), t in zip(spec.param_shapes().items(), params):
        got = None if t is None else tuple(t.shape)
        if got != want and not (got is None and name.endswith("_bias")):
            reasons.append(f"it needs {name} of shape {want} (the spec's), got {got}")
    try:  # the kernels read the keys by pointer: a wrong device or shape must not launch
        check_dropout_keys(dropout_keys, x)
    except ValueError as err:
        reasons.append(f"it needs valid keys ({err})")
    if any(t is not None and (t.dtype != x.dtype or t.device != x.device) for t in params):
        reasons.append(f"it needs every parameter in x's dtype and device ({x.dtype}, "
                       f"{x.device})")
    if not slope_supported(spec.activation, spec.negative_slope):
        reasons.append(f"it needs negative_slope >= 0 (the conv backward reads the slope off "
                       f"the output's sign), got {spec.negative_slope}")
    if spec.pool_size is not None and spec.pool_size > MAX_POOL_SIZE:
        reasons.append(f"it needs pool_size <= {MAX_POOL_SIZE} (an int8 argmax), "
                       f"got {spec.pool_size}")
    numel = x.shape[0] * spec.out_channels * x.shape[-1] if x.dim() == 3 else 0
    if numel > MAX_NUMEL:
        reasons.append(f"a conv output has {numel} elements, more than its int32 offsets "
                       f"reach ({MAX_NUMEL}; split the batch)")
    return reasons


#: CUDA tensors (CPU ones under TRITON_INTERPRET=1, for tests), fp32/bf16/fp16; eager
#: autograd only (not traceable: exporters and torch.compile get the eager reference).
BACKEND = Backend(
    "encoder_block", "triton", encoder_block_triton,
    Capabilities(dtypes=KERNEL_DTYPES, triton=True, traceable=False),
    _limits,
)
