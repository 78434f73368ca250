"""What the NT-Xent tests share: input grids, the float64 reference with its gradients, a
backend run with the same strides, and the tolerance check.

Imported by the NT-Xent tests (tests/ops/test_nt_xent*.py, tests/kernels/test_nt_xent_triton.py,
tests/kernels/test_cuda_kernels.py) as a plain module
(``tests`` is on pytest's ``pythonpath``, see pyproject.toml). ``one_thread`` is an autouse
fixture: importing it into a test module applies it there.
"""

from __future__ import annotations

import pytest
import torch
from accuracy import nt_xent_float64  # benchmarks/accuracy.py, on pytest's pythonpath


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Hundreds of small matmuls: one intra-op thread is faster on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


DS = (1, 16, 24, 128, 200)
TAUS = (0.01, 0.07, 0.5)
LAYOUTS = ("contiguous", "strided", "transposed")


def make_views(n, d, dtype, layout, seed, scale=1.0):
    """Two (n, d) views in ``dtype`` with the requested memory layout (fresh random values)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    def one():
        if layout == "contiguous":
            return rand(n, d)
        if layout == "strided":  # every other row and column of a bigger tensor
            return rand(2 * n, 2 * d + 1)[::2, 1::2]
        if layout == "transposed":
            return rand(d, n).T
        raise ValueError(layout)  # pragma: no cover

    z1, z2 = one(), one()
    if layout != "contiguous" and n > 1 and d > 1:
        assert not z1.is_contiguous()
    return z1, z2


def reference_and_grads(z1, z2, tau, upstream):
    """The float64 reference's loss and ``upstream`` times its gradients (chunked by anchor
    rows for large 2N: one chunk for the small cases)."""
    return nt_xent_float64(z1, z2, tau, upstream)


def run_backend(fn, z1, z2, tau, upstream):
    a = z1.detach().clone().requires_grad_() if z1.is_contiguous() else _same_strides(z1)
    b = z2.detach().clone().requires_grad_() if z2.is_contiguous() else _same_strides(z2)
    loss = fn(a, b, tau)
    ga, gb = torch.autograd.grad(loss * upstream, (a, b))
    return loss.detach(), ga, gb


def _same_strides(z):
    """A leaf with the same (non-contiguous) strides as ``z``."""
    out = torch.empty_strided(z.shape, z.stride(), dtype=z.dtype, device=z.device)
    out.copy_(z)
    return out.requires_grad_()


def gradient_scale(z1, z2, tau, upstream):
    """Natural size of a gradient entry: g / (2N tau min_i ||x_i||).

    ``dL/dz_i`` (before the normalisation's backward) is a sum of unit vectors weighted by
    probabilities, times g / (2N tau); the normalisation divides it by ||x_i||. Errors are
    measured against this, not against the largest reference entry, because the projection
    ``dz - z (z . dz)`` can cancel to (exactly) zero, e.g. for D = 1.
    """
    x = torch.cat([z1, z2]).double()
    min_norm = torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12).min().item()
    return abs(upstream) / (x.shape[0] * tau * min_norm)


def assert_matches(got, ref, loss_rtol, grad_tol, what, grad_scale):
    """Loss within ``loss_rtol * max(|ref|, 1)``; each gradient entry within
    ``grad_tol * max(grad_scale, max |ref grad|)``."""
    loss, ga, gb = got
    rloss, rga, rgb = ref
    assert loss.dtype == torch.promote_types(ga.dtype, torch.float32)
    assert torch.isfinite(loss), f"{what}: loss not finite"
    err = abs(loss.double().item() - rloss.item())
    assert err <= loss_rtol * max(abs(rloss.item()), 1.0), f"{what}: loss {loss.item()} vs {rloss.item()}"
    for name, g, r in (("dz1", ga, rga), ("dz2", gb, rgb)):
        assert g.shape == r.shape
        assert bool(torch.isfinite(g).all()), f"{what}: {name} not finite"
        scale = max(grad_scale, rga.abs().max().item(), rgb.abs().max().item())
        gerr = (g.double() - r).abs().max().item()
        assert gerr <= grad_tol * scale, f"{what}: {name} max error {gerr:.3e} vs scale {scale:.3e}"
