"""WESAD (Schmidt et al., ICMI 2018) from its released pickles.

Expected layout (``root`` is the ``WESAD`` folder, or the folder that holds it)::

    WESAD/S2/S2.pkl, WESAD/S3/S3.pkl, ..., WESAD/S17/S17.pkl

(15 subjects: S1 and S12 were discarded by the authors; the readmes, questionnaires,
RespiBAN text and Empatica zips beside each pickle are not needed). Each ``SX.pkl`` is a
Python 2 pickle of a dict with ``signal["chest"]["ECG"]`` (N, 1), the RespiBAN chest ECG
at 700 Hz, and ``label`` (N,), one code per 700 Hz sample: 0 transient, 1 baseline,
2 stress (TSST), 3 amusement, 4 meditation, 5-7 to be ignored. It is read with a
restricted unpickler (:mod:`ecgfast.datasets.safe_pickle`) that never runs code.

Tasks: ``affect`` (baseline 0, stress 1, amusement 2, meditation 3, from codes 1-4, as
SSL-ECG) and ``stress`` (stress 1 vs the other three 0). A window is kept only when all
of the 700 Hz samples it was resampled from carry one code in 1-4; windows that straddle
codes or lie in codes 0 or 5-7 are dropped and counted in the provenance.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ecgfast.data import Cohort, ECGDataError
from ecgfast.datasets._common import (
    DatasetInfo,
    LoadRequest,
    SubjectData,
    Trial,
    build_cohort,
    check_root,
    dataset_error,
)
from ecgfast.datasets.safe_pickle import load_pickle

FS = 700.0
AFFECT_CLASSES = ("baseline", "stress", "amusement", "meditation")
STRESS_CLASSES = ("other", "stress")
LAYOUT = """\
WESAD/                  root (or the folder that holds WESAD/)
  S2/S2.pkl             one Python 2 pickle per subject: signal.chest.ECG (N, 1) at 700 Hz,
  S3/S3.pkl             label (N,) codes 0-7 per sample (1 baseline, 2 stress,
  ...                   3 amusement, 4 meditation; 0 and 5-7 are dropped)
  S17/S17.pkl           (15 subjects: S2-S11, S13-S17)"""

_SUBJECT_DIR = re.compile(r"^S(\d+)$", re.IGNORECASE)


def subjects(root) -> list[tuple[int, Path]]:
    """(subject number, pickle path) of every ``S<N>/`` folder under ``root``, sorted."""
    root = check_root(root, LAYOUT)
    base = root
    if not _subject_dirs(base) and (root / "WESAD").is_dir():
        base = root / "WESAD"
    found = _subject_dirs(base)
    if not found:
        raise dataset_error(root, "no subject folders S<N>/ found", LAYOUT)
    return [(n, d / f"{d.name}.pkl") for n, d in found]


def _subject_dirs(base: Path) -> list[tuple[int, Path]]:
    if not base.is_dir():
        return []
    out = []
    for d in base.iterdir():
        m = _SUBJECT_DIR.match(d.name)
        if m and d.is_dir():
            out.append((int(m.group(1)), d))
    return sorted(out)


def source_files(root) -> list[Path]:
    return [p for _, p in subjects(root)]


def _field(obj, keys: tuple[str, ...], path: Path):
    for i, key in enumerate(keys):
        if not isinstance(obj, dict) or key not in obj:
            have = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise ECGDataError(f"{path}: no field {'.'.join(keys[: i + 1])!r} (found {have})")
        obj = obj[key]
    return obj


def read_subject(subject: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The chest ECG (N,) float64 and the (N,) int64 label codes of one pickle."""
    if not path.is_file():
        raise dataset_error(path, "file not found", LAYOUT)
    data = load_pickle(path)
    ecg = np.asarray(_field(data, ("signal", "chest", "ECG"), path))
    label = np.asarray(_field(data, ("label",), path))
    del data
    if ecg.dtype.kind not in "fiu" or not (ecg.ndim == 1 or (ecg.ndim == 2 and ecg.shape[1] == 1)):
        raise ECGDataError(
            f"{path}: signal.chest.ECG must be a numeric (N, 1) array, got {ecg.dtype} of "
            f"shape {ecg.shape}"
        )
    if label.dtype.kind not in "iu" and not (
        label.dtype.kind == "f" and np.array_equal(label, np.round(label))
    ):
        raise ECGDataError(f"{path}: label must hold integer codes, got dtype {label.dtype}")
    ecg = ecg.reshape(-1).astype(np.float64)
    label = label.reshape(-1).astype(np.int64)
    if label.shape[0] != ecg.shape[0]:
        raise ECGDataError(
            f"{path}: label has {label.shape[0]} samples but signal.chest.ECG has "
            f"{ecg.shape[0]}: both are sampled at {FS:g} Hz and must align"
        )
    if label.size and (label.min() < 0 or label.max() > 7):
        bad = int(np.argmax((label < 0) | (label > 7)))
        raise ECGDataError(f"{path}: label code {label[bad]} at sample {bad} is outside 0-7")
    return ecg, label


def _labeller(label: np.ndarray):
    def per_window(lo, hi):
        codes = np.full(lo.shape[0], -1, dtype=np.int64)
        dropped = {"windows_straddling_codes": 0, "windows_code_0": 0, "windows_codes_5_7": 0}
        for i, (a, b) in enumerate(zip(lo, hi)):
            seg = label[a:b]
            first = seg[0]
            if (seg != first).any():
                dropped["windows_straddling_codes"] += 1
            elif first == 0:
                dropped["windows_code_0"] += 1
            elif first >= 5:
                dropped["windows_codes_5_7"] += 1
            else:
                codes[i] = first
        keep = codes > 0
        affect = codes[keep] - 1
        labels = {"affect": affect, "stress": (affect == 1).astype(np.int64)}
        return keep, labels, {}, dropped

    return per_window


def _read(subject: int, path: Path) -> SubjectData:
    ecg, label = read_subject(subject, path)
    trial = Trial(ecg, f"{path}: signal.chest.ECG", per_window=_labeller(label))
    return SubjectData(subject, FS, [trial])


RULES = {
    "affect": "code 1 baseline -> 0, 2 stress -> 1, 3 amusement -> 2, 4 meditation -> 3; "
    "only windows whose 700 Hz samples all carry one code in 1-4 (straddling windows and "
    "codes 0, 5-7 dropped and counted)",
    "stress": "1 iff affect is stress (code 2), else 0",
}


def load(root, **options) -> Cohort:
    """Load WESAD (layout in the module docstring) into a :class:`~ecgfast.data.Cohort`
    with tasks ``affect`` and ``stress``, one session per subject."""
    request = LoadRequest(**options)
    return build_cohort(INFO, Path(root), subjects(root), _read, request,
                        classes={"affect": AFFECT_CLASSES, "stress": STRESS_CLASSES},
                        score_names=(), provenance={"rules": RULES})


INFO = DatasetInfo(
    name="wesad", title="WESAD: Wearable Stress and Affect Detection (Schmidt et al., ICMI 2018)",
    layout=LAYOUT, tasks=("affect", "stress"), default_threshold=None, leads=("chest ECG",),
    fs=FS, load=load, source_files=source_files)
