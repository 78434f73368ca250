"""The Triton NT-Xent kernels where the production launch configurations serve them, against
the float64 reference: the chunked-D path (D in {300, 512, 1024}: the similarity tile loops
over D in chunks), fp16 inputs, and 2N = 65536 (the reference chunked by anchor rows,
tests/nt_xent_helpers.py::reference_and_grads).

On a CUDA GPU: 2N = 8190 and 16384, the launcher's configurations below and from 8192 rows
(kernels/nt_xent_configs.py), and 65536. Without one the same bodies run under
TRITON_INTERPRET=1 at 2N = 18 to 66 (the interpreter's fixed 16 x 16 tiles: the code path,
not the production tiles, which only a GPU runs). Tolerances as in test_nt_xent_triton.py
(loss relative to max(|loss|, 1); gradients relative to the natural gradient size):
bf16 1e-5 / 2e-2, fp16 1e-5 / 3e-3, fp32 ieee 1e-5 / 1e-5, and TF32 with the bound derived
in test_cuda_kernels.py.
"""

from __future__ import annotations

import pytest
import torch
from nt_xent_helpers import (  # noqa: F401 - one_thread is an autouse fixture
    assert_matches,
    gradient_scale,
    make_views,
    one_thread,
    reference_and_grads,
    run_backend,
)

from ecgfast.losses import nt_xent
from ecgfast.ops import nt_xent_reference

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
TAU = 0.5
TF32_U = 2.0**-11
TOL = {"bf16": (1e-5, 2e-2), "fp16": (1e-5, 3e-3), "fp32-ieee": (1e-5, 1e-5),
       "fp32-tf32": (4 * TF32_U / TAU + 1e-5, 4 * (4 * TF32_U / TAU + 2 * TF32_U))}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32-ieee": torch.float32,
          "fp32-tf32": torch.float32}
#: 2N of the launcher's first (below 8192 rows) and second configuration; the interpreter's.
SIZES = (8190, 16384) if ON_GPU else (18,)


def check(two_n, d, kind, layout="contiguous", monkeypatch=None):
    """Triton at ``kind``'s dtype and dot precision against the float64 reference."""
    z1, z2 = make_views(two_n // 2, d, DTYPES[kind], layout, seed=two_n * 7 + d)
    z1, z2 = z1.to(DEVICE), z2.to(DEVICE)
    upstream = 0.75
    ref = reference_and_grads(z1, z2, TAU, upstream)
    if kind == "fp32-tf32":  # the kernels follow PyTorch's setting (conftest.py: "ieee")
        monkeypatch.setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32")
    got = run_backend(lambda a, b, t: nt_xent(a, b, t, backend="triton"), z1, z2, TAU, upstream)
    assert got[1].device == z1.device
    loss_tol, grad_tol = TOL[kind]
    assert_matches(got, ref, loss_tol, grad_tol, f"2N={two_n} D={d} {kind} {layout}",
                   gradient_scale(z1, z2, TAU, upstream))


def test_bf16_at_65536_rows():
    """The target size: 2N = 65536, bf16, D = 128, against float64 (on the CPU: 2N = 66)."""
    check(65536 if ON_GPU else 66, 128, "bf16")


CHUNKED = [(d, two_n, "bf16") for d in (300, 512, 1024) for two_n in SIZES] + [
    (512, SIZES[-1], "fp16"), (300, SIZES[0], "fp32-ieee")] + (
    [(1024, SIZES[-1], "fp32-tf32")] if ON_GPU else [])


@pytest.mark.parametrize("d,two_n,kind", CHUNKED)
def test_chunked_d_at_production_tiles(d, two_n, kind, monkeypatch):
    """D > 256: D-chunked similarity tiles and the output D split over the grid."""
    check(two_n, d, kind, monkeypatch=monkeypatch)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("d", [128, 200])
@pytest.mark.parametrize("two_n", SIZES)
def test_fp16_at_production_tiles(two_n, d, layout):
    """fp16 inputs (the 16-bit family's tiles, as bf16); transposed inputs keep their strides
    and device in the gradient."""
    check(two_n, d, "fp16", layout)


def test_same_strides_keeps_the_device():
    """A non-contiguous view's leaf is made on the view's own device (a transposed view on
    the GPU was once rebuilt on the CPU): here the meta device, which the reference takes."""
    z = torch.empty(6, 4, device="meta").T
    loss, ga, gb = run_backend(nt_xent_reference, z, z, TAU, 1.0)
    assert loss.device.type == ga.device.type == gb.device.type == "meta"
