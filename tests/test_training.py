"""Pretraining: loss goes down, exact resume, crash safety, divergence, bad input."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ecgfast.models import EncoderConfig
from ecgfast.training import PretrainConfig, TrainingDivergedError, pretrain
from ecgfast.training import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = EncoderConfig(residual="all", attention=True, dropout=0.1)


def _toy_windows(n=12, length=256, seed=0):
    """Sine-and-spike windows: cheap, learnable, not constant."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 64.0
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    x = np.sin(2 * np.pi * 1.2 * t + phase) + 0.1 * rng.standard_normal((n, length))
    x[:, ::50] += 3.0
    return x.astype(np.float32)


def _weights(result_dir):
    return ckpt.load_checkpoint(result_dir).state_dict


def test_short_pretraining_lowers_the_loss_on_the_synthetic_cohort(tmp_path):
    from ecgfast.data import make_cohort

    cohort = make_cohort(n_subjects=2, sessions_per_subject=2, session_seconds=20.0, seed=1)
    cfg = PretrainConfig(objective="transform", epochs=4, batch_size=8, lr=1e-3, seed=0)
    result = pretrain(cohort.windows, tmp_path / "run", SMALL, cfg, progress=False)
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 4
    assert losses[-1] < losses[0]
    assert (tmp_path / "run" / "training_curve.png").stat().st_size > 1000
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "epoch" for r in records) == 4
    assert all(np.isfinite(r["loss"]) for r in records)


@pytest.mark.parametrize("objective", ["transform", "both"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, objective):
    x = _toy_windows()
    cfg = PretrainConfig(objective=objective, epochs=3, batch_size=5, seed=3)
    pretrain(x, tmp_path / "full", SMALL, cfg, progress=False)

    part = PretrainConfig(objective=objective, epochs=1, batch_size=5, seed=3)
    pretrain(x, tmp_path / "split", SMALL, part, progress=False)
    pretrain(x, tmp_path / "split", SMALL, cfg, resume=True, progress=False)

    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert epochs == [1, 2, 3]


def test_existing_run_is_not_overwritten(tmp_path):
    x = _toy_windows(n=4)
    cfg = PretrainConfig(epochs=1, batch_size=4)
    pretrain(x, tmp_path / "run", SMALL, cfg, progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        pretrain(x, tmp_path / "run", SMALL, cfg, progress=False)


def test_resume_refuses_other_data_and_checkpoints_missing_a_part(tmp_path):
    """A resume reads exactly what pretrain writes: no defaults stand in for a missing
    part of the checkpoint."""
    cfg = PretrainConfig(epochs=1, batch_size=4)
    pretrain(_toy_windows(n=4), tmp_path / "run", SMALL, cfg, progress=False)
    again = PretrainConfig(epochs=2, batch_size=4)
    with pytest.raises(ValueError, match="other data"):
        pretrain(_toy_windows(n=4, seed=9), tmp_path / "run", SMALL, again, resume=True,
                 progress=False)
    config_file = tmp_path / "run" / "checkpoints" / "epoch-0001" / "config.json"
    saved = json.loads(config_file.read_text())
    for key in ("history", "step_state"):
        config_file.write_text(json.dumps({k: v for k, v in saved.items() if k != key}))
        with pytest.raises(ckpt.CheckpointError, match=f"config.json: '{key}' is missing"):
            pretrain(_toy_windows(n=4), tmp_path / "run", SMALL, again, resume=True,
                     progress=False)
    del saved["training"]["precision"]
    config_file.write_text(json.dumps(saved))
    with pytest.raises(ckpt.CheckpointError, match=r"training options.*missing \['precision'\]"):
        pretrain(_toy_windows(n=4), tmp_path / "run", SMALL, again, resume=True, progress=False)


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    """SIGKILL the process in the middle of writing epoch 2's checkpoint, then resume."""
    x = _toy_windows(n=6)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import os, signal, numpy as np, torch
        import ecgfast.training.checkpoint as ck
        from ecgfast.models import EncoderConfig
        from ecgfast.training import PretrainConfig, pretrain
        real_save = torch.save
        def dying_save(obj, path, *a, **k):
            if "epoch-0002" in str(path):
                with open(path, "wb") as f:
                    f.write(b"half a file")
                    f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, path, *a, **k)
        ck.torch.save = dying_save
        x = np.load({str(tmp_path / 'x.npy')!r})
        pretrain(x, {str(tmp_path / 'run')!r}, EncoderConfig(residual="all", attention=True, dropout=0.1),
                 PretrainConfig(epochs=2, batch_size=3, seed=5), progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == -9, proc.stderr
    loaded = ckpt.load_checkpoint(tmp_path / "run")
    assert loaded.epoch == 1
    loaded.load_optimizer_state()
    # resume finishes the run and matches an uninterrupted one
    cfg = PretrainConfig(epochs=2, batch_size=3, seed=5)
    pretrain(x, tmp_path / "run", SMALL, cfg, resume=True, progress=False)
    pretrain(x, tmp_path / "ref", SMALL, cfg, progress=False)
    a, b = _weights(tmp_path / "run"), _weights(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)
    leftovers = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    assert leftovers  # the dead process's half-written directory is still there, unused


def test_nan_loss_raises_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from ecgfast import objectives

    real = objectives.transformation_recognition_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(objectives, "transformation_recognition_loss", sometimes_nan)
    cfg = PretrainConfig(epochs=3, batch_size=4, seed=0)
    with pytest.raises(TrainingDivergedError, match="epoch 2, step 1"):
        pretrain(_toy_windows(n=8), tmp_path / "run", SMALL, cfg, progress=False)
    assert ckpt.load_checkpoint(tmp_path / "run").epoch == 1


@pytest.mark.parametrize(
    "windows,exc,match",
    [
        (np.full((3, 256), np.nan, dtype=np.float32), ValueError, "NaN or Inf"),
        (np.zeros((3,), dtype=np.float32), ValueError, r"\(N, L\)"),
        (np.zeros((3, 256), dtype=np.int64), TypeError, "floating"),
        (np.zeros((0, 256), dtype=np.float32), ValueError, "empty"),
    ],
)
def test_bad_windows_are_refused(tmp_path, windows, exc, match):
    with pytest.raises(exc, match=match):
        pretrain(windows, tmp_path / "run", SMALL, PretrainConfig(epochs=1), progress=False)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"objective": "mae"}, "objective"), ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"),
     ({"seed": -3}, "seed"), ({"temperature": 0.0}, "temperature"), ({"patience": 0}, "patience"),
     ({"patience": 1.5}, "patience")],
)
def test_bad_training_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**kwargs)


# ---------------------------------------------------------------- validation, early stopping


def test_validation_leaves_training_alone_and_keeps_the_best_epoch(tmp_path):
    x, val = _toy_windows(n=8), _toy_windows(n=4, seed=7)
    cfg = PretrainConfig(epochs=2, batch_size=4, seed=1)
    plain = pretrain(x, tmp_path / "plain", SMALL, cfg, progress=False)
    scored = pretrain(x, tmp_path / "scored", SMALL, cfg, progress=False, validation=val)
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "scored")
    assert all(torch.equal(a[k], b[k]) for k in a)  # validation draws no training randomness
    assert plain.best_checkpoint is None and "val_loss" not in plain.history[0]
    losses = [r["val_loss"] for r in scored.history]
    assert len(losses) == 2 and all(np.isfinite(losses))
    best = int(np.argmin(losses)) + 1
    assert scored.best_epoch == best and not scored.stopped_early
    assert ckpt.load_checkpoint(scored.best_checkpoint).epoch == best
    assert scored.best_checkpoint.is_relative_to(tmp_path / "scored" / "best")


def _scripted_validation(monkeypatch, losses):
    from ecgfast.training import loop as training

    calls = iter(losses)
    monkeypatch.setattr(training, "validation_loss", lambda *a, **k: next(calls))


def test_patience_stops_training_and_the_best_checkpoint_is_the_lowest(tmp_path, monkeypatch):
    x, val = _toy_windows(n=8), _toy_windows(n=4, seed=7)
    _scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.0, 1.0])
    cfg = PretrainConfig(epochs=10, batch_size=4, seed=1, patience=2)
    result = pretrain(x, tmp_path / "run", SMALL, cfg, progress=False, validation=val)
    # epoch 2 is best; epochs 3 and 4 bring nothing lower (2.0 is not < 2.0): stop after 4
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.stopped_early and result.best_epoch == 2
    assert [r["best_epoch"] for r in result.history] == [1, 2, 2, 2]
    best = ckpt.load_checkpoint(result.best_checkpoint)
    assert best.epoch == 2
    ref = pretrain(x, tmp_path / "ref", SMALL, PretrainConfig(epochs=2, batch_size=4, seed=1),
                   progress=False)
    assert all(torch.equal(best.state_dict[k], v) for k, v in _weights(ref.run_dir).items())
    # resuming a run that has stopped trains nothing more
    again = pretrain(x, tmp_path / "run", SMALL, cfg, resume=True, progress=False, validation=val)
    assert len(again.history) == 4 and again.stopped_early and again.best_epoch == 2
    assert ckpt.load_checkpoint(tmp_path / "run").epoch == 4


def test_resume_with_early_stopping_matches_an_uninterrupted_run(tmp_path):
    x, val = _toy_windows(n=10), _toy_windows(n=5, seed=7)
    cfg = PretrainConfig(epochs=4, batch_size=5, seed=2, patience=1)
    full = pretrain(x, tmp_path / "full", SMALL, cfg, progress=False, validation=val)
    pretrain(x, tmp_path / "split", SMALL, PretrainConfig(epochs=1, batch_size=5, seed=2, patience=1),
             progress=False, validation=val)
    split = pretrain(x, tmp_path / "split", SMALL, cfg, resume=True, progress=False, validation=val)
    assert [r["val_loss"] for r in split.history] == [r["val_loss"] for r in full.history]
    assert (split.best_epoch, split.stopped_early) == (full.best_epoch, full.stopped_early)
    a = ckpt.load_checkpoint(full.best_checkpoint).state_dict
    b = ckpt.load_checkpoint(split.best_checkpoint).state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="validated on other windows"):
        pretrain(x, tmp_path / "split", SMALL, cfg, resume=True, progress=False,
                 validation=_toy_windows(n=5, seed=8))


def test_patience_needs_validation_windows(tmp_path):
    with pytest.raises(ValueError, match="validation"):
        pretrain(_toy_windows(n=4), tmp_path / "run", SMALL,
                 PretrainConfig(epochs=1, batch_size=4, patience=2), progress=False)


def test_the_random_streams_of_a_run_are_pinned():
    """Every draw of a run derives from these seeds (numpy's SeedSequence and torch's CPU
    generators give the same numbers on every machine), so a change to a stream's number
    or derivation, which would change every run's weights and break resuming, fails here."""
    from ecgfast.training import seeds
    from ecgfast.training.batches import epoch_batches

    assert [seeds.INIT, seeds.ORDER, seeds.AUGMENT, seeds.GLOBAL, seeds.VALIDATION] == [0, 1, 2,
                                                                                         3, 4]
    seeds.seed_model_init(7)
    assert torch.initial_seed() == 4625441644015172652
    assert seeds.order_generator(7, 1).initial_seed() == 5936487953414559555
    assert int(seeds.step_random(7, 1, 0, 2, 4, torch.device("cpu")).seed) == 1001807353889157566
    seeds.seed_epoch(7, 1, 0)
    assert torch.initial_seed() == 888946925548604815
    assert seeds.validation_generator(7, 0, torch.device("cpu")).initial_seed() == \
        5604238831533124356
    assert [b.tolist() for b in epoch_batches(10, 1, PretrainConfig(batch_size=4, seed=7), 0,
                                              1)] == [[9, 1, 0, 5], [2, 8, 6, 7], [4, 3]]
