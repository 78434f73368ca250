"""Optimizers and schedules for large batches (ecgfast.training.optim) and their place in pretrain."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from large_batch_helpers import TINY, one_thread  # noqa: F401 (one_thread: autouse fixture)

from ecgfast.training import PretrainConfig, pretrain
from ecgfast.training import checkpoint as ckpt
from ecgfast.training.optim import LARS, LRSchedule, build_optimizer, param_groups, scaled_lr


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def _lars_by_hand(w, grads, lr, momentum, wd, eta, adapt):
    """SimCLR's LARS update on a flat list of floats, one step per entry of ``grads``."""
    v = [0.0] * len(w)
    for g in grads:
        d = [gi + wd * wi for gi, wi in zip(g, w)]
        ratio = 1.0
        if adapt and _norm(w) > 0 and _norm(d) > 0:
            ratio = eta * _norm(w) / _norm(d)
        v = [momentum * vi + lr * ratio * di for vi, di in zip(v, d)]
        w = [wi - vi for wi, vi in zip(w, v)]
    return w


def test_lars_matches_the_update_formula_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    w0, b0 = model.weight.detach().flatten().tolist(), model.bias.detach().tolist()
    lr, momentum, wd, eta = 0.5, 0.9, 0.01, 0.001
    opt = LARS(param_groups(model, wd), lr=lr, momentum=momentum, weight_decay=wd, eta=eta)
    gw = [[0.3, -1.0, 2.0, 0.5, 0.0, -0.2], [1.5, 0.1, -0.7, 0.2, 0.9, -1.1]]
    gb = [[0.4, -0.6], [-0.3, 0.8]]
    for step in range(2):
        model.weight.grad = torch.tensor(gw[step], dtype=torch.float64).view(2, 3)
        model.bias.grad = torch.tensor(gb[step], dtype=torch.float64)
        opt.step()
    want_w = _lars_by_hand(w0, gw, lr, momentum, wd, eta, adapt=True)
    want_b = _lars_by_hand(b0, gb, lr, momentum, 0.0, eta, adapt=False)  # bias: neither
    assert model.weight.detach().flatten().tolist() == pytest.approx(want_w, rel=1e-12)
    assert model.bias.detach().tolist() == pytest.approx(want_b, rel=1e-12)


def test_lars_trust_ratio_is_one_for_zero_weights():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    opt = LARS([w], lr=0.1, momentum=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(w.detach(), torch.full((2, 2), -0.1))


@pytest.mark.parametrize("kwargs,match", [({"lr": 0.0}, "zero learning rate"),
                                          ({"lr": 0.1, "momentum": 1.0}, "momentum"),
                                          ({"lr": 0.1, "weight_decay": -1.0}, "weight_decay")])
def test_bad_lars_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LARS([torch.nn.Parameter(torch.ones(2))], **kwargs)


def test_param_groups_keep_biases_out_of_decay_and_trust_ratio():
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.LayerNorm(4))
    groups = param_groups(model, 1e-4)
    assert [len(g["params"]) for g in groups] == [1, 3]  # conv weight | conv bias, norm w, b
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["trust_ratio"] is False
    adamw = build_optimizer("adamw", model, 1e-3, 1e-4)
    assert [g["weight_decay"] for g in adamw.param_groups] == [1e-4, 0.0]
    assert len(build_optimizer("adam", model, 1e-3).param_groups) == 1  # today's Adam


def test_lr_scaling_relative_to_batch_256():
    assert scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scaled_lr(0.3, 4096, "sqrt") == pytest.approx(1.2)
    assert scaled_lr(0.3, 4096, "none") == 0.3
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_lr(0.3, 4096, "square")


def test_warmup_and_cosine_values_at_stated_steps():
    s = LRSchedule(2.0, "cosine", warmup_epochs=1, horizon_epochs=3)
    steps = 4
    assert s.factor(0, 0, steps) == pytest.approx(0.25)  # warm-up: (0 + 1/4) / 1
    assert s.factor(0, 2, steps) == pytest.approx(0.75)
    assert s.factor(0, 3, steps) == pytest.approx(1.0)
    assert s.factor(1, 0, steps) == pytest.approx(1.0)  # cosine starts at 1
    assert s.factor(2, 0, steps) == pytest.approx(0.5)  # half way: cos(pi / 2)
    assert s.factor(2, 2, steps) == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))
    assert s.factor(2, 3, steps) > 0  # the last step still moves
    c = LRSchedule(2.0, "constant", warmup_epochs=0.5)
    assert [c.factor(0, i, steps) for i in range(4)] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=9.0)
    assert s.apply(opt, 2, 0, steps) == pytest.approx(1.0) == opt.param_groups[0]["lr"]


def test_bad_schedule_options_are_refused():
    with pytest.raises(ValueError, match="warmup_epochs"):
        PretrainConfig(lr_schedule="cosine", warmup_epochs=10, epochs=10)
    with pytest.raises(ValueError, match="optimizer"):
        PretrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="lr_schedule"):
        PretrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="warmup_epochs"):
        PretrainConfig(warmup_epochs=-1.0)
    with pytest.raises(ValueError, match="lr"):
        PretrainConfig(optimizer="lars", lr=0.0)


def _windows(n=8, length=96):
    rng = np.random.default_rng(0)
    t = np.arange(length) / 32.0
    return (np.sin(2 * np.pi * t + rng.uniform(0, 6, (n, 1)))
            + 0.1 * rng.standard_normal((n, length))).astype(np.float32)


@pytest.mark.parametrize("options", [
    {"optimizer": "adam"},
    {"optimizer": "adamw", "weight_decay": 1e-2, "lr_schedule": "cosine", "warmup_epochs": 0.5},
    {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "lr_schedule": "cosine",
     "warmup_epochs": 1, "lr_scaling": "linear"},
])
def test_resume_is_bit_equal_for_each_optimizer_and_schedule(tmp_path, options):
    x = _windows()
    base = dict(objective="contrastive", batch_size=4, seed=2, schedule_epochs=3, **options)
    pretrain(x, tmp_path / "full", TINY, PretrainConfig(epochs=3, **base), progress=False)
    pretrain(x, tmp_path / "split", TINY, PretrainConfig(epochs=1, **base), progress=False)
    pretrain(x, tmp_path / "split", TINY, PretrainConfig(epochs=3, **base), resume=True,
             progress=False)
    a = ckpt.load_checkpoint(tmp_path / "full").state_dict
    b = ckpt.load_checkpoint(tmp_path / "split").state_dict
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text()
             .splitlines() if json.loads(line)["kind"] == "step"]
    cfg = PretrainConfig(epochs=3, **base)
    schedule = LRSchedule(scaled_lr(cfg.lr, 4, cfg.lr_scaling), cfg.lr_schedule,
                          cfg.warmup_epochs, 3)
    want = [schedule.base_lr * schedule.factor(r["epoch"] - 1, r["step"] - 1, 2) for r in steps]
    assert [r["lr"] for r in steps] == pytest.approx(want, rel=1e-12)
    saved = ckpt.load_checkpoint(tmp_path / "split").config["step_state"]["schedule"]
    assert saved["last_lr"] == pytest.approx(want[-1])
