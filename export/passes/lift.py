"""The 2-D layout: every 1-D op on (B, C, L) rewritten as a height-1 2-D op on (B, C, 1, L)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ecgfast.export.passes._graph import (
    attrs,
    constant_values,
    consumers,
    explicit_pads,
    ranks,
    remove_unused,
    set_attrs,
)


class CannotLift(Exception):
    """The graph has an op :func:`lift_to_2d` has no 2-D form for; the message says which."""


_ELEMENTWISE_UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Identity", "Neg", "Abs", "Elu"}
_ELEMENTWISE_BINARY = {"Add", "Mul", "Sub", "Div", "Max", "Min"}
_REDUCTIONS = {"ReduceMean", "ReduceMax", "ReduceSum", "ReduceMin"}
_POOLS = {"MaxPool", "AveragePool"}


def lift_to_2d(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a graph of 1-D ops on (B, C, L) tensors into 2-D ops on (B, C, 1, L).

    Every rank-3 tensor that carries the time axis is "lifted" (gets an axis of size 1 at
    position 2); Conv/MaxPool get (1, k) kernels, reductions also reduce the new axis
    (keepdims=0) and rank >= 2 operands broadcast against lifted tensors get the axis
    inserted. Raises :class:`CannotLift` on any op it does not know, so the caller can
    keep the 1-D graph.
    """
    model = copy.deepcopy(model)
    g = model.graph
    rank = ranks(model)
    consts = constant_values(g)
    inits = {init.name: init for init in g.initializer}
    uses = consumers(g)
    lifted: set[str] = set()
    rename: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    counter = [0]

    def fresh(base: str) -> str:
        counter[0] += 1
        return f"{base}__2d{counter[0]}"

    def const_i64(values) -> str:
        name = fresh("axes")
        new_inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def unsqueeze(name: str, axis: int) -> str:
        out = fresh(name)
        new_nodes.append(helper.make_node("Unsqueeze", [name, const_i64([axis])], [out]))
        return out

    for inp in g.input:
        if rank.get(inp.name) == 3:
            rename[inp.name] = unsqueeze(inp.name, 2)
            lifted.add(rename[inp.name])

    for node in g.node:
        node = copy.deepcopy(node)
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        ins_lifted = [name in lifted for name in node.input]
        op = node.op_type
        if not any(ins_lifted):
            new_nodes.append(node)
            continue
        if op == "Conv":
            if not ins_lifted[0] or any(ins_lifted[1:]):
                raise CannotLift("Conv weights computed from the signal")
            w = node.input[1]
            if w not in inits or len(uses.get(w, [])) != 1:
                raise CannotLift(f"Conv weight {w} is not a private initializer")
            arr = numpy_helper.to_array(inits[w])
            if arr.ndim != 3:
                raise CannotLift(f"Conv weight {w} is not 1-D")
            inits[w].CopyFrom(numpy_helper.from_array(arr[:, :, None, :], w))
            a = attrs(node)
            if not explicit_pads(a):
                raise CannotLift("Conv with auto_pad")
            k = a.get("kernel_shape", [arr.shape[-1]])
            pads = a.get("pads", [0, 0])
            a["kernel_shape"] = [1, k[0]]
            a["pads"] = [0, pads[0], 0, pads[1]]
            a["strides"] = [1, a.get("strides", [1])[0]]
            a["dilations"] = [1, a.get("dilations", [1])[0]]
            a.pop("auto_pad", None)
            set_attrs(node, a)
            lifted.add(node.output[0])
        elif op in _POOLS:
            if len(node.output) != 1:
                raise CannotLift("pool with indices")
            a = attrs(node)
            if not explicit_pads(a):
                raise CannotLift("pool with auto_pad")
            pads = a.get("pads", [0, 0])
            a["kernel_shape"] = [1, a["kernel_shape"][0]]
            a["pads"] = [0, pads[0], 0, pads[1]]
            a["strides"] = [1, a.get("strides", [1])[0]]
            if "dilations" in a:
                a["dilations"] = [1, a["dilations"][0]]
            a.pop("auto_pad", None)
            set_attrs(node, a)
            lifted.add(node.output[0])
        elif op in _ELEMENTWISE_UNARY:
            lifted.add(node.output[0])
        elif op in _ELEMENTWISE_BINARY:
            for i, name in enumerate(node.input):
                if ins_lifted[i]:
                    continue
                r = rank.get(name)
                if r is None:
                    raise CannotLift(f"rank of {name} unknown")
                if r >= 4:
                    raise CannotLift(f"rank-{r} operand {name} of {op}")
                if r >= 2:
                    node.input[i] = unsqueeze(name, r - 1)
            lifted.add(node.output[0])
        elif op in _REDUCTIONS:
            a = attrs(node)
            if len(node.input) > 1 and node.input[1]:
                axes = consts.get(node.input[1])
                if axes is None:
                    raise CannotLift(f"{op} with computed axes")
                axes = [int(v) for v in np.asarray(axes).ravel()]
            elif "axes" in a:
                axes = list(a["axes"])
            else:
                raise CannotLift(f"{op} over all axes")
            mapped = [{0: 0, 1: 1, 2: 3}[ax % 3] for ax in axes]
            keepdims = a.get("keepdims", 1)
            if op == "ReduceMean" and mapped == [3]:
                # the mean over time of (B, C, 1, L): GlobalAveragePool -> (B, C, 1, 1)
                pooled = node.output[0] if keepdims else fresh(node.output[0])
                new_nodes.append(
                    helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=node.name)
                )
                if keepdims:
                    lifted.add(pooled)
                else:
                    new_nodes.append(
                        helper.make_node("Flatten", [pooled], [node.output[0]], axis=1)
                    )
                continue
            if not keepdims:
                mapped = sorted(set(mapped) | {2})
            if "axes" in a:
                a["axes"] = mapped
                set_attrs(node, a)
            else:
                node.input[1] = const_i64(mapped)
            if keepdims:
                lifted.add(node.output[0])
        else:
            raise CannotLift(f"no 2-D form for {op}")
        new_nodes.append(node)

    for out in g.output:
        if out.name in lifted:
            raise CannotLift(f"graph output {out.name} carries the time axis")
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    del g.value_info[:]
    remove_unused(model)
    return model
