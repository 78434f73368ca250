"""ecgfast.keyed: counter-based draws keyed by (seed, stream, row).

What chunked training rests on: a row's draws are a function of its id alone (a slice of
the batch replays them exactly), the torch hash is the integer hash it claims to be (so the
Triton kernels can compute the same bits), and the draws have the distributions they
claim.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from ecgfast import keyed
from ecgfast.keyed import (
    KeyedRandom,
    dropout_keep,
    element_bits,
    keep_threshold,
    keyed_dropout,
    mix32,
    mix32_int,
    row_keys,
    stream_base,
)
from ecgfast.models import ECGEncoder, EncoderConfig, TransformationHeads
from ecgfast.transforms import ContrastiveAugment, make_pretext_batch


def _i32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def test_the_torch_hash_is_the_integer_hash_with_products_modulo_2_32():
    rng = random.Random(0)
    values = [0, 1, 2**31 - 1, 2**31, 2**32 - 1] + [rng.getrandbits(32) for _ in range(20000)]
    got = mix32(torch.tensor([_i32(v) for v in values], dtype=torch.int32)).tolist()
    assert got == [_i32(mix32_int(v)) for v in values]
    # and it is a bijection on a sample: no two inputs collide
    assert len(set(got)) == len(set(values))


def test_element_bits_and_row_keys_follow_the_documented_formulas():
    seed = 2**62 + 12345678901234
    base = int(stream_base(seed, (3, 1))) & 0xFFFFFFFF
    h = mix32_int(mix32_int((seed >> 32) ^ 0x9E3779B9) ^ (seed & 0xFFFFFFFF))
    assert base == mix32_int(mix32_int(h ^ 3) ^ 1)
    rows = torch.tensor([0, 5, 2**33 + 7])
    keys = row_keys(stream_base(seed, (3, 1)), rows).tolist()
    assert keys == row_keys(base, rows).tolist()
    for r, k in zip(rows.tolist(), keys):
        lo, hi = r & 0xFFFFFFFF, r >> 32
        assert k == _i32(mix32_int(mix32_int(base ^ lo) ^ hi))
    bits = element_bits(torch.tensor(keys, dtype=torch.int32), 9).tolist()
    for k, row in zip(keys, bits):
        assert row == [mix32_int(mix32_int(j) ^ (k & 0xFFFFFFFF)) >> 8 for j in range(9)]


def test_streams_seeds_and_rows_give_different_draws():
    a = KeyedRandom.for_batch(1, 4)
    first, second = a.uniform((4, 50), "cpu"), a.uniform((4, 50), "cpu")
    assert not torch.equal(first, second)  # the next stream
    assert not torch.equal(first, KeyedRandom.for_batch(2, 4).uniform((4, 50), "cpu"))
    assert not torch.equal(first[0], first[1])
    assert torch.equal(first, KeyedRandom.for_batch(1, 4).uniform((4, 50), "cpu"))


@pytest.mark.parametrize("draw", ["uniform", "normal"])
def test_a_slice_replays_its_rows_draws(draw):
    whole = KeyedRandom.for_batch(77, 10)
    full = [getattr(whole, draw)((10, 3, 17), "cpu") for _ in range(3)]
    for index in (slice(3, 8), torch.tensor([9, 0, 4])):
        part = whole.select(index)
        for t in full:
            assert torch.equal(getattr(part, draw)((len(part), 3, 17), "cpu"), t[index])


def test_per_lead_draws_key_each_lead_of_each_row():
    whole, leads = KeyedRandom.for_batch(5, 6), 4
    t = whole.uniform((6 * leads, 11), "cpu").view(6, leads, 11)
    part = whole.select(slice(2, 5)).uniform((3 * leads, 11), "cpu").view(3, leads, 11)
    assert torch.equal(part, t[2:5])
    assert not torch.equal(t[:, 0], t[:, 1])


def test_uniform_and_normal_have_their_moments():
    r = KeyedRandom.for_batch(3, 400)
    u = r.uniform((400, 2500), "cpu", torch.float64)
    n = u.numel()
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(float(u.var()) - 1 / 12) < 5e-4
    z = r.normal((400, 2500), "cpu")
    assert torch.isfinite(z).all()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5e-3
    assert abs(float((z**3).mean())) < 0.02  # symmetric
    assert abs(float((z**4).mean()) - 3) < 0.05  # Gaussian tails


def test_dropout_keeps_one_minus_p_and_rows_are_independent():
    keys = row_keys(stream_base(9, (0,)), torch.arange(256))
    for p in (0.1, 0.5, 0.9):
        keep = dropout_keep(keys, (8, 500), p).float()
        n = keep.numel()
        assert abs(float(keep.mean()) - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
        flat = keep.view(256, -1) - keep.mean()
        corr = (flat[:-1] * flat[1:]).mean() / flat.var()
        assert abs(float(corr)) < 0.02  # neighbouring rows' masks uncorrelated
    assert keep_threshold(0.0) == 0 and keep_threshold(0.5) == 2**23


def test_cpu_blocking_does_not_change_the_bits(monkeypatch):
    keys = row_keys(stream_base(4, ()), torch.arange(37))
    big = dropout_keep(keys, (5, 71), 0.3)
    bits = element_bits(keys, 355)
    monkeypatch.setattr(keyed, "CPU_BLOCK_ELEMENTS", 400)  # one row per block
    assert torch.equal(dropout_keep(keys, (5, 71), 0.3), big)
    assert torch.equal(element_bits(keys, 355), bits)


def test_keyed_dropout_scales_kept_elements_and_its_gradient_is_the_mask():
    x = torch.randn(6, 4, 30, requires_grad=True)
    keys = row_keys(stream_base(1, ()), torch.arange(6))
    y = keyed_dropout(x, 0.25, keys)
    keep = dropout_keep(keys, (4, 30), 0.25)
    torch.testing.assert_close(y, torch.where(keep, x / 0.75, 0.0))
    y.sum().backward()
    torch.testing.assert_close(x.grad, keep.float() / 0.75)
    assert keyed_dropout(x, 0.25, None) is x and keyed_dropout(x, 0.0, keys) is x
    with pytest.raises(ValueError, match=r"dropout keys must be \(6,\)"):
        keyed_dropout(x, 0.25, keys[:5])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="seed"):
        KeyedRandom(-1, torch.arange(3))
    with pytest.raises(ValueError, match="0-d int64"):
        KeyedRandom(torch.tensor([1]), torch.arange(3))
    with pytest.raises(ValueError, match="rows"):
        KeyedRandom(0, torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="multiple"):
        KeyedRandom.for_batch(0, 4).uniform((6, 2), "cpu")


def test_default_generator_seeds_reproduce_with_manual_seed():
    torch.manual_seed(3)
    a = KeyedRandom.from_default_generator(5)
    torch.manual_seed(3)
    b = KeyedRandom.from_default_generator(5)
    assert torch.equal(a.seed, b.seed) and torch.equal(a.uniform((5, 4), "cpu"),
                                                       b.uniform((5, 4), "cpu"))
    assert torch.equal(KeyedRandom(a.seed, a.rows).uniform((5, 4), "cpu"),
                       KeyedRandom(int(a.seed), a.rows).uniform((5, 4), "cpu"))


@pytest.mark.parametrize("per_lead", [False, True])
def test_augmentations_of_a_slice_equal_the_slice_of_the_augmented_batch(per_lead):
    x = torch.randn(9, 3, 120)
    aug = ContrastiveAugment(per_lead=per_lead)
    v1, v2 = aug.two_views(x, KeyedRandom.for_batch(8, 9))
    s1, s2 = aug.two_views(x[4:7], KeyedRandom.for_batch(8, 9).select(slice(4, 7)))
    torch.testing.assert_close(s1, v1[4:7], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s2, v2[4:7], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(v1, v2)
    inputs, _ = make_pretext_batch(x, KeyedRandom.for_batch(8, 9), per_lead=per_lead)
    part, _ = make_pretext_batch(x[4:7], KeyedRandom.for_batch(8, 9).select(slice(4, 7)),
                                 per_lead=per_lead)
    torch.testing.assert_close(part.view(7, 3, 3, 120), inputs.view(7, 9, 3, 120)[:, 4:7],
                               rtol=1e-6, atol=1e-6)


def test_the_encoder_and_heads_drop_by_row_id():
    torch.manual_seed(0)
    enc = ECGEncoder(EncoderConfig(filters=(8, 12, 16), kernel_sizes=(7, 4, 3),
                                   backend="eager", dropout=0.3)).train()
    heads = TransformationHeads(16, 8).train()
    x = torch.randn(7, 1, 100)
    rows = KeyedRandom.for_batch(2, 7)
    h = enc(x, rows.select(slice(None)))
    torch.testing.assert_close(enc(x[2:5], rows.select(slice(2, 5))), h[2:5])
    logits = heads(h, rows.select(slice(None)))
    torch.testing.assert_close(heads(h[2:5], rows.select(slice(2, 5))), logits[2:5])
    enc.eval()
    assert not torch.allclose(enc(x), h)  # dropout was on in training
