"""The encoder block's gradients under DistributedDataParallel: two gloo ranks on the CPU.

DDP copies every gradient whose strides differ from its parameter's into the bucket and
warns "Grad strides do not match bucket view strides"; the CPU conv backward of the
eager encoder block returns its gradients in the parameters' layout, so a run stays
silent. Each rank records the warnings raised during a few training steps of the
encoder, then of a control model whose backward returns a transposed gradient on purpose
(which must warn: proof that the warning is caught at all in this setting).
"""

from __future__ import annotations

import json
import os
import warnings

import torch
import torch.multiprocessing as mp
from common import free_port, gloo_worker_env  # benchmarks/common.py, on pytest's pythonpath

from ecgfast.distributed import destroy_process_group, init_process_group_from_env, wrap_ddp
from ecgfast.models import ECGEncoder, EncoderConfig

WORLD = 2
STRIDES = "Grad strides do not match bucket view strides"


def _stride_warnings(model, batch) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            model(batch).square().sum().backward()
    return [str(w.message) for w in caught if STRIDES in str(w.message)]


class _TransposedGrad(torch.autograd.Function):
    """``x @ w^T`` whose backward returns dW as a transposed view (strides (1, 5) for a
    (5, 1) weight whose own strides are (1, 1)), as the CPU conv backward once did."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x)
        return x @ w.t()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return None, (x.t() @ g).t()


class _Control(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(5, 1))

    def forward(self, x):
        return _TransposedGrad.apply(x, self.weight)


def _record(ctx, path):
    torch.manual_seed(0)
    config = EncoderConfig(filters=(8, 12, 16), kernel_sizes=(7, 4, 3), backend="eager")
    encoder = wrap_ddp(ECGEncoder(config), ctx)
    found = {"encoder": _stride_warnings(encoder, torch.randn(3, 1, 160))}
    found["control"] = _stride_warnings(wrap_ddp(_Control(), ctx), torch.randn(4, 1))
    with open(path, "w") as f:
        json.dump(found, f)


def _worker(rank, port, out_dir):
    gloo_worker_env(rank, WORLD, port)
    ctx = init_process_group_from_env("cpu")
    try:  # the DDP wrappers are gone (with _record's frame) before their process group
        _record(ctx, os.path.join(out_dir, f"rank{rank}.json"))
    finally:
        destroy_process_group()


def test_ddp_sees_gradients_in_the_parameters_layout(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        found = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert found["encoder"] == [], found["encoder"]
        assert found["control"], "the stride warning was not caught at all"
