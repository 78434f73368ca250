"""WESAD from latin-1 protocol-2 pickles: windows, labels and drops checked exactly."""

import os
import pickle

import numpy as np
import pytest
from dataset_files import WESAD_RUNS, py2_pickle, wesad_dict, wesad_subject, write_wesad

from ecgfast.data import ECGDataError, preprocess
from ecgfast.datasets import DATASETS, load_dataset
from ecgfast.datasets.safe_pickle import load_pickle


def _expected(subject):
    """Kept windows' indices and codes, from the label track: window k comes from 700 Hz
    samples [7000 k, 7000 (k + 1)) (10 s at 256 Hz is 10 s at 700 Hz)."""
    _, label = wesad_subject(subject)
    n_windows = label.size // 7000
    keep, codes, drops = [], [], {"straddle": 0, "zero": 0, "ignored": 0}
    for k in range(n_windows):
        seg = label[7000 * k : 7000 * (k + 1)]
        if len(set(seg.tolist())) > 1:
            drops["straddle"] += 1
        elif seg[0] == 0:
            drops["zero"] += 1
        elif seg[0] >= 5:
            drops["ignored"] += 1
        else:
            keep.append(k)
            codes.append(int(seg[0]))
    return keep, codes, drops


@pytest.fixture(scope="module")
def wesad_root(tmp_path_factory):
    return write_wesad(tmp_path_factory.mktemp("wesad") / "WESAD")


def test_windows_labels_and_drops_exactly(wesad_root):
    c = load_dataset("wesad", wesad_root, progress=False)
    assert c.tasks == ("affect", "stress") and c.scores == {} and c.fs == 256.0
    assert c.classes["affect"] == ("baseline", "stress", "amusement", "meditation")
    total = {"straddle": 0, "zero": 0, "ignored": 0}
    start = 0
    for session, s in enumerate((2, 3, 4)):
        keep, codes, drops = _expected(s)
        m = c.subject == s
        assert m.sum() == len(keep)
        assert c.labels["affect"][m].tolist() == [code - 1 for code in codes]
        assert c.labels["stress"][m].tolist() == [int(code == 2) for code in codes]
        assert set(c.session[m].tolist()) == {session}
        # The same pre-processing as training: one recording per subject, so the
        # subject's statistics are the recording's own.
        ecg, _ = wesad_subject(s)
        ref = preprocess(ecg, 700.0)
        np.testing.assert_array_equal(c.windows[start : start + len(keep)], ref.windows[keep])
        start += len(keep)
        for key in total:
            total[key] += drops[key]
    dropped = c.provenance["counts"]["dropped"]
    assert dropped["windows_straddling_codes"] == total["straddle"]
    assert dropped["windows_code_0"] == total["zero"]
    assert dropped["windows_codes_5_7"] == total["ignored"]
    assert dropped["flat_windows"] == 0
    assert c.provenance["dataset"] == "wesad" and c.provenance["skipped_subjects"] == []
    assert c.provenance["preprocessing"]["target_fs"] == 256.0
    assert sum(total.values()) > 0 and set(c.labels["affect"].tolist()) == {0, 1, 2, 3}


def test_python3_pickles_and_parent_folder_load(tmp_path):
    root = write_wesad(tmp_path / "WESAD", subjects=(2,), python2=False)
    c = load_dataset("wesad", root.parent, progress=False)  # the folder holding WESAD/
    assert len(c) == len(_expected(2)[0])


def test_threshold_and_lead_are_checked(wesad_root):
    with pytest.raises(ValueError, match="no ratings"):
        load_dataset("wesad", wesad_root, threshold=3.0, progress=False)
    with pytest.raises(ValueError, match="unknown lead 1"):
        load_dataset("wesad", wesad_root, lead=1, progress=False)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope", wesad_root)
    assert DATASETS["wesad"].tasks == ("affect", "stress")


def test_missing_root_and_files_name_the_layout(tmp_path):
    with pytest.raises(ECGDataError, match=r"(?s)absent: dataset root not found.*S2/S2\.pkl"):
        load_dataset("wesad", tmp_path / "absent", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ECGDataError, match=r"(?s)empty: no subject folders S<N>/.*expected layout"):
        load_dataset("wesad", tmp_path / "empty", progress=False)
    (tmp_path / "nopkl" / "S5").mkdir(parents=True)
    with pytest.raises(ECGDataError, match=r"S5\.pkl: file not found"):
        load_dataset("wesad", tmp_path / "nopkl", progress=False)


def _write(root, subject, obj, raw=None):
    d = root / f"S{subject}"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"S{subject}.pkl").write_bytes(raw if raw is not None else py2_pickle(obj))


def test_bad_subject_files(tmp_path):
    ecg, label = wesad_subject(2)
    nan = ecg.copy()
    nan[[1234, 5000]] = np.nan
    cases = {
        "nolabel": ({k: v for k, v in wesad_dict(2).items() if k != "label"},
                    r"S2\.pkl: no field 'label'"),
        "noecg": ({"signal": {"chest": {}}, "label": label}, r"no field 'signal\.chest\.ECG'"),
        "misaligned": (wesad_dict(2, label=label[:-700]), r"label has .* must align"),
        "nan": (wesad_dict(2, ecg=nan), r"S2\.pkl: signal\.chest\.ECG: 2 NaN/Inf.*index 1234"),
        "code": (wesad_dict(2, label=np.where(label == 5, 9, label)), r"label code 9 .*0-7"),
    }
    for name, (obj, pattern) in cases.items():
        _write(tmp_path / name, 2, obj)
        with pytest.raises(ECGDataError, match=pattern):
            load_dataset("wesad", tmp_path / name, progress=False)
    data = py2_pickle(wesad_dict(2))
    _write(tmp_path / "truncated", 2, None, raw=data[: len(data) // 2])
    with pytest.raises(ECGDataError, match=r"S2\.pkl: not a readable pickle"):
        load_dataset("wesad", tmp_path / "truncated", progress=False)


def test_skip_bad_lists_and_warns(tmp_path):
    root = write_wesad(tmp_path / "W", subjects=(2, 3))
    (root / "S3" / "S3.pkl").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ECGDataError, match=r"S3\.pkl"):
        load_dataset("wesad", root, progress=False)
    with pytest.warns(UserWarning, match=r"skipping subject 3"):
        c = load_dataset("wesad", root, progress=False, skip_bad=True)
    assert set(c.subject.tolist()) == {2}
    (skipped,) = c.provenance["skipped_subjects"]
    assert skipped["subject"] == 3 and skipped["file"].endswith("S3.pkl")
    assert "pickle" in skipped["reason"]


class _CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _OpensAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("maker", [_CreatesAFile, _OpensAFile])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, maker):
    target = tmp_path / "pwned"
    payload = wesad_dict(2)
    payload["label"] = maker(str(target))
    _write(tmp_path / "evil", 2, None, raw=pickle.dumps(payload, protocol=2))
    with pytest.raises(ECGDataError, match=r"S2\.pkl: refused to unpickle global (posix|nt|"
                                           r"builtins|io)\.(system|open)"):
        load_dataset("wesad", tmp_path / "evil", progress=False)
    assert not target.exists()
    with pytest.raises(ECGDataError, match="refused"):
        load_pickle(tmp_path / "evil" / "S2" / "S2.pkl")
    assert not target.exists()


def test_pickle_cannot_call_ndarray_or_encode_other_codecs(tmp_path):
    # REDUCE numpy.ndarray((10**12,)) directly: a huge allocation from a few bytes.
    huge = b"\x80\x02cnumpy\nndarray\nJ\x00\x10\xa5\xd4\x85R."
    (tmp_path / "huge.pkl").write_bytes(huge)
    with pytest.raises(ECGDataError, match=r"huge\.pkl: not a readable pickle"):
        load_pickle(tmp_path / "huge.pkl")
    codec = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R."
    (tmp_path / "codec.pkl").write_bytes(codec)
    with pytest.raises(ECGDataError, match=r"codec\.pkl.*latin-1"):
        load_pickle(tmp_path / "codec.pkl")


def test_layout_text_is_the_docstring_layout():
    info = DATASETS["wesad"]
    assert "S2/S2.pkl" in info.layout and info.fs == 700.0 and info.default_threshold is None
    assert WESAD_RUNS  # the fixture's runs hold every code class
