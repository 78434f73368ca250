"""CASE from its interpolated CSV tree; SWELL-KW from Mobi text files and an .xlsx/.csv."""

import sys

import numpy as np
import pytest
from dataset_files import (
    CASE_SUBJECTS,
    SWELL_BLOCKS,
    case_annotations,
    swell_rows,
    write_case,
    write_swell,
    write_swell_release,
)
from scipy.signal import resample_poly

from ecgfast.data import ECGDataError, highpass, preprocess, zscore_stats
from ecgfast.datasets import load_dataset


@pytest.fixture(scope="module")
def case_root(tmp_path_factory):
    return write_case(tmp_path_factory.mktemp("case") / "CASE")


@pytest.mark.parametrize("threshold", [None, 4.0])
def test_case_window_means_labels_and_windows(case_root, threshold):
    c = load_dataset("case", case_root, threshold=threshold, progress=False)
    thr = 5.0 if threshold is None else threshold
    scores = {"valence": [], "arousal": []}
    dropped, start = 0, 0
    for s, (seconds, _) in CASE_SUBJECTS.items():
        ann = case_annotations(s)
        kept = []
        for k in range(seconds // 10):  # 1000 Hz -> 256 Hz: seconds * 256 samples
            m = (ann[:, 0] >= 10000.0 * k) & (ann[:, 0] < 10000.0 * (k + 1))
            if not m.any():
                dropped += 1
                continue
            kept.append(k)
            scores["valence"].append(ann[m, 1].mean())
            scores["arousal"].append(ann[m, 2].mean())
        ecg = np.loadtxt(case_root / "data" / "interpolated" / "physiological" / f"sub_{s}.csv",
                         delimiter=",", skiprows=1)[:, 1]
        ref = preprocess(ecg, 1000.0).windows[kept]
        np.testing.assert_array_equal(c.windows[start : start + len(kept)], ref)
        assert set(c.subject[start : start + len(kept)].tolist()) == {s}
        start += len(kept)
    assert start == len(c)
    for t in ("arousal", "valence"):
        np.testing.assert_allclose(c.scores[t], scores[t], rtol=1e-12)
        assert c.labels[t].tolist() == [int(v > thr) for v in scores[t]]
    assert c.provenance["counts"]["dropped"]["windows_without_annotation"] == dropped == 1
    assert len(set(c.labels["arousal"].tolist())) == 2


def test_case_bad_files(tmp_path):
    from dataset_files import case_physiological

    phys = case_physiological(1)
    slow = phys.copy()
    slow[:, 0] *= 2.0  # daqtime steps of 2 ms: 500 Hz
    write_case(tmp_path / "rate", (1,), phys=slow)
    with pytest.raises(ECGDataError, match=r"sub_1\.csv: daqtime steps imply 500 Hz"):
        load_dataset("case", tmp_path / "rate", progress=False)
    ann = case_annotations(1)
    ann[7, 2] = 9.8
    write_case(tmp_path / "range", (1,), ann=ann)
    with pytest.raises(ECGDataError, match=r"annotations/sub_1\.csv: column arousal: rating 9\.8"):
        load_dataset("case", tmp_path / "range", progress=False)
    nan = phys.copy()
    nan[4321, 1] = np.nan
    write_case(tmp_path / "nan", (1,), phys=nan)
    with pytest.raises(ECGDataError, match=r"sub_1\.csv: column ecg: 1 NaN/Inf.*index 4321"):
        load_dataset("case", tmp_path / "nan", progress=False)
    root = write_case(tmp_path / "noann", (1,))
    (root / "data" / "interpolated" / "annotations" / "sub_1.csv").unlink()
    with pytest.raises(ECGDataError, match=r"(?s)annotations/sub_1\.csv: file not found.*jstime"):
        load_dataset("case", root, progress=False)
    root = write_case(tmp_path / "hdr", (1,))
    bad_header = root / "data" / "interpolated" / "physiological" / "sub_1.csv"
    bad_header.write_text("daqtime,ekg\n0,1\n1,2\n")
    with pytest.raises(ECGDataError, match=r"sub_1\.csv: no column\(s\) \['ecg'\]"):
        load_dataset("case", root, progress=False)
    with pytest.raises(ECGDataError, match=r"(?s)no interpolated/physiological/ folder"):
        load_dataset("case", tmp_path / "rate" / "data" / "interpolated" / "physiological",
                     progress=False)
    for inner in ("data", "data/interpolated"):  # both are accepted roots
        with pytest.raises(ECGDataError, match=r"daqtime steps imply 500 Hz"):
            load_dataset("case", tmp_path / "rate" / inner, progress=False)


def _swell_expected(thr=5.0):
    labels = {"condition": [], "arousal": [], "valence": []}
    scores = {"arousal": [], "valence": []}
    for blocks in SWELL_BLOCKS.values():
        for block in sorted(blocks):
            cond, seconds, minutes = blocks[block]
            if cond == "R":
                continue
            n = seconds // 10  # 2048 Hz -> 256 Hz: seconds * 256 samples
            valence, arousal = minutes[-1]  # the block's last non-relaxation row
            labels["condition"] += [{"N": 0, "I": 1, "T": 2}[cond]] * n
            labels["arousal"] += [int(arousal > thr)] * n
            labels["valence"] += [int(valence > thr)] * n
            scores["arousal"] += [float(arousal)] * n
            scores["valence"] += [float(valence)] * n
    return labels, scores


@pytest.fixture(scope="module")
def swell_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("swell")
    return write_swell(base / "xlsx"), write_swell(base / "csv", csv=True)


def test_swell_xlsx_and_csv_give_the_stated_labels(swell_roots):
    labels, scores = _swell_expected()
    cohorts = [load_dataset("swell", r, progress=False) for r in swell_roots]
    for c in cohorts:
        assert c.tasks == ("condition", "arousal", "valence")
        assert c.classes["condition"] == ("neutral", "interruptions", "time pressure")
        for t in labels:
            assert c.labels[t].tolist() == labels[t], t
        for t in scores:
            assert c.scores[t].tolist() == scores[t], t
        assert c.provenance["excluded"] == {"relaxation_blocks": 1, "relaxation_rows": 6}
        assert c.provenance["counts"]["dropped"]["recordings_without_labels"] == 1
        assert "Arousal_rc: 1 (high) iff the rating > 5" in c.provenance["rules"]["arousal"]
    np.testing.assert_array_equal(cohorts[0].windows, cohorts[1].windows)
    # Windows: participant 12's two labelled blocks, z-scored with the statistics of
    # both (the R block's file is not part of the cohort).
    sig = swell_roots[0] / "0 - Raw data" / "D - Physiology - raw data" / "Mobi signals text"
    xs = [np.loadtxt(sig / f"PP12_c{b}_Mobi.TXT") for b in (1, 3)]
    stats = zscore_stats(np.concatenate([resample_poly(highpass(x, 2048.0), 1, 8) for x in xs]))
    ref = np.concatenate([preprocess(x, 2048.0, stats=stats).windows for x in xs])
    np.testing.assert_array_equal(cohorts[0].windows[cohorts[0].subject == 12], ref)


def test_swell_bad_files(tmp_path, monkeypatch):
    rows = swell_rows()
    rows[0] = rows[0][:3] + (10, 3) + rows[0][5:]
    rows[1] = rows[1][:3] + (10, 3) + rows[1][5:]
    write_swell(tmp_path / "range", rows=rows, csv=True)
    with pytest.raises(ECGDataError, match=r"per minute\.csv: row 3: column Valence_rc: rating "
                                           r"10\.0 .*\[1, 9\]"):
        load_dataset("swell", tmp_path / "range", progress=False)
    rows = [r[:3] + ("x",) + r[4:] for r in swell_rows()]
    write_swell(tmp_path / "text", rows=rows, csv=True)
    with pytest.raises(ECGDataError, match=r"row 3: column Valence_rc = 'x' is not a number"):
        load_dataset("swell", tmp_path / "text", progress=False)
    root = write_swell(tmp_path / "trunc")
    xlsx = root / "3 - Feature dataset" / "Behavioral-features - per minute.xlsx"
    xlsx.write_bytes(xlsx.read_bytes()[:300])
    with pytest.raises(ECGDataError, match=r"per minute\.xlsx: not a readable \.xlsx"):
        load_dataset("swell", root, progress=False)
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    with pytest.raises(ImportError, match=r"needs the 'openpyxl' package.*CSV export"):
        load_dataset("swell", root, progress=False)
    monkeypatch.undo()
    xlsx.unlink()
    with pytest.raises(ECGDataError, match=r"(?s)'Behavioral-features - per minute\.xlsx'.*not "
                                           r"found.*Mobi signals text"):
        load_dataset("swell", root, progress=False)
    root = write_swell(tmp_path / "twocol", csv=True)
    sig = root / "0 - Raw data" / "D - Physiology - raw data" / "Mobi signals text"
    (sig / "PP12_c1_Mobi.TXT").write_text("1.0 2.0\n3.0 4.0\n")
    with pytest.raises(ECGDataError, match=r"PP12_c1_Mobi\.TXT: 2 columns"):
        load_dataset("swell", root, progress=False)
    with pytest.warns(UserWarning, match="skipping subject 12"):
        c = load_dataset("swell", root, progress=False, skip_bad=True)
    assert set(c.subject.tolist()) == {1}


@pytest.fixture(scope="module")
def swell_release(tmp_path_factory):
    return write_swell_release(tmp_path_factory.mktemp("swell") / "release")


def test_swell_release_poly5_tab_and_a_continued_block(swell_release, swell_roots):
    from ecgfast.data.poly5 import read_poly5

    c = load_dataset("swell", swell_release, progress=False)
    labels, scores = _swell_expected()
    # participant 1's block 2 (55 s) is two files of 30 s and 25 s: 3 + 2 windows, the
    # same count as one 55 s file, none spanning the junction
    for t in labels:
        assert c.labels[t].tolist() == labels[t], t
    for t in scores:
        assert c.scores[t].tolist() == scores[t], t
    assert c.provenance["labels_file"].endswith("per minute.tab")
    (joined,) = c.provenance["joined"]
    assert joined["files"] == ["pp1_19-9-2012_c2.S00", "pp1_19-9-2012_c2_cont.S00"]
    assert joined["order"] == "header start time" and joined["gaps_s"] == [1.0]
    sig = swell_release / "0 - Raw data" / "D - Physiology - raw data"
    sig = sig / "Mobi signals (raw and filtered)"
    files = ["pp1_18-9-2012_c1.S00", "pp1_19-9-2012_c2.S00", "pp1_19-9-2012_c2_cont.S00",
             "pp1_20-9-2012_c3.S00"]
    xs = [read_poly5(sig / f, [1])[1][0] for f in files]
    stats = zscore_stats(np.concatenate([resample_poly(highpass(x, 2048.0), 1, 8) for x in xs]))
    ref = np.concatenate([preprocess(x, 2048.0, stats=stats).windows for x in xs])
    np.testing.assert_array_equal(c.windows[c.subject == 1], ref)
    assert np.unique(c.session[c.subject == 1]).size == 4
    # the Poly5 samples are the text conversion's signal, stored as float32
    text = load_dataset("swell", swell_roots[1], progress=False)
    sub = c.subject == 12
    assert np.abs(c.windows[sub] - text.windows[text.subject == 12]).max() < 1e-3


def test_swell_release_bad_recordings(tmp_path):
    root = write_swell_release(tmp_path / "web", folder="Mobi signals _raw and filtered_",
                               ecg_name="Heart")
    with pytest.raises(ECGDataError, match=r"pp1_18-9-2012_c1\.S00: no channel whose "
                                           r"description names an ECG among \['Skin', 'Heart', "
                                           r"'Beat'\]"):
        load_dataset("swell", root, progress=False)
    root = write_swell_release(tmp_path / "slow", fs=1024)
    with pytest.raises(ECGDataError, match=r"c1\.S00: sampled at 1024 Hz; SWELL-KW's Mobi "
                                           r"recordings are 2048 Hz"):
        load_dataset("swell", root, progress=False)
