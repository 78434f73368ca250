"""The Triton encoder-block backend (kernels/encoder_block.py) through ecgfast.dispatch, the
way production runs it: the block op from plain tensors and a spec, the whole encoder
against the eager one (every residual x attention configuration, one lead and several,
training with keyed dropout), what the backend refuses and why, and the state dict shared
with the eager backend. Its two kernels have their own files
(test_encoder_block_triton_conv1d.py, test_encoder_block_triton_se_residual_pool.py);
shared helpers and tolerances: encoder_block_helpers.py.

On a machine without a CUDA GPU the kernels run under TRITON_INTERPRET=1 (numpy on the CPU;
conftest.py sets it before Triton is imported), so the shapes are small and awkward.
Tolerances beyond the helpers': the whole encoder in bfloat16 is compared with the same
composition of the reference ops in fp32 with the tensors that the fused path stores in
bf16 (h, f, the SE mean, a, the block output) rounded to bf16 at the same points
(:class:`_Bf16Rounded`), so both take the same max-pool decisions: 5e-3 on outputs, 3e-2
on gradients (the fused backward also rounds its gradients to bf16 and runs aten's bf16
conv backward), 4e-2 on the SE MLP's (``se.*``, the noisiest: tiny gradients through the
bf16 mean and MLP; 3.2-3.6e-2 was measured on ``blocks.0.se.fc1.weight`` in 2 of 8
dropout cases and, with other random inputs, in 2 of 8 dropout-free ones). The plain fp32
model is no yardstick: three blocks of bf16 max pools flip argmaxes, and PyTorch's own
bf16 model is 10-40 % off the fp32 gradients.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

pytest.importorskip("triton")

from encoder_block_helpers import (
    DEVICE,
    FP32_TOL,
    SMALL,
    dropout_keys,
    pool_reference,
    rel_err,
)

from ecgfast import dispatch
from ecgfast.keyed import KeyedRandom
from ecgfast.models import RESIDUAL_PRESETS, ECGEncoder, EncoderConfig
from ecgfast.ops.encoder_block import (
    BlockSpec,
    conv_act_dropout,
    random_block_params,
    se_excitation,
)

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
            x = rnd(pool_reference(*args, pool_size=blk.pool_size,
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


@pytest.mark.parametrize("c_in", (2, 3, 12))
def test_multilead_encoder_matches_eager(c_in):
    """A whole small C-lead encoder (all shortcuts, SE), Triton vs eager: the output and
    the gradient of the input and of every parameter."""
    config = EncoderConfig(in_channels=c_in, residual="all", attention=True, dropout=0.0,
                           filters=(12, 20, 36), kernel_sizes=(7, 4, 3), se_reduction=4,
                           pool_size=5)
    torch.manual_seed(c_in)
    eager = ECGEncoder(config.replace(backend="eager")).to(DEVICE)
    fused = ECGEncoder(config.replace(backend="triton")).to(DEVICE)
    fused.load_state_dict(eager.state_dict())
    x = torch.randn(2, c_in, 211, device=DEVICE)
    g = torch.randn(2, 36, device=DEVICE)
    results = []
    for model in (fused, eager):
        xi = x.clone().requires_grad_()
        y = model(xi)
        y.backward(g)
        results.append((y, {"input": xi.grad, **{n: p.grad for n, p in model.named_parameters()}}))
    (y, grads), (yr, want) = results
    assert rel_err(y, yr) < FP32_TOL * 10
    assert set(grads) == set(want)
    for name in want:
        assert rel_err(grads[name], want[name]) < FP32_TOL * 10, name


# ---------------------------------------------------------------- the block op through dispatch

def test_state_dict_moves_between_backends():
    a = ECGEncoder(EncoderConfig(backend="triton", **SMALL))
    b = ECGEncoder(EncoderConfig(backend="eager", **SMALL))
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())


def _block_inputs(block):
    return block.block_params(), block.spec, None


def test_triton_backend_refusals(monkeypatch):
    block = ECGEncoder(EncoderConfig(backend="triton", **SMALL)).blocks[0]
    x = torch.randn(1, 1, 64)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' cannot run encoder_block: it needs CUDA tensors, got cpu"):
        dispatch.resolve("encoder_block", "triton", x, *_block_inputs(block))
    assert dispatch.resolve("encoder_block", "auto", x, *_block_inputs(block)) == "eager"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="float32, bfloat16 or float16 inputs, got torch.float64"):
        dispatch.resolve("encoder_block", "triton", x.double(), *_block_inputs(block))
    leaky = ECGEncoder(EncoderConfig(backend="triton", activation="leaky_relu",
                                     negative_slope=-0.2, **SMALL)).blocks[0]
    with pytest.raises(ValueError, match="negative_slope >= 0"):
        dispatch.resolve("encoder_block", "triton", x, *_block_inputs(leaky))
    # the CPU interpreter is for tests: "auto" never picks it
    assert dispatch.resolve("encoder_block", "auto", x, *_block_inputs(block)) == "eager"
    assert dispatch.resolve("encoder_block", "triton", x, *_block_inputs(block)) == "triton"


def test_triton_backend_limits_name_every_reason():
    """Limits beyond device and dtype: parameters in another dtype, a pool window too large
    for the int8 argmax; each is named."""
    spec = BlockSpec(3, 5, 4, pool_size=200, pool_stride=1)
    params = random_block_params(spec, dtype=torch.float16)
    x = torch.randn(1, 3, 300)
    with pytest.raises(ValueError) as err:
        dispatch.resolve("encoder_block", "triton", x, params, spec, None)
    assert "every parameter in x's dtype" in str(err.value)
    assert "pool_size <= 127" in str(err.value)
    assert dispatch.resolve("encoder_block", "auto", x, params, spec, None) == "eager"


def test_triton_backend_checks_every_shape_before_a_launch():
    """The kernels index x and the parameters by pointer, so the backend refuses, naming
    each, an x whose channels are not the spec's, a signal shorter than the pool window
    and a parameter of another shape than the spec's (the eager backend would raise
    PyTorch's own error; the kernels would read out of bounds)."""
    spec = BlockSpec(3, 5, 4, residual=True, se_hidden=2, pool_size=8)
    params = random_block_params(spec, device=DEVICE)
    x = torch.randn(2, 3, 40, device=DEVICE)
    assert dispatch.resolve("encoder_block", "triton", x, params, spec, None) == "triton"
    bad = params._replace(conv2_weight=params.conv2_weight[:, :4],
                          se_fc1_bias=None, shortcut_weight=None)
    with pytest.raises(ValueError) as err:
        dispatch.resolve("encoder_block", "triton", x[:, :2, :5], bad, spec, None)
    message = str(err.value)
    assert "x of shape (B, 3, L), got (2, 2, 5)" in message
    assert "conv2_weight of shape (5, 5, 4) (the spec's), got (5, 4, 4)" in message
    assert "shortcut_weight of shape (5, 3, 1) (the spec's), got None" in message
    assert "se_fc1_bias" not in message  # a bias may be absent (no bias)
    with pytest.raises(ValueError, match="a length >= pool_size 8, got 5"):
        dispatch.resolve("encoder_block", "triton", x[..., :5], params, spec, None)


BLOCK_SPECS = [
    BlockSpec(1, 12, 7, residual=True, se_hidden=3, pool_size=5),         # FMA projection
    BlockSpec(9, 9, 4, activation="leaky_relu", residual=True, pool_size=None),  # identity
    BlockSpec(6, 20, 3, residual=True, se_hidden=5, pool_size=6, pool_stride=3),
    # block 1 of a C-lead encoder (C > 1: the tl.dot paths of the conv and the projection)
    *(BlockSpec.build(c, 12, 7, residual=True, attention=True, se_reduction=4, pool_size=5)
      for c in (2, 3, 12)),
]


@pytest.mark.parametrize("dropout", [0.0, 0.25])
@pytest.mark.parametrize("spec", BLOCK_SPECS, ids=lambda s: f"{s.in_channels}-{s.out_channels}")
def test_block_op_without_a_module(spec, dropout):
    """The block op from plain tensors and a spec (no module): the Triton backend against
    the reference, output and the gradient of the input and every parameter; with dropout
    both get the same (2, B) keys."""
    spec = dataclasses.replace(spec, dropout=dropout)
    g = torch.Generator().manual_seed(spec.in_channels)
    params = random_block_params(spec, generator=g, device=DEVICE)
    x = torch.randn(2, spec.in_channels, 83, generator=g).to(DEVICE)
    keys = KeyedRandom.for_batch(spec.in_channels, 2, DEVICE).dropout_keys(2, DEVICE) \
        if dropout else None
    leaves = [x, *(t for t in params if t is not None)]
    for t in leaves:
        t.requires_grad_()
    out = {}
    for backend in ("eager", "triton"):
        y = dispatch.encoder_block(x, params, spec, keys, backend)
        gy = torch.ones_like(y)
        out[backend] = (y, torch.autograd.grad(y, leaves, gy))
    assert out["triton"][0].shape == (2, spec.out_channels, spec.out_length(83)) or (
        spec.pool_size is None and out["triton"][0].shape == (2, spec.out_channels))
    assert rel_err(out["triton"][0], out["eager"][0]) < FP32_TOL * 10
    for got, want in zip(out["triton"][1], out["eager"][1]):
        assert rel_err(got, want) < FP32_TOL * 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the auto fallback warning is CUDA-only")
def test_auto_falls_back_with_one_warning_on_cuda():
    dispatch._AUTO_WARNED.clear()
    model = ECGEncoder(EncoderConfig(backend="auto", **SMALL)).cuda().double()
    x = torch.randn(2, 1, 300, device="cuda", dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="falls back to eager"):
        model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x)
    model.float()
    assert dispatch.resolve("encoder_block", "auto", x.float(),
                            *_block_inputs(model.blocks[0])) == "triton"


def test_block_sample_does_not_depend_on_its_batch():
    """The Triton block op on a chunk of the batch with its columns of the (2, B) keys gives
    the chunk's rows of the whole batch's output and input gradient."""
    spec = BlockSpec.build(3, 12, 5, residual=True, attention=True, se_reduction=4,
                           dropout=0.3, pool_size=5)
    params = random_block_params(spec, generator=torch.Generator().manual_seed(1), device=DEVICE)
    x = torch.randn(4, 3, 90, device=DEVICE)
    keys = dropout_keys(5, 4, layers=2)
    g = torch.randn(4, 12, spec.out_length(90), device=DEVICE)
    out = {}
    for name, rows in (("whole", slice(None)), ("chunk", slice(1, 3))):
        xi = x[rows].clone().requires_grad_()
        y = dispatch.encoder_block(xi, params, spec, keys[:, rows].clone(), "triton")
        y.backward(g[rows])
        out[name] = y.detach(), xi.grad
    y_plain = dispatch.encoder_block(x, params, spec, None, "triton")
    assert rel_err(out["whole"][0], y_plain) > 0.05  # the keys did drop something
    assert rel_err(out["chunk"][0], out["whole"][0][1:3]) < FP32_TOL
    assert rel_err(out["chunk"][1], out["whole"][1][1:3]) < FP32_TOL


def test_encoder_dropout_is_reproducible_and_eval_has_none():
    """p = 0.1 in training: a seed reproduces the output and gradients, another changes
    them; eval mode has no dropout and matches eager (training against eager with the same
    keys: test_encoder_block_triton.py::test_encoder_matches_eager)."""
    config = EncoderConfig(residual="all", attention=True, dropout=0.1, **SMALL)
    torch.manual_seed(0)
    model = ECGEncoder(config.replace(backend="triton")).to(DEVICE)
    x = torch.randn(2, 1, 200, device=DEVICE)
    g = torch.ones(2, 36, device=DEVICE)
    torch.manual_seed(11)
    ya, ga = _run(model, x, g)
    model.zero_grad()
    torch.manual_seed(11)
    yb, gb = _run(model, x, g)
    assert torch.equal(ya, yb) and all(torch.equal(ga[k], gb[k]) for k in ga)
    with torch.no_grad():
        torch.manual_seed(12)
        assert not torch.equal(model(x), ya)
        model.eval()
        eager = ECGEncoder(config.replace(backend="eager")).to(DEVICE).eval()
        eager.load_state_dict(model.state_dict())
        assert rel_err(model(x), eager(x)) < FP32_TOL * 10


def test_large_batch_past_int32_offsets_is_refused():
    """A conv output past the kernels' int32 offsets (with room for the backward's last
    block) is refused by the backend's declared limits before any launch (expanded views:
    no memory)."""
    from ecgfast.kernels.encoder_block import BACKEND
    from ecgfast.kernels.encoder_block_conv1d import MAX_NUMEL

    assert MAX_NUMEL + 2**15 <= 2**31 - 1
    spec = EncoderConfig().block_specs()[0]  # 1 -> 32 channels
    batch = MAX_NUMEL // (spec.out_channels * 2560) + 1
    x = torch.zeros(1, 1, 1, device=DEVICE).expand(batch, 1, 2560)
    params = random_block_params(spec, device=DEVICE)
    reasons = BACKEND.limits(x, params, spec, None)
    assert any("more than its int32 offsets reach" in r for r in reasons), reasons
    assert BACKEND.limits(x[: batch - 1], params, spec, None) == []


def test_bad_dropout_keys_are_refused_by_name():
    x = torch.randn(3, 4, 50, device=DEVICE)
    spec = BlockSpec(4, 6, 3, dropout=0.2, pool_size=5)
    params = random_block_params(spec, device=DEVICE)
    keys2 = dropout_keys(1, 3, layers=2)
    for k in (keys2.long(), dropout_keys(1, 4, layers=2), dropout_keys(1, 3),
              keys2.to("meta")):
        with pytest.raises(ValueError, match=r"dropout_keys must be None or an int32 \(2, 3\)"):
            dispatch.encoder_block(x, params, spec, k, "triton")
