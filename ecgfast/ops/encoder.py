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

from ecgfast.dispatch import Backend

ACTIVATIONS = ("relu", "leaky_relu")


def activation(x: torch.Tensor, kind: str, negative_slope: float = 0.2) -> torch.Tensor:
    """Apply ``relu`` or ``leaky_relu`` (with ``negative_slope``)."""
    if kind == "relu":
        return F.relu(x)
    if kind == "leaky_relu":
        return F.leaky_relu(x, negative_slope)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


class _Conv1dWeightGradAsConv(torch.autograd.Function):
    """``F.conv1d(x, weight, bias)`` (stride 1, no padding) with a faster CPU backward.

    PyTorch's CPU backward of a long, narrow Conv1d spends most of its time in the
    weight gradient (several times the forward). The weight gradient is itself a
    convolution, of the input with the output gradient over the batch axis:
    ``dW[o, i, k] = sum_{b, t} g[b, o, t] x[b, i, t + k]`` is
    ``conv1d(x^T, g^T)`` with batch and channels swapped, which runs at forward speed.
    The input gradient is a plain convolution of the zero-padded output gradient with
    the time-flipped, channel-transposed kernel, also faster on the CPU than aten's
    transposed convolution for these kernel sizes. Same maths, same results up to float
    rounding (tested against aten's backward).
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv1d(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            k = weight.shape[-1]
            grad_x = F.conv1d(F.pad(grad, (k - 1, k - 1)), weight.flip(-1).transpose(0, 1))
        if ctx.needs_input_grad[1]:
            grad_w = F.conv1d(x.transpose(0, 1), grad.transpose(0, 1)).transpose(0, 1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2))
        return grad_x, grad_w, grad_b


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def conv1d_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Conv1d with stride 1 and 'same' padding; the extra zero of an even K goes right.

    x: (B, C_in, L); weight: (C_out, C_in, K) -> (B, C_out, L). On the CPU, when a
    gradient is needed, the backward of :class:`_Conv1dWeightGradAsConv` is used.
    """
    k = weight.shape[-1]
    x = F.pad(x, ((k - 1) // 2, k - 1 - (k - 1) // 2))
    if (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and (weight.requires_grad or x.requires_grad)
        and not _tracing()
    ):
        return _Conv1dWeightGradAsConv.apply(x, weight, bias)
    return F.conv1d(x, weight, bias)


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
    y = activation(conv1d_same(x, weight, bias), act, negative_slope)
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


def _run_block(x: torch.Tensor, block) -> torch.Tensor:
    return encoder_block(
        x, block.conv1.weight, block.conv1.bias, block.conv2.weight, block.conv2.bias,
        block.se.parameters_tuple() if block.se is not None else None,
        (block.shortcut.weight, block.shortcut.bias) if block.shortcut is not None else None,
        residual=block.residual, act=block.activation, negative_slope=block.negative_slope,
        p=block.dropout, training=block.training, pool_size=block.pool_size,
        pool_stride=block.pool_stride,
    )


BACKEND = Backend("encoder_block", "eager", _run_block)
