"""CUDA-only kernel tests: the production launch configurations (no test-tile override) at
GPU sizes, and TF32 with tolerances derived from TF32 rounding. Skipped without a GPU; the
interpreter tests elsewhere cover the same code paths at small sizes.

TF32 keeps 10 of fp32's 23 mantissa bits; rounding an operand to it (to nearest) has unit
roundoff ``u = 2^-11``, so each product of two rounded operands is off by at most
``2u |a| |b|`` (fp32 accumulation adds far less). The bounds below follow from that:

- NT-Xent loss: ``|delta s_ij| <= 2u r_i r_j |x_i . x_j|_abs / tau <= 2u / tau``; the loss is
  a mean of ``lse_i - s_i,pos``, each moving by at most ``2 max |delta s|``: ``4u / tau``.
- NT-Xent gradients: ``P_ij`` moves by a relative ``4u / tau`` at most (``s`` and ``lse``
  each by ``2u / tau``), the second dot rounds ``P`` and ``z`` (``2u``); the weights of a row
  sum to about 4 (its probabilities, its column's, twice the positive), so an entry moves by
  at most ``4 (4u / tau + 2u)`` of the natural gradient size
  (tests/nt_xent_helpers.py::gradient_scale).
- Conv1d forward: ``|delta y| <= 2u conv(|x|, |W|)`` element-wise, through ReLU unchanged
  (it is 1-Lipschitz), so ``||delta y|| <= 2u ||conv(|x|, |W|)||``.
"""

from __future__ import annotations

import pytest
import torch
from nt_xent_helpers import assert_matches, gradient_scale, reference_and_grads, run_backend

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CUDA-only: production tiles and TF32 need a GPU")

TF32_U = 2.0**-11
TAU = 0.5


def _views(two_n, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(two_n, d, generator=g, dtype=torch.float64).to(dtype)
    return z[: two_n // 2].cuda(), z[two_n // 2:].cuda()


def _check_nt_xent(two_n, d, dtype, precision, loss_tol, grad_tol):
    from ecgfast.losses import nt_xent

    z1, z2 = _views(two_n, d, dtype, seed=two_n * 1000 + d)
    upstream = 0.75
    # float64 reference of the same rounded inputs, on the GPU (seconds per case on a CPU)
    ref = reference_and_grads(z1, z2, TAU, upstream)
    torch.backends.cuda.matmul.fp32_precision = precision  # the kernels follow it
    got = run_backend(lambda a, b, t: nt_xent(a, b, t, backend="triton"), z1, z2, TAU, upstream)
    assert_matches(got, ref, loss_tol, grad_tol,
                   f"production tiles 2N={two_n} D={d} {dtype} {precision}",
                   gradient_scale(z1, z2, TAU, upstream))


@pytest.mark.parametrize("d", [128, 200])
@pytest.mark.parametrize("two_n", [8190, 16384])
def test_nt_xent_production_tiles_bf16(two_n, d):
    """bf16 inputs: exact products in the first dot (loss 1e-5), bf16 P and z in the
    second (gradients 2e-2, as the interpreter tests)."""
    _check_nt_xent(two_n, d, torch.bfloat16, "ieee", 1e-5, 2e-2)


@pytest.mark.parametrize("d", [128, 200])
@pytest.mark.parametrize("two_n", [8190, 16384])
def test_nt_xent_production_tiles_tf32(two_n, d):
    loss_tol = 4 * TF32_U / TAU + 1e-5
    grad_tol = 4 * (4 * TF32_U / TAU + 2 * TF32_U)
    _check_nt_xent(two_n, d, torch.float32, "tf32", loss_tol, grad_tol)


@pytest.mark.parametrize("two_n", [8190, 16384])
def test_nt_xent_production_tiles_fp32_ieee(two_n):
    """TF32 off: fp32 all through, the interpreter tests' 1e-5."""
    _check_nt_xent(two_n, 128, torch.float32, "ieee", 1e-5, 1e-5)


@pytest.mark.parametrize("c_in,c_out,k,length", [(1, 32, 32, 2560), (32, 64, 16, 1277)])
def test_conv_tf32_within_the_rounding_bound(c_in, c_out, k, length):
    from encoder_block_helpers import conv1d_act_dropout

    from ecgfast.ops.encoder_block import conv1d_same

    g = torch.Generator().manual_seed(c_in + k)
    x = torch.randn(8, c_in, length, generator=g).cuda()
    w = torch.randn(c_out, c_in, k, generator=g).cuda() / (c_in * k) ** 0.5
    b = torch.randn(c_out, generator=g).cuda()
    conv = torch.backends.cudnn.conv
    saved = conv.fp32_precision
    conv.fp32_precision = "tf32"  # the kernels follow PyTorch's conv setting
    try:
        y, _ = conv1d_act_dropout(x, w, b, act="relu")
    finally:
        conv.fp32_precision = saved
    xd, wd = x.double().cpu(), w.double().cpu()
    want = torch.relu(conv1d_same(xd, wd, b.double().cpu()))
    bound = 2 * TF32_U * torch.linalg.vector_norm(conv1d_same(xd.abs(), wd.abs(), None))
    err = torch.linalg.vector_norm(y.double().cpu() - want)
    assert err <= bound, f"TF32 conv error {err:.3e} over its rounding bound {bound:.3e}"


@pytest.mark.parametrize("c_in,c_out,k,length", [(1, 32, 32, 2560), (32, 64, 16, 1277),
                                                 (64, 128, 8, 635)])
def test_conv_keyed_dropout_at_production_tiles(c_in, c_out, k, length):
    """The GPU's keyed mask at the production tiles (the interpreter tests use others) is
    ``ecgfast.keyed.dropout_keep`` bit for bit (leaky_relu: a zero is a dropped element),
    and the backward applies the same mask (the bias gradient sums gy act' keep / (1 - p))."""
    from encoder_block_helpers import conv1d_act_dropout

    from ecgfast.keyed import KeyedRandom, dropout_keep

    g = torch.Generator().manual_seed(c_out)
    x = torch.randn(8, c_in, length, generator=g).cuda()
    w = (torch.randn(c_out, c_in, k, generator=g) / (c_in * k) ** 0.5).cuda()
    keys = KeyedRandom.for_batch(c_out, 8, "cuda").dropout_keys(1, "cuda")[0]
    p = 0.3
    want = dropout_keep(keys, (c_out, length), p)
    y, _ = conv1d_act_dropout(x, w, None, act="leaky_relu", negative_slope=0.1, p=p, keys=keys)
    assert torch.equal(y != 0, want)
    # backward: d(sum y)/d(pre-activation) is 0 exactly where dropped; read it off the bias
    b = torch.zeros(c_out, device="cuda", requires_grad=True)
    yb, _ = conv1d_act_dropout(x, w, b, act="leaky_relu", negative_slope=0.1, p=p, keys=keys)
    gy = torch.randn_like(yb)
    yb.backward(gy)
    y0, _ = conv1d_act_dropout(x, w, None, act="leaky_relu", negative_slope=0.1)
    slope = torch.where(y0 > 0, 1.0, 0.1)
    expect = (gy * slope * want / (1 - p)).sum(dim=(0, 2))
    torch.testing.assert_close(b.grad, expect, rtol=1e-4, atol=1e-4)


def test_nt_xent_launches_on_the_tensors_device():
    """A tensor on a device other than the current one is computed there."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    from ecgfast.losses import nt_xent

    z1, z2 = (t.to("cuda:1") for t in _views(64, 32, torch.float32, 1))
    torch.cuda.set_device(0)
    loss = nt_xent(z1, z2, TAU, backend="triton")
    ref = reference_and_grads(z1.cpu(), z2.cpu(), TAU, 1.0)[0]
    assert loss.device == z1.device and abs(loss.item() - ref.item()) < 1e-4
