"""Readers for real ECG recordings: ``.npy``, ``.csv`` and WFDB records, one lead or many.

:func:`read_leads` returns a :class:`MultiLeadRecording` ((leads, n) float64 with the
lead names and sampling rate); :func:`read_recording` returns one lead as a
:class:`Recording` through the same code. Both dispatch on the file suffix. Every problem
raises :class:`~ecgfast.data.errors.ECGDataError` (a ``ValueError``) whose message names
the file and says what is wrong: missing file, unknown suffix, missing or non-positive
``fs`` (npy/csv, which do not store it), empty file, NaN/Inf samples (with their count
and first index), wrong rank, unknown or missing leads (with the leads the file has),
junk rows in a CSV (with the line number).

Lead names: WFDB signal names from the header; CSV header names, else ``"0"``,
``"1"``, ...; ``.npy`` arrays ``"0"`` ... ``"C-1"`` along the shorter axis.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgfast.data import poly5
from ecgfast.data.errors import ECGDataError
from ecgfast.data.filters import check_fs
from ecgfast.data.npyfile import read_npy

SUFFIXES = (".npy", ".csv", ".hea", ".dat", ".S00", ".Poly5")

#: What wfdb raises for malformed headers or signal files.
_WFDB_ERRORS = (ValueError, OSError, IndexError, KeyError, TypeError, AttributeError, EOFError)


class _Samples:
    """Length in samples (the signal's last axis) and in seconds, for the recordings."""

    signal: np.ndarray
    fs: float

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.signal.shape[-1] / self.fs

    def __len__(self) -> int:
        return int(self.signal.shape[-1])


@dataclass
class Recording(_Samples):
    """One lead of one recording.

    Attributes:
        signal: (n,) float64 samples, in the file's unit (mV for WFDB physical signals).
        fs: sampling rate in Hz.
        path: the file read.
        lead: the lead's name (WFDB signal name, CSV header) or index as a string, or
            None for a 1-D array / single unnamed column.
    """

    signal: np.ndarray
    fs: float
    path: str
    lead: str | None = None


@dataclass
class MultiLeadRecording(_Samples):
    """Several leads of one recording, sampled together.

    Attributes:
        signal: (C, n) float64 samples, one row per lead, in the file's unit.
        fs: sampling rate in Hz.
        path: the file read (the ``.hea`` header for WFDB).
        leads: the C lead names, in the order of ``signal``'s rows.
    """

    signal: np.ndarray
    fs: float
    path: str
    leads: tuple[str, ...]


@dataclass
class _Leads:
    """What a format reader returns: the chosen rows, their names, and whether the file
    named them at all (a 1-D array or one unnamed column does not)."""

    signal: np.ndarray
    fs: float
    path: str
    names: list[str]
    named: bool


def read_leads(
    path: str | os.PathLike, fs: float | None = None, *, leads: str | Sequence[str | int] = "all"
) -> MultiLeadRecording:
    """Read several leads of an ECG recording.

    Args:
        path: a ``.npy`` file ((C, n) or (n, C), leads along the shorter axis; or 1-D),
            a ``.csv`` file (one column per lead), or a WFDB record (its ``.hea`` or
            ``.dat`` file, or the record name without extension).
        fs: sampling rate in Hz. Required for ``.npy`` and ``.csv``; for WFDB it is read
            from the header, and a given ``fs`` must agree with it.
        leads: ``"all"`` (every lead, in file order) or a sequence of lead names (str)
            and/or indices (int), returned in the order asked.

    Returns:
        :class:`MultiLeadRecording` with a (len(leads), n) float64 signal.

    Raises:
        ECGDataError: naming the file; for requested leads the file lacks, naming the
            missing leads and the leads the file has.
    """
    if isinstance(leads, str):
        wanted = "all" if leads == "all" else [leads]
    elif isinstance(leads, Sequence) and len(leads) > 0:
        wanted = list(leads)
    else:
        raise TypeError(f"read_leads: leads must be 'all' or a non-empty sequence, got {leads!r}")
    got = _read(path, fs, wanted, "read_leads")
    return MultiLeadRecording(got.signal, got.fs, got.path, tuple(got.names))


def read_recording(
    path: str | os.PathLike, fs: float | None = None, *, column: int | str | None = None
) -> Recording:
    """Read one lead of an ECG recording.

    Args:
        path: a ``.npy`` file, a ``.csv`` file, or a WFDB record (its ``.hea`` or
            ``.dat`` file, or the record name without extension).
        fs: sampling rate in Hz. Required for ``.npy`` and ``.csv``; for WFDB it is read
            from the header, and a given ``fs`` must agree with it.
        column: which lead: for ``.npy`` (n_leads, n) or (n, n_leads) arrays, the lead
            index (along the shorter axis); for ``.csv``, the column index or header
            name; for WFDB, the signal index or name (default: the first signal).

    Returns:
        :class:`Recording` with a (n,) float64 signal.
    """
    got = _read(path, fs, None if column is None else [column], "read_recording")
    lead = got.names[0] if got.named else None
    return Recording(signal=got.signal[0], fs=got.fs, path=got.path, lead=lead)


def _read(path, fs, wanted, caller: str) -> _Leads:
    """Dispatch on the suffix. ``wanted``: "all", a list of names/indices, or None (one
    lead: the only one, WFDB's first, else ask for a choice)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{caller}: path must be a str or PathLike, got {type(path)}")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".hea", ".dat") or (not p.exists() and Path(f"{p}.hea").exists()):
        return _read_wfdb(p.with_suffix("") if suffix in (".hea", ".dat") else p, fs, wanted)
    if not p.exists():
        raise ECGDataError(f"{p}: file not found")
    if p.is_dir():
        raise ECGDataError(f"{p}: is a directory, expected a recording file")
    if suffix == ".npy":
        return _read_npy(p, fs, wanted)
    if suffix == ".csv":
        return _read_csv(p, fs, wanted)
    if suffix in poly5.SUFFIXES:  # TMSi Poly5 (.S00, .Poly5)
        return poly5.read_leads(p, fs, wanted)
    raise ECGDataError(
        f"{p}: unknown file type {suffix or '(no suffix)'!r}; supported: "
        f"{', '.join(SUFFIXES)} or a WFDB record name"
    )


def _select(wanted, names: list[str], kind: str, where, ask: str | None) -> list[int]:
    """Row indices for ``wanted`` among ``names``. ``ask``: the error when ``wanted`` is
    None and there are several leads to choose from (None: take the first)."""
    if wanted is None:
        if len(names) > 1 and ask is not None:
            raise ECGDataError(ask)
        return [0]
    if wanted == "all":
        return list(range(len(names)))
    rows, missing = [], []
    for w in wanted:
        if isinstance(w, str):
            if w in names:
                rows.append(names.index(w))
            else:
                missing.append(w)
        elif isinstance(w, (int, np.integer)) and not isinstance(w, bool):
            if not -len(names) <= w < len(names):
                raise ECGDataError(
                    f"{where}: {kind} index {w} out of range for {len(names)} {kind}s"
                )
            rows.append(int(w) % len(names))
        else:
            raise TypeError(f"{where}: a {kind} must be an int index or a str name, got {w!r}")
    if missing:
        raise ECGDataError(
            f"{where}: no {kind} named {', '.join(map(repr, missing))}; "
            f"the file has {kind}s {names}"
        )
    if len(set(rows)) != len(rows):
        raise ECGDataError(f"{where}: a {kind} is requested twice in {wanted}")
    return rows


def _check_samples(signal: np.ndarray, path: Path, names, lines=None) -> np.ndarray:
    """``signal`` (C, n) after checking it is non-empty and finite; ``lines`` maps a
    sample index to its file line for the message."""
    if signal.size == 0:
        raise ECGDataError(f"{path}: no samples (empty recording)")
    bad = ~np.isfinite(signal)
    if bad.any():
        row, sample = divmod(int(np.argmax(bad)), signal.shape[1])
        where = f" (line {lines[sample]})" if lines is not None else ""
        lead = f" of lead {names[row]!r}" if signal.shape[0] > 1 else ""
        raise ECGDataError(
            f"{path}: {int(bad.sum())} NaN/Inf sample(s) out of {signal.size}; "
            f"the first at sample {sample}{where}{lead}"
        )
    return signal


def _need_fs(fs, path: Path) -> float:
    if fs is None:
        raise ECGDataError(
            f"{path}: the sampling rate is not stored in {path.suffix} files; pass fs (Hz)"
        )
    return check_fs(fs, "fs", str(path))


def _read_npy(path: Path, fs, wanted) -> _Leads:
    fs = _need_fs(fs, path)
    if path.stat().st_size == 0:
        raise ECGDataError(f"{path}: empty file")
    try:
        with open(path, "rb") as f:
            arr = read_npy(f, path.stat().st_size, str(path))
    except OSError as exc:
        raise ECGDataError(f"{path}: not a readable .npy array: {exc}") from None
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ECGDataError(f"{path}: expected a real numeric array, got dtype {arr.dtype}")
    named, shape = True, arr.shape
    if arr.ndim == 1 or (arr.ndim == 2 and 1 in arr.shape):
        arr, named = arr.reshape(1, -1), False
    elif arr.ndim == 2:
        if arr.shape[0] == arr.shape[1]:
            raise ECGDataError(
                f"{path}: square array {arr.shape}: cannot tell the lead axis from the time axis"
            )
        if arr.shape[0] > arr.shape[1]:
            arr = arr.T
    else:
        raise ECGDataError(
            f"{path}: expected a 1-D signal or a 2-D (leads, samples) array, got shape "
            f"{arr.shape} ({arr.ndim}-D)"
        )
    names = [str(i) for i in range(arr.shape[0])]
    ask = (
        f"{path}: 2-D array of shape {shape}; pass column=<lead index> to choose a lead "
        "(leads are along the shorter axis)"
    )
    rows = _select(wanted, names, "lead", path, ask)
    signal = np.asarray(arr[rows], dtype=np.float64)
    picked = [names[r] for r in rows]
    return _Leads(_check_samples(signal, path, picked), fs, str(path), picked, named)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, fs, wanted) -> _Leads:
    fs = _need_fs(fs, path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ECGDataError(f"{path}: not a UTF-8 text file: {exc}") from None
    except OSError as exc:
        raise ECGDataError(f"{path}: cannot read: {exc}") from None
    lines = text.splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise ECGDataError(f"{path}: empty file")
    first = numbered[0][1]
    delimiter = next((d for d in (",", ";", "\t") if d in first), None)

    def split(line: str) -> list[str]:
        if delimiter is None:
            return line.split()
        return [field.strip() for field in next(csv.reader([line], delimiter=delimiter))]

    header = None
    fields = split(first)
    if not all(_is_number(v) for v in fields):
        header = fields
        numbered = numbered[1:]
    n_cols = len(header) if header is not None else len(fields)
    if not numbered:
        raise ECGDataError(f"{path}: empty file (a header row and no samples)")
    names = header if header is not None else [str(i) for i in range(n_cols)]
    ask = f"{path}: {n_cols} columns {names}; pass column=<index or name> to choose one"
    rows = _select(wanted, names, "column", path, ask)

    values = np.empty((len(rows), len(numbered)), dtype=np.float64)
    for k, (line_no, line) in enumerate(numbered):
        row = split(line)
        if len(row) != n_cols:
            raise ECGDataError(
                f"{path}: line {line_no} has {len(row)} fields, expected {n_cols}: {line!r}"
            )
        for j, index in enumerate(rows):
            try:
                values[j, k] = float(row[index])
            except ValueError:
                raise ECGDataError(
                    f"{path}: line {line_no}: non-numeric value {row[index]!r} in column {index}"
                ) from None
    picked = [names[r] for r in rows]
    _check_samples(values, path, picked, lines=[n for n, _ in numbered])
    named = header is not None or n_cols > 1
    return _Leads(values, fs, str(path), picked, named)


def _read_wfdb(record: Path, fs, wanted) -> _Leads:
    import wfdb

    hea = Path(f"{record}.hea")
    if not hea.exists():
        raise ECGDataError(f"{hea}: file not found (WFDB header of record {record})")
    if hea.stat().st_size == 0:
        raise ECGDataError(f"{hea}: empty file")
    try:
        header = wfdb.rdheader(str(record))
    except _WFDB_ERRORS as exc:
        raise ECGDataError(f"{hea}: not a readable WFDB header: {exc}") from None
    names = [str(n) for n in (header.sig_name or [])]
    if not names:
        raise ECGDataError(f"{hea}: the record has no signals")
    rows = _select(wanted, names, "signal", hea, None)
    header_fs = float(header.fs)
    if not (math.isfinite(header_fs) and header_fs > 0):
        raise ECGDataError(f"{hea}: header sampling rate must be > 0 Hz, got {header.fs!r}")
    if fs is not None and not math.isclose(check_fs(fs, "fs", str(hea)), header_fs):
        raise ECGDataError(f"{hea}: fs={fs} Hz was given but the header says {header_fs} Hz")
    if not header.sig_len:
        raise ECGDataError(f"{hea}: the record has no samples (sig_len = {header.sig_len})")
    channels = sorted(set(rows))
    try:
        rec = wfdb.rdrecord(str(record), channels=channels, physical=True)
    except _WFDB_ERRORS as exc:
        raise ECGDataError(f"{hea}: cannot read the signal file(s): {exc}") from None
    p_signal = np.asarray(rec.p_signal, dtype=np.float64)
    if p_signal.ndim != 2 or p_signal.shape[1] != len(channels):
        raise ECGDataError(
            f"{hea}: the signal file holds shape {p_signal.shape}, expected "
            f"(samples, {len(channels)})"
        )
    signal = np.ascontiguousarray(p_signal.T[[channels.index(r) for r in rows]])
    picked = [names[r] for r in rows]
    return _Leads(_check_samples(signal, hea, picked), header_fs, str(hea), picked, True)
