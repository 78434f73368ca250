"""A labelled cohort of pre-processed ECG windows, and its ``.npz`` file format.

A :class:`Cohort` holds single-lead z-scored windows with, per window, the subject, the
session (recording or trial), a class index for every task (``labels``), the raw ratings
where the dataset has them (``scores``) and a JSON-serialisable ``provenance`` record
(dataset, root, thresholds and rules, pre-processing, version, dropped counts), so every
result computed from it can say what it was computed on.

File format (written by :meth:`Cohort.save`, an uncompressed ``.npz`` that numpy reads
with ``allow_pickle=False``): arrays ``windows``, ``subject``, ``session``, ``fs``,
``label_<i>`` and ``score_<i>`` (numbered, so that any task name is a valid key), and
``meta``, a JSON string with the format version, the task names, their class names,
the score names and the provenance.
"""

from __future__ import annotations

import copy
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgfast.atomic import atomic_write
from ecgfast.data.errors import ECGDataError, check_format
from ecgfast.data.npyfile import read_npy

FORMAT = "ecgfast.cohort"
FORMAT_VERSION = 2
BINARY_CLASSES = ("low", "high")
_KEYS = ("windows", "subject", "session", "fs", "meta")
#: Deflate expands by at most about 1032x: a member claiming more is corrupt.
_MAX_DEFLATE_RATIO = 1100


@dataclass(init=False, eq=False)
class Cohort:
    """Windows of a labelled cohort.

    Attributes:
        windows: (N, L) float32, z-scored single-lead windows (L = 2560 for 10 s at 256 Hz).
        subject: (N,) int64 subject id of each window.
        session: (N,) int64 globally unique session (recording / trial) id.
        fs: sampling rate of the windows in Hz.
        labels: task name -> (N,) int64 class index.
        classes: task name -> class names in index order (one entry per task in labels).
        scores: rating name -> (N,) float64 raw rating ({} when the dataset has none).
        provenance: JSON-serialisable record of where the windows came from.
    """

    windows: np.ndarray
    subject: np.ndarray
    session: np.ndarray
    fs: float
    labels: dict
    classes: dict
    scores: dict
    provenance: dict

    def __init__(
        self,
        windows,
        subject,
        session,
        fs,
        labels=None,
        classes=None,
        scores=None,
        provenance=None,
    ):
        self.windows = windows
        self.subject = subject
        self.session = session
        self.fs = fs
        self.labels = dict(labels or {})
        self.classes = {k: tuple(v) for k, v in (classes or {}).items()}
        self.scores = dict(scores or {})
        self.provenance = dict(provenance or {})
        _validate(self, "Cohort")

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    @property
    def tasks(self) -> tuple[str, ...]:
        """Names of the labelled tasks, in insertion order."""
        return tuple(self.labels)

    @property
    def n_subjects(self) -> int:
        return int(np.unique(self.subject).size)

    def _task(self, name: str) -> np.ndarray:
        if name not in self.labels:
            raise AttributeError(
                f"this cohort has no {name!r} labels; its tasks are {list(self.tasks)} "
                f"(dataset {self.provenance.get('dataset', 'unknown')!r})"
            )
        return self.labels[name]

    @property
    def arousal(self) -> np.ndarray:
        """``labels["arousal"]``; AttributeError naming the tasks if the cohort has none."""
        return self._task("arousal")

    @property
    def valence(self) -> np.ndarray:
        """``labels["valence"]``; AttributeError naming the tasks if the cohort has none."""
        return self._task("valence")

    def subset(self, index) -> Cohort:
        """The windows selected by ``index`` (a boolean mask or integer indices)."""
        return Cohort(
            windows=self.windows[index],
            subject=self.subject[index],
            session=self.session[index],
            fs=self.fs,
            labels={k: v[index] for k, v in self.labels.items()},
            classes=dict(self.classes),
            scores={k: v[index] for k, v in self.scores.items()},
            provenance=copy.deepcopy(self.provenance),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write to an uncompressed ``.npz`` (the suffix is added if missing), atomically:
        a crash leaves the old file or the complete new one."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "tasks": list(self.labels),
            "classes": {k: list(self.classes[k]) for k in self.labels},
            "scores": list(self.scores),
            "provenance": self.provenance,
        }
        arrays = {
            "windows": self.windows,
            "subject": self.subject,
            "session": self.session,
            "fs": np.float64(self.fs),
            "meta": np.str_(json.dumps(meta)),
        }
        arrays.update({f"label_{i}": v for i, v in enumerate(self.labels.values())})
        arrays.update({f"score_{i}": v for i, v in enumerate(self.scores.values())})
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Cohort:
        """Read a cohort written by :meth:`save`.

        Raises:
            ECGDataError: the file is missing, not an ``.npz``, corrupt, lacks a key, or a
                key has the wrong shape/dtype/values; the message names the file and key.
        """
        path = Path(path)
        if not path.is_file():
            raise ECGDataError(f"{path}: file not found")
        arrays = _read_npz(path)
        missing = [k for k in _KEYS if k not in arrays]
        if missing:
            raise ECGDataError(
                f"{path}: not a cohort file: missing key(s) {missing}; has {sorted(arrays)}"
            )
        return _from_arrays(arrays, path)


def _construct(where: str, arrays: dict, **fields) -> Cohort:
    """A Cohort of ``arrays``' windows, subject, session and fs plus ``fields``; any
    validation error is re-raised naming the file."""
    fs = _scalar_fs(arrays["fs"], where)
    try:
        return Cohort(windows=arrays["windows"], subject=arrays["subject"],
                      session=arrays["session"], fs=fs, **fields)
    except ECGDataError as exc:
        raise ECGDataError(str(exc).replace("Cohort:", f"{where}:", 1)) from None
    except (ValueError, TypeError) as exc:
        raise ECGDataError(f"{where}: {exc}") from None


def _scalar_fs(fs: np.ndarray, where: str) -> float:
    if fs.shape != () or not np.issubdtype(fs.dtype, np.floating):
        raise ECGDataError(f"{where}: 'fs' must be a float scalar, got {fs!r}")
    return float(fs)


def _from_arrays(arrays: dict, path: Path) -> Cohort:
    where = str(path)
    meta_arr = arrays["meta"]
    if meta_arr.dtype.kind != "U" or meta_arr.shape != ():
        raise ECGDataError(f"{where}: 'meta' must be a JSON string, got dtype {meta_arr.dtype}")
    try:
        meta = json.loads(str(meta_arr))
    except ValueError as exc:
        raise ECGDataError(f"{where}: 'meta' is not valid JSON: {exc}") from None
    check_format(meta, FORMAT, FORMAT_VERSION, f"{where}: 'meta'", "cohort")
    tasks, classes, scores = meta.get("tasks"), meta.get("classes"), meta.get("scores")
    provenance = meta.get("provenance")
    if not (
        isinstance(tasks, list)
        and all(isinstance(t, str) for t in tasks)
        and isinstance(classes, dict)
        and isinstance(scores, list)
        and all(isinstance(s, str) for s in scores)
        and isinstance(provenance, dict)
    ):
        raise ECGDataError(
            f"{where}: 'meta' needs tasks (list of str), classes (dict), scores (list of "
            "str) and provenance (dict)"
        )
    keys = ["windows", "subject", "session", "fs"]
    keys += [f"label_{i}" for i in range(len(tasks))] + [f"score_{i}" for i in range(len(scores))]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ECGDataError(
            f"{where}: not a complete cohort file: missing key(s) {missing}; has {sorted(arrays)}"
        )
    return _construct(
        where,
        arrays,
        labels={t: arrays[f"label_{i}"] for i, t in enumerate(tasks)},
        classes=classes,
        scores={s: arrays[f"score_{i}"] for i, s in enumerate(scores)},
        provenance=provenance,
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, without pickle, and without allocating more than
    the archive can hold (a corrupt header cannot ask for unbounded memory)."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            arrays = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                limit = info.compress_size * (
                    1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
                )
                if info.compress_size > size or info.file_size > limit:
                    raise ECGDataError(
                        f"{path}: member {info.filename!r} claims {info.file_size} bytes, "
                        f"more than the {size}-byte archive can hold"
                    )
                with zf.open(info) as f:
                    where = f"{path}: member {info.filename!r}"
                    arrays[info.filename[:-4]] = read_npy(f, info.file_size, where)
            return arrays
    except ECGDataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
            KeyError, NotImplementedError, OverflowError, MemoryError,
            RuntimeError) as exc:  # RuntimeError: a member flagged as encrypted
        raise ECGDataError(f"{path}: cannot read as .npz: {type(exc).__name__}: {exc}") from None


def _validate(c: Cohort, where: str) -> None:
    """Check every field of ``c``; raise ECGDataError naming ``where`` and the field."""
    w = c.windows
    if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.ndim != 2:
        raise ECGDataError(
            f"{where}: 'windows' must be a 2-D float32 array (N, L), got "
            f"{getattr(w, 'dtype', type(w))} of shape {getattr(w, 'shape', None)}"
        )
    n = w.shape[0]

    def check_array(key: str, v, dtype) -> None:
        if not isinstance(v, np.ndarray) or v.dtype != dtype or v.shape != (n,):
            raise ECGDataError(
                f"{where}: {key!r} must be an {np.dtype(dtype).name} array of shape ({n},), "
                f"got {getattr(v, 'dtype', type(v))} of shape {getattr(v, 'shape', None)}"
            )

    check_array("subject", c.subject, np.int64)
    check_array("session", c.session, np.int64)
    fs = c.fs
    if isinstance(fs, (np.floating, np.integer)):
        c.fs = fs = float(fs)
    if isinstance(fs, bool) or not (isinstance(fs, (int, float)) and math.isfinite(fs) and fs > 0):
        raise ECGDataError(f"{where}: 'fs' must be a sampling rate > 0 Hz, got {fs!r}")
    for task, v in c.labels.items():
        if not isinstance(task, str) or not task:
            raise ECGDataError(f"{where}: task names must be non-empty str, got {task!r}")
        check_array(task, v, np.int64)
        names = c.classes.get(task)
        if not names or not all(isinstance(s, str) for s in names):
            raise ECGDataError(
                f"{where}: classes[{task!r}] must name the task's classes (a tuple of str), "
                f"got {names!r}"
            )
        k = len(names)
        if n and (v.min() < 0 or v.max() >= k):
            allowed = "0 or 1" if k == 2 else f"in 0..{k - 1}"
            raise ECGDataError(
                f"{where}: {task!r} labels must be {allowed} (class indices of {names}), "
                f"got values in [{v.min()}, {v.max()}]"
            )
    extra = sorted(set(c.classes) - set(c.labels))
    if extra:
        raise ECGDataError(f"{where}: classes given for task(s) {extra} that have no labels")
    for name, v in c.scores.items():
        if not isinstance(name, str) or not name:
            raise ECGDataError(f"{where}: score names must be non-empty str, got {name!r}")
        check_array(f"scores[{name!r}]", v, np.float64)
        if n and not np.isfinite(v).all():
            raise ECGDataError(f"{where}: scores[{name!r}] contains NaN/Inf")
    if not isinstance(c.provenance, dict):
        raise ECGDataError(f"{where}: 'provenance' must be a dict, got {type(c.provenance)}")
    try:
        json.dumps(c.provenance, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ECGDataError(f"{where}: 'provenance' is not JSON-serialisable: {exc}") from None
    if n and not np.isfinite(w).all():
        raise ECGDataError(f"{where}: 'windows' contains NaN/Inf")
