"""One encoder block on the Triton backend: three fused kernels and the tiny SE MLP.

``pool(SE(F(x)) + W_s x)`` as :func:`ecgfast.ops.encoder.encoder_block` computes it, in
launch order:

1. :func:`ecgfast.kernels.conv1d.conv1d_act_dropout`: conv1 + bias + act + dropout -> h.
2. the same for conv2 -> f, with the per-(sample, channel) sums of f for the SE squeeze
   written by the conv epilogue (so f is not read again for the mean).
3. the excitation MLP on the (B, C) means, in PyTorch (the reference
   :func:`ecgfast.ops.encoder.se_excitation` applied to the means as a length-1 signal).
4. :func:`ecgfast.kernels.se_residual_pool.se_residual_pool`: SE scale, 1x1 shortcut or
   identity, max pool (or global max), writing only the pooled output and an int8 argmax.

Dropout seeds come from torch's default CPU generator (one draw per conv per call), so
``torch.manual_seed`` reproduces the masks; backward regenerates them from the seeds.
The parameters are the module's own (``block.conv1`` ...), so ``state_dict`` and checkpoints
are the same as for the eager backend.
"""

from __future__ import annotations

import torch
from ecgfast.kernels.conv1d import conv1d_act_dropout
from ecgfast.kernels.se_residual_pool import se_residual_pool

from ecgfast.dispatch import Backend, Capabilities
from ecgfast.ops.encoder import se_excitation


def _seed(p: float) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,)).item()) if p > 0 else 0


def encoder_block_triton(block, x: torch.Tensor) -> torch.Tensor:
    """Run :class:`ecgfast.layers.EncoderBlock` ``block`` on x (B, C_in, L) with the kernels."""
    p = block.dropout if block.training else 0.0
    act, slope = block.activation, block.negative_slope
    h, _ = conv1d_act_dropout(x, block.conv1.weight, block.conv1.bias, act=act,
                              negative_slope=slope, p=p, seed=_seed(p))
    f, sums = conv1d_act_dropout(h, block.conv2.weight, block.conv2.bias, act=act,
                                 negative_slope=slope, p=p, seed=_seed(p),
                                 write_sums=block.se is not None)
    a = None
    if block.se is not None:
        mean = (sums / f.shape[-1]).to(f.dtype)
        a = se_excitation(mean.unsqueeze(-1), *block.se.parameters_tuple())
    sw, sb = ((block.shortcut.weight, block.shortcut.bias) if block.shortcut is not None
              else (None, None))
    return se_residual_pool(f, a, x if block.residual else None, sw, sb,
                            pool_size=block.pool_size, pool_stride=block.pool_stride)


def _limits(x, block) -> list[str]:
    if block.activation == "leaky_relu" and block.negative_slope < 0:
        return [f"it needs negative_slope >= 0, got {block.negative_slope}"]
    return []


BACKEND = Backend(
    "encoder_block", "triton", lambda x, block: encoder_block_triton(block, x),
    Capabilities(dtypes=(torch.float32, torch.bfloat16, torch.float16), triton=True,
                 traceable=False),
    _limits,
)
