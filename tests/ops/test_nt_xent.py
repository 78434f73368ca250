"""NT-Xent: the reference, the public API (ecgfast.losses) and what every backend shares.

The reference is checked against a loop over rows written from the formula and against
pytorch-metric-learning's NTXentLoss; the API's checks, "auto" and the meta device for the
plain-PyTorch backends. Each backend has its own file: the streaming one
tests/ops/test_nt_xent_streaming.py, the Triton kernels tests/kernels/test_nt_xent_triton.py,
the distributed loss tests/ops/test_nt_xent_distributed.py (helpers:
tests/nt_xent_helpers.py).
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch
from nt_xent_helpers import make_views, one_thread  # noqa: F401 - an autouse fixture

from ecgfast import dispatch
from ecgfast.losses import NTXentLoss, nt_xent
from ecgfast.ops import nt_xent_reference

# ----------------------------------------------------------------------------- small cases


def _hand_nt_xent(z1, z2, tau):
    """Loop over rows; nothing shared with the implementation but the formula."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        denom = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / tau) / denom)
    return total / n2


def test_nt_xent_small_case_by_hand():
    # 2 pairs in 2-D, cosines easy to check: z1 = [e1, e2], z2 = [e1, -e2]
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[3.0, 0.0], [0.0, -1.0]])
    tau = 0.5
    # row e1 (i=0): others e2 (cos 0), e1 (pos, cos 1), -e2 (cos 0)
    # loss_0 = log(e^0 + e^2 + e^0) - 2; the same for every row by symmetry, except
    # row e2 (i=1): others e1 (0), e1 (0), -e2 (pos, cos -1) -> log(1 + 1 + e^-2) + 2
    l_a = math.log(2 + math.exp(2)) - 2
    l_b = math.log(2 + math.exp(-2)) + 2
    expected = (2 * l_a + 2 * l_b) / 4
    assert nt_xent(z1, z2, tau).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(_hand_nt_xent(z1, z2, tau), rel=1e-9)


@pytest.mark.parametrize("n,d,tau", [(1, 3, 0.5), (5, 8, 0.1), (13, 3, 0.07)])
def test_nt_xent_matches_loop(n, d, tau):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(_hand_nt_xent(z1, z2, tau), rel=1e-5)


def test_nt_xent_single_pair_is_zero_and_scale_invariant():
    z1, z2 = torch.randn(1, 4), torch.randn(1, 4)
    assert nt_xent(z1, z2).item() == pytest.approx(0.0, abs=1e-6)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    assert nt_xent(a, b).item() == pytest.approx(nt_xent(3 * a, 0.2 * b).item(), rel=1e-5)


def test_nt_xent_module_and_grad():
    z1 = torch.randn(4, 8, requires_grad=True)
    z2 = torch.randn(4, 8, requires_grad=True)
    loss = NTXentLoss(0.2)(z1, z2)
    loss.backward()
    assert loss.dtype == torch.float32
    assert z1.grad is not None and torch.isfinite(z1.grad).all()


def test_nt_xent_half_inputs_give_fp32():
    z = torch.randn(4, 8)
    assert nt_xent(z.half(), z.flip(0).half()).dtype == torch.float32


@pytest.mark.parametrize(
    "z1,z2,tau,exc,match",
    [
        (torch.randn(4, 8), torch.randn(5, 8), 0.5, ValueError, "same shape"),
        (torch.randn(4), torch.randn(4), 0.5, ValueError, "z1 must be"),
        (torch.randn(4, 8), torch.randn(4, 8), 0.0, ValueError, "temperature"),
        (torch.randn(4, 8), torch.randn(4, 8), -1.0, ValueError, "temperature"),
        (torch.full((4, 8), float("nan")), torch.randn(4, 8), 0.5, ValueError, "z1 contains NaN"),
        (torch.ones(4, 8, dtype=torch.int32), torch.ones(4, 8, dtype=torch.int32), 0.5, TypeError, "floating"),
    ],
)
def test_nt_xent_bad_input(z1, z2, tau, exc, match):
    # check_finite=True for the NaN case: values are checked only when asked
    with pytest.raises(exc, match=match):
        nt_xent(z1, z2, tau, check_finite=True)


def test_nt_xent_unavailable_backend_is_named():
    with pytest.raises(ValueError, match="backend"):
        nt_xent(torch.randn(2, 3), torch.randn(2, 3), backend="nope")


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("backend", ["eager", "streaming"])
def test_no_inf_or_nan_at_small_tau_fp16_and_identical_rows(backend):
    # fp16 inputs at tau = 0.01: logits up to 100, exp would overflow fp16 and fp32.
    z1 = torch.randn(33, 24).half().requires_grad_()
    z2 = torch.randn(33, 24).half().requires_grad_()
    loss = nt_xent(z1, z2, 0.01, backend=backend)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    # Every row identical: all logits equal 1/tau, loss = log(2N - 1) exactly.
    row = torch.randn(1, 16)
    for dtype in (torch.float16, torch.float32):
        z = row.expand(20, 16).to(dtype).clone().requires_grad_()
        loss = nt_xent(z, z.detach().clone(), 0.01, backend=backend)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
        assert loss.item() == pytest.approx(math.log(2 * 20 - 1), rel=1e-5)


def test_zero_rows_do_not_produce_nan():
    z1 = torch.zeros(4, 8, requires_grad=True)
    z2 = torch.randn(4, 8, requires_grad=True)
    for backend in ("eager", "streaming"):
        loss = nt_xent(z1, z2, 0.5, backend=backend)
        (g1, g2) = torch.autograd.grad(loss, (z1, z2))
        assert torch.isfinite(loss) and torch.isfinite(g1).all() and torch.isfinite(g2).all()


# ----------------------------------------------------------------------------- API


def test_pytorch_metric_learning_peer():
    """Independent implementation: pytorch-metric-learning's NTXentLoss, one positive each."""
    pml = pytest.importorskip("pytorch_metric_learning.losses", reason="pip install pytorch-metric-learning")
    for n, d, tau in ((2, 3, 0.5), (7, 24, 0.07), (64, 128, 0.01), (150, 200, 0.3)):
        z1 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
        z2 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
        labels = torch.arange(n).repeat(2)
        peer = pml.NTXentLoss(temperature=tau)(torch.cat([z1, z2]), labels)
        pg = torch.autograd.grad(peer, (z1, z2))
        for backend in ("eager", "streaming"):
            ours = nt_xent(z1, z2, tau, backend=backend)
            og = torch.autograd.grad(ours, (z1, z2))
            torch.testing.assert_close(ours, peer, rtol=1e-10, atol=1e-12)
            for a, b in zip(og, pg):
                torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_module_matches_function_and_repr():
    z1, z2 = torch.randn(5, 6), torch.randn(5, 6)
    for backend in ("auto", "eager", "streaming"):
        m = NTXentLoss(0.2, backend=backend)
        assert "gather_distributed=False" in repr(m)
        torch.testing.assert_close(m(z1, z2), nt_xent(z1, z2, 0.2, backend="eager"))


def test_auto_resolution(monkeypatch):
    small = torch.randn(2047, 4)
    big = torch.randn(2048, 4)
    def resolve(backend, z):
        return dispatch.resolve("nt_xent", backend, z, z, 0.5, None)

    assert resolve("auto", small) == "eager"
    assert resolve("auto", big) == "streaming"
    assert resolve("streaming", small) == "streaming"


def test_errors_name_the_argument(monkeypatch):
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="z1 and z2 must have the same shape"):
        nt_xent(z, torch.randn(5, 8))
    with pytest.raises(ValueError, match="z1 must be"):
        nt_xent(torch.randn(4), z)
    # Values are checked only when asked (check_finite=True): the check reads them back to
    # the host, a device synchronisation per call.
    bad = z.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="z2 contains NaN or Inf"):
        nt_xent(z, bad, backend="streaming", check_finite=True)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="z1 contains NaN or Inf"):
        nt_xent(bad, z, check_finite=True)
    for tau in (0.0, -0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            nt_xent(z, z, tau)
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="backend must be one of"):
        nt_xent(z, z, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        NTXentLoss(backend="fast")
    # triton on CPU tensors without the interpreter: refused, naming the device.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' cannot run nt_xent: it needs CUDA tensors, got cpu"):
        nt_xent(z, z, backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="backend='triton' cannot run nt_xent: it takes float32, bfloat16 or float16 inputs"):
        nt_xent(z.double(), z.double(), backend="triton")


def test_gather_distributed_is_a_no_op_without_a_process_group():
    z1 = torch.randn(6, 5, requires_grad=True)
    z2 = torch.randn(6, 5, requires_grad=True)
    a = nt_xent(z1, z2, 0.3, gather_distributed=True)
    b = NTXentLoss(0.3, gather_distributed=True)(z1, z2)
    torch.testing.assert_close(a, nt_xent_reference(z1, z2, 0.3))
    torch.testing.assert_close(b, a)


@pytest.mark.parametrize("n,cuts", [(1, (1,)), (7, (3, 4, 7)), (10, (1, 9, 10))])
def test_rows_reference_of_a_partition_sums_to_the_reference(n, cuts):
    """Each rank's share (its anchor rows in both views, against all 2N columns) adds up to
    2N times the loss, and its gradient is the rows' share of the gradient."""
    from ecgfast.ops import nt_xent_rows_reference

    seed = zlib.crc32(repr((n, cuts)).encode())
    z1, z2 = make_views(n, 24, torch.float64, "contiguous", seed)
    z1.requires_grad_()
    z2.requires_grad_()
    full = nt_xent_reference(z1, z2, 0.2)
    full_grads = torch.autograd.grad(full, (z1, z2))
    shares, grads, start = [], [], 0
    for stop in cuts:
        part = nt_xent_rows_reference(z1, z2, 0.2, start, stop - start)
        shares.append(part)
        grads.append(torch.autograd.grad(part / (2 * n), (z1, z2)))
        start = stop
    torch.testing.assert_close(sum(shares) / (2 * n), full, rtol=1e-12, atol=1e-12)
    for i in range(2):
        torch.testing.assert_close(sum(g[i] for g in grads), full_grads[i], rtol=1e-10,
                                   atol=1e-12)
    if len(cuts) > 1:  # a share alone is not the whole loss
        assert abs(shares[0].item() / (2 * n) - full.item()) > 1e-3


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("backend,n", [("eager", 5), ("streaming", 5), ("auto", 5),
                                       ("auto", 2048)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_meta_tensors_run_forward_and_backward(backend, n, dtype):
    """Every backend that accepts "meta" tensors runs on them: nothing on the default path
    reads a value back (a sync or a data-dependent shape would raise here). "auto" picks
    eager at 2N = 10 and streaming at 2N = 4096."""
    z1 = torch.empty(n, 24, device="meta", dtype=dtype, requires_grad=True)
    z2 = torch.empty(n, 24, device="meta", dtype=dtype, requires_grad=True)
    for loss_fn in (lambda a, b: nt_xent(a, b, 0.1, backend=backend),
                    NTXentLoss(0.1, backend=backend, gather_distributed=True)):
        loss = loss_fn(z1, z2)
        assert loss.device.type == "meta" and loss.shape == () and loss.dtype == torch.float32
        g1, g2 = torch.autograd.grad(loss, (z1, z2))
        assert g1.device.type == "meta" and g1.shape == z1.shape and g1.dtype == dtype
        assert g2.device.type == "meta" and g2.shape == z2.shape
    assert dispatch.resolve("nt_xent", "auto", z1, z2, 0.1, None) == (
        "eager" if n == 5 else "streaming")


@pytest.mark.parametrize("interpret", ["0", "1"])
def test_triton_refuses_meta_tensors_with_the_reason(monkeypatch, interpret):
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    z = torch.empty(4, 8, device="meta")
    with pytest.raises(ValueError, match="backend='triton' cannot run nt_xent: it needs CUDA "
                                         "tensors, got meta"):
        nt_xent(z, z, backend="triton")


def test_every_backend_declares_its_devices_and_dtypes():
    floats = {torch.float32, torch.float64, torch.bfloat16, torch.float16}
    for name in ("eager", "streaming"):
        caps = dispatch.load("nt_xent", name).capabilities
        assert caps.devices is None and set(caps.dtypes) == floats and not caps.triton
        assert caps.reasons(torch.empty(2, 2, device="meta")) == []
    pytest.importorskip("triton")
    caps = dispatch.load("nt_xent", "triton").capabilities
    assert caps.triton and set(caps.dtypes) == floats - {torch.float64}


def test_values_are_checked_only_when_asked():
    """Default: no finiteness check (no host sync); a NaN input gives a NaN loss."""
    z = torch.randn(4, 8)
    bad = z.clone()
    bad[0, 0] = float("nan")
    for backend in ("eager", "streaming"):
        assert torch.isnan(nt_xent(z, bad, backend=backend))
        assert torch.isnan(NTXentLoss(backend=backend)(bad, z))
    checked = NTXentLoss(0.3, check_finite=True)
    assert "check_finite=True" in repr(checked)
    with pytest.raises(ValueError, match="z1 contains NaN or Inf"):
        checked(bad, z)
    torch.testing.assert_close(checked(z, z.flip(0)), nt_xent(z, z.flip(0), 0.3))


def test_module_checks_its_settings_once_and_its_tensors_per_call(monkeypatch):
    from ecgfast import losses

    calls = {"temperature": 0, "embeddings": 0}
    for key, name in (("temperature", "_check_temperature"), ("embeddings", "_check_embeddings")):
        real = getattr(losses, name)

        def counted(*args, _real=real, _key=key):
            calls[_key] += 1
            return _real(*args)

        monkeypatch.setattr(losses, name, counted)
    loss = losses.NTXentLoss(0.2)
    z1, z2 = torch.randn(5, 6), torch.randn(5, 6)
    for _ in range(3):
        loss(z1, z2)
    assert calls == {"temperature": 1, "embeddings": 3}
    losses.nt_xent(z1, z2, 0.2)
    assert calls == {"temperature": 2, "embeddings": 4}
