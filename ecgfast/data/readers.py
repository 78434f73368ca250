"""Readers for real ECG recordings: ``.npy``, ``.csv``, WFDB records, EDF/EDF+/BDF and
TMSi Poly5 files.

:func:`read_leads` returns a :class:`MultiLeadRecording` ((leads, n) float64 with the
lead names, units and sampling rate); :func:`read_recording` returns one lead as a
:class:`Recording` through the same code; :func:`read_segments` returns every contiguous
segment of a file (several for an EDF+D file with gaps, which the other two refuse).
All dispatch on the file suffix through :data:`READERS`. Every problem raises
:class:`~ecgfast.data.errors.ECGDataError` (a ``ValueError``) whose message names the
file and says what is wrong: missing file, unknown suffix, missing or non-positive ``fs``
(npy/csv, which do not store it), empty file, NaN/Inf samples (with their count and first
index), wrong rank, unknown, ambiguous or missing leads (with the leads the file has),
leads at different rates (with the rates), junk rows in a CSV (with the line number).

Lead names: WFDB signal names from the header; EDF/BDF signal labels (matched exactly,
else ignoring case or by a part of the label: ``ECG`` finds ``ECG ECG``); Poly5 channel
descriptions (with no choice, the one naming an ECG); CSV header names, else ``"0"``,
``"1"``, ...; ``.npy`` arrays ``"0"`` ... ``"C-1"`` along the shorter axis. Rates: every
signal at its own (WFDB samples per frame, EDF samples per record); units: voltages in
mV (see :mod:`ecgfast.data.leads`).

Adding a format: write ``read_x(path: Path, fs, wanted) -> list[Leads]`` (one
:class:`~ecgfast.data.leads.Leads` per contiguous segment, built with the helpers of
:mod:`ecgfast.data.leads`) and add its lower-case suffix(es) to :data:`READERS`; if its
files carry their own sampling rate, add the suffix to :data:`SELF_DESCRIBING` too, so
that folders given to ``ecgfast prepare`` pick them up.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ecgfast.data import poly5
from ecgfast.data.edf import read_edf
from ecgfast.data.errors import ECGDataError
from ecgfast.data.filters import check_fs
from ecgfast.data.leads import (
    Leads,
    MultiLeadRecording,
    Recording,
    check_samples,
    select,
)
from ecgfast.data.npyfile import read_npy
from ecgfast.data.wfdbfile import read_wfdb

WFDB_SUFFIXES = (".hea", ".dat")


def _wanted(leads, caller: str):
    if isinstance(leads, str):
        return "all" if leads == "all" else [leads]
    if isinstance(leads, Sequence) and len(leads) > 0:
        return list(leads)
    raise TypeError(f"{caller}: leads must be 'all' or a non-empty sequence, got {leads!r}")


def _multi(got: Leads) -> MultiLeadRecording:
    return MultiLeadRecording(got.signal, got.fs, got.path, tuple(got.names),
                              tuple(got.units), got.start_s, got.annotations)


def read_leads(
    path: str | os.PathLike, fs: float | None = None, *, leads: str | Sequence[str | int] = "all"
) -> MultiLeadRecording:
    """Read several leads of an ECG recording.

    Args:
        path: a ``.npy`` file ((C, n) or (n, C), leads along the shorter axis; or 1-D),
            a ``.csv`` file (one column per lead), a WFDB record (its ``.hea`` or
            ``.dat`` file, or the record name without extension), or an EDF/EDF+/BDF
            file (``.edf``, ``.bdf``, any case).
        fs: sampling rate in Hz. Required for ``.npy`` and ``.csv``; WFDB and EDF files
            store it, and a given ``fs`` must agree with it.
        leads: ``"all"`` (every lead, in file order) or a sequence of lead names (str)
            and/or indices (int), returned in the order asked. The leads must share one
            sampling rate.

    Returns:
        :class:`MultiLeadRecording` with a (len(leads), n) float64 signal.

    Raises:
        ECGDataError: naming the file; for requested leads the file lacks, naming the
            missing leads and the leads the file has; for leads at different rates,
            naming the rates; for an EDF+D file with gaps, pointing to
            :func:`read_segments`.
    """
    return _multi(_one(_read(path, fs, _wanted(leads, "read_leads"), "read_leads")))


def read_recording(
    path: str | os.PathLike, fs: float | None = None, *, column: int | str | None = None
) -> Recording:
    """Read one lead of an ECG recording, at the lead's own sampling rate.

    Args:
        path: a ``.npy`` file, a ``.csv`` file, a WFDB record (its ``.hea`` or ``.dat``
            file, or the record name without extension), or an EDF/BDF file.
        fs: sampling rate in Hz. Required for ``.npy`` and ``.csv``; WFDB and EDF files
            store it, and a given ``fs`` must agree with it.
        column: which lead: for ``.npy`` (n_leads, n) or (n, n_leads) arrays, the lead
            index (along the shorter axis); for ``.csv``, the column index or header
            name; for WFDB, the signal index or name (default: the first signal); for
            EDF/BDF, the label (exact, or a unique match ignoring case / by part of it)
            or the index among the ordinary signals (needed when there are several).

    Returns:
        :class:`Recording` with a (n,) float64 signal.
    """
    got = _one(_read(path, fs, None if column is None else [column], "read_recording"))
    lead = got.names[0] if got.named else None
    return Recording(got.signal[0], got.fs, got.path, lead, (got.units or [None])[0],
                     got.start_s, got.annotations)


def read_segments(
    path: str | os.PathLike, fs: float | None = None, *, leads: str | Sequence[str | int] = "all"
) -> list[MultiLeadRecording]:
    """Every contiguous segment of a recording, as :func:`read_leads` reads it: one for
    most files; for an EDF+D/BDF+D file, one per run of data records without a gap, each
    with its ``start_s`` (seconds after the file's start) and the file's annotations.
    Segments are never joined."""
    return [_multi(got) for got in _read(path, fs, _wanted(leads, "read_segments"),
                                         "read_segments")]


def _one(segments: list[Leads]) -> Leads:
    if len(segments) == 1:
        return segments[0]
    starts = ", ".join(f"{s.start_s:g} s ({s.signal.shape[1] / s.fs:g} s long)"
                       for s in segments[:6])
    raise ECGDataError(
        f"{segments[0].path}: discontinuous recording (EDF+D) of {len(segments)} segments "
        f"separated by gaps, starting at {starts}{' ...' if len(segments) > 6 else ''}; "
        "read them with read_segments(), or `ecgfast prepare`, which windows each segment "
        "on its own (segments are never joined)")


def _read(path, fs, wanted, caller: str) -> list[Leads]:
    """Dispatch on the suffix. ``wanted``: "all", a list of names/indices, or None (one
    lead: the only one, WFDB's first, else ask for a choice)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{caller}: path must be a str or PathLike, got {type(path)}")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in WFDB_SUFFIXES or (not p.exists() and Path(f"{p}.hea").exists()):
        return read_wfdb(p.with_suffix("") if suffix in WFDB_SUFFIXES else p, fs, wanted)
    if not p.exists():
        raise ECGDataError(f"{p}: file not found")
    if p.is_dir():
        raise ECGDataError(f"{p}: is a directory, expected a recording file")
    reader = READERS.get(suffix)
    if reader is None:
        raise ECGDataError(
            f"{p}: unknown file type {suffix or '(no suffix)'!r}; supported: "
            f"{', '.join(SUFFIXES)} or a WFDB record name"
        )
    return reader(p, fs, wanted)


def _need_fs(fs, path: Path) -> float:
    if fs is None:
        raise ECGDataError(
            f"{path}: the sampling rate is not stored in {path.suffix} files; pass fs (Hz)"
        )
    return check_fs(fs, "fs", str(path))


def _read_npy(path: Path, fs, wanted) -> list[Leads]:
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
    rows = select(wanted, names, "lead", path, ask)
    signal = np.asarray(arr[rows], dtype=np.float64)
    picked = [names[r] for r in rows]
    return [Leads(check_samples(signal, path, picked), fs, str(path), picked, named)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, fs, wanted) -> list[Leads]:
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
    rows = select(wanted, names, "column", path, ask)

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
    check_samples(values, path, picked, lines=[n for n, _ in numbered])
    named = header is not None or n_cols > 1
    return [Leads(values, fs, str(path), picked, named)]


#: File suffix (lower case) -> reader(path, fs, wanted) -> list[Leads]; WFDB records
#: (``.hea``/``.dat`` or a record name) are resolved before this table is consulted.
READERS: dict[str, Callable[[Path, float | None, object], list[Leads]]] = {
    ".npy": _read_npy,
    ".csv": _read_csv,
    ".edf": read_edf,
    ".bdf": read_edf,
    **dict.fromkeys(poly5.SUFFIXES, poly5.read_leads),  # TMSi Poly5 (.S00, .Poly5)
}
#: Suffixes of files that store their own sampling rate: what ``ecgfast prepare`` finds
#: in folders (besides WFDB ``.hea`` records).
SELF_DESCRIBING = (".edf", ".bdf", *poly5.SUFFIXES)
SUFFIXES = (*READERS, *WFDB_SUFFIXES)
