"""Objectives hold their loss as a module (NTXentLoss), built once; state_dict keys are
those of their parameter-holding parts only."""

import pytest
import torch

from ecgfast.losses import NTXentLoss, nt_xent
from ecgfast.models import ECGEncoder
from ecgfast.objectives import Combined, Contrastive, build_objective


def _prefixed(**parts):
    return [f"{name}.{key}" for name, part in parts.items() for key in part.state_dict()]


def test_the_loss_is_a_module_without_state_and_keys_do_not_change():
    encoder = ECGEncoder()
    for objective in (Contrastive(encoder), Contrastive(encoder, temperature=0.2, backend="eager"),
                      Contrastive(encoder, loss=NTXentLoss(0.2, gather_distributed=True))):
        assert isinstance(objective.loss, NTXentLoss)
        assert list(objective.loss.state_dict()) == []
        assert list(objective.state_dict()) == _prefixed(encoder=encoder,
                                                         projection=objective.projection)
    combined = Combined(encoder, 0.5, 2.0, loss=NTXentLoss(0.3))
    assert list(combined.state_dict()) == _prefixed(encoder=encoder,
                                                    projection=combined.projection,
                                                    heads=combined.heads)
    assert list(build_objective("both", encoder).state_dict()) == list(combined.state_dict())


def test_the_shorthand_and_build_objective_build_one_loss_with_the_settings():
    encoder = ECGEncoder()
    default = Contrastive(encoder).loss
    assert (default.temperature, default.backend, default.gather_distributed) == (
        0.5, "auto", False)
    short = Contrastive(encoder, temperature=0.25, backend="streaming",
                        gather_distributed=True).loss
    assert (short.temperature, short.backend, short.gather_distributed) == (
        0.25, "streaming", True)
    for name in ("contrastive", "both"):
        loss = build_objective(name, encoder, temperature=0.1, nt_xent_backend="eager",
                               gather_distributed=True).loss
        assert (loss.temperature, loss.backend, loss.gather_distributed) == (0.1, "eager", True)
    assert not hasattr(build_objective("transform", encoder), "loss")
    given = NTXentLoss(0.7)
    assert Contrastive(encoder, loss=given).loss is given
    assert Combined(encoder, loss=given).loss is given


def test_loss_settings_are_checked_once_when_the_objective_is_built():
    encoder = ECGEncoder()
    with pytest.raises(ValueError, match="temperature"):
        Contrastive(encoder, temperature=0.0)
    with pytest.raises(ValueError, match="backend must be one of"):
        build_objective("both", encoder, nt_xent_backend="fast")
    with pytest.raises(ValueError, match="pass either loss or temperature, not both"):
        Contrastive(encoder, loss=NTXentLoss(), temperature=0.2)
    with pytest.raises(TypeError, match="loss must be an ecgfast.losses.NTXentLoss"):
        Contrastive(encoder, loss=0.5)
    # the positional form of the earlier API (temperature 4th) still means the temperature
    assert Contrastive(encoder, None, None, 0.3).loss.temperature == 0.3
    with pytest.raises(ValueError, match="objective must be one of"):
        build_objective("simclr", encoder)


def test_forward_uses_the_held_loss():
    torch.manual_seed(0)
    objective = Contrastive(ECGEncoder(), loss=NTXentLoss(0.2, backend="streaming")).eval()
    windows = torch.randn(4, 256)
    loss, metrics = objective(windows, torch.Generator().manual_seed(3))
    v1, v2 = objective.augment.two_views(windows, generator=torch.Generator().manual_seed(3))
    z = objective.projection(objective.encoder(torch.cat([v1, v2])))
    expected = nt_xent(z[:4], z[4:], 0.2, backend="eager")
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert metrics["contrastive_loss"] == loss.detach()
