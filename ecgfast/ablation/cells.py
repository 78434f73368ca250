"""The cells of an ablation: what each computes and writes, so that a rerun skips it.

- a *pretrained* cell (configuration x attention x seed): one pretraining run per
  :class:`~ecgfast.ablation.scope.Unit` in ``cells/<cell>/<unit>/run`` (checkpoints,
  metrics, ``best/``), the best epoch's embeddings of every labelled window in
  ``<unit>/features.npy`` and its record in ``<unit>/unit.json``; then the probes of
  every protocol;
- a *random* cell (configuration x attention x seed): the embeddings of the encoder that
  seed's pretraining starts from, probed the same way;
- a *supervised* cell (seed): the encoder trained end to end on each fold's training
  windows, one ``<split>-fold<k>.json`` per fold.

Every cell's ``result.json`` is written atomically when the cell is complete: a killed
run loses at most one epoch of one pretraining run (or one supervised fold).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from ecgfast.atomic import atomic_write, atomic_write_text
from ecgfast.training.checkpoint import LATEST

RESULT = "result.json"


def cell_name(residual: str, attention: bool, seed: int, kind: str = "pretrained") -> str:
    base = f"{residual}-{'se' if attention else 'plain'}-seed{seed}"
    return base if kind == "pretrained" else f"{kind}-{base}"


def _save_features(path: Path, features: np.ndarray) -> None:
    atomic_write(path, lambda tmp: np.save(tmp, features.astype(np.float32), allow_pickle=False))


def _load_features(path: Path) -> np.ndarray:
    from ecgfast.data.npyfile import read_npy

    with open(path, "rb") as f:
        return read_npy(f, path.stat().st_size, str(path))


def probe_protocols(features_of_split, labels, folds: dict, *, config, groups, hrv_x,
                    n_classes: dict, seed: int, modes=None) -> dict:
    """{split: {features mode: {calibration: {probe: {task: fold record}}}}} for the
    ``modes`` (default: the config's). ``features_of_split(split)``: an (N, D) array or
    one per fold."""
    from ecgfast.evaluation.protocol import score_folds

    out = {}
    for split, split_folds in folds.items():
        base = features_of_split(split)
        out[split] = {}
        for mode in modes or config.features_modes:
            if mode == "encoder+hrv":
                feats = ([np.concatenate([f, hrv_x], 1) for f in base] if isinstance(base, list)
                         else np.concatenate([base, hrv_x], 1))
            else:
                feats = base
            out[split][mode] = {c: {p: score_folds(feats, labels, split_folds, groups=groups,
                                                   probe=p, calibration=c, seed=seed,
                                                   n_classes=n_classes,
                                                   epochs=config.probe_epochs)
                                    for p in config.probes} for c in config.calibrations}
    return out


def _epoch_times(history: list[dict], best_epoch: int | None) -> tuple[float, float]:
    seconds = [r.get("seconds", 0.0) + r.get("val_seconds", 0.0) for r in history]
    return float(sum(seconds[:best_epoch or len(seconds)])), float(sum(seconds))


def run_unit(ctx, unit, residual: str, attention: bool, seed: int,
             unit_dir: Path) -> tuple[dict, np.ndarray]:
    """Pretrain (or resume) one unit, embed the labelled windows with its best epoch. The
    run records its training windows' provenance (the source cohort's subjects)."""
    from ecgfast.evaluation import extract_features
    from ecgfast.precision import resolve_precision
    from ecgfast.provenance import describe_data
    from ecgfast.training import load_encoder, pretrain, resolve_device

    config, source_windows = ctx.config, ctx.source_windows
    record_path, feats_path = unit_dir / "unit.json", unit_dir / "features.npy"
    if record_path.is_file() and feats_path.is_file():
        return json.loads(record_path.read_text()), _load_features(feats_path)
    run_dir = unit_dir / "run"
    train = source_windows[unit.train]
    cohort = None if ctx.source_cohort is None else ctx.source_cohort.subset(unit.train)
    t0 = time.perf_counter()
    result = pretrain(train, run_dir, config.encoder_config(residual, attention),
                      config.pretrain_config(seed), progress=ctx.progress,
                      resume=(run_dir / "checkpoints" / LATEST).exists(),
                      validation=source_windows[unit.validation],
                      provenance=describe_data(train, cohort=cohort, source=ctx.source_name))
    t_session = time.perf_counter() - t0
    t1 = time.perf_counter()
    features = extract_features(load_encoder(result.best_checkpoint), ctx.cohort.windows,
                                device=resolve_device(config.device))
    to_best, total = _epoch_times(result.history, result.best_epoch)
    rates = [r["windows_per_s"] for r in result.history if r.get("windows_per_s")]
    record = {
        "unit": unit.name, "split": unit.split, "fold": unit.fold,
        "n_pretrain_windows": len(unit.train), "n_validation_windows": len(unit.validation),
        "epochs_run": len(result.history), "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "val_loss": [r["val_loss"] for r in result.history],
        "train_loss": [r["loss"] for r in result.history],
        "seconds_to_convergence": to_best, "pretrain_seconds": total,
        "this_session_pretrain_seconds": t_session,
        "windows_per_s": statistics.median(rates) if rates else None,
        "precision": resolve_precision(config.precision, resolve_device(config.device)),
        "embed_seconds": time.perf_counter() - t1,
    }
    _save_features(feats_path, features)
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    if ctx.on_unit_done is not None:
        ctx.on_unit_done()
    return record, features


def run_pretrained_cell(ctx, residual: str, attention: bool, seed: int, cell_dir: Path) -> dict:
    """Every unit of the cell, then the probes of every protocol."""
    units = ctx.units(seed)
    records, features = [], {}
    for unit in units:
        rec, feats = run_unit(ctx, unit, residual, attention, seed, cell_dir / unit.name)
        records.append(rec)
        features[(unit.split, unit.fold)] = feats
    t0 = time.perf_counter()

    def features_of_split(split):
        if (None, None) in features:
            return features[(None, None)]
        return [features[(split, k)] for k in range(len(ctx.folds(seed)[split]))]

    results = probe_protocols(features_of_split, ctx.labels, ctx.folds(seed), config=ctx.config,
                              groups=ctx.cohort.subject, hrv_x=ctx.hrv_x,
                              n_classes=ctx.n_classes, seed=seed)
    mean = statistics.fmean
    return {
        "cell": cell_dir.name, "kind": "pretrained", "residual": residual, "attention": attention,
        "seed": seed, "scope": ctx.scope, "units": records,
        "epochs_run": mean(r["epochs_run"] for r in records),
        "best_epoch": mean(r["best_epoch"] for r in records),
        "stopped_early": all(r["stopped_early"] for r in records),
        "val_loss": records[0]["val_loss"],
        "seconds_to_convergence": mean(r["seconds_to_convergence"] for r in records),
        "pretrain_seconds": float(sum(r["pretrain_seconds"] for r in records)),
        "windows_per_s": statistics.median([r["windows_per_s"] for r in records
                                            if r["windows_per_s"]] or [0.0]),
        "probe_seconds": time.perf_counter() - t0,
        "results": results,
    }


def run_random_cell(ctx, residual: str, attention: bool, seed: int, cell_dir: Path) -> dict:
    from ecgfast.evaluation import extract_features
    from ecgfast.evaluation.baselines import random_encoder
    from ecgfast.training import resolve_device

    t0 = time.perf_counter()
    feats = extract_features(random_encoder(ctx.config.encoder_config(residual, attention), seed),
                             ctx.cohort.windows, device=resolve_device(ctx.config.device))
    results = probe_protocols(lambda split: feats, ctx.labels, ctx.folds(seed), config=ctx.config,
                              groups=ctx.cohort.subject, hrv_x=ctx.hrv_x,
                              n_classes=ctx.n_classes, seed=seed)
    return {"cell": cell_dir.name, "kind": "random", "residual": residual, "attention": attention,
            "seed": seed, "seconds": time.perf_counter() - t0, "results": results}


def run_supervised_cell(ctx, residual: str, attention: bool, seed: int, cell_dir: Path) -> dict:
    from ecgfast.evaluation.baselines import supervised_scores
    from ecgfast.training import resolve_device

    config, results, seconds = ctx.config, {}, 0.0
    for split, tests in ctx.folds(seed).items():
        merged: dict = {}
        for k, test in enumerate(tests):
            path = cell_dir / f"{split}-fold{k}.json"
            if path.is_file():
                rec = json.loads(path.read_text())
            else:
                t0 = time.perf_counter()
                scores = supervised_scores(
                    ctx.cohort.windows, ctx.labels, [test],
                    encoder_config=config.encoder_config(residual, attention),
                    n_classes=ctx.n_classes, seed=seed, epochs=config.supervised_epochs,
                    batch_size=min(64, config.batch_size), lr=config.lr,
                    device=resolve_device(config.device), precision=config.precision)
                rec = {"scores": scores, "seconds": time.perf_counter() - t0}
                cell_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, json.dumps(rec, indent=2) + "\n")
            seconds += rec["seconds"]
            for task, metrics in rec["scores"].items():
                for key, values in metrics.items():
                    merged.setdefault(task, {}).setdefault(key, []).extend(values)
        results[split] = {"-": {"none": {"end-to-end": merged}}}
    return {"cell": cell_dir.name, "kind": "supervised", "residual": residual,
            "attention": attention, "seed": seed, "seconds": seconds,
            "epochs": config.supervised_epochs, "results": results}


RUNNERS = {"pretrained": run_pretrained_cell, "random": run_random_cell,
           "supervised": run_supervised_cell}
