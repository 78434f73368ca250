"""R-peak detectors on 10 s windows as ecgfast makes them: sleepecg against NeuroKit2.

Reads a WFDB record with reference beat annotations (e.g. MIT-BIH Arrhythmia record
100: ``100.hea``, ``100.dat``, ``100.atr``), turns its first lead into ecgfast windows
(``ecgfast.data.preprocess``: 256 Hz, 10 s, 0.8 Hz high-pass, robust z-score), runs each
detector on every window on its own, and scores the detections against the annotated
beats inside the window (a detection within ``--tolerance`` seconds of an unmatched
reference beat is a true positive; ANSI/AAMI EC57 uses 150 ms): sensitivity, positive
predictive value, F1, median |timing error|, the windows whose RR-interval features fail
(:mod:`ecgfast.hrv`), and the time per window.

    python benchmarks/r_peak_detectors.py /path/to/100 --json out.json

NeuroKit2 is optional (not an ecgfast dependency): without it only sleepecg runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

BEATS = set("NLRBAaJSVrFejnE/fQ?")


def _match(ref: np.ndarray, det: np.ndarray, tol: int) -> tuple[int, list[int]]:
    used = np.zeros(ref.size, dtype=bool)
    errors = []
    for d in det:
        if ref.size == 0:
            break
        j = int(np.argmin(np.abs(ref - d) + used * 10 ** 9))
        if not used[j] and abs(int(ref[j]) - int(d)) <= tol:
            used[j] = True
            errors.append(abs(int(ref[j]) - int(d)))
    return int(used.sum()), errors


def _neurokit(signal, fs):
    import neurokit2 as nk

    _, info = nk.ecg_peaks(signal, sampling_rate=int(fs))
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


def main() -> None:
    import wfdb

    from ecgfast.data import preprocess
    from ecgfast.hrv import MIN_BEATS, RR_RANGE_S, r_peaks

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("record", help="WFDB record path without extension")
    p.add_argument("--tolerance", type=float, default=0.15, help="seconds")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rec = wfdb.rdrecord(args.record, channels=[0])
    ann = wfdb.rdann(args.record, "atr")
    beats_s = np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in BEATS]) / rec.fs
    win = preprocess(rec.p_signal[:, 0], rec.fs, source=args.record)
    fs = win.fs
    length = win.windows.shape[1]
    detectors = {"sleepecg": lambda x: r_peaks(x, fs)}
    try:
        import neurokit2

        detectors["neurokit2"] = lambda x: _neurokit(x, fs)
        versions = {"neurokit2": neurokit2.__version__}
    except ImportError:
        versions = {}
    import sleepecg

    versions["sleepecg"] = sleepecg.__version__
    tol = round(args.tolerance * fs)
    out = {"record": args.record, "fs_record": rec.fs, "fs_windows": fs,
           "n_windows": len(win.windows), "tolerance_s": args.tolerance,
           "versions": versions, "detectors": {}}
    for name, detect in detectors.items():
        tp = n_ref = n_det = failed = 0
        errors, times = [], []
        for x, start in zip(win.windows, win.starts_s):
            ref = np.round((beats_s[(beats_s >= start) & (beats_s < start + length / fs)]
                            - start) * fs).astype(np.int64)
            t0 = time.perf_counter()
            det = detect(x)
            times.append(time.perf_counter() - t0)
            k, err = _match(ref, det, tol)
            tp, n_ref, n_det = tp + k, n_ref + ref.size, n_det + det.size
            errors += err
            rr = np.diff(det) / fs
            failed += int(det.size < MIN_BEATS or rr.min() < RR_RANGE_S[0]
                          or rr.max() > RR_RANGE_S[1])
        se, ppv = tp / max(n_ref, 1), tp / max(n_det, 1)
        out["detectors"][name] = {
            "sensitivity": se, "ppv": ppv, "f1": 2 * se * ppv / max(se + ppv, 1e-12),
            "reference_beats": n_ref, "detected": n_det, "true_positives": tp,
            "median_abs_error_ms": 1000 * statistics.median(errors) / fs if errors else None,
            "windows_failing_hrv_checks": failed,
            "ms_per_window_median": 1000 * statistics.median(times),
        }
        print(name, json.dumps(out["detectors"][name]), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
