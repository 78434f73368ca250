"""Inference throughput: torch eager fp32 vs onnxruntime fp32 vs onnxruntime INT8.

The default encoder (residual "all", SE attention), L = 2560 (10 s at 256 Hz), batch 1
(latency) and 256 (throughput), on the CPU provider (and the CUDA provider when a GPU is
usable). onnxruntime fp32 is measured twice: the file :func:`ecgfast.export.export_onnx`
writes (layout "2d", the default) and the graph as traced (layout "1d"). The INT8 model
is :func:`ecgfast.export.quantize_onnx` calibrated on synthetic ECG windows.

Every result's ``extra_info`` holds windows/s, the model's FLOPs per window (convolution
and SE MACs x 2, counted analytically by ``common.encoder_flops``), model FLOP/s, the
fp32 GEMM rate measured in the same run and the fraction of it. The last test measures
all variants again interleaved (A, B, C, A, B, C, ...) so that the load of the machine
hits them alike, and records the ratios the issue targets (with a 20 ms pause before each
call, so that the previous runner's idle threads, which spin for a while in both
onnxruntime and PyTorch's OpenMP, do not compete with the next one). Run:

    python -m pytest benchmarks/bench_inference.py --benchmark-json benchmarks/results/inference-cpu.json
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch
from common import device_info, encoder_flops, gemm_rate

from ecgfast.models import ECGEncoder, EncoderConfig

LENGTH = 2560
BATCHES = (1, 256)
ROUNDS = {1: 60, 256: 5}

_STATE: dict = {}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The encoder, its fp32 exports (2-D and 1-D layout) and the INT8 model."""
    from ecgfast.export import OnnxEncoder, cuda_usable, export_onnx, quantize_onnx

    from ecgfast.data import ecgsyn, preprocess

    torch.manual_seed(0)
    encoder = ECGEncoder(EncoderConfig(backend="eager")).eval()
    folder = tmp_path_factory.mktemp("bench-onnx")
    fp32, fp32_1d, int8 = folder / "fp32.onnx", folder / "fp32-1d.onnx", folder / "int8.onnx"
    export_onnx(encoder, fp32, batch_sizes=(2,), lengths=(LENGTH,), print_report=False)
    export_onnx(
        encoder, fp32_1d, layout="1d", batch_sizes=(2,), lengths=(LENGTH,), print_report=False
    )
    windows = np.concatenate(
        [
            preprocess(ecgsyn(60.0, 256.0, heart_rate=hr, noise_mv=0.02, rng=i), 256.0).windows
            for i, hr in enumerate((55.0, 70.0, 90.0, 110.0))
        ]
    )[:, None, :]
    report = quantize_onnx(
        fp32, int8, windows, benchmark_batch=8, benchmark_repeats=1, print_report=False
    )
    threads = torch.get_num_threads()
    runners = {
        "torch_eager_fp32": None,
        "ort_fp32": OnnxEncoder(fp32, providers="cpu", threads=threads),
        "ort_fp32_1d_graph": OnnxEncoder(fp32_1d, providers="cpu", threads=threads),
        "ort_int8": OnnxEncoder(int8, providers="cpu", threads=threads),
    }
    if cuda_usable():  # pragma: no cover - GPU machines only
        runners["ort_fp32_cuda"] = OnnxEncoder(fp32, providers="cuda")
    return encoder, runners, report


def _call(name, encoder, runner, x):
    if runner is None:

        def run():
            with torch.inference_mode():
                encoder(x)
    elif runner.provider == "CUDAExecutionProvider":  # pragma: no cover
        xc = x.cuda()

        def run():
            runner.embed(xc, batch_size=len(xc))
            torch.cuda.synchronize()
    else:
        xn = x.numpy()

        def run():
            runner.embed(xn, batch_size=len(xn))

    return run


def _gemm() -> float:
    if "gemm" not in _STATE:
        _STATE["gemm"] = gemm_rate("cpu")
    return _STATE["gemm"]


def test_gemm_rate(benchmark):
    """The fp32 matmul rate (n = 1024, torch, all threads) the model FLOP/s are compared with."""
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    benchmark.pedantic(lambda: torch.mm(a, b), rounds=20, warmup_rounds=3)
    _STATE["gemm"] = 2 * n**3 / benchmark.stats.stats.median
    benchmark.extra_info.update({"gemm_flops_per_s": _STATE["gemm"], "device": device_info()})


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    "variant", ["torch_eager_fp32", "ort_fp32", "ort_fp32_1d_graph", "ort_int8", "ort_fp32_cuda"]
)
def test_inference(benchmark, models, variant, batch):
    encoder, runners, _ = models
    if variant not in runners:
        pytest.skip("the CUDA provider is not usable on this machine")
    x = torch.randn(batch, 1, LENGTH)
    run = _call(variant, encoder, runners[variant], x)
    benchmark.pedantic(run, rounds=ROUNDS[batch], warmup_rounds=2)
    median = benchmark.stats.stats.median
    flops = encoder_flops(encoder.config, LENGTH)["forward"]
    gemm = _gemm()
    info = {
        "variant": variant,
        "batch": batch,
        "length": LENGTH,
        "windows_per_s": batch / median,
        "model_flops_per_window": flops,
        "model_flops_per_s": flops * batch / median,
        "gemm_flops_per_s": gemm,
        "fraction_of_gemm": flops * batch / median / gemm,
        "threads": torch.get_num_threads(),
    }
    _STATE[(variant, batch)] = median
    base = _STATE.get(("torch_eager_fp32", batch))
    if base and variant != "torch_eager_fp32":
        info["speedup_vs_torch_eager"] = base / median
    fp32 = _STATE.get(("ort_fp32", batch))
    if fp32 and variant == "ort_int8":
        info["speedup_vs_ort_fp32"] = fp32 / median
    benchmark.extra_info.update(info)


def test_ratios_interleaved(benchmark, models):
    """The targets' ratios from one interleaved measurement at batch 256 (and 1)."""
    encoder, runners, qreport = models
    names = [n for n in runners if n != "ort_fp32_cuda"]
    gemm_rates, ratios = [], {}
    flops = encoder_flops(encoder.config, LENGTH)["forward"]
    for batch, rounds in ((256, 3), (1, 30)):
        x = torch.randn(batch, 1, LENGTH)
        runs = {n: _call(n, encoder, runners[n], x) for n in names}
        times = {n: [] for n in names}
        for run in runs.values():
            run()
        for _ in range(rounds):
            if batch == 256:
                gemm_rates.append(gemm_rate("cpu", repeats=3))
            for n, run in runs.items():
                time.sleep(0.02)  # let the other thread pool's spinning workers go idle
                t0 = time.perf_counter()
                run()
                times[n].append(time.perf_counter() - t0)
        med = {n: statistics.median(t) for n, t in times.items()}
        for n in names:
            ratios[f"b{batch}_{n}_windows_per_s"] = batch / med[n]
        ratios[f"b{batch}_ort_fp32_vs_torch_eager"] = med["torch_eager_fp32"] / med["ort_fp32"]
        ratios[f"b{batch}_ort_1d_graph_vs_torch_eager"] = (
            med["torch_eager_fp32"] / med["ort_fp32_1d_graph"]
        )
        ratios[f"b{batch}_ort_int8_vs_ort_fp32"] = med["ort_fp32"] / med["ort_int8"]
        if batch == 256:
            gemm = statistics.median(gemm_rates)
            ratios["gemm_flops_per_s"] = gemm
            for n in names:
                ratios[f"b256_{n}_fraction_of_gemm"] = flops * batch / med[n] / gemm
    ratios["int8_cosine_mean_vs_fp32"] = qreport.cosine_mean
    ratios["int8_cosine_min_vs_fp32"] = qreport.cosine_min
    ratios["model_flops_per_window"] = flops
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update(ratios)
    benchmark.extra_info["device"] = device_info()
    print()
    for k, v in ratios.items():
        print(f"  {k}: {v:.4g}")
