"""A training run's log files: ``metrics.jsonl`` (one JSON record per line) and the
training-curve PNG, each written so that a crash leaves a readable file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ecgfast.atomic import atomic_write, atomic_write_text

METRICS = "metrics.jsonl"
CURVE = "training_curve.png"


def append_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(path: Path, last_epoch: int) -> list[dict]:
    """Keep the records of epochs <= last_epoch (a killed run may have logged more)."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if rec.get("epoch", 0) <= last_epoch:
            kept.append(rec)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def plot_training_curve(records: list[dict], path: str | os.PathLike) -> None:
    """Loss per step (faint) and per-epoch mean (markers) to a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if steps:
        ax.plot([r["global_step"] for r in steps], [r["loss"] for r in steps],
                alpha=0.35, lw=1, label="step")
    if epochs:
        ax.plot([r["global_step"] for r in epochs], [r["loss"] for r in epochs],
                "o-", label="epoch mean")
        val = [r for r in epochs if "val_loss" in r]
        if val:
            ax.plot([r["global_step"] for r in val], [r["val_loss"] for r in val],
                    "s--", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("ecgfast pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
