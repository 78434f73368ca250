"""ECG data: the ECGSYN model, a SYNTHETIC labelled cohort, readers and pre-processing.

- :func:`ecgsyn`: McSharry et al.'s dynamical ECG model, one lead in mV.
- :class:`Cohort`: labelled z-scored windows (subject, session, labels per task, class
  names, raw scores, provenance) and its ``.npz`` file format (see :mod:`.cohort`).
- :func:`make_cohort`: a synthetic arousal/valence-labelled cohort of z-scored 10 s
  windows at 256 Hz (NOT real affect data; see :mod:`.synthetic`).
- :func:`read_recording` / :class:`Recording`: one lead of a ``.npy``, ``.csv`` or WFDB
  file; :func:`read_leads` / :class:`MultiLeadRecording`: several leads of one.
- :func:`preprocess` / :func:`iter_windows` / :func:`preprocess_subject` /
  :class:`Windows` (settings: :class:`Preprocessing`): high-pass 0.8 Hz ->
  resample to 256 Hz -> robust z-score -> 10 s windows, and the single steps
  :func:`highpass`, :func:`resample`, :func:`robust_zscore`, :func:`zscore_stats`,
  :func:`window`.
- :class:`WindowStore`: a ``torch.utils.data.Dataset`` over a window store on disk
  (``ecgfast prepare``; :func:`~ecgfast.data.prepare.prepare`), imported on first use
  so that this package does not import torch.
- :func:`iter_lead_windows` / :func:`preprocess_leads`: the same chain on each lead of a
  (C, n) recording, stacked into (k, C, L) windows (:mod:`.multilead`).
- :class:`ECGDataError`: the ``ValueError`` raised for bad files and signals.
"""

from ecgfast.data.cohort import Cohort
from ecgfast.data.ecgsyn import ecgsyn
from ecgfast.data.errors import ECGDataError
from ecgfast.data.filters import highpass, resample, robust_zscore, zscore_stats
from ecgfast.data.multilead import iter_lead_windows, preprocess_leads
from ecgfast.data.readers import MultiLeadRecording, Recording, read_leads, read_recording
from ecgfast.data.synthetic import make_cohort
from ecgfast.data.windowing import (
    FLAT_STD_THRESHOLD,
    Preprocessing,
    Windows,
    is_flat,
    iter_windows,
    preprocess,
    preprocess_subject,
    window,
)

__all__ = [
    "FLAT_STD_THRESHOLD",
    "Cohort",
    "ECGDataError",
    "MultiLeadRecording",
    "Preprocessing",
    "Recording",
    "WindowStore",
    "Windows",
    "ecgsyn",
    "highpass",
    "is_flat",
    "iter_lead_windows",
    "iter_windows",
    "make_cohort",
    "preprocess",
    "preprocess_leads",
    "preprocess_subject",
    "read_leads",
    "read_recording",
    "resample",
    "robust_zscore",
    "window",
    "zscore_stats",
]


def __getattr__(name):
    if name == "WindowStore":  # torch only when asked for
        from ecgfast.data.store import WindowStore

        return WindowStore
    raise AttributeError(f"module 'ecgfast.data' has no attribute {name!r}")
