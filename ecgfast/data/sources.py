"""The records a window store is prepared from, in the order the store holds them.

:func:`find_records` turns each source into records: a folder (searched recursively for
WFDB ``.hea`` records and files that store their own rate: EDF/BDF, Poly5
(:data:`ecgfast.data.readers.SELF_DESCRIBING`); folders and files sorted by name;
PTB-XL's ``records100`` tree is skipped where a ``records500`` sits beside it, since both
hold the same ECGs; MIMIC-IV-ECG subjects come from the ``files/pNNNN/pXXXXXXXX/
sYYYYYYYY/`` folders), a recording file (``.hea``/``.dat``, ``.edf``, ``.bdf``, Poly5
``.S00``/``.Poly5``, ``.npy``, ``.csv``), a dataset ``NAME:ROOT`` read through
:func:`ecgfast.datasets.load_dataset`, or a manifest ``.csv``/``.tsv``
(:mod:`ecgfast.data.manifest`); the last two give one record per subject and session, with
their labels (-1 where a manifest row is unlabelled for a task).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgfast.data.errors import ECGDataError
from ecgfast.data.readers import READERS, SELF_DESCRIBING

_MIMIC_SESSION, _MIMIC_SUBJECT = re.compile(r"^s\d+$"), re.compile(r"^p\d+$")


@dataclass(frozen=True)
class _Item:
    """One record: a file for a worker to read, or a slice of a dataset cohort."""

    record: str
    path: str
    source: int
    subject: str | None = None
    rows: tuple[int, int] | None = None  # cohort window range [a, b)


def _subject(path: Path) -> str | None:
    """MIMIC-IV-ECG: files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY.hea -> pXXXXXXXX."""
    parent = path.parent
    if _MIMIC_SESSION.match(parent.name) and _MIMIC_SUBJECT.match(parent.parent.name):
        return parent.parent.name
    return None


def _folder_records(root: Path, source: int, notes: list[str]) -> list[_Item]:
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        if "records100" in dirnames and "records500" in dirnames:  # PTB-XL: the same ECGs twice
            dirnames.remove("records100")
            notes.append(f"{Path(dirpath) / 'records100'}: skipped, the same ECGs as records500")
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith(".hea"):
                rel = path.relative_to(root).with_suffix("").as_posix()
                items.append(_Item(rel, str(path), source, _subject(path)))
            elif path.suffix.lower() in SELF_DESCRIBING:
                items.append(_Item(path.relative_to(root).as_posix(), str(path), source))
    if not items:
        raise ECGDataError(f"{root}: no WFDB records (.hea files) or "
                           f"{'/'.join(SELF_DESCRIBING)} files in this folder or below")
    return items


def _dataset(name: str, root: str, source: int, want, cohorts: dict) -> list[_Item]:
    from ecgfast import datasets

    if want is not None and len(want) != 1:
        raise ECGDataError(f"{name}:{root}: dataset cohorts are single-lead; --leads {want}")
    cohort = datasets.load_dataset(name, root, lead=None if want is None else want[0],
                                   progress=False)
    info = datasets.DATASETS[name]
    lead = want[0] if want is not None else info.leads[0]
    cohorts[source] = (cohort, str(lead))
    return _cohort_items(cohort, name, f"{name}:{root}", source)


def _cohort_items(cohort, name: str, path: str, source: int) -> list[_Item]:
    """One item per (subject, session) run of a cohort's windows."""
    key = np.stack([cohort.subject, cohort.session], 1)
    cuts = [0, *(np.nonzero((key[1:] != key[:-1]).any(1))[0] + 1).tolist(), len(key)]
    return [_Item(f"{name}/subject-{key[a, 0]}/session-{key[a, 1]}", path, source,
                  str(key[a, 0]), (a, b)) for a, b in itertools.pairwise(cuts)]


def _manifest(path: Path, source: int, want, cohorts: dict, fs) -> list[_Item]:
    from ecgfast.data.manifest import manifest_windows

    if want is not None and len(want) != 1:
        raise ECGDataError(f"{path}: manifests give one lead per row; --leads {want}")
    data = manifest_windows(path, fs=fs)
    cohorts[source] = (data, want[0] if want is not None else "ECG")
    sha = data.provenance["manifest_sha256"]
    return _cohort_items(data, f"{path.name}@{sha[:12]}", str(path), source)


def find_records(sources, want=None, cohorts: dict | None = None, notes: list | None = None,
                 fs=None):
    """The records of ``sources`` in the order a store holds them (a list of items);
    ``fs``: the rate of manifest rows whose file stores none and that give none."""
    from ecgfast.data.manifest import is_manifest
    from ecgfast.datasets import DATASETS

    items: list[_Item] = []
    cohorts = {} if cohorts is None else cohorts
    notes = [] if notes is None else notes
    for i, src in enumerate(map(str, sources)):
        path = Path(src)
        name, _, root = src.partition(":")
        if not path.exists() and root and name.lower() in DATASETS:
            items += _dataset(name.lower(), root, i, want, cohorts)
        elif path.is_dir():
            items += _folder_records(path, i, notes)
        elif is_manifest(path):
            items += _manifest(path, i, want, cohorts, fs)
        elif path.suffix.lower() in (".hea", ".dat") or (not path.exists()
                                                          and path.with_suffix(".hea").exists()):
            hea = path.with_suffix(".hea")
            items.append(_Item(hea.with_suffix("").as_posix(), str(hea), i, _subject(hea)))
        elif path.suffix.lower() in READERS and path.is_file():
            items.append(_Item(path.as_posix(), str(path), i))
        else:
            raise ECGDataError(f"{src}: not a folder, a recording (.hea, "
                               f"{', '.join(READERS)}), a manifest (.csv, .tsv) or a dataset "
                               f"NAME:ROOT "
                               f"({', '.join(DATASETS)})")
    return items
