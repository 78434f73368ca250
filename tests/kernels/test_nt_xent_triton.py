"""Triton NT-Xent kernels against the eager reference in float64.

Every case runs the production path, ``ecgfast.losses.nt_xent(..., backend="triton")``;
the tiles the kernels launch with are chosen through the :func:`tiles` fixture, which
replaces the production table's lookup. Without a CUDA GPU the kernels run on the CPU
under TRITON_INTERPRET=1 (set in conftest.py before Triton is imported); the interpreter is
slow, so the grid is: every D, tau and dtype for N in {1, 2, 7} (tau and layout rotating),
plus hand-picked awkward larger cases with tiles that do not divide 2N or D. Values and
both gradients, random upstream gradient.

Stated tolerances (loss: relative to max(|loss|, 1); gradients: relative to the natural
gradient size, see tests/nt_xent_helpers.py::gradient_scale):

- fp32, input_precision="ieee": 1e-5 and 1e-5.
- fp16: loss 1e-5 (the x x^T dot takes the fp16 inputs: exact products, fp32 sums);
  gradients 3e-3 (P in [-2, 2] and z are fp16 operands of the backward dot, dx is fp16).
- bf16: loss 1e-5; gradients 2e-2 (same, with bf16's 8-bit mantissa).
- fp32 with tf32 dots (PyTorch's matmul setting, which the kernels follow): loss 5e-3,
  gradients 2e-2 on a GPU (operands rounded to a 10-bit mantissa). The interpreter
  computes tf32 dots exactly in fp32, so on the CPU this test only exercises the code
  path; the bound itself is only checked on a GPU.
"""

from __future__ import annotations

import itertools
import os
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

ON_GPU = torch.cuda.is_available()
if not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1":  # pragma: no cover
    pytest.skip("no CUDA GPU and TRITON_INTERPRET is not 1 (set by tests/kernels/conftest.py "
                "before Triton is imported; run this file through pytest)",
                allow_module_level=True)

import ecgfast.kernels.nt_xent as kernels
from ecgfast.dispatch import BackendUnavailable
from ecgfast.kernels.nt_xent_configs import column_splits, split_columns
from ecgfast.losses import nt_xent

DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {  # dtype -> (loss rtol, gradient tolerance)
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-5, 3e-3),
    torch.bfloat16: (1e-5, 2e-2),
}
TF32_TOL = (5e-3, 2e-2)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.fixture
def tiles(monkeypatch):
    """``tiles({"BLOCK_M": m, "BLOCK_N": n})`` (powers of two >= 16, optionally ``"SPLITS"``:
    column splits) makes the kernels launch with these tiles, 4 warps and 1 stage, instead
    of the production table's (:func:`ecgfast.kernels.nt_xent_configs.pick`); ``tiles(None)``
    restores the production choice."""
    production = kernels.pick, kernels.column_splits

    def use(t):
        pick, splits = production
        if t is not None:
            cfg = {"BLOCK_M": t["BLOCK_M"], "BLOCK_N": t["BLOCK_N"], "num_warps": 4,
                   "num_stages": 1}

            def pick(configs, fam, d, n_rows):
                return dict(cfg)
        if t is not None and "SPLITS" in t:
            def splits(row_programs, n_cols, block_n, sms):
                return split_columns(n_cols, block_n, t["SPLITS"])
        monkeypatch.setattr(kernels, "pick", pick)
        monkeypatch.setattr(kernels, "column_splits", splits)

    return use


@pytest.fixture
def tf32_dots(monkeypatch):
    """fp32 dots in tf32: PyTorch's matmul setting on a GPU (the kernels read it); the
    interpreter, which has no tf32 of its own, is handed the mode directly."""
    if ON_GPU:
        monkeypatch.setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32")
    else:
        monkeypatch.setattr(kernels, "dot_input_precision",
                            lambda dtype, kind: "tf32" if dtype == torch.float32 else "ieee")


def check(use_tiles, n, d, tau, dtype, layout, tiles, tol=None, precision="ieee"):
    seed = zlib.crc32(repr((n, d, tau, dtype, layout, tiles, precision)).encode())
    z1, z2 = make_views(n, d, dtype, layout, seed)
    z1, z2 = z1.to(DEVICE), z2.to(DEVICE)
    upstream = 0.5 + torch.rand((), generator=torch.Generator().manual_seed(seed)).item()
    ref = reference_and_grads(z1.cpu(), z2.cpu(), tau, upstream)
    use_tiles(tiles)
    got = run_backend(lambda a, b, t: nt_xent(a, b, t, backend="triton"), z1, z2, tau, upstream)
    got = tuple(t.cpu() for t in got)
    loss_rtol, grad_tol = tol or TOL[dtype]
    assert got[0].dtype == torch.float32
    assert_matches(got, ref, loss_rtol, grad_tol,
                   f"triton n={n} d={d} tau={tau} {dtype} {layout} {tiles} {precision}",
                   gradient_scale(z1.cpu(), z2.cpu(), tau, upstream))


T16 = {"BLOCK_M": 16, "BLOCK_N": 16}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", (1, 2, 7))
def test_small_n_every_d_and_tau(tiles, n, dtype):
    """Every D (1 and 200 need padding: 200 is one 256-wide tile)."""
    for i, d in enumerate(DS):
        for j, tau in enumerate(TAUS):
            check(tiles, n, d, tau, dtype, LAYOUTS[(i + j) % len(LAYOUTS)], T16)


AWKWARD = [
    # (n, d, tau, dtype, layout, BLOCK_M, BLOCK_N)
    (64, 24, 0.07, torch.float32, "strided", 16, 32),
    (64, 200, 0.01, torch.bfloat16, "transposed", 64, 64),
    (64, 128, 0.5, torch.float16, "contiguous", 32, 16),
    (300, 16, 0.01, torch.float16, "contiguous", 64, 64),
    (300, 24, 0.5, torch.bfloat16, "strided", 64, 64),
    (300, 1, 0.07, torch.float32, "transposed", 64, 64),
]


@pytest.mark.parametrize("n,d,tau,dtype,layout,bm,bn", AWKWARD)
def test_awkward_shapes(tiles, n, d, tau, dtype, layout, bm, bn):
    check(tiles, n, d, tau, dtype, layout, {"BLOCK_M": bm, "BLOCK_N": bn})


@pytest.mark.parametrize("n,d", [(7, 24), (64, 128)])
def test_tf32_input_precision(tiles, tf32_dots, n, d):
    for tau in TAUS:
        check(tiles, n, d, tau, torch.float32, "contiguous", {"BLOCK_M": 32, "BLOCK_N": 32},
              TF32_TOL, precision="tf32")


def test_production_config_path(tiles):
    """The production table's own choice (16 x 16 under the interpreter)."""
    check(tiles, 33, 40, 0.1, torch.float32, "strided", None)


def test_no_inf_or_nan_small_tau_fp16_and_identical_rows():
    def triton(a, b, tau):
        return nt_xent(a, b, tau, backend="triton")

    z1 = torch.randn(21, 24, device=DEVICE).half().requires_grad_()
    z2 = torch.randn(21, 24, device=DEVICE).half().requires_grad_()
    loss = triton(z1, z2, 0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    row = torch.randn(1, 16)
    for dtype in DTYPES:
        z = row.expand(20, 16).to(dtype).to(DEVICE).clone().requires_grad_()
        loss = triton(z, z.detach().clone(), 0.01)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
        assert loss.item() == pytest.approx(torch.log(torch.tensor(39.0)).item(), rel=1e-5)
    zero = torch.zeros(4, 8, device=DEVICE, requires_grad=True)
    other = torch.randn(4, 8, device=DEVICE, requires_grad=True)
    g = torch.autograd.grad(triton(zero, other, 0.5), (zero, other))
    assert all(torch.isfinite(t).all() for t in g)


def test_views_of_two_dtypes():
    """Two views of kernel dtypes run in the wider one (the reference's promotion); a view
    the kernels do not take is refused by name, whichever view it is."""
    z1 = torch.randn(5, 16, device=DEVICE)
    z2 = torch.randn(5, 16, device=DEVICE)
    torch.testing.assert_close(
        nt_xent(z1, z2.half(), 0.2, backend="triton"),
        nt_xent(z1, z2.half().float(), 0.2, backend="eager"), rtol=1e-5, atol=1e-6)
    with pytest.raises(BackendUnavailable, match="got z2 of torch.float64"):
        nt_xent(z1, z2.double(), 0.2, backend="triton")
    with pytest.raises(BackendUnavailable, match="inputs, got torch.float64"):
        nt_xent(z1.double(), z2, 0.2, backend="triton")


def test_grid_covers_every_requirement():
    """The interpreter grid above touches every N, D, tau, dtype and layout the helpers
    list (tests/nt_xent_helpers.py)."""
    seen = {"n": set(), "d": set(), "tau": set(), "dtype": set(), "layout": set()}
    for n, dtype in itertools.product((1, 2, 7), DTYPES):
        for i, d in enumerate(DS):
            for j, tau in enumerate(TAUS):
                for k, v in zip(seen, (n, d, tau, dtype, LAYOUTS[(i + j) % 3])):
                    seen[k].add(v)
    for n, d, tau, dtype, layout, _, _ in AWKWARD:
        for k, v in zip(seen, (n, d, tau, dtype, layout)):
            seen[k].add(v)
    assert seen["n"] == {1, 2, 7, 64, 300} and seen["d"] == set(DS)
    assert seen["tau"] == set(TAUS) and seen["dtype"] == set(DTYPES)
    assert seen["layout"] == set(LAYOUTS)


def test_backward_refuses_double_backward():
    """The kernels' backward is not differentiable itself: once_differentiable says so
    instead of returning a gradient without a graph."""
    z1 = torch.randn(5, 16, device=DEVICE, requires_grad=True)
    z2 = torch.randn(5, 16, device=DEVICE, requires_grad=True)
    loss = nt_xent(z1, z2, 0.5, backend="triton")
    seed = torch.ones((), dtype=loss.dtype, device=loss.device, requires_grad=True)
    (g,) = torch.autograd.grad(loss, z1, seed, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


# ---------------------------------------------------------------- column splits, wide D, limits

@pytest.mark.parametrize("n,d,dtype,bm,bn,splits", [
    (64, 24, torch.float32, 16, 16, 3),      # 8 column tiles over 3 splits: 3 + 3 + 2
    (50, 200, torch.bfloat16, 32, 16, 2),
    (7, 16, torch.float16, 16, 16, 4),       # more splits asked than column tiles: one each
])
def test_column_splits_match_one_split(tiles, n, d, dtype, bm, bn, splits):
    """Columns split across programs, merged afterwards (log-sum-exp of the splits'
    partial sums, summed dz): the same loss and gradients as one split."""
    check(tiles, n, d, 0.1, dtype, "contiguous",
          {"BLOCK_M": bm, "BLOCK_N": bn, "SPLITS": splits})


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_wide_d_takes_the_chunked_path(tiles, dtype):
    """D > 256: the similarity tile loops over D in chunks and the output D is split over
    grid axis 1 (300 = three 128-wide chunks), with and without column splits."""
    check(tiles, 9, 300, 0.2, dtype, "strided", T16)
    check(tiles, 9, 300, 0.2, dtype, "contiguous", dict(T16, SPLITS=2))


def test_column_split_choice_fills_the_gpu():
    # 2N = 8192, 128-row tiles: 64 row programs on 132 SMs -> 5 splits of 26 column tiles
    assert column_splits(64, 8192, 64, 132) == (5, 26 * 64)
    # 2N = 65536: 512 row programs, already >= 2 per SM -> one split
    assert column_splits(512, 65536, 64, 132) == (1, 65536)
    # few columns: at least 4 column tiles per split
    assert column_splits(2, 256, 64, 132) == (1, 256)
    assert column_splits(2, 100, 16, None) == (1, 112)  # no GPU: one split
    # asked for more splits than there are tiles: one tile each
    assert split_columns(100, 16, 10) == (7, 16)


def test_offsets_past_int32_are_refused_before_any_allocation():
    """2N x D >= 2^31 would overflow the kernels' int32 offsets: the backend refuses it with
    the sizes and the backend to use (expanded views: no memory)."""
    z = torch.zeros(1, 1, device=DEVICE).expand(2**19, 2048)
    with pytest.raises(BackendUnavailable, match=r"2N x D = 1048576 x 2048 = 2147483648 "
                                                 r"elements, more than its int32 offsets "
                                                 r".*backend='streaming'"):
        nt_xent(z, z, 0.5, backend="triton")
    ok = torch.zeros(1, 1, device=DEVICE).expand(2**19, 1024)  # 2N = 2^20, D = 1024 fits
    assert kernels.BACKEND.limits(ok, ok, 0.5, None) == []


def test_grid_limits_name_the_axis():
    from ecgfast.kernels._common import check_grid

    check_grid((2**31 - 1, 65535, 65535), "fine")
    with pytest.raises(ValueError, match="conv: 65536 programs on grid axis 1, more than "
                                         "CUDA allows \\(65535\\)"):
        check_grid((4, 65536, 1), "conv")
    with pytest.raises(ValueError, match="grid axis 0"):
        check_grid((2**31, 1, 1), "x")
