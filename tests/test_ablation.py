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
#: keys that hold wall times or rates: they differ between any two runs
TIMES = {"seconds_to_convergence", "pretrain_seconds", "probe_seconds", "seconds",
         "this_session_pretrain_seconds", "windows_per_s", "embed_seconds"}


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
            "--probe-epochs", "5", "--split", "subject", "--subject-folds", "2", "--quiet",
            "--baselines", "hrv,random,supervised", "--supervised-epochs", "1",
            "--calibrate", "both"]


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "ecgfast", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run (in a subprocess, like the killed one it is compared with)."""
    root = tmp_path_factory.mktemp("ablation")
    data = _cohort_file(root / "tiny.npz")
    proc = _run(_args(data, root / "ref"))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return data, root / "ref", out, err


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _without_times(payload):
    return _strip({k: payload[k] for k in ("cells", "rows", "differences", "config_differences")})


def test_end_to_end_writes_every_table(reference):
    _data, out, printed, _err = reference
    payload = json.loads((out / "table1.json").read_text())
    cells = {c["cell"]: c for c in payload["cells"]}
    assert list(cells) == ["none-plain-seed0", "all-plain-seed0", "random-none-plain-seed0",
                           "random-all-plain-seed0", "supervised-all-plain-seed0", "hrv-seed0"]
    subject = np.repeat(np.arange(4), 4)
    for name in ("none-plain-seed0", "all-plain-seed0"):
        cell = cells[name]
        assert cell["scope"] == "per-fold" and [u["unit"] for u in cell["units"]] == [
            "subject-fold0", "subject-fold1"]
        for unit in cell["units"]:
            assert unit["epochs_run"] == 2 and unit["best_epoch"] == int(np.argmin(unit["val_loss"])) + 1
            # each fold pretrains on the 2 training subjects: one trains, one validates
            assert (unit["n_pretrain_windows"], unit["n_validation_windows"]) == (4, 4)
            assert unit["windows_per_s"] > 0 and unit["precision"] in ("fp32", "bf16")
        assert set(cell["results"]["subject"]) == {"encoder"}
        assert set(cell["results"]["subject"]["encoder"]) == {"none", "subject"}
    rec = cells["none-plain-seed0"]["results"]["subject"]["encoder"]["none"]["linear"]["arousal"]
    assert set(rec) == {"accuracy", "f1", "balanced_accuracy", "auroc", "majority_rate", "n_test"}
    assert len(rec["accuracy"]) == 2 and sum(rec["n_test"]) == len(subject)
    assert payload["scope"] == "per-fold" and "no test subject" in payload["scope_text"]
    assert payload["config"]["configs"] == ["none", "all"]
    assert payload["environment"]["torch"] and payload["data"]["n_subjects"] == 4
    assert payload["hrv"]["n_windows"] == 16 and payload["estimate"]["seconds"] > 0
    kinds = {(r["kind"], r["probe"], r["calibration"]) for r in payload["rows"]}
    assert {("encoder", "linear", "subject"), ("random", "mlp", "none"), ("hrv", "linear", "none"),
            ("supervised", "end-to-end", "none")} <= kinds
    versus = {(d["name"], d["versus_kind"]) for d in payload["differences"]}
    assert {("Skip connections in all blocks", "random"),
            ("Skip connections in all blocks", "hrv")} <= versus
    md = (out / "table1.md").read_text()
    assert md in printed and (out / "estimate.json").is_file()
    for text in (("| Configuration | Training time | Arousal Acc. | Arousal F1 | Arousal Bal. acc. "
                 "| Arousal AUROC | Valence Acc."), "No skip connections",
                 "random init: Skip connections in all blocks", "HRV features",
                 "supervised: Skip connections in all blocks", "majority class (chance)",
                 "Difference to no skip connections", "Nadeau & Bengio", "transductive",
                 "Pretraining scope", "- Compute:", "estimated at the start"):
        assert text in md, text
    with open(out / "table1.csv") as f:
        lines = list(csv.DictReader(f))
    # rows: 2 pretrained + 2 random (x 2 probes x 2 calibrations) + HRV (4) + supervised (1)
    assert len(lines) == (4 * 4 + 4 + 1) * 2 * 2  # x tasks x folds
    first = next(r for r in lines if r["name"] == "Skip connections in all blocks"
                 and r["probe"] == "mlp" and r["calibration"] == "none" and r["task"] == "arousal"
                 and r["fold"] == "1")
    assert float(first["accuracy"]) == cells["all-plain-seed0"]["results"]["subject"]["encoder"][
        "none"]["mlp"]["arousal"]["accuracy"][1]
    diff = next(d for d in payload["config_differences"] if d["probe"] == "linear"
                and d["calibration"] == "none")["tasks"]["arousal"]["accuracy"]
    pairs = np.subtract(cells["all-plain-seed0"]["results"]["subject"]["encoder"]["none"][
        "linear"]["arousal"]["accuracy"], rec["accuracy"])
    assert diff["n"] == 2 and diff["mean"] == pytest.approx(pairs.mean())
    assert (out / "table1.png").stat().st_size > 10_000
    from ecgfast.ablation.compare import compare

    same = compare(payload, payload)
    assert len(same) == len(payload["rows"])
    assert all(v["mean"] == 0 and v["verdict"] == "tied" for d in same
               for per in d["tasks"].values() for v in per.values() if v["n"])
    assert read_toml(out / "ablation.toml") == {k: v for k, v in AblationConfig(
        **read_toml(out / "ablation.toml")).to_dict().items() if v is not None}


def test_rerun_redoes_nothing_and_other_options_are_refused(reference, tmp_path, capsys):
    data, ref, _, _ = reference
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if "cells" in p.parts}
    assert main(_args(data, out)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if "cells" in p.parts} == stamps
    assert _without_times(json.loads((out / "table1.json").read_text())) == \
        _without_times(json.loads((ref / "table1.json").read_text()))
    capsys.readouterr()
    assert main([*_args(data, out), "--probe-epochs", "6"]) == 2
    assert "probe_epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_mid_cell_then_rerun_gives_the_same_table(reference, tmp_path):
    """Kill during the second cell's pretraining; the rerun keeps the first cell's result
    and resumes the second from its checkpoint. Every score, epoch count and validation
    loss matches the uninterrupted run; the wall times differ and are left out."""
    data, ref, _, _ = reference
    out = tmp_path / "killed"
    proc = _run(_args(data, out))
    second = out / "cells" / "all-plain-seed0" / "subject-fold0"
    deadline = time.monotonic() + 600
    while not (second / "run" / "checkpoints" / "latest").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc.poll() is None  # still running: killed mid-way
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (out / "cells" / "none-plain-seed0" / "result.json").is_file()
    assert not (second.parent / "result.json").exists() and not (out / "table1.json").exists()
    first_mtime = (out / "cells" / "none-plain-seed0" / "result.json").stat().st_mtime_ns
    first_estimate = (out / "estimate.json").read_text()
    killed = json.loads((out / "invocations.json").read_text())
    assert len(killed) == 1 and killed[0]["cells_run"] == 1 and not killed[0]["finished"]

    proc = _run(_args(data, out))
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert (out / "cells" / "none-plain-seed0" / "result.json").stat().st_mtime_ns == first_mtime
    resumed = json.loads((out / "table1.json").read_text())
    assert _without_times(resumed) == _without_times(json.loads((ref / "table1.json").read_text()))
    assert (out / "estimate.json").read_text() == first_estimate  # the run's first estimate
    invocations = json.loads((out / "invocations.json").read_text())
    assert invocations[0] == killed[0] and invocations[1]["finished"]
    assert invocations[1]["estimate_remaining_s"] > 0 and resumed["invocations"] == invocations
    metrics = (second / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in metrics if '"kind": "epoch"' in r] == [1, 2]


def test_pretraining_never_sees_a_test_subject():
    from ecgfast.ablation.scope import Unit, check_disjoint, pretraining_units
    from ecgfast.evaluation import make_folds

    subject = np.repeat(np.arange(6), 5)
    folds = {s: make_folds(30, s, groups=subject, n_folds=3, seed=1) for s in ("subject", "window")}
    units = pretraining_units("per-fold", folds, n_source=30, subject_source=subject,
                              fraction=0.3, seed=1)
    assert len(units) == 6
    check_disjoint(units, folds, subject)
    for u in units:
        test = folds[u.split][u.fold]
        seen = np.concatenate([u.train, u.validation])
        assert sorted(np.concatenate([seen, test]).tolist()) == list(range(30))
        assert not set(seen) & set(test)
        if u.split == "subject":
            assert not set(subject[seen]) & set(subject[test])
        assert not set(subject[u.train]) & set(subject[u.validation])  # early stopping: held-out subjects
    bad = Unit("subject-fold0", "subject", 0, np.arange(30), np.arange(0))
    with pytest.raises(RuntimeError, match="test subjects"):
        check_disjoint([bad], folds, subject)
    (whole,) = pretraining_units("transductive", folds, n_source=30, subject_source=subject,
                                 fraction=0.3, seed=1)
    assert len(whole.train) + len(whole.validation) == 30


@pytest.mark.slow
def test_a_separate_pretraining_source_is_checked(tmp_path, capsys):
    """Another source is pretrained on once per cell after a check that it shares no
    window with the labelled data; a copy of the labelled data is refused unless
    --transductive, which the table then states."""
    data = _cohort_file(tmp_path / "tiny.npz")
    shutil.copy(data, tmp_path / "copy.npz")
    rng = np.random.default_rng(5)
    np.save(tmp_path / "rec.npy", np.sin(np.arange(256 * 30) / 7.0) + 0.1 * rng.standard_normal(256 * 30))
    small = [*_args(data, tmp_path / "x"), "--configs", "none", "--baselines", "none",
             "--calibrate", "none", "--probe", "linear", "--max-epochs", "1", "--patience", "1"]
    assert main([*small, "--pretrain-data", str(tmp_path / "copy.npz")]) == 2
    assert "16 window(s) in common" in capsys.readouterr().err
    for source, extra, scope in (("rec.npy", ["--fs", "256"], "separate"),
                                 ("copy.npz", ["--transductive"], "transductive")):
        out = tmp_path / scope
        args = [a if a != str(tmp_path / "x") else str(out) for a in small]
        assert main([*args, "--pretrain-data", str(tmp_path / source), *extra]) == 0
        payload = json.loads((out / "table1.json").read_text())
        assert payload["scope"] == scope and [u["unit"] for u in payload["cells"][0]["units"]] == ["all"]
        md = (out / "table1.md").read_text()
        assert (scope == "transductive") == ("TRANSDUCTIVE" in md)
        # a recording names no subjects: early stopping holds out windows, and says so
        assert payload["validation_by"] == ("windows" if scope == "separate" else "subjects")
        assert (scope == "separate") == ("source names no subjects" in md)
    assert payload["cells"][0]["units"][0]["n_pretrain_windows"] == 12  # 16 less 1 held-out subject
    capsys.readouterr()


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


def test_cost_estimate_by_hand():
    from ecgfast.ablation.cost import estimate, hours

    config = resolve({"configs": "none,all", "seeds": 2, "max_epochs": 3,
                      "baselines": "hrv,random,supervised", "supervised_epochs": 4})
    rates = {"windows_per_s": {"pretrain": 10.0, "validation": 40.0, "embed": 100.0,
                               "supervised": 20.0}}
    est = estimate(config, rates, n_labelled=200, unit_sizes=[(120, 40), (130, 30)], n_tasks=1,
                   n_train_per_fold=[160, 160])
    per_cell = 3 * (120 / 10 + 40 / 40) + 2 + 3 * (130 / 10 + 30 / 40) + 2
    assert est["parts"]["pretraining"] == pytest.approx(4 * per_cell)
    assert est["parts"]["random_init"] == pytest.approx(4 * 2)
    assert est["parts"]["supervised"] == pytest.approx(2 * 4 * 320 / 20)
    assert est["pretraining_runs"] == 8 and est["seconds"] == pytest.approx(sum(est["parts"].values()))
    assert (hours(40), hours(720), hours(3900)) == ("40 s", "12 min", "1 h 05 min")
