"""What every recording reader returns, and the rules all of them share.

:class:`Recording` (one lead) and :class:`MultiLeadRecording` (several leads sampled
together) are the public results; :class:`Annotation` is one event of a file that stores
them (EDF+/BDF+). A format reader returns :class:`Leads`, one per contiguous segment of
the file, built with the helpers here, so that every format follows the same rules:

- leads are chosen by name or index (:func:`select`); readers of self-describing files
  (EDF, BDF) also match a label case-insensitively by a part of it (``ECG`` finds ``ECG
  ECG``), and two candidates are an error that lists them;
- every lead keeps its own sampling rate; leads read together must share one rate, else
  :func:`common_rate` refuses and names the rates (nothing is averaged or resampled here);
- a signal whose unit is a voltage (V, mV, uV/µV, nV, or Volt, µVolt as TMSi writes them;
  any case) comes out in mV
  (:func:`mv_scale`), any other unit as stored; the unit is reported with the lead;
- samples are checked to be present and finite (:func:`check_samples`).

Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ecgfast.data.errors import ECGDataError

#: Voltage units (lower case) and their factor to mV.
_TO_MV = {"v": 1e3, "mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "nv": 1e-6,
          "volt": 1e3, "mvolt": 1.0, "uvolt": 1e-3, "\u00b5volt": 1e-3, "\u03bcvolt": 1e-3}


@dataclass(frozen=True)
class Annotation:
    """One annotation of a recording (an EDF+/BDF+ TAL entry).

    Attributes:
        onset_s: seconds after the file's start time (the clock of ``start_s``).
        duration_s: seconds, or None when the file gives none.
        text: the annotation's text.
    """

    onset_s: float
    duration_s: float | None
    text: str


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
    """One lead of one recording (or of one segment of a discontinuous file).

    Attributes:
        signal: (n,) float64 samples: in mV when the file's unit is a voltage, otherwise
            in the file's unit (``unit``).
        fs: the lead's own sampling rate in Hz.
        path: the file read.
        lead: the lead's name (WFDB signal name, EDF label, CSV header) or index as a
            string, or None for a 1-D array / single unnamed column.
        unit: the unit of ``signal`` ("mV" for voltages), or None when the file has none.
        start_s: start of the samples in seconds after the file's start (non-zero for
            later segments of an EDF+D file, or an EDF+ file whose first record starts
            later).
        annotations: the file's annotations (EDF+/BDF+), onsets on the clock of
            ``start_s``.
    """

    signal: np.ndarray
    fs: float
    path: str
    lead: str | None = None
    unit: str | None = None
    start_s: float = 0.0
    annotations: tuple[Annotation, ...] = ()


@dataclass
class MultiLeadRecording(_Samples):
    """Several leads of one recording, sampled together at one rate.

    Attributes:
        signal: (C, n) float64 samples, one row per lead (units as in :class:`Recording`).
        fs: sampling rate in Hz, the same for every lead.
        path: the file read (the ``.hea`` header for WFDB).
        leads: the C lead names, in the order of ``signal``'s rows.
        units: the C units (None where the file has none); empty for files without units.
        start_s, annotations: as in :class:`Recording`.
    """

    signal: np.ndarray
    fs: float
    path: str
    leads: tuple[str, ...]
    units: tuple[str | None, ...] = ()
    start_s: float = 0.0
    annotations: tuple[Annotation, ...] = ()


@dataclass
class Leads:
    """What a format reader returns for one contiguous segment: the chosen rows, their
    names and units, and whether the file named them at all (a 1-D array or one unnamed
    column does not)."""

    signal: np.ndarray
    fs: float
    path: str
    names: list[str]
    named: bool
    units: list[str | None] = field(default_factory=list)
    start_s: float = 0.0
    annotations: tuple[Annotation, ...] = ()


def _loose_match(want: str, names: list[str], kind: str, where) -> int | None:
    """The one name equal to ``want`` ignoring case, else the one containing it ignoring
    case; None when there is none; two or more are an error listing them."""
    w = want.strip().casefold()
    for test in (lambda n: n.strip().casefold() == w, lambda n: w in n.casefold()):
        hits = [i for i, n in enumerate(names) if w and test(n)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ECGDataError(
                f"{where}: {kind} {want!r} is ambiguous: it matches "
                f"{', '.join(repr(names[i]) for i in hits)}; give the full {kind} name"
            )
    return None


def select(wanted, names: list[str], kind: str, where, ask: str | None,
           loose: bool = False) -> list[int]:
    """Row indices for ``wanted`` ("all", a list of names/indices, or None) among
    ``names``. ``ask``: the error when ``wanted`` is None and there are several leads to
    choose from (None: take the first). ``loose``: a name not found exactly may match one
    name ignoring case, or be part of one (see the module docstring)."""
    if wanted is None:
        if len(names) > 1 and ask is not None:
            raise ECGDataError(ask)
        return [0]
    if wanted == "all":
        return list(range(len(names)))
    rows, missing = [], []
    for w in wanted:
        if isinstance(w, str):
            hit = names.index(w) if w in names else None
            if hit is None and loose:
                hit = _loose_match(w, names, kind, where)
            if hit is None:
                missing.append(w)
            else:
                rows.append(hit)
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


def check_samples(signal: np.ndarray, path, names, lines=None) -> np.ndarray:
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


def mv_scale(unit: str | None) -> tuple[float, str | None]:
    """``(factor, "mV")`` that brings samples in ``unit`` to mV when it is a voltage,
    else ``(1.0, unit or None)``."""
    unit = (unit or "").strip()
    factor = _TO_MV.get(unit.casefold())
    return (1.0, unit or None) if factor is None else (factor, "mV")


def common_rate(rates: list[float], names: list[str], where) -> float:
    """The one sampling rate of leads read together; leads at different rates are
    refused with a message naming each lead's rate (nothing is resampled or averaged)."""
    if any(not math.isclose(r, rates[0], rel_tol=1e-9) for r in rates):
        listed = ", ".join(f"{n!r} {r:g} Hz" for n, r in zip(names, rates))
        raise ECGDataError(
            f"{where}: the leads asked for are sampled at different rates ({listed}); "
            "read leads of one rate together, or each lead on its own (nothing is "
            "resampled or averaged to make them match)"
        )
    return float(rates[0])
