"""A tiny ONNX encoder written with onnx.helper (no PyTorch), for the tests that run in
the inference install: input ``ecg`` (batch, C, length) float32 -> Conv(C -> 4, k=5) ->
ReLU -> max over time -> ``embedding`` (batch, 4), with ecgfast's metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_encoder(path, *, leads: int = 1, metadata: dict | None = None, seed: int = 0):
    """Write the tiny encoder to ``path`` with ``metadata`` (ecgfast keys; values that are
    not strings are written as JSON) and return ``path``."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((4, leads, 5)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Conv", ["ecg", "w", "b"], ["c"], pads=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceMax", ["r", "axes"], ["embedding"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("ecg", TensorProto.FLOAT, ["batch", leads, "length"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 4])],
        [weight, bias, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    meta = {"ecgfast.min_length": "5", **(metadata or {})}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value if isinstance(value, str) else
                                 json.dumps(value))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
