"""EDF, EDF+ (continuous and discontinuous), BDF and BDF+ recordings.

The samples are decoded and scaled to physical units by edfio (pure Python on numpy,
maintained, reads and writes EDF/EDF+/BDF/BDF+, so the tests write their files with it).
Of the readers compared on a 100 MB file (edfio, pyedflib, EDFlib-Python, MNE; the
measurements are in docs/datasets.md) it is the only one that reads EDF+D files
(pyedflib and EDFlib-Python refuse them, MNE joins the segments silently) and the
fastest at reading one signal of an EDF. Its BDF reader decodes the whole file at once
(about 7x the file's size in memory), so every file is handed to it in blocks of data
records of about 8 MiB.

Before edfio sees a byte, the header (256 + 256 x ns bytes of ASCII) is parsed and
checked here against the file's size: a header that promises more data records than the
file holds, or absurd counts, rates or ranges, is an :class:`ECGDataError` and nothing is
allocated from it. The data records' start times (EDF+ time-keeping annotations) and the
annotations are read here from the annotation signals' bytes (TALs), so that an EDF+D
file is split at its gaps into segments, never joined.

Every ordinary signal keeps its own rate (samples per record / record duration); voltage
units come out in mV (:func:`ecgfast.data.leads.mv_scale`).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgfast.data.errors import ECGDataError
from ecgfast.data.filters import check_fs
from ecgfast.data.leads import Annotation, Leads, common_rate, mv_scale, select

BLOCK_BYTES = 8 << 20
_BDF_VERSION = b"\xffBIOSEMI"
_SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("unit", 8), ("pmin", 8), ("pmax", 8),
                  ("dmin", 8), ("dmax", 8), ("prefilter", 80), ("spr", 8), ("reserved", 32))
_ONSET = re.compile(rb"^[+-]?\d+(\.\d*)?$")
_DURATION = re.compile(rb"^\+?\d+(\.\d*)?$")
#: What edfio may raise on a block it cannot decode.
_LIBRARY_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError, ArithmeticError,
                   UnicodeDecodeError, Warning)


@dataclass(frozen=True)
class EdfHeader:
    """The checked header of an EDF/BDF file. Signal lists are in file order (annotation
    signals included); ``ordinary`` and ``annotation`` index into them."""

    raw: bytes
    bdf: bool
    plus: str
    n_records: int
    record_s: float
    labels: list[str]
    units: list[str]
    spr: list[int]
    offsets: list[int]
    record_bytes: int
    ordinary: list[int]
    annotation: list[int]
    limits: list[tuple[int, int, float, float] | None]

    def fs(self, i: int) -> float:
        return self.spr[i] / self.record_s

    def check_scaling(self, i: int, path) -> None:
        """Refuse signal ``i`` when its digital and physical limits cannot scale every
        digital value to a finite physical one (checked only for the signals read: a
        device may leave an unused channel's limits equal)."""
        dmin, dmax, pmin, pmax = self.limits[i]
        gain = (pmax - pmin) / (dmax - dmin) if dmax > dmin else math.nan
        if pmin == pmax or not math.isfinite(abs(gain) * 2.0**25 + abs(pmin) + abs(pmax)):
            raise ECGDataError(
                f"{path}: signal {i} ({self.labels[i]!r}) cannot be scaled: digital range "
                f"[{dmin}, {dmax}], physical range [{pmin:g}, {pmax:g}]")


def _text(raw: bytes) -> str:
    return raw.decode("latin-1").strip()


def _number(raw: bytes, what: str, path, kind=float):
    text = _text(raw)
    try:
        value = kind(text)
    except ValueError:
        raise ECGDataError(f"{path}: header field {what} is {text!r}, not a number") from None
    if kind is float and not math.isfinite(value):
        raise ECGDataError(f"{path}: header field {what} is {text!r}, not a finite number")
    return value


def read_header(path: Path) -> EdfHeader:
    """The header of the EDF/BDF file ``path`` after checking it against the file's size.

    Raises:
        ECGDataError: naming the file and the field: not EDF/BDF, a field that is not a
            number, non-positive counts or durations, equal digital limits, or more data
            promised than the file holds.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        fixed = f.read(256)
        if len(fixed) < 256:
            raise ECGDataError(f"{path}: {size} bytes, too short for an EDF/BDF header (256)")
        bdf = fixed[:8] == _BDF_VERSION
        if not bdf and fixed[:8] != b"0       ":
            raise ECGDataError(f"{path}: not an EDF or BDF file (version field {fixed[:8]!r})")
        ns = _number(fixed[252:256], "number of signals", path, int)
        header_bytes = _number(fixed[184:192], "header bytes", path, int)
        if not 1 <= ns <= (size - 256) // 256:
            raise ECGDataError(f"{path}: header says {ns} signals; a {size}-byte file holds "
                               f"at most {max(0, (size - 256) // 256)} signal headers")
        if header_bytes != 256 * (ns + 1):
            raise ECGDataError(f"{path}: header size field says {header_bytes} bytes, but "
                               f"{ns} signals need {256 * (ns + 1)}")
        signal_raw = f.read(256 * ns)
    fields, pos = {}, 0
    for name, width in _SIGNAL_FIELDS:
        fields[name] = [signal_raw[pos + k * width: pos + (k + 1) * width] for k in range(ns)]
        pos += width * ns
    labels = [_text(b) for b in fields["label"]]
    marker = "BDF Annotations" if bdf else "EDF Annotations"
    annotation = [i for i, name in enumerate(labels) if name == marker]
    ordinary = [i for i in range(ns) if i not in annotation]
    spr = [_number(fields["spr"][i], f"samples per record of signal {i} ({labels[i]!r})",
                   path, int) for i in range(ns)]
    bad = next((i for i in range(ns) if spr[i] < 1), None)
    if bad is not None:
        raise ECGDataError(f"{path}: signal {bad} ({labels[bad]!r}) has {spr[bad]} samples "
                           "per data record")
    limits = [tuple(_number(fields[k][i], f"{k} of signal {i}", path, kind)
                    for k, kind in (("dmin", int), ("dmax", int), ("pmin", float), ("pmax", float)))
              if i in ordinary else None for i in range(ns)]
    width = 3 if bdf else 2
    offsets = [int(v) for v in np.cumsum([0, *spr[:-1]]) * width]
    record_bytes = sum(spr) * width
    n_records = _number(fixed[236:244], "number of data records", path, int)
    data_bytes = size - header_bytes
    if n_records == -1:  # "unknown" (a recording in progress): what the file holds
        n_records, rest = divmod(data_bytes, record_bytes)
        if rest:
            raise ECGDataError(f"{path}: {data_bytes} data bytes are not a whole number of "
                               f"{record_bytes}-byte data records")
    if n_records < 1:
        raise ECGDataError(f"{path}: header says {n_records} data records")
    if n_records * record_bytes > data_bytes:
        raise ECGDataError(
            f"{path}: header promises {n_records} data records of {record_bytes} bytes "
            f"({n_records * record_bytes} bytes) but the file holds {data_bytes} data bytes "
            f"({data_bytes // record_bytes} whole records): truncated or corrupt")
    record_s = _number(fixed[244:252], "data record duration", path)
    if not record_s > 0 and ordinary:
        raise ECGDataError(f"{path}: data record duration {record_s:g} s; must be > 0 s")
    reserved = _text(fixed[192:236])
    plus = reserved[4] if reserved[:4] in ("EDF+", "BDF+") and len(reserved) > 4 else ""
    return EdfHeader(fixed + signal_raw, bdf, plus, n_records, record_s, labels,
                     [_text(b) for b in fields["unit"]], spr, offsets, record_bytes, ordinary,
                     annotation, limits)


def _decode(h: EdfHeader, head: bytearray, block: bytes, k: int, path):
    """edfio's Edf/Bdf of ``k`` data records ``block`` under the header ``head``."""
    import edfio

    head[236:244] = f"{k:<8d}".encode()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            if h.bdf:
                return edfio.read_bdf(bytes(head) + block, header_encoding="latin-1")
            return edfio.read_edf(bytes(head) + block, header_encoding="latin-1")
    except _LIBRARY_ERRORS as exc:
        raise ECGDataError(f"{path}: edfio cannot read the data records: "
                           f"{type(exc).__name__}: {exc}") from None


def _read_records(path: Path, h: EdfHeader, picks: list[int]):
    """((len(picks), samples) physical samples of the picked signals, which share one
    rate; (n_records, bytes) of each annotation signal), reading and decoding about
    ``BLOCK_BYTES`` of data records at a time."""
    spr = h.spr[picks[0]]
    out = np.empty((len(picks), h.n_records * spr), dtype=np.float64)
    notes = [np.empty((h.n_records, h.spr[i] * (3 if h.bdf else 2)), np.uint8)
             for i in h.annotation]
    per = max(1, BLOCK_BYTES // h.record_bytes)
    head = bytearray(h.raw)
    with open(path, "rb") as f:
        f.seek(len(h.raw))
        for first in range(0, h.n_records, per):
            k = min(per, h.n_records - first)
            block = f.read(k * h.record_bytes)
            if len(block) != k * h.record_bytes:
                raise ECGDataError(f"{path}: truncated while reading data record {first}")
            signals = _decode(h, head, block, k, path).signals
            if len(signals) != len(h.ordinary):
                raise ECGDataError(f"{path}: edfio finds {len(signals)} signals, the header "
                                   f"{len(h.ordinary)}")
            for row, i in zip(out, picks):
                row[first * spr:(first + k) * spr] = signals[h.ordinary.index(i)].data
            raw = np.frombuffer(block, np.uint8).reshape(k, h.record_bytes)
            for note, i in zip(notes, h.annotation):
                note[first:first + k] = raw[:, h.offsets[i]:h.offsets[i] + note.shape[1]]
    return out, notes


def _tals(raw: bytes, where: str) -> list[tuple[float, float | None, list[str]]]:
    """The TALs (onset, duration, texts) in one annotation signal's bytes of a record."""
    found = []
    for tal in raw.split(b"\x00"):
        if not tal:
            continue
        parts = tal.split(b"\x14")
        head = parts[0].split(b"\x15")
        if (len(parts) < 2 or len(head) > 2 or not _ONSET.match(head[0])
                or (len(head) == 2 and not _DURATION.match(head[1]))):
            raise ECGDataError(f"{where}: malformed annotation {tal[:60]!r}")
        texts = parts[1:-1] if parts[-1] == b"" else parts[1:]
        found.append((float(head[0]), float(head[1]) if len(head) == 2 else None,
                      [t.decode("utf-8", errors="replace") for t in texts]))
    return found


def _timing(path: Path, h: EdfHeader, notes) -> tuple[np.ndarray | None, tuple]:
    """(start of every data record in seconds, or None when the file has no time-keeping
    annotations; the annotations, sorted by onset)."""
    if h.plus == "D" and not notes:
        raise ECGDataError(f"{path}: EDF+D file without an annotation signal: the data "
                           "records' start times, and so its gaps, are unknown")
    starts = np.full(h.n_records, np.nan) if notes else None
    found = []
    for j, note in enumerate(notes):
        for r in range(h.n_records):
            tals = _tals(note[r].tobytes(), f"{path}: data record {r}")
            if j == 0 and tals and tals[0][2][:1] == [""]:
                onset, _, texts = tals[0]
                starts[r], tals[0] = onset, (onset, None, texts[1:])
            found += [Annotation(on, dur, t) for on, dur, texts in tals for t in texts if t]
    if starts is not None and np.isnan(starts).any():
        r = int(np.argmax(np.isnan(starts)))
        if h.plus == "D":
            raise ECGDataError(f"{path}: EDF+D data record {r} has no time-keeping annotation")
        starts = None
    return starts, tuple(sorted(found, key=lambda a: a.onset_s))


def _segments(path: Path, h: EdfHeader, starts, tol: float) -> list[tuple[int, int, float]]:
    """Runs of contiguous data records: (first, end, start in s)."""
    if starts is None or h.plus != "D":
        return [(0, h.n_records, 0.0 if starts is None else float(starts[0]))]
    cuts = [0]
    for r in range(1, h.n_records):
        expected = starts[r - 1] + h.record_s
        if starts[r] < expected - tol:
            raise ECGDataError(f"{path}: data record {r} starts at {starts[r]:g} s, before "
                               f"record {r - 1} ends ({expected:g} s)")
        if starts[r] > expected + tol:
            cuts.append(r)
    ends = [*cuts[1:], h.n_records]
    return [(a, b, float(starts[a])) for a, b in zip(cuts, ends)]


def read_edf(path: Path, fs, wanted) -> list[Leads]:
    """The chosen signals of the EDF/BDF file ``path``: one :class:`Leads` per contiguous
    segment (several only for EDF+D/BDF+D files with gaps)."""
    h = read_header(path)
    names = [h.labels[i] for i in h.ordinary]
    if not names:
        raise ECGDataError(f"{path}: the file holds annotations only, no signals")
    ask = (f"{path}: {len(names)} signals {names}; pass column=<label or index> to choose "
           "one (on the command line: --lead; --leads for embed and prepare)")
    picks = [h.ordinary[r] for r in select(wanted, names, "signal", path, ask, loose=True)]
    picked = [h.labels[i] for i in picks]
    rate = common_rate([h.fs(i) for i in picks], picked, path)
    for i in picks:
        h.check_scaling(i, path)
    if fs is not None and not math.isclose(check_fs(fs, "fs", str(path)), rate):
        raise ECGDataError(f"{path}: fs={fs} Hz was given but the header says {rate:g} Hz")
    data, notes = _read_records(path, h, picks)
    units = []
    for row, i in zip(data, picks):
        factor, unit = mv_scale(h.units[i])
        if factor != 1.0:
            row *= factor
        units.append(unit)
    starts, annotations = _timing(path, h, notes)
    tol = 0.5 / max(h.fs(i) for i in h.ordinary)
    spr = h.spr[picks[0]]
    # no NaN check: every sample is a digital value times a bounded gain (check_scaling)
    return [Leads(data[:, a * spr:b * spr], rate, str(path), picked, True, units, start,
                  annotations) for a, b, start in _segments(path, h, starts, tol)]
