"""Static INT8 quantization of an exported encoder: :func:`quantize_onnx`.

onnxruntime's ``quantize_static`` in QDQ format (QuantizeLinear/DequantizeLinear pairs
around each quantized op, which onnxruntime's CPU provider fuses into QLinearConv etc.),
with per-channel int8 weights and uint8 activations whose ranges are calibrated (min/max
by default) on real ECG windows.

By default the last block's tail (1x1 shortcut, squeeze-excitation multiply, residual add,
global max: :func:`fp32_tail_nodes`) stays in fp32, and the INT8 graph ends with an output
bias correction (the mean fp32 - INT8 embedding difference over the calibration windows).

``reduce_range=True`` (the default) quantizes weights to 7 bits. On x86 CPUs without
VNNI (AVX2, AVX-512F) onnxruntime's u8 x s8 kernels use ``vpmaddubsw``, whose 16-bit
intermediate sums saturate with full 8-bit weights, which costs accuracy. With VNNI
(``vpdpbusd`` accumulates in 32 bits) full range is safe, but a model quantized with full
range on a VNNI machine would lose accuracy when served on one without, so 7 bits stays
the default (benchmarks/README.md, "Figures moved out of the code", has the
measurements).

After writing, the INT8 model is compared with the fp32 one on the evaluation windows
(the calibration windows unless others are given): the cosine similarity of the
embeddings, the speed of each (windows/s, CPU provider, same session settings), and,
when labels are given, the accuracy of the MLP probe of ecgfast.evaluation (see
:func:`ecgfast.evaluation.linear_probe_accuracy`) over seeded half/half splits, two ways:
a probe fit on each model's own embeddings (the INT8 encoder's probe accuracy, as one
would evaluate an INT8 deployment) and the fp32 probe applied to the INT8 embeddings
(swapping the encoder under an existing probe, the stricter test). Fit probes on the
embeddings of the model you deploy: pretrained encoders' embedding dimensions vary
little between windows compared with their size, so the INT8 error can be a sizeable
part of a dimension's spread (benchmarks/README.md has the measurements, with and
without the fp32 tail and the bias correction).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from ecgfast.export.metadata import (
    INT8_QDQ_PER_CHANNEL,
    META_QUANTIZATION,
    read_metadata,
    write_metadata,
)
from ecgfast.export.quantize_report import QuantizationReport, measure_int8
from ecgfast.export.runtime import OnnxEncoder

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def _as_windows(x, name: str, min_length: int, leads: int = 1) -> np.ndarray:
    """(N, C, L) float32 (C = ``leads``) from an array (N, C, L), or (N, L) for one lead;
    clear errors otherwise."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or x.shape[1] != leads:
        raise ValueError(f"{name} must be (n, {leads}, length)"
                         f"{' or (n, length)' if leads == 1 else ''} for a {leads}-lead model, "
                         f"got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one window")
    if x.shape[2] < min_length:
        raise ValueError(f"{name} has length {x.shape[2]}, shorter than {min_length} samples")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has NaN or infinite samples")
    return x


def _even_batch(n: int, batch: int) -> int:
    """The largest batch size <= ``batch`` that divides ``n``: onnxruntime's histogram
    calibrators (entropy, percentile) stack the batches and fail on a shorter last one."""
    return max(b for b in range(1, min(batch, n) + 1) if n % b == 0)


class _WindowReader:
    """CalibrationDataReader over (N, C, L) windows in batches of equal size."""

    def __init__(self, input_name: str, windows: np.ndarray, batch: int):
        self.input_name, self.windows = input_name, windows
        self.batch = _even_batch(len(windows), batch)
        self.rewind()

    def get_next(self):
        if self._i >= len(self.windows):
            return None
        chunk = self.windows[self._i : self._i + self.batch]
        self._i += self.batch
        return {self.input_name: chunk}

    def rewind(self):
        self._i = 0


def quantize_onnx(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    calibration_windows,
    *,
    eval_windows=None,
    eval_labels=None,
    probe: Callable[[np.ndarray], float] | None = None,
    calibrate_method: str = "minmax",
    reduce_range: bool = True,
    calibration_batch: int = 16,
    benchmark_batch: int = 64,
    benchmark_repeats: int = 5,
    threads: int | None = None,
    probe_splits: int = 5,
    bias_correction: bool = True,
    fp32_tail: bool = True,
    print_report: bool = True,
) -> QuantizationReport:
    """Write a static INT8 (QDQ, per-channel) copy of an fp32 encoder and report on it.

    Args:
        fp32_path: .onnx from :func:`ecgfast.export.export_onnx`.
        int8_path: where to write the INT8 model.
        calibration_windows: (N, C, L) real, pre-processed ECG windows of the model's C
            leads ((N, L) for one lead; float, finite); a few dozen to a few hundred are
            enough.
        eval_windows: windows to compare fp32 and INT8 on (default: the calibration ones).
        eval_labels: (n_eval,) integer class labels of ``eval_windows``: for each of
            ``probe_splits`` seeded half/half splits an MLP probe
            (:func:`ecgfast.evaluation.linear_probe_accuracy`) is fit on each model's
            embeddings of one half and scored on the other; the fp32 probe is also scored
            on the INT8 embeddings.
        probe: alternatively a function embeddings (n_eval, D) -> accuracy, called once
            with the fp32 and once with the INT8 embeddings.
        calibrate_method: "minmax" | "entropy" | "percentile".
        reduce_range: 7-bit weights (see the module docstring); default True.
        benchmark_batch: windows per call in the speed comparison.
        threads: intra-op threads for the speed comparison (None: onnxruntime default).
        fp32_tail: keep the last block's tail in fp32 (:func:`fp32_tail_nodes`: the 1x1
            shortcut, squeeze-excitation multiply, residual add and global max), the two
            largest sources of INT8 error in the ablation, at a small cost in INT8 speed
            (both measured in benchmarks/README.md).
        bias_correction: add to the INT8 model's output the mean fp32 - INT8 embedding
            difference over the calibration windows (one constant per dimension), which
            removes the systematic part of the quantization error.

    Returns:
        :class:`QuantizationReport` (also printed unless ``print_report`` is False).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if calibrate_method not in CALIBRATION_METHODS:
        raise ValueError(
            f"calibrate_method must be one of {CALIBRATION_METHODS}, got {calibrate_method!r}"
        )
    for name, v in (
        ("calibration_batch", calibration_batch),
        ("benchmark_batch", benchmark_batch),
        ("benchmark_repeats", benchmark_repeats),
        ("probe_splits", probe_splits),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if probe is not None and eval_labels is not None:
        raise ValueError("give either eval_labels or probe, not both")
    if int8_path.resolve() == fp32_path.resolve():
        raise ValueError(f"int8_path must differ from fp32_path ({fp32_path})")
    fp32 = OnnxEncoder(fp32_path, providers="cpu", threads=threads)  # validates the file
    calib = _as_windows(calibration_windows, "calibration_windows", fp32.min_length,
                        fp32.in_channels)
    evalw = (
        calib
        if eval_windows is None
        else _as_windows(eval_windows, "eval_windows", fp32.min_length, fp32.in_channels)
    )
    labels = None
    if eval_labels is not None:
        labels = np.asarray(eval_labels)
        if labels.shape != (len(evalw),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"eval_labels must be ({len(evalw)},) integers, got {labels.dtype} {labels.shape}"
            )
        if labels.min() < 0:
            raise ValueError("eval_labels must be >= 0")
        if len(evalw) < 4:
            raise ValueError("eval_labels needs at least 4 windows for a train/test split")

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibrate_method]
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    quiet = logging.getLogger()
    level = quiet.level
    with tempfile.TemporaryDirectory(prefix="ecgfast-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quiet.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(int8_path),
                _WindowReader(fp32.input_name, calib, calibration_batch),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                nodes_to_exclude=fp32_tail_nodes(onnx.load(str(pre))) if fp32_tail else [],
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        finally:
            quiet.setLevel(level)
    delta = _output_bias(fp32, int8_path, calib) if bias_correction else None
    _finish_int8_file(fp32_path, int8_path, delta)

    report = measure_int8(
        fp32,
        OnnxEncoder(int8_path, providers="cpu", threads=threads),
        n_calibration=len(calib),
        eval_windows=evalw,
        labels=labels,
        probe=probe,
        probe_splits=probe_splits,
        benchmark_batch=benchmark_batch,
        benchmark_repeats=benchmark_repeats,
        threads=threads,
    )
    if print_report:
        print(report.format())
    return report


_TAIL_OPS = {"Add", "Mul", "Sum", "ReduceMax", "ReduceMean", "GlobalMaxPool"}


def fp32_tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes between the last block's convolutions and the output.

    Walking back from the graph output through element-wise combinations and pools
    (squeeze-excitation multiply, residual add, global max) and taking the 1x1
    convolutions met on the way (the shortcut); the walk stops at any other node (the
    block's k > 1 convolutions and their activations, the squeeze-excitation MLP).
    Why these: in an ablation on a pretrained encoder (quantizing one group of nodes at a
    time, benchmarks/README.md) the last block's shortcut and its multiply/add/max were
    the two largest contributors to the INT8 embedding error, while they are a small share
    of the FLOPs.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    inits = {init.name: init for init in model.graph.initializer}
    names, todo, seen = [], [o.name for o in model.graph.output], set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Conv":
            w = inits.get(node.input[1])
            if w is not None and all(d == 1 for d in w.dims[2:]):
                names.append(node.name)
            continue
        if node.op_type in _TAIL_OPS:
            names.append(node.name)
            todo.extend(node.input)
    return [n for n in names if n]


def _output_bias(fp32: OnnxEncoder, int8_path: Path, windows: np.ndarray) -> np.ndarray:
    """mean(fp32 - int8) embedding over ``windows``, per dimension."""
    int8 = OnnxEncoder(int8_path, providers="cpu", row_fold=False)
    return (fp32.embed(windows).astype(np.float64) - int8.embed(windows)).mean(0)


def _finish_int8_file(src: Path, dst: Path, bias: np.ndarray | None) -> None:
    """One rewrite of the quantized file: append ``embedding + bias`` (bias correction,
    when given) and carry the ecgfast metadata (config, min_length) over from ``src``."""
    model = onnx.load(str(dst))
    g = model.graph
    if bias is not None:
        out = g.output[0].name
        raw, shift = out + "_before_bias_correction", out + "_bias_correction"
        for node in g.node:
            node.output[:] = [raw if o == out else o for o in node.output]
        g.initializer.append(onnx.numpy_helper.from_array(bias.astype(np.float32), shift))
        g.node.append(onnx.helper.make_node("Add", [raw, shift], [out], name="bias_correction"))
    source = read_metadata(onnx.load(str(src), load_external_data=False))
    write_metadata(model, source, keep_existing=True)
    write_metadata(model, {META_QUANTIZATION: INT8_QDQ_PER_CHANNEL})
    onnx.save(model, str(dst))
