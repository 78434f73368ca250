"""Chunked contrastive steps (ecgfast.training.chunked): the unchunked step's numbers, bounded memory.

The reference is the objective's ordinary one-pass step on the whole batch with the same
:class:`~ecgfast.keyed.KeyedRandom` (its views, dropout masks and heads' dropout are
keyed by window, so a chunk draws what its windows drew in the whole batch). Dropout is
on in every encoder here (eager backend, CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from large_batch_helpers import TINY, one_thread  # noqa: F401 (one_thread: autouse fixture)

from ecgfast.keyed import KeyedRandom
from ecgfast.models import ECGEncoder
from ecgfast.objectives import build_objective
from ecgfast.precision import Precision
from ecgfast.training import PretrainConfig, TrainStep, load_checkpoint, pretrain
from ecgfast.training.chunked import (
    ChunkedStep,
    auto_chunk_size,
    chunk_bounds,
    resolve_chunk_size,
    saved_bytes_per_window,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTH = 96
TOL = {"rtol": 1e-4, "atol": 1e-6}
CPU = torch.device("cpu")


def _objective(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_objective(name, ECGEncoder(TINY))


def _fp32():
    return torch.autocast("cpu", enabled=False)


def _grads(objective):
    return [p.grad.clone() for p in objective.parameters()]


def test_chunk_bounds_cover_the_batch_and_the_last_chunk_is_smaller():
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(8, 4) == [(0, 4), (4, 8)]
    assert chunk_bounds(3, 5) == [(0, 3)]


@pytest.mark.parametrize("name", ["contrastive", "both"])
def test_one_chunk_is_the_objectives_own_step(name):
    x = torch.randn(6, LENGTH)
    plain, chunked = _objective(name), _objective(name)
    loss, metrics = plain(x, KeyedRandom.for_batch(2, 6))
    loss.backward()
    step = ChunkedStep(chunked, x, KeyedRandom.for_batch(2, 6), 6, _fp32)
    step.backward()
    assert torch.equal(step.loss, loss.detach())
    assert metrics.keys() == step.metrics.keys()
    for a, b in zip(_grads(plain), _grads(chunked)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name,batch,chunk", [("contrastive", 8, 4), ("contrastive", 7, 3),
                                              ("both", 7, 3), ("both", 6, 1)])
def test_chunked_steps_equal_the_unchunked_step_over_three_optimizer_steps(name, batch, chunk):
    """Loss, every gradient and the weights after 3 SGD-with-momentum steps against the
    one-pass step, for chunk sizes that do and do not divide the batch. (SGD, whose update
    is linear in the gradient, so that round-off stays round-off; Adam divides gradients
    of about 1e-9 by its eps of 1e-8, see the TrainStep test below.)"""
    xs = [torch.randn(batch, LENGTH, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    chunked, ref = _objective(name), _objective(name)
    opt_c = torch.optim.SGD(chunked.parameters(), lr=0.1, momentum=0.9)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for i, x in enumerate(xs):
        step = ChunkedStep(chunked, x, KeyedRandom.for_batch(50 + i, batch), chunk, _fp32)
        opt_c.zero_grad()
        step.backward()
        opt_c.step()
        loss, metrics = ref(x, KeyedRandom.for_batch(50 + i, batch))
        opt_r.zero_grad()
        loss.backward()
        opt_r.step()
        torch.testing.assert_close(step.loss, loss.detach(), **TOL)
        for k in metrics:
            torch.testing.assert_close(step.metrics[k], metrics[k], **TOL, msg=k)
        for a, b in zip(_grads(chunked), _grads(ref)):
            torch.testing.assert_close(a, b, **TOL)
    start = _objective(name).state_dict()
    for (k, a), b in zip(chunked.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, **TOL, msg=k)
    assert not torch.equal(chunked.projection.net[0].weight, start["projection.net.0.weight"])


def test_the_equality_rests_on_keying_by_window():
    """The control: chunks that restart the row ids at 0 (what per-chunk random streams
    amount to) give another loss, so the equality above is not vacuous; so does another
    seed, and dropout is really on."""
    x = torch.randn(8, LENGTH)
    obj = _objective("contrastive")
    loss = obj(x, KeyedRandom.for_batch(3, 8))[0].detach()
    z = [obj.embed(x[a:b], KeyedRandom.for_batch(3, b - a)).z for a, b in chunk_bounds(8, 4)]
    restarted = obj.join(torch.cat([t[: len(t) // 2] for t in z]),
                         torch.cat([t[len(t) // 2:] for t in z]))[0].detach()
    assert not torch.allclose(loss, restarted, rtol=1e-3)
    assert not torch.allclose(loss, obj(x, KeyedRandom.for_batch(4, 8))[0], rtol=1e-3)
    obj.encoder.eval()
    views = obj.embed(x, KeyedRandom.for_batch(3, 8)).z
    obj.encoder.train()
    assert not torch.allclose(views, obj.embed(x, KeyedRandom.for_batch(3, 8)).z)


def test_a_chunked_step_refuses_a_torch_generator():
    with pytest.raises(TypeError, match="KeyedRandom"):
        ChunkedStep(_objective("contrastive"), torch.randn(4, LENGTH), torch.Generator(), 2,
                    _fp32)


@pytest.mark.parametrize("optimizer,atol", [("lars", 1e-6), ("adamw", 1e-5)])
def test_chunked_and_one_pass_train_steps_end_with_the_same_weights(optimizer, atol):
    """Through TrainStep (schedule, optimizer, precision "fp32"): chunk 3 of 7 against no
    chunking, three steps at lr 1e-3. LARS scales the update by norms, so round-off stays
    round-off (measured 1.5e-8). AdamW's update is about ``lr * g / (|g| + eps)``: a
    gradient element of about 1e-9, where the chunked and one-pass round-off differ
    relatively most, moves by up to 1e-3 of lr times its relative difference, so weights
    are compared to 1e-5 (1 % of one step; measured 2.1e-6, against a movement of 2e-3)."""
    xs = [torch.randn(7, LENGTH, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    weights = []
    for chunk in (None, 3):
        obj = _objective("both")
        cfg = PretrainConfig(objective="both", batch_size=7, chunk_size=chunk, epochs=1,
                             optimizer=optimizer, lr_schedule="cosine", precision="fp32")
        stepper = TrainStep.build(cfg, obj, obj, Precision("fp32", CPU), chunk)
        for i, x in enumerate(xs):
            assert stepper(x, KeyedRandom.for_batch(i, 7), 0, i, 3).status == "ok"
        weights.append([p.detach().clone() for p in obj.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


def test_train_step_takes_the_one_pass_step_when_the_batch_fits_a_chunk():
    x = torch.randn(5, LENGTH)
    cfg = PretrainConfig(objective="contrastive", batch_size=8, chunk_size=8, epochs=1)
    results = []
    for chunk in (None, 8):
        obj = _objective("contrastive")
        stepper = TrainStep.build(cfg, obj, obj, Precision("fp32", CPU), chunk)
        out = stepper(x, KeyedRandom.for_batch(4, 5), 0, 0, 1)
        assert out.status == "ok"
        results.append([p.detach().clone() for p in obj.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_pretrain_with_chunks_ends_where_pretrain_without_them_ends(tmp_path):
    """End to end: two epochs of "both" (shuffling, augmentations, dropout, LARS) with
    chunks of 4 of a batch of 6 give the unchunked run's weights and losses."""
    x = torch.randn(12, LENGTH).numpy()
    runs = []
    for chunk in (None, 4):
        cfg = PretrainConfig(objective="both", epochs=2, batch_size=6, chunk_size=chunk, seed=3,
                             optimizer="lars", lr=0.05, precision="fp32")
        runs.append(pretrain(x, tmp_path / str(chunk), TINY, cfg, progress=False))
    for a, b in zip(runs[0].encoder.state_dict().values(), runs[1].encoder.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    for a, b in zip(runs[0].history, runs[1].history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_pretrain_with_chunks_runs_and_resumes_bit_equal(tmp_path):
    x = torch.randn(8, LENGTH).numpy()
    cfg = PretrainConfig(objective="contrastive", epochs=2, batch_size=4, chunk_size=3, seed=1)
    full = pretrain(x, tmp_path / "full", TINY, cfg, progress=False)
    pretrain(x, tmp_path / "split", TINY, PretrainConfig(**{**cfg.to_dict(), "epochs": 1}),
             progress=False)
    split = pretrain(x, tmp_path / "split", TINY, cfg, resume=True, progress=False)
    for a, b in zip(full.encoder.state_dict().values(), split.encoder.state_dict().values()):
        assert torch.equal(a, b)


def test_auto_chunk_size_follows_the_free_memory(monkeypatch):
    from ecgfast.training import chunked

    obj = _objective("contrastive").train()
    x = torch.randn(64, LENGTH)
    per_window = saved_bytes_per_window(obj, x[:16], _fp32)
    assert per_window > 0
    monkeypatch.setattr(chunked, "free_memory_bytes", lambda device: int(20 * per_window))
    assert auto_chunk_size(obj, x, _fp32) == 10  # half of the free memory: 10 windows
    monkeypatch.setattr(chunked, "free_memory_bytes", lambda device: 10**15)
    assert auto_chunk_size(obj, x, _fp32) == 64  # never more than the batch
    monkeypatch.setattr(chunked, "free_memory_bytes", lambda device: None)
    assert auto_chunk_size(obj, x, _fp32) == 64  # unknown free memory: no chunking


@pytest.mark.parametrize("kwargs,match", [
    ({"objective": "transform", "chunk_size": 4}, "nothing to chunk"),
    ({"objective": "contrastive", "chunk_size": 9, "batch_size": 8}, "larger than batch_size"),
    ({"objective": "contrastive", "chunk_size": 0}, "chunk_size"),
    ({"objective": "contrastive", "chunk_size": "half"}, "chunk_size"),
])
def test_bad_chunk_sizes_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**kwargs)


def test_chunk_size_is_read_once_and_auto_is_resolved_once(tmp_path, monkeypatch):
    """The config reads the command line's text; "auto" is measured once, when the run
    starts, saved in the checkpoint, and a resumed run takes the saved number."""
    from ecgfast.training import chunked

    assert PretrainConfig(objective="both", batch_size=8, chunk_size="6").chunk_size == 6
    assert PretrainConfig(objective="both", batch_size=8, chunk_size="auto").chunk_size == "auto"
    assert resolve_chunk_size(5, None, None, None, None) == 5
    probes = []
    monkeypatch.setattr(chunked, "auto_chunk_size", lambda obj, x, autocast: probes.append(x) or 3)
    x = torch.randn(8, LENGTH).numpy()
    cfg = PretrainConfig(objective="contrastive", epochs=1, batch_size=4, chunk_size="auto")
    pretrain(x, tmp_path / "run", TINY, cfg, progress=False)
    assert [p.shape for p in probes] == [(4, 1, LENGTH)]  # the first batch, once
    saved = load_checkpoint(tmp_path / "run").config
    assert saved["training"]["chunk_size"] == "auto" and saved["step_state"]["chunk_size"] == 3
    pretrain(x, tmp_path / "run", TINY, PretrainConfig(**{**cfg.to_dict(), "epochs": 2}),
             resume=True, progress=False)
    assert len(probes) == 1


_PEAK = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {tests!r})
    from test_chunked import TINY, LENGTH
    from ecgfast.training.chunked import ChunkedStep
    from ecgfast.keyed import KeyedRandom
    from ecgfast.models import ECGEncoder
    from ecgfast.objectives import build_objective
    torch.set_num_threads(1)
    torch.manual_seed(0)
    obj = build_objective("contrastive", ECGEncoder(TINY), nt_xent_backend="streaming")
    off = lambda: torch.autocast("cpu", enabled=False)
    def peak():  # this process's own high-water RSS (ru_maxrss keeps the forking parent's)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    out = {{}}
    for name, batch, chunk in [("warm", 256, 64), ("small", 256, 64), ("large", 2048, 64),
                               ("unchunked", 2048, 2048)]:
        x = torch.randn(batch, LENGTH)
        step = ChunkedStep(obj, x, KeyedRandom.for_batch(0, batch), chunk, off)
        obj.zero_grad()
        step.backward()
        del step, x
        out[name] = peak()
    print(json.dumps(out))
""")


def test_peak_memory_of_a_chunked_step_does_not_grow_with_the_batch():
    """Peak RSS (VmHWM, which only grows) of one fresh process running steps in order:
    batch 2048 at chunk 64 may exceed batch 256 at chunk 64 only by batch-sized tensors
    (ru_maxrss would not do: it keeps the forking parent's peak across exec). At 2048 the
    (2N, D) = (4096, 128) fp32 embeddings take 2 MiB, the inputs 0.75 MiB; with their
    gradient, the streaming loss's normalised copies and its 256-row tile (4 MiB) that is
    about 16 MiB; the bound is 32 MiB (16 embedding-sized buffers; measured here: 6-8
    MiB). An unchunked batch of 2048 after it (measured: about 192 MiB more) shows that the
    measurement sees the activations: it must grow by more than 4x the bound. glibc's mmap
    threshold is fixed in that process: left dynamic, it rises as large buffers are freed
    and then serves later ones from the heap, whose pages RSS keeps (the growth measured
    at batch 2048 then ranged from 9 to 35 MiB)."""
    code = _PEAK.format(tests=os.path.join(REPO, "tests"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    peak = json.loads(proc.stdout.strip().splitlines()[-1])
    bound = 32 * 2**20
    grown = peak["large"] - peak["small"]
    assert grown < bound, (grown, peak)
    assert peak["unchunked"] - peak["large"] > 4 * bound, peak


SYNTH = ["--subjects", "2", "--sessions", "2", "--session-seconds", "20", "--quiet"]


def test_cli_large_batch_flags_reach_the_run(tmp_path, capsys):
    from ecgfast.cli import main

    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--epochs", "1", "--objective", "contrastive",
                 "--batch-size", "4", "--max-steps-per-epoch", "1", "--chunk-size", "3",
                 "--optimizer", "lars", "--lr", "0.3", "--lr-schedule", "cosine",
                 "--warmup-epochs", "0.5", "--lr-scaling", "sqrt", "--weight-decay", "1e-6",
                 "--momentum", "0.8", "--precision", "fp32", "--device", "cpu", *SYNTH]) == 0
    saved = json.loads((run / "checkpoints" / "epoch-0001" / "config.json").read_text())
    assert {k: saved["training"][k] for k in ("chunk_size", "optimizer", "lr_schedule",
                                              "warmup_epochs", "lr_scaling", "weight_decay",
                                              "momentum", "precision")} == {
        "chunk_size": 3, "optimizer": "lars", "lr_schedule": "cosine", "warmup_epochs": 0.5,
        "lr_scaling": "sqrt", "weight_decay": 1e-6, "momentum": 0.8, "precision": "fp32"}
    assert saved["step_state"]["schedule"]["base_lr"] == pytest.approx(0.3 * (4 / 256) ** 0.5)
    capsys.readouterr()
    assert main(["pretrain", "--out", str(tmp_path / "t"), "--chunk-size", "2", *SYNTH]) == 2
    assert "nothing to chunk" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(tmp_path / "f"), "--objective", "both",
                 "--precision", "fp16", "--device", "cpu", *SYNTH]) == 2
    assert "fp16" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(tmp_path / "x"), "--chunk-size", "many", *SYNTH]) == 2
    assert "chunk_size" in capsys.readouterr().err
