"""ecgfast prepare: a PTB-XL-like tree into a window store; determinism, resume, bad input."""

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from store_files import LEADS12, ptbxl_tree, twelve_lead, write_record

from ecgfast.data import ECGDataError, WindowStore, preprocess
from ecgfast.data.multilead import preprocess_leads
from ecgfast.data.prepare import prepare

pytest.importorskip("wfdb")
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")
REPO = Path(__file__).resolve().parents[2]


def _same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return ptbxl_tree(tmp_path_factory.mktemp("ptbxl"))


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("stores") / "one"
    prepare([tree], out, workers=1, shard_windows=3, progress=False)
    return out


def test_ptbxl_tree_into_a_store(built):
    store = WindowStore(built)
    # 8 records: 00006 corrupt (rejected), 00003 and 00006 are 25 s (two windows each);
    # records100 skipped (the same ECGs as records500)
    assert store.leads == tuple(LEADS12) and store.shape == (8, 12, 2560)
    assert [r["record"] for r in store.records] == [
        f"records500/00000/{i:05d}_hr" for i in (1, 2, 3, 4, 5, 7, 8)]
    assert [r["n_windows"] for r in store.records] == [1, 1, 2, 1, 1, 1, 1]
    assert store.records[3]["fs"] == 100.0 and store.records[0]["fs"] == 500.0
    (bad,) = store.rejected
    assert bad["record"] == "records500/00000/00006_hr" and "00006_hr.hea" in bad["reason"]
    assert any("records100" in note for note in store.manifest["notes"])
    assert store.manifest["dtype"] == "float16" and [s["n_windows"] for s in
                                                     store.manifest["shards"]] == [3, 3, 2]
    np.testing.assert_array_equal(store.window_record, [0, 1, 2, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(store.starts_s, [0, 0, 0, 10, 0, 0, 0, 0])
    x = store[3]
    assert x.shape == (12, 2560) and x.dtype.is_floating_point and str(x.dtype) == "torch.float32"
    batch = store.get_batch([3, 0])
    assert batch.shape == (2, 12, 2560) and (batch[0] == x).all()


def test_windows_are_the_training_preprocessing_per_lead(tree):
    """Each lead of a store window is `preprocess` of that lead."""
    sig = twelve_lead(25.0, 500.0, seed=3).T
    win = preprocess_leads(sig, 500.0)
    windows, starts, n_flat = win.windows, win.starts_s, win.n_skipped_flat
    assert windows.shape == (2, 12, 2560) and n_flat == 0
    np.testing.assert_array_equal(starts, [0.0, 10.0])
    for lead in (0, 7):
        ref = preprocess(sig[lead], 500.0)
        np.testing.assert_array_equal(windows[:, lead], ref.windows)
    sig[5, :5000] = 0.25  # a flat stretch in one lead drops that window from all leads
    win = preprocess_leads(sig, 500.0)
    windows, starts, n_flat = win.windows, win.starts_s, win.n_skipped_flat
    assert n_flat == 1 and windows.shape == (1, 12, 2560) and list(starts) == [10.0]


def test_worker_count_does_not_change_the_store(tree, built, tmp_path):
    prepare([tree], tmp_path / "two", workers=2, shard_windows=3, progress=False)
    _same_tree(built, tmp_path / "two")


def test_rerun_of_a_complete_store_does_nothing_and_other_arguments_are_refused(tree, built):
    before = {p: p.stat().st_mtime_ns for p in built.rglob("*") if p.is_file()}
    prepare([tree], built, workers=1, shard_windows=3, progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in built.rglob("*") if p.is_file()}
    with pytest.raises(ECGDataError, match=r"one.*other parameters"):
        prepare([tree], built, workers=1, shard_windows=4, progress=False)


def test_different_lead_sets_need_leads_and_missing_leads_are_rejected(tmp_path):
    folder = tmp_path / "mixed"
    write_record(folder, "a", 10.0, 500.0, seed=1)
    write_record(folder, "b", 10.0, 500.0, seed=2, leads=["I", "II", "V1"])
    write_record(folder, "c", 10.0, 500.0, seed=3, leads=["II", "I", "V1", "V2"][:3])
    with pytest.raises(ECGDataError, match=r"b\.hea.*leads \['I', 'II', 'V1'\] differ.*--leads"):
        prepare([folder], tmp_path / "s", workers=1, progress=False)
    store = WindowStore(prepare([folder], tmp_path / "s2", leads=["II", "V1", "V6"], workers=1,
                                progress=False))
    assert store.leads == ("II", "V1", "V6") and [r["record"] for r in store.records] == ["a"]
    reasons = {r["record"]: r["reason"] for r in store.rejected}
    assert set(reasons) == {"b", "c"} and "'V6'" in reasons["b"] and "has signals" in reasons["b"]
    # the same set in another order is the same lead set: reordered to the store's
    same = prepare([folder / "b.hea", folder / "c.hea"], tmp_path / "s3", workers=1,
                   progress=False)
    s3 = WindowStore(same)
    assert s3.leads == ("I", "II", "V1")
    c = twelve_lead(10.0, 500.0, seed=3)[:, :3]  # file c holds II, I, V1 = columns 0, 1, 2
    ref = preprocess_leads(np.round(c.T[[1, 0, 2]], 3), 500.0).windows[0].astype(np.float16)
    np.testing.assert_allclose(s3[1].numpy(), ref.astype(np.float32), atol=2e-2)


def test_mimic_layout_subjects_and_info(tmp_path, capsys):
    from ecgfast.cli import main

    for subject, study in (("p10000032", "s40689238"), ("p10000032", "s44458630"),
                           ("p10000117", "s45090959")):
        write_record(tmp_path / "files" / "p1000" / subject / study, study[1:], 10.0, 500.0,
                     seed=int(study[1:]) % 1000)
    assert main(["prepare", str(tmp_path / "files"), "--out", str(tmp_path / "m"),
                 "--workers", "1", "--dtype", "float32", "--quiet"]) == 0
    store = WindowStore(tmp_path / "m")
    assert list(store.subjects) == ["p10000032", "p10000032", "p10000117"]
    assert store.manifest["dtype"] == "float32"
    assert main(["prepare", "--info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "windows: 3 x 12 leads" in out and "subjects: 2" in out and "rejected: 0" in out
    assert main(["prepare", str(tmp_path / "nothere"), "--out", str(tmp_path / "x")]) == 2
    assert "nothere" in capsys.readouterr().err


def test_sigkill_and_rerun_gives_the_uninterrupted_store(tmp_path):
    folder = tmp_path / "recs"
    for i in range(24):
        write_record(folder / f"{i // 8:05d}", f"{i:05d}_hr", 60.0, 500.0, seed=i)
    code = ("import sys; from ecgfast.data.prepare import prepare; "
            "prepare([sys.argv[1]], sys.argv[2], workers=1, shard_windows=5, progress=False)")
    cmd = [sys.executable, "-W", "ignore", "-c", code, str(folder), str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    parts = tmp_path / "killed" / "parts"
    deadline = time.monotonic() + 120
    while not (parts.is_dir() and len(list(parts.glob("part-*.json"))) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "prepare ended before the kill"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "store.json").exists()  # killed mid-run
    with pytest.raises(ECGDataError, match="has not finished"):
        WindowStore(tmp_path / "killed")
    prepare([folder], tmp_path / "killed", workers=2, shard_windows=5, progress=False)
    prepare([folder], tmp_path / "whole", workers=1, shard_windows=5, progress=False)
    _same_tree(tmp_path / "killed", tmp_path / "whole")
    assert len(WindowStore(tmp_path / "whole")) == 24 * 6
    assert json.loads((tmp_path / "whole" / "store.json").read_text())["n_rejected"] == 0


def test_dataset_source_keeps_labels_and_subjects(tmp_path):
    import importlib.util

    from ecgfast.datasets import load_dataset

    spec = importlib.util.spec_from_file_location(
        "ecgfast_test_dataset_files", REPO / "tests" / "datasets" / "dataset_files.py")
    files = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = files
    spec.loader.exec_module(files)
    root = files.write_wesad(tmp_path / "WESAD")
    cohort = load_dataset("wesad", root, progress=False)
    store = WindowStore(prepare([f"wesad:{root}"], tmp_path / "s", dtype="float32",
                                workers=1, progress=False))
    assert store.leads == ("chest ECG",) and len(store) == len(cohort)
    np.testing.assert_array_equal(store.get_batch(range(len(store)))[:, 0].numpy(),
                                  cohort.windows)
    assert list(store.tasks) == sorted(cohort.labels)
    for task, labels in store.labels.items():
        np.testing.assert_array_equal(labels, cohort.labels[task])
        assert store.manifest["classes"][task] == list(cohort.classes[task])
    np.testing.assert_array_equal(store.subjects.astype(int), cohort.subject)
    assert np.isnan(store.starts_s).all()
