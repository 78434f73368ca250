"""The ecgfast command, end to end on tiny synthetic data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ecgfast.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--subjects", "3", "--sessions", "4", "--session-seconds", "20"]
FAST = ["--max-steps-per-epoch", "1", "--batch-size", "4"]


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "ecgfast", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0
    for command in ("pretrain", "evaluate", "demo"):
        assert command in out.stdout


def test_pretrain_resume_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--out", str(run), "--epochs", "1", "--quiet", "--objective", "both",
            *FAST, *TINY]
    assert main(args) == 0
    assert (run / "checkpoints" / "epoch-0001" / "model.safetensors").is_file()
    assert main(args) == 2  # a second run into the same directory is refused
    assert "resume" in capsys.readouterr().err
    resume = [a if a != "1" else "2" for a in args] + ["--resume"]
    assert main(resume) == 0
    assert (run / "checkpoints" / "epoch-0002").is_dir()
    capsys.readouterr()

    out_json = tmp_path / "eval.json"
    assert main(["evaluate", str(run), "random", "--quiet", "--out", str(out_json),
                 "--probe-epochs", "30", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "random init" in printed and "arousal acc" in printed
    results = json.loads(out_json.read_text())["results"]
    assert set(results) == {str(run), "random init"}
    for model in results.values():
        assert 0.0 <= model["arousal"]["accuracy_mean"] <= 1.0
        assert model["valence"]["n_folds"] == 3


def test_pretrain_on_a_recording(tmp_path, capsys):
    from ecgfast.data import ecgsyn

    sig = ecgsyn(45.0, fs=360.0, heart_rate=70.0, rng=0)
    np.save(tmp_path / "rec.npy", sig)
    assert main(["pretrain", "--data", str(tmp_path / "rec.npy"), "--out", str(tmp_path / "r"),
                 "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "rec.npy" in err and "fs" in err
    assert main(["pretrain", "--data", str(tmp_path / "rec.npy"), "--fs", "360",
                 "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet"]) == 0
    assert (tmp_path / "r" / "checkpoints" / "latest").is_file()


@pytest.mark.parametrize("argv,match", [
    (["evaluate", "random", "--data", "missing.npz"], "missing.npz"),
    (["pretrain", "--out", "x", "--data", "missing.csv"], "missing.csv"),
    (["pretrain", "--out", "x", "--dropout", "1.5", *TINY], "dropout"),
    (["pretrain", "--out", "x", "--lr", "0", *TINY], "lr"),
    (["evaluate", "no-such-run", *TINY], "no-such-run"),
])
def test_bad_arguments_are_named(argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_evaluate_needs_labels(tmp_path, capsys):
    np.save(tmp_path / "rec.npy", np.sin(np.arange(256 * 30) / 10.0))
    assert main(["evaluate", "random", "--data", str(tmp_path / "rec.npy"), "--fs", "256"]) == 2
    assert "labelled" in capsys.readouterr().err


def test_evaluate_corrupt_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--epochs", "1", "--quiet", *FAST, *TINY]) == 0
    weights = run / "checkpoints" / "epoch-0001" / "model.safetensors"
    weights.write_bytes(b"\x00" * 10)
    capsys.readouterr()
    assert main(["evaluate", str(run), *TINY]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--quiet", "--probe-epochs", "30",
                 *FAST, *TINY]) == 0
    printed = capsys.readouterr().out
    assert "pretrained" in printed and "random init" in printed
    payload = json.loads((out / "demo_results.json").read_text())
    assert set(payload["results"]) == {"pretrained", "random init"}
    assert (out / "training_curve.png").is_file()


def test_pretrain_under_torchrun_with_two_processes(tmp_path):
    """`torchrun --nproc_per_node 2 ecgfast pretrain` on gloo: DDP + gathered NT-Xent."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "ecgfast", "pretrain", "--out", str(run), "--epochs", "1",
           "--objective", "both", "--quiet", "--device", "cpu", *FAST, *TINY]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((run / "checkpoints" / "epoch-0001" / "config.json").read_text())
    assert config["world_size"] == 2
    assert proc.stdout.count("checkpoint:") == 1  # only rank 0 reports
