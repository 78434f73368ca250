"""Shared helpers for the ecgfast.data tests."""

import numpy as np
import pytest
from scipy.signal import find_peaks


def r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices of one upright ECG lead: peaks above half the 99.5th
    percentile, at least 0.3 s apart (refractory period, max 200 bpm)."""
    x = np.asarray(x, dtype=np.float64)
    height = np.median(x) + 0.5 * (np.percentile(x, 99.5) - np.median(x))
    peaks, _ = find_peaks(x, height=height, distance=max(1, int(0.3 * fs)))
    return peaks


def heart_rate_bpm(x: np.ndarray, fs: float) -> float:
    """Heart rate in bpm from the median R-R interval of ``x`` (samples at ``fs`` Hz)."""
    peaks = r_peaks(x, fs)
    if peaks.size < 2:
        return float("nan")
    return 60.0 * fs / float(np.median(np.diff(peaks)))


@pytest.fixture
def hr_of():
    return heart_rate_bpm


@pytest.fixture
def peaks_of():
    return r_peaks
