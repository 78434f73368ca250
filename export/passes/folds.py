"""Clean-up folds run on every trace: constants, and Pad into Conv."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ecgfast.export.passes._graph import (
    attrs,
    constant_values,
    drop_nodes,
    explicit_pads,
    index,
    opset_of,
    remove_unused,
    set_attrs,
)


def fold_pad_into_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """Pad(constant 0, last axis only) -> Conv becomes one Conv with asymmetric ``pads``.

    The 'same' padding of the even kernels (F.pad + conv in the traced maths), on (B, C, L)
    or (B, C, 1, L). onnxscript's optimizer already does this for the traced encoder; this
    pass makes the graph independent of that. Edits ``model`` in place and returns it.
    """
    g = model.graph
    ix = index(g)
    drop: set[int] = set()
    for conv in g.node:
        pad = ix.private_producer(conv.input[0], "Pad") if conv.op_type == "Conv" else None
        if pad is None:
            continue
        mode = attrs(pad).get("mode", b"constant")
        if mode not in (b"constant", "constant"):
            continue
        pads = ix.consts.get(pad.input[1]) if len(pad.input) > 1 else None
        value = ix.consts.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else None
        if pads is None or (value is not None and float(np.asarray(value).ravel()[0]) != 0.0):
            continue
        if len(pad.input) > 3 and pad.input[3]:
            continue  # explicit axes: keep it simple
        pads = [int(v) for v in np.asarray(pads).ravel()]
        rank = len(pads) // 2
        if rank < 3 or min(pads) < 0 or any(
                v for i, v in enumerate(pads) if i not in (rank - 1, 2 * rank - 1)):
            continue  # only the last (time) axis may be padded
        a = attrs(conv)
        if not explicit_pads(a):
            continue
        spatial = rank - 2
        conv_pads = list(a.get("pads", [0] * 2 * spatial))
        conv_pads[spatial - 1] += pads[rank - 1]
        conv_pads[2 * spatial - 1] += pads[2 * rank - 1]
        a["pads"] = conv_pads
        set_attrs(conv, a)
        conv.input[0] = pad.input[0]
        drop.add(id(pad))
    drop_nodes(model, drop)
    return model


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Evaluate nodes whose inputs are all constants (e.g. a Reshape of reduction axes).

    Runs each such node with onnx's reference evaluator and stores the result as an
    initializer; the Constant nodes themselves become initializers too. Edits ``model``
    in place and returns it.
    """
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    consts = constant_values(g)
    opset = opset_of(model, 18)
    kept, new_inits = [], []
    for node in g.node:
        names = [n for n in node.input if n]
        if node.domain not in ("", "ai.onnx") or node.op_type in ("RandomNormal", "RandomUniform"):
            kept.append(node)
            continue
        if node.op_type != "Constant" and not (names and all(n in consts for n in names)):
            kept.append(node)
            continue
        if node.op_type == "Constant":
            if node.output[0] not in consts:
                kept.append(node)
                continue
            values = [consts[node.output[0]]]
        else:
            single = helper.make_model(
                helper.make_graph(
                    [node],
                    "fold",
                    [],
                    [
                        helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                        for o in node.output
                    ],
                    [numpy_helper.from_array(np.asarray(consts[n]), n) for n in names],
                ),
                opset_imports=[helper.make_opsetid("", opset)],
            )
            try:
                values = ReferenceEvaluator(single).run(None, {})
            except Exception:  # noqa: BLE001 - leave anything it cannot evaluate alone
                kept.append(node)
                continue
        for name, value in zip(node.output, values):
            consts[name] = np.asarray(value)
            new_inits.append(numpy_helper.from_array(np.asarray(value), name))
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    remove_unused(model)
    return model
