"""The encoder block's SE + residual + max-pool kernel
(kernels/encoder_block_se_residual_pool.py, ``SEResidualPool``, the Function the Triton
backend launches) against the reference ``se_residual_pool``.

Every shortcut (none, identity, a 1x1 projection from one channel on the FMA path or from
several through ``tl.dot``, C_in past BLOCK_CIN), with and without squeeze-excitation, a
local max pool (windows not a multiple of the stride included) or the global max: the
output and the gradient of every input, on small awkward shapes (the interpreter runs
them on the CPU). Tolerances: encoder_block_helpers.py.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from encoder_block_helpers import (
    DTYPES,
    FP32_TOL,
    KERNEL_TOL,
    grads,
    leaves,
    pool_reference,
    rel_err,
    se_residual_pool,
)

from ecgfast.ops.encoder_block import se_residual_pool as se_residual_pool_ref

POOL_CASES = [
    # (B, C_in, C, L, attention, shortcut, pool)   shortcut: None | "identity" | "proj"
    (3, 1, 20, 101, True, "proj", (8, 2)),     # block-1 shape: C_in = 1, FMA projection
    (2, 24, 40, 97, True, "proj", (8, 2)),     # tl.dot projection, C_in not a pow2
    (2, 20, 36, 53, True, "proj", None),       # global max (block 3)
    (2, 17, 17, 64, False, "identity", (5, 3)),
    (1, 17, 17, 40, True, "identity", None),
    (2, 9, 21, 70, True, None, (7, 2)),        # windows not a multiple of the stride
    (3, 9, 21, 70, False, None, None),
    (2, 70, 19, 33, False, "proj", (8, 2)),    # C_in > BLOCK_CIN: projection K-loop
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_se_residual_pool_matches_reference(case, dtype):
    bsz, c_in, c, length, attention, shortcut, pool = case
    torch.manual_seed(hash(case) % 2**31)
    f0 = torch.randn(bsz, c, length)
    a0 = torch.rand(bsz, c) if attention else None
    x0 = torch.randn(bsz, c_in, length) if shortcut else None
    ws0 = torch.randn(c, c_in, 1) / c_in**0.5 if shortcut == "proj" else None
    bs0 = torch.randn(c) * 0.1 if shortcut == "proj" else None
    low, ref = leaves(f0, a0, x0, ws0, bs0, dtype=dtype)
    size, stride = pool if pool else (None, 1)
    out = se_residual_pool(*low, pool_size=size, pool_stride=stride)
    want = pool_reference(*ref, pool_size=size, pool_stride=stride, ties=dtype != torch.float32)
    assert out.dtype == dtype and out.shape == want.shape
    tol = KERNEL_TOL[dtype]
    assert rel_err(out, want) < tol
    g = torch.randn_like(want).to(dtype)
    got = grads(out, low, g)
    exp = grads(want, ref, g.float())
    for name, a, r in zip(("f", "a", "x", "shortcut_weight", "shortcut_bias"), got, exp):
        if r is not None:
            assert rel_err(a, r) < tol, name


@pytest.mark.parametrize("c_in", (2, 3, 12))
def test_multilead_shortcut_projection_matches_reference(c_in):
    """Block 1's SE + 1x1 projection of C leads (the tl.dot projection, C_in zero-padded to
    BLOCK_CIN >= 16) + max pool."""
    torch.manual_seed(c_in)
    c, length = 20, 101
    f0, a0 = torch.randn(2, c, length), torch.rand(2, c)
    x0 = torch.randn(2, c_in, length)
    ws0, bs0 = torch.randn(c, c_in, 1) / c_in**0.5, torch.randn(c) * 0.1
    low, ref = leaves(f0, a0, x0, ws0, bs0)
    out = se_residual_pool(*low, pool_size=8, pool_stride=2)
    want = se_residual_pool_ref(*ref, pool_size=8, pool_stride=2)
    assert rel_err(out, want) < FP32_TOL
    g = torch.randn_like(want)
    for name, a, r in zip(("f", "a", "x", "shortcut_weight", "shortcut_bias"),
                          grads(out, low, g), grads(want, ref, g)):
        assert rel_err(a, r) < FP32_TOL, name
