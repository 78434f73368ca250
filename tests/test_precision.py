"""Mixed precision (ecgfast.precision): resolution, the dispatch boundary, bf16 training on the
CPU, the fp16 skip policy, and fp16 + scaler on CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from large_batch_helpers import one_thread  # noqa: F401 (autouse fixture)

from ecgfast import precision
from ecgfast.layers import EncoderBlock
from ecgfast.losses import nt_xent, transformation_recognition_loss
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.objectives import build_objective
from ecgfast.precision import MAX_CONSECUTIVE_SKIPS, Precision, resolve_precision
from ecgfast.training import PretrainConfig, TrainStep, pretrain

TINY = EncoderConfig(filters=(8, 12, 16), kernel_sizes=(7, 4, 3), backend="eager", dropout=0.1,
                     residual="all", attention=True)
CPU = torch.device("cpu")


def test_precision_resolution_and_refusals(monkeypatch):
    from ecgfast import precision

    for native, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", CPU) == want
    monkeypatch.undo()
    flags = torch._C._cpu._get_cpu_capability()
    assert precision.cpu_has_native_bf16() == bool(flags["amx_bf16"] or flags["avx512_bf16"])
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="precision must be one of"):
        PretrainConfig(precision="fp8")
    if torch.cuda.is_available():
        want = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        assert resolve_precision("auto", torch.device("cuda")) == want


def test_fp16_on_the_cpu_is_refused_by_pretrain(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 96)).astype(np.float32)
    with pytest.raises(ValueError, match="fp16"):
        pretrain(x, tmp_path / "run", TINY, PretrainConfig(precision="fp16", device="cpu",
                                                           epochs=1), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_encoder_block_runs_in_the_autocast_dtype_with_fp32_gradients():
    torch.manual_seed(0)
    block = EncoderBlock(4, 8, 5, residual=True, attention=True, backend="eager")
    x = torch.randn(3, 4, 40, requires_grad=True)
    ref = block(x)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    for p, g in zip(block.parameters(), ref_grads):
        assert p.dtype == p.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, g, rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(y.float(), ref, rtol=3e-2, atol=3e-2)


def test_losses_are_fp32_under_autocast():
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.5, backend="eager")
        bce = transformation_recognition_loss(torch.randn(7, 7).bfloat16(), torch.arange(7))
    assert loss.dtype == bce.dtype == torch.float32
    torch.testing.assert_close(loss, nt_xent(z1.bfloat16().float(), z2.bfloat16().float(), 0.5),
                               rtol=1e-5, atol=1e-5)


def test_bf16_autocast_on_the_cpu_lowers_the_loss(tmp_path):
    rng = np.random.default_rng(1)
    t = np.arange(96) / 32.0
    x = (np.sin(2 * np.pi * t + rng.uniform(0, 6, (16, 1)))
         + 0.1 * rng.standard_normal((16, 96))).astype(np.float32)
    cfg = PretrainConfig(objective="transform", epochs=4, batch_size=8, lr=3e-3,
                         precision="bf16", device="cpu", seed=0)
    result = pretrain(x, tmp_path / "run", TINY, cfg, progress=False)
    losses = [r["loss"] for r in result.history]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert all(p.dtype == torch.float32 for p in result.encoder.parameters())


def test_the_resolved_precision_is_recorded_and_a_resume_in_another_warns(tmp_path, monkeypatch):
    """"auto" resolves per machine: the checkpoint records what it became, and a run resumed
    where it becomes something else says so."""
    from ecgfast.training import load_checkpoint

    x = np.random.default_rng(2).standard_normal((8, 96)).astype(np.float32)
    cfg = PretrainConfig(objective="transform", epochs=1, batch_size=8, device="cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    pretrain(x, tmp_path / "run", TINY, cfg, progress=False)
    assert load_checkpoint(tmp_path / "run").config["step_state"]["precision"] == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="trained in bf16 and resumes in fp32"):
        pretrain(x, tmp_path / "run", TINY, PretrainConfig(**{**cfg.to_dict(), "epochs": 2}),
                 progress=False, resume=True)


def _cpu_fp16(monkeypatch):
    """A Precision with a real GradScaler on the CPU (fp16 is refused there for training; the
    skip policy itself does not depend on the device)."""
    monkeypatch.setattr(precision, "resolve_precision", lambda name, device: name)
    return Precision("fp16", CPU)


def test_fp16_skips_non_finite_losses_and_stops_only_when_they_persist(monkeypatch):
    torch.manual_seed(0)
    obj = build_objective("contrastive", ECGEncoder(TINY))
    cfg = PretrainConfig(objective="contrastive", batch_size=4, epochs=1)
    stepper = TrainStep.build(cfg, obj, obj, p := _cpu_fp16(monkeypatch), None)
    bad = {"on": True}
    real = obj.loss.forward
    monkeypatch.setattr(obj.loss, "forward",
                        lambda z1, z2: real(z1, z2) * (float("nan") if bad["on"] else 1.0))
    before = [q.detach().clone() for q in obj.parameters()]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 96)
    scale0 = p.scaler.get_scale()
    for i in range(MAX_CONSECUTIVE_SKIPS - 1):
        assert stepper(x, g, 0, i, 10).status == "skipped"
    assert p.scaler.get_scale() == scale0 * 0.5 ** (MAX_CONSECUTIVE_SKIPS - 1)
    assert all(torch.equal(a, q) for a, q in zip(before, obj.parameters()))  # no step taken
    bad["on"] = False
    assert stepper(x, g, 0, 5, 10).status == "ok"  # a finite loss resets the count
    assert not all(torch.equal(a, q) for a, q in zip(before, obj.parameters()))
    bad["on"] = True
    status = [stepper(x, g, 0, 6 + i, 20).status for i in range(MAX_CONSECUTIVE_SKIPS)]
    assert status == ["skipped"] * (MAX_CONSECUTIVE_SKIPS - 1) + ["diverged"]
    state = p.state_dict()
    q = _cpu_fp16(monkeypatch)
    q.load_state_dict(state)
    assert q.scaler.get_scale() == p.scaler.get_scale()
    with pytest.raises(ValueError, match="gradient scaler"):
        q.load_state_dict({"scale": -1.0, "growth_tracker": 0})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast + GradScaler: CUDA only")
def test_fp16_with_scaler_on_a_large_logit_batch_has_no_nan():
    """Embeddings that saturate fp16 (norms ~ 6e4, tau 0.05): the loss and every gradient
    stay finite with the scaler, on the fused and eager NT-Xent."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    obj = build_objective("contrastive", ECGEncoder(TINY.replace(backend="auto")),
                          temperature=0.05).to(device)
    with torch.no_grad():
        obj.projection.net[-1].weight.mul_(3e3)
    cfg = PretrainConfig(objective="contrastive", batch_size=64, epochs=1, precision="fp16",
                         device="cuda")
    stepper = TrainStep.build(cfg, obj, obj, Precision("fp16", device), None)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(64, 256, device=device) * 30
    statuses = [stepper(x, g, 0, i, 8).status for i in range(8)]
    assert statuses.count("ok") >= 1, statuses
    assert all(torch.isfinite(p).all() for p in obj.parameters())


_TRITON_BF16 = textwrap.dedent("""
    import torch
    from ecgfast.layers import EncoderBlock
    torch.manual_seed(0)
    x = torch.randn(2, 4, 40)
    out = {}
    for backend in ("eager", "triton"):
        torch.manual_seed(1)
        block = EncoderBlock(4, 8, 5, residual=True, attention=True, backend=backend)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = block(x)
        y.float().square().sum().backward()
        out[backend] = (y.float(), [p.grad for p in block.parameters()], y.dtype)
    (ye, ge, de), (yt, gt, dt) = out["eager"], out["triton"]
    assert de == dt == torch.bfloat16, (de, dt)
    torch.testing.assert_close(yt, ye, rtol=2e-2, atol=2e-2)
    for a, b in zip(gt, ge):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)
    print("ok")
""")


def test_triton_encoder_block_under_bf16_autocast_matches_eager():
    """The dispatch boundary casts for the Triton autograd Functions too (interpreter on the
    CPU, in a fresh process: Triton reads TRITON_INTERPRET when ecgfast.kernels is imported)."""
    if torch.cuda.is_available():
        pytest.skip("the CUDA kernel tests cover the compiled kernels")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _TRITON_BF16], capture_output=True, text=True,
                          timeout=600, env=env, check=False)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_triton_dot_precision_follows_pytorch():
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        assert precision.fp32_dot_precision("matmul") == "ieee"
        matmul.allow_tf32 = True
        assert precision.fp32_dot_precision("matmul") == "tf32"
    finally:
        matmul.allow_tf32 = before
