"""Clean-up folds run on every trace: constants, the 2-D max pool, Pad into Conv."""

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
    ranks,
    remove_unused,
    set_attrs,
)


def fold_max_pool_2d(model: onnx.ModelProto) -> onnx.ModelProto:
    """Unsqueeze(-2) -> MaxPool((1, k)) -> Squeeze(-2) on a rank-3 tensor -> MaxPool(k).

    Undoes the trace's max_pool1d-as-max_pool2d (:mod:`ecgfast.export.tracing`). Edits
    ``model`` in place and returns it.
    """
    g = model.graph
    ix = index(g)
    rank = ranks(model)
    drop: set[int] = set()
    for pool in g.node:
        if pool.op_type != "MaxPool" or len(pool.output) != 1:
            continue
        a = attrs(pool)
        if len(a.get("kernel_shape", [])) != 2 or a["kernel_shape"][0] != 1:
            continue
        unsq = ix.private_producer(pool.input[0], "Unsqueeze")
        squeezes = ix.uses.get(pool.output[0], [])
        if unsq is None or len(squeezes) != 1 or pool.output[0] in ix.outputs:
            continue
        sq = squeezes[0]
        if sq.op_type != "Squeeze" or rank.get(unsq.input[0]) != 3:
            continue
        ax_u = ix.consts.get(unsq.input[1]) if len(unsq.input) > 1 else None
        ax_s = ix.consts.get(sq.input[1]) if len(sq.input) > 1 else None
        if ax_u is None or ax_s is None:
            continue
        if [int(v) % 4 for v in ax_u.ravel()] != [2] or [int(v) % 4 for v in ax_s.ravel()] != [2]:
            continue
        if any(v != 0 for v in a.get("pads", [0, 0, 0, 0])[::2]):
            continue
        if a.get("strides", [1, 1])[0] != 1 or a.get("dilations", [1, 1])[0] != 1:
            continue
        new = {"kernel_shape": [a["kernel_shape"][1]]}
        new["strides"] = [a.get("strides", [1, 1])[1]]
        new["pads"] = [a.get("pads", [0, 0, 0, 0])[1], a.get("pads", [0, 0, 0, 0])[3]]
        new["dilations"] = [a.get("dilations", [1, 1])[1]]
        new["ceil_mode"] = a.get("ceil_mode", 0)
        pool.input[0] = unsq.input[0]
        pool.output[0] = sq.output[0]
        set_attrs(pool, new)
        drop.update((id(unsq), id(sq)))
    drop_nodes(model, drop)
    return model


def fold_pad_into_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """Pad(constant 0, time axis only) -> Conv becomes one Conv with asymmetric ``pads``.

    onnxscript's optimizer already does this for the traced encoder; this pass makes the
    graph independent of that (a Pad left in place would also block the 2-D layout).
    Edits ``model`` in place and returns it.
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
        if len(pads) != 6 or any(pads[i] for i in (0, 1, 3, 4)) or min(pads) < 0:
            continue
        a = attrs(conv)
        if not explicit_pads(a):
            continue
        old = a.get("pads", [0, 0])
        a["pads"] = [old[0] + pads[2], old[1] + pads[5]]
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
