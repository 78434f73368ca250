"""Table 1 from the cells' results: summaries, paired differences, and the files.

- ``table1.md``: the report's layout (Configuration | Training time | <task> Acc., F1 per
  task | Epochs to convergence), mean ± sd over seeds, one table per split, then each
  configuration's paired difference to "none".
- ``table1.csv``: one row per (cell, split, task, fold).
- ``table1.json``: options, environment, data, summaries, differences and every cell.
- ``table1.png``: see :mod:`ecgfast.ablation.plot`.

A seed's score is the mean over its folds; the table gives mean ± sd (ddof 1) over seeds.
The difference to "none" pairs the cells of one seed (same held-out subjects, same
folds) fold by fold: n = seeds x folds differences, and a 95 % t-interval
mean ± t(0.975, n - 1) sd / sqrt(n). Folds of one seed share training data, so the n
differences are not independent and the interval is narrower than one over seeds alone.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from ecgfast.ablation.config import AblationConfig
from ecgfast.atomic import atomic_write_text

CONFIG_TITLES = {
    "none": "No skip connections",
    "first": "Skip connection in first block",
    "first_two": "Skip connections in first and second blocks",
    "all": "Skip connections in all blocks",
}
METRICS = ("accuracy", "f1")
INTERVAL = ("95 % t-interval over the seeds x folds paired differences (same seed: same "
            "held-out subjects and folds): mean ± t(0.975, n-1) sd/sqrt(n)")


def row_label(residual: str, attention: bool, config: AblationConfig) -> str:
    se = " + SE attention" if attention and config.attention != "off" else ""
    return CONFIG_TITLES[residual] + se


def stats(values) -> dict:
    """mean, sd (ddof 1; None for one value) and n."""
    v = np.asarray(list(values), dtype=np.float64)
    sd = float(v.std(ddof=1)) if v.size > 1 else None
    return {"mean": float(v.mean()) if v.size else math.nan, "sd": sd, "n": int(v.size)}


def t_interval(diffs) -> dict:
    """Mean of ``diffs`` with its 95 % t-interval (None bounds when n < 2)."""
    from scipy import stats as sps

    s = stats(diffs)
    if s["sd"] is None:
        return {**s, "low": None, "high": None}
    half = float(sps.t.ppf(0.975, s["n"] - 1)) * s["sd"] / math.sqrt(s["n"])
    return {**s, "low": s["mean"] - half, "high": s["mean"] + half}


def _groups(records: list[dict], config: AblationConfig):
    for attention in config.attention_settings:
        for residual in config.configs:
            cells = sorted((r for r in records if r["residual"] == residual
                            and bool(r["attention"]) == attention), key=lambda r: r["seed"])
            yield residual, attention, cells


def summarise(records: list[dict], config: AblationConfig, tasks: list[str]) -> list[dict]:
    """One row per (configuration, attention): timing, epochs and scores over seeds."""
    rows = []
    for residual, attention, cells in _groups(records, config):
        metrics = {
            split: {task: {m: stats(np.mean(c["results"][split][task][f"{m}_folds"]) for c in cells)
                           for m in METRICS} for task in tasks}
            for split in config.splits
        }
        rows.append({
            "configuration": row_label(residual, attention, config), "residual": residual,
            "attention": attention, "seeds": [c["seed"] for c in cells],
            **{k: stats(c[k] for c in cells) for k in
               ("best_epoch", "epochs_run", "seconds_to_convergence", "pretrain_seconds")},
            "metrics": metrics,
        })
    return rows


def differences(records: list[dict], config: AblationConfig, tasks: list[str]) -> list[dict]:
    """Each configuration minus "none" (same attention), paired by seed and fold."""
    if "none" not in config.configs:
        return []
    by_key = {(r["residual"], bool(r["attention"]), r["seed"]): r for r in records}
    out = []
    for residual, attention, cells in _groups(records, config):
        if residual == "none":
            continue
        entry = {"configuration": row_label(residual, attention, config), "residual": residual,
                 "attention": attention, "baseline": row_label("none", attention, config),
                 "splits": {}}
        for split in config.splits:
            entry["splits"][split] = {task: {} for task in tasks}
            for task in tasks:
                for m in METRICS:
                    diffs = []
                    for c in cells:
                        base = by_key[("none", attention, c["seed"])]["results"][split][task]
                        diffs += list(np.subtract(c["results"][split][task][f"{m}_folds"],
                                                  base[f"{m}_folds"]))
                    entry["splits"][split][task][m] = t_interval(diffs)
        out.append(entry)
    return out


def _pm(s: dict, scale: float = 100.0, digits: int = 1) -> str:
    text = f"{scale * s['mean']:.{digits}f}"
    return text if s["sd"] is None else f"{text} ± {scale * s['sd']:.{digits}f}"


def duration(s: dict) -> str:
    """A mean ± sd of seconds in s, min or h, whichever reads best."""
    scale, unit = ((1, "s") if s["mean"] < 90 else (1 / 60, "min") if s["mean"] < 5400
                   else (1 / 3600, "h"))
    return f"{_pm(s, scale, 1 if unit != 's' else 0)} {unit}"


def _signed(d: dict) -> str:
    text = f"{100 * d['mean']:+.1f}"
    if d["low"] is None:
        return text
    return f"{text} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _task_heads(tasks: list[str]) -> list[str]:
    return [h for t in tasks for h in (f"{t.capitalize()} Acc.", f"{t.capitalize()} F1")]


def markdown(payload: dict, config: AblationConfig, tasks: list[str]) -> str:
    data, rows = payload["data"], payload["rows"]
    synthetic = " **SYNTHETIC data: the labels are not real affect.**" if data["synthetic"] else ""
    lines = [
        "# Table 1: skip connections (ecgfast ablation)", "",
        (f"Data: `{config.data}` ({data['n_windows']} windows, {data['n_subjects']} subjects)."
         f"{synthetic} Pretext task: {config.objective}. Each configuration pretrained until its "
         f"pretext loss on held-out subjects ({config.validation_fraction:g} of them) had not "
         f"improved for {config.patience} epochs (at most {config.max_epochs}); the encoder of "
         f"the best epoch is frozen and probed. Mean ± sd over {config.seeds} seed(s); scores in "
         "%."),
        ("Training time: wall time to the best epoch (training and validation); the total "
         "pretraining time of every cell is in table1.json and table1.csv."), "",
    ]
    titles = {"subject": f"Subject-wise folds ({config.subject_folds} folds; the headline)",
              "window": f"Window-level {config.window_folds}-fold (the paper's protocol; optimistic)"}
    heads = ["Configuration", "Training time", *_task_heads(tasks), "Epochs to convergence"]
    n_seeds = config.seeds
    for split in config.splits:
        lines += [f"## {titles[split]}", "", "| " + " | ".join(heads) + " |",
                  "|" + "---|" * len(heads)]
        for row in rows:
            cells = [_pm(row["metrics"][split][t][m]) for t in tasks for m in METRICS]
            lines.append("| " + " | ".join([row["configuration"],
                                            duration(row["seconds_to_convergence"]), *cells,
                                            _pm(row["best_epoch"], 1.0, int(n_seeds > 1))])
                         + " |")
        lines.append("")
    if payload["differences"]:
        heads = ["Configuration", "Split", *_task_heads(tasks)]
        lines += ["## Difference to no skip connections (percentage points)", "",
                  f"Mean [{INTERVAL}].", "", "| " + " | ".join(heads) + " |",
                  "|" + "---|" * len(heads)]
        for d in payload["differences"]:
            for split, per_task in d["splits"].items():
                cells = [_signed(per_task[t][m]) for t in tasks for m in METRICS]
                lines.append("| " + " | ".join([d["configuration"], split, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def csv_text(records: list[dict], config: AblationConfig, tasks: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = ("best_epoch", "epochs_run", "stopped_early", "seconds_to_convergence",
            "pretrain_seconds", "probe_seconds")
    writer.writerow(["configuration", "residual", "attention", "seed", "split", "task", "fold",
                     "accuracy", "f1", *keys])
    for residual, attention, cells in _groups(records, config):
        for c in cells:
            for split in config.splits:
                for task in tasks:
                    r = c["results"][split][task]
                    for fold, (acc, f1) in enumerate(zip(r["accuracy_folds"], r["f1_folds"])):
                        writer.writerow([row_label(residual, attention, config), residual,
                                         attention, c["seed"], split, task, fold, acc, f1,
                                         *(c[k] for k in keys)])
    return buf.getvalue()


def write_report(out: Path, config: AblationConfig, records: list[dict], *, tasks: list[str],
                 cohort, environment: dict, wall_seconds: float) -> dict:
    """Write table1.{md,csv,json,png} into ``out``; return the JSON payload."""
    from ecgfast.ablation.plot import plot_table

    provenance = getattr(cohort, "provenance", {}) or {}
    payload = {
        "format": "ecgfast.ablation.table1", "version": 1,
        "config": config.to_dict(), "environment": environment,
        "data": {"source": config.data, "n_windows": len(cohort), "n_subjects": cohort.n_subjects,
                 "synthetic": provenance.get("dataset") == "synthetic" or config.data == "synthetic",
                 "tasks": {t: list(cohort.classes[t]) for t in tasks}, "provenance": provenance},
        "interval": INTERVAL,
        "rows": summarise(records, config, tasks),
        "differences": differences(records, config, tasks),
        "cells": records,
        "wall_seconds_this_invocation": wall_seconds,
        "cell_seconds_total": float(sum(c["pretrain_seconds"] + c["probe_seconds"] for c in records)),
    }
    atomic_write_text(out / "table1.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "table1.csv", csv_text(records, config, tasks))
    atomic_write_text(out / "table1.md", markdown(payload, config, tasks))
    plot_table(payload, tasks, out / "table1.png")
    return payload
