"""Large-batch contrastive steps: peak memory and windows/s against batch size, chunked or not.

One full training step of the contrastive objective (:class:`ecgfast.training.TrainStep`:
two augmented views, encoder, projection, NT-Xent with the dispatch's "auto" backend,
backward, Adam) for each batch size, with the whole batch in one encoder pass
(``chunk_size=None``) and in chunks (:mod:`ecgfast.training.chunked`).

- CPU (small scale): the default encoder (32/64/128 filters, residual + SE, dropout 0.1)
  on L = 256 windows, batches 64..512, chunks of 32, fp32.
- CUDA (when present): L = 2560, bf16, batches 1024..16384 unchunked and chunked by 1024,
  and ``test_largest_batch``: the batch doubled from 2N = 8192 until a chunked step fails
  (out of memory) or 2N = 2^20 completes.

``extra_info``: windows/s (median step), peak memory of one step (:class:`common.PeakMemory`:
CUDA allocator peak, or sampled RSS on the CPU), the encoder FLOPs executed per step
(:func:`common.encoder_flops`; the chunked step runs the forward twice) as a fraction of
the fp32 GEMM rate measured in the same run, the device. Run, then plot::

    python -m pytest benchmarks/bench_large_batch.py --benchmark-json benchmarks/results/large-batch-cpu.json
    python benchmarks/bench_large_batch.py benchmarks/results/large-batch-cpu.json benchmarks/large-batch-memory.png
"""

from __future__ import annotations

import json
import sys
import time

import pytest
import torch
from common import PeakMemory, device_info, encoder_flops, same_run_gemm_rate, sync

from ecgfast.keyed import KeyedRandom
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.objectives import build_objective
from ecgfast.precision import Precision
from ecgfast.training import PretrainConfig, TrainStep

SETTINGS = {
    "cpu": {"length": 256, "batches": (64, 128, 256, 512), "chunk": 32, "precision": "fp32"},
    "cuda": {"length": 2560, "batches": (1024, 4096, 16384), "chunk": 1024, "precision": "bf16"},
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CASES = [(d, b, c) for d in DEVICES for b in SETTINGS[d]["batches"] for c in (False, True)]


def _stepper(device: str, batch: int, chunked: bool):
    s = SETTINGS[device]
    torch.manual_seed(0)
    objective = build_objective("contrastive", ECGEncoder(EncoderConfig())).to(device).train()
    cfg = PretrainConfig(objective="contrastive", batch_size=batch, precision=s["precision"],
                         chunk_size=min(s["chunk"], batch) if chunked else None)
    stepper = TrainStep.build(cfg, objective, objective,
                              Precision(cfg.precision, torch.device(device)), cfg.chunk_size)
    x = torch.randn(batch, s["length"], device=device)
    def step():
        out = stepper(x, KeyedRandom.for_batch(0, batch, device), 0, 0, 1)
        sync(device)
        assert out.status == "ok"

    return step


@pytest.mark.parametrize("device,batch,chunked", CASES)
def test_step(benchmark, device, batch, chunked):
    s = SETTINGS[device]
    step = _stepper(device, batch, chunked)
    step()  # warm-up
    with PeakMemory(device) as peak:
        step()
    benchmark.pedantic(step, rounds=2, warmup_rounds=0)
    flops = encoder_flops(EncoderConfig(), s["length"])
    # encoder FLOPs executed per step: 2 views per window, forward twice when chunked
    per_step = 2 * batch * (flops["forward"] * (2 if chunked else 1) + flops["backward"])
    median = benchmark.stats.stats.median
    gemm = same_run_gemm_rate(device)
    benchmark.extra_info.update({
        "batch": batch, "chunk_size": s["chunk"] if chunked else None, "length": s["length"],
        "precision": s["precision"], "windows_per_s": batch / median,
        "peak_bytes": peak.peak_bytes, "encoder_flops_per_step": per_step,
        "encoder_flops_per_s": per_step / median, "gemm_flops_per_s": gemm,
        "fraction_of_gemm": per_step / median / gemm, "device": device_info(),
    })


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the largest batch: CUDA only")
def test_largest_batch(benchmark):
    """Double the batch (chunks of 1024, bf16) until a step runs out of memory or
    2N = 2^20 (B = 2^19) completes; ``extra_info`` holds each completed batch's seconds
    (one step after a warm-up step, perf_counter) and peak memory, and the largest batch.
    This row's own timing fields time nothing (pytest-benchmark times one callable)."""
    done, batch, per_batch = None, 4096, {}
    while batch <= 2**19:
        try:
            step = _stepper("cuda", batch, True)
            step()
            with PeakMemory("cuda") as peak:
                t0 = time.perf_counter()
                step()
                seconds = time.perf_counter() - t0
            per_batch[str(batch)] = {"seconds": seconds, "peak_bytes": peak.peak_bytes}
            done = batch
        except torch.OutOfMemoryError:
            break
        finally:
            step = None
            torch.cuda.empty_cache()
        batch *= 2
    benchmark.pedantic(lambda: None, rounds=1, warmup_rounds=0)
    benchmark.extra_info.update({"largest_batch": done, "largest_2n": 2 * done if done else None,
                                 "per_batch": per_batch, "device": device_info()})


def plot(results_json: str, out_png: str) -> None:
    """Peak memory against batch, chunked and not, one line per device and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(results_json) as f:
        rows = [b["extra_info"] for b in json.load(f)["benchmarks"]
                if "peak_bytes" in b["extra_info"] and "batch" in b["extra_info"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for chunk in sorted({r["chunk_size"] or 0 for r in rows}):
        sel = sorted((r for r in rows if (r["chunk_size"] or 0) == chunk), key=lambda r: r["batch"])
        label = f"chunks of {chunk}" if chunk else "one pass (unchunked)"
        ax.plot([r["batch"] for r in sel], [r["peak_bytes"] / 2**20 for r in sel], "o-",
                label=label)
    cpu = rows[0]["device"]["cpu"] if rows else ""
    ax.set(xscale="log", xlabel="batch (windows; 2N = 2 x batch)", ylabel="peak memory of a step (MiB)",
           title=f"contrastive step, L = {rows[0]['length'] if rows else '?'}\n{cpu}")
    ax.set_xticks([r["batch"] for r in rows], labels=[str(r["batch"]) for r in rows])
    ax.minorticks_off()
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)


if __name__ == "__main__":
    plot(sys.argv[1], sys.argv[2])
