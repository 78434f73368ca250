"""Checkpoint files: round trip, resolution, and clear errors for every kind of damage."""

import json

import pytest
import torch

from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.training import checkpoint as ckpt

CFG = EncoderConfig(residual="first", attention=True, dropout=0.0)


def _save(run_dir, epoch=1, keep=2):
    torch.manual_seed(epoch)
    enc = ECGEncoder(CFG)
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state["heads.w"] = torch.randn(3, 3)
    path = ckpt.save_checkpoint(run_dir, epoch=epoch, state_dict=state,
                                config={"encoder": CFG.to_dict(), "objective": "transform"},
                                optimizer_state={"step": torch.tensor(epoch)}, keep=keep)
    return enc, path


def test_round_trip_and_resolution(tmp_path):
    enc, path = _save(tmp_path)
    assert path == tmp_path / "checkpoints" / "epoch-0001"
    for where in (tmp_path, tmp_path / "checkpoints", path):
        loaded = ckpt.load_encoder(where)
        assert not loaded.training
        assert loaded.config == CFG
        x = torch.randn(2, 300)
        torch.testing.assert_close(loaded(x), enc.eval()(x))
    c = ckpt.load_checkpoint(tmp_path)
    assert c.epoch == 1 and "heads.w" in c.state_dict
    assert int(c.load_optimizer_state()["step"]) == 1


def test_keeps_the_newest_checkpoints(tmp_path):
    for e in range(1, 5):
        _save(tmp_path, epoch=e, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch-*"))
    assert names == ["epoch-0003", "epoch-0004"]
    assert ckpt.load_checkpoint(tmp_path).epoch == 4


def test_backend_override(tmp_path):
    _save(tmp_path)
    assert ckpt.load_encoder(tmp_path, backend="eager").config.backend == "eager"


def test_missing_path(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no such"):
        ckpt.load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ckpt.CheckpointError, match="not a checkpoint"):
        ckpt.load_checkpoint(tmp_path / "empty")


def test_truncated_weights_name_the_file(tmp_path):
    _, path = _save(tmp_path)
    w = path / ckpt.WEIGHTS
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors.*corrupt"):
        ckpt.load_checkpoint(tmp_path)


def test_garbage_config_names_the_file(tmp_path):
    _, path = _save(tmp_path)
    good = ckpt.load_checkpoint(tmp_path).config
    (path / ckpt.CONFIG).write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="config.json.*JSON"):
        ckpt.load_checkpoint(tmp_path)
    (path / ckpt.CONFIG).write_text(json.dumps({"encoder": {"residual": "bogus"}}))
    with pytest.raises(ckpt.CheckpointError, match="config.json.*invalid encoder config"):
        ckpt.load_checkpoint(tmp_path)
    for epoch in (None, -1, 1.5, "3", True):
        config = {k: v for k, v in good.items() if k != "epoch" or epoch is not None}
        if epoch is not None:
            config["epoch"] = epoch
        (path / ckpt.CONFIG).write_text(json.dumps(config))
        with pytest.raises(ckpt.CheckpointError, match="config.json: 'epoch' must be a non"):
            ckpt.load_checkpoint(tmp_path)


def test_latest_pointing_nowhere(tmp_path):
    _save(tmp_path)
    (tmp_path / "checkpoints" / ckpt.LATEST).write_text("epoch-0099\n")
    with pytest.raises(ckpt.CheckpointError, match="epoch-0099"):
        ckpt.load_checkpoint(tmp_path)


def test_weights_that_do_not_fit_the_config(tmp_path):
    _, path = _save(tmp_path)
    cfg = json.loads((path / ckpt.CONFIG).read_text())
    cfg["encoder"]["attention"] = False
    (path / ckpt.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(ckpt.CheckpointError, match="do not match"):
        ckpt.load_encoder(tmp_path)


def test_corrupt_optimizer_state(tmp_path):
    _, path = _save(tmp_path)
    (path / ckpt.OPTIMIZER).write_bytes(b"\x00garbage")
    with pytest.raises(ckpt.CheckpointError, match="optimizer.pt"):
        ckpt.load_checkpoint(tmp_path).load_optimizer_state()
