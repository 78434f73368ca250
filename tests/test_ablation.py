"""ecgfast ablation: options, a tiny end-to-end run, rerun, and SIGKILL + resume.

The runs use a tiny cohort of short windows (128 samples) so that a cell takes seconds;
the pipeline is the same as on 2560-sample windows.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ecgfast.ablation import PRESETS, AblationConfig, read_toml, resolve
from ecgfast.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: keys of a cell record that hold wall times: they differ between any two runs
TIMES = ("seconds_to_convergence", "pretrain_seconds", "probe_seconds",
         "this_session_pretrain_seconds")


def _cohort_file(path):
    from ecgfast.data import Cohort

    rng = np.random.default_rng(0)
    session = np.repeat(np.arange(8), 2).astype(np.int64)  # 4 subjects x 2 sessions x 2
    arousal, valence = session % 2, (session // 2) % 2
    t = np.arange(128) / 256.0
    w = np.sin(2 * np.pi * (4 + 2 * arousal[:, None]) * t) + 0.3 * rng.standard_normal((16, 128))
    Cohort(windows=w.astype(np.float32), subject=session // 2, session=session, fs=256.0,
           labels={"arousal": arousal, "valence": valence},
           classes={"arousal": ("low", "high"), "valence": ("low", "high")}).save(path)
    return path


def _args(data, out):
    return ["ablation", "--data", str(data), "--out", str(out), "--configs", "none,all",
            "--seeds", "1", "--max-epochs", "2", "--patience", "2", "--batch-size", "6",
            "--probe-epochs", "5", "--subject-folds", "2", "--window-folds", "3", "--quiet"]


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "ecgfast", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run (in a subprocess, like the killed one it is compared with)."""
    root = tmp_path_factory.mktemp("ablation")
    data = _cohort_file(root / "tiny.npz")
    proc = _run(_args(data, root / "ref"))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return data, root / "ref", out


def _without_times(payload):
    cells = [{k: v for k, v in c.items() if k not in TIMES} for c in payload["cells"]]
    rows = [{k: v for k, v in r.items() if k not in ("seconds_to_convergence", "pretrain_seconds")}
            for r in payload["rows"]]
    return cells, rows, payload["differences"]


def test_end_to_end_writes_every_table(reference):
    _, out, printed = reference
    payload = json.loads((out / "table1.json").read_text())
    assert [c["cell"] for c in payload["cells"]] == ["none-plain-seed0", "all-plain-seed0"]
    for cell in payload["cells"]:
        assert cell["epochs_run"] == 2 and 1 <= cell["best_epoch"] <= 2
        assert cell["best_epoch"] == int(np.argmin(cell["val_loss"])) + 1
        assert cell["seconds_to_convergence"] <= cell["pretrain_seconds"]
        assert set(cell["results"]) == {"subject", "window"}
        assert len(cell["results"]["window"]["valence"]["f1_folds"]) == 3
    assert payload["config"]["configs"] == ["none", "all"]
    assert payload["environment"]["torch"] and payload["data"]["n_subjects"] == 4
    md = (out / "table1.md").read_text()
    assert md in printed
    for text in (("| Configuration | Training time | Arousal Acc. | Arousal F1 | Valence Acc. "
                  "| Valence F1 | Epochs to convergence |"), "No skip connections",
                 "Skip connections in all blocks", "Subject-wise folds", "Window-level 3-fold",
                 "Difference to no skip connections", "t-interval"):
        assert text in md
    with open(out / "table1.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * (2 + 3)  # cells x tasks x (subject + window folds)
    cell = payload["cells"][1]
    first = next(r for r in rows if r["residual"] == "all" and r["split"] == "window"
                 and r["task"] == "arousal" and r["fold"] == "0")
    assert float(first["accuracy"]) == cell["results"]["window"]["arousal"]["accuracy_folds"][0]
    diff = payload["differences"][0]["splits"]["window"]["arousal"]["accuracy"]
    base = payload["cells"][0]["results"]["window"]["arousal"]["accuracy_folds"]
    pairs = np.subtract(cell["results"]["window"]["arousal"]["accuracy_folds"], base)
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(pairs.mean())
    if diff["sd"]:
        assert diff["low"] < diff["mean"] < diff["high"]
    assert (out / "table1.png").stat().st_size > 10_000
    assert read_toml(out / "ablation.toml") == {k: v for k, v in AblationConfig(
        **read_toml(out / "ablation.toml")).to_dict().items() if v is not None}


def test_rerun_redoes_nothing_and_other_options_are_refused(reference, tmp_path, capsys):
    data, ref, _ = reference
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if "cells" in p.parts}
    t0 = time.perf_counter()
    assert main(_args(data, out)) == 0
    assert time.perf_counter() - t0 < 30
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if "cells" in p.parts} == stamps
    assert _without_times(json.loads((out / "table1.json").read_text())) == \
        _without_times(json.loads((ref / "table1.json").read_text()))
    capsys.readouterr()
    assert main([*_args(data, out), "--probe-epochs", "6"]) == 2
    assert "probe_epochs" in capsys.readouterr().err


def test_sigkill_mid_cell_then_rerun_gives_the_same_table(reference, tmp_path):
    """Kill during the second cell's pretraining; the rerun keeps the first cell's result
    and resumes the second from its checkpoint. Every score, epoch count and validation
    loss matches the uninterrupted run; the wall times differ and are left out."""
    data, ref, _ = reference
    out = tmp_path / "killed"
    proc = _run(_args(data, out))
    second = out / "cells" / "all-plain-seed0"
    deadline = time.monotonic() + 300
    while not (second / "run" / "checkpoints" / "latest").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.poll() is None  # still running: killed mid-way
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (out / "cells" / "none-plain-seed0" / "result.json").is_file()
    assert not (second / "result.json").exists() and not (out / "table1.json").exists()
    first_mtime = (out / "cells" / "none-plain-seed0" / "result.json").stat().st_mtime_ns

    proc = _run(_args(data, out))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert (out / "cells" / "none-plain-seed0" / "result.json").stat().st_mtime_ns == first_mtime
    resumed = json.loads((out / "table1.json").read_text())
    assert _without_times(resumed) == _without_times(json.loads((ref / "table1.json").read_text()))
    metrics = (second / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in metrics if '"kind": "epoch"' in r] == [1, 2]


# ------------------------------------------------------------------------------ options


def test_precedence_defaults_preset_file_flags(tmp_path):
    cfg = resolve({})
    assert cfg.configs == ("none", "first", "first_two", "all") and cfg.seeds == 3
    assert cfg.attention == "off" and cfg.objective == "transform" and cfg.split == "both"
    quick = resolve({"preset": "quick"})
    assert all(getattr(quick, k) == v for k, v in PRESETS["quick"].items())
    toml = tmp_path / "a.toml"
    toml.write_text('preset = "quick"\nseeds = 5\nmax-epochs = 7\nconfigs = ["all", "none"]\n')
    cfg = resolve({"seeds": 1}, toml)
    assert (cfg.seeds, cfg.max_epochs, cfg.configs, cfg.preset) == (1, 7, ("all", "none"), "quick")
    assert cfg.subjects == PRESETS["quick"]["subjects"]
    assert resolve({"configs": "first,all", "tasks": "affect"}).configs == ("first", "all")
    back = tmp_path / "back.toml"
    back.write_text(cfg.to_toml())
    assert resolve({}, back) == cfg


@pytest.mark.parametrize("options,match", [
    ({"configs": "none,second"}, "second"), ({"configs": "all,all"}, "more than once"),
    ({"attention": "maybe"}, "attention"), ({"seeds": 0}, "seeds"), ({"split": "fold"}, "split"),
    ({"window_folds": 1}, "window_folds"), ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"preset": "slow"}, "preset"), ({"lr": 0.0}, "lr"), ({"colour": 1}, "colour"),
    ({"dropout": 1.5}, "dropout"), ({"objective": "mae"}, "objective"),
])
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        resolve(options)


def test_bad_config_files_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = = 3\n")
    assert main(["ablation", "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert "bad.toml" in capsys.readouterr().err
    bad.write_text("epochs = 3\n")
    assert main(["ablation", "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert "epochs" in capsys.readouterr().err
    assert main(["ablation", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "no.toml")]) == 2
    assert "no.toml" in capsys.readouterr().err


def test_validation_subjects_are_held_out_per_seed():
    from ecgfast.ablation.runner import validation_subjects

    subject = np.repeat(np.arange(10), 3)
    a, b = validation_subjects(subject, 0.2, 0), validation_subjects(subject, 0.2, 1)
    assert len(a) == 2 and len(b) == 2 and not np.array_equal(a, b)
    assert np.array_equal(a, validation_subjects(subject, 0.2, 0))
    assert len(validation_subjects(np.array([0, 1]), 0.9, 0)) == 1  # never every subject
    with pytest.raises(ValueError, match="2 subjects"):
        validation_subjects(np.zeros(4), 0.2, 0)
