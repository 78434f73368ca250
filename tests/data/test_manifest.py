"""Manifests: a CSV/TSV of the user's own recordings, segments and labels."""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecgfast.data import ECGDataError, preprocess_subject
from ecgfast.data import manifest as mf
from ecgfast.data.manifest import is_manifest, manifest_windows, read_manifest

_spec = importlib.util.spec_from_file_location(
    "ecgfast_test_dataset_files", Path(__file__).parents[1] / "datasets" / "dataset_files.py")
files = importlib.util.module_from_spec(_spec)
sys.modules.setdefault(_spec.name, files)
_spec.loader.exec_module(files)


def write_recordings(folder: Path) -> dict:
    """Four subjects' recordings in four formats; returns name -> (signal, fs)."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    x = files.toy_ecg(360, 40, 0)
    np.save(folder / "a.npy", x)
    out["a.npy"] = (x, 360.0)
    y = np.round(files.toy_ecg(250, 30, 3), 5)
    np.savetxt(folder / "b.csv", np.stack([-y, y], 1), delimiter=",", header="MLII,V5",
               comments="", fmt="%.5f")
    out["b.csv"] = (y, 250.0)
    z = files.toy_ecg(2048, 25, 7)
    files.write_poly5(folder / "c.S00", [("Skin", "uS", np.ones(z.size), "f32"),
                                         ("ECG", "µVolt", z, "f32")])
    out["c.S00"] = (z.astype(np.float32).astype(np.float64), 2048.0)
    w = files.toy_ecg(500, 22, 11)
    wfdb.wrsamp("d", fs=500, units=["mV"], sig_name=["II"], p_signal=w[:, None], fmt=["16"],
                write_dir=str(folder))
    out["d"] = (wfdb.rdrecord(str(folder / "d")).p_signal[:, 0], 500.0)
    return out


MANIFEST = """path,subject,start,end,fs,lead,stress,score
rec/a.npy,p1,0,20,360,,high,3
rec/a.npy,p1,20,,360,,low,
rec/b.csv,p2,,,250,V5,,5
rec/c.S00,p3,,,,,low,1.5
rec/d.hea,p4,2,,,,high,3.0
"""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest")
    signals = write_recordings(root / "rec")
    path = root / "m.csv"
    path.write_text(MANIFEST)
    return path, signals


def test_windows_labels_classes_and_provenance(manifest):
    path, sig = manifest
    data = manifest_windows(path)
    segments = [(sig["a.npy"][0][:20 * 360], 360.0), (sig["a.npy"][0][20 * 360:], 360.0),
                (sig["b.csv"][0], 250.0), (sig["c.S00"][0], 2048.0), (sig["d"][0][1000:], 500.0)]
    ref = [preprocess_subject([x for x, _ in segments[:2]], 360.0)]
    ref += [preprocess_subject([x], f) for x, f in segments[2:]]
    expected = np.concatenate([w.windows for r in ref for w in r])
    np.testing.assert_allclose(data.windows, expected, atol=1e-6)
    counts = [2, 2, 3, 2, 2]  # 20 s, 20 s, 30 s, 25 s, 20 s
    assert data.subject.tolist() == np.repeat([0, 0, 1, 2, 3], counts).tolist()
    assert data.session.tolist() == np.repeat(range(5), counts).tolist()
    # text classes sorted by code point; numbers sorted as numbers ("3" and "3.0" are one)
    assert data.classes == {"stress": ("high", "low"), "score": ("1.5", "3", "5")}
    assert data.labels["stress"].tolist() == np.repeat([0, 1, -1, 1, 0], counts).tolist()
    assert data.labels["score"].tolist() == np.repeat([1, -1, 2, 0, 1], counts).tolist()
    prov = data.provenance
    assert prov["manifest_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["subject_ids"] == {"0": "p1", "1": "p2", "2": "p3", "3": "p4"}
    assert prov["classes"]["score"]["numbering"] == "increasing number"
    cohort = data.cohort(["stress"])
    assert len(cohort) == 11 - 3 and cohort.labels["stress"].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert cohort.provenance["windows_unlabelled_for_these_tasks"] == 3
    assert len(data.cohort()) == 11 - 3 - 2  # labelled for both tasks
    with pytest.raises(ECGDataError, match=r"no label column\(s\) \['mood'\]"):
        data.cohort(["mood"])


def test_lead_by_index_equals_lead_by_name_and_tsv(manifest):
    path, _ = manifest
    tsv = path.with_name("m.tsv")
    tsv.write_text("path\tsubject\tlead\tfs\nrec/b.csv\t7\t1\t250\nrec/b.csv\t8\tV5\t250\n")
    assert is_manifest(tsv) and is_manifest(path)
    assert not is_manifest(path.parent / "rec" / "b.csv")  # a recording's CSV
    data = manifest_windows(tsv)
    a, b = data.windows[data.subject == 7], data.windows[data.subject == 8]
    np.testing.assert_array_equal(a, b)
    assert data.labels == {} and data.provenance["subject_ids"] is None  # integer subjects


def _write(folder: Path, text: str, name: str = "m.csv") -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,match", [
    ("subject,x\n1,2\n", r"no column\(s\) \['path'\]"),
    ("path,subject,path\na,b,c\n", r"the header's column 'path' appears twice"),
    ("path,subject\nrec/a.npy\n", r"row 1 \(line 2\) has 1 cells, the header 2"),
    ("path,subject\nrec/a.npy,\n", r"column 'subject': empty"),
    ("path,subject,start\nrec/a.npy,1,abc\n", r"column 'start': 'abc' is not a number"),
    ("path,subject,start,end\nrec/a.npy,1,5,5\n", r"column 'end': end 5 s is not after start"),
    ("path,subject,fs\n\nrec/a.npy,1,-3\n", r"column 'fs': '-3' must be"),
    ("path,subject\nrec/nope.npy,1\n", r"column 'path': 'rec/nope.npy': no such file"),
    ("path,subject\n../nope.npy,1\n", r"column 'path': '../nope.npy': no such file"),
    ("path,subject\nrec,1\n", r"column 'path': 'rec': is a folder"),
    ("path,subject\nrec/a.npy,1\n", r"column 'path': .*a\.npy: the sampling rate is not stored"),
    ("path,subject,end,fs\nrec/a.npy,1,100,360\n", r"column 'end': 100 s is beyond the rec"),
    ("path,subject,lead,fs\nrec/b.csv,1,V9,250\n", r"column 'path': .*no column named 'V9'"),
    ("path,subject\n", r"a header and no rows"),
])
def test_errors_name_the_manifest_row_and_column(manifest, text, match):
    path = _write(manifest[0].parent, text, "bad.csv")
    if match.startswith("column"):  # a cell: its row and line are named first
        line = 3 if "\n\n" in text else 2
        match = rf"row 1 \(line {line}\), " + match
    with pytest.raises(ECGDataError, match=r"bad\.csv: " + match):
        manifest_windows(path)


def test_paths_above_the_manifest_and_bounds(manifest, tmp_path, monkeypatch):
    root = manifest[0].parent
    sub = tmp_path / "lists"
    sub.mkdir()
    rel = Path("..") / Path(*[".."] * (len(sub.parts) - 1)) / str(root / "rec" / "a.npy")[1:]
    path = _write(sub, f"path,subject,fs\n{rel},1,360\n{root / 'rec' / 'a.npy'},2,360\n")
    data = manifest_windows(path)  # upward and absolute paths to existing files are read
    np.testing.assert_array_equal(data.windows[data.subject == 1], data.windows[data.subject == 2])
    monkeypatch.setattr(mf, "MAX_CLASSES", 1)
    with pytest.raises(ECGDataError, match=r"column 'stress' has 2 distinct values"):
        read_manifest(manifest[0])
    monkeypatch.setattr(mf, "MAX_BYTES", 20)
    with pytest.raises(ECGDataError, match=r"m\.csv: \d+ bytes; a manifest may hold at most 20"):
        read_manifest(manifest[0])


def test_cli_prepare_pretrain_and_evaluate_read_a_manifest(tmp_path, capsys):
    from ecgfast.cli import main
    from ecgfast.data.store import WindowStore

    write_recordings(tmp_path / "rec")
    rows = ["path,subject,start,end,fs,mood"]
    for s in range(4):
        for k, mood in enumerate(("calm", "tense")):
            rows.append(f"rec/a.npy,{s},{10 * k + s},{10 * k + s + 20},360,{mood}")
    rows.append("rec/c.S00,9,,,,")  # unlabelled: pretraining only
    path = _write(tmp_path, "\n".join(rows) + "\n")
    store = tmp_path / "store"
    assert main(["prepare", str(path), "--out", str(store), "--workers", "1", "--quiet"]) == 0
    info = WindowStore(store).info()
    assert info["windows"] == 8 * 2 + 2 and info["tasks"] == ["mood"]
    labels = np.load(store / "index" / "window_labels.npy")
    assert labels[:, 0].tolist() == [0, 0, 1, 1] * 4 + [-1, -1]
    fast = ["--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "4", "--quiet"]
    assert main(["pretrain", "--data", str(path), "--out", str(tmp_path / "run"), *fast]) == 0
    out = tmp_path / "eval.json"
    assert main(["evaluate", "random", "--data", str(path), "--folds", "2", "--probe-epochs",
                 "5", "--quiet", "--out", str(out)]) == 0
    assert "2 window(s) of rows unlabelled for mood left out" in capsys.readouterr().err
    from ecgfast.cli.common import load_data

    _, cohort = load_data({"data": str(path), "tasks": ("mood",)}, need_labels=True)  # ablation
    assert cohort.tasks == ("mood",) and len(cohort) == 16
    result = json.loads(out.read_text())
    assert result["classes"] == {"mood": ["calm", "tense"]}
    assert result["provenance"]["manifest_sha256"] == hashlib.sha256(
        path.read_bytes()).hexdigest()


def test_readers_and_manifests_import_without_torch():
    code = ("import sys\n"
            "from ecgfast.data import read_recording, poly5\n"
            "from ecgfast.data.manifest import manifest_windows, read_manifest\n"
            "print('torch' in sys.modules and 'torch' or 'ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
