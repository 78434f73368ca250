"""Windows from pre-processed ECG: the whole chain on one recording
(:func:`preprocess`), on a long one in batches (:func:`iter_windows`), and on all the
recordings of one subject with shared z-score statistics (:func:`preprocess_subject`).

The chain is :mod:`ecgfast.data.filters`' highpass -> resample -> robust z-score, then
non-overlapping 10 s windows with flat-line windows dropped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ecgfast.data.contract import (
    DEFAULT_TARGET_FS,
    DEFAULT_WINDOW_SECONDS,
    FLAT_STD_THRESHOLD,
    SUBJECT_CHAIN,
    Preprocessing,
)
from ecgfast.data.errors import ECGDataError
from ecgfast.data.filters import (
    _check_stats,
    check_fs,
    check_signal,
    highpass,
    resample_poly,
    resample_ratio,
    zscore_stats,
)


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


def is_flat(windows: np.ndarray, fs: float = DEFAULT_TARGET_FS,
            threshold: float = FLAT_STD_THRESHOLD) -> np.ndarray:
    """(n_windows,) bool: which z-scored (n_windows, length) windows at ``fs`` Hz are flat
    lines: the std of their sample-to-sample difference is below ``threshold`` (at 256 Hz,
    scaled by 256 / fs; see :data:`~ecgfast.data.contract.FLAT_STD_THRESHOLD`)."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] < 2:
        raise ValueError(f"is_flat: windows must be (n_windows, length >= 2), got {w.shape}")
    return np.diff(w, axis=1).std(axis=1) < threshold * DEFAULT_TARGET_FS / check_fs(fs)


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
    """Highpass + resample (as ``opt``, a :class:`Preprocessing`, says) of any span of a
    long recording, in target-rate samples.

    Spans are computed from a raw segment padded by ``pad_seconds`` on each side and
    aligned so that the polyphase resampler's output grid matches the whole-signal one;
    the pad absorbs the filters' edge effects.
    """

    def __init__(self, signal, fs, opt: Preprocessing, pad_seconds, source):
        self.signal = signal
        self.fs = fs
        self.opt = opt
        self.target_fs = target_fs = check_fs(opt.target_fs, "target_fs", source)
        self.source = source
        self.up, self.down = resample_ratio(fs, target_fs, opt.resample_max_denominator)
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
            seg = highpass(seg, self.fs, self.opt.highpass_hz, self.opt.highpass_order)
        except ECGDataError as exc:
            raise ECGDataError(f"{self.source}: {exc}") from None
        if up != down:
            seg = resample_poly(seg, up, down, self.opt.resample_kaiser_beta)
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
    batch_windows: int = 256,
    stats: tuple[float, float] | None = None,
    pad_seconds: float = 20.0,
    chunk_seconds: float = 3600.0,
    source: str = "signal",
    preprocessing: Preprocessing | None = None,
    **options,
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
        batch_windows: windows per yielded batch (before dropping flat ones).
        stats: ``(mean, std)`` of the filtered, resampled recording; computed if None.
        source: name of the file, used in error messages.
        preprocessing: the chain (a :class:`Preprocessing`; default: the defaults). The
            statistics are the recording's own whatever its ``zscore_scope`` says (a
            recording served alone stands for its subject).
        **options: single settings, fields of :class:`Preprocessing` (``target_fs``,
            ``window_seconds``, ``overlap``, ``central``, ``highpass_hz``, ...), over
            ``preprocessing``.

    Returns:
        An iterator of :class:`Windows` with ``starts_s`` relative to the start of the
        recording; the sum of ``n_skipped_flat`` over batches is the recording's count.
        Arguments are checked, and the statistics computed, when this is called.
    """
    opt = Preprocessing.of(options, source, preprocessing)
    fs = check_fs(fs, "fs", source)
    target_fs = check_fs(opt.target_fs, "target_fs", source)
    if not (isinstance(batch_windows, (int, np.integer)) and batch_windows >= 1):
        raise ValueError(f"{source}: batch_windows must be an int >= 1, got {batch_windows!r}")
    x = check_signal(signal, source)
    chain = _Chain(x, fs, opt, pad_seconds, source)
    length, hop, n_windows = window_geometry(chain.n_target, target_fs, opt.window_seconds,
                                             opt.overlap)
    if n_windows == 0:
        raise _windowing_error(
            source, chain.n_raw, fs, chain.n_target, target_fs, length, opt.window_seconds
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
        stats = zscore_stats(whole_for_stats, opt.central, source=source)
        del whole_for_stats
    mean, std = _check_stats(stats)
    # Everything above runs (and raises) at the call; the batches are produced lazily.
    return _batches(chain, whole, mean, std, length, hop, n_windows, batch_windows)


def _batches(chain, whole, mean, std, length, hop, n_windows, batch_windows) -> Iterator[Windows]:
    for k0 in range(0, n_windows, batch_windows):
        k1 = min(n_windows, k0 + batch_windows)
        a, b = k0 * hop, (k1 - 1) * hop + length
        z = (whole[a:b] if whole is not None else chain.span(a, b)) - mean
        z /= std
        yield _cut(z, k0, k1, length, hop, chain, chain.source)


def _cut(z, k0, k1, length, hop, chain: _Chain, source) -> Windows:
    """Windows k0..k1-1 of a z-scored span that starts at window k0; flat ones dropped."""
    target_fs = chain.target_fs
    view = np.lib.stride_tricks.sliding_window_view(z, length)[::hop][: k1 - k0]
    keep = ~is_flat(view, target_fs, chain.opt.flat_threshold)
    starts_s = np.arange(k0, k1, dtype=np.float64) * hop / target_fs
    return Windows(
        windows=view[keep].astype(np.float32),
        starts_s=starts_s[keep],
        n_skipped_flat=int((~keep).sum()),
        fs=target_fs,
        source=source,
    )


def preprocess(
    signal, fs: float, *, source: str = "signal", stats: tuple[float, float] | None = None,
    **options,
) -> Windows:
    """The full SSL-ECG pre-processing of one recording, in memory.

    highpass (``highpass_hz``, zero phase) -> resample to ``target_fs`` -> robust
    z-score (``stats`` or the recording's own central-95 % mean/std) -> windows of
    ``window_seconds`` with ``overlap`` -> flat-line windows dropped and counted.

    Args:
        signal: (n,) raw samples at ``fs`` Hz (mV or any unit).
        fs: sampling rate in Hz; required, > 0.
        source: the file name, used in error messages.
        **options: ``preprocessing`` (a :class:`Preprocessing`) and single settings over
            it, as for :func:`iter_windows`.

    Returns:
        :class:`Windows`: (n_windows, round(window_seconds * target_fs)) float32.

    Raises:
        ECGDataError: missing/non-positive ``fs``, NaN/Inf samples, a recording shorter
            than one window, a flat recording; the message names ``source``.
    """
    batches = list(
        iter_windows(signal, fs, batch_windows=np.iinfo(np.int64).max, stats=stats,
                     chunk_seconds=math.inf, source=source, **options)
    )
    (only,) = batches
    return only


def preprocess_subject(signals, fs, *, sources=None, source: str = "subject",
                       preprocessing: Preprocessing | None = None, **options) -> list[Windows]:
    """The chain of :func:`preprocess` on every recording of one subject, z-scored with
    statistics shared by the subject (the papers' per-person normalisation).

    Each recording is high-passed and resampled once; ``(mean, std)`` are those of the
    central ``central`` fraction of all the subject's filtered, resampled samples; then
    each recording is z-scored and cut into windows (flat ones dropped and counted).
    A recording shorter than one window gives no windows and does not enter the
    statistics.

    Args:
        signals: sequence of (n_i,) raw recordings at ``fs`` Hz.
        fs: their sampling rate in Hz, or one rate per recording (each is high-passed
            and resampled from its own rate).
        sources: one name per recording for error messages (default
            ``"<source> recording <i>"``).
        source: the subject's name, used in the statistics' error message.
        preprocessing: the chain (default: the defaults with ``zscore_scope="subject"``,
            the only scope this function computes).
        **options: single settings over it, fields of :class:`Preprocessing`.

    Returns:
        One :class:`Windows` per recording, ``starts_s`` relative to its start.

    Raises:
        ECGDataError: NaN/Inf samples (naming the recording), no recording long enough
            for a window, a flat subject.
    """
    opt = Preprocessing.of(options, source, preprocessing or SUBJECT_CHAIN)
    if opt.zscore_scope != "subject":
        raise ValueError(f"{source}: preprocess_subject z-scores per subject; its "
                         f"preprocessing must say zscore_scope='subject', not "
                         f"{opt.zscore_scope!r}")
    target_fs = check_fs(opt.target_fs, "target_fs", source)
    window_seconds, overlap = opt.window_seconds, opt.overlap
    signals = list(signals)
    names = list(sources) if sources is not None else [
        f"{source} recording {i}" for i in range(len(signals))
    ]
    if not signals:
        raise ECGDataError(f"{source}: no recordings")
    rates = list(fs) if np.ndim(fs) else [fs] * len(signals)
    if len(names) != len(signals) or len(rates) != len(signals):
        raise ValueError(f"{source}: {len(signals)} signals but {len(names)} sources and "
                         f"{len(rates)} rates")
    rates = [check_fs(f, "fs", name) for f, name in zip(rates, names)]
    filtered = []
    for x, name, rate in zip(signals, names, rates):
        chain = _Chain(check_signal(x, name), rate, opt, 0.0, name)
        length, hop, n_windows = window_geometry(chain.n_target, target_fs, window_seconds,
                                                 overlap)
        filtered.append(chain.span(0, chain.n_target) if n_windows else None)
    used = [y for y in filtered if y is not None]
    if not used:
        k = max(range(len(signals)), key=lambda i: np.shape(signals[i])[0] / rates[i])
        n_raw = np.shape(signals[k])[0]
        up, down = resample_ratio(rates[k], target_fs, opt.resample_max_denominator)
        raise _windowing_error(
            source, n_raw, rates[k], -(-n_raw * up // down), target_fs, length, window_seconds
        )
    mean, std = zscore_stats(np.concatenate(used), opt.central, source=source)
    out = []
    for y, name in zip(filtered, names):
        if y is None:
            empty = np.empty((0, length), np.float32)
            out.append(Windows(empty, np.empty(0), 0, target_fs, name))
            continue
        _, _, n_windows = window_geometry(y.shape[0], target_fs, window_seconds, overlap)
        out.append(_cut((y - mean) / std, 0, n_windows, length, hop, chain, name))
    return out
