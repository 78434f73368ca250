"""Chunked contrastive steps (ecgfast.chunked): the same gradients as one pass, bounded memory.

The reference for a batch cut into chunks is one autograd graph over the whole batch in
which each chunk's views and dropout masks are drawn in chunk order (what the chunked step
replays); with one chunk that is exactly the objective's ordinary forward. Dropout is on
in every encoder here (eager backend, CPU).
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

from ecgfast.chunked import (
    ChunkedStep,
    TrainStep,
    auto_chunk_size,
    check_chunk_size,
    chunk_bounds,
    saved_bytes_per_window,
)
from ecgfast.models import ECGEncoder
from ecgfast.objectives import build_objective
from ecgfast.training import PretrainConfig, pretrain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTH = 96
TOL = {"rtol": 1e-4, "atol": 1e-6}


def _objective(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_objective(name, ECGEncoder(TINY))


def _fp32():
    return torch.autocast("cpu", enabled=False)


def reference_loss(objective, x, generator, chunk_size):
    """The whole batch's loss in one graph, each chunk's randomness drawn in chunk order."""
    n, z1, z2, local = x.shape[0], [], [], None
    for a, b in chunk_bounds(n, chunk_size):
        z, part, _ = objective.embed(x[a:b], generator)
        z1.append(z[: b - a])
        z2.append(z[b - a:])
        if part is not None:
            local = part * ((b - a) / n) if local is None else local + part * ((b - a) / n)
    return objective.join(torch.cat(z1), torch.cat(z2), local, {})[0]


def _grads(objective):
    return [p.grad.clone() for p in objective.parameters()]


def test_chunk_bounds_cover_the_batch_and_the_last_chunk_is_smaller():
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(8, 4) == [(0, 4), (4, 8)]
    assert chunk_bounds(3, 5) == [(0, 3)]


@pytest.mark.parametrize("name", ["contrastive", "both"])
def test_one_chunk_equals_the_objectives_own_step(name):
    """A ChunkedStep of one chunk replays the randomness of ``objective(x, g)`` exactly."""
    x = torch.randn(6, LENGTH)
    plain, chunked = _objective(name), _objective(name)
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(2)
    loss, metrics = plain(x, g)
    loss.backward()
    after_plain = (torch.get_rng_state(), g.get_state())
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(2)
    step = ChunkedStep(chunked, x, g, 6, _fp32)
    step.backward()
    assert torch.equal(step.loss, loss.detach())
    assert metrics.keys() == step.metrics.keys()
    for a, b in zip(_grads(plain), _grads(chunked)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    # the random streams end where the one-pass step leaves them
    assert torch.equal(torch.get_rng_state(), after_plain[0])
    assert torch.equal(g.get_state(), after_plain[1])


@pytest.mark.parametrize("name,batch,chunk", [("contrastive", 8, 4), ("contrastive", 7, 3),
                                              ("both", 7, 3)])
def test_chunked_steps_match_one_graph_over_three_optimizer_steps(name, batch, chunk):
    """Loss, every gradient and the weights after 3 Adam steps, chunk sizes that do and do
    not divide the batch."""
    xs = [torch.randn(batch, LENGTH, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    chunked, ref = _objective(name), _objective(name)
    opt_c = torch.optim.Adam(chunked.parameters(), lr=1e-3)
    opt_r = torch.optim.Adam(ref.parameters(), lr=1e-3)
    torch.manual_seed(5)
    g_c = torch.Generator().manual_seed(6)
    rng_c = torch.get_rng_state()
    torch.manual_seed(5)
    g_r = torch.Generator().manual_seed(6)
    for x in xs:
        rng_r = torch.get_rng_state()
        torch.set_rng_state(rng_c)
        step = ChunkedStep(chunked, x, g_c, chunk, _fp32)
        opt_c.zero_grad()
        step.backward()
        opt_c.step()
        rng_c = torch.get_rng_state()
        torch.set_rng_state(rng_r)
        loss = reference_loss(ref, x, g_r, chunk)
        opt_r.zero_grad()
        loss.backward()
        opt_r.step()
        torch.testing.assert_close(step.loss, loss.detach(), **TOL)
        for a, b in zip(_grads(chunked), _grads(ref)):
            torch.testing.assert_close(a, b, **TOL)
    for (k, a), b in zip(chunked.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, **TOL, msg=k)


def test_train_step_takes_the_one_pass_step_when_the_batch_fits_a_chunk():
    x = torch.randn(5, LENGTH)
    cfg = PretrainConfig(objective="contrastive", batch_size=8, chunk_size=8, epochs=1)
    results = []
    for chunk in (None, 8):
        obj = _objective("contrastive")
        stepper = TrainStep.build(PretrainConfig(**{**cfg.to_dict(), "chunk_size": chunk}),
                                  obj, obj, 1, torch.device("cpu"))
        torch.manual_seed(3)
        out = stepper(x, torch.Generator().manual_seed(4), 0, 0, 1)
        assert out.status == "ok"
        results.append([p.detach().clone() for p in obj.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)


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
    from ecgfast import chunked

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
    assert check_chunk_size("auto", 8, "both") == "auto"


_PEAK = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, {tests!r})
    from test_chunked import TINY, LENGTH
    from ecgfast.chunked import ChunkedStep
    from ecgfast.models import ECGEncoder
    from ecgfast.objectives import build_objective
    torch.set_num_threads(1)
    torch.manual_seed(0)
    obj = build_objective("contrastive", ECGEncoder(TINY), nt_xent_backend="streaming")
    g = torch.Generator().manual_seed(0)
    off = lambda: torch.autocast("cpu", enabled=False)
    def peak():  # this process's own high-water RSS (ru_maxrss keeps the forking parent's)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    out = {{}}
    for name, batch, chunk in [("warm", 256, 64), ("small", 256, 64), ("large", 2048, 64),
                               ("unchunked", 2048, 2048)]:
        x = torch.randn(batch, LENGTH)
        step = ChunkedStep(obj, x, g, chunk, off)
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
    about 16 MiB; the bound is 32 MiB (16 embedding-sized buffers; measured here: 15-18
    MiB). An unchunked batch of 2048 after it (measured: about 265 MiB more) shows that the
    measurement sees the activations: it must grow by more than 4x the bound."""
    code = _PEAK.format(tests=os.path.join(REPO, "tests"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
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
    with pytest.raises(SystemExit):
        main(["pretrain", "--out", str(tmp_path / "x"), "--chunk-size", "many", *SYNTH])
