"""NT-Xent reference and the SSL-ECG pretext loss."""

import math

import pytest
import torch

from ecgfast.losses import (
    SSL_ECG_TASK_WEIGHTS,
    NTXentLoss,
    nt_xent,
    transformation_recognition_loss,
)


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
    with pytest.raises(exc, match=match):
        nt_xent(z1, z2, tau)


def test_nt_xent_unavailable_backend_is_named():
    with pytest.raises(ValueError, match="backend"):
        nt_xent(torch.randn(2, 3), torch.randn(2, 3), backend="nope")


def test_transformation_loss_weights_and_value():
    logits = torch.randn(14, 7)
    labels = torch.arange(7).repeat(2)
    loss = transformation_recognition_loss(logits, labels)
    manual = 0.0
    for k, w in enumerate(SSL_ECG_TASK_WEIGHTS):
        target = (labels == k).float()
        manual += w * torch.nn.functional.binary_cross_entropy_with_logits(logits[:, k], target)
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    assert SSL_ECG_TASK_WEIGHTS == (0.195, 0.195, 0.195, 0.0125, 0.0125, 0.195, 0.195)


def test_transformation_loss_bad_input():
    with pytest.raises(ValueError, match="weights"):
        transformation_recognition_loss(torch.randn(4, 6), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        transformation_recognition_loss(torch.randn(4, 7), torch.zeros(5, dtype=torch.long))
