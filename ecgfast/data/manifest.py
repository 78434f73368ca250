"""Manifests: your own recordings and labels as one CSV or TSV table (``docs/manifests.md``).

One row per recording or segment. Columns (names case-insensitive, any order):

- ``path`` (required): a recording in any format :func:`ecgfast.data.read_recording`
  reads (``.npy``, ``.csv``, WFDB ``.hea`` or record name, EDF/BDF, Poly5
  ``.S00``/``.Poly5``), relative to the manifest's folder (or absolute). It may lead
  anywhere, above the manifest's folder too, but must name an existing file (for WFDB,
  its ``.hea``); nothing but the files listed is opened, and only through ecgfast's
  readers (no pickle, no code runs).
- ``subject`` (required): who was recorded; windows are z-scored per subject.
- ``start``, ``end`` (optional): the segment in seconds from the recording's start
  (empty: from the beginning, to the end).
- ``fs`` (optional): the sampling rate of a file without a header (``.npy``, ``.csv``);
  a file with a header must agree with it.
- ``lead`` (optional): the lead's name, or a non-negative integer = its index; empty: the
  file's only lead (WFDB: the first; Poly5: the one whose description names an ECG).
- every other column is a label task. Its non-empty cells are class names: if every one
  of them is a number, the classes are the distinct numbers in increasing order,
  otherwise the distinct texts in code-point order; a window's label is its class's index
  in that order. An empty cell leaves the row unlabelled for that task.

A manifest is never trusted: its size (64 MiB), rows (1,000,000), columns (1,000), cell
length and classes per task (1,000) are bounded, and every error names the manifest, the
row (numbered from 1 after the header, with its line) and the column. The manifest's
SHA-256 is in the provenance of everything built from it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecgfast.data.contract import SUBJECT_CHAIN
from ecgfast.data.errors import ECGDataError

MAX_BYTES = 64 << 20
MAX_ROWS = 1_000_000
MAX_COLUMNS = 1_000
MAX_CELL = 4096
MAX_CLASSES = 1_000
RESERVED = ("path", "subject", "start", "end", "fs", "lead")
SUFFIXES = (".csv", ".tsv")


@dataclass(frozen=True)
class Row:
    """One manifest row, checked: ``number`` counts data rows from 1, ``line`` is its
    line in the file; ``labels`` maps each task to its non-empty cell."""

    number: int
    line: int
    path: Path
    subject: str
    start: float | None
    end: float | None
    fs: float | None
    lead: str | int | None
    labels: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: its rows, label tasks and their classes (in index order)."""

    path: Path
    sha256: str
    rows: tuple[Row, ...]
    tasks: tuple[str, ...]
    classes: dict
    numbering: dict

    def where(self, row: Row, column: str) -> str:
        return f"{self.path}: row {row.number} (line {row.line}), column {column!r}"

    def label(self, row: Row, task: str) -> int:
        """The row's class index for ``task``, -1 when it is unlabelled."""
        cell = row.labels.get(task)
        if cell is None:
            return -1
        return self.classes[task].index(_class_name(cell, self.numbering[task]))


def _head(path: Path, n: int = 1 << 16) -> str:
    with open(path, "rb") as f:
        return f.read(n).decode("utf-8-sig", errors="replace")


def _delimiter(path: Path, first: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    return next((d for d in (",", ";", "\t") if d in first), ",")


def is_manifest(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a manifest: a ``.tsv`` file, or a ``.csv`` file whose first
    line has a column named ``path`` (a recording's CSV holds numbers)."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in SUFFIXES:
        return False
    if p.suffix.lower() == ".tsv":
        return True
    try:
        first = next((line for line in _head(p).splitlines() if line.strip()), "")
    except OSError:
        return False
    return "path" in (c.strip().strip('"').lower() for c in first.split(_delimiter(p, first)))


def _number(text: str, where: str, what: str, *, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ECGDataError(f"{where}: {text!r} is not a number ({what})") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ECGDataError(f"{where}: {text!r} must be a finite number "
                           f"{'> 0' if positive else '>= 0'} ({what})")
    return value


def _class_name(cell: str, numbering: str) -> str:
    return f"{float(cell):g}" if numbering == "numeric" else cell


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _table(path: Path) -> tuple[str, list[str], list[tuple[int, list[str]]]]:
    """(sha256, header, [(line, cells)]) of the manifest file, bounded."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ECGDataError(f"{path}: {size} bytes; a manifest may hold at most {MAX_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        raise ECGDataError(f"{path}: cannot read the manifest: {exc}") from None
    if b"\x00" in data:
        raise ECGDataError(f"{path}: a binary file, not a CSV/TSV manifest")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ECGDataError(f"{path}: not UTF-8 text: {exc}") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(path, first))
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if any(len(c) > MAX_CELL for c in cells):
                raise ECGDataError(f"{path}: line {reader.line_num}: a cell longer than "
                                   f"{MAX_CELL} characters")
            if any(c.strip() for c in cells):
                rows.append((reader.line_num, [c.strip() for c in cells]))
            if len(rows) > MAX_ROWS + 1:
                raise ECGDataError(f"{path}: more than {MAX_ROWS} rows")
    except csv.Error as exc:
        raise ECGDataError(f"{path}: line {reader.line_num}: not readable as CSV: {exc}") from None
    if not rows:
        raise ECGDataError(f"{path}: empty manifest")
    return hashlib.sha256(data).hexdigest(), rows[0][1], rows[1:]


def _columns(path: Path, header: list[str]) -> dict[str, int]:
    if len(header) > MAX_COLUMNS:
        raise ECGDataError(f"{path}: {len(header)} columns; at most {MAX_COLUMNS}")
    names: dict[str, int] = {}
    for i, name in enumerate(header):
        key = name.lower() if name.lower() in RESERVED else name
        if not name:
            raise ECGDataError(f"{path}: column {i + 1} of the header has no name")
        if key in names:
            raise ECGDataError(f"{path}: the header's column {name!r} appears twice")
        names[key] = i
    missing = [c for c in ("path", "subject") if c not in names]
    if missing:
        raise ECGDataError(f"{path}: no column(s) {missing} in the header {header}; a manifest "
                           "needs path and subject")
    return names


def _recording(manifest: Path, cell: str, where: str) -> Path:
    if not cell:
        raise ECGDataError(f"{where}: empty (every row names a recording)")
    p = Path(cell)
    p = p if p.is_absolute() else manifest.parent / p
    if p.is_file() or (p.suffix == "" and Path(f"{p}.hea").is_file()):
        return p
    what = "is a folder, not a recording" if p.is_dir() else "no such file"
    raise ECGDataError(f"{where}: {cell!r}: {what} (paths are relative to {manifest.parent})")


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Parse and check the manifest ``path`` (the recordings are not read yet).

    Raises:
        ECGDataError: naming the manifest, and for a bad cell its row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise ECGDataError(f"{path}: manifest not found")
    sha, header, table = _table(path)
    cols = _columns(path, header)
    tasks = tuple(n for n in cols if n not in RESERVED)
    rows = []
    for number, (line, cells) in enumerate(table, start=1):
        if len(cells) != len(header):
            raise ECGDataError(f"{path}: row {number} (line {line}) has {len(cells)} cells, "
                               f"the header {len(header)}")

        def cell(name: str, cells=cells) -> str:
            return cells[cols[name]] if name in cols else ""

        def where(name: str, number=number, line=line) -> str:
            return f"{path}: row {number} (line {line}), column {name!r}"

        span = {c: _number(cell(c), where(c), "seconds") if cell(c) else None
                for c in ("start", "end")}
        if None not in span.values() and span["end"] <= span["start"]:
            raise ECGDataError(f"{where('end')}: end {span['end']:g} s is not after start "
                               f"{span['start']:g} s")
        if not cell("subject"):
            raise ECGDataError(f"{where('subject')}: empty (every row names its subject)")
        lead = cell("lead") or None
        rows.append(Row(number, line, _recording(path, cell("path"), where("path")),
                        cell("subject"), span["start"], span["end"],
                        _number(cell("fs"), where("fs"), "Hz", positive=True)
                        if cell("fs") else None,
                        int(lead) if lead is not None and lead.isascii() and lead.isdigit() else lead,
                        {t: cells[cols[t]] for t in tasks if cells[cols[t]]}))
    if not rows:
        raise ECGDataError(f"{path}: a header and no rows")
    classes, numbering = {}, {}
    for t in tasks:
        values = {r.labels[t] for r in rows if t in r.labels}
        numbering[t] = "numeric" if values and all(map(_is_number, values)) else "text"
        if numbering[t] == "numeric":
            names = sorted({_class_name(v, "numeric") for v in values}, key=float)
        else:
            names = sorted(values)
        if len(names) > MAX_CLASSES:
            raise ECGDataError(f"{path}: column {t!r} has {len(names)} distinct values; a label "
                               f"task may have at most {MAX_CLASSES} classes")
        classes[t] = tuple(names)
    return Manifest(path, sha, tuple(rows), tasks, classes, numbering)


@dataclass
class ManifestWindows:
    """The pre-processed windows of every row of a manifest, labelled or not.

    The fields a :class:`~ecgfast.data.Cohort` has (windows, subject, session, fs,
    labels, classes, provenance), except that ``labels[task]`` is -1 where the row is
    unlabelled for the task (the window store's convention); :meth:`cohort` gives a
    Cohort of the windows labelled for the tasks asked.
    """

    windows: np.ndarray
    subject: np.ndarray
    session: np.ndarray
    fs: float
    labels: dict
    classes: dict
    provenance: dict

    def cohort(self, tasks=None):
        """A :class:`~ecgfast.data.Cohort` of the windows labelled for every one of
        ``tasks`` (default: all the manifest's tasks); the others are dropped and
        counted in its provenance."""
        from ecgfast.data.cohort import Cohort

        where = self.provenance["manifest"]
        tasks = list(self.labels) if tasks is None else list(tasks)
        unknown = [t for t in tasks if t not in self.labels]
        if unknown or not tasks:
            raise ECGDataError(f"{where}: no label column(s) {unknown or ''}; its label columns "
                               f"are {list(self.labels)}")
        keep = np.ones(len(self.windows), dtype=bool)
        for t in tasks:
            keep &= self.labels[t] >= 0
        if not keep.any():
            raise ECGDataError(f"{where}: no window is labelled for all of {tasks}; choose the "
                               "tasks to use (--tasks)")
        prov = {**self.provenance, "tasks_used": tasks,
                "windows_unlabelled_for_these_tasks": int((~keep).sum())}
        return Cohort(windows=self.windows[keep], subject=self.subject[keep],
                      session=self.session[keep], fs=self.fs,
                      labels={t: self.labels[t][keep] for t in tasks},
                      classes={t: self.classes[t] for t in tasks}, provenance=prov)


def _subject_ids(names: list[str]) -> tuple[dict, dict | None]:
    """name -> int64 id: the names' own integers when all are integers, else their index
    in sorted order (the mapping is then returned for the provenance)."""
    if all(n.isascii() and n.lstrip("-").isdigit() for n in names):
        return {n: int(n) for n in names}, None
    ids = {n: i for i, n in enumerate(sorted(names))}
    return ids, {str(i): n for n, i in ids.items()}


def _segment(m: Manifest, row: Row, default_fs) -> tuple[np.ndarray, float]:
    from ecgfast.data.readers import read_recording

    try:
        rec = read_recording(row.path, fs=row.fs if row.fs is not None else default_fs,
                             column=row.lead)
    except ECGDataError as exc:
        raise ECGDataError(f"{m.where(row, 'path')}: {exc}") from None
    highpass_hz = SUBJECT_CHAIN.highpass_hz
    if rec.fs <= 2 * highpass_hz:
        raise ECGDataError(f"{m.where(row, 'fs' if row.fs is not None else 'path')}: "
                           f"{rec.fs:g} Hz is too low a rate for the {highpass_hz:g} Hz "
                           "high-pass")
    n = rec.signal.shape[0]
    a = 0 if row.start is None else round(row.start * rec.fs)
    b = n if row.end is None else round(row.end * rec.fs)
    for column, value, index in (("start", row.start, a), ("end", row.end, b)):
        if value is not None and index > n:
            raise ECGDataError(f"{m.where(row, column)}: {value:g} s is beyond the recording's "
                               f"{n / rec.fs:g} s ({row.path})")
    return rec.signal[a:b], rec.fs


def manifest_windows(path: str | os.PathLike, *, fs: float | None = None) -> ManifestWindows:
    """Read every recording of the manifest ``path`` and pre-process it with the
    training chain (0.8 Hz zero-phase high-pass, polyphase resampling to 256 Hz, 10 s
    windows, flat ones dropped and counted), z-scored per subject with statistics shared
    by the subject's rows. ``fs``: the rate of rows without ``fs`` whose file stores
    none. One session per row.

    Raises:
        ECGDataError: naming the manifest, the row and the column.
    """
    from ecgfast import __version__
    from ecgfast.data.windowing import preprocess_subject

    m = read_manifest(path)
    ids, renamed = _subject_ids(sorted({r.subject for r in m.rows}))
    parts, no_windows, flat = [], [], 0
    for name in sorted(ids, key=ids.get):
        rows = [r for r in m.rows if r.subject == name]
        segments = [_segment(m, r, fs) for r in rows]
        numbers = ", ".join(str(r.number) for r in rows)
        wins = preprocess_subject([x for x, _ in segments], [f for _, f in segments],
                                  sources=[m.where(r, "path") for r in rows],
                                  source=f"{m.path}: subject {name!r} (rows {numbers})",
                                  preprocessing=SUBJECT_CHAIN)
        for r, w in zip(rows, wins):
            flat += w.n_skipped_flat
            if not len(w.windows):
                no_windows.append(r.number)
            parts.append((r, w.windows))
    windows = np.concatenate([w for _, w in parts])
    count = [len(w) for _, w in parts]
    labels = {t: np.repeat([m.label(r, t) for r, _ in parts], count).astype(np.int64)
              for t in m.tasks if m.classes[t]}
    prov = {
        "dataset": "manifest", "manifest": str(m.path.resolve()), "manifest_sha256": m.sha256,
        "rows": len(m.rows), "subjects": len(ids), "subject_ids": renamed,
        "classes": {t: {"names": list(m.classes[t]), "numbering": "increasing number"
                        if m.numbering[t] == "numeric" else "sorted text (code points)",
                        "labelled_rows": sum(t in r.labels for r in m.rows)} for t in labels},
        "empty_label_columns": [t for t in m.tasks if not m.classes[t]],
        "preprocessing": SUBJECT_CHAIN.to_record(),  # statistics per subject, all its rows
        "counts": {"windows": len(windows), "flat_windows": flat,
                   "rows_without_windows": no_windows},
        "ecgfast_version": __version__,
    }
    return ManifestWindows(
        windows=windows, fs=SUBJECT_CHAIN.target_fs,
        subject=np.repeat([ids[r.subject] for r, _ in parts], count).astype(np.int64),
        session=np.repeat(np.arange(len(parts)), count).astype(np.int64),
        labels=labels, classes={t: m.classes[t] for t in labels}, provenance=prov)
