"""Pure-PyTorch references of every fused op.

These functions are the truth that the fused backends (Triton kernels, the streaming
NT-Xent) are tested against, and the eager backend that models and losses run when no
faster backend is chosen. Nothing here imports Triton.
"""

from ecgfast.ops.encoder import (
    activation,
    conv_act_dropout,
    encoder_block,
    se_excitation,
    se_residual_pool,
)
from ecgfast.ops.ntxent import nt_xent_reference, nt_xent_rows_reference

__all__ = [
    "activation",
    "conv_act_dropout",
    "encoder_block",
    "nt_xent_reference",
    "nt_xent_rows_reference",
    "se_excitation",
    "se_residual_pool",
]
