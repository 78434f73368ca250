"""Encoder forward and forward+backward throughput, every residual x attention variant.

Batch 64, L = 2560 (10 s at 256 Hz), fp32, eager backend, on the CPU (and CUDA when
present). Each result's ``extra_info`` holds windows/s, model FLOP/s, the fp32 GEMM rate
measured in the same run and the ratio of the two, and peak memory. Run:

    python -m pytest benchmarks/bench_encoder.py --benchmark-json benchmarks/results/encoder-cpu.json
"""

import itertools

import pytest
import torch
from common import PeakMemory, device_info, encoder_flops, gemm_rate

from ecgfast.models import ECGEncoder, EncoderConfig

BATCH, LENGTH = 64, 2560
RESIDUALS = ("none", "first", "first_two", "all")
CONFIGS = [(r, a) for r, a in itertools.product(RESIDUALS, (False, True))]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

_GEMM: dict[str, float] = {}


def _gemm(device):
    if device not in _GEMM:
        _GEMM[device] = gemm_rate(device)
    return _GEMM[device]


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
def test_gemm_rate(benchmark, device):
    """The fp32 matmul rate every encoder number is compared with (n = 1024)."""
    n = 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def mm():
        torch.mm(a, b)
        _sync(device)

    benchmark.pedantic(mm, rounds=20, warmup_rounds=3)
    rate = 2 * n**3 / benchmark.stats.stats.median
    _GEMM[device] = rate
    benchmark.extra_info.update({"gemm_flops_per_s": rate, "device": device_info()})


@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
@pytest.mark.parametrize("residual,attention", CONFIGS)
@pytest.mark.parametrize("device", DEVICES)
def test_encoder(benchmark, device, residual, attention, mode):
    torch.manual_seed(0)
    config = EncoderConfig(residual=residual, attention=attention, dropout=0.1, backend="eager")
    enc = ECGEncoder(config).to(device)
    x = torch.randn(BATCH, 1, LENGTH, device=device)

    if mode == "forward":
        enc.eval()

        def step():
            with torch.no_grad():
                enc(x)
            _sync(device)
    else:
        enc.train()

        def step():
            enc.zero_grad(set_to_none=True)
            enc(x).sum().backward()
            _sync(device)

    step()  # allocate once before measuring memory
    with PeakMemory(device) as mem:
        step()
    rounds = 5 if device == "cpu" else 20
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1)
    median = benchmark.stats.stats.median
    flops = encoder_flops(config, LENGTH)[mode] * BATCH
    gemm = _gemm(device)
    benchmark.extra_info.update({
        "device": device, "batch": BATCH, "length": LENGTH,
        "residual": residual, "attention": attention, "mode": mode,
        "windows_per_s": BATCH / median,
        "model_flops_per_s": flops / median,
        "gemm_flops_per_s": gemm,
        "fraction_of_gemm": flops / median / gemm,
        "peak_memory_bytes": mem.peak_bytes,
    })
