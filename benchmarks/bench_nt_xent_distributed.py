"""Distributed NT-Xent: each rank's share of the work against gathering the whole batch.

Two processes on gloo (CPU, one thread each) hold N / 2 pairs each of a global batch of
2N rows, D = 128, fp32, and compute the loss of the global batch (every rank's embeddings
are negatives) forward + backward, two ways, interleaved round by round:

- ``gathered``: ``nt_xent(gather_with_grad(z1), gather_with_grad(z2))``, every rank
  computing the loss of the whole gathered batch (what ecgfast did before the shards, and
  what a hand-written all-gather loop does);
- ``sharded``: ``nt_xent(z1, z2, gather_distributed=True)``, each rank computing only its
  own anchor rows' terms (:class:`ecgfast.ops.nt_xent_distributed.RowShard`).

Both give the same loss and gradients (tests/ops/test_nt_xent_distributed.py). Recorded per backend
("streaming", "eager") and size: the median time per step on each rank, the slower rank's
median (what a synchronous step waits for), the ratio gathered / sharded, and each rank's
peak resident memory above its baseline during one step of each kind.

    python -m pytest benchmarks/bench_nt_xent_distributed.py --benchmark-json benchmarks/results/distributed-cpu.json

CPU only (gloo): NCCL cannot put two ranks on one GPU, so a GPU version needs a machine
with two or more.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch
import torch.multiprocessing as mp
from common import PeakMemory, device_info, free_port, gloo_worker_env

WORLD = 2
D = 128
TAU = 0.5
#: (backend, global 2N, rounds)
CASES = [("streaming", 4096, 7), ("streaming", 16384, 3), ("eager", 4096, 7)]


def _worker(rank, port, backend, two_n, rounds, out_dir):
    gloo_worker_env(rank, WORLD, port)
    import torch.distributed as dist

    from ecgfast.distributed import (
        destroy_process_group,
        gather_with_grad,
        init_process_group_from_env,
    )
    from ecgfast.losses import nt_xent

    init_process_group_from_env("cpu")
    try:
        n_local = two_n // 2 // WORLD
        g = torch.Generator().manual_seed(rank)
        z1 = torch.randn(n_local, D, generator=g).requires_grad_()
        z2 = torch.randn(n_local, D, generator=g).requires_grad_()

        def gathered():
            loss = nt_xent(gather_with_grad(z1), gather_with_grad(z2), TAU, backend=backend)
            loss.backward()
            return loss

        def sharded():
            loss = nt_xent(z1, z2, TAU, backend=backend, gather_distributed=True)
            loss.backward()
            return loss

        runs = {"gathered": gathered, "sharded": sharded}
        values = {k: float(f().detach()) for k, f in runs.items()}  # warm-up
        times = {k: [] for k in runs}
        for r in range(rounds):
            for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                dist.barrier()
                t0 = time.perf_counter()
                runs[k]()
                times[k].append(time.perf_counter() - t0)
        peak = {}
        for k, f in runs.items():
            dist.barrier()
            with PeakMemory("cpu") as mem:
                f()
            peak[k] = mem.peak_bytes
        torch.save({"times": times, "peak": peak, "values": values},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        destroy_process_group()


@pytest.mark.parametrize("backend,two_n,rounds", CASES)
def test_distributed_nt_xent(benchmark, tmp_path, backend, two_n, rounds):
    mp.spawn(_worker, args=(free_port(), backend, two_n, rounds, str(tmp_path)),
             nprocs=WORLD, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    info: dict = {"backend": backend, "two_n": two_n, "d": D, "world_size": WORLD,
                  "threads_per_rank": 1, "rounds": rounds}
    for k in ("gathered", "sharded"):
        per_rank = [statistics.median(g["times"][k]) for g in got]
        info[f"{k}_median_s_per_rank"] = per_rank
        info[f"{k}_median_s"] = max(per_rank)
        info[f"{k}_peak_bytes_per_rank"] = [g["peak"][k] for g in got]
        info[f"{k}_loss"] = got[0]["values"][k]
    info["gathered_vs_sharded"] = info["gathered_median_s"] / info["sharded_median_s"]
    info["device"] = device_info()
    # the same loss both ways, on every rank
    for g in got:
        assert g["values"]["sharded"] == pytest.approx(g["values"]["gathered"], rel=1e-5)
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update(info)
    print()
    for k, v in info.items():
        if k != "device":
            print(f"  {k}: {v}")
