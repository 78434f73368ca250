"""Shared measurement helpers for the benchmark suites.

Every suite records, next to its timings: the device (:func:`device_info`), the fp32 GEMM
rate measured in the same run (:func:`gemm_rate`), and peak memory (:class:`PeakMemory`).
"""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import threading
import time

import torch


def device_info() -> dict:
    """Versions and hardware of this run: CPU model and cores, GPU name if any."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    for name in ("triton", "onnxruntime", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is just not recorded
            pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gemm_rate(device: str = "cpu", dtype: torch.dtype = torch.float32, n: int = 1024,
              repeats: int = 15) -> float:
    """Median FLOP/s of an n x n x n matmul on ``device`` (2 n^3 FLOPs per call)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 3):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of the code inside ``with``, in bytes (``.peak_bytes``).

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated on entry. CPU: the
    resident set size sampled every 0.5 ms by a thread, above its value on entry (glibc's
    free lists are trimmed first, so memory freed earlier does not hide new allocations).
    """

    def __init__(self, device: str | torch.device = "cpu", interval_s: float = 5e-4):
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            _malloc_trim()
            self._base = _rss_bytes()
            self._max = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, _rss_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self._max = max(self._max, _rss_bytes())
            self._stop.set()
            self._thread.join()
            self.peak_bytes = self._max - self._base
        return False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
