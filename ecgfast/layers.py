"""Building blocks of the encoder: the residual conv block and its SE parameters.

The modules own the parameters (so ``state_dict`` keys are the same for every backend)
and hold the block's :class:`~ecgfast.ops.encoder_block.BlockSpec`; the maths runs through
:func:`ecgfast.dispatch.encoder_block`, which picks the eager reference in
:mod:`ecgfast.ops` or a fused kernel and passes it plain tensors
(:class:`~ecgfast.ops.encoder_block.BlockParams`).
"""

from __future__ import annotations

import torch
from torch import nn

from ecgfast import dispatch
from ecgfast.keyed import KeyedRandom
from ecgfast.ops.encoder_block import BlockParams, BlockSpec, check_dropout_keys
from ecgfast.precision import op_precision


class SqueezeExcitation(nn.Module):
    """The parameters of the squeeze-excitation MLP, ``a = sigmoid(W2 relu(W1 mean_t(f)))``.

    A parameter holder (``fc1``: C -> hidden, ``fc2``: hidden -> C, both with bias); the
    maths is :func:`ecgfast.ops.encoder_block.se_excitation`, run by the block's backend.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)


class EncoderBlock(nn.Module):
    """``pool(SE(F(x)) + W_s x)`` with ``F = [Conv1d -> act -> Dropout] x 2``.

    Args:
        in_channels, out_channels: C_in, C.
        kernel_size: K of both convs (stride 1, 'same' padding, bias).
        residual: add the shortcut ``W_s x`` (a 1x1 conv with bias when C_in != C,
            the identity otherwise).
        attention: squeeze-excitation with ``se_reduction`` before the add.
        dropout: p after each activation.
        activation: "relu" or "leaky_relu" (``negative_slope``).
        pool_size: MaxPool1d size (stride ``pool_stride``), or None for a global max
            over time.
        backend: "auto" | "eager" | "triton" (see :mod:`ecgfast.dispatch`).

    The options are validated by :meth:`BlockSpec.build` (the check
    :class:`~ecgfast.models.EncoderConfig` uses) and kept as :attr:`spec`. ``conv1``,
    ``conv2``, ``shortcut`` (``nn.Conv1d``) and ``se`` (:class:`SqueezeExcitation`) hold
    the parameters under their usual ``state_dict`` keys; the block never calls their
    forward (``conv1(x)`` still computes the plain 'same' convolution).

    Forward: ``block(x, dropout_keys=None)``, x (B, C_in, L) -> (B, C, (L - pool_size) //
    pool_stride + 1), or (B, C) with the global max. Dropout applies in training mode:
    ``dropout_keys`` (int32 (2, B), the samples' keys of the two dropouts, e.g.
    :meth:`ecgfast.keyed.KeyedRandom.dropout_keys`) fixes the masks; None draws a seed
    from torch's default generator (``torch.manual_seed`` reproduces the masks). Under
    ``torch.autocast`` the block runs in the autocast dtype (input and parameters cast at
    the dispatch boundary by :func:`ecgfast.precision.op_precision`; gradients flow back to the
    fp32 parameters).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        residual: bool = False,
        attention: bool = False,
        se_reduction: int = 8,
        dropout: float = 0.0,
        activation: str = "relu",
        negative_slope: float = 0.2,
        pool_size: int | None = 8,
        pool_stride: int = 2,
        backend: str = "auto",
    ):
        super().__init__()
        self.spec = spec = BlockSpec.build(
            in_channels, out_channels, kernel_size, residual=residual, attention=attention,
            se_reduction=se_reduction, dropout=dropout, activation=activation,
            negative_slope=negative_slope, pool_size=pool_size, pool_stride=pool_stride)
        self.backend = dispatch.check_backend("encoder_block", backend)
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding="same")
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding="same")
        self.se = SqueezeExcitation(out_channels, spec.se_hidden) if spec.attention else None
        self.shortcut = nn.Conv1d(in_channels, out_channels, 1) if spec.projection else None

    # the spec's options under the names the block's users read
    residual = property(lambda self: self.spec.residual)
    activation = property(lambda self: self.spec.activation)
    negative_slope = property(lambda self: self.spec.negative_slope)
    dropout = property(lambda self: self.spec.dropout)
    pool_size = property(lambda self: self.spec.pool_size)
    pool_stride = property(lambda self: self.spec.pool_stride)

    def out_length(self, length: int) -> int:
        return self.spec.out_length(length)

    def block_params(self) -> BlockParams:
        """This block's parameters as the op's :class:`BlockParams` (no copies)."""
        se, sc = self.se, self.shortcut
        return BlockParams(
            self.conv1.weight, self.conv1.bias, self.conv2.weight, self.conv2.bias,
            *((se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias) if se is not None
              else (None,) * 4),
            *((sc.weight, sc.bias) if sc is not None else (None, None)))

    def forward(self, x: torch.Tensor, dropout_keys: torch.Tensor | None = None) -> torch.Tensor:
        keys = None
        if self.training and self.spec.dropout > 0:
            if dropout_keys is None:
                dropout_keys = KeyedRandom.from_default_generator(x.shape[0]).dropout_keys(
                    2, x.device)
            check_dropout_keys(dropout_keys, x)
            keys = dropout_keys
        with op_precision("encoder_block", x, self.block_params()) as (inp, params):
            return dispatch.encoder_block(inp, params, self.spec, keys, self.backend)

    def extra_repr(self) -> str:
        pool = "global max" if self.pool_size is None else f"maxpool({self.pool_size}, {self.pool_stride})"
        return (
            f"residual={self.residual}, activation={self.activation}, dropout={self.dropout}, "
            f"pool={pool}, backend={self.backend!r}"
        )
