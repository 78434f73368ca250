"""Multi-lead input through the Triton encoder kernels, against ecgfast/ops (issue 12).

With C leads the first conv has C_in = C > 1, so it leaves the DIRECT (FMA) path for the
implicit-GEMM ``tl.dot`` path (kernels/encoder_block_conv1d.py ``conv_config``), and block 1's 1x1
shortcut projects C -> filters[0] through the ``tl.dot`` projection of
kernels/encoder_block_se_residual_pool.py (C_in zero-padded to BLOCK_CIN >= 16). Both are compared with
the reference on C in {2, 3, 12} at lengths that are no multiple of any block size: the
output and the gradient of the input and of every parameter. Tolerances as in
test_encoder_block_triton.py (fp32: 1e-5 under the interpreter, 5e-3 with TF32 on CUDA).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # conftest.py does this too; harmless when already set
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from ecgfast.kernels.encoder_block_conv1d import conv1d_act_dropout, conv_config
from ecgfast.kernels.encoder_block_se_residual_pool import se_residual_pool

from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.ops.encoder_block import conv_act_dropout
from ecgfast.ops.encoder_block import se_residual_pool as se_residual_pool_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
FP32_TOL = 1e-5 if INTERPRET else 5e-3
LEADS = (2, 3, 12)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def _leaves(*tensors):
    return [None if t is None else t.to(DEVICE).detach().clone().requires_grad_()
            for t in tensors]


def _grads(out, leaves, grad_out):
    present = [t for t in leaves if t is not None]
    return list(torch.autograd.grad(out, present, grad_out))


@pytest.mark.parametrize("c_in", LEADS)
def test_first_layer_takes_the_dot_path(c_in):
    """The production first layer (32 filters, K = 32) with C leads is an implicit GEMM
    over R = 32 C, not the C_in = 1 FMA path."""
    assert conv_config(1, 32, 32)["DIRECT"]
    assert not conv_config(c_in, 32, 32)["DIRECT"]
    assert not conv_config(c_in, 32, 32, interpret=False)["DIRECT"]


@pytest.mark.parametrize("c_in", LEADS)
@pytest.mark.parametrize(("k", "length"), [(32, 77), (7, 130)], ids=["k32-L77", "k7-L130"])
def test_multilead_first_conv_matches_reference(c_in, k, length):
    torch.manual_seed(c_in * 100 + k)
    x0 = torch.randn(2, c_in, length)
    w0 = torch.randn(20, c_in, k) / (c_in * k) ** 0.5
    b0 = torch.randn(20) * 0.1
    x, w, b = _leaves(x0, w0, b0)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x0, w0, b0))
    y, sums = conv1d_act_dropout(x, w, b, act="leaky_relu", negative_slope=0.1,
                                 write_sums=True)
    yr = conv_act_dropout(xr, wr, br, act="leaky_relu", negative_slope=0.1)
    assert y.shape == (2, 20, length)
    assert rel_err(y, yr) < FP32_TOL
    assert rel_err(sums, yr.sum(-1)) < FP32_TOL
    gy, gs = torch.randn_like(yr), torch.randn_like(sums.cpu())
    got = _grads((y, sums), [x, w, b], (gy.to(DEVICE), gs.to(DEVICE)))
    want = _grads((yr, yr.sum(-1)), [xr, wr, br], (gy, gs))
    for name, g, r in zip(("x", "weight", "bias"), got, want):
        assert rel_err(g, r) < FP32_TOL, name


@pytest.mark.parametrize("c_in", LEADS)
def test_multilead_shortcut_projection_matches_reference(c_in):
    """Block 1's SE + 1x1 projection of the C leads + max pool."""
    torch.manual_seed(c_in)
    c, length = 20, 101
    f0, a0 = torch.randn(2, c, length), torch.rand(2, c)
    x0 = torch.randn(2, c_in, length)
    ws0, bs0 = torch.randn(c, c_in, 1) / c_in**0.5, torch.randn(c) * 0.1
    low = _leaves(f0, a0, x0, ws0, bs0)
    ref = [t.detach().clone().requires_grad_() for t in (f0, a0, x0, ws0, bs0)]
    out = se_residual_pool(*low, pool_size=8, pool_stride=2)
    want = se_residual_pool_ref(*ref, pool_size=8, pool_stride=2)
    assert rel_err(out, want) < FP32_TOL
    g = torch.randn_like(want)
    for name, a, r in zip(("f", "a", "x", "shortcut_weight", "shortcut_bias"),
                          _grads(out, low, g.to(DEVICE)), _grads(want, ref, g)):
        assert rel_err(a, r) < FP32_TOL, name


@pytest.mark.parametrize("c_in", LEADS)
def test_multilead_encoder_matches_eager(c_in):
    """A whole small C-lead encoder (all shortcuts, SE), Triton vs eager: the output and
    the gradient of the input and of every parameter."""
    config = EncoderConfig(in_channels=c_in, residual="all", attention=True, dropout=0.0,
                           filters=(12, 20, 36), kernel_sizes=(7, 4, 3), se_reduction=4,
                           pool_size=5)
    torch.manual_seed(c_in)
    eager = ECGEncoder(config.replace(backend="eager")).to(DEVICE)
    fused = ECGEncoder(config.replace(backend="triton")).to(DEVICE)
    fused.load_state_dict(eager.state_dict())
    x = torch.randn(2, c_in, 211, device=DEVICE)
    g = torch.randn(2, 36, device=DEVICE)
    results = []
    for model in (fused, eager):
        xi = x.clone().requires_grad_()
        y = model(xi)
        y.backward(g)
        results.append((y, {"input": xi.grad, **{n: p.grad for n, p in model.named_parameters()}}))
    (y, grads), (yr, want) = results
    assert rel_err(y, yr) < FP32_TOL * 10
    assert set(grads) == set(want)
    for name in want:
        assert rel_err(grads[name], want[name]) < FP32_TOL * 10, name


# ---------------------------------------------------------------- ahead-of-time audit

_AOT_SCRIPT = r"""
import dataclasses, json, sys
from ecgfast.kernels import aot
from ecgfast.kernels.encoder_block_se_residual_pool import pool_config
rows, seen = [], set()
b1 = next(s for s in aot.kernel_specs() if s.name == "se_residual_pool_fwd_b1")
for c_in in (2, 3, 12):
    for ieee, dtypes in ((False, ("bf16", "fp32-tf32")), (True, ("fp32-ieee",))):
        cfg = pool_config(32, c_in, ieee_fp32=ieee, interpret=False)
        key = (ieee, tuple(sorted(cfg.items())))
        if key in seen:  # the same configuration as another lead count: the same binary
            continue
        seen.add(key)
        spec = dataclasses.replace(
            b1, name=f"se_residual_pool_fwd_b1_leads{c_in}", uses_dot=True,
            constexprs={**b1.constexprs, "PROJ_DOT": True, "BLOCK_CIN": cfg["BLOCK_CIN"]})
        config = aot.AOTConfig(f"{cfg['BLOCK_C']}x{cfg['BLOCK_T']}x{cfg['BLOCK_CIN']}",
                               {"BLOCK_C": cfg["BLOCK_C"], "BLOCK_T": cfg["BLOCK_T"]},
                               cfg["num_warps"], 1)
        for dtype in dtypes:
            for target in aot.TARGETS:
                rows.append(aot.compile_one(spec, dtype, config, target))
json.dump(rows, sys.stdout)
"""


def test_multilead_first_layer_conv_is_the_audited_c32_configuration():
    """kernels/aot.py compiles the conv at conv_config(32, 32, 32) ("c32"); with C leads the
    first conv gets the very same constexprs (K and R = C K are runtime arguments), so
    that audit covers it."""
    for ieee in (False, True):
        want = conv_config(32, 32, 32, ieee_fp32=ieee, interpret=False)
        for c_in in LEADS:
            assert conv_config(c_in, 32, 32, ieee_fp32=ieee, interpret=False) == want


def test_multilead_block_one_shortcut_compiles_without_spills():
    """Block 1's SE + projection of C leads (the tl.dot projection with BLOCK_CIN = 16, a
    configuration the default single-lead audit does not compile) compiled ahead of time
    for sm_80 and sm_90: no spills, and HMMA / HGMMA where the dot can use tensor cores."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    out = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], check=False,
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = json.loads(out.stdout)
    assert {r["dtype"] for r in rows} == {"bf16", "fp32-tf32", "fp32-ieee"}
    assert {r["target"] for r in rows} == {"sm_80", "sm_90"}
    for r in rows:
        where = f"{r['kernel']} {r['dtype']} {r['config']} {r['target']}"
        assert r["stack_bytes"] == 0 and r["local_loads"] == 0 and r["local_stores"] == 0, where
        assert 0 < r["registers"] <= 255, where
        if r["expects_tensor_core"]:
            prefix = "HMMA" if r["target"] == "sm_80" else "HGMMA"
            assert any(m.startswith(prefix) for m in r["mma_instructions"]), where
