"""Reference maths of one encoder block, split where the fused kernels split it.

A block is ``pool(SE(F(x)) + W_s x)`` with ``F = [conv -> act -> dropout] x 2`` (see
DESIGN.md). The pieces:

- :func:`conv_act_dropout`: Conv1d (stride 1, 'same' padding, bias) -> activation ->
  dropout. The Triton conv kernel fuses all of it into the conv epilogue.
- :func:`se_excitation`: the squeeze (mean over time) and the excitation MLP,
  ``a = sigmoid(W2 relu(W1 s))``, shape (B, C).
- :func:`se_residual_pool`: ``pool(a * F + W_s x)``, with ``W_s`` a 1x1 conv (or the
  identity, or no shortcut at all) and either MaxPool1d(size, stride) or a global max.
- :func:`encoder_block`: the whole block from the pieces.

Shapes: x is (B, C_in, L); every tensor keeps time as the last axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = ("relu", "leaky_relu")


def activation(x: torch.Tensor, kind: str, negative_slope: float = 0.2) -> torch.Tensor:
    """Apply ``relu`` or ``leaky_relu`` (with ``negative_slope``)."""
    if kind == "relu":
        return F.relu(x)
    if kind == "leaky_relu":
        return F.leaky_relu(x, negative_slope)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


def conv_act_dropout(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    act: str,
    negative_slope: float = 0.2,
    p: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Conv1d with stride 1 and 'same' padding, then the activation, then dropout.

    x: (B, C_in, L); weight: (C_out, C_in, K); bias: (C_out,). Returns (B, C_out, L).
    For even K the extra zero goes on the right, as in PyTorch and TensorFlow 'same'.
    """
    k = weight.shape[-1]
    y = F.conv1d(F.pad(x, ((k - 1) // 2, k - 1 - (k - 1) // 2)), weight, bias)
    y = activation(y, act, negative_slope)
    return F.dropout(y, p=p, training=training) if p > 0 else y


def se_excitation(
    f: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
) -> torch.Tensor:
    """Squeeze-excitation weights ``a = sigmoid(W2 relu(W1 mean_t(f)))``.

    f: (B, C, L); w1: (C // r, C); w2: (C, C // r). Returns (B, C) in (0, 1).
    """
    s = f.mean(dim=-1)
    return torch.sigmoid(F.linear(F.relu(F.linear(s, w1, b1)), w2, b2))


def se_residual_pool(
    f: torch.Tensor,
    a: torch.Tensor | None,
    x: torch.Tensor | None,
    shortcut_weight: torch.Tensor | None,
    shortcut_bias: torch.Tensor | None,
    *,
    pool_size: int | None,
    pool_stride: int,
) -> torch.Tensor:
    """``pool(a * f + W_s x)``.

    f: (B, C, L) the block's conv output; a: (B, C) SE weights or None (no attention);
    x: (B, C_in, L) the block input or None (no residual); shortcut_weight:
    (C, C_in, 1) for a 1x1 projection or None for the identity (then C_in == C).
    pool_size None means a global max over time, giving (B, C); otherwise
    MaxPool1d(pool_size, pool_stride) giving (B, C, (L - size) // stride + 1).
    """
    y = f if a is None else f * a.unsqueeze(-1)
    if x is not None:
        y = y + (x if shortcut_weight is None else F.conv1d(x, shortcut_weight, shortcut_bias))
    if pool_size is None:
        return y.amax(dim=-1)
    return F.max_pool1d(y, pool_size, pool_stride)


def encoder_block(
    x: torch.Tensor,
    conv1_weight: torch.Tensor,
    conv1_bias: torch.Tensor,
    conv2_weight: torch.Tensor,
    conv2_bias: torch.Tensor,
    se_params: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None,
    shortcut: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    residual: bool,
    act: str,
    negative_slope: float,
    p: float,
    training: bool,
    pool_size: int | None,
    pool_stride: int,
) -> torch.Tensor:
    """One whole block: ``pool(SE(F(x)) + W_s x)``.

    se_params: (w1, b1, w2, b2) or None for no attention. shortcut: (weight, bias) of the
    1x1 projection, or None for the identity; ignored when ``residual`` is False.
    """
    h = conv_act_dropout(
        x, conv1_weight, conv1_bias, act=act, negative_slope=negative_slope, p=p, training=training
    )
    f = conv_act_dropout(
        h, conv2_weight, conv2_bias, act=act, negative_slope=negative_slope, p=p, training=training
    )
    a = se_excitation(f, *se_params) if se_params is not None else None
    sw, sb = shortcut if shortcut is not None else (None, None)
    return se_residual_pool(
        f,
        a,
        x if residual else None,
        sw,
        sb,
        pool_size=pool_size,
        pool_stride=pool_stride,
    )
