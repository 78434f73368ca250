"""Defining properties of the SSL-ECG transformations and contrastive augmentations."""

from __future__ import annotations

import math

import pytest
import torch

from ecgfast import transforms as T
from ecgfast.losses import SSL_ECG_TASK_WEIGHTS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def ecg_like(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Sums of sinusoids with per-window amplitudes spanning 100x (powers differ 10^4)."""
    g = gen(seed)
    t = torch.arange(length, dtype=torch.float64) / 256.0
    freqs = 0.5 + 20 * torch.rand(batch, 5, 1, generator=g, dtype=torch.float64)
    phases = 2 * math.pi * torch.rand(batch, 5, 1, generator=g, dtype=torch.float64)
    amps = torch.rand(batch, 5, 1, generator=g, dtype=torch.float64)
    x = (amps * torch.sin(2 * math.pi * freqs * t + phases)).sum(dim=1)
    gain = torch.logspace(-1, 1, batch, dtype=torch.float64).unsqueeze(1)
    return (x * gain).float()


def measured_snr_db(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = x.double(), y.double()
    return 10 * torch.log10(x.square().mean(-1) / (y - x).square().mean(-1))


RANDOM_FNS = {
    "add_noise": lambda x, g: T.add_noise(x, generator=g),
    "permute_segments": lambda x, g: T.permute_segments(x, generator=g),
    "time_warp": lambda x, g: T.time_warp(x, generator=g),
    "random_scale": lambda x, g: T.random_scale(x, generator=g),
    "random_time_shift": lambda x, g: T.random_time_shift(x, generator=g),
    "random_noise": lambda x, g: T.random_noise(x, generator=g),
    "random_time_warp": lambda x, g: T.random_time_warp(x, generator=g),
    "ContrastiveAugment": lambda x, g: T.ContrastiveAugment()(x, g),
    "make_pretext_batch": lambda x, g: T.make_pretext_batch(x, g)[0],
}
DETERMINISTIC_FNS = {
    "scale": lambda x, g: T.scale(x),
    "negate": lambda x, g: T.negate(x),
    "time_flip": lambda x, g: T.time_flip(x),
}
ALL_FNS = {**RANDOM_FNS, **DETERMINISTIC_FNS}


# ---------------------------------------------------------------------- noise


def test_add_noise_reaches_target_snr_per_window():
    x = ecg_like(16, 2560)
    y = T.add_noise(x, 15.0, generator=gen(1))
    snr = measured_snr_db(x, y)
    # std of the measured SNR for L = 2560 white noise is about 0.12 dB
    assert torch.all((snr - 15.0).abs() < 0.5), snr
    assert abs(snr.mean().item() - 15.0) < 0.15
    noise = (y - x).double()
    assert noise.mean(-1).abs().max() < 4 * noise.std(-1).max() / math.sqrt(2560)


@pytest.mark.parametrize("snr_db", [0.0, 30.0])
def test_add_noise_other_snr(snr_db):
    x = ecg_like(8, 2560, seed=3)
    snr = measured_snr_db(x, T.add_noise(x, snr_db, generator=gen(2)))
    assert torch.all((snr - snr_db).abs() < 0.5), snr


def test_add_noise_zero_window_stays_zero():
    x = ecg_like(3, 256)
    x[1] = 0
    y = T.add_noise(x, generator=gen(0))
    assert torch.equal(y[1], x[1])
    assert not torch.equal(y[0], x[0])


def test_random_noise_snr_per_window_in_range_and_varies():
    x = ecg_like(64, 2560, seed=5)
    snr = measured_snr_db(x, T.random_noise(x, (15.0, 30.0), generator=gen(7)))
    assert torch.all(snr > 14.5) and torch.all(snr < 30.5), snr
    assert snr.min() < 18 and snr.max() > 27  # spread over the range, not one value


# ------------------------------------------------------- deterministic transforms


def test_scale_negate_flip_exact():
    x = torch.randn(5, 1, 333, generator=gen(0))
    assert torch.equal(T.scale(x, 1.1), x * 1.1)
    assert torch.equal(T.scale(x), x * 1.1)
    assert torch.equal(T.negate(x), -x)
    assert torch.equal(T.time_flip(x), x.flip(-1))
    assert torch.equal(T.time_flip(x)[..., 0], x[..., -1])


def test_outputs_are_new_tensors():
    x = torch.randn(3, 50, generator=gen(0))
    before = x.clone()
    for name in T.TRANSFORM_NAMES:
        y = T.apply_transform(x, name, gen(1))
        y.add_(1.0)
        assert torch.equal(x, before), name


# ------------------------------------------------------------------ permutation


def test_permute_keeps_segments_divisible():
    b, length, n = 16, 200, 20
    x = torch.randn(b, length, generator=gen(0))
    y = T.permute_segments(x, n, generator=gen(1))
    xs, ys = x.reshape(b, n, length // n), y.reshape(b, n, length // n)
    changed = 0
    for i in range(b):
        in_segs = sorted(tuple(s.tolist()) for s in xs[i])
        out_segs = sorted(tuple(s.tolist()) for s in ys[i])
        assert in_segs == out_segs
        changed += not torch.equal(x[i], y[i])
    assert changed >= b - 1


def _positions_in_output(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """For x with distinct values per row: where each x[b, i] ends up in y[b]."""
    order_x, order_y = x.argsort(-1), y.argsort(-1)
    pos = torch.empty_like(order_x)
    pos.scatter_(1, order_x, order_y)
    return pos


@pytest.mark.parametrize("length,n", [(2563, 20), (101, 7), (20, 20), (37, 1)])
def test_permute_moves_whole_segments_non_divisible(length, n):
    b = 16
    x = torch.rand(b, length, generator=gen(0), dtype=torch.float64)
    y = T.permute_segments(x, n, generator=gen(1))
    assert torch.equal(x.sort(-1).values, y.sort(-1).values)  # same samples
    pos = _positions_in_output(x, y)
    bounds = [j * length // n for j in range(n + 1)]
    lengths = [bounds[j + 1] - bounds[j] for j in range(n)]
    assert max(lengths) - min(lengths) <= 1
    inside = torch.ones(length - 1, dtype=torch.bool)
    inside[[e - 1 for e in bounds[1:-1]]] = False
    # within each input segment, samples stay consecutive and in order
    assert torch.all(pos.diff(dim=1)[:, inside] == 1)
    # the order of segments: one permutation per window, all distinct
    seg_order = pos[:, bounds[:-1]].argsort(-1)
    assert torch.equal(seg_order.sort(-1).values, torch.arange(n).expand(b, n))
    if n >= 7:
        assert len({tuple(r.tolist()) for r in seg_order}) == b
        assert (seg_order != torch.arange(n)).any(-1).sum() >= b - 1
    if n == 1:
        assert torch.equal(x, y)


# -------------------------------------------------------------------- time warp


def test_time_warp_identity_when_stretch_is_one():
    x = ecg_like(6, 2560)
    y = T.time_warp(x, stretch=1.0, generator=gen(0))
    assert y.shape == x.shape
    assert torch.equal(y, x)  # zero displacement reads every sample exactly


def test_time_warp_is_piecewise_linear_resampling():
    b, length = 16, 2560
    ramp = torch.arange(length, dtype=torch.float64).expand(b, length).contiguous()
    y = T.time_warp(ramp, 9, 1.05, 5, generator=gen(3))
    assert y.shape == (b, length)
    assert torch.all(y[:, 0] == 0)
    slopes = y.diff(dim=1)
    assert torch.all(slopes > 0)  # monotone: a resampling, no reordering
    lo, hi = 1 / 1.05, 1.05
    assert torch.all(slopes > lo - 1e-9) and torch.all(slopes < hi + 1e-9)
    on_lo = (slopes - lo).abs() < 1e-9  # stretched segments: input advances 1/1.05
    on_hi = (slopes - hi).abs() < 1e-9  # squeezed segments: input advances 1.05
    assert torch.all((on_lo | on_hi).sum(-1) >= length - 1 - 8)  # at most one kink per joint
    # 5 stretched (5 * 1.05 / 9 of the output) vs 4 squeezed (4 / 1.05 / 9), up to the crop
    frac_lo = on_lo.double().mean(-1)
    assert torch.all((frac_lo - 5 * 1.05 / (5 * 1.05 + 4 / 1.05)).abs() < 0.02), frac_lo
    # warped length 1.0066 L: the end is cropped, so the last output is short of L - 1
    assert torch.all(y[:, -1] < length - 1 - 10)
    # each window gets its own choice of stretched segments
    assert len({tuple(r.tolist()) for r in on_lo}) >= b // 2
    const = torch.full((4, 500), 3.25)
    assert torch.equal(T.time_warp(const, generator=gen(0)), const)


def test_time_warp_uniform_stretch_and_short_handling():
    length = 900
    ramp = torch.arange(length, dtype=torch.float64).unsqueeze(0)
    # every segment stretched: a uniform resampling, cropped to the first L samples
    y = T.time_warp(ramp, 9, 1.05, 9, generator=gen(0))
    torch.testing.assert_close(y, ramp / 1.05)
    # every segment squeezed: warped length L / 1.05 < L, resampled back to L -> identity
    y = T.time_warp(ramp, 9, 1.05, 0, generator=gen(0))
    torch.testing.assert_close(y, ramp)


def test_random_time_warp_range():
    x = ecg_like(4, 1000)
    assert torch.equal(T.random_time_warp(x, (1.0, 1.0), generator=gen(0)), x)
    ramp = torch.arange(1000, dtype=torch.float64).expand(32, 1000).contiguous()
    y = T.random_time_warp(ramp, (1.0, 1.1), generator=gen(1))
    slopes = y.diff(dim=1)
    assert torch.all(slopes > 1 / 1.1 - 1e-9) and torch.all(slopes < 1.1 + 1e-9)
    # the stretch varies per window: the slowest slope of each window differs
    assert slopes.min(-1).values.unique().numel() == 32


# ------------------------------------------------------- contrastive augmentations


def test_random_scale_per_window_factor():
    x = ecg_like(64, 300) + 2.0  # offset keeps |x| away from 0
    y = T.random_scale(x, 0.8, 1.2, generator=gen(0))
    ratio = y.double() / x.double()
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-6, atol=0)
    f = ratio[:, 0]
    assert torch.all(f >= 0.8 - 1e-6) and torch.all(f <= 1.2 + 1e-6)
    assert f.unique().numel() == 64 and f.min() < 0.85 and f.max() > 1.15


def test_random_time_shift_is_per_window_roll():
    b, length, max_shift = 64, 100, 0.1
    x = torch.randn(b, length, generator=gen(0))
    y = T.random_time_shift(x, max_shift, generator=gen(1))
    shifts = []
    for i in range(b):
        found = [s for s in range(-10, 11) if torch.equal(torch.roll(x[i], s), y[i])]
        assert len(found) == 1, i
        shifts.append(found[0])
    assert len(set(shifts)) >= 10 and min(shifts) < -5 and max(shifts) > 5
    assert torch.equal(T.random_time_shift(x, 0.0, generator=gen(1)), x)


def test_contrastive_augment_probabilities():
    x = ecg_like(64, 256) + 2.0
    off = T.ContrastiveAugment(p=0.0)(x, gen(0))
    assert torch.equal(off, x)
    only_scale = T.ContrastiveAugment(max_shift=0.0, snr_db=None, warp=None, p=1.0)
    ratio = only_scale(x, gen(0)) / x
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-6, atol=0)
    half = T.ContrastiveAugment(scale=(1.5, 2.0), max_shift=0.0, snr_db=None, warp=None, p=0.5)
    y = half(x, gen(1))
    unchanged = (y == x).all(-1)
    assert 10 < unchanged.sum() < 54
    assert torch.all((y / x)[~unchanged] >= 1.5 - 1e-6)


def test_contrastive_two_views_differ_and_keep_shape():
    x = ecg_like(8, 512).unsqueeze(1)
    aug = T.ContrastiveAugment(p=1.0)
    v1, v2 = aug.two_views(x, gen(0))
    assert v1.shape == v2.shape == x.shape
    assert not torch.equal(v1, v2)
    assert not torch.equal(v1, x)
    # views stay close to the signal: noise >= 15 dB and mild warps/scales
    assert measured_snr_db(x.squeeze(1), v1.squeeze(1)).isfinite().all()


# ------------------------------------------------------------ generic properties


@pytest.mark.parametrize("name", sorted(RANDOM_FNS))
def test_determinism_from_generator(name):
    fn = RANDOM_FNS[name]
    x = ecg_like(8, 400)
    a, b, c = fn(x, gen(11)), fn(x, gen(11)), fn(x, gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(5)
    d = fn(x, None)
    torch.manual_seed(5)
    assert torch.equal(d, fn(x, None))


@pytest.mark.parametrize("name", sorted(ALL_FNS))
def test_three_d_and_two_d_inputs_agree(name):
    fn = ALL_FNS[name]
    x = ecg_like(5, 300)
    y2, y3 = fn(x, gen(4)), fn(x.unsqueeze(1), gen(4))
    assert y3.dim() == 3 and y3.shape[1] == 1
    assert torch.equal(y2, y3.squeeze(1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_device_contiguity_preserved(dtype, device):
    x = ecg_like(4, 2 * 300).to(device=device, dtype=dtype)[:, ::2]  # non-contiguous
    assert not x.is_contiguous()
    for name, fn in ALL_FNS.items():
        y = fn(x, gen(0, device))
        assert y.dtype == dtype and y.device == x.device, name
        assert y.is_contiguous(), name
        assert torch.isfinite(y).all(), name
        if name != "make_pretext_batch":
            assert y.shape == x.shape, name


def test_half_noise_snr():
    x = ecg_like(8, 2560).half()
    snr = measured_snr_db(x, T.add_noise(x, generator=gen(0)))
    assert torch.all((snr - 15.0).abs() < 0.5)


# ---------------------------------------------------------------- pretext batch


def test_names_match_loss_weights():
    assert T.TRANSFORM_NAMES[0] == "original"
    assert len(T.TRANSFORM_NAMES) == len(SSL_ECG_TASK_WEIGHTS) == 7


@pytest.mark.parametrize("three_d", [False, True])
def test_make_pretext_batch_layout(three_d):
    b, length = 4, 2560
    x = ecg_like(b, length)
    if three_d:
        x = x.unsqueeze(1)
    inputs, labels = T.make_pretext_batch(x, gen(9))
    assert inputs.shape == (7 * b, *x.shape[1:])
    assert labels.dtype == torch.int64 and labels.shape == (7 * b,)
    assert torch.equal(labels, torch.arange(7).repeat_interleave(b))
    blocks = inputs.split(b)
    assert torch.equal(blocks[0], x)
    assert torch.equal(blocks[2], T.scale(x, 1.1))
    assert torch.equal(blocks[3], -x)
    assert torch.equal(blocks[4], x.flip(-1))
    g = gen(9)  # random versions drawn in order noise, permute, time warp
    assert torch.equal(blocks[1], T.add_noise(x, 15.0, g))
    assert torch.equal(blocks[5], T.permute_segments(x, 20, g))
    assert torch.equal(blocks[6], T.time_warp(x, 9, 1.05, 5, g))
    inputs2, labels2 = T.PretextTransform()(x, gen(9))
    assert torch.equal(inputs2, inputs) and torch.equal(labels2, labels)


# ------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: T.add_noise(torch.randn(10)), ValueError, "x must be"),
        (lambda: T.scale(torch.randn(2, 3, 4, 5)), ValueError, "x must be"),
        (lambda: T.negate(torch.randn(2, 0, 10)), ValueError, "at least one lead"),
        (lambda: T.time_flip(torch.ones(2, 10, dtype=torch.int64)), TypeError, "floating"),
        (lambda: T.time_flip([[1.0, 2.0]]), TypeError, "torch.Tensor"),
        (lambda: T.scale(torch.randn(2, 0)), ValueError, "L = 0"),
        (lambda: T.permute_segments(torch.randn(2, 10), 11), ValueError, "n_segments"),
        (lambda: T.permute_segments(torch.randn(2, 10), 0), ValueError, "n_segments"),
        (lambda: T.permute_segments(torch.randn(2, 10), 2.5), TypeError, "n_segments"),
        (lambda: T.time_warp(torch.randn(2, 8)), ValueError, "n_segments"),
        (lambda: T.time_warp(torch.randn(2, 90), n_stretched=10), ValueError, "n_stretched"),
        (lambda: T.time_warp(torch.randn(2, 90), stretch=0.0), ValueError, "stretch"),
        (lambda: T.add_noise(torch.randn(2, 9), float("nan")), ValueError, "snr_db"),
        (lambda: T.scale(torch.randn(2, 9), "2"), TypeError, "factor"),
        (lambda: T.add_noise(torch.randn(2, 9), generator=3), TypeError, "generator"),
        (lambda: T.apply_transform(torch.randn(2, 9), "rotate"), ValueError, "name"),
        (lambda: T.random_scale(torch.randn(2, 9), 1.2, 0.8), ValueError, "low <= high"),
        (lambda: T.random_time_shift(torch.randn(2, 9), 1.5), ValueError, "max_shift"),
        (lambda: T.random_noise(torch.randn(2, 9), 20.0), TypeError, "snr_db"),
        (lambda: T.random_time_warp(torch.randn(2, 90), (0.0, 1.1)), ValueError, "stretch"),
        (lambda: T.ContrastiveAugment(p=1.5), ValueError, "p must"),
        (lambda: T.ContrastiveAugment(p=(1.0, 0.5)), ValueError, "p must"),
        (lambda: T.ContrastiveAugment(scale=(2.0, 1.0)), ValueError, "scale"),
        (lambda: T.make_pretext_batch(torch.randn(3)), ValueError, "x must"),
    ],
)
def test_bad_input_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_package_keeps_the_public_names():
    """ecgfast.transforms is a package of three modules; its public names are each the
    object its submodule defines."""
    from ecgfast.transforms import contrastive, pretext

    names = {
        "AUGMENT_PRESETS", "TRANSFORM_NAMES", "ContrastiveAugment", "PretextTransform", "add_noise",
        "apply_transform", "make_pretext_batch", "negate", "permute_segments", "random_noise",
        "random_scale", "random_time_shift", "random_time_warp", "scale", "time_flip",
        "time_warp",
    }
    assert set(T.__all__) == names
    for name in names:
        home = contrastive if name.startswith(("random_", "Contrastive", "AUGMENT")) else pretext
        assert getattr(T, name) is getattr(home, name), name


def test_augment_presets_and_the_heart_rate_they_keep():
    """'hr-preserving' leaves every R peak where it was; the report's set (time warp and
    circular shift forced on) moves them. Objectives and PretrainConfig take the names."""
    import numpy as np

    from ecgfast.hrv import r_peaks
    from ecgfast.models import ECGEncoder, EncoderConfig
    from ecgfast.objectives import build_objective
    from ecgfast.training import PretrainConfig
    from ecgfast.transforms import AUGMENT_PRESETS

    t = np.arange(2560)
    peaks = 40 + np.arange(12) * 205
    x = sum(np.exp(-0.5 * ((t - p) / 2.0) ** 2) for p in peaks) + 0.01 * np.sin(t / 50)
    batch = torch.as_tensor(np.stack([x] * 4), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    kept = T.ContrastiveAugment.preset("hr-preserving", p=1.0)(batch, generator=g)
    moved = T.ContrastiveAugment.preset("report", p=1.0, warp=(1.2, 1.3))(batch, generator=g)
    for i in range(4):
        np.testing.assert_array_equal(r_peaks(kept[i].numpy(), 256.0), peaks)
        assert not np.array_equal(r_peaks(moved[i].numpy(), 256.0), peaks)
    assert set(AUGMENT_PRESETS) >= {"report", "no-warp", "hr-preserving"}
    assert repr(T.ContrastiveAugment.preset("report")) == repr(T.ContrastiveAugment())
    enc = ECGEncoder(EncoderConfig(dropout=0.0))
    aug = build_objective("contrastive", enc, augment="hr-preserving").augment
    assert aug.warp is None and aug.max_shift == 0.0 and aug.scale is not None
    with pytest.raises(ValueError, match="augment"):
        PretrainConfig(augment="mixup")
    with pytest.raises(ValueError, match="augment"):
        T.ContrastiveAugment.preset("mixup")
