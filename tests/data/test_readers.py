import numpy as np
import pytest

from ecgfast.data import ECGDataError, Recording, read_leads, read_recording

wfdb = pytest.importorskip("wfdb")

# wfdb 4.3 itself triggers a pandas deprecation warning on every header it parses.
pytestmark = [pytest.mark.inference,  # runs in the inference install too: no torch here
              pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")]


@pytest.fixture
def ecg():
    rng = np.random.default_rng(0)
    return np.round(rng.normal(0.0, 0.3, 3000), 4)


# ------------------------------------------------------------------ npy


def test_npy_1d(tmp_path, ecg):
    path = tmp_path / "rec.npy"
    np.save(path, ecg.astype(np.float32))
    rec = read_recording(path, fs=360)
    assert isinstance(rec, Recording)
    assert rec.signal.dtype == np.float64 and rec.signal.shape == (3000,)
    np.testing.assert_allclose(rec.signal, ecg.astype(np.float32))
    assert rec.fs == 360.0 and rec.path == str(path) and rec.lead is None
    assert rec.duration_s == pytest.approx(3000 / 360) and len(rec) == 3000


@pytest.mark.parametrize("transpose", [False, True])
def test_npy_2d_lead_selection(tmp_path, ecg, transpose):
    leads = np.stack([ecg, 2 * ecg, 3 * ecg])  # (3, n)
    path = tmp_path / "leads.npy"
    np.save(path, leads.T if transpose else leads)
    rec = read_recording(path, fs=500.0, column=2)
    np.testing.assert_allclose(rec.signal, 3 * ecg)
    assert rec.lead == "2"
    with pytest.raises(ECGDataError, match=r"leads\.npy.*column"):
        read_recording(path, fs=500.0)
    with pytest.raises(ECGDataError, match=r"leads\.npy.*out of range"):
        read_recording(path, fs=500.0, column=3)


def test_npy_column_vector_is_1d(tmp_path, ecg):
    path = tmp_path / "col.npy"
    np.save(path, ecg[:, None])
    np.testing.assert_allclose(read_recording(path, fs=100).signal, ecg)


def test_npy_wrong_rank(tmp_path):
    path = tmp_path / "cube.npy"
    np.save(path, np.zeros((2, 3, 4)))
    with pytest.raises(ECGDataError, match=r"cube\.npy.*3-D"):
        read_recording(path, fs=100)


@pytest.mark.parametrize("fs", [None, 0, -5.0, float("inf")])
def test_npy_missing_or_bad_fs(tmp_path, ecg, fs):
    path = tmp_path / "nofs.npy"
    np.save(path, ecg)
    with pytest.raises(ECGDataError, match=r"nofs\.npy.*(fs|sampling rate)"):
        read_recording(path, fs=fs)


def test_npy_nan_count_and_first_index(tmp_path, ecg):
    ecg[[17, 40]] = np.nan
    ecg[99] = -np.inf
    path = tmp_path / "gaps.npy"
    np.save(path, ecg)
    with pytest.raises(ECGDataError, match=r"gaps\.npy.*3 NaN/Inf.*sample 17"):
        read_recording(path, fs=250)


def test_npy_empty_array_and_empty_file(tmp_path):
    path = tmp_path / "empty.npy"
    np.save(path, np.zeros(0))
    with pytest.raises(ECGDataError, match=r"empty\.npy.*empty"):
        read_recording(path, fs=250)
    blank = tmp_path / "blank.npy"
    blank.write_bytes(b"")
    with pytest.raises(ECGDataError, match=r"blank\.npy.*empty"):
        read_recording(blank, fs=250)


def test_npy_garbage(tmp_path):
    path = tmp_path / "junk.npy"
    path.write_bytes(b"this is not numpy")
    with pytest.raises(ECGDataError, match=r"junk\.npy"):
        read_recording(path, fs=250)


# ------------------------------------------------------------------ csv


def test_csv_without_header(tmp_path, ecg):
    path = tmp_path / "plain.csv"
    path.write_text("\n".join(f"{v:.4f}" for v in ecg) + "\n")
    rec = read_recording(path, fs=128.0)
    np.testing.assert_allclose(rec.signal, ecg, atol=1e-9)
    assert rec.fs == 128.0 and rec.lead is None


def test_csv_with_header_and_columns(tmp_path, ecg):
    path = tmp_path / "multi.csv"
    rows = [f"{i / 250:.4f},{v:.4f},{-v:.4f}" for i, v in enumerate(ecg)]
    path.write_text("time,MLII,V5\n" + "\n".join(rows) + "\n")
    by_name = read_recording(path, fs=250.0, column="V5")
    np.testing.assert_allclose(by_name.signal, -ecg, atol=1e-9)
    assert by_name.lead == "V5"
    by_index = read_recording(path, fs=250.0, column=1)
    np.testing.assert_allclose(by_index.signal, ecg, atol=1e-9)
    assert by_index.lead == "MLII"
    with pytest.raises(ECGDataError, match=r"multi\.csv.*3 columns.*MLII"):
        read_recording(path, fs=250.0)
    with pytest.raises(ECGDataError, match=r"multi\.csv.*no column named 'V1'"):
        read_recording(path, fs=250.0, column="V1")


def test_csv_single_named_column(tmp_path, ecg):
    path = tmp_path / "named.csv"
    path.write_text("ecg_mv\n" + "\n".join(f"{v}" for v in ecg[:10]))
    rec = read_recording(path, fs=100)
    assert rec.lead == "ecg_mv" and rec.signal.shape == (10,)


def test_csv_junk_row_names_line_number(tmp_path, ecg):
    path = tmp_path / "junk.csv"
    lines = ["ecg"] + [f"{v:.4f}" for v in ecg[:50]]
    lines[31] = "lead off"  # file line 32
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ECGDataError, match=r"junk\.csv.*line 32.*'lead off'"):
        read_recording(path, fs=100)


def test_csv_ragged_row(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ECGDataError, match=r"ragged\.csv.*line 3"):
        read_recording(path, fs=100, column=0)


def test_csv_requires_fs(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("1\n2\n3\n")
    with pytest.raises(ECGDataError, match=r"x\.csv.*fs"):
        read_recording(path)


def test_csv_nan(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_text("1\n2\nnan\n4\n")
    with pytest.raises(ECGDataError, match=r"nan\.csv.*1 NaN/Inf.*sample 2 \(line 3\)"):
        read_recording(path, fs=100)


@pytest.mark.parametrize("text", ["", "\n\n", "ecg\n"])
def test_csv_empty(tmp_path, text):
    path = tmp_path / "empty.csv"
    path.write_text(text)
    with pytest.raises(ECGDataError, match=r"empty\.csv.*empty"):
        read_recording(path, fs=100)


# ------------------------------------------------------------------ wfdb


def _write_wfdb(tmp_path, ecg, name="rec100"):
    sig = np.stack([ecg, -0.5 * ecg], axis=1)
    wfdb.wrsamp(
        name,
        fs=360,
        units=["mV", "mV"],
        sig_name=["MLII", "V5"],
        p_signal=sig,
        fmt=["16", "16"],
        write_dir=str(tmp_path),
    )
    return tmp_path / name


@pytest.mark.parametrize("suffix", ["", ".hea", ".dat"])
def test_wfdb_record(tmp_path, ecg, suffix):
    record = _write_wfdb(tmp_path, ecg)
    rec = read_recording(f"{record}{suffix}")
    assert rec.fs == 360.0 and rec.lead == "MLII" and rec.path.endswith("rec100.hea")
    np.testing.assert_allclose(rec.signal, ecg, atol=2e-3)


def test_wfdb_lead_by_name_and_index(tmp_path, ecg):
    record = _write_wfdb(tmp_path, ecg)
    by_name = read_recording(record, column="V5")
    by_index = read_recording(record, column=1)
    np.testing.assert_allclose(by_name.signal, -0.5 * ecg, atol=2e-3)
    np.testing.assert_array_equal(by_name.signal, by_index.signal)
    assert by_index.lead == "V5"
    with pytest.raises(ECGDataError, match=r"rec100\.hea.*no signal named 'V9'.*MLII"):
        read_recording(record, column="V9")
    with pytest.raises(ECGDataError, match=r"rec100\.hea.*out of range"):
        read_recording(record, column=2)


def test_wfdb_fs_conflict(tmp_path, ecg):
    record = _write_wfdb(tmp_path, ecg)
    assert read_recording(record, fs=360).fs == 360.0
    with pytest.raises(ECGDataError, match=r"rec100\.hea.*fs=250.*360"):
        read_recording(record, fs=250)


def test_wfdb_missing_signal_file(tmp_path, ecg):
    record = _write_wfdb(tmp_path, ecg)
    (tmp_path / "rec100.dat").unlink()
    with pytest.raises(ECGDataError, match=r"rec100\.hea"):
        read_recording(record)


def test_wfdb_corrupt_header(tmp_path):
    (tmp_path / "bad.hea").write_text("this is not a header\n")
    with pytest.raises(ECGDataError, match=r"bad\.hea"):
        read_recording(tmp_path / "bad.hea")


# ------------------------------------------------------------------ dispatch


def test_missing_file(tmp_path):
    with pytest.raises(ECGDataError, match=r"nothere\.npy.*not found"):
        read_recording(tmp_path / "nothere.npy", fs=100)
    with pytest.raises(ECGDataError, match=r"nothere\.hea.*not found"):
        read_recording(tmp_path / "nothere.hea")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "rec.xyz"
    path.write_bytes(b"0")
    with pytest.raises(ECGDataError, match=r"rec\.xyz.*unknown file type '\.xyz'.*\.edf"):
        read_recording(path, fs=100)


def test_bad_path_type():
    with pytest.raises(TypeError, match="path"):
        read_recording(123, fs=100)


# ------------------------------------------------------------------ wfdb, several rates


def _write_multirate(tmp_path, name="drive"):
    """A drivedb-like record: 15.5 Hz frames, ECG at 32 samples per frame (496 Hz), GSR
    at 2 (31 Hz) and HR at 1 (15.5 Hz); 40 s."""
    frames = 620
    t = np.arange(frames * 32) / 496.0
    ecg = np.round(np.sin(2 * np.pi * 1.1 * t) ** 15, 3)
    gsr = np.round(np.linspace(1.0, 2.0, frames * 2), 3)
    hr = np.round(np.full(frames, 66.0), 1)
    wfdb.wrsamp(name, fs=15.5, units=["mV", "mV", "bpm"], sig_name=["ECG", "GSR", "HR"],
                e_p_signal=[ecg, gsr, hr], samps_per_frame=[32, 2, 1], fmt=["16"] * 3,
                write_dir=str(tmp_path))
    return tmp_path / name, ecg, gsr


def test_wfdb_each_signal_at_its_own_rate(tmp_path):
    record, ecg, gsr = _write_multirate(tmp_path)
    rec = read_recording(record, column="ECG")
    assert rec.fs == 496.0 and len(rec) == ecg.size and rec.unit == "mV"
    np.testing.assert_allclose(rec.signal, ecg, atol=2e-3)  # every sample, none averaged
    gsr_rec = read_recording(record, column=1, fs=31)
    assert gsr_rec.fs == 31.0 and len(gsr_rec) == gsr.size
    hr = read_recording(record, column="HR")
    assert hr.fs == 15.5 and hr.unit == "bpm"
    with pytest.raises(ECGDataError, match=r"drive\.hea: fs=15\.5 Hz.*496 Hz for ECG"):
        read_recording(record, column="ECG", fs=15.5)
    with pytest.raises(ECGDataError, match=r"different rates \('ECG' 496 Hz, 'GSR' 31 Hz, "
                                           r"'HR' 15\.5 Hz\)"):
        read_leads(record)
    assert read_leads(record, leads=["GSR"]).fs == 31.0


def test_wfdb_microvolts_come_out_in_millivolts(tmp_path, ecg):
    wfdb.wrsamp("uv", fs=250, units=["uV"], sig_name=["ECG"], p_signal=1000 * ecg[:, None],
                fmt=["16"], write_dir=str(tmp_path))
    rec = read_recording(tmp_path / "uv")
    assert rec.unit == "mV"
    np.testing.assert_allclose(rec.signal, ecg, atol=2e-3)


def test_prepare_reads_each_signal_at_its_own_rate(tmp_path):
    import json

    from ecgfast.data import storefile
    from ecgfast.data.prepare import prepare

    folder = tmp_path / "db"
    folder.mkdir()
    _write_multirate(folder)
    out = prepare([folder], tmp_path / "store", leads=["ECG"], workers=1, progress=False)
    manifest = storefile.read_manifest(out)
    (record,) = [json.loads(x) for x in (out / storefile.RECORDS).read_text().splitlines()]
    assert record["fs"] == 496.0 and manifest["n_windows"] == 4  # 40 s, not 40 s / 32
    with pytest.raises(ECGDataError, match=r"different rates \('ECG' 496 Hz, 'GSR' 31 Hz"):
        prepare([folder], tmp_path / "all", workers=1, progress=False)
