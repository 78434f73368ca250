"""Pure-PyTorch references of every fused op, and the plain-PyTorch backends beside them.

The references are the truth that the fused backends (the Triton kernels, the streaming
NT-Xent of :mod:`ecgfast.ops.nt_xent_streaming`) are tested against, and the eager backend
that models and losses run when no faster backend is chosen. Each op's files carry its
name (``nt_xent*.py``, ``encoder_block.py``); :mod:`ecgfast.ops.backend` holds what every
backend, these and the Triton kernels, declares itself with. Nothing here imports Triton. The encoder
block op, :func:`ecgfast.ops.encoder_block.encoder_block`, takes ``(x, BlockParams,
BlockSpec, dropout_keys)``, the same inputs as its Triton backend (not re-exported here:
the name is its module's).
"""

from ecgfast.ops.encoder_block import (
    BlockParams,
    BlockSpec,
    activation,
    conv_act_dropout,
    random_block_params,
    se_excitation,
    se_excite,
    se_residual_pool,
)
from ecgfast.ops.nt_xent import nt_xent_reference, nt_xent_rows_reference

__all__ = [
    "BlockParams",
    "BlockSpec",
    "activation",
    "conv_act_dropout",
    "nt_xent_reference",
    "nt_xent_rows_reference",
    "random_block_params",
    "se_excitation",
    "se_excite",
    "se_residual_pool",
]
