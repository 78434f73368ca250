"""ECG data: the ECGSYN model, a SYNTHETIC labelled cohort, readers and pre-processing.

- :func:`ecgsyn`: McSharry et al.'s dynamical ECG model, one lead in mV.
- :class:`Cohort`: labelled z-scored windows (subject, session, labels per task, class
  names, raw scores, provenance) and its ``.npz`` file format (see :mod:`.cohort`).
- :func:`make_cohort`: a synthetic arousal/valence-labelled cohort of z-scored 10 s
  windows at 256 Hz (NOT real affect data; see :mod:`.synthetic`).
- :func:`read_recording` / :class:`Recording`: one lead of a ``.npy``, ``.csv``, WFDB or
  EDF/BDF file; :func:`read_leads` / :class:`MultiLeadRecording`: several leads of one;
  :func:`read_segments`: every contiguous segment of one (EDF+D); :class:`Annotation`:
  an EDF+/BDF+ annotation (see :mod:`.readers`).
- :func:`preprocess` / :func:`iter_windows` / :func:`preprocess_subject` /
  :class:`Windows` (settings: :class:`Preprocessing`): high-pass 0.8 Hz ->
  resample to 256 Hz -> robust z-score -> 10 s windows, and the single steps
  :func:`highpass`, :func:`resample`, :func:`robust_zscore`, :func:`zscore_stats`,
  :func:`window`.
- :class:`WindowStore`: a ``torch.utils.data.Dataset`` over a window store on disk
  (``ecgfast prepare``; :func:`~ecgfast.data.prepare.prepare`).
- :func:`iter_lead_windows` / :func:`preprocess_leads`: the same chain on each lead of a
  (C, n) recording, stacked into (k, C, L) windows (:mod:`.multilead`).
- :class:`ECGDataError`: the ``ValueError`` raised for bad files and signals.

:class:`Preprocessing` is the pre-processing contract (:mod:`.contract`): recorded with
every model, applied by serving. Names are imported on first use, so importing this
package imports neither scipy nor torch.
"""

# Every name is imported on first use (PEP 562): ``ecgfast.data.contract`` (which the ONNX
# runtime reads) costs no scipy, and a reader imports only what it needs.
from ecgfast.data.ecgsyn import ecgsyn as ecgsyn  # eager: the name is also its module's
from ecgfast.lazy import lazy_names

_WHERE = {
    "ECGDataError": "ecgfast.data.errors",
    **dict.fromkeys(("FLAT_STD_THRESHOLD", "Preprocessing"), "ecgfast.data.contract"),
    **dict.fromkeys(("highpass", "resample", "robust_zscore", "zscore_stats"),
                    "ecgfast.data.filters"),
    **dict.fromkeys(("Windows", "is_flat", "iter_windows", "preprocess", "preprocess_subject",
                     "window"), "ecgfast.data.windowing"),
    "iter_lead_windows": "ecgfast.data.multilead",
    "preprocess_leads": "ecgfast.data.multilead",
    "Annotation": "ecgfast.data.leads",
    **dict.fromkeys(("MultiLeadRecording", "Recording", "read_leads",
                     "read_recording", "read_segments"), "ecgfast.data.readers"),
    "Cohort": "ecgfast.data.cohort",
    "make_cohort": "ecgfast.data.synthetic",
    "WindowStore": "ecgfast.data.store",  # a torch Dataset: torch only when asked for
}

__all__ = ["ecgsyn"]
__all__ += list(_WHERE)

__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
