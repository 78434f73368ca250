"""Heart-rate and heart-rate-variability features of short ECG windows: the baseline every
learnt embedding is compared with.

R peaks come from sleepecg's detector (:func:`sleepecg.detect_heartbeats`: Pan & Tompkins
with a 5-30 Hz zero-phase band-pass, adaptive thresholds and search-back, written in C),
run on each window on its own. From the RR intervals of a window (seconds between
consecutive R peaks) :func:`rr_features` computes, in this order (:data:`FEATURES`):

- ``n_beats``: R peaks found in the window;
- ``mean_rr_ms``, ``median_rr_ms``, ``min_rr_ms``, ``max_rr_ms``: the RR intervals;
- ``mean_hr_bpm``, ``min_hr_bpm``, ``max_hr_bpm``, ``sd_hr_bpm``: of the instantaneous
  heart rate 60 / RR (beats per minute; the mean of the rates, not 60 / mean RR);
- ``sdnn_ms``: SD of the RR intervals (ddof 1); ``rmssd_ms``: root mean square of the
  successive differences; ``sdsd_ms``: SD of the successive differences (ddof 1);
- ``pnn50``, ``pnn20``: fraction of successive differences larger than 50 / 20 ms;
- ``cvnn`` = SDNN / mean RR, ``cvsd`` = RMSSD / mean RR;
- ``sd2_ms`` = sqrt(2 SDNN^2 - SDSD^2 / 2) (Poincare plot, along the identity line;
  SD1 = SDSD / sqrt(2) is SDSD rescaled and left out), ``sd1_sd2`` = SD1 / SD2.

Frequency-domain HRV (LF needs about 2 min, HF about 1 min of beats) and non-linear
measures that need hundreds of beats are not defined on a 10 s window, so they are absent.

A window whose detection fails gets NaN features and ``failed = True``, with its reason
counted (never dropped): fewer than :data:`MIN_BEATS` R peaks, or an RR interval outside
:data:`RR_RANGE_S` (a missed or a spurious beat), or a window shorter than
:data:`MIN_SIGNAL_S`, which the detector is not given. What a probe does with such windows is
its choice (:mod:`ecgfast.evaluation` imputes the training fold's medians and adds the
``failed`` indicator as a feature).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FEATURES = ("n_beats", "mean_rr_ms", "median_rr_ms", "min_rr_ms", "max_rr_ms", "mean_hr_bpm",
            "min_hr_bpm", "max_hr_bpm", "sd_hr_bpm", "sdnn_ms", "rmssd_ms", "sdsd_ms", "pnn50",
            "pnn20", "cvnn", "cvsd", "sd2_ms", "sd1_sd2")
#: At least this many R peaks (three successive differences) for a window's features.
MIN_BEATS = 4
#: RR intervals outside this range (30-240 beats/min) mark a failed detection.
RR_RANGE_S = (0.25, 2.0)
#: Shorter signals are not given to the detector: its C code reads a 2 s learning phase
#: whatever the signal's length (sleepecg 0.6.0 corrupts memory on a 1 s window).
MIN_SIGNAL_S = 3.0
DETECTOR = "sleepecg.detect_heartbeats"


def _sleepecg():
    try:
        import sleepecg
    except ImportError as err:  # pragma: no cover - a main dependency
        raise ImportError("HRV features need sleepecg (`pip install sleepecg`), the R-peak "
                          f"detector they use ({err})") from err
    return sleepecg


def detector_version() -> str:
    return f"{DETECTOR} (sleepecg {_sleepecg().__version__})"


def r_peaks(signal: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices (int64, increasing) of the R peaks of one lead ``signal`` (L,); none
    for a flat signal or one with NaN or infinite samples."""
    signal = np.ascontiguousarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"r_peaks: expected one lead (L,), got shape {signal.shape}")
    if signal.size < MIN_SIGNAL_S * fs:
        raise ValueError(f"r_peaks: {signal.size} samples at {fs:g} Hz is shorter than "
                         f"{MIN_SIGNAL_S:g} s, the least the detector reads")
    if signal.size < 2 or not np.all(np.isfinite(signal)) or np.ptp(signal) == 0:
        return np.zeros(0, dtype=np.int64)  # flat or corrupt: no beats (sleepecg refuses it)
    return np.asarray(_sleepecg().detect_heartbeats(signal, float(fs)), dtype=np.int64)


def rr_features(rr_s: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` (float64) of one window's RR intervals ``rr_s`` (seconds,
    at least ``MIN_BEATS - 1`` of them; NaN everywhere otherwise)."""
    rr = np.asarray(rr_s, dtype=np.float64)
    out = np.full(len(FEATURES), np.nan)
    if rr.size < MIN_BEATS - 1:
        return out
    ms = 1000.0 * rr
    hr = 60.0 / rr
    d = np.diff(ms)
    mean = ms.mean()
    sdnn, sdsd = ms.std(ddof=1), d.std(ddof=1)
    rmssd = float(np.sqrt(np.mean(d ** 2)))
    sd2 = float(np.sqrt(max(0.0, 2 * sdnn ** 2 - 0.5 * sdsd ** 2)))
    sd1 = sdsd / np.sqrt(2.0)
    out[:] = (rr.size + 1, mean, np.median(ms), ms.min(), ms.max(), hr.mean(), hr.min(),
              hr.max(), hr.std(ddof=1), sdnn, rmssd, sdsd, np.mean(np.abs(d) > 50.0),
              np.mean(np.abs(d) > 20.0), sdnn / mean, rmssd / mean, sd2,
              sd1 / sd2 if sd2 > 0 else np.nan)
    return out


def _failure(peaks: np.ndarray, fs: float) -> str | None:
    if peaks.size < MIN_BEATS:
        return "too_few_beats"
    rr = np.diff(peaks) / fs
    if rr.min() < RR_RANGE_S[0] or rr.max() > RR_RANGE_S[1]:
        return "implausible_rr"
    return None


@dataclass
class HRVFeatures:
    """Features of N windows.

    ``values``: (N, F) float32, NaN on failed windows (and ``sd1_sd2`` where SD2 = 0);
    ``failed``: (N,) bool; ``reasons``: failure reason -> count; ``names``: the columns.
    """

    values: np.ndarray
    failed: np.ndarray
    reasons: dict = field(default_factory=dict)
    names: tuple = FEATURES
    detector: str = DETECTOR

    def with_indicator(self) -> np.ndarray:
        """(N, F + 1): the features and the ``failed`` indicator (1.0 / 0.0) as the last
        column, the matrix a probe gets."""
        return np.concatenate([self.values, self.failed[:, None].astype(np.float32)], axis=1)

    def summary(self) -> dict:
        return {"detector": self.detector, "features": list(self.names),
                "n_windows": int(self.failed.size), "n_failed": int(self.failed.sum()),
                "reasons": dict(self.reasons)}


def hrv_features(windows, fs: float, *, progress: bool = False) -> HRVFeatures:
    """R peaks and :func:`rr_features` of every window of ``windows`` (N, L) or (N, 1, L)
    (the first lead of multi-lead windows), sampled at ``fs`` Hz."""
    from tqdm.auto import tqdm

    w = np.asarray(windows)
    if w.ndim == 3:
        w = w[:, 0]
    if w.ndim != 2:
        raise ValueError(f"hrv_features: windows must be (N, L) or (N, C, L), got {w.shape}")
    if not fs > 0:
        raise ValueError(f"hrv_features: fs must be > 0, got {fs}")
    values = np.full((w.shape[0], len(FEATURES)), np.nan, dtype=np.float32)
    failed = np.zeros(w.shape[0], dtype=bool)
    reasons: dict[str, int] = {}
    if w.shape[1] < MIN_SIGNAL_S * fs:
        failed[:] = True
        reasons = {f"window_shorter_than_{MIN_SIGNAL_S:g}_s": int(w.shape[0])} if len(w) else {}
        return HRVFeatures(values, failed, reasons, detector=detector_version())
    for i in tqdm(range(w.shape[0]), desc="R peaks", unit="window", disable=not progress):
        peaks = r_peaks(w[i], fs)
        reason = _failure(peaks, fs)
        if reason is None:
            values[i] = rr_features(np.diff(peaks) / fs)
        else:
            failed[i] = True
            reasons[reason] = reasons.get(reason, 0) + 1
    return HRVFeatures(values, failed, reasons, detector=detector_version())
