"""What :func:`ecgfast.export.quantize_onnx` measures: an INT8 encoder against its fp32
original on the same windows (embedding agreement, CPU speed, probe accuracy), gathered
in a :class:`QuantizationReport`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgfast.evaluation import compare_probe_accuracy, standard_error
from ecgfast.export.runtime import OnnxEncoder


@dataclass
class QuantizationReport:
    """What :func:`quantize_onnx` measured: INT8 against fp32 on the evaluation windows.

    cosine_*: cosine similarity of each window's INT8 and fp32 embeddings (mean and min
    over windows); relative_error: max |int8 - fp32| / max |fp32|; *_windows_per_s: the
    CPU provider's median throughput at ``benchmark_batch`` windows per call;
    probe_accuracy_fp32 / probe_accuracy_int8: mean accuracy over ``probe_splits`` seeded
    half/half splits of a probe fit on the fp32 / INT8 embeddings of one half and scored on
    the same model's embeddings of the other; probe_accuracy_int8_fp32_probe: the fp32
    probe scored on the INT8 embeddings; probe_change_int8_per_split: INT8 - fp32 per split;
    all None without labels.
    """

    fp32_path: Path
    int8_path: Path
    n_calibration: int
    n_eval: int
    cosine_mean: float
    cosine_min: float
    relative_error: float
    fp32_windows_per_s: float
    int8_windows_per_s: float
    benchmark_batch: int
    threads: int | None
    probe_accuracy_fp32: float | None = None
    probe_accuracy_int8: float | None = None
    probe_accuracy_int8_fp32_probe: float | None = None
    probe_change_int8_per_split: list[float] | None = None

    @property
    def speedup(self) -> float:
        return self.int8_windows_per_s / self.fp32_windows_per_s

    @property
    def probe_change_int8_se(self) -> float | None:
        """Standard error of the mean INT8 - fp32 probe accuracy change over the splits
        (None with fewer than 2 splits). The splits share windows, so this understates
        the uncertainty rather than overstating it."""
        return standard_error(self.probe_change_int8_per_split)

    def format(self) -> str:
        lines = [
            f"INT8 {self.int8_path} vs fp32 {self.fp32_path}",
            f"  calibrated on {self.n_calibration} windows; compared on {self.n_eval} windows",
            (
                f"  embedding cosine similarity: mean {self.cosine_mean:.5f}, min "
                f"{self.cosine_min:.5f}; max abs error {self.relative_error:.3g} x max|fp32|"
            ),
            (
                f"  speed (CPU, batch {self.benchmark_batch}, threads "
                f"{self.threads if self.threads else 'default'}): fp32 "
                f"{self.fp32_windows_per_s:.1f} windows/s, INT8 {self.int8_windows_per_s:.1f} "
                f"windows/s ({self.speedup:.2f}x)"
            ),
        ]
        if self.probe_accuracy_fp32 is not None:
            delta = 100 * (self.probe_accuracy_int8 - self.probe_accuracy_fp32)
            splits = self.probe_change_int8_per_split
            where = f" (mean of {len(splits)} seeded half/half splits)" if splits else ""
            se = self.probe_change_int8_se
            pm = f" +- {100 * se:.2f} standard error" if se is not None else ""
            lines.append(
                f"  probe accuracy{where}: fp32 {self.probe_accuracy_fp32:.4f}, INT8 "
                f"{self.probe_accuracy_int8:.4f} (change {delta:+.2f}{pm} points)"
            )
            if self.probe_accuracy_int8_fp32_probe is not None:
                swap = 100 * (self.probe_accuracy_int8_fp32_probe - self.probe_accuracy_fp32)
                lines.append(
                    f"  the fp32 probe on INT8 embeddings: {self.probe_accuracy_int8_fp32_probe:.4f}"
                    f" (change {swap:+.2f} points)"
                )
        return "\n".join(lines)

    __str__ = format


def _throughput(encoder: OnnxEncoder, x: np.ndarray, repeats: int) -> float:
    encoder.embed(x, batch_size=len(x))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encoder.embed(x, batch_size=len(x))
        times.append(time.perf_counter() - t0)
    return len(x) / float(np.median(times))


def measure_int8(
    fp32: OnnxEncoder,
    int8: OnnxEncoder,
    *,
    n_calibration: int,
    eval_windows: np.ndarray,
    labels: np.ndarray | None,
    probe: Callable[[np.ndarray], float] | None,
    probe_splits: int,
    benchmark_batch: int,
    benchmark_repeats: int,
    threads: int | None,
) -> QuantizationReport:
    """Compare ``int8`` with ``fp32`` on ``eval_windows`` (N, 1, L) float32, checked by the
    caller; ``labels`` or ``probe`` as in :func:`ecgfast.export.quantize_onnx`."""
    e32 = fp32.embed(eval_windows).astype(np.float64)
    e8 = int8.embed(eval_windows).astype(np.float64)
    norms = np.linalg.norm(e32, axis=1) * np.linalg.norm(e8, axis=1)
    cos = (e32 * e8).sum(1) / np.maximum(norms, 1e-30)
    scale = float(np.abs(e32).max()) or 1.0
    bench = np.ascontiguousarray(
        np.resize(eval_windows, (benchmark_batch, *eval_windows.shape[1:])), dtype=np.float32
    )
    # interleave the two measurements so machine load affects both alike
    speed32, speed8 = [], []
    for _ in range(2):
        speed32.append(_throughput(fp32, bench, benchmark_repeats))
        speed8.append(_throughput(int8, bench, benchmark_repeats))
    report = QuantizationReport(
        fp32_path=fp32.path,
        int8_path=int8.path,
        n_calibration=n_calibration,
        n_eval=len(eval_windows),
        cosine_mean=float(cos.mean()),
        cosine_min=float(cos.min()),
        relative_error=float(np.abs(e8 - e32).max()) / scale,
        fp32_windows_per_s=max(speed32),
        int8_windows_per_s=max(speed8),
        benchmark_batch=benchmark_batch,
        threads=threads,
    )
    if labels is not None:
        probe_result = compare_probe_accuracy(e32, e8, labels, probe_splits)
        report.probe_accuracy_fp32 = probe_result["fp32"]
        report.probe_accuracy_int8 = probe_result["int8"]
        report.probe_accuracy_int8_fp32_probe = probe_result["int8_fp32_probe"]
        report.probe_change_int8_per_split = probe_result["change_per_split"]
    elif probe is not None:
        report.probe_accuracy_fp32 = float(probe(e32.astype(np.float32)))
        report.probe_accuracy_int8 = float(probe(e8.astype(np.float32)))
    return report
