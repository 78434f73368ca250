"""Paired differences between the rows of two ablation runs that share their folds, e.g.
the same configuration pretrained with two augmentation sets::

    python -m ecgfast.ablation.compare RUN_A/table1.json RUN_B/table1.json [--out diff.md]

Rows are matched by (name, features, probe, calibration, split); a pair needs the same
seeds and the same fold sizes (the runs used the same data, seeds and fold options, so
the same folds). Each difference is B minus A with
:data:`ecgfast.evaluation.stats.INTERVAL`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ecgfast.evaluation.metrics import METRICS, NAMES
from ecgfast.evaluation.stats import INTERVAL, paired_difference, test_train_ratio

KEY = ("name", "features", "probe", "calibration", "split")


def compare(a: dict, b: dict) -> list[dict]:
    """[{key fields, "tasks": {task: {metric: paired difference of B - A}}}]."""
    rows_a = {tuple(r[k] for k in KEY): r for r in a["rows"]}
    out = []
    for rb in b["rows"]:
        ra = rows_a.get(tuple(rb[k] for k in KEY))
        if ra is None or ra["seeds"] != rb["seeds"]:
            continue
        tasks = {}
        for task, grid in rb["scores"].items():
            if task not in ra["scores"] or ra["scores"][task]["n_test"] != grid["n_test"]:
                continue
            n_test = np.asarray(grid["n_test"])
            ratio = test_train_ratio(n_test.ravel().tolist(), int(n_test[0].sum()))
            tasks[task] = {m: paired_difference(grid[m], ra["scores"][task][m], ratio)
                           for m in METRICS if m in grid and m in ra["scores"][task]}
        if tasks:
            out.append({**{k: rb[k] for k in KEY}, "tasks": tasks})
    return out


def markdown(diffs: list[dict], label_a: str, label_b: str) -> str:
    lines = [(f"Paired differences, {label_b} minus {label_a} (percentage points); mean "
             f"[{INTERVAL}]; verdict for B."), ""]
    for d in diffs:
        for task, per in d["tasks"].items():
            cells = [f"{NAMES[m]} {100 * v['mean']:+.1f} [{100 * (v['low'] or 0):+.1f}, "
                     f"{100 * (v['high'] or 0):+.1f}] ({v['verdict']})" for m, v in per.items()]
            lines.append(f"- {d['name']} ({d['features']}, {d['probe']} probe, calibration "
                         f"{d['calibration']}, {d['split']}-wise), {task}: " + "; ".join(cells))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--out", type=Path, default=None, help="write the Markdown here too")
    args = p.parse_args(argv)
    a, b = (json.loads(path.read_text()) for path in (args.a, args.b))
    text = markdown(compare(a, b), str(args.a), str(args.b))
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
