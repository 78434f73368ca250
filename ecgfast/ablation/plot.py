"""``table1.png``: the headline protocol's scores per row with error bars (one panel per
task), and every pretraining run's validation pretext loss over epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgfast.atomic import atomic_write
from ecgfast.evaluation.metrics import METRICS, NAMES


def plot_table(payload: dict, tasks: list[str], path: Path, headline: tuple[str, str, str]) -> None:
    """Write the figure of a table1.json ``payload`` to ``path`` (PNG, atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split, cal, probe = headline
    rows = [r for r in payload["rows"] if r["split"] == split and r["calibration"] == cal
            and r["probe"] in (probe, "end-to-end") and r["features"] in ("encoder", "hrv", "-")]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(5.5 * (len(tasks) + 1), 5.0), dpi=100)
    x = np.arange(len(rows))
    for ax, task in zip(axes, tasks):
        metrics = [m for m in METRICS if all(m in r["summary"][task] for r in rows)]
        width = 0.8 / max(1, len(metrics))
        for k, metric in enumerate(metrics):
            s = [r["summary"][task][metric] for r in rows]
            ax.bar(x + (k - (len(metrics) - 1) / 2) * width, [100 * v["mean"] for v in s], width,
                   label=NAMES[metric], yerr=[100 * (v["sd"] or 0.0) for v in s], capsize=2)
        if rows:
            chance = 100 * rows[0]["summary"][task]["majority_rate"]["mean"]
            ax.axhline(chance, color="k", ls="--", lw=1, label=f"majority class {chance:.0f} %")
        ax.set_xticks(x, [r["name"].replace("Skip connections", "skip").replace(
            "Skip connection", "skip").replace("No skip connections", "no skip") for r in rows],
            rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{task} ({split}-wise folds, {probe} probe, calibration {cal})", fontsize=9)
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    ax = axes[-1]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    pre = [c for c in payload["cells"] if c["kind"] == "pretrained"]
    names = sorted({(c["residual"], c["attention"]) for c in pre}, key=str)
    for c in pre:
        i = names.index((c["residual"], c["attention"]))
        for j, unit in enumerate(c["units"]):
            first = c["seed"] == 0 and j == 0
            ax.plot(np.arange(1, len(unit["val_loss"]) + 1), unit["val_loss"], "o-", ms=2, lw=0.8,
                    color=colours[i % len(colours)], alpha=0.6,
                    label=f"{c['residual']}{' +SE' if c['attention'] else ''}" if first else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation pretext loss")
    ax.set_title("validation loss (every pretraining run)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    title = "ecgfast ablation" + (" (SYNTHETIC data)" if payload["data"]["synthetic"] else "")
    fig.suptitle(title)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
