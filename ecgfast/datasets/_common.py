"""What every dataset loader shares: the registry entry, one subject's recordings, and the
driver that pre-processes subject after subject into a labelled :class:`Cohort`.

A loader lists its subjects (``(subject id, file)`` pairs) and reads one subject at a
time into a :class:`SubjectData`; :func:`build_cohort` runs the training pre-processing
on it (:func:`ecgfast.data.preprocess_subject`: 0.8 Hz zero-phase high-pass, polyphase
resampling to 256 Hz, robust z-score over all the subject's samples, 10 s windows),
labels the windows, and drops the raw data before reading the next subject, so peak
memory is one subject's raw data plus the output windows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecgfast import __version__
from ecgfast.data import Cohort, ECGDataError, preprocess_subject
from ecgfast.data.contract import SUBJECT_CHAIN
from ecgfast.data.filters import resample_ratio

BINARY = ("low", "high")

#: The pre-processing every loader applies (z-score statistics per subject), and its
#: record (:mod:`ecgfast.data.contract`) in each cohort's provenance.
CHAIN = SUBJECT_CHAIN
PREPROCESSING = CHAIN.to_record()


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset the library reads from its official files.

    Attributes:
        name: the name ``load_dataset`` takes (``"wesad"``, ...).
        title: the dataset's full name and reference.
        layout: the files and folders expected under ``root``, as text.
        tasks: the label tasks a cohort of this dataset has, in order.
        default_threshold: the rating threshold used when none is given (None: the
            dataset has no ratings to binarise).
        leads: names of the ECG leads (one entry for single-lead datasets).
        load: ``load(root, *, threshold, lead, progress, skip_bad) -> Cohort`` with the
            threshold resolved (a float or None) and ``lead`` an index into ``leads``
            (the fields of :class:`LoadRequest`, which the loaders build from them).
        source_files: ``source_files(root) -> list[Path]``: every file ``load`` reads
            (for the cache key); raises ECGDataError naming what is missing.
        fs: the ECG sampling rate of the files, in Hz.
    """

    name: str
    title: str
    layout: str
    tasks: tuple[str, ...]
    default_threshold: float | None
    leads: tuple[str, ...]
    load: Callable
    source_files: Callable
    fs: float


@dataclass(frozen=True)
class LoadRequest:
    """What :func:`~ecgfast.datasets.load_dataset` resolved for one load and hands to the
    loader: the rating threshold (None for a dataset without ratings), the lead's index
    into ``DatasetInfo.leads``, and the driver's switches (see :func:`build_cohort`)."""

    threshold: float | None = None
    lead: int = 0
    progress: bool = True
    skip_bad: bool = False


@dataclass
class Trial:
    """One recording of a subject.

    ``labels``/``scores`` hold the trial's constant labels and ratings; or ``per_window``
    maps the windows' raw sample bounds ``(lo, hi)`` (arrays, at the file's rate) to
    ``(keep, labels, scores, dropped)``: a bool mask, (n_kept,) arrays per task and
    rating, and counts of the windows dropped per reason.
    """

    signal: np.ndarray
    name: str
    labels: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    per_window: Callable | None = None


@dataclass
class SubjectData:
    """Everything a loader read for one subject: its trials, the drops it counted, and
    the trials it skipped (reason -> trial names), recorded per subject in provenance.
    A subject may have no trials left (every one skipped): it then gives no windows."""

    subject: int
    fs: float
    trials: list[Trial]
    dropped: dict = field(default_factory=dict)
    skipped_trials: dict = field(default_factory=dict)


def dataset_error(path, what: str, layout: str | None = None) -> ECGDataError:
    """An ECGDataError naming ``path``; with ``layout``, the layout expected is appended."""
    text = f"{path}: {what}"
    if layout:
        text += "\nexpected layout:\n" + layout
    return ECGDataError(text)


def check_root(root, layout: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise dataset_error(root, "dataset root not found", layout)
    return root


def check_range(values, low: float, high: float, where: str) -> np.ndarray:
    """``values`` as float64, or ECGDataError naming ``where`` if any is NaN or outside
    [low, high]."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(v) | (v < low) | (v > high)
    if bad.any():
        i = int(np.argmax(bad))
        raise ECGDataError(
            f"{where}: rating {float(v[i])!r} (entry {i}) outside the scale [{low:g}, {high:g}]"
        )
    return v


def binarise(score: float, threshold: float) -> int:
    """1 (high) when ``score`` is strictly greater than ``threshold``, else 0 (low)."""
    return int(score > threshold)


def rated_trial(signal, name: str, scores: dict, threshold: float, **labels) -> Trial:
    """A trial with constant ``scores`` (ratings), each binarised at ``threshold`` into the
    label of the same name, plus any other constant ``labels``."""
    binary = {t: binarise(v, threshold) for t, v in scores.items()}
    return Trial(np.ascontiguousarray(signal), name, labels={**labels, **binary},
                 scores=dict(scores))


def threshold_rule(task: str, threshold: float, scale: str) -> str:
    return f"{task}: 1 (high) iff the rating > {threshold:g} (scale {scale}), else 0 (low)"


def rated_tasks(tasks, threshold: float, scale: str, note: str = "") -> tuple[dict, dict]:
    """``(classes, rules)`` of ``tasks`` whose ratings on ``scale`` are binarised at
    ``threshold`` (low/high), each rule followed by ``note``."""
    return ({t: BINARY for t in tasks},
            {t: threshold_rule(t, threshold, scale) + note for t in tasks})


def add_counts(total: dict, counts: dict) -> None:
    for key, n in counts.items():
        total[key] = total.get(key, 0) + int(n)


def _progress(items, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="subject", disable=not enabled)


def build_cohort(
    info: DatasetInfo,
    root: Path,
    subjects: list[tuple[int, Path]],
    read: Callable[[int, Path], SubjectData],
    request: LoadRequest,
    *,
    classes: dict[str, tuple[str, ...]],
    score_names: tuple[str, ...],
    provenance: dict,
) -> Cohort:
    """Read, pre-process and label ``subjects`` one at a time into a Cohort.

    ``read(subject_id, path)`` returns the subject's :class:`SubjectData`. A subject
    whose reading or pre-processing raises ECGDataError stops the load, or with
    ``request.skip_bad`` is skipped, warned about and listed in
    ``provenance["skipped_subjects"]``. The cohort's provenance holds the dataset, the
    request's threshold and lead (index and name, plus any ``provenance["lead"]`` extras),
    ``provenance``, the pre-processing, the version and the counts (windows, subjects,
    sessions, windows per class of every task, dropped windows).
    """
    parts: dict[str, list] = {"windows": [], "subject": [], "session": []}
    labels = {t: [] for t in classes}
    scores = {s: [] for s in score_names}
    dropped: dict[str, int] = {}
    skipped, skipped_trials = [], {}
    session = 0
    target_fs = CHAIN.target_fs
    for sid, path in _progress(subjects, info.name, request.progress):
        try:
            data = read(sid, path)
            wins = preprocess_subject(
                [t.signal for t in data.trials],
                data.fs,
                sources=[t.name for t in data.trials],
                source=f"{path}: subject {sid}",
                preprocessing=CHAIN,
            ) if data.trials else []
            up, down = resample_ratio(data.fs, target_fs, CHAIN.resample_max_denominator)
            found = []
            for trial, w in zip(data.trials, wins):
                a = np.rint(w.starts_s * target_fs).astype(np.int64)
                b = a + CHAIN.window_length
                lo, hi = a * down // up, np.minimum(-(-b * down // up), trial.signal.shape[0])
                keep, lab, sco, drop = _label(trial, lo, hi, len(w))
                found.append((w.windows[keep], lab, sco, drop, w.n_skipped_flat))
        except ECGDataError as exc:
            if not request.skip_bad:
                raise
            warnings.warn(f"{info.name}: skipping subject {sid} ({path}): {exc}", stacklevel=3)
            skipped.append({"subject": int(sid), "file": str(path), "reason": str(exc)})
            continue
        add_counts(dropped, data.dropped)
        if any(data.skipped_trials.values()):
            skipped_trials[str(sid)] = {k: list(v) for k, v in data.skipped_trials.items() if v}
        for win, lab, sco, drop, n_flat in found:
            add_counts(dropped, {**drop, "flat_windows": n_flat})
            n = win.shape[0]
            parts["windows"].append(win)
            parts["subject"].append(np.full(n, sid, dtype=np.int64))
            parts["session"].append(np.full(n, session, dtype=np.int64))
            for t, per_task in labels.items():
                per_task.append(np.asarray(lab[t], dtype=np.int64))
            for s, per_score in scores.items():
                per_score.append(np.asarray(sco[s], dtype=np.float64))
            session += 1
        del data, wins, found
    if not parts["windows"]:
        raise dataset_error(root, f"no usable windows in {len(subjects)} subject(s)"
                            + (f"; skipped: {skipped}" if skipped else ""))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    task_labels = {t: np.concatenate(v) for t, v in labels.items()}
    prov = {
        "dataset": info.name,
        "title": info.title,
        "root": str(Path(root).resolve()),
        "threshold": request.threshold,
        **provenance,
        "lead": {"index": request.lead, "name": info.leads[request.lead],
                 **provenance.get("lead", {})},
        "preprocessing": dict(PREPROCESSING),
        "ecgfast_version": __version__,
        "counts": {
            "windows": int(cat["windows"].shape[0]),
            "subjects": int(np.unique(cat["subject"]).size),
            "sessions": session,
            "windows_per_class": {t: {c: int((task_labels[t] == i).sum())
                                      for i, c in enumerate(classes[t])} for t in classes},
            "dropped": dropped,
        },
        "skipped_subjects": skipped,
        "skipped_trials": skipped_trials,
    }
    return Cohort(
        windows=cat["windows"],
        subject=cat["subject"],
        session=cat["session"],
        fs=target_fs,
        labels=task_labels,
        classes=classes,
        scores={s: np.concatenate(v) for s, v in scores.items()},
        provenance=prov,
    )


def _label(trial: Trial, lo, hi, n: int):
    if trial.per_window is not None:
        return trial.per_window(lo, hi)
    lab = {t: np.full(n, v, dtype=np.int64) for t, v in trial.labels.items()}
    sco = {s: np.full(n, v, dtype=np.float64) for s, v in trial.scores.items()}
    return np.ones(n, dtype=bool), lab, sco, {}


def resolve_threshold(info: DatasetInfo, threshold) -> float | None:
    if threshold is None:
        return info.default_threshold
    if info.default_threshold is None:
        raise ValueError(f"{info.name}: has no ratings to binarise; threshold does not apply")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(
        threshold
    ):
        raise ValueError(f"{info.name}: threshold must be a finite number, got {threshold!r}")
    return float(threshold)


def resolve_lead(info: DatasetInfo, lead) -> int:
    if lead is None:
        return 0
    if isinstance(lead, str):
        names = [n.lower() for n in info.leads]
        if lead.lower() in names:
            return names.index(lead.lower())
        if lead.isdigit():
            lead = int(lead)
    if isinstance(lead, (int, np.integer)) and not isinstance(lead, bool) \
            and 0 <= lead < len(info.leads):
        return int(lead)
    raise ValueError(
        f"{info.name}: unknown lead {lead!r}; the leads are "
        + ", ".join(f"{i} ({n})" for i, n in enumerate(info.leads))
    )
