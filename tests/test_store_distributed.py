"""Two gloo ranks read a WindowStore through their DataLoaders: disjoint shares, every
K-th window of the epoch's permutation each, whose union is the whole epoch (less the
remainder that would give the ranks unequal step counts)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.multiprocessing as mp
from common import free_port, gloo_worker_env  # benchmarks/common.py, on pytest's pythonpath

from ecgfast.data import WindowStore
from ecgfast.data.prepare import prepare
from ecgfast.distributed import destroy_process_group, init_process_group_from_env
from ecgfast.training import PretrainConfig
from ecgfast.training.batches import epoch_batches, iter_batches

WORLD = 2
CFG = PretrainConfig(batch_size=2, seed=5)


def _worker(rank, port, store_dir, out_dir):
    gloo_worker_env(rank, WORLD, port)
    ctx = init_process_group_from_env("cpu")
    try:
        store = WindowStore(store_dir)
        every = store.get_batch(range(len(store)))
        read = []
        for epoch in (0, 1):
            batches = epoch_batches(len(store), epoch, CFG, ctx.rank, ctx.world_size)
            seen = []
            for x in iter_batches(store, batches, torch.device("cpu"), workers=1 - epoch):
                # which windows these are, by content (every window differs)
                seen += [int((every == w).flatten(1).all(1).nonzero()) for w in x]
            read.append(seen)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(read, f)
    finally:
        torch.distributed.barrier()
        destroy_process_group()


def test_two_gloo_ranks_read_disjoint_shares_covering_the_epoch(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate((50.0, 20.0, 40.0)):  # 5 + 2 + 4 = 11 windows: odd
        t = np.arange(round(seconds * 256)) / 256
        sig = np.exp(-(((t * (1 + 0.1 * i)) % 1.0 - 0.3) ** 2) / 0.001)
        np.save(tmp_path / f"r{i}.npy", sig + 0.05 * rng.standard_normal(t.size))
        paths.append(tmp_path / f"r{i}.npy")
    store = WindowStore(prepare(paths, tmp_path / "store", fs=256.0, workers=1,
                                shard_windows=4, progress=False))
    n = len(store)
    assert n == 11
    # fork: the ranks start without importing torch again (they compute almost nothing)
    mp.start_processes(_worker, args=(free_port(), str(tmp_path / "store"), str(tmp_path)),
                       nprocs=WORLD, join=True, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for epoch in (0, 1):
        order = epoch_batches(n, epoch, PretrainConfig(batch_size=n, seed=5), 0, 1)[0].tolist()
        shares = [ranks[r][epoch] for r in range(WORLD)]
        assert not set(shares[0]) & set(shares[1])
        assert [len(s) for s in shares] == [n // WORLD] * WORLD
        assert sorted(shares[0] + shares[1]) == sorted(order[: WORLD * (n // WORLD)])
        for r in range(WORLD):  # every K-th window of the epoch's permutation, in order
            assert shares[r] == order[r::WORLD][: n // WORLD]
    assert ranks[0][0] != ranks[0][1]  # a new permutation each epoch
