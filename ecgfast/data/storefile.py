"""The window store's files on disk: names, the format version, writing and checking.

A store is a folder::

    store.json                  manifest: format + version, dtype, leads, window length,
                                fs, shard size and the sizes and SHA-256 of every shard,
                                pre-processing parameters, sources, tasks and classes
    shards/shard-NNNNN.npy      (n_k, C, L) windows, float16 or float32; every shard holds
                                ``shard_windows`` windows except the last
    index/window_record.npy     (N,) int64: the record (line of records.jsonl) of each window
    index/window_start_s.npy    (N,) float64: start of each window in its record, seconds
                                (NaN where the source does not say, e.g. a dataset cohort)
    index/window_labels.npy     (N, T) int16 class index per task (-1: no label); with tasks
    records.jsonl               one JSON object per record: record, source, path, subject,
                                fs (source rate), leads (source names), first_window,
                                n_windows, n_flat
    rejected.jsonl              one JSON object per rejected record: record, path, reason

Every file is checked before it is trusted (:func:`read_manifest`, :func:`check_npy`):
the manifest's format and version, the shard sizes against the index, every ``.npy``
header's dtype and shape against the manifest and the file's size against the header,
so no allocation or mapping is sized from an unchecked header. This module needs no
torch (the preparation workers import it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from ecgfast.atomic import atomic_write, atomic_write_text
from ecgfast.data.errors import ECGDataError, check_format
from ecgfast.data.npyfile import read_npy_header

FORMAT = "ecgfast-window-store"
VERSION = 1
MANIFEST = "store.json"
RECORDS = "records.jsonl"
REJECTED = "rejected.jsonl"
INDEX_RECORD = "index/window_record.npy"
INDEX_START = "index/window_start_s.npy"
INDEX_LABELS = "index/window_labels.npy"
DTYPES = {"float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}
#: A manifest larger than this is refused unread (800,000 records need far less).
MAX_MANIFEST_BYTES = 256 << 20


def shard_path(k: int) -> str:
    """The store-relative path of shard ``k``."""
    return f"shards/shard-{k:05d}.npy"


def write_npy(path: Path, array: np.ndarray) -> str:
    """Write ``array`` to ``path`` atomically (tmp + fsync + rename); its SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array)
    atomic_write(path, lambda tmp: np.save(tmp, array, allow_pickle=False))
    return hashlib.sha256(array.data).hexdigest()


def write_jsonl(path: Path, rows) -> None:
    """Rows as JSON lines, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def check_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """The data offset of the ``.npy`` file ``path`` after checking that its header says
    exactly ``shape`` and ``dtype`` (C order) and that the file holds exactly that data.

    Raises:
        ECGDataError: naming the file: missing, not ``.npy``, another dtype or shape
            (the index disagrees with the file), or truncated / with trailing bytes.
    """
    if not path.is_file():
        raise ECGDataError(f"{path}: missing from the store")
    with open(path, "rb") as f:
        got_shape, fortran, got_dtype = read_npy_header(f, str(path))
        offset = f.tell()
    if got_dtype != dtype or fortran or tuple(got_shape) != tuple(shape):
        raise ECGDataError(
            f"{path}: holds {tuple(got_shape)} {got_dtype}{' (Fortran order)' if fortran else ''}"
            f", but the store's index says {tuple(shape)} {dtype}"
        )
    expected = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise ECGDataError(f"{path}: {what}: {size} bytes, expected {expected} for {tuple(shape)}")
    return offset


def load_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The checked (see :func:`check_npy`) array in ``path``, read into memory."""
    offset = check_npy(path, shape, dtype)
    arr = np.fromfile(path, dtype=dtype, count=math.prod(shape), offset=offset)
    return arr.reshape(shape)


def _positive(v) -> bool:
    return v > 0


def _need(manifest: dict, key: str, kind, where: Path, check=lambda v: True):
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or not check(value):
        raise ECGDataError(f"{where}: field {key!r} is missing or invalid ({value!r})")
    return value


def read_manifest(store: str | os.PathLike) -> dict:
    """The checked manifest of the store folder ``store``.

    Raises:
        ECGDataError: naming the file: no store there (or one still being prepared), not
            JSON, another format or version, a bad field, shard sizes that disagree with
            the window count.
    """
    store = Path(store)
    path = store / MANIFEST
    if not path.is_file():
        hint = (" (its preparation has not finished: rerun `ecgfast prepare` to resume it)"
                if (store / "prepare.json").is_file() else "")
        raise ECGDataError(f"{store}: not a window store: {MANIFEST} is missing{hint}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ECGDataError(f"{path}: {path.stat().st_size} bytes, more than a manifest can be")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ECGDataError(f"{path}: not a JSON manifest: {exc}") from None
    check_format(manifest, FORMAT, VERSION, path, "window store manifest",
                 ": prepare the store again with this version (`ecgfast prepare`)")
    _need(manifest, "dtype", str, path, lambda v: v in DTYPES)
    _need(manifest, "leads", list, path, lambda v: v and all(isinstance(x, str) for x in v))
    _need(manifest, "window_length", int, path, _positive)
    _need(manifest, "fs", (int, float), path, lambda v: math.isfinite(v) and v > 0)
    size = _need(manifest, "shard_windows", int, path, _positive)
    n = _need(manifest, "n_windows", int, path, lambda v: v >= 0)
    _need(manifest, "n_records", int, path, lambda v: v >= 0)
    _need(manifest, "n_rejected", int, path, lambda v: v >= 0)
    _need(manifest, "tasks", list, path, lambda v: all(isinstance(x, str) for x in v))
    shards = _need(manifest, "shards", list, path)
    for k, shard in enumerate(shards):
        if not (isinstance(shard, dict) and isinstance(shard.get("n_windows"), int)
                and isinstance(shard.get("sha256"), str)):
            raise ECGDataError(f"{path}: shard entry {k} is invalid ({shard!r})")
        last = k == len(shards) - 1
        if not (0 < shard["n_windows"] <= size and (last or shard["n_windows"] == size)):
            raise ECGDataError(
                f"{path}: shard {k} holds {shard['n_windows']} windows; every shard but the "
                f"last holds shard_windows = {size}, the last 1 to {size}"
            )
    if sum(s["n_windows"] for s in shards) != n:
        raise ECGDataError(
            f"{path}: the shards hold {sum(s['n_windows'] for s in shards)} windows but the "
            f"index says n_windows = {n}"
        )
    return manifest


def read_jsonl(path: Path, expected: int) -> list[dict]:
    """The ``expected`` JSON objects of ``path``, one per line."""
    if not path.is_file():
        raise ECGDataError(f"{path}: missing from the store")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ECGDataError(f"{path}: line {line_no} is not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise ECGDataError(f"{path}: line {line_no} is not a JSON object")
            rows.append(row)
            if len(rows) > expected:
                break
    if len(rows) != expected:
        raise ECGDataError(f"{path}: {len(rows)} lines, but the manifest says {expected}")
    return rows
