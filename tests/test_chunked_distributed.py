"""Chunked contrastive steps under two gloo ranks against the unchunked step in one process.

Each rank holds 5 of the 10 windows of a global batch, cuts them into chunks of 3 (so the
last chunk is smaller), gathers every rank's embeddings in the loss and averages its
gradients over ranks in one all-reduce (ecgfast.training.step). One process then takes the
unchunked step on the same global batch in one autograd graph: each rank's 5 windows
embedded in one pass with that rank's KeyedRandom of the step, and the same SGD steps.
Loss, every gradient and the weights after three steps agree, for "contrastive" and "both".
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import free_port, gloo_worker_env  # benchmarks/common.py, on pytest's pythonpath

from ecgfast.distributed import destroy_process_group, init_process_group_from_env, wrap_ddp
from ecgfast.keyed import KeyedRandom
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.objectives import build_objective
from ecgfast.precision import Precision
from ecgfast.training import PretrainConfig, TrainStep
from ecgfast.training.optim import build_optimizer

WORLD, PER_RANK, CHUNK, STEPS, LENGTH = 2, 5, 3, 3, 96
TINY = EncoderConfig(filters=(8, 12, 16), kernel_sizes=(7, 4, 3), backend="eager", dropout=0.2,
                     residual="all", attention=True)
NAMES = ("contrastive", "both")
TOL = {"rtol": 1e-4, "atol": 1e-6}
#: LARS (its update scales with norms: round-off stays round-off, unlike Adam's eps),
#: the base lr unscaled, so the one-process reference builds the same optimizer.
STEP = {"precision": "fp32", "optimizer": "lars", "lr": 0.05, "lr_scaling": "none",
        "weight_decay": 1e-4, "momentum": 0.9}


def _batches():
    g = torch.Generator().manual_seed(11)
    return [torch.randn(WORLD * PER_RANK, LENGTH, generator=g) for _ in range(STEPS)]


def _random(rank, step):
    return KeyedRandom.for_batch(1000 * rank + step, PER_RANK)


def _objective(name, gather):
    torch.manual_seed(0)
    return build_objective(name, ECGEncoder(TINY), gather_distributed=gather)


def _train(ctx, name, path):
    rank = ctx.rank
    objective = _objective(name, gather=True)
    cfg = PretrainConfig(objective=name, batch_size=PER_RANK, chunk_size=CHUNK, **STEP)
    stepper = TrainStep.build(cfg, wrap_ddp(objective, ctx), objective,
                              Precision(cfg.precision, ctx.device), CHUNK, WORLD)
    record = {"loss": [], "grads": []}
    for step, x in enumerate(_batches()):
        out = stepper(x[rank * PER_RANK:(rank + 1) * PER_RANK], _random(rank, step), 0,
                      step, STEPS)
        assert out.status == "ok"
        record["loss"].append(out.loss)
        record["grads"].append([p.grad.clone() for p in objective.parameters()])
    record["weights"] = [p.detach().clone() for p in objective.parameters()]
    torch.save(record, path)


def _worker(rank, port, out_dir):
    gloo_worker_env(rank, WORLD, port)
    ctx = init_process_group_from_env("cpu")
    try:  # the DDP wrappers are gone (with _train's frame) before their process group
        for name in NAMES:
            _train(ctx, name, os.path.join(out_dir, f"{name}-rank{rank}.pt"))
    finally:
        dist.barrier()
        destroy_process_group()


def _reference(name):
    """One process, the unchunked step over the global batch: each rank's windows embedded
    in one pass with that rank's random source, one graph, the same LARS steps."""
    objective = _objective(name, gather=False)
    opt = build_optimizer("lars", objective, STEP["lr"], STEP["weight_decay"], STEP["momentum"])
    n = WORLD * PER_RANK
    losses, grads = [], []
    for step, x in enumerate(_batches()):
        z1, z2, local = [], [], None
        for rank in range(WORLD):
            z, part, _ = objective.embed(x[rank * PER_RANK:(rank + 1) * PER_RANK],
                                         _random(rank, step))
            z1.append(z[:PER_RANK])
            z2.append(z[PER_RANK:])
            if part is not None:
                local = part * (PER_RANK / n) if local is None else local + part * (PER_RANK / n)
        loss, _ = objective.join(torch.cat(z1), torch.cat(z2), local, {})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in objective.parameters()])
    return losses, grads, [p.detach().clone() for p in objective.parameters()]


def test_chunked_steps_under_two_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in NAMES:
            ranks = [torch.load(tmp_path / f"{name}-rank{r}.pt") for r in range(WORLD)]
            losses, grads, weights = _reference(name)
            for step in range(STEPS):
                # "both": each rank's transformation loss is its own windows' mean; their
                # mean over ranks is the global batch's
                mean_loss = sum(r["loss"][step] for r in ranks) / WORLD
                torch.testing.assert_close(mean_loss, losses[step], **TOL)
                for r in ranks:
                    for a, b in zip(r["grads"][step], grads[step]):
                        torch.testing.assert_close(a, b, **TOL)
            for r in ranks:
                for a, b in zip(r["weights"], weights):
                    torch.testing.assert_close(a, b, **TOL)
    finally:
        torch.set_num_threads(threads)
