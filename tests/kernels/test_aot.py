"""Ahead-of-time compilation of every registered kernel for sm_80 and sm_90 (no GPU needed).

Runs ``python -m ecgfast.kernels.aot --json`` in a fresh process (TRITON_INTERPRET unset:
kernels decorated under the interpreter cannot be compiled) for the training dtypes bf16,
fp32 with tf32 dots and fp32 with "ieee" dots (the exact mode on the FMA units, PyTorch's
default for fp32), at every production configuration, and checks: it compiled for both
targets, ``tl.dot`` reached the tensor cores where it can (HMMA on sm_80, HGMMA on sm_90),
and no register spilled (STACK = 0, no LDL/STL in the SASS). fp16 compiles like bf16 and
is left to the CLI to keep this test's compile time down (the compiles run in parallel,
one per core; Triton's cache makes reruns quick). This checks the installed Triton; the
production configurations were chosen spill-free with Triton 3.6.0 and 3.8.0 (the NT-Xent
kernels at D = 128, 256 and 512), 3.9.0 as well for the encoder kernels; the conv kernels
with keyed dropout were audited with 3.6.0 and 3.8.0 only
(benchmarks/results/aot-triton-{3.6.0,3.8.0}.json; the 3.9.0 file predates them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton", reason="Triton is a Linux dependency of ecgfast")


@pytest.fixture(scope="module")
def report():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    out = subprocess.run(
        [sys.executable, "-m", "ecgfast.kernels.aot", "--json", "--dtype", "bf16",
         "--dtype", "fp32-tf32", "--dtype", "fp32-ieee"],
        check=False, capture_output=True, text=True, env=env, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout)


def test_every_kernel_compiles_for_both_targets(report):
    from ecgfast.kernels.aot import kernel_specs

    for spec in kernel_specs():
        for dtype in [d for d in spec.dtypes if d in ("bf16", "fp32-tf32", "fp32-ieee")]:
            for config in spec.configs:
                targets = {r["target"] for r in report
                           if r["kernel"] == spec.name and r["dtype"] == dtype
                           and r["config"] == config.label}
                assert targets == {"sm_80", "sm_90"}, (spec.name, dtype, config.label)


def test_tensor_cores_and_no_spills(report):
    assert report, "nothing compiled"
    for r in report:
        where = f"{r['kernel']} {r['dtype']} {r['config']} {r['target']}"
        assert r["stack_bytes"] == 0 and r["local_loads"] == 0 and r["local_stores"] == 0, (
            f"{where}: spills ({r['stack_bytes']} B stack, {r['local_loads']} LDL, "
            f"{r['local_stores']} STL)")
        assert 0 < r["registers"] <= 255, where
        if r["expects_tensor_core"]:
            prefix = "HMMA" if r["target"] == "sm_80" else "HGMMA"
            assert any(m.startswith(prefix) for m in r["mma_instructions"]), (
                f"{where}: no {prefix} in the SASS ({r['mma_instructions']})")
        else:  # kernels without tl.dot
            assert not r["mma_instructions"], where


def test_cli_table_prints_every_column():
    from ecgfast.kernels.aot import format_table

    row = {"kernel": "k", "dtype": "bf16", "config": "64x64", "target": "sm_90",
           "num_warps": 4, "num_stages": 3, "registers": 100, "stack_bytes": 0,
           "local_loads": 0, "local_stores": 0, "shared_bytes": 32768, "tensor_core": True,
           "mma_instructions": ["HGMMA.64x64x16.F32.BF16"]}
    table = format_table([row])
    for word in ("regs", "spill", "shared", "HGMMA.64x64x16.F32.BF16", "32768"):
        assert word in table


# ---------------------------------------------------------------- several leads

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


def test_multilead_block_one_shortcut_compiles_without_spills():
    """Block 1's SE + projection of C leads (the tl.dot projection with BLOCK_CIN = 16, a
    configuration the default single-lead audit does not compile) compiled ahead of time
    for sm_80 and sm_90: no spills, and HMMA / HGMMA where the dot can use tensor cores."""
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
