"""TMSi Poly5 (``.S00``, ``.Poly5``) recordings, read from the format's description.

No maintained Python package reads Poly5 (TMSi's own reader is a script inside its
device SDK, with a GUI file dialog and MNE as dependencies), so this is a small reader
written from the layout that TMSi's and Polybench's documentation and the public readers
agree on (little-endian throughout):

- a file header: the magic ``POLY SAMPLE FILEversion 2.03\\r\\n\\x1a`` (31 bytes) or
  ``POLY SAMPLE FILE version 2.04\\r\\n\\x1a`` (32 bytes); int16 version (203, 204);
  the measurement name (a Pascal string in 81 bytes); int16 sampling rate; int16
  storage rate; uint8 storage type; int16 number of signal descriptions; int32 number of
  sample periods; 4 reserved bytes; the start time as 7 int16 (year, month, day, day of
  week, hour, minute, second); int32 number of data blocks; uint16 sample periods per
  block; uint16 bytes of sample data per block; int16 delta-compression flag; 64
  reserved bytes (217 bytes in all for 2.03, 218 for 2.04);
- one 136-byte description per signal: name (Pascal string in 41 bytes), 4 reserved,
  unit (Pascal string in 11 bytes), float32 unit low, unit high, ADC low, ADC high,
  int16 index, int16 cache offset, 60 reserved. A 32-bit channel is described twice, by
  a ``(Lo) NAME`` and a ``(Hi) NAME`` description, and stored as one float32; any other
  description is a 16-bit channel stored as one int16;
- the data blocks: an 86-byte block header (int32 index of its first sample period,
  4 reserved, the block's time as 7 int16, 64 reserved) followed by its sample periods,
  each holding one value of every channel in description order. The last block holds
  either a whole block or only the periods the header counts; both layouts are read.

A physical value is ``(raw - ADC low) / (ADC high - ADC low) * (unit high - unit low)
+ unit low`` (the units are the description's, e.g. ``µVolt``). Refused with a named
error: another magic or version, delta compression, a storage rate other than the
sampling rate, counts that disagree with each other or with the file's size (nothing is
allocated from a count before it is checked against the bytes the file holds), a data
block whose header does not start at the sample period its position implies (a lost or
reordered block is never glued over). A whole last block is cut to the header's count
of sample periods (the rest is padding).
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ecgfast.data.errors import ECGDataError

#: The suffixes read as Poly5 (case-insensitive).
SUFFIXES = (".s00", ".poly5")
_MAGIC = {31: b"POLY SAMPLE FILEversion 2.03\r\n\x1a", 32: b"POLY SAMPLE FILE version 2.04\r\n\x1a"}
_VERSIONS = {31: 203, 32: 204}
_FIELDS = struct.Struct("<h81sh h B h i 4x 7h i H H h 64x")
_DESCRIPTION = struct.Struct("<41s4x11s4f2h60x")
_BLOCK_HEADER = 86
_ECG = re.compile(r"(?<![a-z])(ecg|ekg)(?![a-z])", re.IGNORECASE)


@dataclass(frozen=True)
class Poly5Signal:
    """One channel: its name (without the ``(Lo)``/``(Hi)`` marks), unit, storage (2:
    int16, 4: float32) and the linear scaling of its description."""

    name: str
    unit: str
    sample_bytes: int
    unit_low: float
    unit_high: float
    adc_low: float
    adc_high: float


@dataclass(frozen=True)
class Poly5Header:
    """What a Poly5 file says about itself, checked against its size."""

    path: str
    version: int
    measurement: str
    fs: float
    start: datetime | None
    n_samples: int
    signals: tuple[Poly5Signal, ...]
    data_offset: int
    n_blocks: int
    block_samples: int
    whole_last_block: bool

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.signals]

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs


def _pascal(raw: bytes) -> str:
    n = min(raw[0], len(raw) - 1)
    return raw[1:1 + n].decode("latin-1").strip()


def _start(fields) -> datetime | None:
    year, month, day, _weekday, hour, minute, second = fields
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None  # not recorded (zeros) or not a date


def _signals(raw: bytes, n: int, where: str) -> tuple[Poly5Signal, ...]:
    parsed = []
    for i in range(n):
        name, unit, *scale, _index, _cache = _DESCRIPTION.unpack_from(raw, i * _DESCRIPTION.size)
        parsed.append((_pascal(name), _pascal(unit), tuple(float(v) for v in scale)))
    out, i = [], 0
    while i < n:
        name, unit, scale = parsed[i]
        if name.startswith("(Hi)"):
            raise ECGDataError(f"{where}: description {i} ({name!r}) is a '(Hi)' half with no "
                               "'(Lo)' half before it")
        if name.startswith("(Lo)"):
            base = name[4:].strip()
            if i + 1 >= n or parsed[i + 1][0][4:].strip() != base \
                    or not parsed[i + 1][0].startswith("(Hi)"):
                raise ECGDataError(f"{where}: description {i} ({name!r}) is not followed by "
                                   f"its '(Hi) {base}' half")
            out.append(Poly5Signal(base, unit, 4, *scale))
            i += 2
        else:
            out.append(Poly5Signal(name, unit, 2, *scale))
            i += 1
    return tuple(out)


def read_poly5_header(path: str | os.PathLike) -> Poly5Header:
    """The header and signal descriptions of the Poly5 file ``path``.

    Raises:
        ECGDataError: naming the file: not a Poly5 file, an unsupported version or
            feature, or counts that disagree with each other or with the file's size.
    """
    where = str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(32 + _FIELDS.size)
            magic_len = 31 if head[28:31] == b"\r\n\x1a" else 32
            if head[:magic_len] != _MAGIC[magic_len]:
                if not head.startswith(b"POLY SAMPLE FILE"):
                    raise ECGDataError(f"{where}: not a Poly5 file (no 'POLY SAMPLE FILE' magic)")
                raise ECGDataError(f"{where}: Poly5 magic {head[:32]!r} is not one of the "
                                   "versions this reader knows (2.03, 2.04)")
            if len(head) < magic_len + _FIELDS.size:
                raise ECGDataError(f"{where}: truncated in the file header ({size} bytes)")
            (version, name, fs, storage_fs, _storage_type, n_desc, n_samples, *rest) = \
                _FIELDS.unpack_from(head, magic_len)
            start, (n_blocks, block_samples, block_bytes, delta) = _start(rest[:7]), rest[7:]
            if version != _VERSIONS[magic_len]:
                raise ECGDataError(f"{where}: version field {version} contradicts the magic "
                                   f"(version {_VERSIONS[magic_len]})")
            if delta:
                raise ECGDataError(f"{where}: delta-compressed Poly5 data is not supported")
            if fs <= 0 or (storage_fs not in (0, fs)):
                raise ECGDataError(f"{where}: sampling rate {fs} Hz with storage rate "
                                   f"{storage_fs} Hz; only files stored at their sampling "
                                   "rate (> 0) are supported")
            data_offset = magic_len + _FIELDS.size + n_desc * _DESCRIPTION.size
            if n_desc <= 0 or data_offset > size:
                raise ECGDataError(f"{where}: {n_desc} signal descriptions do not fit in the "
                                   f"{size}-byte file")
            f.seek(magic_len + _FIELDS.size)
            signals = _signals(f.read(n_desc * _DESCRIPTION.size), n_desc, where)
    except OSError as exc:
        raise ECGDataError(f"{where}: cannot read: {exc}") from None
    period = sum(s.sample_bytes for s in signals)
    if block_samples <= 0 or block_bytes != block_samples * period:
        raise ECGDataError(f"{where}: blocks of {block_samples} sample periods of {period} bytes "
                           f"cannot hold the {block_bytes} bytes the header says")
    if n_samples <= 0 or n_blocks <= 0:
        raise ECGDataError(f"{where}: no samples (the header counts {n_samples} sample periods "
                           f"in {n_blocks} blocks)")
    if not (n_blocks - 1) * block_samples < n_samples <= n_blocks * block_samples:
        raise ECGDataError(f"{where}: {n_samples} sample periods do not fill {n_blocks} blocks "
                           f"of {block_samples}")
    whole = n_blocks * (_BLOCK_HEADER + block_bytes)
    partial = whole - (n_blocks * block_samples - n_samples) * period
    held = size - data_offset
    if held not in (whole, partial):
        state = "truncated: it holds" if held < partial else "it holds"
        raise ECGDataError(f"{where}: {state} {held} bytes of sample data, but the header's "
                           f"{n_samples} sample periods in {n_blocks} blocks take {partial} "
                           f"(or {whole} with a whole last block)")
    return Poly5Header(where, version, _pascal(name), float(fs), start, int(n_samples), signals,
                       data_offset, int(n_blocks), int(block_samples), held == whole)


def _period_dtype(signals) -> np.dtype:
    return np.dtype([(f"c{i}", "<f4" if s.sample_bytes == 4 else "<i2")
                     for i, s in enumerate(signals)])


def _scaled(raw: np.ndarray, s: Poly5Signal, where: str) -> np.ndarray:
    """``raw`` in the channel's unit; equal ADC and unit ranges (the SDK's 0..1000, and
    files that store those integers' bit patterns) are the identity."""
    x = raw.astype(np.float64)
    if (s.adc_low, s.adc_high) == (s.unit_low, s.unit_high):
        return x
    span = s.adc_high - s.adc_low
    if not (np.isfinite((s.adc_low, s.adc_high, s.unit_low, s.unit_high)).all()
            and abs(span) > 1e-30):
        raise ECGDataError(f"{where}: channel {s.name!r} has no usable scaling (ADC "
                           f"{s.adc_low:g}..{s.adc_high:g}, unit {s.unit_low:g}..{s.unit_high:g})")
    return (x - s.adc_low) * ((s.unit_high - s.unit_low) / span) + s.unit_low


def _check_block_order(full, header: Poly5Header) -> None:
    """Each block header states its first sample period: a block that is not where the
    count says (lost, repeated or reordered blocks) is an error, never glued over."""
    if full is None:
        return
    expected = np.arange(len(full), dtype=np.int64) * header.block_samples
    bad = np.nonzero(full["first"] != expected)[0]
    if bad.size:
        k = int(bad[0])
        raise ECGDataError(f"{header.path}: data block {k} starts at sample period "
                           f"{int(full['first'][k])}, expected {int(expected[k])} ({bad.size} "
                           "block(s) out of place: lost or reordered blocks?)")


def read_poly5(path: str | os.PathLike, channels=None) -> tuple[Poly5Header, np.ndarray]:
    """``(header, signal)``: the channels at indices ``channels`` (default all) as a
    (len(channels), n) float64 array in each channel's physical unit.

    Only the chosen channels are copied out of the file (it is memory-mapped).

    Raises:
        ECGDataError: as :func:`read_poly5_header`, or a channel without usable scaling.
    """
    header = read_poly5_header(path)
    rows = list(range(len(header.signals))) if channels is None else list(channels)
    period = _period_dtype(header.signals)
    block = np.dtype([("first", "<i4"), ("h", f"V{_BLOCK_HEADER - 4}"),
                      ("d", period, (header.block_samples,))])
    n_full = header.n_blocks if header.whole_last_block else header.n_blocks - 1
    tail = header.n_samples - n_full * header.block_samples
    out = np.empty((len(rows), header.n_samples), dtype=np.float64)
    try:
        full = np.memmap(path, dtype=block, mode="r", offset=header.data_offset,
                         shape=(n_full,)) if n_full else None
        _check_block_order(full, header)
        last = None
        if not header.whole_last_block:
            last = np.memmap(path, dtype=period, mode="r", shape=(tail,),
                             offset=header.data_offset + n_full * block.itemsize + _BLOCK_HEADER)
        for k, r in enumerate(rows):
            s, field = header.signals[r], f"c{r}"
            parts = [] if full is None else [full["d"][field].reshape(-1)]
            if last is not None:
                parts.append(last[field])
            raw = np.concatenate(parts)[:header.n_samples]
            out[k] = _scaled(raw, s, header.path)
        del full, last
    except ECGDataError:
        raise
    except (OSError, ValueError) as exc:
        raise ECGDataError(f"{header.path}: cannot read the sample data: {exc}") from None
    return header, out


def ecg_channels(names) -> list[int]:
    """Indices of the channels whose description names an ECG (the word ``ECG`` or
    ``EKG``, any case)."""
    return [i for i, n in enumerate(names) if _ECG.search(n)]


def read_leads(path: Path, fs, wanted):
    """The Poly5 reader behind :func:`ecgfast.data.read_leads` / ``read_recording``
    (one segment): leads by name or index; with no choice, the only channel, else the one
    channel whose description names an ECG; a given ``fs`` must agree with the header;
    voltages (``µVolt``, ...) in mV."""
    from ecgfast.data.filters import check_fs
    from ecgfast.data.leads import Leads, check_samples, mv_scale, select

    header = read_poly5_header(path)
    names = header.names
    if fs is not None and check_fs(fs, "fs", str(path)) != header.fs:
        raise ECGDataError(f"{path}: fs={fs} Hz was given but the header says {header.fs:g} Hz")
    if wanted is None and len(names) > 1:
        ecg = ecg_channels(names)
        if len(ecg) != 1:
            found = "no channel" if not ecg else f"{len(ecg)} channels"
            raise ECGDataError(f"{path}: {found} named ECG among {names}; choose one by name "
                               "(column=..., a manifest's lead)")
        wanted = [ecg[0]]
    rows = select(wanted, names, "channel", path, None)
    _, signal = read_poly5(path, rows)
    picked = [names[r] for r in rows]
    units = []
    for row, r in zip(signal, rows):
        factor, unit = mv_scale(header.signals[r].unit)
        if factor != 1.0:
            row *= factor
        units.append(unit)
    return [Leads(check_samples(signal, path, picked), header.fs, str(path), picked, True,
                  units)]
