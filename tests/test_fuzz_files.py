"""Fuzzing every file reader: truncated, bit-flipped and mis-typed files must raise the
reader's named error (ECGDataError, CheckpointError), never another exception or a hang.

A seeded loop (reproducible): for each format, one valid small file, then truncations,
random bit flips (half of them in the first 4 KiB, where headers live) and files that
are valid containers holding the wrong types. A mutated file that still parses is fine;
only the kind of failure is checked. Each read runs under a 10 s alarm. FUZZ_FLIPS=150
in the environment fuzzes deeper (about a minute). The readers whose files are cheap to
read (npy, cohort npz, EDF, BDF, Poly5, manifests) also take FUZZ_ROUNDS (default 1,000)
deeper mutations each (:func:`deep_mutations`), enough to meet a 1-in-1,000 escape.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from ecgfast.data import Cohort, ECGDataError, read_recording, read_segments
from ecgfast.datasets import load_dataset
from ecgfast.training import checkpoint as ckpt


def _helpers(name: str, relative: str):
    """The test helper module at ``relative`` (beside the tests that use it)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


files = _helpers("ecgfast_test_dataset_files", "datasets/dataset_files.py")
edf_files = _helpers("ecgfast_test_edf_files", "data/edf_files.py")

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")]

N_FLIPS = int(os.environ.get("FUZZ_FLIPS", "14"))


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("a reader ran for more than 10 s")


def mutations(data: bytes, seed: int):
    """(name, bytes) of truncated and bit-flipped versions of ``data``."""
    rng = np.random.default_rng(seed)
    n = len(data)
    for frac in (0.0, 0.02, 0.1, 0.5, 0.9):
        yield f"truncated at {int(frac * n)}", data[: int(frac * n)]
    yield "truncated by one byte", data[:-1]
    for i in range(N_FLIPS):
        buf = bytearray(data)
        hi = min(n, 4096) if i % 2 == 0 else n
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, hi))
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        yield f"flip {i}", bytes(buf)
    yield "random bytes", rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
    yield "a zip header", b"PK\x03\x04" + bytes(200)
    yield "a pickle of a list", pickle.dumps([1, 2, 3], protocol=2)
    yield "text", b"hello,world\n1,2\n"


def expect_named_error(read, allowed=(ECGDataError,)):
    """Run ``read()``; anything but success or an ``allowed`` error fails the test."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        read()
    except allowed:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def fuzz_file(path: Path, read, seed: int, allowed=(ECGDataError,), extra=()):
    """Write each mutation of ``path`` (and each ``extra`` (name, bytes)) over it, read."""
    original = path.read_bytes()
    try:
        for name, data in [*mutations(original, seed), *extra]:
            path.write_bytes(data)
            try:
                expect_named_error(read, allowed)
            except Exception as exc:
                raise AssertionError(f"{path.name}, {name}: {type(exc).__name__}: {exc}") from exc
    finally:
        path.write_bytes(original)


def _mat_bytes(tmp_path, name, obj) -> bytes:
    p = tmp_path / f"_{name}.mat"
    savemat(p, obj)
    return p.read_bytes()


def _pickle_bytes(obj) -> bytes:
    return files.py2_pickle(obj)


# --------------------------------------------------------------------------- datasets


def test_fuzz_wesad_pickles(tmp_path):
    ecg = files.toy_ecg(700, 21, 5.0)
    obj = files.wesad_dict(2, ecg=ecg, label=np.ones(ecg.size, np.int32))
    root = tmp_path / "W"
    (root / "S2").mkdir(parents=True)
    path = root / "S2" / "S2.pkl"
    path.write_bytes(_pickle_bytes(obj))
    extra = [
        ("signal is a str", _pickle_bytes({"signal": "x", "label": 1})),
        ("ECG of strings", _pickle_bytes({"signal": {"chest": {"ECG": np.array(["a", "b"])}},
                                          "label": np.array([1, 2])})),
        ("2-D label", _pickle_bytes({**obj, "label": np.ones((ecg.size, 2), np.int32)})),
        ("float codes", _pickle_bytes({**obj, "label": np.full(ecg.size, 1.5)})),
        ("short ECG", _pickle_bytes(files.wesad_dict(2, ecg=ecg[:100], label=np.ones(100)))),
    ]
    fuzz_file(path, lambda: load_dataset("wesad", root, progress=False), 1, extra=extra)


def test_fuzz_dreamer_mat(tmp_path):
    top = files.dreamer_struct({1: ([12], [(1, 4, 3)])})
    path = files.write_dreamer(tmp_path / "D" / "DREAMER.mat",
                               subjects={1: ([12], [(1, 4, 3)])})
    bad_data = dict(top, Data=np.arange(3.0))
    extra = [
        ("DREAMER is a number", _mat_bytes(tmp_path, "a", {"DREAMER": 5})),
        ("Data is numeric", _mat_bytes(tmp_path, "b", {"DREAMER": bad_data})),
        ("stimuli are strings", _mat_bytes(tmp_path, "c", {"DREAMER": dict(
            top, Data=files.cell([dict(top["Data"][0, 0], ECG={"stimuli": "abc"})]))})),
        ("rate is text", _mat_bytes(tmp_path, "d", {"DREAMER": dict(top, ECG_SamplingRate="x")})),
    ]
    fuzz_file(path, lambda: load_dataset("dreamer", path.parent, progress=False), 2,
              extra=extra)


def test_fuzz_amigos_mat(tmp_path):
    root = files.write_amigos(tmp_path / "A", {3: ([12, 0], [(5.5, 2.0, 7.0), None])})
    (path,) = root.iterdir()
    good = files.amigos_mat([12], [(5.5, 2.0, 7.0)], 3)
    extra = [
        ("joined_data is text", _mat_bytes(tmp_path, "a", dict(good, joined_data="text"))),
        ("ratings are text", _mat_bytes(tmp_path, "b", dict(
            good, labels_selfassessment=files.cell(["high"])))),
        ("1-D trial", _mat_bytes(tmp_path, "c", dict(good, joined_data=files.cell(
            [np.arange(1536.0)])))),
    ]
    fuzz_file(path, lambda: load_dataset("amigos", root, progress=False), 3, extra=extra)


def test_fuzz_swell_sheet_text_and_csv(tmp_path):
    blocks = {1: {1: ("N", 12, [(6, 3)])}}
    saved = dict(files.SWELL_BLOCKS)
    files.SWELL_BLOCKS.clear()
    files.SWELL_BLOCKS.update(blocks)
    try:
        xroot = files.write_swell(tmp_path / "X")
        croot = files.write_swell(tmp_path / "C", csv=True)
    finally:
        files.SWELL_BLOCKS.clear()
        files.SWELL_BLOCKS.update(saved)
    sheet = next(xroot.rglob("*.xlsx"))
    fuzz_file(sheet, lambda: load_dataset("swell", xroot, progress=False), 4)
    csv = next(croot.rglob("*per minute.csv"))
    fuzz_file(csv, lambda: load_dataset("swell", croot, progress=False), 5,
              extra=[("header only", b"PP,Blok,Condition,Valence_rc,Arousal_rc\n"),
                     ("ragged", b"PP,Blok,Condition,Valence_rc,Arousal_rc\nPP1,1\n")])
    ecg = next(croot.rglob("*.txt"))
    fuzz_file(ecg, lambda: load_dataset("swell", croot, progress=False), 6,
              extra=[("words", b"ECG\nabc\ndef\n"), ("empty", b"")])


def test_fuzz_case_csv(tmp_path):
    saved = dict(files.CASE_SUBJECTS)
    files.CASE_SUBJECTS.clear()
    files.CASE_SUBJECTS[2] = (12, (0.0, 12.0))
    try:
        root = files.write_case(tmp_path / "CASE", (2,))
    finally:
        files.CASE_SUBJECTS.clear()
        files.CASE_SUBJECTS.update(saved)
    base = root / "data" / "interpolated"
    for k, path in enumerate((base / "physiological" / "sub_2.csv",
                              base / "annotations" / "sub_2.csv")):
        fuzz_file(path, lambda: load_dataset("case", root, progress=False), 7 + k,
                  extra=[("one row", path.read_text().splitlines()[0].encode() + b"\n1,2,3\n"),
                         ("text cells", b"daqtime,ecg\nx,y\n")])


def test_fuzz_eegmat_subject_info(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "eegmat"
    root.mkdir()
    for part in (1, 2):
        edf_files.write_edf(root / f"Subject04_{part}.edf", [
            ("EEG Fz", 100, rng.normal(0, 20, 1100), "uV"),
            ("ECG ECG", 100, files.toy_ecg(100, 11, 10.0 * part), "mV")])
    info = root / "subject-info.csv"
    info.write_text("Subject,Age,Gender,Recording year,Number of subtractions,Count quality\n"
                    "Subject04,18,F,2011,9.7,1\n")
    fuzz_file(info, lambda: load_dataset("eegmat", root, progress=False), 8,
              extra=[("no rows", info.read_bytes().splitlines(True)[0]),
                     ("text count", info.read_text().replace("9.7", "many").encode())])


# --------------------------------------------------------------------- existing readers


def test_fuzz_npy_csv_and_wfdb(tmp_path):
    import wfdb

    x = np.round(files.toy_ecg(256, 12, 1.0), 4)
    npy = tmp_path / "rec.npy"
    np.save(npy, x)
    _fuzz_deep(npy, lambda: read_recording(npy, fs=256), 10, head=128)
    fuzz_file(npy, lambda: read_recording(npy, fs=256), 10, extra=[
        ("strings", _npy_bytes(tmp_path, np.array(["a", "b"]))),
        ("3-D", _npy_bytes(tmp_path, np.zeros((2, 2, 2)))),
        ("complex", _npy_bytes(tmp_path, np.zeros(4, complex)))])
    csv = tmp_path / "rec.csv"
    np.savetxt(csv, np.stack([x, -x], 1), delimiter=",", header="MLII,V5", comments="")
    fuzz_file(csv, lambda: read_recording(csv, fs=256, column="V5"), 11)
    sig = np.stack([x, -0.5 * x], axis=1)
    wfdb.wrsamp("rec", fs=256, units=["mV", "mV"], sig_name=["MLII", "V5"], p_signal=sig,
                fmt=["16", "16"], write_dir=str(tmp_path))
    for suffix in (".hea", ".dat"):
        fuzz_file(tmp_path / f"rec{suffix}", lambda: read_recording(tmp_path / "rec"), 12)


def _npy_bytes(tmp_path, arr) -> bytes:
    p = tmp_path / "_tmp.npy"
    np.save(p, arr)
    return p.read_bytes()


def test_fuzz_cohort_npz(tmp_path):
    c = files_cohort()
    path = c.save(tmp_path / "c.npz")
    no_meta = tmp_path / "_no_meta.npz"
    np.savez(no_meta, windows=c.windows, subject=c.subject, session=c.session,
             arousal=c.labels["arousal"], valence=c.labels["arousal"], fs=np.float64(256))
    strings = tmp_path / "_s.npz"
    np.savez(strings, windows=np.array(["a"]), meta=np.float64(3))
    _fuzz_deep(path, lambda: Cohort.load(path), 13, head=4096)
    fuzz_file(path, lambda: Cohort.load(path), 13,
              extra=[("no meta", no_meta.read_bytes()), ("mis-typed", strings.read_bytes())])


def files_cohort() -> Cohort:
    """Four real-length windows: the windows member is larger than zipfile reads ahead
    (4 KiB), so a mutated array header is parsed before the member's CRC is checked."""
    rng = np.random.default_rng(0)
    n = 4
    return Cohort(windows=rng.normal(size=(n, 2560)).astype(np.float32),
                  subject=np.arange(n, dtype=np.int64), session=np.arange(n, dtype=np.int64),
                  fs=256.0, labels={"arousal": np.array([0, 1, 1, 0])},
                  classes={"arousal": ("low", "high")}, scores={"arousal": np.linspace(1, 5, n)},
                  provenance={"dataset": "fuzz"})


def test_npy_header_that_numpy_cannot_tokenize(tmp_path):
    """Found by seeded fuzzing (:func:`mutations` of the npy test file, seed 10, flip 552,
    FUZZ_FLIPS=600): a space before 'shape' flipped to '(' leaves a bracket open, and
    numpy's header parser raised tokenize.TokenError."""
    path = tmp_path / "rec.npy"
    np.save(path, np.zeros(3072))
    data = bytearray(path.read_bytes())
    assert data[36:57] == b"order': False, 'shape"
    data[50] ^= 0x08
    path.write_bytes(bytes(data))
    with pytest.raises(ECGDataError, match=r"rec\.npy: not a \.npy array: TokenError"):
        read_recording(path, fs=256)


def test_cohort_npz_header_that_numpy_cannot_tokenize(tmp_path):
    """Found by seeded fuzzing (:func:`mutations` of this cohort, seed 13, flip 48,
    FUZZ_FLIPS=60): the same kind of flip in the windows member's header (and two in its
    data) raised tokenize.TokenError."""
    path = files_cohort().save(tmp_path / "c.npz")
    data = bytearray(path.read_bytes())
    assert data[121:177] == b"(4, 2560), }" + b" " * 44
    for at, mask in ((176, 0x08), (1082, 0x08), (3046, 0x40)):
        data[at] ^= mask
    path.write_bytes(bytes(data))
    with pytest.raises(ECGDataError, match=r"c\.npz: member 'windows\.npy': not a \.npy "
                                           r"array: TokenError"):
        Cohort.load(path)


# ----------------------------------------------------------------------------- EDF, BDF


def test_fuzz_edf_and_bdf(tmp_path):
    t = np.arange(800) / 100.0
    ecg, eeg = np.sin(2 * np.pi * 1.1 * t) ** 9, 20 * np.cos(2 * np.pi * 3.0 * t[::2])
    signals = [("EEG Fz", 50, eeg, "uV"), ("ECG ECG", 100, ecg, "mV")]
    notes = [(0.5, None, "rest"), (4.0, 2.5, "task")]
    edf = edf_files.write_edf(tmp_path / "r.edf", signals, annotations=notes)
    edf_files.make_discontinuous(edf, {4: 3.0})
    bdf = edf_files.write_edf(tmp_path / "r.bdf", signals, annotations=notes, bdf=True)
    for k, path in enumerate((edf, bdf)):
        data = path.read_bytes()
        extra = [(f"field {a}:{b} = {text}", data[:a] + text.ljust(b - a) + data[b:])
                 for a, b in ((236, 244), (244, 252), (252, 256), (184, 192))
                 for text in (b"-1", b"0", b"99999999", b"1e308", b"nan", b"-7")]
        def read(p=path):
            read_segments(p, leads=["ECG"])

        _fuzz_deep(path, read, 42 + k, head=256 * 4)  # the header: 256 x (1 + 3 signals)
        fuzz_file(path, read, 40 + k, extra=extra)


def test_fuzz_checkpoints(tmp_path):
    import torch

    from ecgfast.models import ECGEncoder, EncoderConfig

    cfg = EncoderConfig(filters=(8, 8, 8), kernel_sizes=(3, 3, 3), se_reduction=2)
    enc = ECGEncoder(cfg)
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    path = ckpt.save_checkpoint(tmp_path, epoch=1, state_dict=state,
                                config={"encoder": cfg.to_dict()},
                                optimizer_state={"step": torch.tensor(1)})

    def read():
        c = ckpt.load_checkpoint(tmp_path)
        ckpt.load_encoder(tmp_path)
        c.load_optimizer_state()

    named = (ckpt.CheckpointError,)
    config_extra = [("a list", b"[1, 2]"), ("encoder is 5", json.dumps({"encoder": 5}).encode()),
                    ("encoder junk", json.dumps({"encoder": {"x": [1]}}).encode())]
    for name, extra in (("config.json", config_extra), ("model.safetensors", ()),
                        ("optimizer.pt", ())):
        fuzz_file(path / name, read, 20 + len(name), allowed=named, extra=extra)
    fuzz_file(tmp_path / "checkpoints" / "latest", read, 30, allowed=named,
              extra=[("a path with NUL", b"epoch\x00-1"), ("up", b"../../..")])


# ------------------------------------------------------------ Poly5 and manifests
#
# Deeper than the loop above: FUZZ_ROUNDS (default 1,000) seeded mutations per format, so
# that a failure one mutation in a thousand meets is met.

N_ROUNDS = int(os.environ.get("FUZZ_ROUNDS", "1000"))


def deep_mutations(data: bytes, seed: int, n: int, head: int, cells=()):
    """``n`` (name, bytes) mutations of ``data``: truncations, bit flips (most within the
    first ``head`` bytes), bytes set to extremes, insertions and deletions, and, for a
    text file, a delimited cell replaced by one of ``cells``."""
    rng = np.random.default_rng(seed)
    size = len(data)
    for i in range(n):
        buf = bytearray(data)
        kind = i % 6
        if kind == 0:
            buf = buf[: int(rng.integers(0, size))]
        elif kind in (1, 2):
            hi = min(size, head) if kind == 1 else size
            for _ in range(int(rng.integers(1, 5))):
                buf[int(rng.integers(0, hi))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 3:
            pos = int(rng.integers(0, min(size, head) - 4))
            buf[pos:pos + 4] = bytes(rng.choice([b"\x00" * 4, b"\xff" * 4, b"\xff\x7f\x00\x00",
                                                 b"\x00\x00\x00\x80", b"\x01\x00\x00\x00"]))
        elif kind == 4:
            pos = int(rng.integers(0, size))
            if rng.integers(2):
                buf[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), np.uint8).tobytes()
            else:
                del buf[pos:pos + int(rng.integers(1, 9))]
        elif cells:
            text = buf.decode("utf-8", errors="replace")
            fields = [j for j, ch in enumerate(text) if ch in ",\n"]
            a = fields[int(rng.integers(0, len(fields) - 1))]
            b = next((j for j in fields if j > a), len(text))
            text = text[:a + 1] + str(cells[int(rng.integers(0, len(cells)))]) + text[b:]
            buf = bytearray(text.encode("utf-8"))
        yield f"mutation {i} (kind {kind})", bytes(buf)


def _fuzz_deep(path: Path, read, seed: int, head: int, cells=()):
    original = path.read_bytes()
    try:
        for name, data in deep_mutations(original, seed, N_ROUNDS, head, cells):
            path.write_bytes(data)
            try:
                expect_named_error(read)
            except Exception as exc:
                raise AssertionError(f"{path.name}, {name}: {type(exc).__name__}: {exc}") from exc
    finally:
        path.write_bytes(original)


def test_fuzz_poly5(tmp_path):
    from ecgfast.data.poly5 import read_poly5

    x = files.toy_ecg(256, 3.0)
    path = files.write_poly5(tmp_path / "rec.S00", [
        ("ECG", "uV", x, "f32"), ("Skin", "mV", np.round(x * 100).astype(np.int16),
                                  ("i16", -32768, 32767, -327.68, 327.67))],
        fs=256, block_samples=50)

    def read():
        read_poly5(path)
        read_recording(path)

    _fuzz_deep(path, read, 40, head=217 + 3 * 136 + 86)


def test_fuzz_manifest(tmp_path):
    from ecgfast.data.manifest import manifest_windows

    np.save(tmp_path / "a.npy", files.toy_ecg(256, 10.5))
    np.save(tmp_path / "b.npy", np.stack([files.toy_ecg(256, 10.5, 2)] * 2))
    path = tmp_path / "m.csv"
    path.write_text("path,subject,start,end,fs,lead,mood\n"
                    "a.npy,1,0,10.2,256,,calm\nb.npy,two,,,256,1,3\n")
    cells = ["", "-1", "nan", "inf", "1e999", "0", "a.npy", "../a.npy", "/etc/passwd",
             "/dev/null", ".", "b.npy", "m.csv", "x" * 5000, '"', '"a,b"', "\x00", "é",
             "2", "V5", "1.5", "  ", "lead", "path"]
    _fuzz_deep(path, lambda: manifest_windows(path), 41, head=64, cells=cells)
