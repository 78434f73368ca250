"""Graph queries and edits that every pass shares (no PyTorch: the runtime imports them)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx
from onnx import helper, numpy_helper


def attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes as ``{name: python value}``."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def set_attrs(node: onnx.NodeProto, values: dict) -> None:
    """Replace all of the node's attributes with ``values``."""
    del node.attribute[:]
    for name, value in values.items():
        node.attribute.append(helper.make_attribute(name, value))


def explicit_pads(node_attrs: dict) -> bool:
    """True when the node has no ``auto_pad`` (its ``pads`` say all there is)."""
    return node_attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")


def opset_of(model: onnx.ModelProto, default: int | None = None) -> int | None:
    """The model's default-domain opset version."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default)


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it."""
    uses: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node that writes it."""
    return {o: n for n in graph.node for o in n.output}


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the initializers and of the Constant nodes' outputs, by tensor name."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1:
            attr = node.attribute[0]
            if attr.name == "value":
                values[node.output[0]] = numpy_helper.to_array(attr.t)
            elif attr.name == "value_ints":
                values[node.output[0]] = np.asarray(attr.ints, dtype=np.int64)
            elif attr.name == "value_int":
                values[node.output[0]] = np.asarray(attr.i, dtype=np.int64)
    return values


class GraphIndex(NamedTuple):
    """Who writes and who reads each tensor of a graph, and its constant values."""

    consts: dict[str, np.ndarray]
    uses: dict[str, list[onnx.NodeProto]]
    producer: dict[str, onnx.NodeProto]
    outputs: set[str]  # the graph's output names

    def private_producer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The ``op_type`` node that writes ``name`` when nothing else can see ``name``
        (one reader, not a graph output), so a pass may fuse it into its reader."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or name in self.outputs:
            return None
        return node if len(self.uses.get(name, [])) == 1 else None


def index(graph: onnx.GraphProto) -> GraphIndex:
    return GraphIndex(
        constant_values(graph), consumers(graph), producers(graph), {o.name for o in graph.output}
    )


def drop_nodes(model: onnx.ModelProto, drop: set[int]) -> None:
    """Remove the nodes whose ``id()`` is in ``drop``, then what nothing reads any more."""
    g = model.graph
    kept = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(kept)
    remove_unused(model)


def remove_unused(model: onnx.ModelProto) -> None:
    """Drop Constant nodes and initializers that no node and no graph output reads."""
    g = model.graph
    used = {name for n in g.node for name in n.input} | {o.name for o in g.output}
    kept_nodes = [n for n in g.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    del g.node[:]
    g.node.extend(kept_nodes)
    kept = [init for init in g.initializer if init.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
