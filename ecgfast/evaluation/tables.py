"""Rows of scores, their summaries, paired differences to the baselines, and tables.

A *row* is one feature set under one protocol::

    {"name": "random init", "kind": "encoder" | "random" | "hrv" | "supervised",
     "features": "encoder" | "encoder+hrv" | "hrv" | "-", "configuration": str | None,
     "probe": "linear" | "mlp" | "end-to-end", "calibration": "none" | "subject",
     "split": "subject" | "window", "seeds": [...],
     "scores": {task: {metric: [[fold scores] per seed], "majority_rate": ..., "n_test": ...}}}

:func:`summarise` gives mean ± sd over the seeds x folds scores (and the SD of the seed
means, the seed-to-seed spread); :func:`differences` pairs every encoder row (and the
random rows) with the ``random`` row of its configuration and with the ``hrv`` row under
the same protocol (:func:`ecgfast.evaluation.stats.paired_difference`).
"""

from __future__ import annotations

import numpy as np

from ecgfast.evaluation.metrics import METRICS, NAMES
from ecgfast.evaluation.protocol import CALIBRATION_TEXT
from ecgfast.evaluation.stats import INTERVAL, paired_difference, stats, test_train_ratio

KIND_ORDER = {"hrv": 0, "random": 1, "encoder": 2, "supervised": 3}


def task_metrics(row: dict, task: str) -> tuple[str, ...]:
    return tuple(m for m in METRICS if m in row["scores"][task])


def summarise(row: dict) -> dict:
    """{task: {metric: {mean, sd, n, seed_sd}}} of one row (``majority_rate`` included)."""
    out = {}
    for task, grid in row["scores"].items():
        out[task] = {}
        for key in (*task_metrics(row, task), "majority_rate"):
            cells = np.asarray(grid[key], dtype=np.float64)
            seed_means = [np.nanmean(s) for s in cells if np.isfinite(s).any()]
            out[task][key] = {**stats(cells.ravel()),
                              "seed_sd": stats(seed_means)["sd"]}
    return out


def _ratio(row: dict, task: str) -> float:
    n_test = np.asarray(row["scores"][task]["n_test"])
    total = int(n_test[0].sum()) if n_test.size else 0
    return test_train_ratio(n_test.ravel().tolist(), total)


def _reference(rows: list[dict], row: dict, kind: str) -> dict | None:
    for r in rows:
        if (r["kind"] == kind and r["split"] == row["split"] and r["probe"] == row["probe"]
                and r["calibration"] == row["calibration"]
                and (kind != "random" or (r["configuration"] == row["configuration"]
                                          and r["features"] == row["features"]))):
            return r
    return None


def differences(rows: list[dict]) -> list[dict]:
    """Each encoder row minus its ``random`` and its ``hrv`` reference, and each random
    row minus ``hrv``: {name, probe, calibration, split, versus, tasks: {task: {metric:
    paired difference}}} (pairs need the same seeds and folds)."""
    out = []
    for row in rows:
        refs = {"encoder": ("random", "hrv"), "random": ("hrv",)}.get(row["kind"], ())
        for kind in refs:
            ref = _reference(rows, row, kind)
            if ref is None or ref["seeds"] != row["seeds"]:
                continue
            tasks = {}
            for task in row["scores"]:
                ratio = _ratio(row, task)
                tasks[task] = {m: paired_difference(row["scores"][task][m], ref["scores"][task][m],
                                                    ratio)
                               for m in task_metrics(row, task)}
            out.append({"name": row["name"], "probe": row["probe"],
                        "calibration": row["calibration"], "split": row["split"],
                        "versus": ref["name"], "versus_kind": kind, "tasks": tasks})
    return out


def _pm(s: dict) -> str:
    if s["n"] == 0:
        return "-"
    text = f"{100 * s['mean']:.1f}"
    return text if s["sd"] is None else f"{text} ± {100 * s['sd']:.1f}"


def _signed(d: dict) -> str:
    if d["n"] == 0:
        return "-"
    text = f"{100 * d['mean']:+.1f}"
    return text if d["low"] is None else f"{text} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _heads(tasks: list[str], metrics_of) -> list[str]:
    return [f"{t} {NAMES[m]}" for t in tasks for m in metrics_of(t)]


def protocols(rows: list[dict]) -> list[tuple[str, str]]:
    """The (split, calibration) pairs of ``rows``, subject split and no calibration first."""
    keys = {(r["split"], r["calibration"]) for r in rows}
    return sorted(keys, key=lambda k: (k[0] != "subject", k[1] != "none", k))


def markdown_tables(rows: list[dict], tasks: list[str], *, title_level: str = "##") -> str:
    """Per (split, calibration): the scores table (a chance row first) and the paired
    differences to the baselines, in Markdown."""

    diffs = differences(rows)
    lines = []
    for split, calibration in protocols(rows):
        group = sorted((r for r in rows if r["split"] == split and r["calibration"] == calibration),
                       key=lambda r: KIND_ORDER.get(r["kind"], 9))
        if not group:
            continue

        def metrics_of(t, group=group):
            return next((task_metrics(r, t) for r in group if t in r["scores"]), ("accuracy",))

        heads = ["Features", "Probe", *_heads(tasks, metrics_of)]
        split_text = "subject-wise folds" if split == "subject" else "window-level folds (optimistic)"
        lines += [f"{title_level} Scores, {split_text}; {CALIBRATION_TEXT[calibration]}", "",
                  "Mean ± sd over seeds x folds, %.", "",
                  "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        chance = []
        for t in tasks:
            rate = next(summarise(r)[t]["majority_rate"] for r in group if t in r["scores"])
            for m in metrics_of(t):
                chance.append(_pm(rate) if m == "accuracy" else "50.0" if m == "auroc" else "-")
        lines.append("| " + " | ".join(["majority class (chance)", "-", *chance]) + " |")
        for r in group:
            s = summarise(r)
            cells = [_pm(s[t][m]) if t in s and m in s[t] else "-" for t in tasks
                     for m in metrics_of(t)]
            lines.append("| " + " | ".join([r["name"], r["probe"], *cells]) + " |")
        lines.append("")
        ds = [d for d in diffs if d["split"] == split and d["calibration"] == calibration]
        if ds:
            heads = ["Features", "Probe", "minus", *_heads(tasks, metrics_of)]
            lines += [f"{title_level}# Paired differences (percentage points)", "",
                      f"Mean [{INTERVAL}].", "", "| " + " | ".join(heads) + " |",
                      "|" + "---|" * len(heads)]
            for d in ds:
                cells = [_signed(d["tasks"][t][m]) if m in d["tasks"].get(t, {}) else "-"
                         for t in tasks for m in metrics_of(t)]
                lines.append("| " + " | ".join([d["name"], d["probe"], d["versus"], *cells]) + " |")
            lines.append("")
    return "\n".join(lines)


def format_table(rows: dict[str, dict[str, dict]], tasks: tuple[str, ...] | None = None) -> str:
    """A compact text table of single-protocol results ({model: {task: summary}} as
    :func:`ecgfast.evaluation.probe_features` returns): accuracy / macro-F1 (%) per task,
    mean ± std over folds. ``tasks`` default to every task, arousal and valence first."""
    from ecgfast.evaluation.protocol import LABELS

    found = [t for res in rows.values() for t in res]
    first = LABELS if set(LABELS) & set(found) or not found else ()
    tasks = tasks or tuple(dict.fromkeys([*first, *found]))
    wide = {lab: max(16, len(lab) + 5) for lab in tasks}
    head = f"{'model':<24}" + "".join(f"{lab + ' acc':>{wide[lab]}}{lab + ' F1':>{wide[lab]}}"
                                      for lab in tasks)
    lines = [head, "-" * len(head)]
    for model, res in rows.items():
        cells = ""
        for lab in tasks:
            r, pad = res.get(lab), wide[lab] - 6
            if r is None:
                cells += f"{'-':>{wide[lab]}}{'-':>{wide[lab]}}"
                continue
            cells += f"{100 * r['accuracy_mean']:>{pad}.1f} ± {100 * r['accuracy_std']:<3.1f}"
            cells += f"{100 * r['f1_mean']:>{pad}.1f} ± {100 * r['f1_std']:<3.1f}"
        lines.append(f"{model:<24}{cells}")
    return "\n".join(lines)
