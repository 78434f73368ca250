"""DREAMER and AMIGOS from MATLAB v5 structs and cells written with scipy.io.savemat."""

import numpy as np
import pytest
from dataset_files import (
    AMIGOS_TRIALS,
    DREAMER_CLIPS,
    amigos_mat,
    dreamer_struct,
    write_amigos,
    write_dreamer,
)
from scipy.io import savemat
from scipy.signal import resample_poly

from ecgfast.data import ECGDataError, highpass, preprocess, zscore_stats
from ecgfast.datasets import load_dataset

TASKS = ("arousal", "valence", "dominance")


def _check_windows(c, per_subject, fs, up):
    """Windows equal preprocess() of each recording with the subject's statistics, taken
    over all of its filtered, resampled recordings."""
    start = 0
    for sid, signals in per_subject.items():
        filtered = [resample_poly(highpass(x, fs), up, 1) if up > 1 else highpass(x, fs)
                    for x in signals]
        stats = zscore_stats(np.concatenate(filtered))
        for x in signals:
            ref = preprocess(x, fs, stats=stats).windows
            np.testing.assert_array_equal(c.windows[start : start + len(ref)], ref)
            assert set(c.subject[start : start + len(ref)].tolist()) == {sid}
            start += len(ref)
    assert start == len(c)


@pytest.fixture(scope="module")
def dreamer_file(tmp_path_factory):
    return write_dreamer(tmp_path_factory.mktemp("dreamer") / "DREAMER.mat")


@pytest.mark.parametrize("threshold", [None, 2.0])
def test_dreamer_windows_labels_scores(dreamer_file, threshold):
    c = load_dataset("dreamer", dreamer_file.parent, threshold=threshold, progress=False)
    thr = 3.0 if threshold is None else threshold
    exp = {t: [] for t in TASKS}
    lab = {t: [] for t in TASKS}
    sessions = []
    for lengths, scores in DREAMER_CLIPS.values():
        for k, (sec, row) in enumerate(zip(lengths, scores)):
            n = sec // 10  # 256 Hz stays 256 Hz: floor(sec * 256 / 2560) windows
            sessions += [len(set(sessions))] * n
            for t, v in zip(TASKS, row):
                exp[t] += [float(v)] * n
                lab[t] += [int(v > thr)] * n
    assert c.tasks == TASKS and list(c.scores) == list(TASKS)
    for t in TASKS:
        assert c.scores[t].tolist() == exp[t]
        assert c.labels[t].tolist() == lab[t]
    assert c.session.tolist() == sessions
    assert c.provenance["threshold"] == thr
    assert f"> {thr:g}" in c.provenance["rules"]["valence"]
    struct = dreamer_struct()
    per_subject = {
        s + 1: [clip[:, 0] for clip in struct["Data"][0, s]["ECG"]["stimuli"].ravel()]
        for s in range(2)
    }
    _check_windows(c, per_subject, 256.0, 1)


def test_dreamer_second_lead_and_file_root(dreamer_file):
    c = load_dataset("dreamer", dreamer_file, lead="ECG lead 2", progress=False)
    struct = dreamer_struct()
    per_subject = {
        s + 1: [clip[:, 1] for clip in struct["Data"][0, s]["ECG"]["stimuli"].ravel()]
        for s in range(2)
    }
    _check_windows(c, per_subject, 256.0, 1)
    assert c.provenance["lead"] == {"index": 1, "name": "ECG lead 2"}


def _bad_dreamer(tmp_path, name, mutate=None, **overrides):
    top = dreamer_struct(**overrides)
    if mutate:
        mutate(top)
    path = tmp_path / name / "DREAMER.mat"
    path.parent.mkdir()
    savemat(path, {"DREAMER": top})
    return path.parent


def test_dreamer_bad_files(tmp_path):
    def drop_valence(top):
        del top["Data"][0, 1]["ScoreValence"]

    def out_of_range(top):
        top["Data"][0, 0]["ScoreArousal"] = np.array([[1], [6], [3]])

    def nan(top):
        top["Data"][0, 1]["ECG"]["stimuli"][2, 0][[500, 501, 9000], 0] = np.nan

    cases = [
        ("field", drop_valence, r"DREAMER\.mat: no field 'DREAMER\.Data\{2\}\.ScoreValence'"),
        ("range", out_of_range, r"DREAMER\.Data\{1\}\.ScoreArousal: rating 6\.0 .*\[1, 5\]"),
        ("nan", nan, r"DREAMER\.Data\{2\}\.ECG\.stimuli\{3\} lead 0: 3 NaN/Inf.*index 500"),
    ]
    for name, mutate, pattern in cases:
        with pytest.raises(ECGDataError, match=pattern):
            load_dataset("dreamer", _bad_dreamer(tmp_path, name, mutate), progress=False)
    root = _bad_dreamer(tmp_path, "rate", fs=512)
    with pytest.raises(ECGDataError, match=r"DREAMER\.ECG_SamplingRate is 512 Hz"):
        load_dataset("dreamer", root, progress=False)
    with pytest.warns(UserWarning, match="skipping subject 2"):
        c = load_dataset("dreamer", _bad_dreamer(tmp_path, "skip", nan), progress=False,
                         skip_bad=True)
    assert set(c.subject.tolist()) == {1} and c.provenance["skipped_subjects"][0]["subject"] == 2
    (tmp_path / "none").mkdir()
    with pytest.raises(ECGDataError, match=r"(?s)none: DREAMER\.mat not found.*ECG\.stimuli"):
        load_dataset("dreamer", tmp_path / "none", progress=False)
    trunc = tmp_path / "trunc" / "DREAMER.mat"
    trunc.parent.mkdir()
    data = (root / "DREAMER.mat").read_bytes()
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(ECGDataError, match=r"DREAMER\.mat: not a readable MATLAB file"):
        load_dataset("dreamer", trunc.parent, progress=False)


@pytest.fixture(scope="module")
def amigos_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("amigos")
    return write_amigos(base / "flat"), write_amigos(base / "folders", folders=True)


@pytest.mark.parametrize("lead", [0, 1])
def test_amigos_both_layouts_windows_labels_scores(amigos_roots, lead):
    flat, folders = (load_dataset("amigos", r, lead=lead, progress=False) for r in amigos_roots)
    exp, lab, per_subject = {t: [] for t in TASKS}, {t: [] for t in TASKS}, {}
    for p, (trials, ratings) in AMIGOS_TRIALS.items():
        mat = amigos_mat(trials, ratings, p)
        per_subject[p] = []
        for k, (sec, row) in enumerate(zip(trials, ratings)):
            if sec == 0:
                continue
            n = (sec * 256) // 2560  # 128 Hz -> 256 Hz: sec * 256 samples
            per_subject[p].append(mat["joined_data"][0, k][:, 14 + lead])
            for t, v in zip(TASKS, row):
                exp[t] += [v] * n
                lab[t] += [int(v > 5.0)] * n
    for c in (flat, folders):
        for t in TASKS:
            assert c.scores[t].tolist() == exp[t]
            assert c.labels[t].tolist() == lab[t]
        assert c.provenance["counts"]["dropped"]["empty_trials"] == 2
        assert c.provenance["lead"]["column"] == 14 + lead
        _check_windows(c, per_subject, 128.0, 2)
    np.testing.assert_array_equal(flat.windows, folders.windows)


def test_amigos_bad_files(tmp_path):
    trials, ratings = AMIGOS_TRIALS[1]
    bad = dict(amigos_mat(trials, ratings, 1))
    bad["labels_selfassessment"][0, 2][0, 1] = 9.5
    root = tmp_path / "range"
    root.mkdir()
    savemat(root / "Data_Preprocessed_P01.mat", bad)
    with pytest.raises(ECGDataError, match=r"P01\.mat: labels_selfassessment\{3\}: rating 9\.5"):
        load_dataset("amigos", root, progress=False)
    missing = {k: v for k, v in amigos_mat(trials, ratings, 1).items() if k != "joined_data"}
    savemat(root / "Data_Preprocessed_P01.mat", missing)
    with pytest.raises(ECGDataError, match=r"P01\.mat: no field 'joined_data'"):
        load_dataset("amigos", root, progress=False)
    write_amigos(root, {7: AMIGOS_TRIALS[7]})
    with pytest.warns(UserWarning, match="skipping subject 1"):
        c = load_dataset("amigos", root, progress=False, skip_bad=True)
    assert set(c.subject.tolist()) == {7}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ECGDataError, match=r"(?s)no Data_Preprocessed_P<NN>\.mat.*joined_data"):
        load_dataset("amigos", tmp_path / "empty", progress=False)


def test_a_mat_file_that_crashes_scipy_is_a_named_error(tmp_path):
    # Found by tests/test_fuzz_files.py: the first variable's dims element claiming 12
    # bytes instead of 8 makes scipy's compiled reader segfault (scipy 1.17); the
    # forked-child guard turns that into an ECGDataError instead of a dead interpreter.
    root = write_amigos(tmp_path, {3: ([12, 0], [(5.5, 2.0, 7.0), None])})
    path = root / "Data_Preprocessed_P03.mat"
    data = bytearray(path.read_bytes())
    assert data[208:216] == bytes([5, 0, 0, 0, 8, 0, 0, 0])  # miINT32 dims, 8 bytes
    data[212] = 12
    path.write_bytes(bytes(data))
    with pytest.raises(ECGDataError, match=r"P03\.mat: (corrupt|not a readable) MATLAB file"):
        load_dataset("amigos", root, progress=False)


def test_amigos_nan_ecg_and_unrated_trials_are_skipped_and_counted(tmp_path):
    # participant 2: trial 2's right ECG holds a NaN, trial 3's ratings are NaN, trial 4
    # has no rating row; participant 9: its only trial's both ECG columns are NaN
    good = (6.0, 3.0, 7.0)
    p2 = amigos_mat([20, 20, 20, 20, 20], [good, good, good, good, good], 2)
    p2["joined_data"][0, 1][500, 14] = np.nan
    p2["labels_selfassessment"][0, 2][0, :3] = np.nan
    p2["labels_selfassessment"][0, 3] = np.zeros((0, 0))
    p9 = amigos_mat([20], [good], 9)
    p9["joined_data"][0, 0][:, 14:16] = np.nan
    for p, mat in ((2, p2), (9, p9)):
        savemat(tmp_path / f"Data_Preprocessed_P{p:02d}.mat", mat)
    c = load_dataset("amigos", tmp_path, progress=False)
    assert c.provenance["skipped_trials"] == {"2": {"nan_ecg": [2], "unrated": [3, 4]},
                                              "9": {"nan_ecg": [1]}}
    dropped = c.provenance["counts"]["dropped"]
    assert (dropped["nan_ecg_trials"], dropped["unrated_trials"], dropped["empty_trials"]) == \
        (2, 2, 0)
    assert dropped["participants_without_usable_trials"] == 1
    assert c.provenance["skipped_subjects"] == []
    assert len(c) == 2 * 2 and set(c.subject.tolist()) == {2}  # trials 1 and 5, 2 windows each
    left = load_dataset("amigos", tmp_path, lead=1, progress=False)  # the NaN is in column 14
    assert left.provenance["skipped_trials"]["2"] == {"unrated": [3, 4]} and len(left) == 6
