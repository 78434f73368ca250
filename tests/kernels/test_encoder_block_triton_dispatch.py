"""The Triton encoder-block backend through ecgfast.dispatch: what it refuses and why, the
block op from plain tensors and a spec (no module), with and without keyed dropout, and
the state dict shared with the eager backend. Helpers and tolerances:
test_encoder_block_triton.py."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

if not torch.cuda.is_available():  # conftest.py does this too; harmless when already set
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from test_encoder_block_triton import DEVICE, FP32_TOL, SMALL, rel_err

from ecgfast import dispatch
from ecgfast.keyed import KeyedRandom
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.ops.encoder_block import BlockSpec, random_block_params


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
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x)
    model.float()
    assert dispatch.resolve("encoder_block", "auto", x.float(),
                            *_block_inputs(model.blocks[0])) == "triton"
