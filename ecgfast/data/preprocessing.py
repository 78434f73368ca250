"""Pre-processing of single-lead ECG as in the SSL-ECG papers (scipy.signal).

The chain applied to every recording, real or synthetic, is

    highpass (0.8 Hz, zero phase) -> resample to 256 Hz (polyphase)
    -> robust z-score (mean and std of the central 95 % of samples)
    -> non-overlapping 10 s windows (2560 samples) -> drop flat-line windows

Each step is a function of its own (:func:`highpass`, :func:`resample`,
:func:`robust_zscore` / :func:`zscore_stats`, :func:`window`); :func:`preprocess` runs
the chain on an in-memory recording and :func:`iter_windows` runs the same chain on a
long recording (an hours-long file, a ``numpy.memmap``) in batches of windows, with the
z-score statistics computed once for the whole recording. ``preprocess`` is
``iter_windows`` with a single batch, so the two give the same windows.

Units: ``fs`` and ``target_fs`` in Hz, durations in seconds, signal in any unit (mV for
ECG); the output of the z-score is unitless (robust standard deviations).

The steps live in :mod:`ecgfast.data.filters`, the windowing in
:mod:`ecgfast.data.windowing`; this module re-exports both under the names it always had.
"""

from ecgfast.data.filters import (  # noqa: F401 (private names re-exported as before)
    DEFAULT_HIGHPASS_HZ,
    DEFAULT_TARGET_FS,
    DEFAULT_WINDOW_SECONDS,
    _check_finite,
    _check_stats,
    check_fs,
    check_signal,
    highpass,
    resample,
    resample_ratio,
    robust_zscore,
    zscore_stats,
)
from ecgfast.data.windowing import (  # noqa: F401
    FLAT_STD_THRESHOLD,
    Preprocessing,
    Windows,
    _batches,
    _Chain,
    _windowing_error,
    is_flat,
    iter_windows,
    preprocess,
    preprocess_subject,
    window,
    window_geometry,
)

__all__ = [
    "DEFAULT_HIGHPASS_HZ",
    "DEFAULT_TARGET_FS",
    "DEFAULT_WINDOW_SECONDS",
    "FLAT_STD_THRESHOLD",
    "Preprocessing",
    "Windows",
    "check_fs",
    "check_signal",
    "highpass",
    "is_flat",
    "iter_windows",
    "preprocess",
    "preprocess_subject",
    "resample",
    "resample_ratio",
    "robust_zscore",
    "window",
    "window_geometry",
    "zscore_stats",
]
