"""The fused encoder kernels against the eager reference in ecgfast/ops/encoder_block.py.

On a machine without a CUDA GPU the kernels run under TRITON_INTERPRET=1 (numpy on the CPU;
tests/kernels/conftest.py sets it before Triton is imported), so the shapes are small and
awkward (no multiple of any block size). Each fused op is compared with the reference on
fresh random inputs: the output and the gradient of every input and parameter. Dropout is
keyed (ecgfast/keyed.py): with the same keys the kernels and the reference drop the same
elements, so the convs and the whole encoder are compared with dropout on as well, the
zero pattern of a conv output bit for bit. The keyed mask itself (against
``ecgfast.keyed.dropout_keep``), chunk independence and bad keys:
test_encoder_block_triton_keys.py.

Tolerances (normwise relative error, ||got - want|| / ||want||, against a float32 reference
computed from the same, dtype-rounded, inputs and parameters):

- float32: 1e-5 under the interpreter (fp32 "ieee" dot); 1e-4 on CUDA, where conftest.py
  turns TF32 off for both the kernels and cuDNN (fp32 sums in another order).
- bfloat16, one kernel: 1e-2 (one rounding of the output to bf16, 2^-9 relative, plus the
  bf16 rounding of the output gradient).
- bfloat16, whole encoder: against the same composition of the reference ops in fp32 with
  the tensors that the fused path stores in bf16 (h, f, the SE mean, a, the block output)
  rounded to bf16 at the same points (:func:`_bf16_rounded_reference`), so both take the
  same max-pool decisions: 5e-3 on outputs, 3e-2 on gradients (the fused backward also
  rounds its gradients to bf16 and runs aten's bf16 conv backward), 4e-2 on the SE MLP's
  (``se.*``, the noisiest: tiny gradients through the bf16 mean and MLP; measured while
  adding keyed dropout: 3.2-3.6e-2 on ``blocks.0.se.fc1.weight`` in 2 of 8 dropout cases
  and, with other random inputs, in 2 of 8 dropout-free ones). The plain fp32 model
  is no yardstick: three blocks of bf16 max pools flip argmaxes, and PyTorch's own bf16
  model is 10-40 % off the fp32 gradients.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # conftest.py does this too; harmless when already set
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from ecgfast.kernels.encoder_block_conv1d import conv1d_act_dropout
from ecgfast.kernels.encoder_block_se_residual_pool import se_residual_pool

from ecgfast.keyed import KeyedRandom
from ecgfast.models import RESIDUAL_PRESETS, ECGEncoder, EncoderConfig
from ecgfast.ops.encoder_block import (
    conv1d_same,
    conv_act_dropout,
    random_block_params,
    se_excitation,
)
from ecgfast.ops.encoder_block import se_residual_pool as se_residual_pool_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
FP32_TOL = 1e-5 if INTERPRET else 1e-4
KERNEL_TOL = {torch.float32: FP32_TOL, torch.bfloat16: 1e-2, torch.float16: 2e-3}
DTYPES = [torch.float32, torch.bfloat16] + ([] if INTERPRET else [torch.float16])
#: Small, awkward widths for the whole-encoder grid (interpreter time); block 3's
#: shortcut (C_in = 20) takes the tl.dot projection, block 1's (C_in = 1) the FMA one.
#: Pool 5/2 instead of 8/2 and short kernels keep the interpreter's per-operation cost down;
#: the production shapes run in test_encoder_production_widths_match_eager.
SMALL = {"filters": (12, 20, 36), "kernel_sizes": (7, 4, 3), "se_reduction": 4, "pool_size": 5}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def _leaves(*tensors, dtype):
    """Leaf copies in ``dtype`` and the matching fp32 leaves of the same rounded values."""
    low = [None if t is None else t.to(DEVICE, dtype).detach().requires_grad_() for t in tensors]
    ref = [None if t is None else t.detach().float().requires_grad_() for t in low]
    return low, ref


def _grads(out, leaves, grad_out):
    present = [t for t in leaves if t is not None]
    got = torch.autograd.grad(out, present, grad_out)
    it = iter(got)
    return [None if t is None else next(it) for t in leaves]


# ---------------------------------------------------------------- conv + act + dropout

CONV_SHAPES = [
    # (B, C_in, C_out, K, L)
    (2, 1, 20, 7, 77),     # C_in = 1: the DIRECT (FMA) path, odd K
    (1, 1, 12, 32, 61),    # DIRECT, even K (extra zero on the right), K > 16
    (3, 3, 17, 8, 50),     # implicit GEMM with R = 24 < BLOCK_R
    (2, 20, 24, 5, 130),   # R = 100, odd K
    (1, 16, 40, 6, 47),    # even K, C_out not a power of two
]


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv_act_matches_reference(shape, act, dtype, p):
    """Output, SE sums and gradients against the reference; with p > 0 both get the same
    keys, and the zero pattern (dropped or below the ReLU) is the same bit for bit."""
    torch.manual_seed(hash((shape, act)) % 2**31)
    b, c_in, c_out, k, length = shape
    x0 = torch.randn(b, c_in, length)
    w0 = torch.randn(c_out, c_in, k) / (c_in * k) ** 0.5
    b0 = torch.randn(c_out) * 0.1
    keys = KeyedRandom.for_batch(sum(shape), b, DEVICE).dropout_keys(1, DEVICE)[0] if p else None
    (x, w, bias), (xr, wr, br) = _leaves(x0, w0, b0, dtype=dtype)
    y, sums = conv1d_act_dropout(x, w, bias, act=act, negative_slope=0.15, p=p, keys=keys,
                                 write_sums=True)
    yr = conv_act_dropout(xr, wr, br, act=act, negative_slope=0.15, p=p, keys=keys)
    assert y.dtype == dtype and y.shape == (b, c_out, length)
    tol = KERNEL_TOL[dtype]
    assert torch.equal(y == 0, yr == 0)
    if p and act == "leaky_relu":  # every zero is a dropped element: p of them
        assert 0.15 < (y == 0).float().mean().item() < 0.45
    assert rel_err(y, yr) < tol
    assert rel_err(sums, yr.sum(-1)) < tol
    # gradient through both outputs (y and the SE sums)
    gy0, gs0 = torch.randn_like(yr), torch.randn_like(sums)
    gy = gy0.to(dtype)
    got = _grads((y, sums), [x, w, bias], (gy, gs0))
    want = _grads((yr, yr.sum(-1)), [xr, wr, br], (gy.float(), gs0))
    for name, g, r in zip(("x", "weight", "bias"), got, want):
        assert g.dtype == dtype
        assert rel_err(g, r) < tol, name


def test_conv_without_bias_and_sums():
    torch.manual_seed(1)
    (x, w), (xr, wr) = _leaves(torch.randn(2, 5, 40), torch.randn(7, 5, 4), dtype=torch.float32)
    y, sums = conv1d_act_dropout(x, w, None, act="none")
    assert sums is None
    yr = conv1d_same(xr, wr, None)
    assert rel_err(y, yr) < FP32_TOL
    g = torch.randn_like(yr)
    for a, r in zip(_grads(y, [x, w], g), _grads(yr, [xr, wr], g)):
        assert rel_err(a, r) < FP32_TOL


def test_conv_argument_errors():
    x = torch.randn(2, 3, 40, device=DEVICE)
    w = torch.randn(4, 3, 5, device=DEVICE)
    with pytest.raises(ValueError, match="x must be a \\(batch, C_in, length\\)"):
        conv1d_act_dropout(x[0], w, None)
    with pytest.raises(ValueError, match="weight must be \\(C_out, C_in=3, K\\)"):
        conv1d_act_dropout(x, w[:, :2], None)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16.*float64"):
        conv1d_act_dropout(x.double(), w.double(), None)
    with pytest.raises(ValueError, match="weight and bias dtypes"):
        conv1d_act_dropout(x, w.half(), None)
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
        conv1d_act_dropout(x, w, None, act="leaky_relu", negative_slope=-0.1)
    with pytest.raises(ValueError, match="p must be in \\[0, 1\\)"):
        conv1d_act_dropout(x, w, None, p=1.0)
    with pytest.raises(ValueError, match="act must be one of"):
        conv1d_act_dropout(x, w, None, act="gelu")


def test_large_batch_past_int32_offsets_is_refused():
    """An output past the kernels' int32 offsets (with room for the backward's last block)
    is refused before any launch, by the conv and by the block backend's declared limits
    (expanded views: no memory)."""
    from ecgfast.kernels.encoder_block_conv1d import MAX_NUMEL
    from ecgfast.kernels.encoder_block import BACKEND

    assert MAX_NUMEL + 2**15 <= 2**31 - 1
    spec = EncoderConfig().block_specs()[0]  # 1 -> 32 channels
    batch = MAX_NUMEL // (spec.out_channels * 2560) + 1
    x = torch.zeros(1, 1, 1, device=DEVICE).expand(batch, 1, 2560)
    w = torch.zeros(spec.out_channels, 1, spec.kernel_size, device=DEVICE)
    with pytest.raises(ValueError, match="the Triton conv supports at most .* \\(split the batch\\)"):
        conv1d_act_dropout(x, w, None)
    params = random_block_params(spec, device=DEVICE)
    reasons = BACKEND.limits(x, params, spec, None)
    assert any("more than its int32 offsets reach" in r for r in reasons), reasons
    assert BACKEND.limits(x[: batch - 1], params, spec, None) == []


# ---------------------------------------------------------------- SE + residual + pool

POOL_CASES = [
    # (B, C_in, C, L, attention, shortcut, pool)   shortcut: None | "identity" | "proj"
    (3, 1, 20, 101, True, "proj", (8, 2)),     # block-1 shape: C_in = 1, FMA projection
    (2, 24, 40, 97, True, "proj", (8, 2)),     # tl.dot projection, C_in not a pow2
    (2, 20, 36, 53, True, "proj", None),       # global max (block 3)
    (2, 17, 17, 64, False, "identity", (5, 3)),
    (1, 17, 17, 40, True, "identity", None),
    (2, 9, 21, 70, True, None, (7, 2)),        # windows not a multiple of the stride
    (3, 9, 21, 70, False, None, None),
    (2, 70, 19, 33, False, "proj", (8, 2)),    # C_in > BLOCK_CIN: projection K-loop
]


def _pool_reference(*args, pool_size, pool_stride, ties):
    """The reference; with ``ties`` (bf16/fp16 values tie), the global max's gradient goes
    to the first maximum, as in the kernel and max_pool1d (amax splits it among ties)."""
    if pool_size is None and ties:
        return se_residual_pool_ref(*args, pool_size=1, pool_stride=1).max(dim=-1).values
    return se_residual_pool_ref(*args, pool_size=pool_size, pool_stride=pool_stride)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_se_residual_pool_matches_reference(case, dtype):
    bsz, c_in, c, length, attention, shortcut, pool = case
    torch.manual_seed(hash(case) % 2**31)
    f0 = torch.randn(bsz, c, length)
    a0 = torch.rand(bsz, c) if attention else None
    x0 = torch.randn(bsz, c_in, length) if shortcut else None
    ws0 = torch.randn(c, c_in, 1) / c_in**0.5 if shortcut == "proj" else None
    bs0 = torch.randn(c) * 0.1 if shortcut == "proj" else None
    low, ref = _leaves(f0, a0, x0, ws0, bs0, dtype=dtype)
    size, stride = pool if pool else (None, 1)
    out = se_residual_pool(*low, pool_size=size, pool_stride=stride)
    want = _pool_reference(*ref, pool_size=size, pool_stride=stride, ties=dtype != torch.float32)
    assert out.dtype == dtype and out.shape == want.shape
    tol = KERNEL_TOL[dtype]
    assert rel_err(out, want) < tol
    g = torch.randn_like(want).to(dtype)
    got = _grads(out, low, g)
    exp = _grads(want, ref, g.float())
    for name, a, r in zip(("f", "a", "x", "shortcut_weight", "shortcut_bias"), got, exp):
        if r is not None:
            assert rel_err(a, r) < tol, name


def test_se_residual_pool_argument_errors():
    f = torch.randn(2, 8, 30, device=DEVICE)
    with pytest.raises(ValueError, match="identity shortcut needs C_in == C"):
        se_residual_pool(f, None, torch.randn(2, 3, 30, device=DEVICE), None, None,
                         pool_size=8, pool_stride=2)
    with pytest.raises(ValueError, match="a must be \\(batch, C\\)"):
        se_residual_pool(f, torch.rand(2, 7, device=DEVICE), None, None, None,
                         pool_size=8, pool_stride=2)
    with pytest.raises(ValueError, match="shortcut_weight must be \\(C=8, C_in=3, 1\\)"):
        se_residual_pool(f, None, torch.randn(2, 3, 30, device=DEVICE),
                         torch.randn(8, 4, 1, device=DEVICE), None, pool_size=8, pool_stride=2)
    with pytest.raises(ValueError, match="shorter than pool_size"):
        se_residual_pool(f[..., :5], None, None, None, None, pool_size=8, pool_stride=2)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        se_residual_pool(f.double(), None, None, None, None, pool_size=8, pool_stride=2)


# ---------------------------------------------------------------- the whole encoder

def _encoder_pair(config: EncoderConfig, dtype):
    """(fp32 eager encoder with the dtype-rounded weights, the fused encoder in dtype)."""
    eager = ECGEncoder(config.replace(backend="eager"))
    fused = ECGEncoder(config.replace(backend="triton")).to(DEVICE, dtype)
    fused.load_state_dict(eager.state_dict())  # same keys; cast on load
    eager.load_state_dict({k: v.to(dtype).float() for k, v in eager.state_dict().items()})
    return eager.to(DEVICE), fused


def _run(model, x, g):
    x = x.detach().clone().requires_grad_()
    y = model(x)
    y.backward(g.to(y.dtype))
    return y, {"input": x.grad, **{n: p.grad for n, p in model.named_parameters()}}


class _Bf16Rounded(torch.nn.Module):
    """The eager reference ops in fp32, rounding to bf16 where the fused path stores bf16.
    In training with dropout it draws its keys as :class:`ecgfast.models.ECGEncoder` does
    (one ``KeyedRandom.from_default_generator`` per forward, two streams per block): after
    the same ``torch.manual_seed`` it drops what the fused encoder drops."""

    def __init__(self, encoder: ECGEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        def rnd(t):
            return t.bfloat16().float()

        dropout = self.encoder.training and self.encoder.config.dropout > 0
        random = KeyedRandom.from_default_generator(x.shape[0]) if dropout else None
        for blk in self.encoder.blocks:
            keys = random.dropout_keys(2, x.device) if dropout else (None, None)
            kw = {"act": blk.activation, "negative_slope": blk.negative_slope,
                  "p": blk.spec.dropout}
            h = rnd(conv_act_dropout(x, blk.conv1.weight, blk.conv1.bias, keys=keys[0], **kw))
            f32 = conv_act_dropout(h, blk.conv2.weight, blk.conv2.bias, keys=keys[1], **kw)
            f = rnd(f32)
            a = None
            if blk.se is not None:  # the fused mean comes from the unrounded conv output;
                # the excitation MLP runs in bf16 in both (PyTorch on the (B, C) means)
                mean = f32.mean(-1, keepdim=True).bfloat16()
                params = [q.bfloat16() for q in blk.block_params().se]
                a = se_excitation(mean, *params).float()
            sc = blk.shortcut
            args = (f, a, x if blk.residual else None, None if sc is None else sc.weight,
                    None if sc is None else sc.bias)
            x = rnd(_pool_reference(*args, pool_size=blk.pool_size,
                                    pool_stride=blk.pool_stride, ties=True))
        return x

    def named_parameters(self, *args, **kwargs):
        return self.encoder.named_parameters(*args, **kwargs)


#: Every residual x attention configuration; dropout on with attention and off without it,
#: so that each residual preset runs both conv epilogues (with and without the mask).
GRID = [(r, a, 0.2 if a else 0.0) for r in RESIDUAL_PRESETS for a in (False, True)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("residual,attention,dropout", GRID)
def test_encoder_matches_eager(residual, attention, dtype, dropout):
    """Every residual x attention configuration, B in {1, 3}, L in {300, 2560}, in training
    mode; with dropout both encoders draw the same keys (the same ``torch.manual_seed``)."""
    config = EncoderConfig(residual=residual, attention=attention, dropout=dropout, **SMALL)
    torch.manual_seed(len(residual) * 2 + attention)
    eager, fused = _encoder_pair(config, dtype)
    reference = eager if dtype == torch.float32 else _Bf16Rounded(eager)
    out_tol, grad_tol = (FP32_TOL * 10,) * 2 if dtype == torch.float32 else (5e-3, 3e-2)
    for bsz, length in ((1, 2560), (3, 300)):
        x = torch.randn(bsz, 1, length, device=DEVICE).to(dtype)
        g = torch.randn(bsz, config.filters[-1], device=DEVICE)
        with torch.random.fork_rng(devices=[]):  # the keys' draws leave x and g as they were
            torch.manual_seed(bsz)
            y, grads = _run(fused, x, g)
            torch.manual_seed(bsz)
            yr, want = _run(reference, x.float(), g.to(dtype).float())
        assert y.dtype == dtype and y.shape == yr.shape
        assert set(grads) == set(want)
        assert rel_err(y, yr) < out_tol, (bsz, length)
        for name in want:
            tol = 4e-2 if dtype == torch.bfloat16 and ".se." in name else grad_tol
            assert rel_err(grads[name], want[name]) < tol, (name, bsz, length)


def test_encoder_production_widths_match_eager():
    """The papers' widths (32/64/128, K 32/16/8, MaxPool1d(8, 2)), leaky_relu (relu: the
    grid above): the production channel counts and kernel sizes."""
    config = EncoderConfig(residual="all", attention=True, dropout=0.0, activation="leaky_relu")
    torch.manual_seed(3)
    eager, fused = _encoder_pair(config, torch.float32)
    x = torch.randn(2, 1, 300, device=DEVICE)
    g = torch.randn(2, 128, device=DEVICE)
    y, grads = _run(fused, x, g)
    yr, want = _run(eager, x, g)
    assert rel_err(y, yr) < FP32_TOL * 10
    for name in want:
        assert rel_err(grads[name], want[name]) < FP32_TOL * 10, name


def test_training_loss_curve_matches_eager():
    """A few Adam steps from the same initialisation give the same losses (dropout 0)."""
    config = EncoderConfig(residual="first_two", attention=True, dropout=0.0, **SMALL)
    torch.manual_seed(0)
    data = torch.randn(3, 2, 1, 200, device=DEVICE)
    target = torch.randn(3, 2, 36, device=DEVICE)
    curves = {}
    init = ECGEncoder(config).state_dict()
    for backend in ("eager", "triton"):
        model = ECGEncoder(config.replace(backend=backend)).to(DEVICE)
        model.load_state_dict(init)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for x, t in zip(data, target):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), t)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        curves[backend] = torch.tensor(losses)
    assert curves["eager"][-1] < curves["eager"][0]
    torch.testing.assert_close(curves["triton"], curves["eager"], rtol=1e-4, atol=0)
