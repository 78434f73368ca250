"""Building a window store (:mod:`ecgfast.data.storefile`) from recordings or datasets.

:func:`prepare` lists the records of every source in a fixed order (folders sorted,
sources in the order given), pre-processes them in parallel workers with the training
chain (:func:`ecgfast.data.preprocess_leads`: 0.8 Hz zero-phase high-pass, polyphase
resampling to 256 Hz, robust z-score of each lead of each record, 10 s windows; windows
with a flat lead dropped and counted), and appends their windows, in that order, to
shards of ``shard_windows`` windows. Shard boundaries therefore depend only on the
sources and the parameters, never on the worker count or on timing.

Resuming: after each shard, a part file (``parts/part-NNNNN.json``: the records and
rejections consumed since the previous part, and where to continue) is written after
the shard itself, both atomically (tmp + fsync + rename). A rerun after a kill
continues from the last part, re-reading only the record that straddles the boundary,
and ends with the files an uninterrupted run writes; the consolidated index and
``store.json`` come last, and the part files are then removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np

from ecgfast.data.contract import Preprocessing
from ecgfast.data.errors import ECGDataError
from ecgfast.data.multilead import preprocess_leads
from ecgfast.data.readers import SELF_DESCRIBING, read_segments
from ecgfast.data.sources import _Item, find_records

#: The chain ``preprocess_leads`` runs on every record (statistics per record and lead, per
#: segment of an EDF+D file; a window is dropped when any of its leads is a flat line), and
#: its record, which the store's manifest keeps (:mod:`ecgfast.data.contract`).
CHAIN = Preprocessing()
PREPROCESSING = CHAIN.to_record()
WINDOW_LENGTH = CHAIN.window_length
SHARD_BYTES = 64 << 20  # default shard size: about 64 MiB
STATE, PARTS = "prepare.json", "parts"


def _read(path: str, fs, leads="all"):
    """The segments (``read_segments``) of one record file; ``fs`` only for files that do
    not store it."""
    stores = path.endswith(".hea") or Path(path).suffix.lower() in SELF_DESCRIBING
    return read_segments(path, fs=None if stores else fs, leads=leads)


def _windows(segments, path: str):
    """(windows, starts in s, flat windows, segments too short for a window) of a
    record's segments, each pre-processed on its own (an EDF+D file's segments are never
    joined); a segment shorter than one window is counted, and an error only when no
    segment is long enough."""
    parts, short = [], 0
    for seg in segments:
        try:
            win = preprocess_leads(seg.signal, seg.fs, source=path, preprocessing=CHAIN)
        except ECGDataError:
            if len(segments) == 1 or seg.duration_s >= CHAIN.window_seconds:
                raise
            short += 1
            continue
        parts.append((win.windows, win.starts_s + seg.start_s, win.n_skipped_flat))
    if not parts:
        raise ECGDataError(f"{path}: none of its {len(segments)} segments is as long as one "
                           f"window ({CHAIN.window_seconds:g} s)")
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            sum(p[2] for p in parts), short)


def _work(task):
    """Worker: read and pre-process one record file; never raises for bad data."""
    item, want, store_leads, dtype, fs = task
    try:
        segments = _read(item.path, fs, "all" if want is None else list(want))
        names = list(segments[0].leads)
        if want is None and store_leads is not None:
            if sorted(names) != sorted(store_leads):
                return {"fatal": names}
            order = [names.index(n) for n in store_leads]
            for seg in segments:
                seg.signal = seg.signal[order]
            names = list(store_leads)
        windows, starts, n_flat, short = _windows(segments, item.path)
        if len(windows) == 0:
            raise ECGDataError(f"{item.path}: all {n_flat} windows have a flat lead")
        out = windows.astype(dtype)
        if not np.isfinite(out).all():
            raise ECGDataError(f"{item.path}: z-scored values beyond the {dtype} range; "
                               "prepare with --dtype float32")
    except (ECGDataError, ValueError) as exc:  # ECGDataError is a ValueError
        return {"reason": str(exc)}
    extra = {"segments": len(segments), "short_segments": short} if len(segments) > 1 else {}
    return {"windows": out, "starts": starts.tolist(), "fs": segments[0].fs, "leads": names,
            "n_flat": n_flat, **extra}


def _cohort_result(cohorts: dict, item: _Item, dtype: str) -> dict:
    cohort, lead = cohorts[item.source]
    a, b = item.rows
    return {"windows": cohort.windows[a:b, None, :].astype(dtype), "starts": [math.nan] * (b - a),
            "fs": float(cohort.provenance.get("source_fs", cohort.fs)), "leads": [lead],
            "n_flat": 0, "labels": {t: v[a:b].tolist() for t, v in cohort.labels.items()}}


def _probe_leads(items: list[_Item], cohorts: dict, fs) -> tuple[list[str], str]:
    """The lead names of the first readable record, and its path."""
    reasons = []
    for item in items:
        if item.rows is not None:
            return [cohorts[item.source][1]], item.path
        try:
            return list(_read(item.path, fs)[0].leads), item.path
        except (ECGDataError, ValueError) as exc:
            reasons.append(str(exc))
    raise ECGDataError(f"none of the {len(items)} records could be read; the first: {reasons[0]}")


def _record(items: list[_Item], notes: list[str]) -> dict:
    """The pre-processing record of the store's windows: :data:`CHAIN`'s, with statistics
    per subject when every window comes from a dataset or a manifest (their loaders z-score
    per subject); a store mixing both says so in a note."""
    from_cohorts = sum(it.rows is not None for it in items)
    if items and from_cohorts == len(items):
        return dataclasses.replace(CHAIN, zscore_scope="subject").to_record()
    if from_cohorts:
        notes.append("the windows of dataset and manifest sources were z-scored per subject, "
                     "those of recordings per record and lead")
    return PREPROCESSING


def _items_sha(items: list[_Item]) -> str:
    rows = [[it.record, it.path, it.source, it.rows] for it in items]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _start(out: Path, params: dict, items, cohorts, fs, want, dtype, shard_windows) -> dict | None:
    """The build state to continue (fresh or resumed), or None if ``out`` is complete."""
    from ecgfast.data import storefile as sf

    if (out / sf.MANIFEST).is_file():
        if sf.read_manifest(out).get("params") == params:
            return None
        raise ECGDataError(f"{out}: already holds a store prepared from other sources or with "
                           "other parameters; choose another --out")
    if (out / STATE).is_file():
        state = json.loads((out / STATE).read_text())
        if state.get("params") != params:
            diff = sorted(k for k in params if params[k] != state.get("params", {}).get(k))
            raise ECGDataError(f"{out}: a preparation with other {', '.join(diff)} was started "
                               "here; rerun it with the same arguments, or choose another --out")
        return state
    if out.exists() and any(out.iterdir()):
        raise ECGDataError(f"{out}: exists, is not empty and is not a window store")
    leads, origin = (list(want), "--leads") if want is not None else _probe_leads(items, cohorts, fs)
    per_window = len(leads) * WINDOW_LENGTH
    size = shard_windows or max(1, SHARD_BYTES // (per_window * np.dtype(dtype).itemsize))
    state = {"params": params, "leads": leads, "leads_from": origin, "shard_windows": int(size)}
    out.mkdir(parents=True, exist_ok=True)
    sf.write_json(out / STATE, state)
    return state


def _clean_tmp(out: Path) -> None:
    """Remove the temporary files of a killed run (never visible as shards or parts)."""
    for folder in (out, out / "shards", out / PARTS, out / "index"):
        if folder.is_dir():
            for f in folder.iterdir():
                if f.name.startswith(".") and ".tmp-" in f.name:
                    f.unlink()


def _load_parts(out: Path) -> list[dict]:
    parts, k = [], 0
    while (out / PARTS / f"part-{k:05d}.json").is_file():
        parts.append(json.loads((out / PARTS / f"part-{k:05d}.json").read_text()))
        k += 1
    return parts


def prepare(sources, out, *, leads=None, dtype: str = "float16", fs: float | None = None,
            workers: int | None = None, shard_windows: int | None = None,
            progress: bool = True) -> Path:
    """Build (or finish building) the window store ``out`` from ``sources``.

    Args:
        sources: folders (searched recursively for WFDB ``.hea`` records and EDF/BDF and
            Poly5 files; PTB-XL's ``records100`` is skipped beside ``records500``;
            MIMIC-IV-ECG subjects are taken from the ``pXXXXXXXX`` folders), recording
            files (``.hea``, ``.edf``, ``.bdf``, ``.S00``, ``.npy``, ``.csv``; the last two
            need ``fs``), manifests or datasets ``NAME:ROOT``. An EDF+D file's segments are
            windowed one by one.
        leads: the lead names every record must have (others are dropped; a record
            lacking one is rejected), or None / "all": every record's leads, which must
            be the same set in every record (else an error says to pass ``leads``).
        dtype: "float16" or "float32" windows.
        workers: processes reading records (default: the core count).
        shard_windows: windows per shard (default: about 64 MiB per shard).

    Returns:
        ``out``. Rerunning with the same arguments resumes an interrupted build, or does
        nothing when the store is complete.
    """
    from tqdm.auto import tqdm

    from ecgfast.data import storefile as sf

    out = Path(out)
    if dtype not in sf.DTYPES:
        raise ValueError(f"dtype must be one of {tuple(sf.DTYPES)}, got {dtype!r}")
    want = None if leads is None or leads == "all" else tuple(str(x) for x in leads)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1 or (shard_windows is not None and int(shard_windows) < 1):
        raise ValueError("workers and shard_windows must be >= 1")
    cohorts, notes = {}, []
    items = find_records(sources, want, cohorts, notes, fs=fs)
    params = {"sources": [str(s) for s in sources], "leads": want and list(want), "dtype": dtype,
              "fs": fs, "shard_windows": shard_windows, "preprocessing": _record(items, notes),
              "records_sha256": _items_sha(items), "n_records_listed": len(items)}
    state = _start(out, params, items, cohorts, fs, want, dtype, shard_windows)
    if state is None:
        print(f"{out}: already complete", file=sys.stderr)
        return out
    for note in notes:
        print(note, file=sys.stderr)
    _clean_tmp(out)
    parts = _load_parts(out)
    if not (parts and parts[-1]["final"]):
        _build(out, items, cohorts, state, parts, want, dtype, fs, workers, progress, tqdm)
        parts = _load_parts(out)
    _consolidate(out, parts, cohorts, state, params, notes)
    return out


def _write_part(out: Path, k: int, part: dict) -> None:
    from ecgfast.data import storefile as sf

    sf.write_json(out / PARTS / f"part-{k:05d}.json", part)


def _build(out, items, cohorts, state, parts, want, dtype, fs, workers, progress, tqdm) -> None:
    """Consume the records from the last part's cursor on, writing shards and parts."""
    from ecgfast.data import storefile as sf

    size, store_leads = state["shard_windows"], state["leads"]
    start, skip = parts[-1]["next"] if parts else (0, 0)
    n_shards = sum(1 for p in parts if p["shard"])
    committed = sum(p["shard"]["n_windows"] for p in parts if p["shard"])
    tasks = [(it, want, store_leads, dtype, fs) for it in items[start:] if it.rows is None]
    buf, buf_n, records, rejected = [], 0, [], []
    pool = None
    if workers > 1 and len(tasks) > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(min(workers, len(tasks)))
    try:
        results = pool.imap(_work, tasks) if pool else map(_work, tasks)
        bar = tqdm(total=len(items), initial=start, unit="record", desc=f"prepare {out}",
                   disable=not progress, dynamic_ncols=True)
        for i in range(start, len(items)):
            it = items[i]
            res = next(results) if it.rows is None else _cohort_result(cohorts, it, dtype)
            bar.update()
            if "fatal" in res or (it.rows is not None and want is None
                                  and res["leads"] != store_leads):
                names = res.get("fatal") or res["leads"]
                common = [n for n in store_leads if n in names] or store_leads
                raise ECGDataError(
                    f"{it.path}: leads {names} differ from the store's leads {store_leads} "
                    f"(from {state['leads_from']}); records with different lead sets need "
                    f"--leads to choose the leads to keep, e.g. --leads {','.join(common)} "
                    "(a record lacking one goes to the rejection log)")
            if "reason" in res:
                rejected.append({"record": it.record, "path": it.path, "reason": res["reason"]})
                continue
            w, s = res.pop("windows"), skip if i == start else 0
            if s == 0:
                records.append({"record": it.record, "path": it.path, "source": it.source,
                                "subject": it.subject, "first_window": committed + buf_n,
                                "n_windows": len(w), **res})
            buf.append(w[s:])
            buf_n += len(w) - s
            while buf_n >= size:
                cat = np.concatenate(buf)
                sha = sf.write_npy(out / sf.shard_path(n_shards), cat[:size])
                buf, buf_n, committed = [cat[size:]], buf_n - size, committed + size
                nxt = [i, len(w) - buf_n] if buf_n else [i + 1, 0]
                _write_part(out, n_shards, {"records": records, "rejected": rejected,
                                            "next": nxt, "final": False,
                                            "shard": {"n_windows": size, "sha256": sha}})
                records, rejected, n_shards = [], [], n_shards + 1
        bar.close()
    finally:
        if pool is not None:
            pool.terminate()
    shard = None
    if buf_n:
        cat = np.concatenate(buf)
        shard = {"n_windows": buf_n, "sha256": sf.write_npy(out / sf.shard_path(n_shards), cat)}
    _write_part(out, n_shards, {
        "records": records, "rejected": rejected, "next": [len(items), 0], "final": True,
        "shard": shard})


def _consolidate(out: Path, parts, cohorts, state, params, notes) -> None:
    """Write the index, the record and rejection logs, then the manifest; drop the parts."""
    import shutil

    from ecgfast.data import storefile as sf

    records = [r for p in parts for r in p["records"]]
    rejected = [r for p in parts for r in p["rejected"]]
    shards = [p["shard"] for p in parts if p["shard"]]
    n = sum(s["n_windows"] for s in shards)
    classes = {}
    for cohort, _ in cohorts.values():
        for task, names in cohort.classes.items():
            if classes.setdefault(task, list(names)) != list(names):
                raise ECGDataError(f"task {task!r} has classes {classes[task]} in one dataset "
                                   f"and {list(names)} in another; prepare them separately")
    tasks = sorted({t for r in records for t in r.get("labels", {})})
    labels = np.full((n, len(tasks)), -1, dtype=np.int16)
    for r in records:
        for j, task in enumerate(tasks):
            if task in r.get("labels", {}):
                labels[r["first_window"]:r["first_window"] + r["n_windows"], j] = r["labels"][task]
    counts = np.array([r["n_windows"] for r in records], dtype=np.int64)
    sf.write_npy(out / sf.INDEX_RECORD, np.repeat(np.arange(len(records), dtype=np.int64), counts))
    sf.write_npy(out / sf.INDEX_START, np.array(
        [t for r in records for t in r["starts"]], dtype=np.float64).reshape(n))
    if tasks:
        sf.write_npy(out / sf.INDEX_LABELS, labels)
    sf.write_jsonl(out / sf.RECORDS, [{k: v for k, v in r.items() if k not in ("starts", "labels")}
                                      for r in records])
    sf.write_jsonl(out / sf.REJECTED, rejected)
    sf.write_json(out / sf.MANIFEST, {
        "format": sf.FORMAT, "version": sf.VERSION, "dtype": params["dtype"],
        "leads": state["leads"], "window_length": WINDOW_LENGTH,
        "fs": CHAIN.target_fs, "shard_windows": state["shard_windows"],
        "n_windows": n, "n_records": len(records), "n_rejected": len(rejected),
        "shards": shards, "tasks": tasks, "classes": {t: classes.get(t) for t in tasks},
        "preprocessing": params["preprocessing"], "params": params, "notes": notes})
    shutil.rmtree(out / PARTS, ignore_errors=True)
    (out / STATE).unlink(missing_ok=True)
