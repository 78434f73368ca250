"""PhysioNet eegmat: SubjectNN_1/_2.edf (rest, serial subtraction) and subject-info.csv."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from dataset_files import toy_ecg

from ecgfast.data import ECGDataError, preprocess_subject, read_recording
from ecgfast.datasets import load_dataset

pytest.importorskip("edfio")

_spec = importlib.util.spec_from_file_location(
    "ecgfast_test_edf_files", Path(__file__).parent.parent / "data" / "edf_files.py")
edf_files = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = edf_files
_spec.loader.exec_module(edf_files)

FS = 500
#: subject NN -> (rest seconds, subtraction seconds, count quality, subtractions)
SUBJECTS = {0: (25, 12, 0, 9.7), 1: (31, 12, 1, 29.35), 7: (21, 20, 1, 14.0)}
INFO_HEADER = "Subject,Age,Gender,Recording year,Number of subtractions,Count quality\n"


def write_eegmat(folder: Path, subjects=SUBJECTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (sid, (rest, task, quality, count)) in enumerate(subjects.items()):
        for part, seconds in ((1, rest), (2, task)):
            ecg = toy_ecg(FS, seconds, offset_s=40.0 * k + 25.0 * part)
            eeg = np.random.default_rng(sid).normal(0, 20, seconds * FS)
            edf_files.write_edf(folder / f"Subject{sid:02d}_{part}.edf",
                                [("EEG Fz", FS, eeg, "uV"), ("EEG A2-A1", FS, eeg / 2, "uV"),
                                 ("ECG ECG", FS, ecg, "mV")],
                                annotations=[(0.0, None, f"[Total time]+{seconds}.000")])
        rows.append(f"Subject{sid:02d},{18 + sid},F,2011,{count},{quality}\n")
    (folder / "subject-info.csv").write_text(INFO_HEADER + "".join(rows))
    return folder


@pytest.fixture(scope="module")
def eegmat_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("eegmat")
    write_eegmat(root / "eeg-during-mental-arithmetic-tasks-1.0.0")
    return root


def test_tasks_labels_scores_and_windows(eegmat_root):
    c = load_dataset("eegmat", eegmat_root, progress=False)
    assert c.tasks == ("arithmetic", "count_quality")
    assert c.classes == {"arithmetic": ("rest", "subtraction"), "count_quality": ("bad", "good")}
    assert sorted(np.unique(c.subject)) == [0, 1, 7]
    per_recording = {(0, 0): 2, (0, 1): 1, (1, 0): 3, (1, 1): 1, (7, 0): 2, (7, 1): 2}
    for (sid, task), n in per_recording.items():
        assert ((c.subject == sid) & (c.labels["arithmetic"] == task)).sum() == n
    for sid, (_, _, quality, count) in SUBJECTS.items():
        mine = c.subject == sid
        assert (c.labels["count_quality"][mine] == quality).all()
        np.testing.assert_array_equal(c.scores["subtractions"][mine], count)
    assert len(np.unique(c.session)) == 6
    counts = c.provenance["counts"]
    assert counts["subjects"] == 3 and counts["windows"] == 11
    assert counts["windows_per_class"] == {"arithmetic": {"rest": 7, "subtraction": 4},
                                           "count_quality": {"bad": 3, "good": 8}}
    assert c.provenance["lead"]["name"] == "ECG ECG"
    base = eegmat_root / "eeg-during-mental-arithmetic-tasks-1.0.0"
    recs = [read_recording(base / f"Subject07_{p}.edf", column="ECG ECG") for p in (1, 2)]
    assert recs[0].fs == FS and recs[0].unit == "mV"
    expected = preprocess_subject([r.signal for r in recs], FS)  # the chain every dataset gets
    np.testing.assert_allclose(c.windows[c.subject == 7],
                               np.concatenate([w.windows for w in expected]), atol=1e-5)


def test_flat_layout_and_the_cli_name(tmp_path):
    from ecgfast.cli.common import load_data

    root = write_eegmat(tmp_path / "flat", {3: (20, 11, 1, 20.0)})
    windows, c = load_data({"data": f"eegmat:{root}", "no_cache": True}, need_labels=True)
    assert windows.shape == (3, 2560) and c.provenance["dataset"] == "eegmat"
    assert list(c.subject) == [3, 3, 3]


def test_missing_and_bad_files_are_named(tmp_path):
    root = write_eegmat(tmp_path / "a", {0: (20, 11, 0, 5.0), 2: (20, 11, 1, 6.0)})
    info = root / "subject-info.csv"
    info.write_text(INFO_HEADER + "Subject00,20,M,2012,5,0\n")
    with pytest.raises(ECGDataError, match=r"subject-info\.csv: no row for Subject02"):
        load_dataset("eegmat", root, progress=False)
    with pytest.warns(UserWarning, match="skipping subject 2"):
        c = load_dataset("eegmat", root, progress=False, skip_bad=True)
    assert set(c.subject) == {0} and c.provenance["skipped_subjects"][0]["subject"] == 2
    info.write_text(INFO_HEADER + "Subject00,20,M,2012,5,2\nSubject02,20,M,2012,6,1\n")
    with pytest.raises(ECGDataError, match=r"subject-info\.csv: line 2: Count quality 2\.0"):
        load_dataset("eegmat", root, progress=False)
    info.write_text(INFO_HEADER.replace("Count quality", "Quality"))
    with pytest.raises(ECGDataError, match=r"no column 'Count quality'"):
        load_dataset("eegmat", root, progress=False)
    info.unlink()
    with pytest.raises(ECGDataError, match=r"subject-info\.csv: file not found"):
        load_dataset("eegmat", root, progress=False)
    info.write_text(INFO_HEADER + "Subject00,20,M,2012,5,0\nSubject02,20,M,2012,6,1\n")
    (root / "Subject02_2.edf").unlink()
    with pytest.raises(ECGDataError, match=r"Subject02_2\.edf: file not found"):
        load_dataset("eegmat", root, progress=False)
    with pytest.raises(ECGDataError, match=r"(?s)no SubjectNN_1\.edf.*expected layout"):
        load_dataset("eegmat", (tmp_path / "empty").mkdir() or tmp_path / "empty",
                     progress=False)
