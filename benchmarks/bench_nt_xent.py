"""NT-Xent forward+backward: median time and peak memory per backend.

- CPU: eager vs streaming at 2N in {1024, 8192, 16384}, D = 128, fp32; streaming alone at
  2N = 131072 (eager would need the 2N x 2N matrix several times: ~64 GiB per copy).
- GPU (skipped with a reason when there is none): bf16 inputs, D = 128, eager vs triton at
  2N in {8192, 65536, 262144} (eager skipped where its 2N x 2N fp32 logits alone exceed half
  the GPU's memory), triton alone at 2N = 2^20, and eager fp32 strict (no TF32) at the
  sizes eager takes. ``gpu_check.sh --dry-run`` runs these on the CPU under the
  interpreter at 2N in {32, 48} and 64, D = 16 (plumbing only).

Each result's ``extra_info`` holds: the FLOP floor (3 GEMMs of 2N x 2N x D: s = z z^T and
the two products of its gradient), the byte floor (read z1, z2 once, write their
gradients once), achieved FLOP/s, and peak memory measured in a separate, identical call
(in the timed call itself for single-round cases). Its yardstick: on the CPU the fp32
GEMM rate measured in the same run (1024^3); on the GPU a same-dtype 8192^3 matmul
measured in the same run, and the time over the floor ``3 * 2 (2N)^2 D / R_mm +
3 (2N)^2 / R_sfu`` (benchmarks/README.md, "NT-Xent floor on a GPU"). ``test_cpu_targets``
then checks the CPU targets at 2N = 16384 (streaming peak memory <= 5 % of eager's, time
<= 1.2x eager's). Every GPU case also records ``correctness`` beside its time, from one more
forward+backward after the timing (``accuracy.nt_xent_check``: against the float64 reference
up to 2N = 65536, against the other backend on the same inputs, and against the loss and
gradient size expected for random unit vectors).

    python -m pytest benchmarks/bench_nt_xent.py --benchmark-json benchmarks/results/nt_xent-cpu.json
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from accuracy import nt_xent_check
from common import (
    PeakMemory,
    device_info,
    dry_run,
    fp32_strict,
    gpu_device,
    gpu_skip_reason,
    nominal_sfu_rate,
    same_run_gemm_rate,
    sync,
    yardstick_matmul_rate,
)

from ecgfast.losses import nt_xent

D = 128
TAU = 0.5
CPU_SIZES = (1024, 8192, 16384)
CPU_LARGE = 131072
GPU_D = 16 if dry_run() else D
GPU_SIZES = (32, 48) if dry_run() else (8192, 65536, 262144)
GPU_LARGE = 64 if dry_run() else 2**20
ROUNDS = {1024: 20, 8192: 5, 16384: 3, CPU_LARGE: 1, 65536: 5, 262144: 3, GPU_LARGE: 1}
if dry_run():
    ROUNDS.update(dict.fromkeys((*GPU_SIZES, GPU_LARGE), 1))
GPU_DTYPES = {"bf16": torch.bfloat16, "fp32-strict": torch.float32}
GPU_NAMES = {torch.bfloat16: "bf16", torch.float32: "fp32"}
#: GPU cases in the order a time-bounded run wants them: per 2N, eager then triton on the
#: same bf16 inputs (compared with each other), then eager fp32 strict.
GPU_CASES = [(backend, dtype, two_n) for two_n in GPU_SIZES
             for backend, dtype in (("eager", "bf16"), ("triton", "bf16"), ("eager", "fp32-strict"))]

_RESULTS: dict[tuple[str, str, int], dict] = {}


def floors(two_n: int, d: int = D, bytes_per_value: int = 4) -> dict:
    """FLOP and byte floors of one forward+backward of NT-Xent on 2N rows of width d."""
    return {
        "flop_floor": 3 * 2 * two_n * two_n * d,
        "byte_floor": 2 * two_n * d * bytes_per_value,
    }


def gpu_floor_s(two_n: int, d: int, matmul_rate: float, sfu_rate: float | None) -> float | None:
    """NT-Xent forward+backward floor on a GPU: its 3 GEMMs at the measured matmul rate plus
    its 3 (2N)^2 exponentials (forward: exp(s_ij); backward: exp(s_ij - lse_i) and
    exp(s_ij - lse_j)) at the SFU rate; None without an SFU rate."""
    if sfu_rate is None:
        return None
    return floors(two_n, d)["flop_floor"] / matmul_rate + 3 * two_n * two_n / sfu_rate


def _run(benchmark, device, backend, two_n, dtype, d=D, strict=False, check=False):
    torch.manual_seed(0)
    z1 = torch.randn(two_n // 2, d, device=device, dtype=dtype, requires_grad=True)
    z2 = torch.randn(two_n // 2, d, device=device, dtype=dtype, requires_grad=True)

    def forward_backward(a, b):
        with fp32_strict() if strict else contextlib.nullcontext():
            loss = nt_xent(a, b, TAU, backend=backend)
            loss.backward()
        return loss

    def step():
        z1.grad = z2.grad = None
        forward_backward(z1, z2)
        sync(device)

    rounds = ROUNDS.get(two_n, 3)
    if rounds > 1:
        with PeakMemory(device) as pm:
            step()
        benchmark.pedantic(step, rounds=rounds, warmup_rounds=1)
    else:  # one long call: time it and sample its memory at once
        def measured_step():
            with PeakMemory(device) as pm_:
                step()
            return pm_

        pm = benchmark.pedantic(measured_step, rounds=1, warmup_rounds=0)
    median = benchmark.stats.stats.median
    fl = floors(two_n, d, torch.finfo(dtype).bits // 8)
    info = {
        "device": device_info(),
        "backend": backend,
        "two_n": two_n,
        "d": d,
        "dtype": str(dtype),
        "fp32_strict": strict,
        "median_s": median,
        "peak_memory_bytes": pm.peak_bytes,
        **fl,
        "flops_per_s_at_floor": fl["flop_floor"] / median,
    }
    if device == "cpu" and not dry_run():
        info["gemm_flops_per_s"] = same_run_gemm_rate(device)
    else:  # the GPU yardstick: same-dtype 8192^3 matmul, this run
        info["gemm_flops_per_s"] = yardstick_matmul_rate(device, dtype)
        info["gemm_n"] = 64 if dry_run() else 8192
        sfu, info["sfu_source"] = nominal_sfu_rate()
        info["sfu_per_s"] = sfu
        info["floor_s"] = gpu_floor_s(two_n, d, info["gemm_flops_per_s"], sfu)
        info["time_over_floor"] = None if info["floor_s"] is None else median / info["floor_s"]
    info["fraction_of_gemm"] = info["flops_per_s_at_floor"] / info["gemm_flops_per_s"]
    benchmark.extra_info.update(info)
    _RESULTS[(device, backend, two_n)] = info
    if check:  # after the timing, which is kept if the check fails or is cut off
        name = f"{backend}-{'fp32-strict' if strict else GPU_NAMES[dtype]}"
        benchmark.extra_info["correctness"] = nt_xent_check(forward_backward, z1, z2, TAU, name)


@pytest.mark.parametrize("two_n", CPU_SIZES)
@pytest.mark.parametrize("backend", ["eager", "streaming"])
def test_nt_xent_cpu(benchmark, backend, two_n):
    _run(benchmark, "cpu", backend, two_n, torch.float32)


def test_nt_xent_cpu_streaming_large(benchmark):
    _run(benchmark, "cpu", "streaming", CPU_LARGE, torch.float32)


def test_cpu_targets():
    """At 2N = 16384: streaming peak memory <= 5 % of eager's and time <= 1.2x eager's."""
    eager = _RESULTS.get(("cpu", "eager", 16384))
    streaming = _RESULTS.get(("cpu", "streaming", 16384))
    if eager is None or streaming is None:
        pytest.skip("needs test_nt_xent_cpu at 2N = 16384 in the same run")
    memory_ratio = streaming["peak_memory_bytes"] / eager["peak_memory_bytes"]
    time_ratio = streaming["median_s"] / eager["median_s"]
    print(f"\n2N=16384 streaming/eager: peak memory {memory_ratio:.3f}, time {time_ratio:.2f}")
    assert memory_ratio <= 0.05, f"streaming peak memory is {memory_ratio:.1%} of eager's"
    assert time_ratio <= 1.2, f"streaming takes {time_ratio:.2f}x eager's time"


@pytest.mark.skipif(gpu_skip_reason() is not None, reason=str(gpu_skip_reason()))
@pytest.mark.parametrize("backend,dtype,two_n", GPU_CASES)
def test_nt_xent_cuda(benchmark, backend, dtype, two_n):
    logits_bytes = 4 * two_n * two_n
    if (backend == "eager" and not dry_run()
            and logits_bytes > torch.cuda.get_device_properties(0).total_memory / 2):
        pytest.skip(f"eager needs {logits_bytes / 2**30:.0f} GiB per 2N x 2N fp32 copy")
    _run(benchmark, gpu_device(), backend, two_n, GPU_DTYPES[dtype], GPU_D,
         strict=dtype == "fp32-strict", check=True)


@pytest.mark.skipif(gpu_skip_reason() is not None, reason=str(gpu_skip_reason()))
def test_nt_xent_cuda_triton_largest(benchmark):
    """2N = 2^20 (bf16, D = 128) on one GPU: triton alone (eager's logits would be 4 TiB)."""
    _run(benchmark, gpu_device(), "triton", GPU_LARGE, torch.bfloat16, GPU_D, check=True)
