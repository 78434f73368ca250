"""Pretraining throughput on the CPU: fp32 against bf16 autocast, and the thread settings.

Two parts, both written into one JSON (``--json``):

1. **Throughput** of one training step (objective forward, backward, Adam step) through
   :class:`ecgfast.precision.Precision`, in windows/s, for every (objective, precision,
   intra-op threads, inter-op threads) setting. Each measurement is a fresh process
   (``torch.set_num_interop_threads`` can be set once per process; it is varied for the
   contrastive objective only): 2 warm-up steps,
   then ``--steps`` timed steps, median step time. The settings run interleaved, round
   after round, so that the load of the shared machine falls on all of them alike; the
   1-minute load average is recorded next to every measurement.
2. **Equal results**: ``ecgfast.training.pretrain`` on the synthetic cohort with the same
   seed under fp32 and bf16 (``--curves``: objective, steps, batch), the loss of every
   step, and a linear probe (subject-wise folds, arousal and valence) of both final
   encoders, with ``--curve-threads`` torch threads.

    python benchmarks/cpu_precision.py --json benchmarks/results/precision-cpu.json

Run with the interpreter of the checkout to measure; nothing here is a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load() -> float:
    return os.getloadavg()[0]


def measure_step(objective: str, precision: str, threads: int, interop: int | None,
                 batch: int, steps: int, length: int) -> dict:
    """Median windows/s of ``steps`` training steps (in this process)."""
    import torch

    if interop is not None:
        torch.set_num_interop_threads(interop)
    torch.set_num_threads(threads)
    from ecgfast.keyed import KeyedRandom
    from ecgfast.models import ECGEncoder, EncoderConfig
    from ecgfast.objectives import build_objective
    from ecgfast.precision import Precision

    torch.manual_seed(0)
    obj = build_objective(objective, ECGEncoder(EncoderConfig(residual="all", attention=False)))
    opt = torch.optim.Adam(obj.parameters(), 1e-3)
    prec = Precision(precision, torch.device("cpu"))
    x = torch.randn(batch, length)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with prec.autocast():
            loss, _ = obj(x, KeyedRandom.for_batch(i, batch, torch.device("cpu")))
        opt.zero_grad(set_to_none=True)
        prec.scale(loss).backward()
        prec.step(opt)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"windows_per_s": batch / med, "step_seconds": times,
            "interop_threads": torch.get_num_interop_threads(),
            "intraop_threads": torch.get_num_threads()}


def throughput(args) -> list[dict]:
    settings = [s for s in itertools.product(args.objectives, ("fp32", "bf16"), (1, 2), (None, 1))
                if s[0] == "contrastive" or s[3] is None]  # inter-op threads: contrastive only
    rows = []
    for rnd in range(args.rounds):
        order = settings[rnd % len(settings):] + settings[:rnd % len(settings)]
        for objective, precision, threads, interop in order:
            cmd = [sys.executable, __file__, "--one", json.dumps(
                [objective, precision, threads, interop, args.batch, args.steps, args.length])]
            load = _load()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"round": rnd, "objective": objective, "precision": precision,
                         "threads": threads, "interop": interop, "load_before": load,
                         "load_after": _load(), **rec})
            print(f"round {rnd} {objective:11s} {precision} threads={threads} "
                  f"interop={interop}: {rec['windows_per_s']:.1f} windows/s (load {load:.2f})",
                  file=sys.stderr, flush=True)
    return rows


def curve(objective: str, steps: int, batch: int, threads: int) -> dict:
    """fp32 and bf16 pretraining from one seed: every step's loss, and linear probes."""
    import numpy as np
    import torch

    from ecgfast.data import make_cohort
    from ecgfast.evaluation import extract_features, probe_features
    from ecgfast.models import EncoderConfig
    from ecgfast.training import PretrainConfig, pretrain

    torch.set_num_threads(threads)
    cohort = make_cohort(n_subjects=12, sessions_per_subject=4, session_seconds=60.0, seed=0)
    epochs = max(1, round(steps / (len(cohort) // batch)))
    out = {"objective": objective, "n_windows": len(cohort), "batch": batch, "epochs": epochs,
           "threads": threads, "runs": {}}
    for precision in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as tmp:
            t0, load = time.perf_counter(), _load()
            res = pretrain(cohort.windows, Path(tmp) / "run",
                           EncoderConfig(residual="all", attention=False),
                           PretrainConfig(objective=objective, epochs=epochs, batch_size=batch,
                                          seed=0, precision=precision, device="cpu"),
                           progress=False)
            wall = time.perf_counter() - t0
            steps_log = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl")
                         .read_text().splitlines()]
            losses = [r["loss"] for r in steps_log if r["kind"] == "step"]
            feats = extract_features(res.encoder, cohort.windows)
            probe = probe_features(feats, {t: cohort.labels[t] for t in ("arousal", "valence")},
                                   split="subject", groups=cohort.subject, probe="linear")
        out["runs"][precision] = {
            "wall_seconds": wall, "load_before": load, "load_after": _load(),
            "step_losses": losses,
            "epoch_windows_per_s": [r["windows_per_s"] for r in res.history],
            "probe": {t: {k: v for k, v in r.items() if k.endswith("_mean")}
                      for t, r in probe.items()},
        }
        print(f"{objective} {precision}: {len(losses)} steps in {wall:.0f} s, final loss "
              f"{losses[-1]:.4f}", file=sys.stderr, flush=True)
    a = np.array(out["runs"]["fp32"]["step_losses"])
    b = np.array(out["runs"]["bf16"]["step_losses"])
    out["abs_step_loss_difference"] = {"median": float(np.median(abs(a - b))),
                                       "max": float(np.max(abs(a - b))),
                                       "last_20_mean_fp32": float(a[-20:].mean()),
                                       "last_20_mean_bf16": float(b[-20:].mean())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, required=False)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=2560)
    p.add_argument("--objectives", default="contrastive,transform")
    p.add_argument("--curves", default="contrastive:200:16,transform:80:8",
                   help="OBJECTIVE:STEPS:BATCH,... of the loss-curve comparison ('' for none)")
    p.add_argument("--curve-threads", type=int, default=1)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure_step(*json.loads(args.one))))
        return
    args.objectives = args.objectives.split(",")
    sys.path.insert(0, str(HERE))
    import torch
    from common import device_info

    cap = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", dict)()
    payload = {"device": device_info(), "cpu_capability": {k: cap.get(k) for k in (
        "amx_bf16", "amx_tile", "avx512_bf16", "avx512_bw")},
        "options": {k: v for k, v in vars(args).items() if k not in ("json", "one")},
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if not args.skip_throughput:
        payload["throughput"] = throughput(args)
    payload["curves"] = []
    for spec in filter(None, args.curves.split(",")):
        objective, steps, batch = spec.split(":")
        payload["curves"].append(curve(objective, int(steps), int(batch), args.curve_threads))
    payload["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    text = json.dumps(payload, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
