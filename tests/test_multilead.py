"""Multi-lead ECG through the encoder, the transformations and checkpoints.

The ONNX side is in tests/export/test_onnx_multilead.py; the Triton kernels take several
leads in tests/kernels/test_encoder_block_triton*.py (the conv's and the shortcut's
``tl.dot`` paths, a whole C-lead encoder).
"""

from __future__ import annotations

import json

import pytest
import torch

from ecgfast import transforms as T
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)

LEADS12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- EncoderConfig


def test_config_in_channels_and_leads_round_trip():
    c = EncoderConfig(in_channels=12, leads=list(LEADS12))
    assert c.leads == LEADS12 and isinstance(c.leads, tuple)
    d = c.to_dict()
    assert d["in_channels"] == 12 and d["leads"] == list(LEADS12)
    assert EncoderConfig.from_dict(json.loads(json.dumps(d))) == c
    assert "in_channels=12" in repr(c) and "leads=" in repr(c)


def test_a_config_dict_needs_every_field_and_no_other():
    partial = EncoderConfig().to_dict()
    del partial["in_channels"], partial["leads"]
    with pytest.raises(ValueError, match=r"missing \['in_channels', 'leads'\], unknown \[\]"):
        EncoderConfig.from_dict(partial)
    with pytest.raises(ValueError, match=r"unknown \['depth'\]"):
        EncoderConfig.from_dict({**EncoderConfig().to_dict(), "depth": 4})


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"in_channels": 0}, ValueError, "in_channels must be an int >= 1"),
        ({"in_channels": 2.0}, ValueError, "in_channels must be an int >= 1"),
        ({"in_channels": True}, ValueError, "in_channels must be an int >= 1"),
        ({"in_channels": 2, "leads": ("I",)}, ValueError, "leads has 1 name.*in_channels is 2"),
        ({"in_channels": 2, "leads": ("I", "I")}, ValueError, "distinct"),
        ({"in_channels": 2, "leads": ("I", "")}, ValueError, "non-empty strings"),
        ({"in_channels": 1, "leads": "I"}, TypeError, "sequence of lead names"),
        ({"in_channels": 2, "leads": (0, 1)}, ValueError, "non-empty strings"),
    ],
)
def test_config_refuses_bad_leads(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        EncoderConfig(**kwargs)


# ---------------------------------------------------------------- ECGEncoder


def test_encoder_takes_c_leads_and_only_block_one_sees_them():
    torch.manual_seed(0)
    enc = ECGEncoder(EncoderConfig(in_channels=3, backend="eager")).eval()
    one = ECGEncoder(EncoderConfig(backend="eager"))
    assert enc.blocks[0].conv1.weight.shape == (32, 3, 32)
    assert enc.blocks[0].shortcut.weight.shape == (32, 3, 1)
    shapes = {k: v.shape for k, v in enc.state_dict().items()}
    for k, v in one.state_dict().items():  # same keys; only block 0's input side differs
        assert k in shapes
        if not k.startswith(("blocks.0.conv1.weight", "blocks.0.shortcut.weight")):
            assert shapes[k] == v.shape, k
    x = torch.randn(4, 3, 300)
    assert enc(x).shape == (4, 128)
    # the leads are really used: changing one lead changes the embedding
    x2 = x.clone()
    x2[:, 2] += 1.0
    assert not torch.allclose(enc(x), enc(x2))


@pytest.mark.parametrize("shape", [(2, 2, 300), (2, 300), (2, 13, 300)])
def test_encoder_wrong_lead_count_names_both_numbers(shape):
    enc = ECGEncoder(EncoderConfig(in_channels=12, leads=LEADS12))
    got = shape[1] if len(shape) == 3 else 1
    with pytest.raises(ValueError, match=f"has {got} lead\\(s\\).*takes 12.*leads I, II"):
        enc(torch.randn(*shape))


def test_encoder_rank_error_for_multilead_does_not_offer_two_d():
    enc = ECGEncoder(EncoderConfig(in_channels=2))
    with pytest.raises(ValueError, match=r"must be \(batch, 2, length\), got"):
        enc(torch.randn(2, 2, 2, 300))


# ---------------------------------------------------------------- transformations

SHARED = {
    "add_noise": lambda x, g, **k: T.add_noise(x, generator=g, **k),
    "permute_segments": lambda x, g, **k: T.permute_segments(x, generator=g, **k),
    "time_warp": lambda x, g, **k: T.time_warp(x, generator=g, **k),
    "random_scale": lambda x, g, **k: T.random_scale(x, generator=g, **k),
    "random_time_shift": lambda x, g, **k: T.random_time_shift(x, generator=g, **k),
    "random_noise": lambda x, g, **k: T.random_noise(x, generator=g, **k),
    "random_time_warp": lambda x, g, **k: T.random_time_warp(x, generator=g, **k),
    "ContrastiveAugment": lambda x, g, **k: T.ContrastiveAugment(p=0.5, **k)(x, g),
    "make_pretext_batch": lambda x, g, **k: T.make_pretext_batch(x, g, **k)[0],
}
#: Maps that move samples (or scale windows) without noise: a lead that is a multiple of
#: another stays that multiple when the draw is shared.
LINEAR = ("permute_segments", "time_warp", "random_scale", "random_time_shift",
          "random_time_warp")


def _proportional_leads(batch=6, length=500, gains=(1.0, -2.0, 0.5)):
    base = torch.randn(batch, 1, length, generator=gen(3), dtype=torch.float64)
    return base * torch.tensor(gains, dtype=torch.float64)[None, :, None], gains


@pytest.mark.parametrize("name", LINEAR)
def test_one_draw_per_window_is_shared_by_its_leads(name):
    x, gains = _proportional_leads()
    y = SHARED[name](x, gen(1))
    assert y.shape == x.shape
    for c, gain in enumerate(gains):
        torch.testing.assert_close(y[:, c], y[:, 0] * gain, rtol=1e-12, atol=1e-12)
    # and it is the draw the single-lead call makes for that window
    torch.testing.assert_close(y[:, :1], SHARED[name](x[:, :1], gen(1)), rtol=0, atol=0)


@pytest.mark.parametrize("name", LINEAR)
def test_per_lead_draws_are_those_of_the_flattened_batch(name):
    x, gains = _proportional_leads()
    y = SHARED[name](x, gen(1), per_lead=True)
    flat = SHARED[name](x.reshape(-1, 1, x.shape[-1]), gen(1))
    assert torch.equal(y, flat.reshape(x.shape))
    # leads no longer move together
    assert not torch.allclose(y[:, 1], y[:, 0] * gains[1])


@pytest.mark.parametrize("name", sorted(SHARED))
def test_per_lead_is_the_same_for_one_lead(name):
    x = torch.randn(5, 1, 400, generator=gen(2))
    assert torch.equal(SHARED[name](x, gen(4), per_lead=True), SHARED[name](x, gen(4)))


def test_noise_is_independent_per_lead_at_each_leads_own_snr():
    x, _ = _proportional_leads(batch=4, length=20000, gains=(1.0, 10.0))
    y = T.add_noise(x, 15.0, gen(5))
    noise = y - x
    snr = 10 * torch.log10(x.square().mean(-1) / noise.square().mean(-1))
    torch.testing.assert_close(snr, torch.full_like(snr, 15.0), rtol=0, atol=0.3)
    # independent samples: the two leads' noise is not proportional (correlation ~ 0)
    a, b = noise[:, 0].flatten(), noise[:, 1].flatten()
    corr = ((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std())
    assert abs(float(corr)) < 0.05


def test_random_noise_shares_the_snr_draw_per_window():
    x, _ = _proportional_leads(batch=6, length=20000, gains=(1.0, 3.0))
    y = T.random_noise(x, (10.0, 30.0), gen(6))
    snr = 10 * torch.log10(x.square().mean(-1) / (y - x).square().mean(-1))
    torch.testing.assert_close(snr[:, 1], snr[:, 0], rtol=0, atol=0.3)  # one SNR per window
    assert float(snr[:, 0].max() - snr[:, 0].min()) > 2.0  # but it differs between windows
    yp = T.random_noise(x, (10.0, 30.0), gen(6), per_lead=True)
    snrp = 10 * torch.log10(x.square().mean(-1) / (yp - x).square().mean(-1))
    assert float((snrp[:, 1] - snrp[:, 0]).abs().max()) > 1.0


def test_contrastive_augment_decisions_shared_unless_per_lead():
    x, gains = _proportional_leads()
    aug = T.ContrastiveAugment(snr_db=None, p=0.5)
    y = aug(x, gen(8))
    for c, gain in enumerate(gains):
        torch.testing.assert_close(y[:, c], y[:, 0] * gain, rtol=1e-12, atol=1e-12)
    yp = T.ContrastiveAugment(snr_db=None, p=0.5, per_lead=True)(x, gen(8))
    assert not torch.allclose(yp[:, 1], yp[:, 0] * gains[1])
    assert "per_lead=True" in repr(T.ContrastiveAugment(per_lead=True))


def test_pretext_batch_on_leads():
    x = torch.randn(3, 12, 300, generator=gen(9))
    inputs, labels = T.make_pretext_batch(x, gen(1))
    assert inputs.shape == (21, 12, 300) and labels.shape == (21,)
    assert torch.equal(inputs[9:12], -x)  # negate: version 3 of (original, noise, scale, ...)
    inputs2, _ = T.PretextTransform(per_lead=True)(x, gen(1))
    assert inputs2.shape == inputs.shape and not torch.equal(inputs2, inputs)
    assert "per_lead=True" in repr(T.PretextTransform(per_lead=True))


@pytest.mark.parametrize(
    "call",
    [
        lambda: T.add_noise(torch.randn(2, 3, 50), per_lead=1),
        lambda: T.ContrastiveAugment(per_lead="yes"),
        lambda: T.PretextTransform(per_lead=None),
        lambda: T.apply_transform(torch.randn(2, 50), "scale", per_lead=0),
    ],
)
def test_per_lead_must_be_a_bool(call):
    with pytest.raises(TypeError, match="per_lead must be True or False"):
        call()


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_keeps_leads(tmp_path):
    torch.manual_seed(1)
    config = EncoderConfig(in_channels=12, leads=LEADS12, filters=(8, 8, 16),
                           kernel_sizes=(5, 3, 3), backend="eager")
    enc = ECGEncoder(config).eval()
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    save_checkpoint(tmp_path, epoch=1, state_dict=state, config={"encoder": config.to_dict()})
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.encoder_config.in_channels == 12 and ckpt.encoder_config.leads == LEADS12
    back = load_encoder(tmp_path)
    x = torch.randn(2, 12, 200)
    with torch.no_grad():
        assert torch.equal(back(x), enc(x))
    with pytest.raises(ValueError, match="has 1 lead.*takes 12"):
        back(torch.randn(2, 1, 200))


def test_checkpoint_with_mismatched_leads_is_refused(tmp_path):
    config = EncoderConfig(in_channels=2).to_dict()
    config["leads"] = ["I", "II", "III"]
    enc = ECGEncoder(EncoderConfig(in_channels=2))
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    save_checkpoint(tmp_path, epoch=1, state_dict=state, config={"encoder": config})
    with pytest.raises(CheckpointError, match="config.json: invalid encoder config.*leads has 3"):
        load_checkpoint(tmp_path)


def test_checkpoint_weights_for_other_lead_count_are_refused(tmp_path):
    enc = ECGEncoder(EncoderConfig(in_channels=3))
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    save_checkpoint(tmp_path, epoch=1, state_dict=state,
                    config={"encoder": EncoderConfig(in_channels=2).to_dict()})
    with pytest.raises(CheckpointError, match="weights do not match the encoder config"):
        load_encoder(tmp_path)


# ---------------------------------------------------------------- objectives and CLI


@pytest.mark.parametrize("objective", ["transform", "contrastive", "both"])
def test_objectives_train_on_lead_windows(objective):
    from ecgfast.objectives import build_objective

    torch.manual_seed(0)
    enc = ECGEncoder(EncoderConfig(in_channels=3, filters=(8, 8, 16), kernel_sizes=(5, 3, 3),
                                   backend="eager"))
    obj = build_objective(objective, enc, nt_xent_backend="eager")
    loss, _ = obj(torch.randn(4, 3, 300), gen(1))
    loss.backward()
    assert torch.isfinite(loss) and enc.blocks[0].conv1.weight.grad.abs().sum() > 0


def test_cli_leads_option_builds_the_encoder():
    import argparse

    from ecgfast.cli.common import UsageError, add_encoder_args, encoder_config, parse_leads

    p = argparse.ArgumentParser()
    add_encoder_args(p)
    assert encoder_config(p.parse_args([])) == EncoderConfig()
    c = encoder_config(p.parse_args(["--leads", "I, II,V1"]))
    assert c.in_channels == 3 and c.leads == ("I", "II", "V1")
    c = encoder_config(p.parse_args(["--leads", "all"]), data_leads=LEADS12)
    assert c.in_channels == 12 and c.leads == LEADS12
    assert encoder_config(p.parse_args([]), data_leads=("II",)).leads == ("II",)
    with pytest.raises(UsageError, match="--leads I,V1: the data has leads I,II"):
        encoder_config(p.parse_args(["--leads", "I,V1"]), data_leads=("I", "II"))
    for bad, match in (("I,,II", "comma-separated"), ("I,I", "named twice"), ("", "comma")):
        with pytest.raises(UsageError, match=match):
            parse_leads(bad)
    assert parse_leads(None) is None and parse_leads("all") == "all"
