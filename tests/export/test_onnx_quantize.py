"""quantize_onnx: static INT8 QDQ, per-channel weights, calibrated on ECG windows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ecgfast.evaluation import compare_probe_accuracy
from ecgfast.export import OnnxEncoder, OnnxModelError, quantize_onnx

# The stated bound: on ECG windows the INT8 embeddings keep a cosine similarity of at
# least 0.999 on average and 0.995 for every window against fp32.
COSINE_MEAN_BOUND = 0.999
COSINE_MIN_BOUND = 0.995


@pytest.fixture(scope="module")
def quantized(exported, ecg_windows, tmp_path_factory):
    _, path, _ = exported
    int8 = tmp_path_factory.mktemp("int8") / "encoder.int8.onnx"
    calib = ecg_windows[::2]
    evalw = ecg_windows[1::2]
    labels = (np.arange(len(ecg_windows)) * 5 // len(ecg_windows))[1::2]  # recording index
    report = quantize_onnx(
        path,
        int8,
        calib,
        eval_windows=evalw,
        eval_labels=labels,
        benchmark_batch=8,
        benchmark_repeats=2,
        print_report=False,
    )
    return path, int8, report, evalw


def test_int8_embeddings_stay_close_to_fp32(quantized):
    fp32_path, int8_path, report, evalw = quantized
    e32 = OnnxEncoder(fp32_path, providers="cpu").embed(evalw)
    e8 = OnnxEncoder(int8_path, providers="cpu").embed(evalw)
    cos = (e32 * e8).sum(1) / np.linalg.norm(e32, axis=1) / np.linalg.norm(e8, axis=1)
    assert cos.mean() >= COSINE_MEAN_BOUND and cos.min() >= COSINE_MIN_BOUND, (
        cos.mean(),
        cos.min(),
    )
    assert report.cosine_mean == pytest.approx(float(cos.mean()), abs=1e-6)
    assert report.cosine_min == pytest.approx(float(cos.min()), abs=1e-6)
    assert not np.allclose(e32, e8, atol=1e-7)  # it really is a different (quantized) model


def test_int8_graph_is_static_qdq_per_channel(quantized):
    _, int8_path, _, _ = quantized
    model = onnx.load(str(int8_path))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert "DynamicQuantizeLinear" not in ops
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    # every conv is quantized but the last block's 1x1 shortcut (fp32_tail, the default)
    fp32_convs = [n for n in convs if n.input[1] in inits]
    assert len(fp32_convs) == 1 and list(inits[fp32_convs[0].input[1]].dims[2:]) == [1, 1]
    conv_weights = [n.input[1] for n in convs if n.input[1] not in inits]
    assert len(conv_weights) == len(convs) - 1
    producers = {o: n for n in model.graph.node for o in n.output}
    for w in conv_weights:
        dq = producers[w]
        assert dq.op_type == "DequantizeLinear"
        scale = inits[dq.input[1]]
        assert len(scale.dims) == 1 and scale.dims[0] > 1  # one scale per output channel
        assert inits[dq.input[0]].data_type == onnx.TensorProto.INT8
    meta = {p.key: p.value for p in model.metadata_props}
    assert "ecgfast.min_length" in meta
    # loads through the same signature checks; the row fold does not apply to QDQ graphs
    assert OnnxEncoder(int8_path, providers="cpu").small_batch_session is None


def test_report_has_speed_and_probe(quantized, capsys):
    _, _, report, evalw = quantized
    assert report.n_eval == len(evalw)
    assert report.fp32_windows_per_s > 0 and report.int8_windows_per_s > 0
    assert report.speedup == pytest.approx(report.int8_windows_per_s / report.fp32_windows_per_s)
    assert 0.0 <= report.probe_accuracy_fp32 <= 1.0
    assert abs(report.probe_accuracy_int8 - report.probe_accuracy_fp32) <= 0.15
    assert abs(report.probe_accuracy_int8_fp32_probe - report.probe_accuracy_fp32) <= 0.15
    changes = report.probe_change_int8_per_split
    assert len(changes) == 5  # the default probe_splits
    assert np.mean(changes) == pytest.approx(
        report.probe_accuracy_int8 - report.probe_accuracy_fp32, abs=1e-9
    )
    se = np.std(changes, ddof=1) / np.sqrt(len(changes))
    assert report.probe_change_int8_se == pytest.approx(se, abs=1e-12)
    text = report.format()
    assert "windows/s" in text and "probe accuracy" in text and "cosine" in text
    assert f"+- {100 * se:.2f} standard error" in text
    assert "the fp32 probe on INT8 embeddings" in text


def test_bad_calibration_input(exported, ecg_windows, tmp_path):
    _, path, _ = exported
    out = tmp_path / "q.onnx"
    bad = ecg_windows[:4].copy()
    bad[1, 0, 10] = np.nan
    with pytest.raises(ValueError, match="calibration_windows has NaN"):
        quantize_onnx(path, out, bad)
    with pytest.raises(ValueError, match="calibration_windows must be"):
        quantize_onnx(path, out, ecg_windows[:4, :, None, :])
    with pytest.raises(ValueError, match="calibration_windows is empty"):
        quantize_onnx(path, out, ecg_windows[:0])
    with pytest.raises(TypeError, match="calibration_windows must be floating"):
        quantize_onnx(path, out, (ecg_windows[:4] * 100).astype(np.int32))
    with pytest.raises(ValueError, match="shorter than"):
        quantize_onnx(path, out, ecg_windows[:4, :, :10])
    with pytest.raises(ValueError, match="calibrate_method"):
        quantize_onnx(path, out, ecg_windows[:4], calibrate_method="best")
    with pytest.raises(ValueError, match="eval_labels"):
        quantize_onnx(path, out, ecg_windows[:4], eval_labels=np.zeros(3, int))
    with pytest.raises(ValueError, match="probe_splits"):
        quantize_onnx(path, out, ecg_windows[:4], probe_splits=0)
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("nope")
    with pytest.raises(OnnxModelError, match="model.onnx"):
        quantize_onnx(not_onnx, out, ecg_windows[:4])
    assert not out.exists()


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_every_calibration_method_with_a_ragged_last_batch(exported, ecg_windows, tmp_path, method):
    """7 calibration windows in batches of (at most) 4: onnxruntime's histogram calibrators
    stack the batches, so quantize_onnx must feed batches of one size."""
    _, path, _ = exported
    out = tmp_path / f"{method}.onnx"
    report = quantize_onnx(
        path,
        out,
        ecg_windows[:7],
        calibrate_method=method,
        calibration_batch=4,
        benchmark_batch=2,
        benchmark_repeats=1,
        print_report=False,
    )
    assert out.exists() and report.n_calibration == 7
    assert report.cosine_mean >= COSINE_MEAN_BOUND


def test_bias_correction_removes_the_mean_error(exported, ecg_windows, tmp_path):
    """With bias_correction (the default) the INT8 model ends in an Add whose constant is
    the mean fp32 - INT8 embedding difference over the calibration windows, so on those
    windows the mean error per dimension is ~0; without it, it is not."""
    _, path, _ = exported
    calib = ecg_windows[::2]
    fp32 = OnnxEncoder(path, providers="cpu").embed(calib)
    mean_errors = {}
    for corrected in (True, False):
        out = tmp_path / f"int8-{corrected}.onnx"
        quantize_onnx(
            path,
            out,
            calib,
            bias_correction=corrected,
            benchmark_batch=2,
            benchmark_repeats=1,
            print_report=False,
        )
        last = onnx.load(str(out)).graph.node[-1]
        assert (last.name == "bias_correction") == corrected
        int8 = OnnxEncoder(out, providers="cpu").embed(calib)
        mean_errors[corrected] = np.abs((fp32 - int8).mean(0)).max() / np.abs(fp32).max()
    assert mean_errors[True] <= 1e-5
    assert mean_errors[False] > 10 * mean_errors[True]


def test_fp32_tail_stays_unquantized(exported, ecg_windows, tmp_path):
    """fp32_tail_nodes finds the last block's 1x1 shortcut, SE multiply, residual add and
    global max; quantize_onnx keeps exactly those in fp32 unless fp32_tail=False."""
    from ecgfast.export import fp32_tail_nodes

    _, path, _ = exported
    model = onnx.load(str(path))
    tail = fp32_tail_nodes(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert sorted(ops[n] for n in tail) == ["Add", "Conv", "Mul", "ReduceMax"]
    shortcut = next(n for n in model.graph.node if n.name in tail and n.op_type == "Conv")
    weights = {i.name: i for i in model.graph.initializer}
    assert list(weights[shortcut.input[1]].dims[2:]) == [1, 1]

    for keep in (True, False):
        out = tmp_path / f"int8-{keep}.onnx"
        quantize_onnx(
            path,
            out,
            ecg_windows[::2],
            fp32_tail=keep,
            benchmark_batch=2,
            benchmark_repeats=1,
            print_report=False,
        )
        graph = onnx.load(str(out)).graph
        producer = {o: n for n in graph.node for o in n.output}
        final_max = next(n for n in graph.node if n.op_type == "ReduceMax")
        fed_by = producer[final_max.input[0]].op_type
        assert fed_by == ("Add" if keep else "DequantizeLinear")


def test_compare_probe_accuracy_pairs_the_splits():
    """Identical features: every per-split change is 0 (the same splits, seeds and probe
    for both); features with the signal destroyed: the INT8 side loses accuracy, and the
    standard error is that of the per-split changes."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    fp32 = rng.standard_normal((120, 8)).astype(np.float32)
    fp32[:, 0] += 3.0 * labels
    same = compare_probe_accuracy(fp32, fp32.copy(), labels, splits=3)
    assert same["change_per_split"] == [0.0, 0.0, 0.0]
    assert same["fp32_probe_change_per_split"] == [0.0, 0.0, 0.0]
    assert same["change_se"] == 0.0 and same["int8"] == same["fp32"] > 0.8
    noise = rng.standard_normal((120, 8)).astype(np.float32)
    worse = compare_probe_accuracy(fp32, noise, labels, splits=3)
    assert worse["int8"] < worse["fp32"] - 0.2
    assert worse["int8_fp32_probe"] < worse["fp32"] - 0.2
    changes = worse["change_per_split"]
    assert worse["change_se"] == pytest.approx(np.std(changes, ddof=1) / np.sqrt(3))
    assert np.mean(worse["fp32_probe_change_per_split"]) == pytest.approx(
        worse["int8_fp32_probe"] - worse["fp32"]
    )
    assert compare_probe_accuracy(fp32, fp32, labels, splits=1)["change_se"] is None
