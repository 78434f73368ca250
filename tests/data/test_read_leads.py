"""read_leads: several leads of a WFDB record, CSV or npy file, by name or index."""

import numpy as np
import pytest

from ecgfast.data import ECGDataError, MultiLeadRecording, read_leads, read_recording

wfdb = pytest.importorskip("wfdb")

pytestmark = [pytest.mark.inference,  # runs in the inference install too: no torch here
              pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")]

LEADS12 = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@pytest.fixture
def sig12():
    rng = np.random.default_rng(1)
    base = np.round(rng.normal(0.0, 0.3, 1200), 3)
    return np.stack([(k + 1) * 0.1 * base for k in range(12)])  # (12, n), row k = (k+1)/10 * base


def _wfdb12(tmp_path, sig12, name="r00001_hr"):
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=LEADS12, p_signal=sig12.T,
                fmt=["16"] * 12, write_dir=str(tmp_path))
    return tmp_path / name


def test_wfdb_all_leads(tmp_path, sig12):
    rec = read_leads(_wfdb12(tmp_path, sig12))
    assert isinstance(rec, MultiLeadRecording)
    assert rec.leads == tuple(LEADS12) and rec.fs == 500.0
    assert rec.signal.shape == (12, 1200) and rec.signal.dtype == np.float64
    assert len(rec) == 1200 and rec.duration_s == pytest.approx(2.4)
    np.testing.assert_allclose(rec.signal, sig12, atol=2e-3)
    assert rec.path.endswith("r00001_hr.hea")


def test_wfdb_selection_in_requested_order(tmp_path, sig12):
    record = _wfdb12(tmp_path, sig12)
    rec = read_leads(f"{record}.dat", leads=["V6", "I", 2])
    assert rec.leads == ("V6", "I", "III")
    np.testing.assert_allclose(rec.signal, sig12[[11, 0, 2]], atol=2e-3)
    one = read_recording(record, column="V6")
    np.testing.assert_array_equal(one.signal, rec.signal[0])  # one code path, same samples
    assert read_leads(record, leads="II").leads == ("II",)


def test_wfdb_missing_leads_named(tmp_path, sig12):
    record = _wfdb12(tmp_path, sig12)
    with pytest.raises(ECGDataError, match=r"r00001_hr\.hea.*'aVR', 'X'.*has signals.*'AVR'"):
        read_leads(record, leads=["I", "aVR", "X"])
    with pytest.raises(ECGDataError, match=r"r00001_hr\.hea.*out of range for 12"):
        read_leads(record, leads=[12])
    with pytest.raises(ECGDataError, match=r"r00001_hr\.hea.*twice"):
        read_leads(record, leads=["I", 0])
    with pytest.raises(TypeError, match="leads"):
        read_leads(record, leads=[])
    with pytest.raises(TypeError, match="int index or a str name"):
        read_leads(record, leads=[1.5])


def test_csv_header_and_headerless(tmp_path, sig12):
    path = tmp_path / "three.csv"
    rows = [f"{a},{b},{c}" for a, b, c in sig12[:3].T]
    path.write_text("I,II,V1\n" + "\n".join(rows) + "\n")
    rec = read_leads(path, fs=250)
    assert rec.leads == ("I", "II", "V1") and rec.fs == 250.0
    np.testing.assert_allclose(rec.signal, sig12[:3])
    assert read_leads(path, fs=250, leads=["V1", "I"]).leads == ("V1", "I")
    with pytest.raises(ECGDataError, match=r"three\.csv.*'V2'.*\['I', 'II', 'V1'\]"):
        read_leads(path, fs=250, leads=["V2"])
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(rows) + "\n")
    rec = read_leads(bare, fs=250)
    assert rec.leads == ("0", "1", "2")
    np.testing.assert_allclose(read_leads(bare, fs=250, leads=["2"]).signal, sig12[2:3])


def test_csv_nan_names_lead_and_line(tmp_path):
    path = tmp_path / "gap.csv"
    path.write_text("I,II\n1,2\n3,nan\n5,6\n")
    with pytest.raises(ECGDataError, match=r"gap\.csv.*1 NaN/Inf.*sample 1 \(line 3\) of lead 'II'"):
        read_leads(path, fs=100)


@pytest.mark.parametrize("transpose", [False, True])
def test_npy_both_orientations(tmp_path, sig12, transpose):
    path = tmp_path / "x.npy"
    np.save(path, sig12[:4].T if transpose else sig12[:4])
    rec = read_leads(path, fs=100)
    assert rec.leads == ("0", "1", "2", "3")
    np.testing.assert_array_equal(rec.signal, sig12[:4])
    np.testing.assert_array_equal(read_leads(path, fs=100, leads=[3, "1"]).signal, sig12[[3, 1]])
    with pytest.raises(ECGDataError, match=r"x\.npy.*'5'.*\['0', '1', '2', '3'\]"):
        read_leads(path, fs=100, leads=["5"])


def test_npy_vector_is_one_lead(tmp_path, sig12):
    path = tmp_path / "v.npy"
    np.save(path, sig12[0])
    rec = read_leads(path, fs=100)
    assert rec.leads == ("0",) and rec.signal.shape == (1, 1200)
    assert read_recording(path, fs=100).lead is None  # unchanged single-lead API
