"""NT-Xent with gather_distributed=True: 2 processes on gloo against one process.

(The process-group helpers alone, without a process group: tests/test_distributed.py.)

The test spawns its own two processes (torch.multiprocessing, gloo, a free localhost port).
Each rank owns a slice of a global batch (uneven slices included), runs a linear projection
wrapped in DistributedDataParallel, and computes the loss with global negatives, with every
backend (Triton on the CPU under TRITON_INTERPRET=1). Checked against
one process on the concatenated batch (the eager reference in float64):

- the loss on every rank equals the single-process loss;
- the parameter gradients after DDP's average equal the single-process ones;
- the gradient reaching each rank's embeddings is world_size times the single-process
  gradient of those rows (DDP divides by world_size);
- each rank computed only its own anchor rows (streaming: the rows of its strips; Triton:
  the forward grid), not the whole global batch.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import (  # benchmarks/common.py, on pytest's pythonpath
    free_port,
    gloo_worker_env,
    interpreter_broken,
)

from ecgfast.distributed import (
    destroy_process_group,
    gather_with_grad,
    init_process_group_from_env,
    wrap_ddp,
)
from ecgfast.losses import NTXentLoss

WORLD = 2
D_IN, D_OUT = 12, 8
TAU = 0.2


def _global_batch(seed: int, n_total: int):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n_total, D_IN, generator=g, dtype=torch.float64)
    x2 = torch.randn(n_total, D_IN, generator=g, dtype=torch.float64)
    proj = torch.nn.Linear(D_IN, D_OUT, dtype=torch.float64)
    with torch.no_grad():
        proj.weight.copy_(torch.randn(D_OUT, D_IN, generator=g, dtype=torch.float64))
        proj.bias.copy_(torch.randn(D_OUT, generator=g, dtype=torch.float64))
    return x1, x2, proj


def _single_process(seed, sizes, backend):
    x1, x2, proj = _global_batch(seed, sum(sizes))
    z1, z2 = proj(x1), proj(x2)
    z1.retain_grad()
    z2.retain_grad()
    loss = NTXentLoss(TAU, backend=backend)(z1, z2)
    loss.backward()
    return loss.detach(), proj.weight.grad, proj.bias.grad, z1.grad, z2.grad


#: (rows per rank, backend, dtype the loss sees). fp32 cases are compared at fp32 accuracy.
CASES = [((5, 5), "eager", torch.float64), ((6, 3), "streaming", torch.float64),
         ((1, 4), "auto", torch.float64), ((7, 20), "triton", torch.float32),
         ((3, 3), "streaming", torch.float32)]
TOL = {torch.float64: {"rtol": 1e-10, "atol": 1e-12},
       torch.float32: {"rtol": 1e-4, "atol": 1e-6}}
#: Cases run by one spawn of the ranks: all at once where Triton's interpreter runs; where it
#: is known broken, the other backends' cases, and the Triton case skipped with the reason.
_BROKEN = interpreter_broken()
_TRITON = tuple(i for i, c in enumerate(CASES) if c[1] == "triton")
_OTHERS = tuple(i for i, c in enumerate(CASES) if c[1] != "triton")
GROUPS = ([pytest.param(tuple(range(len(CASES))), id="every-backend")] if _BROKEN is None else
          [pytest.param(_OTHERS, id="other-backends"),
           pytest.param(_TRITON, id="triton", marks=pytest.mark.skip(reason=_BROKEN))])


class _Recorder:
    """Stands in for a function or a Triton kernel and records what it was called with."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        return self.inner(*args, **kwargs)

    def __getitem__(self, grid):
        self.calls.append(grid)
        return self.inner[grid]


def _anchor_work(backend):
    """Install a recorder on what walks the anchor rows; returns a function that reads
    how many anchor rows (streaming) or which forward grid (Triton) the loss used."""
    if backend == "streaming":
        import ecgfast.ops.nt_xent_streaming as module

        name = "_strip_lse"
    else:
        import ecgfast.kernels.nt_xent as module

        name = "_nt_xent_fwd_kernel"
    rec = _Recorder(getattr(module, name))
    setattr(module, name, rec)

    def read():
        setattr(module, name, rec.inner)
        if backend == "streaming":  # _strip_lse(z, zt, r0, r1, ...)
            return sum(c[3] - c[2] for c in rec.calls)
        return rec.calls
    return read


def _case(ctx, case, path):
    sizes, backend, dtype = CASES[case]
    x1, x2, proj = _global_batch(case, sum(sizes))
    start = sum(sizes[:ctx.rank])
    sl = slice(start, start + sizes[ctx.rank])
    model = wrap_ddp(proj, ctx)
    z1, z2 = model(x1[sl]), model(x2[sl])
    z1.retain_grad()
    z2.retain_grad()
    work = _anchor_work(backend) if backend in ("streaming", "triton") else None
    loss = NTXentLoss(TAU, backend=backend, gather_distributed=True)(z1.to(dtype), z2.to(dtype))
    loss.backward()
    # gather_with_grad is also usable alone: rows in rank order.
    gathered = gather_with_grad(x1[sl])
    torch.save(
        {"loss": loss.detach(), "weight": proj.weight.grad, "bias": proj.bias.grad,
         "dz1": z1.grad, "dz2": z2.grad, "slice": (sl.start, sl.stop),
         "gathered_ok": bool(torch.equal(gathered, x1)), "work": work() if work else None},
        path,
    )


def _worker(rank, port, out_dir, cases):
    gloo_worker_env(rank, WORLD, port)
    ctx = init_process_group_from_env("cpu")
    try:  # the DDP wrappers are gone (with _case's frame) before their process group
        assert ctx.distributed and ctx.backend == "gloo" and ctx.rank == rank
        for case in cases:
            _case(ctx, case, os.path.join(out_dir, f"case{case}-rank{rank}.pt"))
    finally:
        dist.barrier()
        destroy_process_group()


@pytest.mark.parametrize("cases", GROUPS)
def test_two_gloo_ranks_equal_one_process(tmp_path, cases, monkeypatch):
    """Even slices (eager), uneven slices (streaming, Triton), a 1-row slice ("auto")."""
    # CPU tensors in the ranks, GPU or not: the Triton case runs in the interpreter. The
    # ranks inherit the variable from their start: Triton reads it when a kernel is
    # decorated, and this module imports Triton (interpreter_broken) before a worker runs.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    mp.spawn(_worker, args=(free_port(), str(tmp_path), cases), nprocs=WORLD, join=True)
    for case in cases:
        sizes, backend, dtype = CASES[case]
        loss, w_grad, b_grad, dz1, dz2 = _single_process(case, sizes, "eager")
        tol = TOL[dtype]
        for rank in range(WORLD):
            got = torch.load(tmp_path / f"case{case}-rank{rank}.pt")
            where = f"case {case} ({backend}, {dtype}) rank {rank}"
            assert got["gathered_ok"]
            assert got["loss"].dtype == torch.promote_types(dtype, torch.float32)
            torch.testing.assert_close(got["loss"].double(), loss, **tol, msg=where)
            torch.testing.assert_close(got["weight"], w_grad, **tol, msg=where)
            torch.testing.assert_close(got["bias"], b_grad, **tol, msg=where)
            a, b = got["slice"]
            torch.testing.assert_close(got["dz1"] / WORLD, dz1[a:b], **tol, msg=where)
            torch.testing.assert_close(got["dz2"] / WORLD, dz2[a:b], **tol, msg=where)
            if backend == "streaming":  # anchor rows walked: its own, in both views
                assert got["work"] == 2 * sizes[rank], where
            if backend == "triton":  # one forward launch over its own rows of each view
                # (grid: row tiles, views, column splits: one under the interpreter)
                assert got["work"] == [(-(-sizes[rank] // 16), 2, 1)], (where, got["work"])
