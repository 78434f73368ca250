"""Run the cells of an ablation: pretrain to convergence, probe, write each result once.

A cell is one (skip configuration, attention, seed). Its pretraining run lives in
``OUT/cells/<cell>/run`` (checkpoints, metrics, ``best/``) and its result in
``OUT/cells/<cell>/result.json``, written atomically when the cell is complete. Run again
with the same options, :func:`run_ablation` skips complete cells and resumes the running
one from its last checkpoint, so a killed run loses at most one epoch.

Per cell, with seed s: the subjects are shuffled with s and ``validation_fraction`` of
them (at least one) are held out of pretraining; their pretext loss after every epoch
drives early stopping. The checkpoint of the lowest validation loss is frozen and embeds
every window of the cohort; the probes (:func:`ecgfast.evaluation.probe_features`, seed
s) run under each split. The same s gives every configuration the same held-out
subjects and the same folds, so differences between configurations are paired.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ecgfast.ablation.config import AblationConfig
from ecgfast.atomic import atomic_write_text
from ecgfast.training.checkpoint import LATEST

CONFIG_JSON = "ablation.json"
CONFIG_TOML = "ablation.toml"
RESULT = "result.json"


def cell_name(residual: str, attention: bool, seed: int) -> str:
    return f"{residual}-{'se' if attention else 'plain'}-seed{seed}"


def cells_of(config: AblationConfig) -> list[tuple[str, bool, int]]:
    """(residual, attention, seed) of every cell, in the order they run."""
    return [(r, a, s) for s in range(config.seeds) for a in config.attention_settings
            for r in config.configs]


def validation_subjects(subject: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The subjects held out of pretraining for early stopping (at least one, never all)."""
    subjects = np.unique(subject)
    if subjects.size < 2:
        raise ValueError(f"the ablation needs at least 2 subjects, the cohort has {subjects.size}")
    k = min(subjects.size - 1, max(1, round(fraction * subjects.size)))
    return np.sort(np.random.default_rng(seed).permutation(subjects)[:k])


def environment(device: str) -> dict:
    """Versions and hardware, for the record."""
    import torch

    import ecgfast
    from ecgfast.training import resolve_device

    dev = resolve_device(device)
    env = {"python": sys.version.split()[0], "torch": torch.__version__,
           "numpy": np.__version__, "ecgfast": getattr(ecgfast, "__version__", "unknown"),
           "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
           "torch_threads": torch.get_num_threads(), "device": str(dev)}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def check_out_dir(out: Path, config: AblationConfig) -> None:
    """Write the resolved options to ``out``, or check that a run there used the same."""
    saved = out / CONFIG_JSON
    if saved.is_file():
        try:
            before = json.loads(saved.read_text())["experiment"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{saved}: unreadable ({err}); choose another --out") from None
        now = config.experiment()
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            raise ValueError(
                f"--out {out}: holds an ablation run with other options ({', '.join(changed)}: "
                f"{[before.get(k) for k in changed]} there, {[now.get(k) for k in changed]} now); "
                "rerun with the same options to continue it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, json.dumps({"experiment": config.experiment(),
                                         "options": config.to_dict()}, indent=2) + "\n")
    atomic_write_text(out / CONFIG_TOML, config.to_toml())


def _epoch_times(history: list[dict], best_epoch: int | None) -> tuple[float, float]:
    seconds = [r.get("seconds", 0.0) + r.get("val_seconds", 0.0) for r in history]
    return float(sum(seconds[:best_epoch or len(seconds)])), float(sum(seconds))


def run_cell(cohort, tasks: list[str], config: AblationConfig, residual: str, attention: bool,
             seed: int, cell_dir: Path, *, progress: bool = False) -> dict:
    """Pretrain (or resume) one cell, probe its best checkpoint, return its result record."""
    from ecgfast.evaluation import extract_features, probe_features
    from ecgfast.provenance import describe_data
    from ecgfast.training import load_encoder, pretrain, resolve_device

    held_out = validation_subjects(cohort.subject, config.validation_fraction, seed)
    is_val = np.isin(cohort.subject, held_out)
    train = cohort.subset(~is_val)
    run_dir = cell_dir / "run"
    t0 = time.perf_counter()
    result = pretrain(train.windows, run_dir, config.encoder_config(residual, attention),
                      config.pretrain_config(seed), progress=progress,
                      resume=(run_dir / "checkpoints" / LATEST).exists(),
                      validation=cohort.windows[is_val],
                      provenance=describe_data(train.windows, cohort=train, source=config.data))
    t_pretrain = time.perf_counter() - t0
    encoder = load_encoder(result.best_checkpoint)
    t1 = time.perf_counter()
    features = extract_features(encoder, cohort.windows, device=resolve_device(config.device))
    labels = {t: cohort.labels[t] for t in tasks}
    n_classes = {t: len(cohort.classes[t]) for t in tasks}
    probes = {}
    for split in config.splits:
        folds = config.subject_folds if split == "subject" else config.window_folds
        probes[split] = probe_features(features, labels, split=split, groups=cohort.subject,
                                       n_folds=folds, seed=seed, n_classes=n_classes,
                                       epochs=config.probe_epochs)
    to_best, total = _epoch_times(result.history, result.best_epoch)
    return {
        "cell": cell_dir.name, "residual": residual, "attention": attention, "seed": seed,
        "validation_subjects": [int(s) for s in held_out],
        "n_pretrain_windows": int((~is_val).sum()), "n_validation_windows": int(is_val.sum()),
        "epochs_run": len(result.history), "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "val_loss": [r["val_loss"] for r in result.history],
        "train_loss": [r["loss"] for r in result.history],
        "seconds_to_convergence": to_best, "pretrain_seconds": total,
        "probe_seconds": time.perf_counter() - t1,
        "this_session_pretrain_seconds": t_pretrain,
        "results": probes,
    }


def run_ablation(config: AblationConfig, cohort, out: str | Path, *,
                 tasks: list[str] | None = None, progress: bool = True) -> dict:
    """Run (or continue) every cell of ``config`` on ``cohort`` into ``out``, then write
    the table files. ``tasks`` default to ``config.tasks``, else
    :func:`ecgfast.evaluation.default_tasks`. Returns the table1.json payload (see
    :mod:`ecgfast.ablation.report`).
    """
    from ecgfast.ablation.report import write_report
    from ecgfast.evaluation import default_tasks

    out = Path(out)
    check_out_dir(out, config)
    t0 = time.perf_counter()
    tasks = list(tasks or config.tasks or default_tasks(cohort.tasks))
    missing = [t for t in tasks if t not in cohort.labels]
    if missing:
        raise ValueError(f"tasks {missing} are not among the cohort's tasks {list(cohort.tasks)}")
    records = []
    bar = tqdm(cells_of(config), desc="ablation cells", unit="cell", disable=not progress,
               position=0, dynamic_ncols=True)
    for residual, attention, seed in bar:
        cell_dir = out / "cells" / cell_name(residual, attention, seed)
        bar.set_postfix_str(cell_dir.name)
        done = cell_dir / RESULT
        if done.is_file():
            records.append(json.loads(done.read_text()))
            continue
        record = run_cell(cohort, tasks, config, residual, attention, seed, cell_dir,
                          progress=progress)
        atomic_write_text(done, json.dumps(record, indent=2) + "\n")
        records.append(record)
        if progress:
            tqdm.write(f"{cell_dir.name}: {record['epochs_run']} epochs (best "
                       f"{record['best_epoch']}), {record['seconds_to_convergence']:.0f} s to "
                       "convergence")
    bar.close()
    return write_report(out, config, records, tasks=tasks, cohort=cohort,
                        environment=environment(config.device),
                        wall_seconds=time.perf_counter() - t0)
