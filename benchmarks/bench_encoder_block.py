"""The encoder block op, forward + backward, per block: eager vs Triton vs torch.compile.

``dispatch.encoder_block(x, params, spec, dropout_keys, backend)`` called directly, no module
(``dropout_keys``: the (2, B) int32 keys of :meth:`ecgfast.keyed.KeyedRandom.dropout_keys`,
made once per case on the device, so every step drops the same elements; the eager variants
hash them as the Triton epilogue does):
the three :class:`~ecgfast.ops.encoder_block.BlockSpec` of the default encoder
(``EncoderConfig().block_specs()``: 1 -> 32 channels, K = 32 at L = 2560; 32 -> 64, K = 16
at L = 1277; 64 -> 128, K = 8 with the global max at L = 635; residual, SE, relu, dropout
0.1) with parameters from :func:`~ecgfast.ops.encoder_block.random_block_params`. The input of
blocks 2 and 3 needs a gradient, the ECG (block 1's) does not. Variants "eager" (the
reference), "triton" (the fused kernels), "compile" (``torch.compile`` of the reference,
mode "default": no CUDA graphs) and "compile-cudagraphs" (mode "reduce-overhead": CUDA
graphs). GPU (when present): batch 256, bf16 and fp32 strict (no TF32 in any variant).
``gpu_check.sh --dry-run`` runs block 3's GPU cases on the CPU, batch 2, L = 128, Triton under
the interpreter and torch.compile with backend "eager" (plumbing only). CPU: batch 32,
fp32, eager vs compile (the Triton kernels need a GPU; the CPU interpreter is for tests).
Each result's ``extra_info`` holds the device, median seconds per step, windows/s, the
block's modelled conv FLOP/s (:func:`block_traffic`) and its fraction of the yardstick (CPU:
the 1024^3 fp32 GEMM rate of the same run; GPU: a same-dtype 8192^3 matmul of the same run),
the compile mode, the peak memory of one step, and on the GPU ``correctness``: one more
forward+backward after the timing against the eager op in float64
(``accuracy.encoder_block_errors``). The whole encoder model:
``bench_encoder.py``. Run:

    python -m pytest benchmarks/bench_encoder_block.py --benchmark-json benchmarks/results/encoder_block-<machine>.json

``python benchmarks/bench_encoder_block.py`` prints the modelled bytes and FLOPs per block
(the table in benchmarks/README.md), no timing.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from accuracy import encoder_block_errors
from common import (
    PeakMemory,
    device_info,
    dry_run,
    fp32_strict,
    gpu_device,
    gpu_skip_reason,
    same_run_gemm_rate,
    sync,
    yardstick_matmul_rate,
)

from ecgfast import dispatch
from ecgfast.keyed import KeyedRandom
from ecgfast.models import EncoderConfig
from ecgfast.ops.encoder_block import encoder_block, random_block_params

LENGTH = 2560
BATCH = {"cuda": 2 if dry_run() else 256, "cpu": 32}
GPU_LENGTH = 128 if dry_run() else LENGTH
VARIANTS = ("eager", "triton", "compile", "compile-cudagraphs")
#: torch.compile mode of each compile variant.
COMPILE_MODES = {"compile": "default", "compile-cudagraphs": "reduce-overhead"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SPECS = EncoderConfig().block_specs()
BLOCKS = (3,) if dry_run() else (1, 2, 3)  # a dry run proves the plumbing on one block


def _lengths(length: int = LENGTH) -> list[int]:
    lengths = [length]
    for spec in SPECS[:-1]:
        lengths.append(spec.out_length(lengths[-1]))
    return lengths


def skip_reason(device: str, variant: str, dtype: str) -> str | None:
    """Why ``variant`` ("eager" | "triton" | "compile") in ``dtype`` is not measured on
    ``device`` here (None: it is); bench_encoder.py uses it too."""
    if device == "cuda" and gpu_skip_reason():
        return "no CUDA device: the eager/triton/compile GPU comparison needs one"
    if device == "cpu" and variant == "compile-cudagraphs":
        return "CUDA graphs need a CUDA device"
    if device == "cpu" and variant == "triton":
        return "the Triton kernels run on CUDA GPUs (TRITON_INTERPRET on the CPU is for tests)"
    if device == "cpu" and dtype != "fp32":
        return "CPU runs compare fp32 only"
    if variant == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed"
    return None


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_encoder_block_forward_backward(benchmark, device, block, variant, dtype):
    reason = skip_reason(device, variant, dtype)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    batch, spec = BATCH[device], SPECS[block - 1]
    length = _lengths(GPU_LENGTH if device == "cuda" else LENGTH)[block - 1]
    on = gpu_device() if device == "cuda" else device  # a dry run's "cuda" cases: the CPU
    strict = fp32_strict() if DTYPES[dtype] == torch.float32 else contextlib.nullcontext()
    with strict:
        _measure(benchmark, device, on, block, variant, dtype, batch, spec, length)


def _measure(benchmark, device, on, block, variant, dtype, batch, spec, length):
    params = random_block_params(spec, device=on, dtype=DTYPES[dtype])
    for t in params:
        if t is not None:
            t.requires_grad_()
    x = torch.randn(batch, spec.in_channels, length, device=on, dtype=DTYPES[dtype])
    x.requires_grad_(block > 1)
    keys = KeyedRandom.for_batch(0, batch, on).dropout_keys(2, on)
    mode = COMPILE_MODES.get(variant)
    if mode is not None:  # a fresh cache per case: no recompile limit, no dynamic shapes
        torch._dynamo.reset()
    if mode is not None and dry_run():  # no C++ toolchain time in a dry run: plumbing only
        run, mode = torch.compile(encoder_block, backend="eager"), f"{mode} (dry run: backend eager)"
    elif mode is not None:
        run = torch.compile(encoder_block, mode=mode, dynamic=False)
    else:
        def run(x, params, spec, dropout_keys):
            return dispatch.encoder_block(x, params, spec, dropout_keys, variant)

    def call(x, params, keys):
        if variant == "compile-cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        return run(x, params, spec, keys)

    def step():
        x.grad = None
        for t in params:
            if t is not None:
                t.grad = None
        call(x, params, keys).float().sum().backward()
        sync(on)

    for _ in range(0 if dry_run() else 3):  # warm-up: autotuning, torch.compile, allocator
        step()
    with PeakMemory(on) as mem:
        step()
    rounds = 10 if device == "cuda" and not dry_run() else (1 if dry_run() else 3)
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=0 if dry_run() else 1)
    median = benchmark.stats.stats.median
    if device == "cuda":
        gemm = yardstick_matmul_rate(on, DTYPES[dtype])
    else:
        gemm = same_run_gemm_rate(device, DTYPES[dtype])
    pooled = spec.out_length(length)
    model = block_traffic(spec.in_channels, spec.out_channels, spec.kernel_size, length,
                          pooled, batch=batch)
    flops = model["conv_flops_forward"] + model["conv_flops_backward"]
    benchmark.extra_info.update({
        "device": device_info(), "variant": variant, "dtype": dtype, "block": block,
        "batch": batch, "length": length, "median_s": median,
        "windows_per_s": batch / median, "model_flops_per_s": flops / median,
        "gemm_flops_per_s": gemm, "fraction_of_gemm_rate": flops / median / gemm,
        "peak_memory_bytes": mem.peak_bytes, "compile_mode": mode,
        "fp32_strict": DTYPES[dtype] == torch.float32,
    })
    if device == "cuda":  # after the timing, which is kept if the check fails or is cut off
        benchmark.extra_info["correctness"] = encoder_block_errors(call, x, params, spec, keys,
                                                                   variant)


# ------------------------------------------------------------------ traffic model


def block_traffic(c_in: int, c: int, k: int, length: int, pooled: int, elem: int = 4,
                  batch: int = 1) -> dict:
    """Modelled DRAM bytes of one training step (forward + backward) of one block.

    Every read and write of an activation-sized tensor is counted once (tiles re-read from
    cache, weights and (B, C) vectors are left out). Eager is PyTorch's op sequence in
    ecgfast/ops/encoder_block.py (pad, conv, relu, dropout with a 1-byte mask, mean, scale,
    1x1 conv, add, max_pool1d with int64 indices, and autograd's backward of each);
    fused is the kernels' reads and writes (kernels/encoder_block_conv1d.py,
    kernels/encoder_block_se_residual_pool.py),
    with aten's conv backward on the conv gradients in both. Units: bytes; n_in = C_in L,
    n = C L, n_out = C L_out elements per window, ``elem`` bytes each.
    """
    n_in, n, n_out = c_in * length, c * length, c * pooled
    e = elem
    eager_fwd = {
        "pad x, conv1": (2 * n_in + n_in + n) * e,
        "relu, dropout (+mask)": 4 * n * e + n,
        "pad h, conv2": (2 * n + n + n) * e,
        "relu, dropout (+mask)  ": 4 * n * e + n,
        "SE mean, a * f": (n + 2 * n) * e,
        "1x1 shortcut, add": (n_in + n + 3 * n) * e,
        "max_pool1d (+int64 idx)": (n + n_out) * e + 8 * n_out,
    }
    eager_bwd = {
        "max_pool1d bwd (zero + scatter)": n_out * e + 8 * n_out + 2 * n * e,
        "shortcut dx, dW": (n + n_in + n + n_in) * e,
        "a * f bwd (df, da)": (2 * n + 2 * n) * e,
        "mean bwd + add": 3 * n * e,
        "dropout, relu bwd x2": 2 * (5 * n * e + n),
        "conv2 dx, dW, unpad": (2 * n + 2 * n + 2 * n) * e,
        "conv1 dx, dW, unpad": (n + n_in + n + n_in + 2 * n_in) * e,
        "add dx": 3 * n_in * e,
    }
    fused_fwd = {
        "conv1 kernel": (n_in + n) * e,
        "conv2 kernel (+SE sums)": 2 * n * e,
        "SE-residual-pool kernel (+int8 argmax)": (n + n_in + n_out) * e + n_out,
    }
    fused_bwd = {
        "pool bwd kernel (gf, gy)": n_out * e + n_out + 3 * n * e,
        "shortcut dx, dW": (n + n_in + n + n_in) * e,
        "conv2 act/dropout bwd kernel": 3 * n * e,
        "conv2 dx, dW (aten)": (2 * n + 2 * n) * e,
        "conv1 act/dropout bwd kernel": 3 * n * e,
        "conv1 dx, dW (aten)": (n + n_in + n + n_in) * e,
        "add dx": 3 * n_in * e,
    }
    conv_flops = 2 * length * c * k * (c_in + c) + 2 * length * c * c_in  # + 1x1 shortcut
    return {
        "eager_forward": batch * sum(eager_fwd.values()),
        "eager_backward": batch * sum(eager_bwd.values()),
        "fused_forward": batch * sum(fused_fwd.values()),
        "fused_backward": batch * sum(fused_bwd.values()),
        "conv_flops_forward": batch * conv_flops,
        "conv_flops_backward": batch * (2 * conv_flops - (2 * length * c * c_in * (k + 1)
                                                          if c_in == 1 else 0)),
    }


def traffic_table(config: EncoderConfig | None = None, length: int = LENGTH, elem: int = 4,
                  batch: int = 1) -> str:
    config = config or EncoderConfig()
    channels = (config.in_channels, *config.filters)
    lines = [f"per {batch} window(s), L = {length}, {elem}-byte activations",
             (f"{'block':6} {'C_in->C':>9} {'K':>3} {'eager fwd':>11} {'fused fwd':>11} "
              f"{'eager bwd':>11} {'fused bwd':>11} {'ratio':>6} {'conv FLOP fwd':>14} "
              f"{'fwd+bwd':>14}")]
    n = length
    tot = dict.fromkeys(("ef", "ff", "eb", "fb", "cf", "cb"), 0)
    for i, k in enumerate(config.kernel_sizes):
        pooled = (n - config.pool_size) // config.pool_stride + 1 if i < 2 else 1
        t = block_traffic(channels[i], channels[i + 1], k, n, pooled, elem, batch)
        ratio = (t["eager_forward"] + t["eager_backward"]) / (
            t["fused_forward"] + t["fused_backward"])
        lines.append(
            f"{i + 1:<6} {channels[i]:>4}->{channels[i + 1]:<4} {k:>3} "
            f"{t['eager_forward'] / 1e6:>9.2f}MB {t['fused_forward'] / 1e6:>9.2f}MB "
            f"{t['eager_backward'] / 1e6:>9.2f}MB {t['fused_backward'] / 1e6:>9.2f}MB "
            f"{ratio:>6.2f} {t['conv_flops_forward'] / 1e6:>11.1f}M "
            f"{(t['conv_flops_forward'] + t['conv_flops_backward']) / 1e6:>11.1f}M")
        for key, name in (("ef", "eager_forward"), ("ff", "fused_forward"),
                          ("eb", "eager_backward"), ("fb", "fused_backward"),
                          ("cf", "conv_flops_forward"), ("cb", "conv_flops_backward")):
            tot[key] += t[name]
        n = pooled
    lines.append(
        f"{'total':6} {'':>9} {'':>3} {tot['ef'] / 1e6:>9.2f}MB {tot['ff'] / 1e6:>9.2f}MB "
        f"{tot['eb'] / 1e6:>9.2f}MB {tot['fb'] / 1e6:>9.2f}MB "
        f"{(tot['ef'] + tot['eb']) / (tot['ff'] + tot['fb']):>6.2f} "
        f"{tot['cf'] / 1e6:>11.1f}M {(tot['cf'] + tot['cb']) / 1e6:>11.1f}M")
    return "\n".join(lines)


if __name__ == "__main__":
    print(traffic_table(elem=4))
    print()
    print(traffic_table(elem=2))
