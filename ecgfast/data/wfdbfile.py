"""WFDB records (PhysioNet), every signal at its own rate.

A WFDB signal may store several samples per frame (drivedb's ECG: 32 per 15 Hz frame,
i.e. 480 Hz). wfdb's ``rdrecord`` averages them into one sample per frame by default;
here the record is read with ``smooth_frames=False``, so a signal's rate is the frame
rate times its samples per frame and its length the frames times the same. Leads read
together must share one rate (:func:`ecgfast.data.leads.common_rate`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ecgfast.data.errors import ECGDataError
from ecgfast.data.filters import check_fs
from ecgfast.data.leads import Leads, check_samples, common_rate, mv_scale, select

#: What wfdb raises for malformed headers or signal files.
WFDB_ERRORS = (ValueError, OSError, IndexError, KeyError, TypeError, AttributeError, EOFError)


def _per_frame(header, n: int, hea: Path) -> list[int]:
    spf = list(header.samps_per_frame or [1] * n)
    if len(spf) != n or any(not isinstance(k, (int, np.integer)) or k < 1 for k in spf):
        raise ECGDataError(f"{hea}: samples per frame {spf} are not {n} positive integers")
    return [int(k) for k in spf]


def read_wfdb(record: Path, fs, wanted) -> list[Leads]:
    """The chosen signals of the WFDB ``record`` (its path without suffix), one segment.

    ``fs``, when given, must agree with the chosen signals' rate."""
    import wfdb

    hea = Path(f"{record}.hea")
    if not hea.exists():
        raise ECGDataError(f"{hea}: file not found (WFDB header of record {record})")
    if hea.stat().st_size == 0:
        raise ECGDataError(f"{hea}: empty file")
    try:
        header = wfdb.rdheader(str(record))
    except WFDB_ERRORS as exc:
        raise ECGDataError(f"{hea}: not a readable WFDB header: {exc}") from None
    names = [str(n) for n in (header.sig_name or [])]
    if not names:
        raise ECGDataError(f"{hea}: the record has no signals")
    rows = select(wanted, names, "signal", hea, None)
    frame_fs = float(header.fs)
    if not (math.isfinite(frame_fs) and frame_fs > 0):
        raise ECGDataError(f"{hea}: header sampling rate must be > 0 Hz, got {header.fs!r}")
    if not header.sig_len:
        raise ECGDataError(f"{hea}: the record has no samples (sig_len = {header.sig_len})")
    spf = _per_frame(header, len(names), hea)
    picked = [names[r] for r in rows]
    rate = common_rate([frame_fs * spf[r] for r in rows], picked, hea)
    if fs is not None and not math.isclose(check_fs(fs, "fs", str(hea)), rate):
        raise ECGDataError(f"{hea}: fs={fs} Hz was given but the header says {rate:g} Hz"
                           + (f" for {', '.join(picked)}" if any(k > 1 for k in spf) else ""))
    channels = sorted(set(rows))
    try:
        rec = wfdb.rdrecord(str(record), channels=channels, physical=True, smooth_frames=False)
    except WFDB_ERRORS as exc:
        raise ECGDataError(f"{hea}: cannot read the signal file(s): {exc}") from None
    per_signal = list(rec.e_p_signal or [])
    if len(per_signal) != len(channels):
        raise ECGDataError(f"{hea}: the signal file holds {len(per_signal)} signals, "
                           f"expected {len(channels)}")
    data, units = [], []
    for r in rows:
        x = np.asarray(per_signal[channels.index(r)], dtype=np.float64).reshape(-1)
        if x.size != header.sig_len * spf[r]:
            raise ECGDataError(f"{hea}: signal {names[r]!r} has {x.size} samples, the header "
                               f"says {header.sig_len} frames x {spf[r]}")
        factor, unit = mv_scale((header.units or [None] * len(names))[r])
        data.append(x * factor if factor != 1.0 else x)
        units.append(unit)
    signal = check_samples(np.stack(data), hea, picked)
    return [Leads(signal, rate, str(hea), picked, True, units)]
