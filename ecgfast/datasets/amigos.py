"""AMIGOS (Miranda-Correa et al., IEEE TAC 2018) from its pre-processed release.

Expected layout: ``root`` holds ``Data_Preprocessed_P01.mat`` ... ``P40.mat``, either
directly or each inside its own folder of the same name (both as the release unpacks).
Each is MATLAB v5 with ``joined_data`` (a 1 x 20 cell: one (n x 17) array per trial at
128 Hz; columns 14 and 15 are the right and left ECG) and ``labels_selfassessment``
(1 x 20 cell: a 1 x 12 row per trial, arousal, valence, dominance first, on 1-9).

Tasks ``arousal``, ``valence``, ``dominance``: ``scores[task]`` is the trial's rating, the
label 1 (high) when it is strictly greater than ``threshold`` (default 5, the midpoint of
1-9), else 0. Skipped and counted (``counts.dropped``), and listed per participant
(``provenance["skipped_trials"]``, trials numbered from 1 as in MATLAB): empty trials
(participants who skipped the long videos), trials whose chosen ECG column holds NaN or
Inf (real pre-processed files have them), and trials without ratings (an empty rating
row, or NaN among arousal, valence, dominance). A participant left with no trial gives no
windows (and is listed in the counts); ``skip_bad`` is for unreadable files only.
``lead`` picks the right (0, column 14, default) or left (1, column 15) ECG.
One session per (participant, trial); one participant's file is read at a time.
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
    build_cohort,
    check_range,
    check_root,
    dataset_error,
    rated_tasks,
    rated_trial,
)
from ecgfast.datasets.matfile import cells, field, loadmat, numeric

FS = 128.0
TASKS = ("arousal", "valence", "dominance")
ECG_COLUMNS = (14, 15)
SCALE = (1.0, 9.0)
LAYOUT = """\
AMIGOS pre-processed release: root holds, flat or each in a folder of the same name,
  Data_Preprocessed_P01.mat ... Data_Preprocessed_P40.mat   MATLAB v5, each with
    joined_data             1 x 20 cell of (n x 17) arrays at 128 Hz; columns 14, 15 = ECG
                            right, left (empty arrays for skipped trials)
    labels_selfassessment   1 x 20 cell of 1 x 12 rows: arousal, valence, dominance, ...
                            on 1-9"""

_NAME = re.compile(r"^Data_Preprocessed_P(\d+)\.mat$", re.IGNORECASE)


def subjects(root) -> list[tuple[int, Path]]:
    """(participant number, .mat path), sorted; flat files and per-file folders both."""
    root = check_root(root, LAYOUT)
    found: dict[int, Path] = {}
    candidates = [root] if root.is_file() else list(root.iterdir())
    for p in candidates:
        inner = [q for q in p.iterdir()] if p.is_dir() else [p]
        for q in inner:
            m = _NAME.match(q.name)
            if m and q.is_file():
                n = int(m.group(1))
                if n in found:
                    raise dataset_error(q, f"participant {n} also in {found[n]}")
                found[n] = q
    if not found:
        raise dataset_error(root, "no Data_Preprocessed_P<NN>.mat files found", LAYOUT)
    return sorted(found.items())


def source_files(root) -> list[Path]:
    return [p for _, p in subjects(root)]


def _reader(lead: int, threshold: float):
    column = ECG_COLUMNS[lead]

    def read(sid: int, path: Path) -> SubjectData:
        mat = loadmat(path)
        trials_data = cells(field(mat, "joined_data", path, ""))
        ratings = cells(field(mat, "labels_selfassessment", path, ""))
        del mat
        if ratings.size != trials_data.size:
            raise ECGDataError(f"{path}: labels_selfassessment has {ratings.size} trials but "
                               f"joined_data has {trials_data.size}")
        trials, skipped = [], {"empty": [], "nan_ecg": [], "unrated": []}
        for k, (x, row) in enumerate(zip(trials_data, ratings)):
            name = f"joined_data{{{k + 1}}}"
            x = numeric(x, path, name)
            row = numeric(row, path, f"labels_selfassessment{{{k + 1}}}").reshape(-1)
            if x.size == 0:
                skipped["empty"].append(k + 1)
                continue
            if x.ndim != 2 or x.shape[1] <= column:
                raise ECGDataError(f"{path}: {name} must be (n x 17) with the ECG in columns "
                                   f"14-15, got shape {x.shape}")
            if not np.isfinite(x[:, column]).all():
                skipped["nan_ecg"].append(k + 1)
                continue
            if row.size == 0 or (row.size >= 3 and np.isnan(row[:3]).any()):
                skipped["unrated"].append(k + 1)
                continue
            if row.size < 3:
                raise ECGDataError(f"{path}: labels_selfassessment{{{k + 1}}} has {row.size} "
                                   "values; needs arousal, valence, dominance")
            values = check_range(row[:3], *SCALE, f"{path}: labels_selfassessment{{{k + 1}}}")
            scores = dict(zip(TASKS, map(float, values)))
            trials.append(rated_trial(x[:, column], f"{path}: {name} column {column}", scores,
                                      threshold))
        dropped = {f"{reason}_trials": len(v) for reason, v in skipped.items()}
        if not trials:
            dropped["participants_without_usable_trials"] = 1
        return SubjectData(sid, FS, trials, dropped=dropped, skipped_trials=skipped)

    return read


def load(root, **options) -> Cohort:
    """Load AMIGOS (layout in the module docstring) into a :class:`~ecgfast.data.Cohort`
    with tasks arousal, valence, dominance and their ratings as scores."""
    request = LoadRequest(**options)
    classes, rules = rated_tasks(TASKS, request.threshold, "1-9")
    provenance = {"rules": rules,
                  "recordings": "joined_data trials; empty trials, trials whose ECG column holds "
                  "NaN/Inf and trials without ratings skipped, counted and listed per "
                  "participant (skipped_trials)",
                  "lead": {"column": ECG_COLUMNS[request.lead]}}
    return build_cohort(INFO, Path(root), subjects(root),
                        _reader(request.lead, request.threshold), request,
                        classes=classes, score_names=TASKS, provenance=provenance)


INFO = DatasetInfo(
    name="amigos", title="AMIGOS (Miranda-Correa et al., IEEE TAC 2018), pre-processed release",
    layout=LAYOUT, tasks=TASKS, default_threshold=5.0, leads=("ECG right", "ECG left"),
    fs=FS, load=load, source_files=source_files)
