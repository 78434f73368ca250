"""TMSi Poly5 files written by the tests' own writer (tests/datasets/dataset_files.py)."""

import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from ecgfast.data import ECGDataError, read_leads, read_recording
from ecgfast.data.poly5 import read_poly5, read_poly5_header

_spec = importlib.util.spec_from_file_location(
    "ecgfast_test_dataset_files", Path(__file__).parents[1] / "datasets" / "dataset_files.py")
files = importlib.util.module_from_spec(_spec)
sys.modules.setdefault(_spec.name, files)
_spec.loader.exec_module(files)

pytestmark = pytest.mark.inference  # runs in the inference install too: no torch here

X = files.toy_ecg(512, 3.0)
RAW = np.round(X * 1000).astype(np.int16)
CHANNELS = [("ECG", "µVolt", X, "f32"), ("Resp", "mV", RAW, ("i16", -1000, 1000, -2.0, 2.0))]


@pytest.mark.parametrize("version", [203, 204])
@pytest.mark.parametrize("whole_last_block", [False, True])
def test_float_and_int16_channels_versions_and_last_blocks(tmp_path, version, whole_last_block):
    path = files.write_poly5(tmp_path / "r.Poly5", CHANNELS, fs=512, version=version,
                             whole_last_block=whole_last_block, block_samples=700)
    header, signal = read_poly5(path)
    assert (header.version, header.fs, header.n_samples) == (version, 512.0, X.size)
    assert header.names == ["ECG", "Resp"] and [s.unit for s in header.signals] == ["µVolt", "mV"]
    assert header.start.isoformat() == "2012-10-08T09:30:00"
    np.testing.assert_array_equal(signal[0], X.astype(np.float32))
    np.testing.assert_allclose(signal[1], (RAW + 1000) / 2000 * 4.0 - 2.0, atol=1e-6)
    rec = read_recording(path)  # the one channel whose description names an ECG
    assert rec.lead == "ECG" and rec.fs == 512.0
    both = read_leads(path, leads=[1, "ECG"])
    assert both.leads == ("Resp", "ECG")
    np.testing.assert_array_equal(both.signal[1], rec.signal)


def test_case_insensitive_suffix_and_fs_agreement(tmp_path):
    path = files.write_poly5(tmp_path / "r.s00", CHANNELS, fs=512)
    assert read_recording(path, fs=512).fs == 512.0
    with pytest.raises(ECGDataError, match=r"r\.s00: fs=500 Hz was given but the header says 512"):
        read_recording(path, fs=500)
    two = files.write_poly5(tmp_path / "two.S00", [CHANNELS[0], ("ECG 2", "uV", X, "f32")])
    with pytest.raises(ECGDataError, match=r"two\.S00: 2 channels named ECG among \['ECG', "
                                           r"'ECG 2'\]; choose one"):
        read_recording(two)


def _patched(path: Path, offset: int, fmt: str, value) -> Path:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    out = path.with_name("bad.S00")
    out.write_bytes(bytes(data))
    return out


def test_bad_files_are_named_errors(tmp_path):
    good = files.write_poly5(tmp_path / "r.S00", CHANNELS, fs=512, block_samples=700)
    data_offset = 217 + 3 * 136
    cases = [
        (lambda: good.with_name("bad.S00").write_bytes(b"SAMPLE FILE ver 1.00" + bytes(300)),
         r"not a Poly5 file"),
        (lambda: good.with_name("bad.S00").write_bytes(good.read_bytes()[:-10]),
         r"truncated: it holds \d+ bytes of sample data"),
        (lambda: good.with_name("bad.S00").write_bytes(good.read_bytes()[:150]),
         r"truncated in the file header"),
        (lambda: _patched(good, 31, "<h", 204), r"version field 204 contradicts the magic"),
        (lambda: _patched(good, 151, "<h", 1), r"delta-compressed"),
        (lambda: _patched(good, 116, "<h", 256), r"sampling rate 512 Hz with storage rate 256"),
        (lambda: _patched(good, 119, "<h", 30000), r"30000 signal descriptions do not fit"),
        (lambda: _patched(good, 121, "<i", 10 ** 9), r"1000000000 sample periods do not fill"),
        (lambda: _patched(good, 143, "<i", 2 ** 31 - 1), r"1536 sample periods do not fill 2147483647 blocks"),
        (lambda: _patched(good, 149, "<H", 4), r"cannot hold the 4 bytes"),
        (lambda: _patched(good, 217 + 136, "<B", ord("X")), r"not followed by its '\(Hi\) ECG'"),
        (lambda: _patched(good, data_offset + 86 + 700 * 6, "<i", 5),
         r"data block 1 starts at sample period 5, expected 700"),
    ]
    for make, match in cases:
        made = make()
        bad = made if isinstance(made, Path) else good.with_name("bad.S00")
        with pytest.raises(ECGDataError, match=r"bad\.S00: (.* )?" + match):
            read_recording(bad)
    flat = _patched(good, 217 + 2 * 136 + 64, "<f", 5.0)  # Resp's ADC low = ADC high
    flat = _patched(flat, 217 + 2 * 136 + 68, "<f", 5.0)
    with pytest.raises(ECGDataError, match=r"channel 'Resp' has no usable scaling"):
        read_recording(flat, column="Resp")
    assert read_recording(flat).lead == "ECG"  # other channels stay readable
    with pytest.raises(ECGDataError, match=r"nope\.S00: file not found"):
        read_recording(tmp_path / "nope.S00")


def test_header_alone_is_cheap_and_checked(tmp_path):
    path = files.write_poly5(tmp_path / "r.S00", CHANNELS, fs=512, block_samples=700)
    h = read_poly5_header(path)
    assert (h.n_blocks, h.block_samples, h.whole_last_block) == (3, 700, False)
    assert h.duration_s == pytest.approx(3.0)


def test_voltages_come_out_in_millivolts(tmp_path):
    path = files.write_poly5(tmp_path / "r.S00", CHANNELS, fs=512)
    rec = read_recording(path)
    assert rec.unit == "mV"  # the description says µVolt
    np.testing.assert_allclose(rec.signal, X.astype(np.float32) / 1000, rtol=1e-6)
    resp = read_recording(path, column="Resp")
    assert resp.unit == "mV"
    np.testing.assert_allclose(resp.signal, (RAW + 1000) / 2000 * 4.0 - 2.0, atol=1e-6)
