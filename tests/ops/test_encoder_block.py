"""The reference block maths: the CPU conv backward against aten's, and the pieces."""

import pytest
import torch
import torch.nn.functional as F

from ecgfast.ops.encoder import conv1d_same, se_residual_pool


@pytest.mark.parametrize("b,cin,cout,k,length", [
    (1, 1, 32, 32, 2560), (3, 1, 5, 7, 40), (2, 32, 64, 16, 77), (5, 3, 2, 1, 9),
    (2, 4, 3, 8, 8), (1, 6, 6, 5, 3),
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv1d_same_matches_aten_forward_and_backward(b, cin, cout, k, length, dtype):
    g = torch.Generator().manual_seed(b * 1000 + k)
    x = torch.randn(b, cin, length, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(cout, cin, k, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(cout, generator=g, dtype=dtype, requires_grad=True)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, bias))

    y = conv1d_same(x, w, bias)
    y_ref = F.conv1d(x2, w2, b2, padding="same") if k > 1 else F.conv1d(x2, w2, b2)
    assert y.shape == (b, cout, length)
    grad = torch.randn(y.shape, generator=g, dtype=dtype)
    y.backward(grad)
    y_ref.backward(grad)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(y, y_ref, **tol)
    for mine, ref in ((x.grad, x2.grad), (w.grad, w2.grad), (bias.grad, b2.grad)):
        torch.testing.assert_close(mine, ref, **tol)


def test_conv1d_same_without_input_grad_and_without_bias():
    x = torch.randn(2, 3, 50, dtype=torch.float64)
    w = torch.randn(4, 3, 6, dtype=torch.float64, requires_grad=True)
    conv1d_same(x, w, None).square().sum().backward()
    w2 = w.detach().clone().requires_grad_()
    F.conv1d(x, w2, None, padding="same").square().sum().backward()
    torch.testing.assert_close(w.grad, w2.grad)
    assert x.grad is None


def test_se_residual_pool_pieces():
    f = torch.randn(2, 4, 30)
    a = torch.rand(2, 4)
    x = torch.randn(2, 3, 30)
    w = torch.randn(4, 3, 1)
    bias = torch.randn(4)
    expected = F.max_pool1d(f * a[..., None] + F.conv1d(x, w, bias), 8, 2)
    torch.testing.assert_close(se_residual_pool(f, a, x, w, bias, pool_size=8, pool_stride=2), expected)
    torch.testing.assert_close(
        se_residual_pool(f, None, None, None, None, pool_size=None, pool_stride=2), f.amax(-1)
    )
    same = torch.randn(2, 4, 30)
    torch.testing.assert_close(
        se_residual_pool(f, a, same, None, None, pool_size=None, pool_stride=2),
        (f * a[..., None] + same).amax(-1),
    )
