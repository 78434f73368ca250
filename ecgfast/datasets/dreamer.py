"""DREAMER (Katsigiannis & Ramzan, IEEE JBHI 2017) from its single ``DREAMER.mat``.

Expected layout: ``root`` is ``DREAMER.mat`` itself or a folder holding it. The file is
MATLAB v5 with a struct ``DREAMER``: ``ECG_SamplingRate`` (256), ``Data`` (a 1 x 23 cell
of subject structs). Each subject has ``ECG.stimuli`` (an 18 x 1 cell: one
(n_samples x 2) array per film clip, two leads at 256 Hz; ``ECG.baseline`` is not used)
and ``ScoreArousal``, ``ScoreValence``, ``ScoreDominance`` (18 integers on 1-5).

Tasks ``arousal``, ``valence``, ``dominance``: ``scores[task]`` holds the clip's rating
and the label is 1 (high) when the rating is strictly greater than ``threshold``
(default 3, the midpoint of 1-5), else 0. One session per (subject, clip). The file
holds every subject, so it is read whole (peak memory: the file plus the windows); each
subject's arrays are released once its windows are cut.
"""

from __future__ import annotations

import math
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

FS = 256.0
TASKS = ("arousal", "valence", "dominance")
SCORE_FIELDS = {"arousal": "ScoreArousal", "valence": "ScoreValence",
                "dominance": "ScoreDominance"}
SCALE = (1.0, 5.0)
LAYOUT = """\
DREAMER.mat             root (or the folder that holds it): MATLAB v5, struct DREAMER with
  ECG_SamplingRate      256
  Data                  1 x 23 cell of subject structs, each with
    ECG.stimuli         18 x 1 cell of (n_samples x 2) ECG arrays, one per clip, 256 Hz
    ScoreArousal        18 ratings on 1-5 (also ScoreValence, ScoreDominance)"""


def source_files(root) -> list[Path]:
    root = check_root(root, LAYOUT)
    if root.is_file():
        return [root]
    found = [p for p in root.iterdir() if p.name.lower() == "dreamer.mat"]
    if not found:
        raise dataset_error(root, "DREAMER.mat not found", LAYOUT)
    return found[:1]


def _subject_reader(path: Path, data: np.ndarray, lead: int, threshold: float):
    def read(sid: int, _path: Path) -> SubjectData:
        subj, data[sid - 1] = data[sid - 1], None  # release the subject's arrays after use
        where = f"DREAMER.Data{{{sid}}}"
        stimuli = cells(field(field(subj, "ECG", path, where), "stimuli", path, f"{where}.ECG"))
        ratings = {}
        for task, name in SCORE_FIELDS.items():
            v = numeric(np.atleast_1d(field(subj, name, path, where)), path, f"{where}.{name}")
            ratings[task] = check_range(v, *SCALE, f"{path}: {where}.{name}")
            if ratings[task].size != stimuli.size:
                raise ECGDataError(
                    f"{path}: {where}.{name} has {ratings[task].size} ratings but "
                    f"{where}.ECG.stimuli has {stimuli.size} clips"
                )
        trials = []
        for k, clip in enumerate(stimuli):
            name = f"{where}.ECG.stimuli{{{k + 1}}}"
            x = numeric(clip, path, name, ndim=2)
            if x.shape[1] <= lead:
                raise ECGDataError(f"{path}: {name} has {x.shape[1]} lead column(s), no lead "
                                   f"{lead}")
            scores = {t: float(ratings[t][k]) for t in TASKS}
            trials.append(rated_trial(x[:, lead], f"{path}: {name} lead {lead}", scores,
                                      threshold))
        return SubjectData(sid, FS, trials)

    return read


def load(root, **options) -> Cohort:
    """Load DREAMER (layout in the module docstring) into a :class:`~ecgfast.data.Cohort`
    with tasks arousal, valence, dominance and their ratings as scores."""
    request = LoadRequest(**options)
    (path,) = source_files(root)
    mat = loadmat(path)
    top = field(mat, "DREAMER", path, "")
    rate = field(top, "ECG_SamplingRate", path, "DREAMER")
    try:
        rate = float(np.asarray(rate).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise ECGDataError(f"{path}: DREAMER.ECG_SamplingRate is not a number: {rate!r}") from None
    if not math.isclose(rate, FS):
        raise ECGDataError(
            f"{path}: DREAMER.ECG_SamplingRate is {rate:g} Hz; DREAMER's ECG is {FS:g} Hz"
        )
    data = cells(field(top, "Data", path, "DREAMER"))
    del mat, top
    subjects = [(i + 1, path) for i in range(data.size)]
    classes, rules = rated_tasks(TASKS, request.threshold, "1-5")
    provenance = {"rules": rules,
                  "recordings": "ECG.stimuli (the film clips), not ECG.baseline"}
    return build_cohort(INFO, Path(root), subjects,
                        _subject_reader(path, data, request.lead, request.threshold), request,
                        classes=classes, score_names=TASKS, provenance=provenance)


INFO = DatasetInfo(
    name="dreamer", title="DREAMER (Katsigiannis & Ramzan, IEEE JBHI 2017)",
    layout=LAYOUT, tasks=TASKS, default_threshold=3.0, leads=("ECG lead 1", "ECG lead 2"),
    fs=FS, load=load, source_files=source_files)
