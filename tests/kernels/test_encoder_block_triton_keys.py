"""Keyed dropout in the Triton conv kernels (ecgfast/keyed.py, issue 14).

The mask is a pure function of per-sample keys: element (c, t) of sample b is kept iff
``mix32(mix32(c * L + t) ^ keys[b]) >> 8 >= keep_threshold(p)``. So, beyond the value
comparisons of test_encoder_block_triton.py (same keys, same results as the reference),
the mask is checked exactly: the in-kernel hash against :func:`ecgfast.keyed.mix32`, the
conv's kept elements against :func:`ecgfast.keyed.dropout_keep`, the backward against
the forward's mask, a sample's output against the same sample in another batch (a chunk,
another neighbour), and keys that the kernels cannot read are refused by name.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # conftest.py does this too; harmless when already set
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")
import triton.language as tl
from test_encoder_block_triton import DEVICE, FP32_TOL, SMALL, _grads, _leaves, _run, rel_err

from ecgfast import dispatch
from ecgfast.kernels._common import mix32
from ecgfast.kernels.encoder_block_conv1d import conv1d_act_dropout
from ecgfast.keyed import KeyedRandom, dropout_keep
from ecgfast.keyed import mix32 as mix32_reference
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.ops.encoder_block import BlockSpec, conv1d_same, random_block_params


def _keys(seed: int, n: int, layers: int = 1) -> torch.Tensor:
    keys = KeyedRandom.for_batch(seed, n, DEVICE).dropout_keys(layers, DEVICE)
    return keys[0] if layers == 1 else keys


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


# ---------------------------------------------------------------- the conv's mask

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
    keys = _keys(2024, 3)
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


def test_keys_fix_the_mask_and_none_draws_them_from_torch():
    _, _, _, ya, _ = _dropout_case(0.3, _keys(7, 3))
    _, _, _, yb, _ = _dropout_case(0.3, _keys(7, 3))
    _, _, _, yc, _ = _dropout_case(0.3, _keys(8, 3))
    assert torch.equal(ya, yb)
    assert not torch.equal(ya != 0, yc != 0)
    # keys=None draws KeyedRandom.from_default_generator(B) keys: manual_seed reproduces them
    x = torch.randn(2, 4, 100, device=DEVICE)
    w = torch.randn(6, 4, 3, device=DEVICE)
    torch.manual_seed(5)
    y1, _ = conv1d_act_dropout(x, w, None, act="leaky_relu", p=0.5)
    torch.manual_seed(5)
    drawn = KeyedRandom.from_default_generator(2).dropout_keys(1, DEVICE)[0]
    torch.manual_seed(5)
    y2, _ = conv1d_act_dropout(x, w, None, act="leaky_relu", p=0.5)
    y3, _ = conv1d_act_dropout(x, w, None, act="leaky_relu", p=0.5)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    assert torch.equal(y1 != 0, dropout_keep(drawn, (6, 100), 0.5))


def test_dropout_backward_uses_the_forward_mask():
    p, keys = 0.25, _keys(99, 3)
    x, w, b, _, _ = _dropout_case(p, keys)
    mask = dropout_keep(keys, (24, 333), p).float()
    (x, w, b), (xr, wr, br) = _leaves(x, w, b, dtype=torch.float32)
    y, sums = conv1d_act_dropout(x, w, b, act="leaky_relu", negative_slope=0.1, p=p, keys=keys,
                                 write_sums=True)
    z = conv1d_same(xr, wr, br)
    yr = torch.nn.functional.leaky_relu(z, 0.1) * mask / (1 - p)
    assert rel_err(y, yr) < FP32_TOL
    assert rel_err(sums, yr.sum(-1)) < FP32_TOL
    g, gs = torch.randn_like(yr), torch.randn_like(sums)
    got = _grads((y, sums), [x, w, b], (g, gs))
    want = _grads((yr, yr.sum(-1)), [xr, wr, br], (g, gs))
    for name, a, r in zip(("x", "weight", "bias"), got, want):
        assert rel_err(a, r) < FP32_TOL, name


# ---------------------------------------------------------------- chunk independence

def test_conv_sample_does_not_depend_on_its_batch():
    """Samples 1..3 of a batch of 5, alone (a chunk) or with other neighbours: the same
    output bit for bit, and the same input gradient (the backward finds each element's
    key from its own flat index)."""
    p, keys = 0.4, _keys(31, 5)
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


def test_block_sample_does_not_depend_on_its_batch():
    """The Triton block op on a chunk of the batch with its columns of the (2, B) keys gives
    the chunk's rows of the whole batch's output and input gradient."""
    spec = BlockSpec.build(3, 12, 5, residual=True, attention=True, se_reduction=4,
                           dropout=0.3, pool_size=5)
    params = random_block_params(spec, generator=torch.Generator().manual_seed(1), device=DEVICE)
    x = torch.randn(4, 3, 90, device=DEVICE)
    keys = _keys(5, 4, layers=2)
    g = torch.randn(4, 12, spec.out_length(90), device=DEVICE)
    out = {}
    for name, rows in (("whole", slice(None)), ("chunk", slice(1, 3))):
        xi = x[rows].clone().requires_grad_()
        y = dispatch.encoder_block(xi, params, spec, keys[:, rows].clone(), "triton")
        y.backward(g[rows])
        out[name] = y.detach(), xi.grad
    y_plain = dispatch.encoder_block(x, params, spec, None, "triton")
    assert rel_err(out["whole"][0], y_plain) > 0.05  # the keys did drop something
    assert rel_err(out["chunk"][0], out["whole"][0][1:3]) < FP32_TOL
    assert rel_err(out["chunk"][1], out["whole"][1][1:3]) < FP32_TOL


def test_encoder_dropout_is_reproducible_and_eval_has_none():
    """p = 0.1 in training: a seed reproduces the output and gradients, another changes
    them; eval mode has no dropout and matches eager (training against eager with the same
    keys: test_encoder_block_triton.py::test_encoder_matches_eager)."""
    config = EncoderConfig(residual="all", attention=True, dropout=0.1, **SMALL)
    torch.manual_seed(0)
    model = ECGEncoder(config.replace(backend="triton")).to(DEVICE)
    x = torch.randn(2, 1, 200, device=DEVICE)
    g = torch.ones(2, 36, device=DEVICE)
    torch.manual_seed(11)
    ya, ga = _run(model, x, g)
    model.zero_grad()
    torch.manual_seed(11)
    yb, gb = _run(model, x, g)
    assert torch.equal(ya, yb) and all(torch.equal(ga[k], gb[k]) for k in ga)
    with torch.no_grad():
        torch.manual_seed(12)
        assert not torch.equal(model(x), ya)
        model.eval()
        eager = ECGEncoder(config.replace(backend="eager")).to(DEVICE).eval()
        eager.load_state_dict(model.state_dict())
        assert rel_err(model(x), eager(x)) < FP32_TOL * 10


# ---------------------------------------------------------------- bad keys

def test_bad_keys_are_refused_by_name():
    x = torch.randn(3, 4, 50, device=DEVICE)
    w = torch.randn(6, 4, 3, device=DEVICE)
    keys = _keys(1, 3)
    bad = {"int64": keys.long(), "one short": keys[:2], "(2, B)": _keys(1, 3, layers=2),
           "meta device": keys.to("meta"), "a list": keys.tolist()}
    for k in bad.values():
        for p in (0.5, 0.0):  # given keys are checked even when nothing is dropped
            with pytest.raises(ValueError, match=r"keys must be an int32 \(3,\) tensor"):
                conv1d_act_dropout(x, w, None, p=p, keys=k)
    spec = BlockSpec(4, 6, 3, dropout=0.2, pool_size=5)
    params = random_block_params(spec, device=DEVICE)
    keys2 = _keys(1, 3, layers=2)
    for k in {"int64": keys2.long(), "(2, B + 1)": _keys(1, 4, layers=2),
                    "(B,)": keys, "meta device": keys2.to("meta")}.values():
        with pytest.raises(ValueError, match=r"dropout_keys must be None or an int32 \(2, 3\)"):
            dispatch.encoder_block(x, params, spec, k, "triton")
