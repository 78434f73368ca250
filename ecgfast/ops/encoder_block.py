"""Reference maths of one encoder block, split where the fused kernels split it.

A block is ``pool(SE(F(x)) + W_s x)`` with ``F = [conv -> act -> dropout] x 2`` (see
docs/design.md). Every backend of the op takes the same inputs,
``encoder_block(x, params, spec, dropout_keys)``: x (B, C_in, L), ``params`` a
:class:`BlockParams` of tensors, ``spec`` a frozen :class:`BlockSpec` and
``dropout_keys`` None (no dropout: evaluation, or ``spec.dropout == 0``) or an int32
(2, B) tensor on x's device, the per-sample keys of the two dropouts (conv1, conv2).
The mask is a pure function of the keys (:func:`ecgfast.keyed.dropout_keep`: element
``(c, t)`` of sample b is kept iff its 24 hashed bits of ``(keys[b], c * L + t)`` clear
the threshold), so every backend drops the same elements and a sample's mask does not
depend on the rest of the batch. The pieces:

- :func:`conv_act_dropout`: Conv1d (stride 1, 'same' padding, bias) -> activation ->
  keyed dropout (:func:`ecgfast.keyed.keyed_dropout`). The Triton conv kernel fuses all of it into the conv epilogue.
- :func:`se_excitation`: the squeeze (mean over time) and the excitation MLP
  (:func:`se_excite`), ``a = sigmoid(W2 relu(W1 s))``, shape (B, C).
- :func:`se_residual_pool`: ``pool(a * F + W_s x)``, with ``W_s`` a 1x1 conv (or the
  identity, or no shortcut at all) and either MaxPool1d(size, stride) or a global max.
- :func:`encoder_block`: the whole block from the pieces (the "eager" backend).

Shapes: x is (B, C_in, L); every tensor keeps time as the last axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ecgfast.keyed import keyed_dropout
from ecgfast.ops.backend import Backend, Capabilities, tracing

ACTIVATIONS = ("relu", "leaky_relu")


def check_block_options(*, activation: str, dropout: float, pool_size: int | None,
                        pool_stride: int, se_reduction: int | None = None) -> None:
    """The one validator of an encoder block's options (ValueError naming the option).

    Used by :class:`ecgfast.models.EncoderConfig` and :class:`BlockSpec`. ``pool_size``
    None is the global max; ``se_reduction`` None skips that check (no attention).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if se_reduction is not None and se_reduction < 1:
        raise ValueError(f"se_reduction must be >= 1, got {se_reduction}")
    if (pool_size is not None and pool_size < 1) or pool_stride < 1:
        raise ValueError("pool_size and pool_stride must be >= 1")


@dataclass(frozen=True)
class BlockSpec:
    """What one encoder block computes, everything but its tensors (validated, frozen).

    Attributes:
        in_channels, out_channels, kernel_size: C_in, C and K of both convs.
        activation: "relu" or "leaky_relu" (with ``negative_slope``).
        dropout: p after each activation (applied only when the op runs with training).
        pool_size, pool_stride: MaxPool1d(pool_size, pool_stride), or pool_size None for
            a global max over time (output (B, C)).
        residual: add the shortcut ``W_s x``: a 1x1 projection when C_in != C
            (:attr:`projection`), the identity otherwise.
        se_hidden: hidden width of the squeeze-excitation MLP, or None for no attention
            (:meth:`build` derives it from a reduction ratio: ``max(1, C // r)``).
    """

    in_channels: int
    out_channels: int
    kernel_size: int
    activation: str = "relu"
    negative_slope: float = 0.2
    dropout: float = 0.0
    pool_size: int | None = 8
    pool_stride: int = 2
    residual: bool = False
    se_hidden: int | None = None

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "kernel_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.se_hidden is not None and self.se_hidden < 1:
            raise ValueError(f"se_hidden must be >= 1 or None, got {self.se_hidden}")
        check_block_options(activation=self.activation, dropout=self.dropout,
                            pool_size=self.pool_size, pool_stride=self.pool_stride)

    @classmethod
    def build(cls, in_channels: int, out_channels: int, kernel_size: int, *,
              residual: bool = False, attention: bool = False, se_reduction: int = 8,
              dropout: float = 0.0, activation: str = "relu", negative_slope: float = 0.2,
              pool_size: int | None = 8, pool_stride: int = 2) -> BlockSpec:
        """The spec of :class:`ecgfast.layers.EncoderBlock`'s keyword arguments."""
        check_block_options(activation=activation, dropout=dropout, pool_size=pool_size,
                            pool_stride=pool_stride, se_reduction=se_reduction if attention
                            else None)
        return cls(in_channels, out_channels, kernel_size, activation=activation,
                   negative_slope=negative_slope, dropout=dropout, pool_size=pool_size,
                   pool_stride=pool_stride, residual=residual,
                   se_hidden=max(1, out_channels // se_reduction) if attention else None)

    @property
    def attention(self) -> bool:
        return self.se_hidden is not None

    @property
    def projection(self) -> bool:
        """The shortcut is a 1x1 projection (residual and C_in != C)."""
        return self.residual and self.in_channels != self.out_channels

    def out_length(self, length: int) -> int:
        """Output length for input length ``length`` (1 for the global max)."""
        if self.pool_size is None:
            return 1
        return (length - self.pool_size) // self.pool_stride + 1

    def param_shapes(self) -> dict[str, tuple[int, ...] | None]:
        """Shape of every :class:`BlockParams` field (None: the field is None)."""
        c_in, c, k, h = self.in_channels, self.out_channels, self.kernel_size, self.se_hidden
        se = self.attention
        return {
            "conv1_weight": (c, c_in, k), "conv1_bias": (c,),
            "conv2_weight": (c, c, k), "conv2_bias": (c,),
            "se_fc1_weight": (h, c) if se else None, "se_fc1_bias": (h,) if se else None,
            "se_fc2_weight": (c, h) if se else None, "se_fc2_bias": (c,) if se else None,
            "shortcut_weight": (c, c_in, 1) if self.projection else None,
            "shortcut_bias": (c,) if self.projection else None,
        }


class BlockParams(NamedTuple):
    """The tensors of one encoder block (shapes: :meth:`BlockSpec.param_shapes`).

    The SE fields are None without attention, the shortcut fields None unless the
    shortcut is a projection. :class:`ecgfast.layers.EncoderBlock` builds one per call
    from its parameters.
    """

    conv1_weight: torch.Tensor
    conv1_bias: torch.Tensor | None
    conv2_weight: torch.Tensor
    conv2_bias: torch.Tensor | None
    se_fc1_weight: torch.Tensor | None = None
    se_fc1_bias: torch.Tensor | None = None
    se_fc2_weight: torch.Tensor | None = None
    se_fc2_bias: torch.Tensor | None = None
    shortcut_weight: torch.Tensor | None = None
    shortcut_bias: torch.Tensor | None = None

    @property
    def se(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(w1, b1, w2, b2) of the excitation MLP, or None."""
        if self.se_fc1_weight is None:
            return None
        return (self.se_fc1_weight, self.se_fc1_bias, self.se_fc2_weight, self.se_fc2_bias)


def random_block_params(spec: BlockSpec, *, generator: torch.Generator | None = None,
                        device=None, dtype: torch.dtype = torch.float32) -> BlockParams:
    """Fresh :class:`BlockParams` for ``spec`` without building a module (for tests and
    benchmarks): uniform in +-1/sqrt(fan_in), the scale of PyTorch's default bias init,
    the weights' fan-in used for their biases too."""
    shapes = spec.param_shapes()
    out = {}
    for name, shape in shapes.items():
        if shape is None:
            out[name] = None
            continue
        weight_shape = shapes[name.replace("_bias", "_weight")]
        bound = 1.0 / math.prod(weight_shape[1:]) ** 0.5
        t = torch.rand(shape, generator=generator, dtype=torch.float32) * (2 * bound) - bound
        out[name] = t.to(device=device, dtype=dtype)
    return BlockParams(**out)


def activation(x: torch.Tensor, kind: str, negative_slope: float = 0.2) -> torch.Tensor:
    """Apply ``relu`` or ``leaky_relu`` (with ``negative_slope``)."""
    if kind == "relu":
        return F.relu(x)
    if kind == "leaky_relu":
        return F.leaky_relu(x, negative_slope)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


def grad_like(grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``grad`` laid out with ``param``'s strides (a copy only when they differ).

    DistributedDataParallel copies every gradient whose strides differ from its
    parameter's into the bucket (and warns), so backward functions return this layout.
    """
    if grad.stride() == param.stride():
        return grad
    return torch.empty_like(param, dtype=grad.dtype).copy_(grad)


def conv_grad_as_conv(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv1d_same` uses the CPU backward of :class:`_Conv1dWeightGradAsConv`
    (the weight gradient as a convolution, faster than aten's CPU Conv1d backward for the
    encoder's long, narrow convolutions): CPU tensors, a gradient needed, and not under
    :func:`~ecgfast.ops.backend.tracing` (exporters and compilers see a plain ``conv1d``)."""
    return (x.device.type == "cpu" and torch.is_grad_enabled()
            and (weight.requires_grad or x.requires_grad) and not tracing())


class _Conv1dWeightGradAsConv(torch.autograd.Function):
    """``F.conv1d(x, weight, bias)`` (stride 1, no padding) with a CPU backward built
    from forward convolutions.

    The weight gradient is itself a convolution, of the input with the output gradient
    over the batch axis: ``dW[o, i, k] = sum_{b, t} g[b, o, t] x[b, i, t + k]`` is
    ``conv1d(x^T, g^T)`` with batch and channels swapped. The input gradient is a plain
    convolution of the zero-padded output gradient with the time-flipped,
    channel-transposed kernel. Why: aten's CPU Conv1d backward is slow in the weight
    gradient for the encoder's long, narrow convolutions, and forward convolutions are
    its fast path (the measured effect: benchmarks/README.md, "Encoder"). Same maths,
    same results up to float rounding (tested against aten's backward). The weight
    gradient is returned in the weight's layout (:func:`grad_like`);
    :func:`conv_grad_as_conv` decides when this backward is used.
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
            grad_w = grad_like(grad_w, weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0, 2))
        return grad_x, grad_w, grad_b


def conv1d_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Conv1d with stride 1 and 'same' padding; the extra zero of an even K goes right.

    x: (B, C_in, L); weight: (C_out, C_in, K) -> (B, C_out, L). Where
    :func:`conv_grad_as_conv` says so (CPU, gradients needed, not
    tracing), the backward of :class:`_Conv1dWeightGradAsConv` is used.
    """
    k = weight.shape[-1]
    x = F.pad(x, ((k - 1) // 2, k - 1 - (k - 1) // 2))
    if conv_grad_as_conv(x, weight):
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
    keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """Conv1d with stride 1 and 'same' padding, then the activation, then dropout.

    x: (B, C_in, L); weight: (C_out, C_in, K); bias: (C_out,). Returns (B, C_out, L).
    For even K the extra zero goes on the right, as in PyTorch and TensorFlow 'same'.
    Dropout (probability p) applies when ``keys`` (B,) int32, the samples' keys, is given.
    """
    y = activation(conv1d_same(x, weight, bias), act, negative_slope)
    return keyed_dropout(y, p, keys)


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
    return se_excite(f.mean(dim=-1), w1, b1, w2, b2)


def se_excite(s: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
              b2: torch.Tensor) -> torch.Tensor:
    """The excitation half of :func:`se_excitation`: ``sigmoid(W2 relu(W1 s))`` on the
    squeezed (B, C) means ``s`` (what a backend that computes the means itself passes)."""
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


def check_dropout_keys(keys: torch.Tensor | None, x: torch.Tensor) -> None:
    """``dropout_keys`` of the block op: None or int32 (2, B) on x's device (ValueError)."""
    if keys is None:
        return
    if (not isinstance(keys, torch.Tensor) or keys.dtype != torch.int32
            or keys.shape != (2, x.shape[0]) or keys.device != x.device):
        raise ValueError(
            f"dropout_keys must be None or an int32 (2, {x.shape[0]}) tensor on {x.device} "
            f"(one key per sample for each of the block's two dropouts), got "
            f"{getattr(keys, 'dtype', type(keys).__name__)} {tuple(getattr(keys, 'shape', ()))}"
            f"{' on ' + str(keys.device) if isinstance(keys, torch.Tensor) else ''}")


def encoder_block(x: torch.Tensor, params: BlockParams, spec: BlockSpec,
                  dropout_keys: torch.Tensor | None) -> torch.Tensor:
    """One whole block, ``pool(SE(F(x)) + W_s x)``: the reference and "eager" backend.

    x: (B, C_in, L) -> (B, C, spec.out_length(L)), or (B, C) with the global max.
    Dropout (``spec.dropout``) applies only with ``dropout_keys`` (module docstring).
    """
    keys = (None, None) if dropout_keys is None else dropout_keys
    kw = {"act": spec.activation, "negative_slope": spec.negative_slope, "p": spec.dropout}
    h = conv_act_dropout(x, params.conv1_weight, params.conv1_bias, keys=keys[0], **kw)
    f = conv_act_dropout(h, params.conv2_weight, params.conv2_bias, keys=keys[1], **kw)
    se = params.se
    a = se_excitation(f, *se) if se is not None else None
    return se_residual_pool(f, a, x if spec.residual else None, params.shortcut_weight,
                            params.shortcut_bias, pool_size=spec.pool_size,
                            pool_stride=spec.pool_stride)


#: Plain PyTorch: any device (the meta device included), any floating dtype, traceable.
BACKEND = Backend("encoder_block", "eager", encoder_block, Capabilities())
