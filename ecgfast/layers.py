"""Building blocks of the encoder: squeeze-excitation and the residual conv block.

The modules own the parameters (so ``state_dict`` keys are the same for every backend);
the maths runs through :mod:`ecgfast.dispatch`, which picks the eager reference in
:mod:`ecgfast.ops` or a fused kernel.
"""

from __future__ import annotations

import torch
from torch import nn

from ecgfast import dispatch
from ecgfast.ops.encoder import ACTIVATIONS, se_excitation


class SqueezeExcitation(nn.Module):
    """Channel attention: ``a = sigmoid(W2 relu(W1 mean_t(f)))``, ``out = a * f``.

    Args:
        channels: C.
        reduction: r; the hidden width is ``max(1, C // r)``.

    Forward: f (B, C, L) -> (B, C, L). :meth:`weights` gives a (B, C).
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        if reduction < 1:
            raise ValueError(f"se_reduction must be >= 1, got {reduction}")
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def parameters_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)

    def weights(self, f: torch.Tensor) -> torch.Tensor:
        return se_excitation(f, *self.parameters_tuple())

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f * self.weights(f).unsqueeze(-1)


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

    Forward: x (B, C_in, L) -> (B, C, (L - pool_size) // pool_stride + 1), or (B, C)
    with the global max.
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
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding="same")
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding="same")
        self.se = SqueezeExcitation(out_channels, se_reduction) if attention else None
        self.shortcut = (
            nn.Conv1d(in_channels, out_channels, 1) if residual and in_channels != out_channels
            else None
        )
        self.residual = residual
        self.activation = activation
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.pool_size = pool_size
        self.pool_stride = pool_stride
        self.backend = dispatch.check_backend("encoder_block", backend)

    def out_length(self, length: int) -> int:
        if self.pool_size is None:
            return 1
        return (length - self.pool_size) // self.pool_stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dispatch.encoder_block(self, x, self.backend)

    def extra_repr(self) -> str:
        pool = "global max" if self.pool_size is None else f"maxpool({self.pool_size}, {self.pool_stride})"
        return (
            f"residual={self.residual}, activation={self.activation}, dropout={self.dropout}, "
            f"pool={pool}, backend={self.backend!r}"
        )
