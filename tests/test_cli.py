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
    for command in ("pretrain", "evaluate", "demo", "ablation", "datasets"):
        assert command in out.stdout


def test_spelled_out_choices_are_the_library_s():
    """The parser spells --residual's and --augment's choices out (it imports no torch);
    they must stay the encoder's and the augmentation's presets."""
    from ecgfast.cli.common import AUGMENT_CHOICES, RESIDUAL_CHOICES
    from ecgfast.models import RESIDUAL_PRESETS
    from ecgfast.transforms import AUGMENT_PRESETS

    assert RESIDUAL_CHOICES == tuple(RESIDUAL_PRESETS)
    assert AUGMENT_CHOICES == tuple(AUGMENT_PRESETS)


def test_pretrain_resume_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--out", str(run), "--epochs", "1", "--quiet", "--objective", "both",
            "--augment", "hr-preserving", *FAST, *TINY]
    assert main(args) == 0
    assert (run / "checkpoints" / "epoch-0001" / "model.safetensors").is_file()
    from ecgfast.training import load_checkpoint

    assert load_checkpoint(run).config["training"]["augment"] == "hr-preserving"
    assert main(args) == 2  # a second run into the same directory is refused
    assert "resume" in capsys.readouterr().err
    resume = [a if a != "1" else "2" for a in args] + ["--resume"]
    assert main(resume) == 0
    assert (run / "checkpoints" / "epoch-0002").is_dir()
    capsys.readouterr()

    out_json = tmp_path / "eval.json"
    assert main(["evaluate", str(run), "--quiet", "--out", str(out_json), "--seeds", "2",
                 "--probe-epochs", "30", "--calibrate", "both", *TINY]) == 0
    printed = capsys.readouterr().out
    for text in ("random init", "HRV features", "arousal Acc.", "valence AUROC",
                 "majority class (chance)", "Paired differences", "transductive"):
        assert text in printed, text
    payload = json.loads(out_json.read_text())
    rows = payload["rows"]
    assert {r["name"] for r in rows} == {str(run), "random init", "HRV features"}
    assert {(r["probe"], r["calibration"]) for r in rows} == {
        (p, c) for p in ("linear", "mlp") for c in ("none", "subject")}
    for row in rows:
        assert row["seeds"] == [0, 1]
        assert len(row["scores"]["valence"]["accuracy"][1]) == 3  # 3 subject folds
        assert 0.0 <= row["summary"]["arousal"]["auroc"]["mean"] <= 1.0
    versus = {(d["name"], d["versus"]) for d in payload["differences"]}
    assert (str(run), "random init") in versus and (str(run), "HRV features") in versus
    protocol = payload["protocol"]
    assert protocol["transductive"] and protocol["augmentation"] == {str(run): "hr-preserving"}
    assert protocol["hrv"]["n_windows"] == 24 and "Nadeau" in protocol["interval"]


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
    # the checkpoint records the data and the chain it went through
    from ecgfast.data.contract import Preprocessing
    from ecgfast.provenance import contract_of_checkpoint, provenance_of
    from ecgfast.training import load_checkpoint

    config = load_checkpoint(tmp_path / "r").config
    assert contract_of_checkpoint(config, "r").preprocessing == Preprocessing()
    data = provenance_of(config)["data"]
    assert data["source"] == str(tmp_path / "rec.npy") and data["n_windows"] == 4


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


def test_a_programming_error_is_not_swallowed(monkeypatch, capsys):
    """Only the user's errors become one line and exit 2; a bug keeps its traceback."""
    from ecgfast.cli import train

    def bug(args):
        return len(None)  # TypeError

    monkeypatch.setattr(train, "cmd_datasets", bug)
    with pytest.raises(TypeError):
        main(["datasets"])
    monkeypatch.setattr(train, "cmd_datasets", lambda args: {}["missing"])
    with pytest.raises(KeyError):
        main(["datasets"])
    assert capsys.readouterr().err == ""


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


# ------------------------------------------------------------- --data NAME:ROOT, datasets


def _tiny_cohort(length=256):
    """3 subjects x 4 sessions x 3 windows, a 4-class task and a binary one."""
    from ecgfast.data import Cohort

    rng = np.random.default_rng(0)
    session = np.repeat(np.arange(12), 3).astype(np.int64)
    subject = session // 4
    affect = (session % 4).astype(np.int64)
    t = np.arange(length) / 256.0
    windows = np.sin(2 * np.pi * (1 + affect[:, None]) * t) + 0.2 * rng.standard_normal((36, length))
    return Cohort(windows=windows.astype(np.float32), subject=subject, session=session, fs=256.0,
                  labels={"affect": affect, "stress": (affect == 1).astype(np.int64)},
                  classes={"affect": ("baseline", "stress", "amusement", "meditation"),
                           "stress": ("no stress", "stress")},
                  provenance={"dataset": "fake"})


@pytest.fixture
def fake_dataset(monkeypatch, tmp_path):
    """A dataset 'fake' in DATASETS whose loader counts its calls (root: tmp_path/root)."""
    from ecgfast import datasets
    from ecgfast.datasets import DatasetInfo

    root = tmp_path / "root"
    root.mkdir()
    (root / "data.bin").write_bytes(b"x")
    calls = []

    def load(root, *, threshold, lead, progress, skip_bad):
        calls.append({"threshold": threshold, "lead": lead, "skip_bad": skip_bad})
        return _tiny_cohort()

    info = DatasetInfo(name="fake", title="a fake dataset", layout="data.bin   the only file",
                       tasks=("affect", "stress"), default_threshold=None, leads=("I", "II"),
                       load=load, source_files=lambda r: [r / "data.bin"], fs=256.0)
    monkeypatch.setitem(datasets.DATASETS, "fake", info)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return root, calls


def test_data_name_root_loads_through_the_cache(fake_dataset, tmp_path, capsys):
    root, calls = fake_dataset
    args = ["evaluate", "random", "--data", f"fake:{root}", "--lead", "II", "--quiet",
            "--probe-epochs", "5", "--folds", "3", "--seeds", "1", "--probe", "linear"]
    assert main(args) == 0
    assert calls == [{"threshold": None, "lead": 1, "skip_bad": False}]
    assert list((tmp_path / "xdg" / "ecgfast").rglob("*.npz"))  # default cache directory
    assert main(args) == 0 and len(calls) == 1  # the second load reads the cache
    assert main([*args, "--no-cache", "--skip-bad"]) == 0
    assert calls[-1]["skip_bad"] and len(calls) == 2
    assert main([*args, "--cache-dir", str(tmp_path / "elsewhere")]) == 0
    assert len(calls) == 3 and list((tmp_path / "elsewhere").rglob("*.npz"))
    out = capsys.readouterr().out
    assert "affect Acc." in out and "stress F1" in out and "arousal" not in out


def test_pretrain_on_a_named_dataset(fake_dataset, tmp_path):
    root, calls = fake_dataset
    assert main(["pretrain", "--data", f"fake:{root}", "--out", str(tmp_path / "r"), "--epochs",
                 "1", "--quiet", "--no-cache", *FAST]) == 0
    assert len(calls) == 1 and (tmp_path / "r" / "checkpoints" / "latest").is_file()


def test_evaluate_tasks_multiclass(fake_dataset, tmp_path, capsys):
    root, _ = fake_dataset
    out = tmp_path / "eval.json"
    assert main(["evaluate", "random", "--data", f"fake:{root}", "--tasks", "affect", "--quiet",
                 "--probe-epochs", "20", "--folds", "3", "--out", str(out), "--seeds", "1",
                 "--baselines", "none", "--probe", "mlp"]) == 0
    printed = capsys.readouterr().out
    assert "affect Acc." in printed and "stress" not in printed and "AUROC" not in printed
    payload = json.loads(out.read_text())
    assert payload["classes"] == {"affect": ["baseline", "stress", "amusement", "meditation"]}
    (row,) = payload["rows"]
    assert row["name"] == "random init" and len(row["scores"]["affect"]["f1"][0]) == 3
    assert 0.0 <= row["summary"]["affect"]["f1"]["mean"] <= 1.0
    assert payload["provenance"]["dataset"] == "fake"
    assert main(["evaluate", "random", "--data", f"fake:{root}", "--tasks", "affect,nope"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["evaluate", "random", "--data", "nosuch:/tmp"], "unknown dataset 'nosuch'"),
    (["evaluate", "random", "--data", "nosuch:/tmp"], "wesad"),  # the known names are listed
    (["evaluate", "random", "--threshold", "3", *TINY], "--threshold"),
    (["evaluate", "random", "--lead", "II", *TINY], "--lead applies to --data NAME:ROOT"),
    (["evaluate", "random", "--data", "wesad:/no/such/root"], "/no/such/root"),
    (["datasets", "nosuch"], "nosuch"),
])
def test_bad_dataset_arguments_are_named(argv, match, capsys):
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_datasets_command_lists_names_layouts_and_tasks(capsys):
    from ecgfast.datasets import DATASETS

    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name, info in DATASETS.items():
        assert f"{name}: {info.title}" in out
        assert f"tasks: {', '.join(info.tasks)}" in out
        assert info.layout.strip().splitlines()[0].strip() in out
    assert "--data NAME:ROOT" in out
    assert main(["datasets", "wesad"]) == 0
    assert "dreamer" not in capsys.readouterr().out.split("load one with")[0]


def test_dataset_spec_parsing(tmp_path, monkeypatch):
    from ecgfast.cli.common import dataset_spec, default_cache_dir

    assert dataset_spec("wesad:/data/WESAD") == ("wesad", "/data/WESAD")
    assert dataset_spec("WESAD:rel/dir") == ("wesad", "rel/dir")
    assert dataset_spec("synthetic") is None and dataset_spec("x.npz") is None
    odd = tmp_path / "a:b.npz"
    odd.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert dataset_spec("a:b.npz") is None  # an existing file wins
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert default_cache_dir() == __import__("pathlib").Path("/xdg/ecgfast")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir().parts[-2:] == (".cache", "ecgfast")
