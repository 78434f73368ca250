"""Run the cells of an ablation into ``OUT``, resumably, then write the tables.

Per seed s: the labelled windows' folds come from ``make_folds(seed=s)`` under each
split; every pretraining run, random encoder and probe of seed s uses them, so every
row of the tables pairs with every other by (seed, fold). What pretraining sees is the
run's *scope* (:mod:`.scope`): by default each fold pretrains on its own training
windows. Cells: :mod:`.cells`. Before the first cell, a short measured probe of the
step rates gives an upper bound of the run's wall time (:mod:`.cost`), printed and
written to ``OUT/estimate.json``.

Run again with the same options, :func:`run_ablation` skips complete cells and resumes
the running one from its last checkpoint.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ecgfast.ablation.cells import RESULT, RUNNERS, cell_name
from ecgfast.ablation.config import AblationConfig
from ecgfast.ablation.scope import (
    check_disjoint,
    check_separate,
    pretraining_units,
    validation_subjects,
)
from ecgfast.atomic import atomic_write_text

CONFIG_JSON = "ablation.json"
CONFIG_TOML = "ablation.toml"
INVOCATIONS = "invocations.json"
__all__ = ["cell_name", "cells_of", "run_ablation", "validation_subjects"]


def cells_of(config: AblationConfig) -> list[tuple[str, str, bool, int]]:
    """(kind, residual, attention, seed) of every cell, in the order they run: per seed,
    the pretrained cells, then the random-init ones, then the supervised one."""
    out = []
    for s in range(config.seeds):
        grid = [(r, a) for a in config.attention_settings for r in config.configs]
        out += [("pretrained", r, a, s) for r, a in grid]
        if "random" in config.baselines:
            out += [("random", r, a, s) for r, a in grid]
        if "supervised" in config.baselines:
            out.append(("supervised", config.configs[-1], config.attention_settings[-1], s))
    return out


def environment(device: str) -> dict:
    """Versions and hardware, for the record."""
    import torch

    import ecgfast
    from ecgfast.training import resolve_device

    dev = resolve_device(device)
    env = {"python": sys.version.split()[0], "torch": torch.__version__,
           "numpy": np.__version__, "ecgfast": getattr(ecgfast, "__version__", "unknown"),
           "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
           "cpu": _cpu_model(), "torch_threads": torch.get_num_threads(), "device": str(dev)}
    try:
        import sleepecg

        env["sleepecg"] = sleepecg.__version__
    except ImportError:  # pragma: no cover - a main dependency
        pass
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


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


@dataclass
class Context:
    """What every cell of one run shares."""

    config: AblationConfig
    cohort: object
    tasks: list
    scope: str
    source_windows: np.ndarray
    source_subject: np.ndarray | None
    source_cohort: object = None
    source_name: str | None = None
    hrv_x: np.ndarray | None = None
    progress: bool = False
    on_unit_done: object = None  # called after each pretraining run that ran (not reused)
    _folds: dict = field(default_factory=dict)

    @property
    def labels(self) -> dict:
        return {t: self.cohort.labels[t] for t in self.tasks}

    @property
    def n_classes(self) -> dict:
        return {t: len(self.cohort.classes[t]) for t in self.tasks}

    def folds(self, seed: int) -> dict:
        from ecgfast.evaluation import make_folds

        if seed not in self._folds:
            c = self.config
            self._folds[seed] = {
                split: make_folds(len(self.cohort), split, groups=self.cohort.subject, seed=seed,
                                  n_folds=c.subject_folds if split == "subject" else c.window_folds)
                for split in c.splits}
        return self._folds[seed]

    def units(self, seed: int):
        units = pretraining_units(self.scope, self.folds(seed), n_source=len(self.source_windows),
                                  subject_source=self.source_subject,
                                  fraction=self.config.validation_fraction, seed=seed)
        if self.scope == "per-fold":
            check_disjoint(units, self.folds(seed), self.cohort.subject)
        return units


def _scope(config: AblationConfig, cohort, pretrain_source) -> tuple[str, object, dict]:
    if pretrain_source is None:
        return ("transductive" if config.transductive else "per-fold"), cohort, {}
    windows, src_cohort = pretrain_source
    source = src_cohort if src_cohort is not None else windows
    if config.transductive:
        return "transductive", source, {"checked": False}
    checked = check_separate(cohort, source, str(config.pretrain_data), str(config.data))
    return "separate", source, {"checked": True, **checked}


def _estimate(ctx: Context, pending: int, total: int, progress: bool) -> dict:
    from ecgfast.ablation.cost import estimate, hours, measure_rates

    config = ctx.config
    rates = measure_rates(config, ctx.source_windows)
    units = ctx.units(0)
    n = len(ctx.cohort)
    n_train = [n - len(t) for tests in ctx.folds(0).values() for t in tests]
    est = estimate(config, rates, n_labelled=n, n_tasks=len(ctx.tasks), n_train_per_fold=n_train,
                   unit_sizes=[(len(u.train), len(u.validation)) for u in units])
    est.update(rates=rates, measured_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               cells=total, pending_cells=pending,
               seconds_remaining=est["seconds"] * pending / max(1, total))
    if progress:
        r = rates["windows_per_s"]
        left = "" if pending == total else (f", about {hours(est['seconds_remaining'])} for the "
                                             f"{pending} cells still to run")
        tqdm.write(f"cost estimate: at most {hours(est['seconds'])} for {est['pretraining_runs']} "
                   f"pretraining runs{left} (measured {r['pretrain']:.1f} pretraining windows/s, "
                   f"{r['embed']:.0f} embedding windows/s on a {rates['probe_steps']}-step probe, "
                   f"{rates['precision']}, {rates['threads']} thread(s)); early stopping shortens it")
    return est


class Invocations:
    """``OUT/invocations.json``: the wall time of every invocation of one run, written after
    each pretraining run and each cell, so a killed invocation is counted up to its last
    finished pretraining run. A resumed invocation with cells left records its own estimate
    of the time still needed (``estimate_remaining_s``)."""

    def __init__(self, out: Path):
        self.path = out / INVOCATIONS
        self.items = json.loads(self.path.read_text()) if self.path.is_file() else []
        self.t0 = time.perf_counter()
        self.items.append({"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                           "seconds": 0.0, "cells_run": 0, "finished": False})

    def update(self, cells_run: int = 0, finished: bool = False, **fields) -> None:
        self.items[-1].update(seconds=time.perf_counter() - self.t0, finished=finished,
                              cells_run=self.items[-1]["cells_run"] + cells_run, **fields)
        atomic_write_text(self.path, json.dumps(self.items, indent=2) + "\n")


def run_ablation(config: AblationConfig, cohort, out: str | Path, *,
                 tasks: list[str] | None = None, progress: bool = True,
                 pretrain_source=None) -> dict:
    """Run (or continue) every cell of ``config`` on ``cohort`` into ``out``, then write
    the table files. ``tasks`` default to ``config.tasks``, else
    :func:`ecgfast.evaluation.default_tasks`. ``pretrain_source``: ``(windows, cohort or
    None)`` of ``--pretrain-data`` when it is another source. Returns the table1.json
    payload (see :mod:`ecgfast.ablation.report`).
    """
    import torch

    from ecgfast.ablation.report import write_report
    from ecgfast.evaluation import default_tasks
    from ecgfast.evaluation.baselines import hrv_matrix

    out = Path(out)
    check_out_dir(out, config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    invocations = Invocations(out)
    tasks = list(tasks or config.tasks or default_tasks(cohort.tasks))
    missing = [t for t in tasks if t not in cohort.labels]
    if missing:
        raise ValueError(f"tasks {missing} are not among the cohort's tasks {list(cohort.tasks)}")
    scope, source, checked = _scope(config, cohort, pretrain_source)
    ctx = Context(config, cohort, tasks, scope, np.asarray(getattr(source, "windows", source)),
                  getattr(source, "subject", None), progress=progress,
                  source_cohort=source if hasattr(source, "subset") else None,
                  source_name=str(config.data if pretrain_source is None else config.pretrain_data))
    hrv = None
    if "hrv" in config.baselines or "encoder+hrv" in config.features_modes:
        hrv, ctx.hrv_x = hrv_matrix(cohort.windows, cohort.fs, progress=progress)
    cells = cells_of(config)
    pending = sum(not (out / "cells" / cell_name(r, a, s, k) / RESULT).is_file()
                  for k, r, a, s in cells)
    est_path = out / "estimate.json"
    if not est_path.is_file():  # the first invocation: the estimate the run started with
        est = _estimate(ctx, pending, len(cells), progress)
        atomic_write_text(est_path, json.dumps(est, indent=2) + "\n")
    else:  # a resumed run keeps its first estimate and records a new one for what is left
        est = json.loads(est_path.read_text())
        if pending:
            again = _estimate(ctx, pending, len(cells), progress)
            invocations.update(estimate_remaining_s=again["seconds_remaining"])
    ctx.on_unit_done = invocations.update
    records = []
    bar = tqdm(cells, desc="ablation cells", unit="cell", disable=not progress, position=0,
               dynamic_ncols=True)
    for kind, residual, attention, seed in bar:
        cell_dir = out / "cells" / cell_name(residual, attention, seed, kind)
        bar.set_postfix_str(cell_dir.name)
        done = cell_dir / RESULT
        if done.is_file():
            records.append(json.loads(done.read_text()))
            continue
        record = RUNNERS[kind](ctx, residual, attention, seed, cell_dir)
        cell_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(done, json.dumps(record, indent=2) + "\n")
        records.append(record)
        invocations.update(cells_run=1)
        if progress and kind == "pretrained":
            tqdm.write(f"{cell_dir.name}: {len(record['units'])} pretraining run(s), "
                       f"{record['epochs_run']:.1f} epochs (best {record['best_epoch']:.1f}), "
                       f"{record['pretrain_seconds']:.0f} s, {record['windows_per_s']:.1f} windows/s")
    bar.close()
    hrv_records = _hrv_records(ctx) if "hrv" in config.baselines else []
    invocations.update(finished=True)
    return write_report(out, config, records + hrv_records, tasks=tasks, cohort=cohort,
                        environment=environment(config.device),
                        wall_seconds=time.perf_counter() - t0, scope=scope, scope_check=checked,
                        estimate=est, hrv=hrv.summary() if hrv is not None else None,
                        invocations=invocations.items,
                        validation_by="subjects" if ctx.source_subject is not None else "windows")


def _hrv_records(ctx: Context) -> list[dict]:
    """The HRV baseline of every seed (cheap: probes of fixed features, not stored)."""
    from ecgfast.ablation.cells import probe_protocols

    out = []
    for seed in range(ctx.config.seeds):
        res = probe_protocols(lambda split: ctx.hrv_x, ctx.labels, ctx.folds(seed),
                              config=ctx.config, groups=ctx.cohort.subject, hrv_x=None,
                              n_classes=ctx.n_classes, seed=seed, modes=("encoder",))
        out.append({"cell": f"hrv-seed{seed}", "kind": "hrv", "residual": None,
                    "attention": False, "seed": seed,
                    "results": {s: {"hrv": r["encoder"]} for s, r in res.items()}})
    return out
