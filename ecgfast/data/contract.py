"""The pre-processing contract: what turns raw samples into a model's input windows.

:class:`Preprocessing` holds every parameter of the chain (high-pass, resampler, robust
z-score, windows, flat-line rule). The functions of :mod:`ecgfast.data.windowing` take
their settings from it, the training side records the one it used (the window store's
manifest, a cohort's provenance, the checkpoint, the ONNX metadata:
:meth:`Preprocessing.to_record`), and serving (:class:`ecgfast.export.OnnxEncoder`,
``ecgfast embed``) reads it back from the model (:func:`read_contract`) and applies it,
whatever this version's defaults are. No PyTorch here.

The record is a JSON object: ``format`` (:data:`RECORD_FORMAT`), ``version``, every
field of :class:`Preprocessing`, and ``leads`` (the input's lead names in order, or
null). Version rules:

- This version writes :data:`CONTRACT_VERSION` and reproduces versions 1 to
  :data:`CONTRACT_VERSION`; a record of a later version was written by a newer ecgfast
  and is refused (:class:`ContractError` naming both versions).
- Within a version every field is required and no other is allowed: a missing field, an
  unknown one (a step this version does not know), a filter, resampler, normalisation,
  z-score scope or flat-line rule this version does not implement, or a value out of
  range is refused with a message naming the field and the value.
- For whoever changes the chain: any change of its arithmetic or a new step bumps
  :data:`CONTRACT_VERSION`, and the reader keeps accepting the older versions (a field
  added later takes, for older records, the value that reproduces them).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import NamedTuple

#: The papers' pre-processing constants (the defaults of :class:`Preprocessing`).
DEFAULT_HIGHPASS_HZ = 0.8
DEFAULT_TARGET_FS = 256.0
DEFAULT_WINDOW_SECONDS = 10.0

#: Flat-line (lead off, saturation) threshold. A window is flat, and dropped, when the
#: standard deviation of its sample-to-sample difference after the robust z-score (in
#: units of the recording's robust std per sample at 256 Hz; scaled by 256 / fs at other
#: rates) is below this. ECG windows are far above it (about 0.3-0.5: the QRS slopes).
#: The difference, not the plain std, because the high-pass turns the edges of a flat
#: stretch into slow multi-second transients that a plain std would count as signal.
FLAT_STD_THRESHOLD = 0.02

RECORD_FORMAT = "ecgfast.preprocessing"
CONTRACT_VERSION = 1

#: The values this version implements for each enumerated field.
CHOICES = {
    "highpass": ("butterworth",),
    "resampler": ("polyphase",),
    "normalisation": ("robust-zscore",),
    "zscore_scope": ("recording", "subject"),
    "flat_rule": ("diff-std",),
}


class ContractError(ValueError):
    """A pre-processing record this version cannot reproduce; the message names the
    field, the value and what this version has."""


@dataclass(frozen=True)
class Preprocessing:
    """The pre-processing chain's parameters, which :func:`~ecgfast.data.preprocess`,
    :func:`~ecgfast.data.iter_windows` and :func:`~ecgfast.data.preprocess_subject` take
    (``preprocessing=``, or the fields as keyword arguments of the same names).

    Attributes:
        target_fs: output sampling rate in Hz (256).
        window_seconds: window length in seconds (10); ``round(window_seconds *
            target_fs)`` samples.
        overlap: fraction of a window shared by consecutive windows, in [0, 1); the hop
            is ``round(length * (1 - overlap))`` samples.
        highpass: the high-pass filter: "butterworth", applied forward and backward
            (``scipy.signal.sosfiltfilt``, zero phase).
        highpass_hz: its -3 dB cut-off of one pass in Hz (0.8).
        highpass_order: its order of one pass (4; the zero-phase filter has twice this).
        resampler: "polyphase" (``scipy.signal.resample_poly``).
        resample_max_denominator: the rate ratio ``target_fs / fs`` is approximated by
            ``up / down`` with ``Fraction.limit_denominator`` of this (1000).
        resample_kaiser_beta: beta of the polyphase filter's Kaiser window (5.0).
        normalisation: "robust-zscore": (x - mean) / std of the central ``central``
            fraction of the samples, by value.
        central: that fraction (0.95: the percentiles 2.5 to 97.5, as in SSL-ECG).
        zscore_scope: whose samples the statistics are taken over: "recording" (each
            recording and lead on its own: :func:`~ecgfast.data.iter_windows`, the window
            store) or "subject" (all of a subject's recordings:
            :func:`~ecgfast.data.preprocess_subject`, the dataset cohorts). Serving
            z-scores the recording it is given with its own statistics either way.
        flat_rule: "diff-std": a window is dropped when the std of its sample-to-sample
            difference is below ``flat_threshold`` (see :data:`FLAT_STD_THRESHOLD`).
        flat_threshold: that threshold at 256 Hz (scaled by 256 / fs at other rates).
    """

    target_fs: float = DEFAULT_TARGET_FS
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    overlap: float = 0.0
    highpass: str = "butterworth"
    highpass_hz: float = DEFAULT_HIGHPASS_HZ
    highpass_order: int = 4
    resampler: str = "polyphase"
    resample_max_denominator: int = 1000
    resample_kaiser_beta: float = 5.0
    normalisation: str = "robust-zscore"
    central: float = 0.95
    zscore_scope: str = "recording"
    flat_rule: str = "diff-std"
    flat_threshold: float = FLAT_STD_THRESHOLD

    def __post_init__(self):
        for name, known in CHOICES.items():
            value = getattr(self, name)
            if value not in known:
                raise ContractError(f"{name} {value!r} is not one this version of ecgfast "
                                    f"implements ({', '.join(known)})")
        for name in ("target_fs", "window_seconds", "highpass_hz", "resample_kaiser_beta",
                     "central", "overlap", "flat_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ContractError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("highpass_order", "resample_max_denominator"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ContractError(f"{name} must be an int >= 1, got {value!r}")
        positive = ("target_fs", "window_seconds", "highpass_hz", "resample_kaiser_beta")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ContractError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.overlap < 1:
            raise ContractError(f"overlap must be a fraction in [0, 1), got {self.overlap!r}")
        if not 0 < self.central <= 1:
            raise ContractError(f"central must be in (0, 1], got {self.central!r}")
        if self.flat_threshold < 0:
            raise ContractError(f"flat_threshold must be >= 0, got {self.flat_threshold!r}")

    @property
    def window_length(self) -> int:
        """Samples per window at ``target_fs``."""
        return round(self.window_seconds * self.target_fs)

    @classmethod
    def of(cls, options: dict, where: str, base: Preprocessing | None = None) -> Preprocessing:
        """``base`` (default: the defaults) with the settings named in ``options``;
        TypeError naming ``where`` and the unknown keyword otherwise."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"{where}: unknown pre-processing option(s) {unknown}; "
                            f"known: {sorted(cls.__dataclass_fields__)}")
        if base is not None and not isinstance(base, cls):
            raise TypeError(f"{where}: preprocessing must be a Preprocessing, got "
                            f"{type(base).__name__}")
        return dataclasses.replace(base or cls(), **options)

    def to_record(self, leads=None) -> dict:
        """The JSON-serialisable record of this chain (see the module docstring), with
        the input's ``leads`` names in order (None when they have none)."""
        return {"format": RECORD_FORMAT, "version": CONTRACT_VERSION,
                **dataclasses.asdict(self), "leads": None if leads is None else list(leads)}

    def describe(self) -> str:
        """One line for messages and model cards."""
        hop = self.window_seconds * (1 - self.overlap)
        return (f"{self.highpass} high-pass {self.highpass_hz:g} Hz (order {self.highpass_order}, "
                f"zero phase) -> {self.resampler} resampling to {self.target_fs:g} Hz -> "
                f"{self.normalisation} over the central {self.central:.0%} "
                f"(per {self.zscore_scope}) -> {self.window_seconds:g} s windows every "
                f"{hop:g} s -> windows whose difference std < {self.flat_threshold:g} dropped")


#: The chain of the dataset cohorts and the synthetic cohort: statistics per subject.
SUBJECT_CHAIN = Preprocessing(zscore_scope="subject")


class Contract(NamedTuple):
    """A record read back by :func:`read_contract`."""

    preprocessing: Preprocessing
    leads: tuple[str, ...] | None
    version: int


def read_contract(record, where: str) -> Contract:
    """The :class:`Contract` of ``record`` (a dict, or its JSON text), or
    :class:`ContractError` naming ``where`` and what this version cannot reproduce."""
    if isinstance(record, (str, bytes)):
        try:
            record = json.loads(record)
        except (ValueError, RecursionError) as err:  # a file we did not write
            raise ContractError(f"{where}: unreadable pre-processing record ({err})") from None
    if not isinstance(record, dict):
        raise ContractError(f"{where}: the pre-processing record must be a JSON object, got "
                            f"{type(record).__name__}")
    if record.get("format") != RECORD_FORMAT:
        raise ContractError(f"{where}: the pre-processing record's format is "
                            f"{record.get('format')!r}, not {RECORD_FORMAT!r}")
    version = record.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ContractError(f"{where}: pre-processing record version {version!r} is not a "
                            "version number")
    if version > CONTRACT_VERSION:
        from ecgfast import __version__

        raise ContractError(
            f"{where}: its pre-processing contract is version {version}, written by a newer "
            f"ecgfast; this ecgfast ({__version__}) reproduces versions up to "
            f"{CONTRACT_VERSION}: serve it with the ecgfast version that exported it or later")
    fields = set(Preprocessing.__dataclass_fields__)
    given = set(record) - {"format", "version", "leads"}
    if given - fields:
        raise ContractError(f"{where}: its pre-processing (version {version}) has step(s) or "
                            f"parameter(s) {sorted(given - fields)} that this version does "
                            "not know")
    if fields - given:
        raise ContractError(f"{where}: its pre-processing (version {version}) lacks "
                            f"{sorted(fields - given)}")
    try:
        chain = Preprocessing(**{k: record[k] for k in fields})
    except ContractError as err:
        raise ContractError(f"{where}: its pre-processing cannot be reproduced: {err}") from None
    leads = record.get("leads")
    if leads is not None and (not isinstance(leads, list)
                              or not all(isinstance(n, str) and n for n in leads)):
        raise ContractError(f"{where}: the pre-processing record's leads must be a list of "
                            f"names or null, got {leads!r}")
    return Contract(chain, None if leads is None else tuple(leads), version)


def is_record(value) -> bool:
    """Whether ``value`` claims to be a pre-processing record (it may still be refused
    by :func:`read_contract`); older stores and cohorts kept a looser dict."""
    return isinstance(value, dict) and value.get("format") == RECORD_FORMAT
