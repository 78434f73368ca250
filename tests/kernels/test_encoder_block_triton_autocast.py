"""The fused encoder under ``torch.autocast`` against the eager encoder under the same
autocast, in training mode with dropout (both draw the same keys).

On a CUDA GPU: bf16 and fp16 autocast at the production widths (32/64/128 filters, kernels
32/16/8), batch 8, L = 2560. Without one the same body runs under TRITON_INTERPRET=1 with
the CPU's bf16 autocast at small widths (tests/kernels/conftest.py sets the variable).

Both encoders run their blocks in the autocast dtype (``ecgfast.layers`` casts at the
dispatch boundary, which autocast does not see for the Triton autograd Functions); each is
compared with the fp32 eager encoder holding the same weights. Max-pool argmaxes flip where
values tie within the dtype's rounding, so PyTorch's own low-precision encoder is far from
fp32 in some gradients: the fused encoder passes when each error (output, input gradient,
every parameter's gradient; normwise) is within the dtype's tolerance or at most twice the
eager autocast encoder's (``accuracy.encoder_verdict``, the rule the GPU benchmarks use).
"""

from __future__ import annotations

import pytest
import torch
from accuracy import encoder_verdict, rel_err  # benchmarks/accuracy.py, on pytest's pythonpath

from ecgfast.models import ECGEncoder, EncoderConfig

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
pytest.importorskip("triton")

if ON_GPU:
    CONFIG = EncoderConfig(residual="all", attention=True, dropout=0.1)
    BATCH, LENGTH, DTYPES = 8, 2560, [torch.bfloat16, torch.float16]
else:  # interpreter time: small widths, short windows
    CONFIG = EncoderConfig(residual="all", attention=True, dropout=0.1, filters=(12, 20, 36),
                           kernel_sizes=(7, 4, 3), se_reduction=4, pool_size=5)
    BATCH, LENGTH, DTYPES = 2, 300, [torch.bfloat16]


def _forward_backward(model, x, g, dtype):
    """Output and gradients (input, every parameter) of one training step, the forward
    under autocast in ``dtype`` (None: no autocast), with the dropout keys of seed 1."""
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(1)
    if dtype is None:
        y = model(x)
    else:
        with torch.autocast(DEVICE, dtype=dtype):
            y = model(x)
    y.backward(g.to(y.dtype))
    grads = {"output": y.detach(), "input": x.grad}
    grads.update({n: p.grad for n, p in model.named_parameters()})
    return y.dtype, grads


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_encoder_under_autocast_matches_eager_under_autocast(dtype):
    torch.manual_seed(0)
    fp32 = ECGEncoder(CONFIG.replace(backend="eager")).to(DEVICE).train()
    models = {}
    for backend in ("eager", "triton"):
        models[backend] = ECGEncoder(CONFIG.replace(backend=backend)).to(DEVICE).train()
        models[backend].load_state_dict(fp32.state_dict())
    x = torch.randn(BATCH, 1, LENGTH, device=DEVICE)
    g = torch.randn(BATCH, CONFIG.filters[-1], device=DEVICE)
    _, want = _forward_backward(fp32, x, g, None)
    errors = {}
    for backend, model in models.items():
        out_dtype, got = _forward_backward(model, x, g, dtype)
        assert out_dtype == dtype, backend
        assert all(p.grad.dtype == torch.float32 for p in model.parameters()), backend
        assert set(got) == set(want)
        errors[backend] = {name: rel_err(got[name], want[name]) for name in want}
    verdict = encoder_verdict(errors["triton"], errors["eager"], dtype)
    assert verdict["ok"], {t: (errors["triton"][t], errors["eager"][t]) for t in verdict["failing"]}
