"""The single steps of the SSL-ECG pre-processing: input checks, the zero-phase
high-pass, polyphase resampling and the robust z-score (scipy.signal).

:mod:`ecgfast.data.windowing` chains them and cuts windows; :mod:`ecgfast.data` exports
the public names of both. Units: ``fs`` and ``target_fs`` in Hz, signal in any unit (mV for ECG).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy import signal as sps

from ecgfast.data.contract import (  # noqa: F401 (the constants' former home)
    DEFAULT_HIGHPASS_HZ,
    DEFAULT_TARGET_FS,
    DEFAULT_WINDOW_SECONDS,
)
from ecgfast.data.errors import ECGDataError

# --------------------------------------------------------------------------- checks


def check_fs(fs, name: str = "fs", source: str = "signal") -> float:
    """Return ``fs`` as a float, or raise :class:`ECGDataError` if missing or not > 0."""
    if fs is None:
        raise ECGDataError(f"{source}: {name} (sampling rate in Hz) is required, got None")
    if isinstance(fs, bool) or not isinstance(fs, (int, float, np.integer, np.floating)):
        raise TypeError(f"{source}: {name} must be a number in Hz, got {type(fs).__name__}")
    fs = float(fs)
    if not (math.isfinite(fs) and fs > 0):
        raise ECGDataError(f"{source}: {name} must be a finite sampling rate > 0 Hz, got {fs!r}")
    return fs


def check_signal(signal, source: str = "signal", *, ndim: int | None = 1) -> np.ndarray:
    """Return ``signal`` as a float64 array after checking rank, size and finiteness.

    Raises :class:`ECGDataError` naming ``source`` for a wrong rank, an empty signal,
    or NaN/Inf samples (with their count and the first index).
    """
    if isinstance(signal, np.memmap):  # keep memmaps lazy: checked chunk by chunk below
        arr = signal
    else:
        try:
            arr = np.asarray(signal)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{source}: cannot convert to a numeric array: {exc}") from None
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{source}: signal must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{source}: signal must be real, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ECGDataError(
            f"{source}: expected a {ndim}-D signal, got shape {arr.shape} ({arr.ndim}-D)"
        )
    if arr.size == 0:
        raise ECGDataError(f"{source}: the signal is empty (0 samples)")
    _check_finite(arr, source)
    return arr if isinstance(arr, np.memmap) else np.asarray(arr, dtype=np.float64)


def _check_finite(arr: np.ndarray, source: str, chunk: int = 1 << 22) -> None:
    flat = arr.reshape(-1)
    n_bad, first = 0, None
    for lo in range(0, flat.size, chunk):
        bad = ~np.isfinite(np.asarray(flat[lo : lo + chunk], dtype=np.float64))
        if bad.any():
            if first is None:
                first = lo + int(np.argmax(bad))
            n_bad += int(bad.sum())
    if n_bad:
        where = np.unravel_index(first, arr.shape) if arr.ndim > 1 else first
        raise ECGDataError(
            f"{source}: {n_bad} NaN/Inf sample(s) out of {arr.size}; the first at index {where}"
        )


# --------------------------------------------------------------------------- steps


def highpass(
    signal, fs: float, cutoff_hz: float = DEFAULT_HIGHPASS_HZ, order: int = 4
) -> np.ndarray:
    """Zero-phase Butterworth high-pass (``scipy.signal.sosfiltfilt``) along the last axis.

    Args:
        signal: (..., n) samples at ``fs``.
        fs: sampling rate in Hz.
        cutoff_hz: -3 dB frequency of one pass in Hz (0.8 Hz in the papers); the
            forward-backward filter has twice the attenuation of a single pass.
        order: Butterworth order of one pass (the zero-phase filter has twice this).

    Returns:
        float64 array of the same shape.
    """
    fs = check_fs(fs)
    x = check_signal(signal, "highpass: signal", ndim=None)
    x = np.asarray(x, dtype=np.float64)
    if not (isinstance(order, (int, np.integer)) and order >= 1):
        raise ValueError(f"highpass: order must be an int >= 1, got {order!r}")
    if not (0 < cutoff_hz < fs / 2):
        raise ValueError(
            f"highpass: cutoff_hz must be in (0, fs/2) = (0, {fs / 2:g}) Hz, got {cutoff_hz!r}"
        )
    sos = sps.butter(order, cutoff_hz, btype="highpass", fs=fs, output="sos")
    padlen = 3 * (2 * len(sos) + 1)
    if x.shape[-1] <= padlen:
        raise ECGDataError(
            f"highpass: signal has {x.shape[-1]} samples; the zero-phase filter needs more "
            f"than {padlen}"
        )
    return sps.sosfiltfilt(sos, x, axis=-1)


def resample_ratio(fs: float, target_fs: float, max_denominator: int = 1000) -> tuple[int, int]:
    """(up, down) with up/down the rational approximation of ``target_fs / fs``."""
    fs = check_fs(fs)
    target_fs = check_fs(target_fs, "target_fs")
    ratio = Fraction(target_fs / fs).limit_denominator(max_denominator)
    if ratio.numerator == 0:
        raise ValueError(f"resample: target_fs/fs = {target_fs}/{fs} is too small to represent")
    return ratio.numerator, ratio.denominator


def resample(signal, fs: float, target_fs: float = DEFAULT_TARGET_FS, *,
             max_denominator: int = 1000, kaiser_beta: float = 5.0) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``) along the last axis.

    The rate ratio ``target_fs / fs`` is approximated by ``up/down`` with
    ``Fraction.limit_denominator(max_denominator)`` (360 -> 256 Hz is exactly 32/45).

    Args:
        signal: (..., n) samples at ``fs`` Hz.
        fs, target_fs: sampling rates in Hz.
        max_denominator, kaiser_beta: the ratio's largest denominator and the beta of
            the anti-aliasing filter's Kaiser window (scipy's default, 5.0).

    Returns:
        float64 array (..., ceil(n * up / down)) at ``target_fs``.
    """
    up, down = resample_ratio(fs, target_fs, max_denominator)
    x = np.asarray(check_signal(signal, "resample: signal", ndim=None), dtype=np.float64)
    return resample_poly(x, up, down, kaiser_beta)


def resample_poly(x: np.ndarray, up: int, down: int, kaiser_beta: float = 5.0) -> np.ndarray:
    """``x`` (float64, (..., n)) resampled by ``up / down`` along the last axis (a copy
    when they are equal), the polyphase filter windowed by Kaiser(``kaiser_beta``)."""
    if up == down:
        return x.copy()
    return sps.resample_poly(x, up, down, axis=-1, window=("kaiser", float(kaiser_beta)))


def zscore_stats(signal, central: float = 0.95, *, source: str = "signal") -> tuple[float, float]:
    """Mean and std of the central ``central`` fraction of the samples, by value.

    The SSL-ECG code's per-person normalisation: sort the samples, drop the lowest and
    the highest ``(1 - central) / 2`` (2.5 % each for 0.95), take mean and std of the
    rest. Raises :class:`ECGDataError` naming ``source`` if that std is 0 (a flat signal).
    """
    if not (isinstance(central, (int, float)) and 0 < central <= 1):
        raise ValueError(f"zscore_stats: central must be in (0, 1], got {central!r}")
    x = np.asarray(check_signal(signal, source, ndim=None), dtype=np.float64).reshape(-1)
    tail = (1.0 - central) / 2.0
    lo = math.floor(tail * x.size)
    hi = max(lo + 1, x.size - lo)
    core = np.sort(x)[lo:hi] if lo > 0 else x
    mean, std = float(core.mean()), float(core.std())
    if not std > 1e-12 * max(1.0, abs(mean)):
        raise ECGDataError(
            f"{source}: flat signal: the central {central:.0%} of its {x.size} samples all "
            f"equal {mean:g}; cannot z-score"
        )
    return mean, std


def robust_zscore(
    signal, central: float = 0.95, *, stats: tuple[float, float] | None = None
) -> np.ndarray:
    """(signal - mean) / std with :func:`zscore_stats` (or the given ``(mean, std)``).

    Args:
        signal: any shape; one recording (or one person's recordings concatenated).
        central: fraction of samples (by value) the statistics are taken from.
        stats: precomputed ``(mean, std)``, e.g. over a whole long recording.

    Returns:
        float64 array of the same shape, unitless.
    """
    x = np.asarray(check_signal(signal, "robust_zscore: signal", ndim=None), dtype=np.float64)
    if stats is None:
        mean, std = zscore_stats(x, central, source="robust_zscore: signal")
    else:
        mean, std = _check_stats(stats)
    return (x - mean) / std


def _check_stats(stats) -> tuple[float, float]:
    try:
        mean, std = (float(v) for v in stats)
    except (TypeError, ValueError):
        raise ValueError(f"stats must be a (mean, std) pair of numbers, got {stats!r}") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"stats must be finite with std > 0, got (mean={mean}, std={std})")
    return mean, std
