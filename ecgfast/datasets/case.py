"""CASE (Sharma et al., Scientific Data 2019) from its interpolated CSV tree.

Expected layout: ``root`` is the CASE folder (holding ``data/interpolated/``), its
``data/`` folder, or ``interpolated/`` itself, with

    interpolated/physiological/sub_<N>.csv   columns daqtime (ms), ecg (mV), bvp, gsr,
                                             rsp, skt, emg_zygo, emg_coru, emg_trap,
                                             video; 1000 Hz
    interpolated/annotations/sub_<N>.csv     columns jstime (ms), valence, arousal,
                                             video; joystick ratings on 0.5-9.5

Tasks ``arousal`` and ``valence``: ``scores[task]`` is the mean annotation over the
window's 10 s (the annotation samples with daqtime(start) <= jstime < daqtime(start) +
10 000 ms), the label 1 (high) when that mean is strictly greater than ``threshold``
(default 5), else 0. Windows without annotation samples are dropped and counted. The
sampling rate implied by ``daqtime`` must be 1000 Hz. One session per subject.
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
    check_range,
    check_root,
    dataset_error,
    rated_tasks,
)
from ecgfast.datasets.tables import read_numeric

FS = 1000.0
TASKS = ("arousal", "valence")
SCALE = (0.5, 9.5)
LAYOUT = """\
CASE/data/interpolated/         root: CASE/, CASE/data/ or interpolated/ itself
  physiological/sub_1.csv ...   daqtime (ms), ecg (mV), bvp, gsr, rsp, skt, emg_*, video;
                                1000 Hz
  annotations/sub_1.csv ...     jstime (ms), valence, arousal, video; 0.5-9.5"""

_NAME = re.compile(r"^sub_?(\d+)\.csv$", re.IGNORECASE)


def _base(root: Path) -> Path:
    for base in (root / "data" / "interpolated", root / "interpolated", root):
        if (base / "physiological").is_dir():
            return base
    raise dataset_error(root, "no interpolated/physiological/ folder found", LAYOUT)


def subjects(root) -> list[tuple[int, Path]]:
    """(subject number, physiological CSV), sorted; each needs its annotations CSV."""
    base = _base(check_root(root, LAYOUT))
    found = []
    for p in (base / "physiological").iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    if not found:
        raise dataset_error(base / "physiological", "no sub_<N>.csv files found", LAYOUT)
    return sorted(found)


def _annotation_file(path: Path) -> Path:
    return path.parent.parent / "annotations" / path.name


def source_files(root) -> list[Path]:
    return [q for _, p in subjects(root) for q in (p, _annotation_file(p))]


def _read(threshold: float):
    def read(sid: int, path: Path) -> SubjectData:
        ann_path = _annotation_file(path)
        if not ann_path.is_file():
            raise dataset_error(ann_path, f"file not found (the annotations of {path.name})",
                                LAYOUT)
        _, phys = read_numeric(path, columns=("daqtime", "ecg"))
        _, ann = read_numeric(ann_path, columns=("jstime", "valence", "arousal"))
        daqtime, ecg = phys[:, 0], np.ascontiguousarray(phys[:, 1])
        del phys
        _check_clock(daqtime, path, "daqtime")
        _check_clock(ann[:, 0], ann_path, "jstime")
        steps = np.diff(daqtime)
        rate = 1000.0 / float(np.median(steps)) if steps.size else float("nan")
        if not abs(rate - FS) <= 0.01 * FS:
            raise ECGDataError(
                f"{path}: daqtime steps imply {rate:g} Hz; CASE's interpolated data is "
                f"{FS:g} Hz"
            )
        jstime = ann[:, 0]
        values = {t: check_range(ann[:, 1 + i], *SCALE, f"{ann_path}: column {t}")
                  for i, t in enumerate(("valence", "arousal"))}
        sums = {t: np.concatenate([[0.0], np.cumsum(v)]) for t, v in values.items()}
        span_ms = 1000.0 * 10.0

        def per_window(lo, hi):
            t0 = daqtime[lo]
            a = np.searchsorted(jstime, t0, side="left")
            b = np.searchsorted(jstime, t0 + span_ms, side="left")
            keep = b > a
            scores = {t: (sums[t][b[keep]] - sums[t][a[keep]]) / (b[keep] - a[keep])
                      for t in TASKS}
            labels = {t: (scores[t] > threshold).astype(np.int64) for t in TASKS}
            return keep, labels, scores, {"windows_without_annotation": int((~keep).sum())}

        return SubjectData(sid, FS, [Trial(ecg, f"{path}: column ecg", per_window=per_window)])

    return read


def _check_clock(t: np.ndarray, path: Path, name: str) -> None:
    if t.size == 0 or not np.isfinite(t).all() or (t.size > 1 and (np.diff(t) <= 0).any()):
        raise ECGDataError(f"{path}: column {name} must be finite and strictly increasing (ms)")


def load(root, **options) -> Cohort:
    """Load CASE (layout in the module docstring) into a :class:`~ecgfast.data.Cohort`
    with tasks arousal and valence and the windows' mean annotations as scores."""
    request = LoadRequest(**options)
    classes, rules = rated_tasks(TASKS, request.threshold, "0.5-9.5",
                                 "; the rating is the mean annotation over the window's 10 s")
    return build_cohort(INFO, Path(root), subjects(root), _read(request.threshold), request,
                        classes=classes, score_names=TASKS, provenance={"rules": rules})


INFO = DatasetInfo(
    name="case",
    title="CASE: Continuously Annotated Signals of Emotion (Sharma et al., Sci. Data 2019)",
    layout=LAYOUT, tasks=TASKS, default_threshold=5.0, leads=("ecg",),
    fs=FS, load=load, source_files=source_files)
