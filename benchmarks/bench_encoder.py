"""The whole encoder model: forward and forward+backward throughput.

Batch 64, L = 2560 (10 s at 256 Hz). ``test_encoder``: every residual x attention
variant, fp32, eager backend, forward (eval) and forward+backward (training, dropout
0.1), on the CPU (and CUDA when present). ``test_encoder_variant``: the default encoder
(``EncoderConfig()``: residual everywhere, SE, relu, dropout 0.1) forward+backward with
its blocks on the Triton kernels (``backend="triton"``, CUDA only) or under
``torch.compile`` of the eager model, in fp32 and bf16 (CUDA) or fp32 (CPU); its eager
fp32 baseline is ``test_encoder[<device>-all-True-forward_backward]`` of the same run.
One block op on its own: ``bench_encoder_block.py``. Each result's ``extra_info`` holds
windows/s, model FLOP/s, the GEMM rate measured in the same run and the ratio of the two,
and peak memory. Run:

    python -m pytest benchmarks/bench_encoder.py --benchmark-json benchmarks/results/encoder-cpu.json
"""

import itertools

import pytest
import torch
from bench_encoder_block import skip_reason
from common import PeakMemory, device_info, encoder_flops, same_run_gemm_rate, sync

from ecgfast.models import ECGEncoder, EncoderConfig

BATCH, LENGTH = 64, 2560
RESIDUALS = ("none", "first", "first_two", "all")
CONFIGS = [(r, a) for r, a in itertools.product(RESIDUALS, (False, True))]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

@pytest.mark.parametrize("device", DEVICES)
def test_gemm_rate(benchmark, device):
    """The fp32 matmul rate every encoder number is compared with (n = 1024)."""
    n = 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def mm():
        torch.mm(a, b)
        sync(device)

    benchmark.pedantic(mm, rounds=20, warmup_rounds=3)
    rate = 2 * n**3 / benchmark.stats.stats.median
    benchmark.extra_info.update({"gemm_flops_per_s": rate, "device": device_info()})


def _measure(benchmark, device, enc, run, x, config, mode, dtype=torch.float32):
    if mode == "forward":
        enc.eval()

        def step():
            with torch.no_grad():
                run(x)
            sync(device)
    else:
        enc.train()

        def step():
            enc.zero_grad(set_to_none=True)
            run(x).float().sum().backward()
            sync(device)

    for _ in range(3 if run is not enc else 1):  # torch.compile compiles in warm-up
        step()  # allocate once before measuring memory
    with PeakMemory(device) as mem:
        step()
    rounds = 5 if device == "cpu" else 20
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1)
    median = benchmark.stats.stats.median
    flops = encoder_flops(config, LENGTH)[mode] * BATCH
    gemm = same_run_gemm_rate(device, dtype)
    benchmark.extra_info.update({
        "device": device, "batch": BATCH, "length": LENGTH, "mode": mode,
        "windows_per_s": BATCH / median,
        "model_flops_per_s": flops / median,
        "gemm_flops_per_s": gemm,
        "fraction_of_gemm": flops / median / gemm,
        "peak_memory_bytes": mem.peak_bytes,
    })


@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
@pytest.mark.parametrize("residual,attention", CONFIGS)
@pytest.mark.parametrize("device", DEVICES)
def test_encoder(benchmark, device, residual, attention, mode):
    torch.manual_seed(0)
    config = EncoderConfig(residual=residual, attention=attention, dropout=0.1, backend="eager")
    enc = ECGEncoder(config).to(device)
    x = torch.randn(BATCH, 1, LENGTH, device=device)
    _measure(benchmark, device, enc, enc, x, config, mode)
    benchmark.extra_info.update({"residual": residual, "attention": attention})


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant", ["eager", "triton", "compile"])
@pytest.mark.parametrize("device", DEVICES)
def test_encoder_variant(benchmark, device, variant, dtype):
    if variant == "eager" and dtype == "fp32":
        pytest.skip(f"measured by test_encoder[{device}-all-True-forward_backward]")
    reason = skip_reason(device, variant, dtype)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    config = EncoderConfig(backend="triton" if variant == "triton" else "eager")
    enc = ECGEncoder(config).to(device, DTYPES[dtype])
    run = torch.compile(enc) if variant == "compile" else enc
    x = torch.randn(BATCH, 1, LENGTH, device=device, dtype=DTYPES[dtype])
    _measure(benchmark, device, enc, run, x, config, "forward_backward", DTYPES[dtype])
    benchmark.extra_info.update({"variant": variant, "dtype": dtype,
                                 "device_info": device_info()})
