"""export_onnx / verify_onnx: parity with PyTorch for every residual x attention variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ecgfast.export import (
    OnnxEncoder,
    OnnxExportError,
    ParityError,
    build_onnx,
    export_onnx,
    verify_onnx,
)
from ecgfast.models import RESIDUAL_PRESETS, ECGEncoder, EncoderConfig

STANDARD_OPS = {
    "Conv",
    "Relu",
    "LeakyRelu",
    "ReduceMean",
    "GlobalAveragePool",
    "Reshape",
    "Gemm",
    "Sigmoid",
    "Unsqueeze",
    "Mul",
    "Add",
    "MaxPool",
    "ReduceMax",
    "Identity",
}


def _ort_session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _torch_embed(model, x):
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("residual", list(RESIDUAL_PRESETS))
def test_parity_every_variant(tmp_path, capsys, residual, attention):
    torch.manual_seed(list(RESIDUAL_PRESETS).index(residual) * 2 + attention)
    # training mode with dropout: export must trace the eval-mode eager graph and leave
    # the model as it was
    model = ECGEncoder(EncoderConfig(residual=residual, attention=attention, dropout=0.3))
    model.train()
    source = model
    if (residual, attention) == ("first_two", True):  # one variant goes through a checkpoint
        from ecgfast.training.checkpoint import save_checkpoint

        state = {f"encoder.{k}": v for k, v in model.state_dict().items()}
        source = save_checkpoint(
            tmp_path / "run", epoch=1, state_dict=state, config={"encoder": model.config.to_dict()}
        )
    path = tmp_path / "m.onnx"
    report = export_onnx(source, path, batch_sizes=(3,), lengths=(97,))
    assert model.training
    assert report.ok and len(report.rows) == 1
    printed = capsys.readouterr().out
    assert "onnx.checker ok" in printed and printed.count("  ok") == 1

    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert ops <= STANDARD_OPS, ops - STANDARD_OPS
    assert all(n.domain in ("", "ai.onnx") for n in graph.node)
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "length"]
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    n_shortcuts = sum(RESIDUAL_PRESETS[residual])
    assert sum(n.op_type == "Conv" for n in graph.node) == 6 + n_shortcuts
    assert sum(n.op_type == "Gemm" for n in graph.node) == (6 if attention else 0)

    # independent check at the production length and an odd one (the default encoder's
    # export is checked at 2560 and 4000 x batch 1, 7, 64 by the `exported` fixture)
    model.eval()
    session = _ort_session(path)
    rng = np.random.default_rng(1)
    for batch, length in ((2, 2560), (1, 3001), (3, model.min_length), (1, model.min_length + 1)):
        x = rng.standard_normal((batch, 1, length)).astype(np.float32)
        expected = _torch_embed(model, x)
        got = session.run(None, {"ecg": x})[0]
        assert got.shape == (batch, 128)
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_default_export_full_verification(exported):
    _, _, report = exported
    assert [(r.batch, r.length) for r in report.rows] == [
        (b, n) for n in (2560, 4000) for b in (1, 7, 64)
    ]
    assert report.ok and all(r.ok for r in report.rows)
    assert report.max_relative_error <= 1e-4
    assert all(r.tolerance == pytest.approx(1e-4 * r.scale) for r in report.rows)
    text = report.format()
    assert "onnx.checker ok" in text and text.count("  ok") == 6 and "FAIL" not in text


def test_the_file_names_no_source_path_of_the_exporting_machine(exported):
    """No node keeps the exporter's Python stack trace or FX node (absolute paths of the
    exporting machine's ecgfast); the module scopes stay."""
    import ecgfast

    _, path, _ = exported
    model = onnx.load(str(path))
    root = str(Path(ecgfast.__file__).resolve().parent.parent)
    keys = {p.key for n in model.graph.node for p in n.metadata_props}
    assert "namespace" in keys  # the scopes are kept, so the check below reads metadata
    assert not keys & {"pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node"}
    assert root.encode() not in path.read_bytes()


def test_same_padding_lives_in_conv_pads(exported):
    _, path, _ = exported
    model = onnx.load(str(path))
    assert not any(n.op_type == "Pad" for n in model.graph.node)
    pads = {
        tuple(a.ints)
        for n in model.graph.node
        if n.op_type == "Conv"
        for a in n.attribute
        if a.name == "pads"
    }
    # 2-D layout: (top, left, bottom, right) with the extra zero on the right (even K)
    assert {(0, 15, 0, 16), (0, 7, 0, 8), (0, 3, 0, 4), (0, 0, 0, 0)} == pads
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["ecgfast.layout"] == "2d"
    # the squeeze-excitation means over time are GlobalAveragePools (one per block), which
    # onnxruntime's INT8 path runs on uint8 channels-last tensors
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GlobalAveragePool") == 3 and "ReduceMean" not in ops
    assert int(meta["ecgfast.min_length"]) == ECGEncoder().min_length
    assert EncoderConfig.from_dict(__import__("json").loads(meta["ecgfast.encoder_config"]))


@pytest.mark.parametrize(("layout", "optimize"), [("1d", True), ("2d", False)])
def test_layouts_and_own_rewrites(layout, optimize):
    """The 1-D layout agrees with PyTorch; so does the 2-D one without onnxscript's
    optimizer (then this module's constant folding and Pad -> Conv folding do the work)."""
    torch.manual_seed(3)
    model = ECGEncoder(EncoderConfig.ssl_ecg()).eval()  # leaky ReLU, no shortcut, no SE
    x = np.random.default_rng(0).standard_normal((3, 1, 301)).astype(np.float32)
    expected = _torch_embed(model, x)
    proto = build_onnx(model, layout=layout, _optimize=optimize)
    assert not any(n.op_type in ("Pad", "Constant") for n in proto.graph.node)
    assert {p.key: p.value for p in proto.metadata_props}["ecgfast.layout"] == layout
    rank = 4 if layout == "2d" else 3
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    weights = {i.name: len(i.dims) for i in proto.graph.initializer}
    assert all(weights[n.input[1]] == rank for n in convs)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"ecg": x})[0]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_reference_evaluator_agrees_with_onnxruntime(exported):
    from onnx.reference import ReferenceEvaluator

    _, path, _ = exported
    x = np.random.default_rng(2).standard_normal((2, 1, 64)).astype(np.float32)
    ref = ReferenceEvaluator(str(path)).run(None, {"ecg": x})[0]
    got = OnnxEncoder(path, providers="cpu").embed(x)
    assert ref.shape == got.shape == (2, 128)
    assert np.abs(ref - got).max() <= 1e-4 * np.abs(ref).max()


def test_verify_detects_a_wrong_model(exported, tmp_path):
    model, path, _ = exported
    broken = onnx.load(str(path))
    init = next(i for i in broken.graph.initializer if i.name.endswith("conv2.weight"))
    w = onnx.numpy_helper.to_array(init) * 1.5
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    bad_path = tmp_path / "broken.onnx"
    onnx.save(broken, str(bad_path))
    report = verify_onnx(bad_path, model, batch_sizes=(2,), lengths=(300,))
    assert not report.ok and "FAIL" in report.format()


def test_export_raises_parity_error(monkeypatch, exported, tmp_path, capsys):
    """A graph that disagrees with the model fails the export's own verification."""
    import ecgfast.export.onnx_export as mod

    model, path, _ = exported
    broken = onnx.load(str(path))
    init = next(i for i in broken.graph.initializer if i.name.endswith("2.conv1.weight"))
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * 1.01, init.name))
    monkeypatch.setattr(mod, "_build", lambda *a, **k: broken)
    with pytest.raises(ParityError, match="out.onnx"):
        export_onnx(model, tmp_path / "out.onnx", batch_sizes=(2,), lengths=(64,))
    assert "FAIL" in capsys.readouterr().out


def test_bad_arguments(tmp_path, default_encoder):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        export_onnx(tmp_path / "nowhere", tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="model_or_checkpoint"):
        export_onnx(object(), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="layout"):
        export_onnx(default_encoder, tmp_path / "x.onnx", layout="3d")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(default_encoder, tmp_path / "x.onnx", opset=9)
    with pytest.raises(ValueError, match="lengths must be >= the encoder's minimum"):
        export_onnx(default_encoder, tmp_path / "x.onnx", lengths=(2560, 10))
    with pytest.raises(ValueError, match="batch_sizes"):
        export_onnx(default_encoder, tmp_path / "x.onnx", batch_sizes=(0,))
    with pytest.raises(ValueError, match="rel_tolerance"):
        export_onnx(default_encoder, tmp_path / "x.onnx", rel_tolerance=0)
    assert not (tmp_path / "x.onnx").exists()  # all refused before tracing
    with pytest.raises(IsADirectoryError, match=str(tmp_path.name)):
        export_onnx(default_encoder, tmp_path)
    not_onnx = tmp_path / "junk.onnx"
    not_onnx.write_text("hello")
    with pytest.raises(OnnxExportError, match="junk.onnx: onnx.checker rejected"):
        verify_onnx(not_onnx, default_encoder)


#: One block of the default encoder's graph in the 2-D layout (convs, SE, shortcut, add).
_BLOCK_2D = ["Conv", "Relu", "Conv", "Relu", "GlobalAveragePool", "Reshape", "Gemm", "Relu",
             "Gemm", "Sigmoid", "Unsqueeze", "Mul", "Conv", "Add"]
#: The default encoder's whole graph: the input lifted once, two max-pooled blocks, a last
#: block with the global max. A change to the exporter that changes it must say so here.
PINNED_2D = ["Unsqueeze", *_BLOCK_2D, "MaxPool", *_BLOCK_2D, "MaxPool", *_BLOCK_2D, "ReduceMax"]


def test_default_graph_is_pinned_and_two_exports_are_identical(exported):
    """The default export's nodes in order, its layout (every conv and pool a height-1 2-D
    op, the input lifted once, nothing converted back and forth), its initializers (the
    encoder's own tensors under their state_dict names), and the same bytes from a second
    export of the same encoder (numerical parity: test_default_export_full_verification)."""
    from onnx import helper, numpy_helper

    model, path, _ = exported
    proto = onnx.load(str(path))
    assert [n.op_type for n in proto.graph.node] == PINNED_2D
    for node in proto.graph.node:
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        if node.op_type in ("Conv", "MaxPool"):
            assert len(a["kernel_shape"]) == 2 and a["kernel_shape"][0] == 1, node.name
        if node.op_type == "MaxPool":
            assert a["kernel_shape"] == [1, 8] and a["strides"] == [1, 2]
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for name, value in model.state_dict().items():
        want = value.numpy()
        if want.ndim == 3:  # conv weights (C_out, C_in, K) as (C_out, C_in, 1, K)
            want = want[:, :, None, :]
        np.testing.assert_array_equal(inits[name], want, err_msg=name)
    assert build_onnx(model).SerializeToString() == path.read_bytes()


def test_row_fold_is_exact_and_used_for_small_batches(exported):
    """fold_rows runs block 1 on the signal folded into two rows: it agrees with PyTorch
    at even, odd and minimum lengths; OnnxEncoder uses the folded copy for batches below
    its thread count only, on the CPU provider, unless row_fold=False; a leaky-ReLU
    encoder (whose activation does not zero the -1e30 indicator) is left unfolded."""
    from ecgfast.export import OnnxEncoder
    from ecgfast.export.passes import ROW_FOLD_PREFIX, fold_rows

    model, path, _ = exported
    plain = onnx.load(str(path))
    folded = fold_rows(plain)
    assert any(n.name.startswith(ROW_FOLD_PREFIX) for n in folded.graph.node)
    assert not any(n.name.startswith(ROW_FOLD_PREFIX) for n in plain.graph.node)
    assert fold_rows(folded) is folded  # nothing left to fold
    onnx.checker.check_model(folded, full_check=True)
    session = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for batch, length in ((1, model.min_length), (2, model.min_length + 1), (1, 2560), (3, 2561)):
        x = rng.standard_normal((batch, 1, length)).astype(np.float32) * 3
        expected = _torch_embed(model, x)
        got = session.run(None, {"ecg": x})[0]
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()

    encoder = OnnxEncoder(path, providers="cpu", threads=2)
    assert encoder.small_batch_session is not None and encoder.small_batch_below == 2
    assert encoder._session_for(1) is encoder.small_batch_session
    assert encoder._session_for(2) is encoder.session
    assert OnnxEncoder(path, providers="cpu", row_fold=False).small_batch_session is None
    assert OnnxEncoder(path, providers="cpu", threads=1).small_batch_session is None
    x = rng.standard_normal((3, 1, 2560)).astype(np.float32)
    np.testing.assert_allclose(
        encoder.embed(x, batch_size=1), _torch_embed(model, x), rtol=0, atol=1e-5
    )

    leaky = build_onnx(ECGEncoder(EncoderConfig.ssl_ecg()).eval())
    assert fold_rows(leaky) is leaky
