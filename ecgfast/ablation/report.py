"""Table 1 from the cells' results: rows, paired differences, and the files.

- ``table1.md``: the report's layout (Configuration | Training time | per task: Acc., F1,
  balanced accuracy, AUROC | Epochs to convergence) under the headline protocol
  (subject-wise folds, no calibration, the linear probe when it ran) with the baselines
  and the chance rate; each configuration's paired difference to "none"; then every
  protocol's full table with the paired differences to random init and to HRV
  (:func:`ecgfast.evaluation.markdown_tables`); a footer with the protocol and the
  compute used.
- ``table1.csv``: one line per (row, split, features, calibration, probe, task, seed, fold).
- ``table1.json``: options, environment, data, scope, estimate, rows with summaries,
  differences and every cell.
- ``table1.png``: see :mod:`ecgfast.ablation.plot`.

Scores are mean ± sd over the seeds x folds; intervals are
:data:`ecgfast.evaluation.stats.INTERVAL`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from ecgfast.ablation.config import AblationConfig
from ecgfast.ablation.cost import hours
from ecgfast.atomic import atomic_write_text
from ecgfast.evaluation import markdown_tables
from ecgfast.evaluation.metrics import METRICS, NAMES
from ecgfast.evaluation.protocol import CALIBRATION_TEXT
from ecgfast.evaluation.stats import INTERVAL, paired_difference, stats, test_train_ratio
from ecgfast.evaluation.suite import grid_of
from ecgfast.evaluation.tables import differences, summarise

CONFIG_TITLES = {
    "none": "No skip connections",
    "first": "Skip connection in first block",
    "first_two": "Skip connections in first and second blocks",
    "all": "Skip connections in all blocks",
}
PREFIX = {"pretrained": "", "random": "random init: ", "supervised": "supervised: "}
KINDS = {"pretrained": "encoder", "random": "random", "hrv": "hrv", "supervised": "supervised"}


def row_label(residual: str, attention: bool, config: AblationConfig) -> str:
    se = " + SE attention" if attention and config.attention != "off" else ""
    return CONFIG_TITLES[residual] + se


def build_rows(records: list[dict], config: AblationConfig) -> list[dict]:
    """The cells' results as :mod:`ecgfast.evaluation.tables` rows."""
    groups: dict = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        groups.setdefault((r["kind"], r["residual"], bool(r["attention"])), []).append(r)
    rows = []
    for (kind, residual, attention), cells in groups.items():
        label = "HRV features" if kind == "hrv" else PREFIX[kind] + row_label(residual, attention, config)
        for split, by_mode in cells[0]["results"].items():
            for mode, by_cal in by_mode.items():
                for cal, by_probe in by_cal.items():
                    for probe in by_probe:
                        grid = grid_of([c["results"][split][mode][cal][probe] for c in cells])
                        rows.append({
                            "name": label + (" + HRV" if mode == "encoder+hrv" else ""),
                            "kind": KINDS[kind], "features": mode,
                            "configuration": None if kind == "hrv" else f"{residual}-{attention}",
                            "probe": probe, "calibration": cal, "split": split,
                            "seeds": [c["seed"] for c in cells], "scores": grid,
                            "cells": [c["cell"] for c in cells]})
    return rows


def headline(config: AblationConfig) -> tuple[str, str, str]:
    """(split, calibration, probe) of Table 1's first table."""
    return (config.splits[0], "none" if "none" in config.calibrations else config.calibrations[0],
            "linear" if "linear" in config.probes else config.probes[0])


def config_differences(rows: list[dict], config: AblationConfig) -> list[dict]:
    """Each configuration minus "none" (same attention, protocol and features), paired by
    seed and fold."""
    out = []
    for row in rows:
        if row["kind"] != "encoder" or row["configuration"].startswith("none-"):
            continue
        attention = row["configuration"].rsplit("-", 1)[1]
        base = next((r for r in rows if r["kind"] == "encoder"
                     and r["configuration"] == f"none-{attention}"
                     and all(r[k] == row[k] for k in ("split", "calibration", "probe", "features"))),
                    None)
        if base is None or base["seeds"] != row["seeds"]:
            continue
        tasks = {}
        for task, grid in row["scores"].items():
            n_test = np.asarray(grid["n_test"])
            ratio = test_train_ratio(n_test.ravel().tolist(), int(n_test[0].sum()))
            tasks[task] = {m: paired_difference(grid[m], base["scores"][task][m], ratio)
                           for m in METRICS if m in grid}
        out.append({"name": row["name"], "versus": base["name"],
                    **{k: row[k] for k in ("split", "calibration", "probe", "features")},
                    "tasks": tasks})
    return out


def _pm(s: dict, scale: float = 100.0, digits: int = 1) -> str:
    if not s["n"]:
        return "-"
    text = f"{scale * s['mean']:.{digits}f}"
    return text if s["sd"] is None else f"{text} ± {scale * s['sd']:.{digits}f}"


def duration(s: dict) -> str:
    """A mean ± sd of seconds in s, min or h, whichever reads best."""
    scale, unit = ((1, "s") if s["mean"] < 90 else (1 / 60, "min") if s["mean"] < 5400
                   else (1 / 3600, "h"))
    return f"{_pm(s, scale, 1 if unit != 's' else 0)} {unit}"


def _signed(d: dict) -> str:
    if not d["n"]:
        return "-"
    text = f"{100 * d['mean']:+.1f}"
    return text if d["low"] is None else f"{text} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _metrics(task: str, rows: list[dict]) -> list[str]:
    return [m for m in METRICS if any(m in r["scores"].get(task, {}) for r in rows)]


def table1(payload: dict, config: AblationConfig, tasks: list[str]) -> list[str]:
    split, cal, probe = headline(config)
    rows = [r for r in payload["rows"] if r["split"] == split and r["calibration"] == cal
            and r["probe"] in (probe, "end-to-end") and r["features"] in ("encoder", "hrv", "-")]
    order = {"encoder": 0, "random": 1, "hrv": 2, "supervised": 3}
    rows.sort(key=lambda r: order[r["kind"]])
    heads = ["Configuration", "Training time", *[f"{t.capitalize()} {NAMES[m]}" for t in tasks
                                                 for m in _metrics(t, rows)],
             "Epochs to convergence"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    cells = {c["cell"]: c for c in payload["cells"]}
    chance = []
    for t in tasks:
        rate = summarise(rows[0])[t]["majority_rate"]
        chance += [_pm(rate) if m == "accuracy" else "50.0" if m == "auroc" else "-"
                   for m in _metrics(t, rows)]
    for r in rows:
        s = summarise(r)
        scored = [_pm(s[t][m]) if m in s[t] else "-" for t in tasks for m in _metrics(t, rows)]
        own = [cells[c] for c in r.get("cells", []) if c in cells]
        if r["kind"] == "encoder":
            timing = [duration(stats(c["seconds_to_convergence"] for c in own)),
                      _pm(stats(c["best_epoch"] for c in own), 1.0, 1)]
        elif r["kind"] == "supervised":
            timing = [duration(stats(c["seconds"] for c in own)) + " (all folds)",
                      f"{config.supervised_epochs} (fixed)"]
        else:
            timing = ["-", "-"]
        lines.append("| " + " | ".join([r["name"], timing[0], *scored, timing[1]]) + " |")
    lines.append("| " + " | ".join(["majority class (chance)", "-", *chance, "-"]) + " |")
    return lines


def markdown(payload: dict, config: AblationConfig, tasks: list[str]) -> str:
    data = payload["data"]
    split, cal, probe = headline(config)
    synthetic = " **SYNTHETIC data: the labels are not real affect.**" if data["synthetic"] else ""
    lines = [
        "# Table 1: skip connections (ecgfast ablation)", "",
        (f"Data: `{config.data}` ({data['n_windows']} windows, {data['n_subjects']} subjects)."
        f"{synthetic} Pretext task: {config.objective}; contrastive augmentation set: "
        f"{config.augmentation}. Pretraining: {payload['scope_text']}. Each pretraining run stops "
        f"when the pretext loss of {_held_out(payload, config)} has not improved for "
        f"{config.patience} epochs (at most {config.max_epochs}); the encoder of the best epoch "
        "is frozen and probed."), "",
        (f"Headline: {split}-wise folds, {CALIBRATION_TEXT[cal]}, {probe} probe; mean ± sd over "
        f"{config.seeds} seed(s) x folds, %. Training time: wall time to the best epoch of one "
        "pretraining run (training and validation), mean over runs."), "",
        *table1(payload, config, tasks), "",
    ]
    diffs = [d for d in payload["config_differences"]
             if (d["split"], d["calibration"], d["probe"], d["features"]) == (split, cal, probe, "encoder")]
    if diffs:
        metrics = {t: [m for m in METRICS if m in diffs[0]["tasks"][t]] for t in tasks}
        heads = ["Configuration", *[f"{t.capitalize()} {NAMES[m]}" for t in tasks for m in metrics[t]]]
        lines += ["## Difference to no skip connections (percentage points)", "",
                  f"Mean [{INTERVAL}].", "", "| " + " | ".join(heads) + " |",
                  "|" + "---|" * len(heads)]
        for d in diffs:
            lines.append("| " + " | ".join([d["name"], *[_signed(d["tasks"][t][m]) for t in tasks
                                                          for m in metrics[t]]]) + " |")
        lines.append("")
    lines += ["# Every protocol, with the baselines", "", markdown_tables(payload["rows"], tasks),
              "## Protocol and compute", "", *footer(payload, config), ""]
    return "\n".join(lines)


def footer(payload: dict, config: AblationConfig) -> list[str]:
    c = payload["compute"]
    hrv = payload.get("hrv")
    out = [f"- Pretraining scope: {payload['scope_text']}.",
           f"- Contrastive augmentation set: {config.augmentation}.",
           *[f"- Calibration `{k}`: {CALIBRATION_TEXT[k]}." for k in config.calibrations],
           (f"- Probes: {', '.join(config.probes)} (linear: logistic regression, L2 C = 1, on "
           f"standardised features; mlp: one hidden layer of 64, {config.probe_epochs} full-batch "
           "Adam steps).")]
    if hrv:
        out.append(f"- HRV features: {len(hrv['features'])} per window from R peaks of "
                   f"{hrv['detector']} and a 'failed' indicator; detection failed on "
                   f"{hrv['n_failed']} of {hrv['n_windows']} windows {hrv['reasons'] or ''} "
                   "(imputed with each training fold's medians, never dropped).")
    if "supervised" in config.baselines:
        out.append(f"- Supervised: the {row_label(config.configs[-1], config.attention_settings[-1], config)} "
                   f"encoder and a linear head trained end to end, {config.supervised_epochs} epochs, "
                   "class-weighted cross-entropy, on each training fold.")
    env = payload["environment"]
    out.append(f"- Compute: {c['pretraining_runs']} pretraining runs, {hours(c['pretrain_seconds'])} "
               f"of pretraining wall time in all (median {c['windows_per_s']:.1f} windows/s), "
               f"{hours(c['cell_seconds'])} in all cells; wall time {hours(payload['wall_seconds'])} "
               f"over {max(1, len(payload['invocations']))} invocation(s); estimated at the start: at most "
               f"{hours(payload['estimate']['seconds'])}. {env['cpu']} ({env['device']}, "
               f"{env['torch_threads']} torch threads, precision {c['precision']}), torch "
               f"{env['torch']}.")
    return out


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "kind", "features", "probe", "calibration", "split", "task", "seed",
                     "fold", *METRICS, "majority_rate", "n_test"])
    for r in rows:
        for task, grid in r["scores"].items():
            for i, seed in enumerate(r["seeds"]):
                for fold in range(len(grid["n_test"][i])):
                    writer.writerow([r["name"], r["kind"], r["features"], r["probe"],
                                     r["calibration"], r["split"], task, seed, fold,
                                     *[grid[m][i][fold] if m in grid else "" for m in METRICS],
                                     grid["majority_rate"][i][fold], grid["n_test"][i][fold]])
    return buf.getvalue()


def _compute(records: list[dict]) -> dict:
    pre = [r for r in records if r["kind"] == "pretrained"]
    rates = [u["windows_per_s"] for r in pre for u in r["units"] if u.get("windows_per_s")]
    precisions = {u.get("precision") for r in pre for u in r["units"]} - {None}
    return {"pretraining_runs": sum(len(r["units"]) for r in pre),
            "pretrain_seconds": float(sum(r["pretrain_seconds"] for r in pre)),
            "windows_per_s": float(np.median(rates)) if rates else 0.0,
            "cell_seconds": float(sum(r.get("pretrain_seconds", 0) + r.get("probe_seconds", 0)
                                      + r.get("seconds", 0) for r in records)),
            "precision": ", ".join(sorted(precisions)) or "see estimate"}


def _held_out(payload: dict, config: AblationConfig) -> str:
    f = config.validation_fraction
    if payload.get("validation_by") == "windows":
        return (f"held-out windows ({f:g} of its windows, drawn at random: the pretraining "
                "source names no subjects)")
    return f"its held-out subjects ({f:g} of its subjects)"


def write_report(out: Path, config: AblationConfig, records: list[dict], *, tasks: list[str],
                 cohort, environment: dict, wall_seconds: float, scope: str, scope_check: dict,
                 estimate: dict, hrv: dict | None, invocations: list[dict] | None = None,
                 validation_by: str = "subjects") -> dict:
    """Write table1.{md,csv,json,png} into ``out``; return the JSON payload.
    ``validation_by``: what early stopping holds out of pretraining, "subjects" or (for a
    pretraining source without subjects) "windows"."""
    from ecgfast.ablation.plot import plot_table
    from ecgfast.ablation.scope import SCOPE_TEXT

    provenance = getattr(cohort, "provenance", {}) or {}
    rows = build_rows(records, config)
    compute = _compute(records)
    if compute["precision"] == "see estimate":
        compute["precision"] = estimate["rates"]["precision"]
    payload = {
        "format": "ecgfast.ablation.table1", "version": 2,
        "config": config.to_dict(), "environment": environment,
        "data": {"source": config.data, "n_windows": len(cohort), "n_subjects": cohort.n_subjects,
                 "synthetic": provenance.get("dataset") == "synthetic" or config.data == "synthetic",
                 "tasks": {t: list(cohort.classes[t]) for t in tasks}, "provenance": provenance},
        "scope": scope, "scope_text": SCOPE_TEXT[scope], "scope_check": scope_check,
        "validation_by": validation_by,
        "augmentation": config.augmentation, "hrv": hrv, "interval": INTERVAL,
        "protocol": {
            "pretraining": SCOPE_TEXT[scope], "transductive_pretraining": scope == "transductive",
            "calibrations": {c: CALIBRATION_TEXT[c] for c in config.calibrations},
            "transductive_calibration": "subject" in config.calibrations,
            "augmentation": config.augmentation, "probes": list(config.probes),
            "baselines": list(config.baselines), "features": list(config.features_modes),
            "headline": dict(zip(("split", "calibration", "probe"), headline(config)))},
        "invocations": invocations or [],
        "wall_seconds": float(sum(i["seconds"] for i in invocations or [])) or wall_seconds,
        "estimate": estimate, "compute": compute,
        "rows": [{**r, "summary": summarise(r)} for r in rows],
        "differences": differences(rows), "config_differences": config_differences(rows, config),
        "cells": records, "wall_seconds_this_invocation": wall_seconds,
        "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    atomic_write_text(out / "table1.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "table1.csv", csv_text(rows))
    atomic_write_text(out / "table1.md", markdown(payload, config, tasks))
    plot_table(payload, tasks, out / "table1.png", headline(config))
    return payload
