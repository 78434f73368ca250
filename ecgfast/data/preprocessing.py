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
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import signal as sps

from ecgfast.data.errors import ECGDataError

#: Flat-line (lead off, saturation) threshold. A window is flat, and dropped, when the
#: standard deviation of its sample-to-sample difference after the robust z-score (in
#: units of the recording's robust std per sample at 256 Hz; scaled by 256 / fs at other
#: rates) is below this. ECG windows are far above it (about 0.3-0.5: the QRS slopes).
#: The difference, not the plain std, because the high-pass turns the edges of a flat
#: stretch into slow multi-second transients that a plain std would count as signal.
FLAT_STD_THRESHOLD = 0.02

#: The papers' pre-processing constants.
DEFAULT_HIGHPASS_HZ = 0.8
DEFAULT_TARGET_FS = 256.0
DEFAULT_WINDOW_SECONDS = 10.0


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


def resample(signal, fs: float, target_fs: float = DEFAULT_TARGET_FS) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``) along the last axis.

    The rate ratio ``target_fs / fs`` is approximated by ``up/down`` with
    ``Fraction.limit_denominator(1000)`` (360 -> 256 Hz is exactly 32/45).

    Args:
        signal: (..., n) samples at ``fs`` Hz.
        fs, target_fs: sampling rates in Hz.

    Returns:
        float64 array (..., ceil(n * up / down)) at ``target_fs``.
    """
    up, down = resample_ratio(fs, target_fs)
    x = np.asarray(check_signal(signal, "resample: signal", ndim=None), dtype=np.float64)
    if up == down:
        return x.copy()
    return sps.resample_poly(x, up, down, axis=-1)


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


def window_geometry(
    n_samples: int, fs: float, window_seconds: float, overlap: float
) -> tuple[int, int, int]:
    """(window length, hop, number of windows) in samples for a signal of ``n_samples``."""
    fs = check_fs(fs)
    if not (isinstance(window_seconds, (int, float)) and window_seconds > 0):
        raise ValueError(f"window_seconds must be > 0 seconds, got {window_seconds!r}")
    if not (isinstance(overlap, (int, float)) and 0 <= overlap < 1):
        raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
    length = round(window_seconds * fs)
    if length < 1:
        raise ValueError(f"window_seconds={window_seconds} at fs={fs} Hz is less than one sample")
    hop = max(1, round(length * (1.0 - overlap)))
    n_windows = 0 if n_samples < length else (n_samples - length) // hop + 1
    return length, hop, n_windows


def window(
    signal,
    fs: float = DEFAULT_TARGET_FS,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    overlap: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a 1-D signal into windows of ``window_seconds`` with fractional ``overlap``.

    Args:
        signal: (n,) samples at ``fs`` Hz.
        window_seconds: window length in seconds; ``round(window_seconds * fs)`` samples.
        overlap: fraction of a window shared by consecutive windows, in [0, 1);
            the hop is ``round(length * (1 - overlap))`` samples. A tail shorter than a
            window is dropped.

    Returns:
        windows: (n_windows, length) float32.
        starts_s: (n_windows,) float64, start time of each window in seconds.
    """
    x = check_signal(signal, "window: signal")
    length, hop, n_windows = window_geometry(x.shape[0], fs, window_seconds, overlap)
    if n_windows == 0:
        raise ECGDataError(
            f"window: signal has {x.shape[0]} samples ({x.shape[0] / fs:g} s), shorter than "
            f"one window of {length} samples ({window_seconds:g} s at {fs:g} Hz)"
        )
    view = np.lib.stride_tricks.sliding_window_view(x, length)[::hop][:n_windows]
    starts_s = np.arange(n_windows, dtype=np.float64) * hop / float(fs)
    return view.astype(np.float32), starts_s


# --------------------------------------------------------------------------- pipeline


def is_flat(windows: np.ndarray, fs: float = DEFAULT_TARGET_FS) -> np.ndarray:
    """(n_windows,) bool: which z-scored (n_windows, length) windows at ``fs`` Hz are flat
    lines (see :data:`FLAT_STD_THRESHOLD`)."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] < 2:
        raise ValueError(f"is_flat: windows must be (n_windows, length >= 2), got {w.shape}")
    threshold = FLAT_STD_THRESHOLD * DEFAULT_TARGET_FS / check_fs(fs)
    return np.diff(w, axis=1).std(axis=1) < threshold


@dataclass
class Windows:
    """Pre-processed windows of one recording (or one batch of a long recording).

    Attributes:
        windows: (n_windows, length) float32, z-scored (unitless); length = 2560 for
            10 s at 256 Hz.
        starts_s: (n_windows,) float64, start of each window in seconds from the start
            of the recording (at ``fs``).
        n_skipped_flat: number of flat-line windows dropped (see :func:`is_flat`);
            their starts are not in ``starts_s``.
        fs: sampling rate of ``windows`` in Hz.
        source: the file or name the windows came from.
    """

    windows: np.ndarray
    starts_s: np.ndarray
    n_skipped_flat: int
    fs: float
    source: str = "signal"

    def __len__(self) -> int:
        return int(self.windows.shape[0])


class _Chain:
    """Highpass + resample of any span of a long recording, in target-rate samples.

    Spans are computed from a raw segment padded by ``pad_seconds`` on each side and
    aligned so that the polyphase resampler's output grid matches the whole-signal one;
    the pad absorbs the filters' edge effects.
    """

    def __init__(self, signal, fs, target_fs, highpass_hz, pad_seconds, source):
        self.signal = signal
        self.fs = fs
        self.target_fs = target_fs
        self.highpass_hz = highpass_hz
        self.source = source
        self.up, self.down = resample_ratio(fs, target_fs)
        self.n_raw = int(signal.shape[0])
        self.n_target = -(-self.n_raw * self.up // self.down)
        self.pad = math.ceil(pad_seconds * target_fs)

    def span(self, a: int, b: int) -> np.ndarray:
        """Target-rate samples [a, b) after highpass and resample, float64."""
        up, down = self.up, self.down
        lo = max(0, ((a - self.pad) // up) * up)
        hi = -(-(b + self.pad) // up) * up
        lo_raw, hi_raw = lo // up * down, min(self.n_raw, hi // up * down)
        seg = np.asarray(self.signal[lo_raw:hi_raw], dtype=np.float64)
        try:
            seg = highpass(seg, self.fs, self.highpass_hz)
        except ECGDataError as exc:
            raise ECGDataError(f"{self.source}: {exc}") from None
        if up != down:
            seg = sps.resample_poly(seg, up, down)
        return seg[a - lo : b - lo]


def _windowing_error(source, n_raw, fs, n_target, target_fs, length, window_seconds):
    return ECGDataError(
        f"{source}: recording is shorter than one window: {n_raw} samples at {fs:g} Hz "
        f"({n_raw / fs:.3f} s) -> {n_target} samples at {target_fs:g} Hz, but one window "
        f"is {length} samples ({window_seconds:g} s)"
    )


def iter_windows(
    signal,
    fs: float,
    *,
    target_fs: float = DEFAULT_TARGET_FS,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    overlap: float = 0.0,
    batch_windows: int = 256,
    stats: tuple[float, float] | None = None,
    central: float = 0.95,
    highpass_hz: float = DEFAULT_HIGHPASS_HZ,
    pad_seconds: float = 20.0,
    chunk_seconds: float = 3600.0,
    source: str = "signal",
) -> Iterator[Windows]:
    """Pre-process a (long) recording batch by batch; yields :class:`Windows`.

    Runs highpass -> resample -> robust z-score -> window -> drop flat windows on spans
    of ``batch_windows`` windows (plus ``pad_seconds`` of context each side), so memory
    stays bounded by the batch size whatever the recording length; ``signal`` may be a
    ``numpy.memmap``. The z-score ``stats`` are computed once for the whole recording
    (a first pass in ``chunk_seconds`` chunks that keeps the filtered signal, 8 bytes
    per output sample) unless given.

    Args:
        signal: (n,) raw samples at ``fs`` Hz (any unit, e.g. mV).
        fs: sampling rate in Hz; required.
        target_fs, window_seconds, overlap: output rate (Hz), window length (s) and
            fractional overlap in [0, 1).
        batch_windows: windows per yielded batch (before dropping flat ones).
        stats: ``(mean, std)`` of the filtered, resampled recording; computed if None.
        central: fraction of samples used for the statistics (0.95 in SSL-ECG).
        highpass_hz: high-pass cut-off in Hz.
        source: name of the file, used in error messages.

    Returns:
        An iterator of :class:`Windows` with ``starts_s`` relative to the start of the
        recording; the sum of ``n_skipped_flat`` over batches is the recording's count.
        Arguments are checked, and the statistics computed, when this is called.
    """
    fs = check_fs(fs, "fs", source)
    target_fs = check_fs(target_fs, "target_fs", source)
    if not (isinstance(batch_windows, (int, np.integer)) and batch_windows >= 1):
        raise ValueError(f"{source}: batch_windows must be an int >= 1, got {batch_windows!r}")
    x = check_signal(signal, source)
    chain = _Chain(x, fs, target_fs, highpass_hz, pad_seconds, source)
    length, hop, n_windows = window_geometry(chain.n_target, target_fs, window_seconds, overlap)
    if n_windows == 0:
        raise _windowing_error(
            source, chain.n_raw, fs, chain.n_target, target_fs, length, window_seconds
        )

    if not chunk_seconds > 0:
        raise ValueError(f"{source}: chunk_seconds must be > 0, got {chunk_seconds!r}")
    chunk = chain.n_target if math.isinf(chunk_seconds) else max(1, int(chunk_seconds * target_fs))
    whole = chain.span(0, chain.n_target) if chain.n_target <= chunk else None
    if stats is None:
        if whole is None:
            spans = range(0, chain.n_target, chunk)
            whole_for_stats = np.concatenate(
                [chain.span(a, min(a + chunk, chain.n_target)) for a in spans]
            )
        else:
            whole_for_stats = whole
        stats = zscore_stats(whole_for_stats, central, source=source)
        del whole_for_stats
    mean, std = _check_stats(stats)
    # Everything above runs (and raises) at the call; the batches are produced lazily.
    return _batches(chain, whole, mean, std, length, hop, n_windows, batch_windows)


def _batches(chain, whole, mean, std, length, hop, n_windows, batch_windows) -> Iterator[Windows]:
    target_fs, source = chain.target_fs, chain.source
    for k0 in range(0, n_windows, batch_windows):
        k1 = min(n_windows, k0 + batch_windows)
        a, b = k0 * hop, (k1 - 1) * hop + length
        z = (whole[a:b] if whole is not None else chain.span(a, b)) - mean
        z /= std
        view = np.lib.stride_tricks.sliding_window_view(z, length)[::hop][: k1 - k0]
        keep = ~is_flat(view, target_fs)
        starts_s = np.arange(k0, k1, dtype=np.float64) * hop / target_fs
        yield Windows(
            windows=view[keep].astype(np.float32),
            starts_s=starts_s[keep],
            n_skipped_flat=int((~keep).sum()),
            fs=target_fs,
            source=source,
        )


def preprocess(
    signal,
    fs: float,
    *,
    target_fs: float = DEFAULT_TARGET_FS,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    overlap: float = 0.0,
    source: str = "signal",
    stats: tuple[float, float] | None = None,
    central: float = 0.95,
    highpass_hz: float = DEFAULT_HIGHPASS_HZ,
) -> Windows:
    """The full SSL-ECG pre-processing of one recording, in memory.

    highpass (``highpass_hz``, zero phase) -> resample to ``target_fs`` -> robust
    z-score (``stats`` or the recording's own central-95 % mean/std) -> windows of
    ``window_seconds`` with ``overlap`` -> flat-line windows dropped and counted.

    Args:
        signal: (n,) raw samples at ``fs`` Hz (mV or any unit).
        fs: sampling rate in Hz; required, > 0.
        source: the file name, used in error messages.

    Returns:
        :class:`Windows`: (n_windows, round(window_seconds * target_fs)) float32.

    Raises:
        ECGDataError: missing/non-positive ``fs``, NaN/Inf samples, a recording shorter
            than one window, a flat recording; the message names ``source``.
    """
    batches = list(
        iter_windows(
            signal,
            fs,
            target_fs=target_fs,
            window_seconds=window_seconds,
            overlap=overlap,
            batch_windows=np.iinfo(np.int64).max,
            stats=stats,
            central=central,
            highpass_hz=highpass_hz,
            chunk_seconds=math.inf,
            source=source,
        )
    )
    (only,) = batches
    return only
