"""OnnxEncoder on damaged and foreign .onnx files: truncated, bit-flipped and mis-typed
files either load and run or raise OnnxModelError; no other exception type, no hang, no
crash (a crash would end the test process)."""

from __future__ import annotations

import copy
import faulthandler

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ecgfast.export import OnnxEncoder, OnnxModelError
from ecgfast.export.metadata import INPUT_NAME, META_MIN_LENGTH, OUTPUT_NAME, write_metadata
from ecgfast.export.passes import fold_rows

CHANNELS = 4


@pytest.fixture(autouse=True)
def _no_hang():
    """A hang ends the run with every thread's traceback instead of waiting forever."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _tiny_encoder() -> onnx.ModelProto:
    """An encoder-shaped graph small enough that random damage hits its structure: the
    lifted input, Conv -> Relu -> Conv -> Relu (the pattern fold_rows rewrites), a global
    max, float32 (batch, 1, length) -> (batch, 4), and the min_length metadata."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([2], np.int64), "axis"),
        numpy_helper.from_array(rng.standard_normal((CHANNELS, 1, 1, 4), np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(CHANNELS, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((CHANNELS, CHANNELS, 1, 3), np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(CHANNELS, np.float32), "b2"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", [INPUT_NAME, "axis"], ["x4"], name="lift"),
        helper.make_node(
            "Conv", ["x4", "w1", "b1"], ["h1"], name="conv1", kernel_shape=[1, 4], pads=[0, 1, 0, 2]
        ),
        helper.make_node("Relu", ["h1"], ["a1"], name="act1"),
        helper.make_node(
            "Conv", ["a1", "w2", "b2"], ["h2"], name="conv2", kernel_shape=[1, 3], pads=[0, 1, 0, 1]
        ),
        helper.make_node("Relu", ["h2"], ["a2"], name="act2"),
        helper.make_node("ReduceMax", ["a2", "axes"], [OUTPUT_NAME], name="pool", keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, "length"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", CHANNELS])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    write_metadata(model, {META_MIN_LENGTH: "8"})
    onnx.checker.check_model(model, full_check=True)
    return model


def _outcome(path, data: bytes, length: int = 64) -> str:
    """Write ``data`` to ``path``, load it with two threads (so the row fold is tried) and
    embed batches of 1 (the folded session) and 3; "ok" or "OnnxModelError". Any other
    exception propagates and fails the test."""
    path.write_bytes(data)
    try:
        enc = OnnxEncoder(path, providers="cpu", threads=2)
        for batch in (1, 3):
            x = np.random.default_rng(batch).standard_normal((batch, 1, length))
            out = enc.embed(x.astype(np.float32))
            assert out.shape[0] == batch and out.dtype == np.float32
    except OnnxModelError as err:
        assert path.name in str(err)
        return "OnnxModelError"
    return "ok"


def _flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    damaged = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        damaged[int(rng.integers(len(damaged)))] ^= 1 << int(rng.integers(8))
    return bytes(damaged)


def test_tiny_encoder_loads_runs_and_folds(tmp_path):
    """The undamaged seed file works and takes the row-fold path, so the loops below
    exercise loading, folding and running."""
    model = _tiny_encoder()
    assert fold_rows(model) is not model
    assert _outcome(tmp_path / "tiny.onnx", model.SerializeToString()) == "ok"
    enc = OnnxEncoder(tmp_path / "tiny.onnx", providers="cpu", threads=2)
    assert enc.small_batch_session is not None and enc.min_length == 8


def test_truncated_and_bit_flipped_files(tmp_path):
    data = _tiny_encoder().SerializeToString()
    rng = np.random.default_rng(11)
    seen = {"truncate": set(), "flip": set()}
    for i in range(400):
        if i % 2:
            kind, damaged = "flip", _flip_bits(data, rng)
        else:
            kind, damaged = "truncate", data[: int(rng.integers(len(data)))]
        seen[kind].add(_outcome(tmp_path / f"{kind}.onnx", damaged))
    assert seen["truncate"] >= {"OnnxModelError"}
    assert seen["flip"] == {"ok", "OnnxModelError"}  # both harmless and fatal damage met


def test_damaged_exported_encoder(tmp_path, exported):
    """The same on the real exported default encoder (fewer rounds: it is larger)."""
    _, path, _ = exported
    data = path.read_bytes()
    rng = np.random.default_rng(12)
    outcomes = set()
    for i in range(24):
        damaged = _flip_bits(data, rng) if i % 2 else data[: int(rng.integers(len(data)))]
        outcomes.add(_outcome(tmp_path / "encoder.onnx", damaged, length=300))
    assert "OnnxModelError" in outcomes


def _mutated(change) -> bytes:
    model = copy.deepcopy(_tiny_encoder())
    change(model)
    return model.SerializeToString()


def _set_input_type(elem_type):
    def change(model):
        model.graph.input[0].type.tensor_type.elem_type = elem_type

    return change


def _external_weight(model):
    init = model.graph.initializer[1]
    init.data_location = TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"


def _huge_weight(model):
    model.graph.initializer[1].dims[:] = [2**40, 1, 1, 4]


def _rank_3_weight(model):  # loads; onnxruntime refuses it at the first call
    model.graph.initializer[1].dims[:] = [CHANNELS, 1, 4]


TINY = _tiny_encoder().SerializeToString()
MISTYPED = {
    "empty": b"",
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
    "text": b"this is not a model\n" * 20,
    "json": b'{"model": "encoder", "layers": [1, 2, 3]}',
    "zip": b"PK\x03\x04" + bytes(100),
    "random": np.random.default_rng(13).bytes(2048),
    **{f"input {TensorProto.DataType.Name(t)}": _mutated(_set_input_type(t)) for t in (0, 7, 11)},
    "input type 65 (no such type)": _mutated(_set_input_type(65)),
    "input (batch, 2, length)": _mutated(
        lambda m: m.graph.input[0].type.tensor_type.shape.dim[1].__setattr__("dim_value", 2)
    ),
    "output int64": _mutated(
        lambda m: m.graph.output[0].type.tensor_type.__setattr__("elem_type", 7)
    ),
    "output size lies": _mutated(
        lambda m: m.graph.output[0].type.tensor_type.shape.dim[1].__setattr__("dim_value", 7)
    ),
    "opset 1000": _mutated(lambda m: m.opset_import[0].__setattr__("version", 1000)),
    "unknown op": _mutated(lambda m: m.graph.node[1].__setattr__("op_type", "NoSuchOp")),
    "missing tensor": _mutated(lambda m: m.graph.node[1].input.__setitem__(1, "missing")),
    "weight outside the folder": _mutated(_external_weight),
    "weight of 2**42 values": _mutated(_huge_weight),
    "1-D conv weight in a 2-D conv": _mutated(_rank_3_weight),
    "input name not utf-8": TINY.replace(INPUT_NAME.encode(), b"\xff\xfe\xfd"),
    "op type not utf-8": TINY.replace(b"Relu", b"\xff\xfe\xfd\xfc"),
}


@pytest.mark.parametrize("name", list(MISTYPED))
def test_mistyped_files_raise_onnx_model_error(tmp_path, name):
    assert _outcome(tmp_path / "model.onnx", MISTYPED[name]) == "OnnxModelError"


@pytest.mark.parametrize(("value", "expected"), [("-5", 1), ("abc", 1), ("9" * 5000, 1)])
def test_untrusted_min_length_falls_back_to_one(tmp_path, value, expected):
    """A min_length entry that is not a usable positive integer accepts any length."""
    data = _mutated(lambda m: write_metadata(m, {META_MIN_LENGTH: value}))
    (tmp_path / "model.onnx").write_bytes(data)
    assert OnnxEncoder(tmp_path / "model.onnx", providers="cpu").min_length == expected


def test_a_file_the_row_fold_cannot_rewrite(tmp_path):
    """A file onnxruntime runs but whose recorded shapes contradict the graph (here the
    activation before the global max says 9 channels): the row fold's strict shape
    inference refuses it, which OnnxEncoder reports as OnnxModelError with the way out."""

    def wrong_shape(model):
        shape = ["batch", 9, 1, "length"]
        model.graph.value_info.append(helper.make_tensor_value_info("a2", TensorProto.FLOAT, shape))

    path = tmp_path / "model.onnx"
    path.write_bytes(_mutated(wrong_shape))
    with pytest.raises(OnnxModelError, match="(?s)model.onnx: the row fold failed.*row_fold=False"):
        OnnxEncoder(path, providers="cpu", threads=2)
    enc = OnnxEncoder(path, providers="cpu", threads=2, row_fold=False)
    assert enc.embed(np.zeros((1, 1, 64), np.float32)).shape == (1, CHANNELS)
