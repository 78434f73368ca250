"""PhysioNet "EEG During Mental Arithmetic Tasks" (eegmat; Zyma et al., Data 2019).

Expected layout: ``root`` holds, directly or in one folder below it (such as
``eeg-during-mental-arithmetic-tasks-1.0.0/``),

    SubjectNN_1.edf     rest before the task (about 3 min), NN = 00-35
    SubjectNN_2.edf     mental serial subtraction (about a minute)
    subject-info.csv    Subject (Subject00 ...), Age, Gender, Recording year,
                        Number of subtractions, Count quality (0 bad, 1 good)

Each EDF+ file holds 19 EEG channels, ``EEG A2-A1`` and the ``ECG ECG`` channel (mV,
500 Hz), read through :func:`ecgfast.data.read_recording` (the ECG at its own rate, in
mV). The subject id is NN; each recording is a session.

Tasks: ``arithmetic`` (per recording: rest 0, serial subtraction 1) and
``count_quality`` (per subject, from ``subject-info.csv``: 0 bad, 1 good counter).
``scores["subtractions"]`` is the subject's number of subtractions in the task.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ecgfast.data import Cohort, ECGDataError, read_recording
from ecgfast.datasets._common import (
    DatasetInfo,
    LoadRequest,
    SubjectData,
    Trial,
    build_cohort,
    check_root,
    dataset_error,
)
from ecgfast.datasets.tables import read_rows

FS = 500.0
LEAD = "ECG ECG"
INFO_FILE = "subject-info.csv"
CLASSES = {"arithmetic": ("rest", "subtraction"), "count_quality": ("bad", "good")}
RULES = {
    "arithmetic": "SubjectNN_1.edf (rest before the task) -> 0 (rest), SubjectNN_2.edf "
                  "(serial subtraction) -> 1 (subtraction)",
    "count_quality": "subject-info.csv 'Count quality': 0 -> 0 (bad), 1 -> 1 (good)",
}
LAYOUT = """\
ROOT/ (or one folder below it)
  Subject00_1.edf ...   rest before the task, EDF+: 19 EEG, EEG A2-A1, ECG ECG (mV, 500 Hz)
  Subject00_2.edf ...   mental serial subtraction (about 60 s), same channels
  subject-info.csv      Subject (Subject00 ...), Age, Gender, Recording year,
                        Number of subtractions, Count quality (0 bad, 1 good)"""

_NAME = re.compile(r"^Subject(\d+)_([12])\.edf$", re.IGNORECASE)


def _recordings(folder: Path) -> dict[int, dict[int, Path]]:
    found: dict[int, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else ():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.setdefault(int(m.group(1)), {})[int(m.group(2))] = p
    return found


def _base(root: Path) -> Path:
    """The folder holding the EDF files: ``root`` or one folder directly below it."""
    if _recordings(root):
        return root
    below = [d for d in sorted(root.iterdir()) if d.is_dir() and _recordings(d)]
    if len(below) == 1:
        return below[0]
    what = f"SubjectNN_1.edf files in several folders: {[d.name for d in below]}" if below \
        else "no SubjectNN_1.edf / SubjectNN_2.edf files here or one folder below"
    raise dataset_error(root, what, LAYOUT)


def subjects(root) -> list[tuple[int, Path]]:
    """(subject number NN, its rest recording SubjectNN_1.edf), sorted."""
    root = check_root(root, LAYOUT)
    base = _base(root)
    return [(sid, files.get(1, base / f"Subject{sid:02d}_1.edf"))
            for sid, files in sorted(_recordings(base).items())]


def _info_file(root: Path) -> Path:
    base = _base(root)
    for folder in (base, root):
        hit = [p for p in folder.iterdir() if p.name.lower() == INFO_FILE]
        if hit:
            return hit[0]
    raise dataset_error(base / INFO_FILE, "file not found", LAYOUT)


def source_files(root) -> list[Path]:
    root = check_root(root, LAYOUT)
    edfs = [p for files in _recordings(_base(root)).values() for p in files.values()]
    return [*edfs, _info_file(root)]


def _column(header: list[str], name: str, path: Path) -> int:
    names = [h.strip().casefold() for h in header]
    if name.casefold() not in names:
        raise ECGDataError(f"{path}: no column {name!r}; header: {header}")
    return names.index(name.casefold())


def read_info(path: Path) -> dict[int, tuple[int, float]]:
    """Subject NN -> (count quality 0/1, number of subtractions) from subject-info.csv."""
    header, rows = read_rows(path)
    who, quality, count = (_column(header, c, path) for c in
                           ("Subject", "Count quality", "Number of subtractions"))
    info = {}
    for k, row in enumerate(rows, start=2):
        cells = [row[i] if i < len(row) else None for i in (who, quality, count)]
        m = re.fullmatch(r"Subject(\d+)", str(cells[0]).strip(), re.IGNORECASE)
        if m is None:
            raise ECGDataError(f"{path}: line {k}: Subject {cells[0]!r} is not SubjectNN")
        if cells[1] not in (0.0, 1.0):
            raise ECGDataError(f"{path}: line {k}: Count quality {cells[1]!r}, expected 0 or 1")
        if not isinstance(cells[2], float) or not math.isfinite(cells[2]):
            raise ECGDataError(f"{path}: line {k}: Number of subtractions {cells[2]!r} is not "
                               "a number")
        info[int(m.group(1))] = (int(cells[1]), cells[2])
    return info


def _reader(info: dict, info_path: Path, lead: str):
    def read(sid: int, path: Path) -> SubjectData:
        if sid not in info:
            raise ECGDataError(f"{info_path}: no row for Subject{sid:02d}")
        quality, subtractions = info[sid]
        trials, rates = [], []
        for task, name in ((0, path.name), (1, path.name.replace("_1.", "_2."))):
            p = path.with_name(name)
            if not p.is_file():
                raise dataset_error(p, f"file not found (Subject{sid:02d} needs both "
                                       "recordings)", LAYOUT)
            rec = read_recording(p, column=lead)
            rates.append(rec.fs)
            trials.append(Trial(rec.signal, f"{p}: {rec.lead}",
                                labels={"arithmetic": task, "count_quality": quality},
                                scores={"subtractions": subtractions}))
        if rates[0] != rates[1]:
            raise ECGDataError(f"{path.parent}: Subject{sid:02d}'s recordings have the ECG at "
                               f"{rates[0]:g} Hz and {rates[1]:g} Hz")
        return SubjectData(sid, rates[0], trials)

    return read


def load(root, **options) -> Cohort:
    """Load eegmat (layout in the module docstring) into a :class:`~ecgfast.data.Cohort`
    with tasks ``arithmetic`` and ``count_quality``, one session per recording."""
    request = LoadRequest(**options)
    root = Path(root)
    info_path = _info_file(root)
    return build_cohort(INFO, root, subjects(root), _reader(read_info(info_path), info_path,
                                                           INFO.leads[request.lead]),
                        request, classes=CLASSES, score_names=("subtractions",),
                        provenance={"rules": RULES, "subject_info": str(info_path)})


INFO = DatasetInfo(
    name="eegmat",
    title="EEG During Mental Arithmetic Tasks (Zyma et al., Data 2019; PhysioNet eegmat)",
    layout=LAYOUT, tasks=tuple(CLASSES), default_threshold=None, leads=(LEAD,), fs=FS,
    load=load, source_files=source_files)
