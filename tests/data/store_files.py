"""Synthetic PTB-XL-like trees of 12-lead WFDB records for the window-store tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LEADS12 = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def twelve_lead(seconds: float, fs: float, seed: int) -> np.ndarray:
    """(n, 12) mV: a 1.1 Hz spiky beat train, a different gain and noise per lead."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * fs)) / fs
    beat = np.exp(-(((t * 1.1) % 1.0 - 0.3) ** 2) / 0.0008)
    gains = np.linspace(0.4, 1.6, 12) * rng.choice([-1.0, 1.0], 12)
    sig = beat[:, None] * gains + 0.05 * rng.standard_normal((t.size, 12))
    return np.round(sig, 3)


def write_record(folder: Path, name: str, seconds: float, fs: float, seed: int,
                 leads=LEADS12) -> Path:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    sig = twelve_lead(seconds, fs, seed)[:, : len(leads)]
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(leads), sig_name=list(leads), p_signal=sig,
                fmt=["16"] * len(leads), write_dir=str(folder))
    return folder / f"{name}.hea"


def ptbxl_tree(root: Path, n: int = 8, *, long_every: int = 3) -> Path:
    """``root/records500/00000/000NN_hr`` 12-lead records at 500 Hz (every
    ``long_every``-th one 25 s long, two windows; the others 10 s), one (00004) at 100 Hz,
    one corrupt (00006: its signal file is garbage), and a ``records100`` twin tree that
    prepare must skip."""
    for i in range(1, n + 1):
        fs = 100.0 if i == 4 else 500.0
        seconds = 25.0 if i % long_every == 0 else 10.0
        write_record(root / "records500" / "00000", f"{i:05d}_hr", seconds, fs, seed=i)
    (root / "records500" / "00000" / "00006_hr.dat").write_bytes(b"\x00\x01garbage")
    write_record(root / "records100" / "00000", "00001_lr", 10.0, 100.0, seed=1)
    return root
