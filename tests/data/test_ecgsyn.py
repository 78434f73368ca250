import math

import numpy as np
import pytest

from ecgfast.data import ecgsyn
from ecgfast.data.ecgsyn import DEFAULT_MORPHOLOGY, rr_tachogram


@pytest.mark.parametrize(("duration_s", "fs"), [(10.0, 256.0), (7.3, 360.0), (4.0, 500.0)])
def test_length_dtype_and_range(duration_s, fs):
    x = ecgsyn(duration_s, fs, rng=0)
    assert x.shape == (round(duration_s * fs),)
    assert x.dtype == np.float32
    # Noise-free: the paper's scaling to -0.4..1.2 mV.
    assert x.min() == pytest.approx(-0.4, abs=1e-5)
    assert x.max() == pytest.approx(1.2, abs=1e-5)


@pytest.mark.parametrize("heart_rate", [45.0, 60.0, 85.0, 120.0, 160.0])
def test_heart_rate_from_r_peaks(heart_rate, hr_of):
    fs = 256.0
    x = ecgsyn(60.0, fs, heart_rate=heart_rate, heart_rate_std=2.0, noise_mv=0.02, rng=3)
    assert abs(hr_of(x, fs) - heart_rate) < 3.0


def test_beat_count_matches_duration(peaks_of):
    x = ecgsyn(30.0, 256.0, heart_rate=72.0, heart_rate_std=1.0, rng=1)
    n = peaks_of(x, 256.0).size
    assert abs(n - 30.0 * 72.0 / 60.0) <= 2


def test_heart_rate_variability_follows_heart_rate_std(hr_of, peaks_of):
    fs = 256.0
    stds = []
    for hr_std in (0.5, 6.0):
        x = ecgsyn(120.0, fs, heart_rate=70.0, heart_rate_std=hr_std, rng=5)
        rr = np.diff(peaks_of(x, fs)) / fs
        stds.append(np.std(60.0 / rr))
    assert stds[1] > 3 * stds[0]
    assert 3.0 < stds[1] < 9.0


def test_reproducible_from_seed_and_different_across_seeds():
    kw = {"heart_rate": 70.0, "heart_rate_std": 3.0, "noise_mv": 0.05, "baseline_mv": 0.1}
    a = ecgsyn(10.0, 256.0, rng=42, **kw)
    b = ecgsyn(10.0, 256.0, rng=np.random.default_rng(42), **kw)
    c = ecgsyn(10.0, 256.0, rng=43, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_r_peak_is_largest_deflection(peaks_of):
    fs = 256.0
    x = ecgsyn(20.0, fs, heart_rate=65.0, rng=2).astype(np.float64)
    baseline = np.median(x)
    assert np.argmax(np.abs(x - baseline)) in set(peaks_of(x, fs))
    # Every beat: the R peak is the maximum within +-0.25 s.
    for p in peaks_of(x, fs)[1:-1]:
        seg = x[p - 64 : p + 64]
        assert np.argmax(np.abs(seg - baseline)) == 64


def test_t_wave_weight_changes_t_wave():
    fs = 256.0
    base = ecgsyn(10.0, fs, rng=7)
    a = np.array(DEFAULT_MORPHOLOGY["a"])
    a[4] *= 2.0
    tall = ecgsyn(10.0, fs, rng=7, morphology={"a": a})
    # Same beat timing (same seed), so the difference is the T wave: positive bumps.
    diff = tall.astype(np.float64) - base
    assert diff.max() > 0.1
    assert np.percentile(diff, 99) > abs(np.percentile(diff, 1))


def test_noise_and_baseline_amplitudes():
    fs = 256.0
    clean = ecgsyn(30.0, fs, rng=4)
    noisy = ecgsyn(30.0, fs, rng=4, noise_mv=0.05)
    assert np.std(noisy - clean) == pytest.approx(0.05, rel=0.1)
    wander = ecgsyn(30.0, fs, rng=4, baseline_mv=0.3, respiration_hz=0.25) - clean
    assert np.max(np.abs(wander)) == pytest.approx(0.3, rel=0.02)
    spectrum = np.abs(np.fft.rfft(wander))
    assert np.fft.rfftfreq(wander.size, 1 / fs)[np.argmax(spectrum)] == pytest.approx(
        0.25, abs=0.05
    )


def test_rr_tachogram_lf_hf_ratio():
    rng = np.random.default_rng(0)
    rr, rr_fs = rr_tachogram(600.0, 60.0, 3.0, 2.0, 0.25, rng)
    assert np.mean(rr) == pytest.approx(1.0, abs=0.01)
    assert np.std(60.0 / rr) == pytest.approx(3.0, rel=0.15)
    f = np.fft.rfftfreq(rr.size, 1 / rr_fs)
    p = np.abs(np.fft.rfft(rr - rr.mean())) ** 2
    lf = p[(f > 0.05) & (f < 0.15)].sum()
    hf = p[(f > 0.2) & (f < 0.3)].sum()
    assert lf / hf == pytest.approx(2.0, rel=0.1)


def test_fast_enough():
    import time

    t0 = time.perf_counter()
    ecgsyn(60.0, 256.0, heart_rate=70.0, noise_mv=0.01, baseline_mv=0.1, rng=0)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"duration_s": 0.0}, "duration_s"),
        ({"duration_s": 10.0, "fs": -1.0}, "fs"),
        ({"duration_s": 10.0, "heart_rate": 5.0}, "heart_rate"),
        ({"duration_s": 10.0, "heart_rate_std": -1.0}, "heart_rate_std"),
        ({"duration_s": 10.0, "lf_hf_ratio": 0.0}, "lf_hf_ratio"),
        ({"duration_s": 10.0, "noise_mv": math.nan}, "noise_mv"),
        ({"duration_s": 10.0, "morphology": {"a": [1, 2, 3]}}, "morphology"),
        ({"duration_s": 10.0, "morphology": {"c": [1, 2, 3, 4, 5]}}, "unknown keys"),
        ({"duration_s": 10.0, "morphology": {"b": [0.1, 0.1, 0.0, 0.1, 0.1]}}, "widths"),
        ({"duration_s": 0.001, "fs": 256.0}, "samples"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ecgsyn(**kwargs)


def test_bad_rng_type():
    with pytest.raises(TypeError, match="rng"):
        ecgsyn(10.0, rng="seed")
