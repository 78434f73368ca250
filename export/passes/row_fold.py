"""The row fold: block 1's two convolutions on the signal folded into two rows."""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ecgfast.export.passes._graph import attrs, consumers

ROW_FOLD_PREFIX = "rowfold/"
_ROW_FOLD_BIG = 1e30  # pre-activation offset that Relu turns into an exact 0
_UNARY_ACTIVATIONS = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus"}


def _row_fold_pattern(model: onnx.ModelProto):
    """Block 1's Conv -> Relu -> Conv -> activation on the lifted input, when it has the
    shape :func:`fold_rows` handles (stride 1, 'same' padding, one input channel)."""
    g = model.graph
    inits = {init.name: init for init in g.initializer}
    uses = consumers(g)

    def only_use(name):
        u = uses.get(name, [])
        return u[0] if len(u) == 1 else None

    lifts = [n for n in uses.get(g.input[0].name, []) if n.op_type == "Unsqueeze"]
    if len(lifts) != 1:
        return None
    x4 = lifts[0].output[0]
    for c1 in uses.get(x4, []):
        if c1.op_type != "Conv" or c1.input[0] != x4:
            continue
        act1 = only_use(c1.output[0])
        c2 = only_use(act1.output[0]) if act1 is not None and act1.op_type == "Relu" else None
        if c2 is None or c2.op_type != "Conv":
            continue
        act2 = only_use(c2.output[0])
        if act2 is None or act2.op_type not in _UNARY_ACTIVATIONS:
            continue
        convs = []
        for c in (c1, c2):
            w = inits.get(c.input[1])
            a = attrs(c)
            if w is None or len(w.dims) != 4 or w.dims[2] != 1:
                break
            k, pads = int(w.dims[3]), list(a.get("pads", [0, 0, 0, 0]))
            if (
                a.get("strides", [1, 1]) != [1, 1]
                or a.get("dilations", [1, 1]) != [1, 1]
                or a.get("group", 1) != 1
                or pads[0]
                or pads[2]
                or pads[1] + pads[3] != k - 1
                or len(uses.get(c.input[1], [])) != 1
            ):
                break
            convs.append((k, pads[1], pads[3]))
        else:
            if inits[c1.input[1]].dims[1] != 1:
                continue
            return x4, (c1, act1, c2, act2), convs
    return None


def fold_rows(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run block 1's two convolutions on the signal folded into two rows.

    onnxruntime's NCHWc convolution splits its work by batch x 32-channel filter set x
    output row; block 1's convolutions have 32 output channels and, on a (B, C, 1, L)
    tensor, one row, so at batch 1 they run on one thread. This rewrite cuts the padded
    signal into two overlapping halves stacked as rows of a (B, 2, 2, ceil(L/2) + halo)
    tensor (the second input channel is an indicator that is 0 inside the signal and
    -1e30 outside it, added to the first conv's pre-activation at the centre tap so that
    its Relu writes the exact zeros the second conv's 'same' padding would read), runs
    both convolutions without padding, and joins the two output rows again (Reshape,
    Slice to L). The arithmetic of every output sample is the same sum as before.
    Returns ``model`` itself when :func:`_row_fold_pattern` finds nothing to fold (the
    1-D layout, a leaky-ReLU encoder, an INT8 model). :class:`ecgfast.export.OnnxEncoder`
    runs a folded copy for batches smaller than its thread count; the exported file is
    not folded, because at large batches every thread has work already and the fold only
    adds work (the extra input channel, the final Slice).
    """
    found = _row_fold_pattern(model)
    if found is None:
        return model
    # the matched nodes are read only (names, inputs, attributes); the copy is rewritten
    x4, (c1, act1, c2, act2), ((k1, pl1, pr1), (k2, pl2, pr2)) = found
    model = copy.deepcopy(model)
    g = model.graph
    inits = {init.name: init for init in g.initializer}
    w1 = numpy_helper.to_array(inits[c1.input[1]])
    left, right = pl1 + pl2, pr1 + pr2
    p = ROW_FOLD_PREFIX
    nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []

    def const(name, value, dtype=np.int64):
        new_inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), p + "c/" + name))
        return p + "c/" + name

    def add(op, inputs, name, **attributes):
        nodes.append(helper.make_node(op, inputs, [p + name], name=p + name, **attributes))
        return p + name

    length = add("Shape", [x4], "length", start=3, end=4)
    half = add(
        "Div", [add("Add", [length, const("one", [1])], "length+1"), const("two", [2])], "half"
    )
    odd = add("Sub", [add("Add", [half, half], "2half"), length], "odd")
    pads = add(
        "Concat",
        [
            const("pads_head", [0, 0, 0, left, 0, 0, 0]),
            add("Add", [odd, const("right", [right])], "pad_right"),
        ],
        "pads",
        axis=0,
    )
    signal = add("Pad", [x4, pads, const("zero", 0.0, np.float32)], "signal")
    zeros = add(
        "ConstantOfShape",
        [add("Shape", [x4], "shape")],
        "zeros",
        value=numpy_helper.from_array(np.zeros(1, np.float32)),
    )
    outside = add("Pad", [zeros, pads, const("big", -_ROW_FOLD_BIG, np.float32)], "outside")
    both = add("Concat", [signal, outside], "both", axis=1)
    row = add("Add", [half, const("halo", [left + right])], "row_length")
    axis = const("axis", [3])
    first = add("Slice", [both, const("start0", [0]), row, axis], "row0")
    second = add("Slice", [both, half, add("Add", [half, row], "end1"), axis], "row1")
    rows = add("Concat", [first, second], "rows", axis=2)
    indicator = np.zeros_like(w1)
    indicator[:, :, :, pl1] = 1.0
    weight = const("conv1.weight", np.concatenate([w1, indicator], axis=1), np.float32)
    h = add("Conv", [rows, weight, *c1.input[2:]], "conv1", kernel_shape=[1, k1], pads=[0, 0, 0, 0])
    h = add("Relu", [h], "act1")
    y = add("Conv", [h, *c2.input[1:]], "conv2", kernel_shape=[1, k2], pads=[0, 0, 0, 0])
    y = add(act2.op_type, [y], "act2", **attrs(act2))
    y = add("Reshape", [y, const("join", [0, 0, 1, -1])], "join")
    nodes.append(
        helper.make_node(
            "Slice", [y, const("start", [0]), length, axis], [act2.output[0]], name=p + "crop"
        )
    )

    replaced = {n.output[0] for n in (c1, act1, c2, act2)}
    kept = []
    for n in g.node:
        if n.output[0] == c1.output[0]:
            kept.extend(nodes)
        if n.output[0] not in replaced:
            kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    g.initializer.remove(inits[c1.input[1]])
    g.initializer.extend(new_inits)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)
