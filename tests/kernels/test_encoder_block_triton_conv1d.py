"""The encoder block's conv kernel (kernels/encoder_block_conv1d.py, ``Conv1dActDropout``,
the Function the Triton backend launches) against the reference ``conv_act_dropout``.

On a machine without a CUDA GPU the kernels run under TRITON_INTERPRET=1 (numpy on the CPU;
conftest.py sets it before Triton is imported), so the shapes are small and awkward (no
multiple of any block size): the output, the SE sums and the gradient of every input, on
one lead (the DIRECT FMA path) and on several (the implicit-GEMM ``tl.dot`` path).
Dropout is keyed (ecgfast/keyed.py): element (c, t) of sample b is kept iff
``mix32(mix32(c * L + t) ^ keys[b]) >> 8 >= keep_threshold(p)``. Beyond the value
comparisons (same keys, same results as the reference, zero pattern bit for bit) the mask
is checked exactly: the in-kernel hash against :func:`ecgfast.keyed.mix32`, the kept
elements against :func:`ecgfast.keyed.dropout_keep`, the backward against the forward's
mask, and a sample's output against the same sample in another batch (a chunk, other
neighbours). Tolerances: encoder_block_helpers.py.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl
from encoder_block_helpers import (
    DEVICE,
    DTYPES,
    FP32_TOL,
    KERNEL_TOL,
    conv1d_act_dropout,
    dropout_keys,
    grads,
    leaves,
    rel_err,
)

from ecgfast.kernels._common import mix32
from ecgfast.kernels.encoder_block_conv1d import conv_config
from ecgfast.keyed import dropout_keep
from ecgfast.keyed import mix32 as mix32_reference
from ecgfast.ops.encoder_block import conv1d_same, conv_act_dropout

LEADS = (2, 3, 12)

# ---------------------------------------------------------------- values and gradients

CONV_SHAPES = [
    # (B, C_in, C_out, K, L)
    (2, 1, 20, 7, 77),     # C_in = 1: the DIRECT (FMA) path, odd K
    (1, 1, 12, 32, 61),    # DIRECT, even K (extra zero on the right), K > 16
    (3, 3, 17, 8, 50),     # implicit GEMM with R = 24 < BLOCK_R
    (2, 20, 24, 5, 130),   # R = 100, odd K
    (1, 16, 40, 6, 47),    # even K, C_out not a power of two
]


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv_act_matches_reference(shape, act, dtype, p):
    """Output, SE sums and gradients against the reference; with p > 0 both get the same
    keys, and the zero pattern (dropped or below the ReLU) is the same bit for bit."""
    torch.manual_seed(hash((shape, act)) % 2**31)
    b, c_in, c_out, k, length = shape
    x0 = torch.randn(b, c_in, length)
    w0 = torch.randn(c_out, c_in, k) / (c_in * k) ** 0.5
    b0 = torch.randn(c_out) * 0.1
    keys = dropout_keys(sum(shape), b) if p else None
    (x, w, bias), (xr, wr, br) = leaves(x0, w0, b0, dtype=dtype)
    y, sums = conv1d_act_dropout(x, w, bias, act=act, negative_slope=0.15, p=p, keys=keys,
                                 write_sums=True)
    yr = conv_act_dropout(xr, wr, br, act=act, negative_slope=0.15, p=p, keys=keys)
    assert y.dtype == dtype and y.shape == (b, c_out, length)
    tol = KERNEL_TOL[dtype]
    assert torch.equal(y == 0, yr == 0)
    if p and act == "leaky_relu":  # every zero is a dropped element: p of them
        assert 0.15 < (y == 0).float().mean().item() < 0.45
    assert rel_err(y, yr) < tol
    assert rel_err(sums, yr.sum(-1)) < tol
    # gradient through both outputs (y and the SE sums)
    gy0, gs0 = torch.randn_like(yr), torch.randn_like(sums)
    gy = gy0.to(dtype)
    got = grads((y, sums), [x, w, bias], (gy, gs0))
    want = grads((yr, yr.sum(-1)), [xr, wr, br], (gy.float(), gs0))
    for name, g, r in zip(("x", "weight", "bias"), got, want):
        assert g.dtype == dtype
        assert rel_err(g, r) < tol, name


def test_conv_without_bias_and_sums():
    torch.manual_seed(1)
    (x, w), (xr, wr) = leaves(torch.randn(2, 5, 40), torch.randn(7, 5, 4))
    y, sums = conv1d_act_dropout(x, w, None, act="none")
    assert sums is None
    yr = conv1d_same(xr, wr, None)
    assert rel_err(y, yr) < FP32_TOL
    g = torch.randn_like(yr)
    for a, r in zip(grads(y, [x, w], g), grads(yr, [xr, wr], g)):
        assert rel_err(a, r) < FP32_TOL


# ---------------------------------------------------------------- several leads: the dot path

@pytest.mark.parametrize("c_in", LEADS)
def test_first_layer_takes_the_dot_path(c_in):
    """The production first layer (32 filters, K = 32) with C leads is an implicit GEMM
    over R = 32 C, not the C_in = 1 FMA path."""
    assert conv_config(1, 32, 32)["DIRECT"]
    assert not conv_config(c_in, 32, 32)["DIRECT"]
    assert not conv_config(c_in, 32, 32, interpret=False)["DIRECT"]


def test_multilead_first_layer_conv_is_the_audited_c32_configuration():
    """kernels/aot.py compiles the conv at conv_config(32, 32, 32) ("c32"); with C leads the
    first conv gets the very same constexprs (K and R = C K are runtime arguments), so
    that audit covers it."""
    for ieee in (False, True):
        want = conv_config(32, 32, 32, ieee_fp32=ieee, interpret=False)
        for c_in in LEADS:
            assert conv_config(c_in, 32, 32, ieee_fp32=ieee, interpret=False) == want


@pytest.mark.parametrize("c_in", LEADS)
@pytest.mark.parametrize(("k", "length"), [(32, 77), (7, 130)], ids=["k32-L77", "k7-L130"])
def test_multilead_first_conv_matches_reference(c_in, k, length):
    torch.manual_seed(c_in * 100 + k)
    x0 = torch.randn(2, c_in, length)
    w0 = torch.randn(20, c_in, k) / (c_in * k) ** 0.5
    b0 = torch.randn(20) * 0.1
    (x, w, b), (xr, wr, br) = leaves(x0, w0, b0)
    y, sums = conv1d_act_dropout(x, w, b, act="leaky_relu", negative_slope=0.1,
                                 write_sums=True)
    yr = conv_act_dropout(xr, wr, br, act="leaky_relu", negative_slope=0.1)
    assert y.shape == (2, 20, length)
    assert rel_err(y, yr) < FP32_TOL
    assert rel_err(sums, yr.sum(-1)) < FP32_TOL
    gy, gs = torch.randn_like(yr), torch.randn_like(sums)
    got = grads((y, sums), [x, w, b], (gy, gs))
    want = grads((yr, yr.sum(-1)), [xr, wr, br], (gy, gs))
    for name, g, r in zip(("x", "weight", "bias"), got, want):
        assert rel_err(g, r) < FP32_TOL, name


# ---------------------------------------------------------------- the keyed mask

@triton.jit
def _mix32_kernel(X, Y, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(X + i, mask=i < n, other=0).to(tl.uint32, bitcast=True)
    tl.store(Y + i, mix32(v).to(tl.int32, bitcast=True), mask=i < n)


def test_in_kernel_mix32_is_the_reference_hash():
    """Every bit of the kernels' hash equals ecgfast.keyed.mix32, the sign bit included."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.tensor([0, 1, -1, 2**31 - 1, -2**31, 0x7FEB352D], dtype=torch.int32),
                   torch.randint(-2**31, 2**31 - 1, (3000,), generator=g, dtype=torch.int32)])
    x = x.to(DEVICE)
    y = torch.empty_like(x)
    _mix32_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    want = mix32_reference(x)
    assert (want != x).float().mean() > 0.99  # the hash is not the identity
    assert torch.equal(y, want)


def _dropout_case(p, keys, dtype=torch.float32, batch=3):
    torch.manual_seed(123)
    x = torch.randn(batch, 8, 333, device=DEVICE, dtype=dtype)
    w = (torch.randn(24, 8, 5, device=DEVICE) / 6).to(dtype)
    b = (torch.randn(24, device=DEVICE) * 0.1).to(dtype)
    y, _ = conv1d_act_dropout(x, w, b, act="leaky_relu", negative_slope=0.1, p=p, keys=keys)
    y0, _ = conv1d_act_dropout(x, w, b, act="leaky_relu", negative_slope=0.1)
    return x, w, b, y, y0


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_kept_elements_are_the_keyed_reference(dtype, p):
    keys = dropout_keys(2024, 3)
    _, _, _, y, y0 = _dropout_case(p, keys, dtype)
    assert (y0 != 0).all()  # leaky_relu: a zero in y is a dropped element
    kept = y != 0
    assert torch.equal(kept, dropout_keep(keys, (24, 333), p))
    n = kept.numel()
    frac = kept.float().mean().item()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(frac - (1 - p)) < 5 * sigma, (frac, sigma)
    # every kept element is exactly the no-dropout value / (1 - p), rounded once
    want = (y0.float()[kept] / (1 - p)).to(dtype).float()
    if dtype == torch.float32:
        torch.testing.assert_close(y[kept], want, rtol=2e-7, atol=0)
    else:  # y0 and y are each rounded from the fp32 accumulator: one extra rounding
        torch.testing.assert_close(y[kept].float(), want, rtol=2 ** -7, atol=0)
    # masks of different (sample, channel) rows are not copies of each other
    rows = kept.reshape(-1, kept.shape[-1])
    assert not (rows[1:] == rows[:1]).all(dim=1).any()


def test_keys_fix_the_mask():
    _, _, _, ya, _ = _dropout_case(0.3, dropout_keys(7, 3))
    _, _, _, yb, _ = _dropout_case(0.3, dropout_keys(7, 3))
    _, _, _, yc, _ = _dropout_case(0.3, dropout_keys(8, 3))
    assert torch.equal(ya, yb)
    assert not torch.equal(ya != 0, yc != 0)


def test_dropout_backward_uses_the_forward_mask():
    p, keys = 0.25, dropout_keys(99, 3)
    x, w, b, _, _ = _dropout_case(p, keys)
    mask = dropout_keep(keys, (24, 333), p).float()
    (x, w, b), (xr, wr, br) = leaves(x, w, b)
    y, sums = conv1d_act_dropout(x, w, b, act="leaky_relu", negative_slope=0.1, p=p, keys=keys,
                                 write_sums=True)
    z = conv1d_same(xr, wr, br)
    yr = torch.nn.functional.leaky_relu(z, 0.1) * mask / (1 - p)
    assert rel_err(y, yr) < FP32_TOL
    assert rel_err(sums, yr.sum(-1)) < FP32_TOL
    g, gs = torch.randn_like(yr), torch.randn_like(sums)
    got = grads((y, sums), [x, w, b], (g, gs))
    want = grads((yr, yr.sum(-1)), [xr, wr, br], (g, gs))
    for name, a, r in zip(("x", "weight", "bias"), got, want):
        assert rel_err(a, r) < FP32_TOL, name


def test_conv_sample_does_not_depend_on_its_batch():
    """Samples 1..3 of a batch of 5, alone (a chunk) or with other neighbours: the same
    output bit for bit, and the same input gradient (the backward finds each element's
    key from its own flat index)."""
    p, keys = 0.4, dropout_keys(31, 5)
    x, w, b, y, _ = _dropout_case(p, keys, batch=5)
    others = x.clone()
    others[0], others[4] = torch.randn_like(x[0]), torch.randn_like(x[4])
    other_keys = keys.clone()
    other_keys[0], other_keys[4] = keys[0] + 1, keys[4] - 1
    for xs, ks, rows in ((x[1:4], keys[1:4], slice(None)), (others, other_keys, slice(1, 4))):
        ys, _ = conv1d_act_dropout(xs, w, b, act="leaky_relu", negative_slope=0.1, p=p, keys=ks)
        assert torch.equal(ys[rows], y[1:4])
    g = torch.randn_like(y)
    xf = x.detach().clone().requires_grad_()
    (conv1d_act_dropout(xf, w, b, act="leaky_relu", negative_slope=0.1, p=p, keys=keys)[0]
     * g).sum().backward()
    xc = x[1:4].detach().clone().requires_grad_()
    (conv1d_act_dropout(xc, w, b, act="leaky_relu", negative_slope=0.1, p=p, keys=keys[1:4])[0]
     * g[1:4]).sum().backward()
    assert rel_err(xc.grad, xf.grad[1:4]) < FP32_TOL
