"""The reference block maths (ecgfast.ops.encoder_block): the CPU conv backward against aten's,
the pieces, the op's spec and params, gradient layout and the meta device."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ecgfast import dispatch
from ecgfast.keyed import KeyedRandom
from ecgfast.layers import EncoderBlock
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.ops.encoder_block import (
    BlockParams,
    BlockSpec,
    conv1d_same,
    conv_grad_as_conv,
    encoder_block,
    random_block_params,
    se_residual_pool,
)


@pytest.mark.parametrize("b,cin,cout,k,length", [
    (1, 1, 32, 32, 2560), (3, 1, 5, 7, 40), (2, 32, 64, 16, 77), (5, 3, 2, 1, 9),
    (2, 4, 3, 8, 8), (1, 6, 6, 5, 3),
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv1d_same_matches_aten_forward_and_backward(b, cin, cout, k, length, dtype):
    g = torch.Generator().manual_seed(b * 1000 + k)
    x = torch.randn(b, cin, length, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(cout, cin, k, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(cout, generator=g, dtype=dtype, requires_grad=True)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, bias))

    y = conv1d_same(x, w, bias)
    y_ref = F.conv1d(x2, w2, b2, padding="same") if k > 1 else F.conv1d(x2, w2, b2)
    assert y.shape == (b, cout, length)
    grad = torch.randn(y.shape, generator=g, dtype=dtype)
    y.backward(grad)
    y_ref.backward(grad)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(y, y_ref, **tol)
    for mine, ref in ((x.grad, x2.grad), (w.grad, w2.grad), (bias.grad, b2.grad)):
        torch.testing.assert_close(mine, ref, **tol)


def test_conv1d_same_without_input_grad_and_without_bias():
    x = torch.randn(2, 3, 50, dtype=torch.float64)
    w = torch.randn(4, 3, 6, dtype=torch.float64, requires_grad=True)
    conv1d_same(x, w, None).square().sum().backward()
    w2 = w.detach().clone().requires_grad_()
    F.conv1d(x, w2, None, padding="same").square().sum().backward()
    torch.testing.assert_close(w.grad, w2.grad)
    assert x.grad is None


def test_se_residual_pool_pieces():
    f = torch.randn(2, 4, 30)
    a = torch.rand(2, 4)
    x = torch.randn(2, 3, 30)
    w = torch.randn(4, 3, 1)
    bias = torch.randn(4)
    expected = F.max_pool1d(f * a[..., None] + F.conv1d(x, w, bias), 8, 2)
    torch.testing.assert_close(se_residual_pool(f, a, x, w, bias, pool_size=8, pool_stride=2), expected)
    torch.testing.assert_close(
        se_residual_pool(f, None, None, None, None, pool_size=None, pool_stride=2), f.amax(-1)
    )
    same = torch.randn(2, 4, 30)
    torch.testing.assert_close(
        se_residual_pool(f, a, same, None, None, pool_size=None, pool_stride=2),
        (f * a[..., None] + same).amax(-1),
    )


# ---------------------------------------------------------------- spec, params, validation

def test_block_spec_is_validated_by_the_shared_validator():
    with pytest.raises(ValueError, match="activation must be one of"):
        BlockSpec(1, 4, 3, activation="gelu")
    with pytest.raises(ValueError, match="dropout must be in"):
        BlockSpec(1, 4, 3, dropout=1.0)
    with pytest.raises(ValueError, match="pool_size and pool_stride must be >= 1"):
        BlockSpec(1, 4, 3, pool_stride=0)
    with pytest.raises(ValueError, match="kernel_size must be an int >= 1"):
        BlockSpec(1, 4, 0)
    with pytest.raises(ValueError, match="se_hidden"):
        BlockSpec(1, 4, 3, se_hidden=0)
    # EncoderBlock's keywords go through the same checks (no copy of its own)
    with pytest.raises(ValueError, match="se_reduction must be >= 1"):
        EncoderBlock(4, 8, 3, attention=True, se_reduction=0)
    with pytest.raises(ValueError, match="activation must be one of"):
        EncoderBlock(4, 8, 3, activation="tanh")
    EncoderBlock(4, 8, 3, attention=False, se_reduction=0)  # unused without attention
    with pytest.raises(dataclasses.FrozenInstanceError):
        BlockSpec(1, 4, 3).dropout = 0.5


def test_config_builds_the_blocks_specs():
    config = EncoderConfig(residual="first", attention=True, se_reduction=4, dropout=0.2,
                           activation="leaky_relu", negative_slope=0.1)
    specs = config.block_specs()
    assert specs == tuple(block.spec for block in ECGEncoder(config).blocks)
    assert [s.pool_size for s in specs] == [8, 8, None]
    assert [s.residual for s in specs] == [True, False, False]
    assert [s.se_hidden for s in specs] == [8, 16, 32]
    assert specs[0].projection and not specs[1].projection


def test_param_shapes_match_the_module():
    for block in ECGEncoder(EncoderConfig(residual=(True, False, True))).blocks:
        params = block.block_params()
        shapes = block.spec.param_shapes()
        assert list(shapes) == list(BlockParams._fields)
        for name, t in zip(BlockParams._fields, params):
            assert (None if t is None else tuple(t.shape)) == shapes[name], name
        made = random_block_params(block.spec)
        assert [None if t is None else t.shape for t in made] == [
            None if t is None else t.shape for t in params]


#: ``state_dict`` of the default encoder (keys, order, shapes), pinned: the same for every
#: backend, so a checkpoint trained with the kernels loads in the eager model that ONNX
#: export traces.
DEFAULT_KEYS = [
    (f"blocks.{i}.{name}", shape)
    for i, (cin, c, k, h) in enumerate([(1, 32, 32, 4), (32, 64, 16, 8), (64, 128, 8, 16)])
    for name, shape in [
        ("conv1.weight", (c, cin, k)), ("conv1.bias", (c,)),
        ("conv2.weight", (c, c, k)), ("conv2.bias", (c,)),
        ("se.fc1.weight", (h, c)), ("se.fc1.bias", (h,)),
        ("se.fc2.weight", (c, h)), ("se.fc2.bias", (c,)),
        ("shortcut.weight", (c, cin, 1)), ("shortcut.bias", (c,)),
    ]
]


def test_state_dict_keys_are_unchanged():
    state = ECGEncoder(EncoderConfig()).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == DEFAULT_KEYS
    plain = ECGEncoder(EncoderConfig(residual="none", attention=False)).state_dict()
    assert list(plain) == [k for k, _ in DEFAULT_KEYS if ".se." not in k and "shortcut" not in k]


def test_reference_op_from_a_spec_matches_the_module():
    torch.manual_seed(0)
    block = EncoderBlock(3, 6, 5, residual=True, attention=True, se_reduction=2, dropout=0.3)
    x = torch.randn(2, 3, 40)
    block.eval()
    torch.testing.assert_close(block(x), encoder_block(x, block.block_params(), block.spec,
                                                       None))
    block.train()
    keys = KeyedRandom.for_batch(5, 2).dropout_keys(2, "cpu")
    y = block(x, keys)
    torch.testing.assert_close(y, encoder_block(x, block.block_params(), block.spec, keys))
    assert not torch.allclose(y, block.eval()(x))
    block.train()
    torch.manual_seed(1)  # no keys: drawn from torch's default generator, reproducibly
    y = block(x)
    torch.manual_seed(1)
    torch.testing.assert_close(y, block(x))
    assert not torch.allclose(y, block(x))
    for bad in (keys[:1], keys.long(), keys[:, :1]):
        with pytest.raises(ValueError, match="dropout_keys must be"):
            block(x, bad)


def test_a_samples_output_does_not_depend_on_the_rest_of_the_batch():
    """The keyed dropout masks: sample b's output is the same in any batch or slice."""
    torch.manual_seed(0)
    block = EncoderBlock(2, 6, 5, residual=True, attention=True, se_reduction=2, dropout=0.4)
    x = torch.randn(5, 2, 40)
    random = KeyedRandom.for_batch(9, 5)
    y = block(x, random.select(slice(None)).dropout_keys(2, "cpu"))
    part = block(x[1:4], random.select(slice(1, 4)).dropout_keys(2, "cpu"))
    torch.testing.assert_close(part, y[1:4])


# ---------------------------------------------------------------- gradient layout, meta

def test_cpu_conv_gradients_have_the_parameters_strides():
    """The CPU backward (weight gradient computed as a convolution) returns every gradient
    in its parameter's layout: DistributedDataParallel copies (and warns) otherwise."""
    torch.manual_seed(0)
    enc = ECGEncoder(EncoderConfig(filters=(6, 8, 10), kernel_sizes=(5, 4, 3)))
    x = torch.randn(3, 1, 120)
    assert conv_grad_as_conv(x, enc.blocks[0].conv1.weight)
    enc(x).square().sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad.stride() == p.stride(), name
    w = torch.randn(4, 3, 5, requires_grad=True)
    conv1d_same(torch.randn(2, 3, 30), w, None).sum().backward()
    assert w.grad.stride() == w.stride()


def test_conv_backward_policy():
    x, w = torch.randn(2, 3, 30), torch.randn(4, 3, 5)
    assert not conv_grad_as_conv(x, w)  # no gradient needed
    assert conv_grad_as_conv(x, w.requires_grad_())
    with torch.no_grad():
        assert not conv_grad_as_conv(x, w)
    assert not conv_grad_as_conv(x.to("meta"), w.to("meta"))


def test_encoder_runs_on_the_meta_device():
    """Forward and backward on meta tensors: nothing in the eager path reads a value or
    synchronises with the device."""
    config = EncoderConfig(dropout=0.1)
    with torch.device("meta"):
        enc = ECGEncoder(config)
    assert all(p.is_meta for p in enc.parameters())
    x = torch.randn(4, 1, 2560, device="meta")
    y = enc(x)
    assert y.is_meta and y.shape == (4, 128)
    y.sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.is_meta and p.grad.shape == p.shape, name
    assert ECGEncoder(config).to("meta").eval()(x[:, 0]).shape == (4, 128)
    assert dispatch.resolve("encoder_block", "auto", x, enc.blocks[0].block_params(),
                            enc.blocks[0].spec, None) == "eager"
