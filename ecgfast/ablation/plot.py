"""``table1.png``: accuracy and F1 per configuration with error bars (one panel per task,
headline split), and each configuration's validation pretext loss over epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgfast.atomic import atomic_write


def plot_table(payload: dict, tasks: list[str], path: Path) -> None:
    """Write the figure of a table1.json ``payload`` to ``path`` (PNG, atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    split = "subject" if payload["config"]["split"] in ("subject", "both") else "window"
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1), 4.2), dpi=100)
    x = np.arange(len(rows))
    for ax, task in zip(axes, tasks):
        for k, (metric, name) in enumerate((("accuracy", "Acc."), ("f1", "F1"))):
            s = [row["metrics"][split][task][metric] for row in rows]
            ax.bar(x + (k - 0.5) * 0.38, [100 * v["mean"] for v in s], 0.38, label=name,
                   yerr=[100 * (v["sd"] or 0.0) for v in s], capsize=3)
        ax.set_xticks(x, [row["residual"] + (" +SE" if row["attention"] else "") for row in rows],
                      rotation=20)
        ax.set_title(f"{task} ({split}-wise folds)")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower right")
    ax = axes[-1]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(rows):
        cells = [c for c in payload["cells"] if c["residual"] == row["residual"]
                 and bool(c["attention"]) == row["attention"]]
        for j, cell in enumerate(cells):
            ax.plot(np.arange(1, len(cell["val_loss"]) + 1), cell["val_loss"], "o-", ms=3,
                    color=colours[i % len(colours)], alpha=0.8,
                    label=row["configuration"] if j == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation pretext loss")
    ax.set_title("validation loss (each seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    title = "ecgfast ablation" + (" (SYNTHETIC data)" if payload["data"]["synthetic"] else "")
    fig.suptitle(title)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
