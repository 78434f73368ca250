"""The on-disk cache of pre-processed dataset cohorts.

A cohort is stored with :meth:`Cohort.save` (atomic: a temporary file renamed into
place) under a name keyed by a SHA-256 of the dataset name, the resolved root, every
source file's (relative path, size, mtime_ns), every load parameter, the pre-processing
constants and the ecgfast version: change any of them and the key changes, so a stale
cohort is never returned. An unreadable cache file is reported and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

from ecgfast import __version__
from ecgfast.data import Cohort, ECGDataError
from ecgfast.data.cohort import FORMAT_VERSION
from ecgfast.datasets._common import PREPROCESSING


def cache_key(name: str, root: Path, files: list[Path], params: dict) -> str:
    """Hex SHA-256 naming one pre-processed cohort (see the module docstring)."""
    root = Path(root).resolve()
    listing = []
    for f in sorted(files):
        try:
            st = Path(f).stat()
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        try:
            rel = str(Path(f).resolve().relative_to(root))
        except ValueError:
            rel = str(Path(f).resolve())
        listing.append([rel, size, mtime])
    record = {
        "dataset": name,
        "root": str(root),
        "files": listing,
        "params": params,
        "preprocessing": PREPROCESSING,
        "ecgfast_version": __version__,
        "cohort_format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir, name: str, key: str) -> Path:
    return Path(cache_dir) / f"{name}-{key[:24]}.npz"


def read_cached(path: Path) -> Cohort | None:
    """The cohort at ``path``, or None when there is none or it cannot be read (warned)."""
    if not path.is_file():
        return None
    try:
        return Cohort.load(path)
    except ECGDataError as exc:
        warnings.warn(f"ignoring the unreadable cache file {path} and rebuilding it: {exc}",
                      stacklevel=3)
        return None


def write_cached(path: Path, cohort: Cohort) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return cohort.save(path)
