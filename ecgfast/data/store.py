""":class:`WindowStore`: a ``torch.utils.data.Dataset`` over a window store on disk.

The store's files (:mod:`ecgfast.data.storefile`) are checked when it is opened; the
shards are memory-mapped lazily, in each process on first use (a pickled store, e.g.
in ``DataLoader`` workers, carries only its path and the checked manifest, never the
data). Each window read is copied out and its pages are then released from this
process's mapping (``madvise(MADV_DONTNEED)``; the data stays in the page cache), so
resident memory does not grow with the number of windows read, or with the store's size.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from pathlib import Path

import numpy as np
import torch

from ecgfast.data import storefile as sf
from ecgfast.data.errors import ECGDataError

_PAGE = mmap.PAGESIZE


class WindowStore(torch.utils.data.Dataset):
    """The windows of the store folder ``path`` (written by ``ecgfast prepare``).

    ``store[i]`` is window ``i`` as a (C, L) float32 tensor (C = ``len(store.leads)``);
    ``store.get_batch(indices)`` (also ``__getitems__``, which ``DataLoader`` uses with
    a batch sampler) is a (B, C, L) float32 tensor. ``leads`` (names, in the order wanted;
    None or "all": every lead the store holds, :attr:`store_leads`) selects the leads the
    windows carry; a name matches exactly, else case-insensitively (PTB-XL's ``AVR`` is
    MIMIC-IV-ECG's ``aVR``).

    Raises:
        ECGDataError: naming the file, for a store of another format version, a bad
            manifest, a missing or truncated shard or index file, or a shard or index
            whose shape disagrees with the manifest.
    """

    def __init__(self, path: str | os.PathLike, leads=None):
        self.path = Path(path)
        self.manifest = sf.read_manifest(self.path)
        m = self.manifest
        self.dtype = sf.DTYPES[m["dtype"]]
        self.store_leads: tuple[str, ...] = tuple(m["leads"])
        self._select = _lead_selection(self.store_leads, leads, self.path / sf.MANIFEST)
        self.leads: tuple[str, ...] = (self.store_leads if self._select is None else
                                       tuple(self.store_leads[i] for i in self._select))
        self.window_length: int = m["window_length"]
        self.fs: float = float(m["fs"])
        self.shard_windows: int = m["shard_windows"]
        self.tasks: tuple[str, ...] = tuple(m["tasks"])
        n = m["n_windows"]
        shape = (len(self.store_leads), self.window_length)
        self._offsets = [sf.check_npy(self.path / sf.shard_path(k), (s["n_windows"], *shape),
                                      self.dtype) for k, s in enumerate(m["shards"])]
        sf.check_npy(self.path / sf.INDEX_RECORD, (n,), np.dtype(np.int64))
        sf.check_npy(self.path / sf.INDEX_START, (n,), np.dtype(np.float64))
        if self.tasks:
            sf.check_npy(self.path / sf.INDEX_LABELS, (n, len(self.tasks)), np.dtype(np.int16))
        for name in (sf.RECORDS, sf.REJECTED):
            if not (self.path / name).is_file():
                raise ECGDataError(f"{self.path / name}: missing from the store")
        self._maps: dict[int, mmap.mmap] = {}

    # ------------------------------------------------------------------ dataset

    def __len__(self) -> int:
        return self.manifest["n_windows"]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, C, L)."""
        return (len(self), len(self.leads), self.window_length)

    def __getitem__(self, i) -> torch.Tensor:
        return self.get_batch([i])[0]

    def __getitems__(self, indices) -> torch.Tensor:
        return self.get_batch(indices)

    def get_batch(self, indices) -> torch.Tensor:
        """Windows ``indices`` as one (B, C, L) float32 tensor."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{self.path}: window index out of range for {n} windows")
        idx %= max(n, 1)
        c, length = len(self.store_leads), self.window_length
        batch = torch.empty((idx.size, len(self.leads), length), dtype=torch.float32)
        if torch.utils.data.get_worker_info() is not None:
            batch.share_memory_()  # a DataLoader worker: handing the batch over copies nothing
        out = batch.numpy()
        nbytes = c * length * self.dtype.itemsize
        for j, i in enumerate(idx.tolist()):
            k, r = divmod(i, self.shard_windows)
            mm = self._map(k)
            start = self._offsets[k] + r * nbytes
            window = np.frombuffer(mm, self.dtype, c * length, start).reshape(c, length)
            out[j] = window if self._select is None else window[self._select]
            lo = start // _PAGE * _PAGE
            if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                mm.madvise(mmap.MADV_DONTNEED, lo, min(len(mm), start + nbytes) - lo)
        return batch

    def _map(self, k: int) -> mmap.mmap:
        mm = self._maps.get(k)
        if mm is None:
            with open(self.path / sf.shard_path(k), "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[k] = mm
        return mm

    def close(self) -> None:
        """Unmap the shards (they are mapped again on the next read)."""
        for mm in self._maps.values():
            mm.close()
        self._maps.clear()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = {}  # the data never travels: each process maps the files itself
        return state

    # ------------------------------------------------------------------ index

    def _index(self, name: str, shape, dtype) -> np.ndarray:
        return sf.load_npy(self.path / name, shape, np.dtype(dtype))

    @property
    def window_record(self) -> np.ndarray:
        """(N,) int64: the record (row of :attr:`records`) of each window."""
        return self._index(sf.INDEX_RECORD, (len(self),), np.int64)

    @property
    def starts_s(self) -> np.ndarray:
        """(N,) float64: each window's start in its record in seconds (NaN: unknown)."""
        return self._index(sf.INDEX_START, (len(self),), np.float64)

    @property
    def labels(self) -> dict[str, np.ndarray]:
        """Task -> (N,) int64 class index (-1: no label), for the tasks of the store."""
        if not self.tasks:
            return {}
        arr = self._index(sf.INDEX_LABELS, (len(self), len(self.tasks)), np.int16)
        return {t: arr[:, j].astype(np.int64) for j, t in enumerate(self.tasks)}

    @property
    def records(self) -> list[dict]:
        """One dict per record (record, path, source, subject, fs, leads, first_window,
        n_windows, n_flat), checked against the window index."""
        rows = sf.read_jsonl(self.path / sf.RECORDS, self.manifest["n_records"])
        total = 0
        for line, row in enumerate(rows, 1):
            if row.get("first_window") != total or not isinstance(row.get("n_windows"), int):
                raise ECGDataError(f"{self.path / sf.RECORDS}: line {line} disagrees with the "
                                   f"window index (first_window should be {total})")
            total += row["n_windows"]
        if total != len(self):
            raise ECGDataError(f"{self.path / sf.RECORDS}: the records hold {total} windows, "
                               f"the store {len(self)}")
        return rows

    @property
    def rejected(self) -> list[dict]:
        """The rejection log: one dict (record, path, reason) per record left out."""
        return sf.read_jsonl(self.path / sf.REJECTED, self.manifest["n_rejected"])

    @property
    def subjects(self) -> np.ndarray:
        """(N,) object array: each window's subject (None where the source has none)."""
        per_record = np.array([r.get("subject") for r in self.records] + [None], dtype=object)
        return per_record[self.window_record] if len(self) else per_record[:0]

    def fingerprint(self) -> str:
        """A short hash of the store's shape, dtype and every shard's SHA-256."""
        m = self.manifest
        key = [list(self.shape), m["dtype"], [s["sha256"] for s in m["shards"]]]
        if self._select is not None:  # a lead selection trains on other windows
            key.append(list(self.leads))
        return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]

    def info(self) -> dict:
        """A summary: windows, records, subjects, leads, dtype, bytes on disk, rejected."""
        records = self.records
        subjects = {r.get("subject") for r in records} - {None}
        files = [f for f in self.path.rglob("*") if f.is_file()]
        return {"path": str(self.path), "windows": len(self), "records": len(records),
                "subjects": len(subjects) if subjects else None,
                "leads": list(self.store_leads),
                "window_length": self.window_length, "fs": self.fs,
                "dtype": self.manifest["dtype"], "shards": len(self.manifest["shards"]),
                "bytes": sum(f.stat().st_size for f in files),
                "bytes_per_window": (len(self.store_leads) * self.window_length
                                     * self.dtype.itemsize),
                "rejected": self.manifest["n_rejected"], "tasks": list(self.tasks),
                "notes": self.manifest.get("notes", [])}

    def __repr__(self) -> str:
        n, c, length = self.shape
        return (f"WindowStore({str(self.path)!r}: {n} windows x {c} leads x {length} "
                f"samples, {self.manifest['dtype']})")


def _lead_selection(have: tuple[str, ...], want, where: Path) -> np.ndarray | None:
    """Indices into ``have`` of the leads ``want`` names, in order (None: all of them, in
    the store's order); ECGDataError naming ``where``, the missing leads and ``have``."""
    if want is None or want == "all":
        return None
    if isinstance(want, str):
        want = [w.strip() for w in want.split(",")]
    folded = [h.lower() for h in have]
    index, missing = [], []
    for name in want:
        if name in have:
            index.append(have.index(name))
        elif folded.count(str(name).lower()) == 1:
            index.append(folded.index(str(name).lower()))
        else:
            missing.append(name)
    if missing or not index:
        raise ECGDataError(f"{where}: the store has no lead(s) {missing or list(want)}; its "
                           f"leads are {list(have)}")
    if len(set(index)) != len(index):
        raise ECGDataError(f"{where}: leads {list(want)} name one of the store's leads twice")
    if index == list(range(len(have))):
        return None
    return np.asarray(index, dtype=np.int64)
