"""EDF/BDF test files, written with edfio (the library ecgfast decodes them with).

edfio writes continuous files (EDF+C/BDF+C) only; :func:`make_discontinuous` turns one
into an EDF+D/BDF+D file by moving the time-keeping annotation of chosen data records
later (a gap before them) and marking the header, byte by byte as the EDF+ specification
lays them out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_edf(path, signals, *, annotations=(), bdf: bool = False) -> Path:
    """Write ``signals`` ((label, fs, samples, unit) each; samples for a whole number of
    1 s data records) and ``annotations`` ((onset s, duration s or None, text) each)."""
    import edfio

    kind = edfio.BdfSignal if bdf else edfio.EdfSignal
    made = [kind(np.asarray(x, dtype=np.float64), fs, label=label, physical_dimension=unit)
            for label, fs, x, unit in signals]
    notes = [edfio.EdfAnnotation(onset, duration, text) for onset, duration, text in annotations]
    rec = (edfio.Bdf if bdf else edfio.Edf)(made, annotations=notes)
    path = Path(path)
    rec.write(path)
    return path


def layout(data: bytes) -> dict:
    """Header fields of an EDF/BDF file's bytes: header size, signal count, labels,
    samples per record, record count and duration, bytes per sample."""
    ns = int(data[252:256])
    width = 3 if data[:1] == b"\xff" else 2
    spr_at = 256 + ns * (16 + 80 + 8 * 5 + 80)
    return {
        "header": int(data[184:192]), "ns": ns, "n_records": int(data[236:244]),
        "record_s": float(data[244:252]), "width": width,
        "labels": [data[256 + 16 * i: 272 + 16 * i].decode().strip() for i in range(ns)],
        "spr": [int(data[spr_at + 8 * i: spr_at + 8 * i + 8]) for i in range(ns)],
    }


def make_discontinuous(path, gaps: dict[int, float]) -> Path:
    """Rewrite ``path`` as EDF+D/BDF+D: data record ``r`` and those after it start
    ``gaps[r]`` seconds later (gaps add up). The samples are unchanged."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    h = layout(bytes(data))
    ann = next(i for i, name in enumerate(h["labels"]) if name.endswith("Annotations"))
    offset = sum(h["spr"][:ann]) * h["width"]
    size = h["spr"][ann] * h["width"]
    record = sum(h["spr"]) * h["width"]
    shift = 0.0
    for r in range(h["n_records"]):
        shift += gaps.get(r, 0.0)
        at = h["header"] + r * record + offset
        tal = bytes(data[at:at + size]).rstrip(b"\x00")
        rest = tal.split(b"\x14\x14", 1)[1]
        new = f"+{r * h['record_s'] + shift:g}".encode() + b"\x14\x14" + rest
        assert len(new) <= size, "no room for the new time stamp"
        data[at:at + size] = new + bytes(size - len(new))
    data[192:197] = b"BDF+D" if h["width"] == 3 else b"EDF+D"
    path.write_bytes(bytes(data))
    return path


def set_field(path, start: int, width: int, text: str) -> Path:
    """Overwrite one fixed-width ASCII header field (left-aligned, space-padded)."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    data[start:start + width] = text.encode().ljust(width)[:width]
    path.write_bytes(bytes(data))
    return path
