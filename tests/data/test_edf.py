"""EDF, EDF+ (continuous and discontinuous) and BDF files: signals at their own rates, in
mV, chosen by label; EDF+D split at its gaps; annotations; headers checked first."""

import json
import tracemalloc

import numpy as np
import pytest
from edf_files import layout, make_discontinuous, set_field, write_edf

from ecgfast.data import (
    Annotation,
    ECGDataError,
    read_leads,
    read_recording,
    read_segments,
)

pytest.importorskip("edfio")

FS_ECG, FS_EEG, SECONDS = 200, 100, 30


def _signals(seconds=SECONDS):
    rng = np.random.default_rng(3)
    t = np.arange(seconds * FS_ECG) / FS_ECG
    ecg = np.sin(2 * np.pi * 1.2 * t) ** 21 + 0.02 * rng.normal(size=t.size)  # mV
    fp1 = 40 * rng.normal(size=seconds * FS_EEG)  # uV
    fp2 = 30 * rng.normal(size=seconds * FS_EEG)
    return ecg, fp1, fp2


@pytest.fixture
def edf(tmp_path):
    ecg, fp1, fp2 = _signals()
    path = write_edf(tmp_path / "rec.edf", [("EEG Fp1", FS_EEG, fp1, "uV"),
                                            ("EEG Fp2", FS_EEG, fp2, "uV"),
                                            ("ECG ECG", FS_ECG, ecg, "mV")],
                     annotations=[(2.5, None, "rest"), (12.0, 3.0, "task")])
    return path, ecg, fp1, fp2


def _step(x):
    """Quantisation step of a 16-bit EDF signal spanning x's range."""
    return (x.max() - x.min()) / 65535


def test_signals_by_label_at_their_own_rates_in_mv(edf):
    path, ecg, fp1, fp2 = edf
    rec = read_recording(path, column="ECG ECG")
    assert (rec.fs, rec.lead, rec.unit, len(rec)) == (FS_ECG, "ECG ECG", "mV", ecg.size)
    np.testing.assert_allclose(rec.signal, ecg, atol=_step(ecg))
    for loose in ("ecg ecg", "ECG", "ecg", 2):  # ignoring case, by part of the label, index
        np.testing.assert_array_equal(read_recording(path, column=loose).signal, rec.signal)
    eeg = read_recording(path, column="Fp1")
    assert eeg.fs == FS_EEG and eeg.unit == "mV" and eeg.lead == "EEG Fp1"
    np.testing.assert_allclose(eeg.signal, fp1 / 1000, atol=_step(fp1) / 1000)
    both = read_leads(path, leads=["EEG Fp2", "fp1"])
    assert both.leads == ("EEG Fp2", "EEG Fp1") and both.fs == FS_EEG
    assert both.units == ("mV", "mV") and both.signal.shape == (2, fp1.size)
    np.testing.assert_allclose(both.signal[0], fp2 / 1000, atol=_step(fp2) / 1000)
    assert rec.annotations == (Annotation(2.5, None, "rest"), Annotation(12.0, 3.0, "task"))
    assert rec.start_s == 0.0


def test_label_errors_rates_and_fs(edf):
    path, *_ = edf
    with pytest.raises(ECGDataError, match=r"rec\.edf: signal 'EEG' is ambiguous.*'EEG Fp1', "
                                           r"'EEG Fp2'"):
        read_recording(path, column="EEG")
    with pytest.raises(ECGDataError, match=r"rec\.edf: no signal named 'EMG'.*'ECG ECG'"):
        read_recording(path, column="EMG")
    with pytest.raises(ECGDataError, match=r"rec\.edf: 3 signals.*pass column"):
        read_recording(path)
    with pytest.raises(ECGDataError, match=r"different rates \('EEG Fp1' 100 Hz, 'EEG Fp2' "
                                           r"100 Hz, 'ECG ECG' 200 Hz\)"):
        read_leads(path)
    with pytest.raises(ECGDataError, match=r"rec\.edf: fs=100 Hz was given but the header "
                                           r"says 200 Hz"):
        read_recording(path, column="ECG", fs=100)
    assert read_recording(path, column="ECG", fs=200).fs == 200


def test_bdf_and_upper_case_suffix(tmp_path):
    ecg, *_ = _signals(10)
    path = write_edf(tmp_path / "REC.BDF", [("ECG", FS_ECG, 1000 * ecg, "uV")], bdf=True)
    rec = read_recording(path)  # one signal: no choice needed
    assert rec.fs == FS_ECG and rec.unit == "mV" and rec.lead == "ECG"
    step = (ecg.max() - ecg.min()) / (2**24 - 1)  # 24-bit samples
    np.testing.assert_allclose(rec.signal, ecg, atol=1.01 * step)
    assert np.abs(rec.signal - ecg).max() < _step(ecg) / 10


def test_discontinuous_file_is_split_at_its_gaps(tmp_path, monkeypatch):
    ecg, fp1, _ = _signals()
    path = write_edf(tmp_path / "d.edf", [("EEG Fp1", FS_EEG, fp1, "uV"),
                                          ("ECG ECG", FS_ECG, ecg, "mV")],
                     annotations=[(1.0, None, "start")])
    make_discontinuous(path, {10: 5.0, 22: 7.5})
    monkeypatch.setattr("ecgfast.data.edf.BLOCK_BYTES", 3000)  # several blocks per file
    segments = read_segments(path, leads=["ECG"])
    assert [s.start_s for s in segments] == [0.0, 15.0, 34.5]
    assert [len(s) for s in segments] == [10 * FS_ECG, 12 * FS_ECG, 8 * FS_ECG]
    joined = np.concatenate([s.signal[0] for s in segments])
    np.testing.assert_allclose(joined, ecg, atol=_step(ecg))  # samples, not glued in time
    assert segments[0].annotations == (Annotation(1.0, None, "start"),)
    with pytest.raises(ECGDataError, match=r"d\.edf: discontinuous recording \(EDF\+D\) of 3 "
                                           r"segments.*at 0 s \(10 s long\), 15 s.*read_segments"):
        read_recording(path, column="ECG")
    with pytest.raises(ECGDataError, match="read_segments"):
        read_leads(path, leads=["ECG"])
    whole = read_segments(write_edf(tmp_path / "c.edf", [("ECG", FS_ECG, ecg, "mV")]))
    assert len(whole) == 1 and len(whole[0]) == ecg.size


def test_overlapping_records_are_refused(tmp_path):
    ecg, *_ = _signals(5)
    path = write_edf(tmp_path / "o.edf", [("ECG", FS_ECG, ecg, "mV")])
    make_discontinuous(path, {3: -1.5})
    with pytest.raises(ECGDataError, match=r"o\.edf: data record 3 starts at 1\.5 s, before "
                                           r"record 2 ends"):
        read_recording(path)
    h = layout(path.read_bytes())
    set_field(path, 256 + 16 * h["labels"].index("EDF Annotations"), 16, "Notes")
    with pytest.raises(ECGDataError, match=r"o\.edf: EDF\+D file without an annotation signal"):
        read_recording(path, column="ECG")


# Header fields: (start, width) in the fixed header; signal fields come after it.
_NS, _RECORDS, _DURATION = (252, 4), (236, 8), (244, 8)


@pytest.mark.parametrize("field, text, message", [
    (_RECORDS, "100000", (r"header promises 100000 data records of 406 bytes .* holds 4060 "
                          r"data bytes")),
    (_RECORDS, "-5", r"header says -5 data records"),
    (_NS, "9999", r"header says 9999 signals; a 4828-byte file holds at most 17"),
    (_NS, "-3", r"header says -3 signals"),
    (_NS, "x", r"header field number of signals is 'x', not a number"),
    (_DURATION, "0", r"data record duration 0 s"),
    (_DURATION, "nan", r"header field data record duration is 'nan', not a finite"),
    ((0, 8), "1", r"not an EDF or BDF file"),
    ((184, 8), "512", r"header size field says 512 bytes, but 2 signals need 768"),
])
def test_header_is_checked_before_anything_is_read(tmp_path, field, text, message):
    ecg, *_ = _signals(10)
    path = write_edf(tmp_path / "h.edf", [("ECG", FS_ECG, ecg, "mV")])
    set_field(path, *field, text)
    with pytest.raises(ECGDataError, match=r"h\.edf: " + message):
        read_recording(path)


def test_absurd_signal_counts_allocate_nothing_large(tmp_path):
    ecg, *_ = _signals(10)
    path = write_edf(tmp_path / "s.edf", [("ECG", FS_ECG, ecg, "mV")])
    h = layout(path.read_bytes())
    spr_at = 256 + h["ns"] * 216  # samples per record of signal 0
    for text, message in (("99999999", r"header promises 10 data records of 200000004 bytes"),
                          ("-200", r"signal 0 \('ECG'\) has -200 samples per data record")):
        set_field(path, spr_at, 8, text)
        tracemalloc.start()
        with pytest.raises(ECGDataError, match=r"s\.edf: " + message):
            read_recording(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1 << 20
    set_field(path, spr_at, 8, str(FS_ECG))
    dmin_at = 256 + h["ns"] * (16 + 80 + 8 * 3)
    set_field(path, dmin_at, 8, "32767")  # digital min = digital max
    with pytest.raises(ECGDataError, match=r"s\.edf: signal 0 \('ECG'\) cannot be scaled"):
        read_recording(path)
    set_field(path, 0, 256, "0")  # blank fixed header
    with pytest.raises(ECGDataError, match=r"s\.edf"):
        read_recording(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ECGDataError, match=r"s\.edf: 100 bytes, too short"):
        read_recording(path)


def test_unknown_record_count_reads_what_the_file_holds(tmp_path):
    ecg, *_ = _signals(10)
    path = write_edf(tmp_path / "u.edf", [("ECG", FS_ECG, ecg, "mV")])
    set_field(path, *_RECORDS, "-1")
    assert len(read_recording(path)) == ecg.size
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ECGDataError, match=r"u\.edf: .* not a whole number of .*data records"):
        read_recording(path)


def test_prepare_windows_each_segment_and_data_option(tmp_path):
    from ecgfast.cli.common import load_data
    from ecgfast.data import storefile
    from ecgfast.data.prepare import prepare

    ecg, fp1, _ = _signals(60)
    folder = tmp_path / "edfs"
    folder.mkdir()
    path = write_edf(folder / "d.EDF", [("EEG Fp1", FS_EEG, fp1, "uV"),
                                        ("ECG ECG", FS_ECG, ecg, "mV")])
    make_discontinuous(path, {25: 100.0, 53: 5.0})  # 25 s, 28 s and a 7 s segment
    out = prepare([folder], tmp_path / "store", leads=["ECG"], workers=1, progress=False)
    (record,) = [json.loads(line) for line in (out / storefile.RECORDS).read_text().splitlines()]
    assert record["segments"] == 3 and record["short_segments"] == 1
    assert record["n_windows"] == 2 + 2 and record["fs"] == FS_ECG
    starts = np.load(out / storefile.INDEX_START)
    np.testing.assert_allclose(starts, [0, 10, 125, 135])
    windows, cohort = load_data({"data": str(write_edf(tmp_path / "c.edf", [
        ("EEG Fp1", FS_EEG, fp1, "uV"), ("ECG ECG", FS_ECG, ecg, "mV")])), "lead": "ECG"},
        need_labels=False)
    assert cohort is None and windows.shape == (6, 2560)


def test_scaling_is_checked_for_the_signals_read(edf):
    path, ecg, *_ = edf
    h = layout(path.read_bytes())
    pmin_at, pmax_at = (256 + h["ns"] * (16 + 80 + 8 * k) for k in (1, 2))
    set_field(path, pmin_at, 8, "0")  # EEG Fp1: physical min = max = 0, an unused channel
    set_field(path, pmax_at, 8, "0")
    assert len(read_recording(path, column="ECG")) == ecg.size
    with pytest.raises(ECGDataError, match=r"rec\.edf: signal 0 \('EEG Fp1'\) cannot be scaled"):
        read_recording(path, column="Fp1")
    set_field(path, pmin_at, 8, "-1.7e308")  # finite limits, but max - min overflows
    set_field(path, pmax_at, 8, "1.7e308")
    with pytest.raises(ECGDataError, match=r"physical range \[-1\.7e\+308, 1\.7e\+308\]"):
        read_recording(path, column="Fp1")
