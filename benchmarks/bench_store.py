"""Window store numbers (issue 12): building, loading beside training, peak RSS.

    python benchmarks/bench_store.py --out benchmarks/results/store-cpu.json

1. ``prepare`` of synthetic PTB-XL-like records (12 leads, 10 s at 500 Hz, WFDB) with
   1 and 2 workers: records/s, records/s per worker, bytes on disk per window.
2. The loader: windows/s of ``iter_batches`` (the ``DataLoader`` pretraining uses) over
   one shuffled epoch of a 12-lead float16 store on disk, per loader worker count,
   beside the encoder's training rate on the same machine (contrastive and transform
   objectives, default encoder, 12 leads): the margin is loader rate / training rate.
3. Peak RSS (``ru_maxrss`` of a fresh process) of pretraining over every window of a
   store and of one 10x larger, with the page release on, and off as a control.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "data"))
from common import STORE_RSS_SCRIPT, device_info
from store_files import LEADS12, write_record


def bench_build(root: Path, n_records: int) -> dict:
    from ecgfast.data import WindowStore
    from ecgfast.data.prepare import prepare

    src = root / "ptbxl" / "records500"
    for i in range(n_records):
        write_record(src / f"{i // 100:05d}", f"{i:05d}_hr", 10.0, 500.0, seed=i)
    out = {}
    for dtype in ("float16", "float32"):
        for workers in (1, 2):
            store = root / f"build-{dtype}-{workers}"
            t0 = time.perf_counter()
            prepare([root / "ptbxl"], store, dtype=dtype, workers=workers, progress=False)
            seconds = time.perf_counter() - t0
            info = WindowStore(store).info()
            out[f"{dtype}-workers{workers}"] = {
                "records": n_records, "workers": workers, "seconds": seconds,
                "records_per_s": n_records / seconds,
                "records_per_s_per_worker": n_records / seconds / workers,
                "windows": info["windows"], "bytes_on_disk": info["bytes"],
                "bytes_per_window_on_disk": info["bytes"] / info["windows"],
                "bytes_per_window_data": info["bytes_per_window"]}
            print(dtype, workers, out[f"{dtype}-workers{workers}"], flush=True)
    return out


def _long_store(root: Path, name: str, n_files: int, seconds: float, dtype: str) -> Path:
    from ecgfast.data.prepare import prepare

    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * 256)) / 256
    paths = []
    for i in range(n_files):
        beat = np.exp(-(((t * (1.0 + 0.05 * i)) % 1.0 - 0.3) ** 2) / 0.001)
        sig = beat[None] * np.linspace(0.5, 1.5, 12)[:, None]
        sig = (sig + 0.05 * rng.standard_normal((12, t.size))).astype(np.float32)
        np.save(root / f"{name}-{i}.npy", sig)
        paths.append(root / f"{name}-{i}.npy")
    return prepare(paths, root / name, fs=256.0, dtype=dtype, workers=2, progress=False)


def bench_loader(store_dir: Path, batch: int) -> dict:
    from ecgfast.data import WindowStore
    from ecgfast.training import PretrainConfig
    from ecgfast.training.batches import epoch_batches, iter_batches

    store = WindowStore(store_dir)
    cfg = PretrainConfig(batch_size=batch, seed=0)
    batches = epoch_batches(len(store), 0, cfg, 0, 1)
    for _ in iter_batches(store, batches, torch.device("cpu"), 0):
        pass  # warm the page cache: the rates are of a store the OS has cached
    out = {}
    for workers in (0, 1, 2):
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            n = sum(x.shape[0] for x in iter_batches(store, batches, torch.device("cpu"), workers))
            rates.append(n / (time.perf_counter() - t0))
        out[f"workers{workers}"] = {"windows_per_s": float(np.median(rates)),
                                    "windows_per_s_per_worker": float(np.median(rates))
                                    / max(1, workers), "runs": rates}
        print("loader", workers, out[f"workers{workers}"], flush=True)
    return {"store_windows": len(store), "leads": len(store.leads), "dtype": store.manifest["dtype"],
            "batch": batch, "by_workers": out}


def bench_training(batch: int, steps: int) -> dict:
    from ecgfast.models import ECGEncoder, EncoderConfig
    from ecgfast.objectives import build_objective

    out = {}
    x = torch.randn(batch, 12, 2560)
    for objective in ("contrastive", "transform"):
        obj = build_objective(objective, ECGEncoder(EncoderConfig(in_channels=12)))
        opt = torch.optim.Adam(obj.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(0)
        times = []
        for step in range(steps + 1):
            t0 = time.perf_counter()
            loss, _ = obj(x, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step:  # the first step is warm-up
                times.append(time.perf_counter() - t0)
        out[objective] = {"batch": batch, "step_s_median": float(np.median(times)),
                          "windows_per_s": batch / float(np.median(times))}
        print("train", objective, out[objective], flush=True)
    return out


def bench_rss(root: Path) -> dict:
    from ecgfast.data import WindowStore

    small = _long_store(root, "rss-small", 1, 1000.0, "float32")
    big = _long_store(root, "rss-big", 10, 1000.0, "float32")
    out = {"small_windows": len(WindowStore(small)), "big_windows": len(WindowStore(big))}
    for name, store in (("small", small), ("big", big)):
        out[f"{name}_shard_bytes"] = sum(f.stat().st_size for f in (store / "shards").iterdir())
        for release in ("on", "off"):
            proc = subprocess.run([sys.executable, "-c", STORE_RSS_SCRIPT, str(store),
                                   str(root / f"run-{name}-{release}"), release],
                                  capture_output=True, text=True, check=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            out[f"{name}_release_{release}_peak_rss_mib"] = json.loads(
                proc.stdout.strip().splitlines()[-1])["peak_rss_kib"] / 1024
            print("rss", name, release, out[f"{name}_release_{release}_peak_rss_mib"], flush=True)
    for release in ("on", "off"):
        out[f"difference_release_{release}_mib"] = (out[f"big_release_{release}_peak_rss_mib"]
                                                    - out[f"small_release_{release}_peak_rss_mib"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results" / "store-cpu.json"))
    parser.add_argument("--records", type=int, default=200)
    args = parser.parse_args()
    result = {"device": device_info(), "leads": LEADS12}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result["load_average_1_5_15"] = {"start": os.getloadavg()}
        result["build"] = bench_build(root, args.records)
        result["load_average_1_5_15"]["after_build"] = os.getloadavg()
        loader_store = _long_store(root, "loader", 4, 4000.0, "float16")
        result["loader"] = bench_loader(loader_store, batch=128)
        result["training"] = bench_training(batch=16, steps=2)
        best = max(v["windows_per_s"] for v in result["loader"]["by_workers"].values())
        one = result["loader"]["by_workers"]["workers1"]["windows_per_s"]
        result["margin"] = {f"{k}_loader_1worker_over_training": one / v["windows_per_s"]
                            for k, v in result["training"].items()}
        result["margin"]["best_loader_windows_per_s"] = best
        result["load_average_1_5_15"]["after_training"] = os.getloadavg()
        result["rss"] = bench_rss(root)
        result["load_average_1_5_15"]["end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
