"""Readers for real single-lead ECG recordings: ``.npy``, ``.csv`` and WFDB records.

:func:`read_recording` dispatches on the file suffix and returns a :class:`Recording`
(one lead, float64, with its sampling rate). Every problem raises
:class:`~ecgfast.data.errors.ECGDataError` (a ``ValueError``) whose message names the
file and says what is wrong: missing file, unknown suffix, missing or non-positive
``fs`` (npy/csv, which do not store it), empty file, NaN/Inf samples (with their count
and first index), wrong rank, unknown lead, junk rows in a CSV (with the line number).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgfast.data.errors import ECGDataError
from ecgfast.data.npyfile import read_npy
from ecgfast.data.preprocessing import check_fs

SUFFIXES = (".npy", ".csv", ".hea", ".dat")

#: What wfdb raises for malformed headers or signal files.
_WFDB_ERRORS = (ValueError, OSError, IndexError, KeyError, TypeError, AttributeError, EOFError)


@dataclass
class Recording:
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

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.signal.shape[0] / self.fs

    def __len__(self) -> int:
        return int(self.signal.shape[0])


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
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"read_recording: path must be a str or PathLike, got {type(path)}")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".hea", ".dat") or (not p.exists() and Path(f"{p}.hea").exists()):
        return _read_wfdb(p.with_suffix("") if suffix in (".hea", ".dat") else p, fs, column)
    if not p.exists():
        raise ECGDataError(f"{p}: file not found")
    if p.is_dir():
        raise ECGDataError(f"{p}: is a directory, expected a recording file")
    if suffix == ".npy":
        return _read_npy(p, fs, column)
    if suffix == ".csv":
        return _read_csv(p, fs, column)
    raise ECGDataError(
        f"{p}: unknown file type {suffix or '(no suffix)'!r}; supported: "
        f"{', '.join(SUFFIXES)} or a WFDB record name"
    )


def _check_samples(signal: np.ndarray, path: Path) -> np.ndarray:
    if signal.size == 0:
        raise ECGDataError(f"{path}: no samples (empty recording)")
    bad = ~np.isfinite(signal)
    if bad.any():
        raise ECGDataError(
            f"{path}: {int(bad.sum())} NaN/Inf sample(s) out of {signal.size}; "
            f"the first at sample {int(np.argmax(bad))}"
        )
    return signal


def _need_fs(fs, path: Path) -> float:
    if fs is None:
        raise ECGDataError(
            f"{path}: the sampling rate is not stored in {path.suffix} files; pass fs (Hz)"
        )
    return check_fs(fs, "fs", str(path))


def _read_npy(path: Path, fs, column) -> Recording:
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
    lead = None
    if arr.ndim == 2 and 1 in arr.shape and column in (None, 0):
        arr = arr.reshape(-1)
    if arr.ndim == 2:
        if column is None:
            raise ECGDataError(
                f"{path}: 2-D array of shape {arr.shape}; pass column=<lead index> to choose "
                "a lead (leads are along the shorter axis)"
            )
        if isinstance(column, bool) or not isinstance(column, (int, np.integer)):
            raise TypeError(f"{path}: column for a .npy file must be a lead index (int)")
        if arr.shape[0] == arr.shape[1]:
            raise ECGDataError(
                f"{path}: square array {arr.shape}: cannot tell the lead axis from the time axis"
            )
        lead_axis = int(np.argmin(arr.shape))
        n_leads = arr.shape[lead_axis]
        if not -n_leads <= column < n_leads:
            raise ECGDataError(f"{path}: lead index {column} out of range for {n_leads} leads")
        arr = np.take(arr, column, axis=lead_axis)
        lead = str(column)
    elif arr.ndim != 1:
        raise ECGDataError(
            f"{path}: expected a 1-D signal or a 2-D (leads, samples) array, got shape "
            f"{arr.shape} ({arr.ndim}-D)"
        )
    signal = _check_samples(np.asarray(arr, dtype=np.float64), path)
    return Recording(signal=signal, fs=fs, path=str(path), lead=lead)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, fs, column) -> Recording:
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

    if column is None:
        if n_cols != 1:
            names = header if header is not None else list(range(n_cols))
            raise ECGDataError(
                f"{path}: {n_cols} columns {names}; pass column=<index or name> to choose one"
            )
        index = 0
    elif isinstance(column, str):
        if header is None or column not in header:
            raise ECGDataError(
                f"{path}: no column named {column!r}; header: {header if header else 'none'}"
            )
        index = header.index(column)
    elif isinstance(column, (int, np.integer)) and not isinstance(column, bool):
        if not -n_cols <= column < n_cols:
            raise ECGDataError(f"{path}: column {column} out of range for {n_cols} columns")
        index = int(column) % n_cols
    else:
        raise TypeError(f"{path}: column must be an int index or a str name, got {column!r}")

    values = np.empty(len(numbered), dtype=np.float64)
    for k, (line_no, line) in enumerate(numbered):
        row = split(line)
        if len(row) != n_cols:
            raise ECGDataError(
                f"{path}: line {line_no} has {len(row)} fields, expected {n_cols}: {line!r}"
            )
        try:
            values[k] = float(row[index])
        except ValueError:
            raise ECGDataError(
                f"{path}: line {line_no}: non-numeric value {row[index]!r} in column {index}"
            ) from None
    if not np.isfinite(values).all():
        bad = ~np.isfinite(values)
        first_bad = int(np.argmax(bad))
        raise ECGDataError(
            f"{path}: {int(bad.sum())} NaN/Inf sample(s) out of {values.size}; the first at "
            f"sample {first_bad} (line {numbered[first_bad][0]})"
        )
    if header is not None:
        lead = header[index]
    else:
        lead = None if n_cols == 1 else str(index)
    return Recording(signal=values, fs=fs, path=str(path), lead=lead)


def _read_wfdb(record: Path, fs, column) -> Recording:
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
    names = list(header.sig_name or [])
    if not names:
        raise ECGDataError(f"{hea}: the record has no signals")
    if column is None:
        channel = 0
    elif isinstance(column, str):
        if column not in names:
            raise ECGDataError(f"{hea}: no signal named {column!r}; signals: {names}")
        channel = names.index(column)
    elif isinstance(column, (int, np.integer)) and not isinstance(column, bool):
        if not -len(names) <= column < len(names):
            raise ECGDataError(f"{hea}: signal index {column} out of range for {len(names)}")
        channel = int(column) % len(names)
    else:
        raise TypeError(f"{hea}: column must be an int index or a str name, got {column!r}")
    header_fs = float(header.fs)
    if not (math.isfinite(header_fs) and header_fs > 0):
        raise ECGDataError(f"{hea}: header sampling rate must be > 0 Hz, got {header.fs!r}")
    if fs is not None and not math.isclose(check_fs(fs, "fs", str(hea)), header_fs):
        raise ECGDataError(f"{hea}: fs={fs} Hz was given but the header says {header_fs} Hz")
    if not header.sig_len:
        raise ECGDataError(f"{hea}: the record has no samples (sig_len = {header.sig_len})")
    try:
        rec = wfdb.rdrecord(str(record), channels=[channel], physical=True)
    except _WFDB_ERRORS as exc:
        raise ECGDataError(f"{hea}: cannot read the signal file(s): {exc}") from None
    signal = np.asarray(rec.p_signal, dtype=np.float64).reshape(-1)
    _check_samples(signal, hea)
    return Recording(signal=signal, fs=header_fs, path=str(hea), lead=names[channel])
