"""The streaming NT-Xent backend (ecgfast/ops/nt_xent_streaming.py) against the reference.

Every comparison is against :func:`ecgfast.ops.nt_xent_reference` evaluated in float64 on
the same input values (upcast), with a random upstream gradient, over awkward shapes,
every input dtype, contiguous/strided layouts and tiles that do not divide 2N (helpers:
tests/nt_xent_helpers.py).
"""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
from nt_xent_helpers import (  # noqa: F401 - one_thread is an autouse fixture
    DS,
    LAYOUTS,
    TAUS,
    assert_matches,
    gradient_scale,
    make_views,
    one_thread,
    reference_and_grads,
    run_backend,
)

from ecgfast.losses import nt_xent
from ecgfast.ops.nt_xent_streaming import default_block_cols, default_block_rows, nt_xent_streaming

NS = (1, 2, 7, 64, 300)

#: (loss rtol, gradient tolerance relative to the largest reference gradient entry).
#: The streaming backend computes in fp32 for fp32/bf16/fp16 inputs, so the loss is fp32
#: accurate for all three; the gradients of bf16/fp16 inputs are returned in the input
#: dtype, so they carry that dtype's rounding (2^-8 bf16, 2^-11 fp16, relative).
STREAMING_TOL = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-5, 2e-3),
    torch.bfloat16: (1e-5, 1e-2),
}



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("n", NS)
def test_streaming_matches_reference_full_grid(n, dtype):
    """All D, tau and layouts for this (N, dtype); a small strip size forces many strips."""
    loss_rtol, grad_tol = STREAMING_TOL[dtype]
    for i, (d, tau, layout) in enumerate(itertools.product(DS, TAUS, LAYOUTS)):
        seed = zlib.crc32(repr((n, d, tau, layout, dtype)).encode())
        z1, z2 = make_views(n, d, dtype, layout, seed)
        upstream = 0.5 + torch.rand((), generator=torch.Generator().manual_seed(seed)).item()
        ref = reference_and_grads(z1, z2, tau, upstream)
        # uneven tiles (two kinds), one strip of uneven column tiles, one tile
        rows, cols = ((37, 53), (64, 40), (2 * n, 97), (2 * n, 2 * n))[i % 4]
        got = run_backend(
            lambda a, b, t, rows=rows, cols=cols: nt_xent_streaming(
                a, b, t, block_rows=rows, block_cols=cols),
            z1, z2, tau, upstream,
        )
        assert_matches(got, ref, loss_rtol, grad_tol, f"streaming n={n} d={d} tau={tau} {layout}",
                       gradient_scale(z1, z2, tau, upstream))


def test_streaming_default_tiles_and_argument_checks():
    assert default_block_rows(2) == 2 and default_block_cols(2) == 2
    assert default_block_rows(16384) == 256 and default_block_cols(1 << 20) == 16384
    with pytest.raises(ValueError, match="block_rows"):
        nt_xent_streaming(torch.randn(3, 4), torch.randn(3, 4), 0.5, block_rows=0)
    with pytest.raises(ValueError, match="block_cols"):
        nt_xent_streaming(torch.randn(3, 4), torch.randn(3, 4), 0.5, block_cols=2.5)


def test_streaming_tiles_of_one_column():
    """1-column tiles: some tiles hold only a row's diagonal entry (all masked)."""
    z1, z2 = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    ref = reference_and_grads(z1, z2, 0.1, 1.0)
    got = run_backend(lambda a, b, t: nt_xent_streaming(a, b, t, block_rows=2, block_cols=1),
                      z1, z2, 0.1, 1.0)
    assert_matches(got, ref, 1e-12, 1e-12, "1-column tiles", gradient_scale(z1, z2, 0.1, 1.0))


def test_streaming_returns_grads_in_input_dtype_and_only_when_needed():
    z1 = torch.randn(9, 8, dtype=torch.bfloat16, requires_grad=True)
    z2 = torch.randn(9, 8, dtype=torch.bfloat16)
    loss = nt_xent_streaming(z1, z2, 0.1)
    assert loss.dtype == torch.float32
    loss.backward()
    assert z1.grad.dtype == torch.bfloat16 and z2.grad is None


def test_streaming_backward_refuses_double_backward():
    """The streaming backward recomputes tiles outside autograd: a second derivative through
    it would be silently wrong, so it is refused (once_differentiable)."""
    z1 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    loss = nt_xent(z1, z2, 0.3, backend="streaming")
    seed = torch.ones((), dtype=loss.dtype, device=loss.device, requires_grad=True)
    (g,) = torch.autograd.grad(loss, z1, seed, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()
    # the eager reference is twice differentiable
    (g,) = torch.autograd.grad(nt_xent(z1, z2, 0.3, backend="eager"), z1, create_graph=True)
    g.sum().backward()
    assert z1.grad is not None
