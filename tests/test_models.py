"""Encoder architecture: shapes, parameter structure, input checks, config round trip."""

import itertools

import pytest
import torch
from torch import nn

from ecgfast.models import (
    ECGEncoder,
    EncoderConfig,
    ProjectionHead,
    TransformationHeads,
)

RESIDUALS = ("none", "first", "first_two", "all")
CONFIGS = list(itertools.product(RESIDUALS, (False, True)))


def _conv_params(cin, cout, k):
    return cin * cout * k + cout


def _expected_params(residual, attention, r=8):
    blocks = {"none": (0, 0, 0), "first": (1, 0, 0), "first_two": (1, 1, 0), "all": (1, 1, 1)}[residual]
    total = 0
    for i, (cin, cout, k) in enumerate([(1, 32, 32), (32, 64, 16), (64, 128, 8)]):
        total += _conv_params(cin, cout, k) + _conv_params(cout, cout, k)
        if blocks[i]:
            total += cin * cout + cout  # 1x1 projection with bias (channels always differ)
        if attention:
            h = cout // r
            total += (cout * h + h) + (h * cout + cout)
    return total


def test_baseline_has_329152_parameters():
    enc = ECGEncoder(EncoderConfig(residual="none", attention=False))
    assert sum(p.numel() for p in enc.parameters()) == 329_152


@pytest.mark.parametrize("residual,attention", CONFIGS)
def test_shapes_and_parameter_structure(residual, attention):
    enc = ECGEncoder(EncoderConfig(residual=residual, attention=attention, dropout=0.0))
    assert sum(p.numel() for p in enc.parameters()) == _expected_params(residual, attention)
    flags = EncoderConfig(residual=residual).residual_blocks
    for block, has_skip, (cin, cout, k) in zip(
        enc.blocks, flags, [(1, 32, 32), (32, 64, 16), (64, 128, 8)]
    ):
        assert block.conv1.weight.shape == (cout, cin, k)
        assert block.conv2.weight.shape == (cout, cout, k)
        assert block.conv1.bias is not None and block.conv2.bias is not None
        assert (block.shortcut is not None) == has_skip
        if has_skip:
            assert block.shortcut.weight.shape == (cout, cin, 1)
        assert (block.se is not None) == attention
    x = torch.randn(3, 1, 2560)
    assert enc(x).shape == (3, 128)
    assert enc(x[:, 0]).shape == (3, 128)  # (B, L) input


def test_intermediate_lengths_match_the_papers():
    enc = ECGEncoder(EncoderConfig())
    lengths = [2560]
    for block in enc.blocks[:2]:
        lengths.append(block.out_length(lengths[-1]))
    assert lengths == [2560, 1277, 635]


def test_block_maths_matches_a_hand_built_block():
    torch.manual_seed(0)
    enc = ECGEncoder(EncoderConfig(residual="all", attention=True, dropout=0.0))
    b = enc.blocks[0]
    x = torch.randn(2, 1, 100)
    conv1 = nn.Conv1d(1, 32, 32, padding="same")
    conv2 = nn.Conv1d(32, 32, 32, padding="same")
    conv1.load_state_dict(b.conv1.state_dict())
    conv2.load_state_dict(b.conv2.state_dict())
    f = torch.relu(conv2(torch.relu(conv1(x))))
    a = torch.sigmoid(b.se.fc2(torch.relu(b.se.fc1(f.mean(-1)))))
    expected = nn.functional.max_pool1d(f * a[..., None] + b.shortcut(x), 8, 2)
    torch.testing.assert_close(b(x), expected, rtol=1e-5, atol=1e-5)


def test_global_max_pool_in_block_three():
    enc = ECGEncoder(EncoderConfig(residual="none", attention=False, dropout=0.0))
    h = torch.randn(2, 64, 50)
    b = enc.blocks[2]
    f = torch.relu(b.conv2(torch.relu(b.conv1(h))))  # the modules carry padding='same'
    torch.testing.assert_close(b(h), f.amax(dim=-1), rtol=1e-5, atol=1e-5)


def test_minimum_length():
    enc = ECGEncoder(EncoderConfig())
    assert enc.min_length == 22
    assert enc(torch.randn(1, enc.min_length)).shape == (1, 128)
    with pytest.raises(ValueError, match="minimum 22"):
        enc(torch.randn(1, 21))


@pytest.mark.parametrize(
    "x,exc,match",
    [
        (torch.randn(2560), ValueError, "batch"),
        (torch.randn(1, 1, 1, 2560), ValueError, "batch"),
        (torch.randn(2, 3, 2560), ValueError, "channel"),
        (torch.ones(2, 2560, dtype=torch.int64), TypeError, "floating"),
    ],
)
def test_bad_input_is_refused(x, exc, match):
    with pytest.raises(exc, match=match):
        ECGEncoder(EncoderConfig())(x)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"residual": "some"}, "residual"),
        ({"residual": (True, False)}, "residual"),
        ({"activation": "gelu"}, "activation"),
        ({"dropout": 1.0}, "dropout"),
        ({"se_reduction": 0}, "se_reduction"),
        ({"backend": "cuda"}, "backend"),
    ],
)
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EncoderConfig(**kwargs)


def test_residual_tuple_and_round_trip():
    cfg = EncoderConfig(residual=(False, True, True), attention=False, dropout=0.2)
    assert cfg.residual_blocks == (False, True, True)
    again = EncoderConfig.from_dict(cfg.to_dict())
    assert again == cfg
    enc = ECGEncoder(cfg)
    assert [b.shortcut is not None for b in enc.blocks] == [False, True, True]


def test_state_dict_keys_do_not_depend_on_backend():
    a = ECGEncoder(EncoderConfig(backend="auto"))
    b = ECGEncoder(EncoderConfig(backend="eager"))
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())


def test_dropout_only_in_training():
    torch.manual_seed(0)
    enc = ECGEncoder(EncoderConfig(dropout=0.5))
    x = torch.randn(2, 1, 300)
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x))
    enc.train()
    assert not torch.allclose(enc(x), enc(x))


def test_heads():
    h = torch.randn(5, 128)
    assert TransformationHeads()(h).shape == (5, 7)
    assert ProjectionHead()(h).shape == (5, 128)
    heads = TransformationHeads()
    assert sum(p.numel() for p in heads.heads[0].parameters()) == (128 * 128 + 128) * 2 + 129
