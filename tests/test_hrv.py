"""HRV features: hand-computed values, a synthetic beat train, failed windows counted."""

import math

import numpy as np
import pytest

from ecgfast.hrv import FEATURES, hrv_features, rr_features

FS = 256.0


def test_rr_features_by_hand():
    # RR 800, 830, 760, 770, 860 ms: mean 804, successive differences 30, -70, 10, 90
    f = dict(zip(FEATURES, rr_features(np.array([0.80, 0.83, 0.76, 0.77, 0.86]))))
    assert f["n_beats"] == 6
    assert f["mean_rr_ms"] == pytest.approx(804.0)
    assert f["median_rr_ms"] == pytest.approx(800.0)
    assert (f["min_rr_ms"], f["max_rr_ms"]) == pytest.approx((760.0, 860.0))
    # deviations from the mean: -4, 26, -44, -34, 56 -> squares sum to 6920
    assert f["sdnn_ms"] == pytest.approx(math.sqrt(6920 / 4))
    assert f["rmssd_ms"] == pytest.approx(math.sqrt((30**2 + 70**2 + 10**2 + 90**2) / 4))
    # differences minus their mean 15: 15, -85, -5, 75
    assert f["sdsd_ms"] == pytest.approx(math.sqrt((15**2 + 85**2 + 5**2 + 75**2) / 3))
    assert f["pnn50"] == pytest.approx(2 / 4) and f["pnn20"] == pytest.approx(3 / 4)
    hr = [60 / r for r in (0.80, 0.83, 0.76, 0.77, 0.86)]
    assert f["mean_hr_bpm"] == pytest.approx(sum(hr) / 5)
    assert (f["min_hr_bpm"], f["max_hr_bpm"]) == pytest.approx((60 / 0.86, 60 / 0.76))
    assert f["cvnn"] == pytest.approx(math.sqrt(6920 / 4) / 804)
    assert f["cvsd"] == pytest.approx(math.sqrt(14000 / 4) / 804)
    sd2 = math.sqrt(2 * 6920 / 4 - 0.5 * (15**2 + 85**2 + 5**2 + 75**2) / 3)
    assert f["sd2_ms"] == pytest.approx(sd2)
    assert f["sd1_sd2"] == pytest.approx(f["sdsd_ms"] / math.sqrt(2) / sd2)
    assert np.isnan(rr_features(np.array([0.8, 0.8]))).all()  # too few beats


def _beat_train(peaks, length=2560, seed=0):
    """Q, R, S and T waves around each R peak (sample index), light noise, z-scored."""
    t = np.arange(length)
    x = np.zeros(length)
    for p in peaks:
        x += (np.exp(-0.5 * ((t - p) / 2.0) ** 2) - 0.25 * np.exp(-0.5 * ((t - p + 6) / 2.5) ** 2)
              - 0.3 * np.exp(-0.5 * ((t - p - 6) / 2.5) ** 2)
              + 0.2 * np.exp(-0.5 * ((t - p - 70) / 15) ** 2))
    x += 0.02 * np.random.default_rng(seed).standard_normal(length)
    return ((x - x.mean()) / x.std()).astype(np.float32)


def test_features_of_a_synthetic_beat_train_with_known_rr():
    rr = np.array([205, 213, 195, 197, 220, 208, 200, 215, 203, 210, 198])  # samples
    peaks = 40 + np.concatenate([[0], np.cumsum(rr)])
    flat = np.zeros(2560, dtype=np.float32)
    windows = np.stack([_beat_train(peaks), flat, _beat_train(peaks[:3])])
    feats = hrv_features(windows, FS)
    got = dict(zip(FEATURES, feats.values[0]))
    ms = rr * 1000 / FS
    d = np.diff(ms)
    assert got["n_beats"] == len(peaks)
    assert got["mean_rr_ms"] == pytest.approx(ms.mean(), rel=1e-5)
    assert got["sdnn_ms"] == pytest.approx(ms.std(ddof=1), rel=1e-4)
    assert got["rmssd_ms"] == pytest.approx(np.sqrt(np.mean(d**2)), rel=1e-4)
    assert got["pnn50"] == pytest.approx(np.mean(np.abs(d) > 50))
    assert got["mean_hr_bpm"] == pytest.approx(np.mean(60 * FS / rr), rel=1e-5)
    # the flat window and the 3-beat window fail, are counted and keep their rows
    assert feats.failed.tolist() == [False, True, True]
    assert np.isnan(feats.values[1:]).all() and feats.values.shape == (3, len(FEATURES))
    assert sum(feats.reasons.values()) == 2 and feats.reasons["too_few_beats"] >= 1
    assert feats.summary()["n_failed"] == 2 and "sleepecg" in feats.summary()["detector"]
    assert feats.with_indicator()[:, -1].tolist() == [0.0, 1.0, 1.0]


def test_implausible_intervals_fail_the_window():
    peaks = np.array([100, 700, 800, 1400, 2000])  # 100 samples = 0.39 s: still plausible
    feats = hrv_features(_beat_train(np.array([100, 1000, 1600, 2200]))[None], FS)
    assert feats.failed.tolist() == [True]  # 900 samples = 3.5 s: a missed beat
    assert feats.reasons == {"implausible_rr": 1}
    assert not hrv_features(_beat_train(peaks)[None], FS).failed[0]


def test_windows_too_short_for_the_detector_fail_without_running_it():
    feats = hrv_features(np.random.default_rng(0).standard_normal((3, 256)), FS)  # 1 s each
    assert feats.failed.all() and feats.reasons == {"window_shorter_than_3_s": 3}
    with pytest.raises(ValueError, match="shorter than 3 s"):
        from ecgfast.hrv import r_peaks

        r_peaks(np.zeros(256), FS)
