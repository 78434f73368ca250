"""What :class:`ecgfast.export.OnnxEncoder` checks in a file before running it: one float32
(batch, C, length) input whose C is the number of leads the graph's first convolution
takes, one (batch, D) output, and the lead names of the metadata (no PyTorch here).

A file we did not write is not trusted: C is read off the graph (the weight of every
convolution that reads the input, through Unsqueeze / Quantize / Dequantize nodes), and
the declared input, the encoder config and the lead names must all agree with it, and the pre-processing contract must be one this
version reproduces (:func:`contract_of`).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from ecgfast.data.contract import Contract, ContractError, read_contract
from ecgfast.export.errors import OnnxModelError
from ecgfast.export.metadata import META_CONFIG, META_LEADS, META_PREPROCESSING

#: Nodes between the input and the first convolution that keep its channel axis.
_PASS_THROUGH = {"Unsqueeze", "QuantizeLinear", "DequantizeLinear", "Identity", "Cast"}


def load_and_check(path: Path) -> tuple[onnx.ModelProto, int]:
    """The model at ``path`` (external data not loaded) and its number of leads C, or
    :class:`OnnxModelError` naming the file."""
    if not path.exists():
        raise FileNotFoundError(f"OnnxEncoder: {path} does not exist")
    if not path.is_file():
        raise OnnxModelError(f"OnnxEncoder: {path} is not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
        leads = check_interface(path, model)
    except OnnxModelError:
        raise
    except Exception as err:  # a file we did not write: whatever its parse or fields raise
        raise OnnxModelError(f"{path}: not an ONNX model ({type(err).__name__}: {err})") from err
    return model, leads


def graph_leads(model: onnx.ModelProto) -> int | None:
    """Input channels of the convolutions that read the graph input (weight dim 1 x group),
    or None when no convolution reads it directly; OnnxModelError-free: the caller
    compares. Several different counts give -1."""
    g = model.graph
    inits = {init.name: init for init in g.initializer}
    made_by = {out: node for node in g.node for out in node.output}
    reads: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input[:1]:
            reads.setdefault(name, []).append(node)
    found, todo, seen = set(), [g.input[0].name], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in reads.get(name, []):
            if node.op_type == "Conv" and len(node.input) > 1:
                weight = inits.get(node.input[1])
                dq = made_by.get(node.input[1])
                if weight is None and dq is not None and dq.op_type == "DequantizeLinear":
                    weight = inits.get(dq.input[0])
                group = next((a.i for a in node.attribute if a.name == "group"), 1)
                if weight is not None and len(weight.dims) >= 2:
                    found.add(int(weight.dims[1]) * max(int(group), 1))
            elif node.op_type in _PASS_THROUGH:
                todo.extend(node.output[:1])
    if not found:
        return None
    return found.pop() if len(found) == 1 else -1


def _config_leads(path: Path, metadata: dict[str, str]) -> int | None:
    text = metadata.get(META_CONFIG)
    if text is None:
        return None
    try:
        value = json.loads(text).get("in_channels", 1)
    except (ValueError, AttributeError) as err:
        raise OnnxModelError(f"{path}: unreadable {META_CONFIG} metadata ({err})") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OnnxModelError(f"{path}: {META_CONFIG} has in_channels {value!r}")
    return value


def check_interface(path: Path, model: onnx.ModelProto) -> int:
    """One float32 (batch, C, length) input and one (batch, D) output; returns C."""
    g = model.graph
    if not model.opset_import or not g.node or not g.input or not g.output:
        raise OnnxModelError(f"{path}: not an ONNX model (no graph, inputs, outputs or opset)")
    inits = {init.name for init in g.initializer}
    inputs = [vi for vi in g.input if vi.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise OnnxModelError(
            f"{path}: expected one input (batch, leads, length) and one output (batch, D); "
            f"got inputs {[vi.name for vi in inputs]} and outputs {[o.name for o in g.output]}"
        )
    metadata = {p.key: p.value for p in model.metadata_props}
    from_graph = graph_leads(model)
    if from_graph == -1:
        raise OnnxModelError(f"{path}: the convolutions that read the input disagree on its "
                             "number of channels")
    from_config = _config_leads(path, metadata)
    if from_graph is not None and from_config is not None and from_graph != from_config:
        raise OnnxModelError(f"{path}: its encoder config says {from_config} lead(s), its first "
                             f"convolution takes {from_graph}")
    leads = from_graph or from_config or 1
    ttype = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in ttype.shape.dim]
    if ttype.elem_type != onnx.TensorProto.FLOAT or len(dims) != 3 or dims[1] != leads:
        names = onnx.TensorProto.DataType
        dtype = names.Name(ttype.elem_type) if ttype.elem_type in names.values() else "?"
        raise OnnxModelError(
            f"{path}: input {inputs[0].name!r} must be float32 (batch, {leads}, length), "
            f"got {dtype} {tuple(dims)}"
        )
    out = g.output[0].type.tensor_type
    if len(out.shape.dim) != 2:
        raise OnnxModelError(
            f"{path}: output {g.output[0].name!r} must be (batch, D), got rank {len(out.shape.dim)}"
        )
    return leads


def lead_names_of(path: Path, metadata: dict[str, str], leads: int) -> tuple[str, ...] | None:
    """The file's :data:`META_LEADS` as a tuple of ``leads`` names, None when absent;
    OnnxModelError when it is not a JSON list of that many distinct non-empty strings."""
    text = metadata.get(META_LEADS)
    if text is None:
        return None
    try:
        names = json.loads(text)
    except ValueError:
        names = None
    if (not isinstance(names, list) or len(names) != leads
            or not all(isinstance(n, str) and n for n in names) or len(set(names)) != leads):
        raise OnnxModelError(f"{path}: {META_LEADS} metadata must list the names of its {leads} "
                             f"lead(s), got {text[:200]!r}")
    return tuple(names)


def contract_of(path: Path, metadata: dict[str, str],
                leads: tuple[str, ...] | None) -> Contract | None:
    """The pre-processing contract of the file's :data:`META_PREPROCESSING` (None for a
    file exported before files recorded one); OnnxModelError naming the file and the
    difference when this version cannot reproduce it or its leads are not the file's."""
    text = metadata.get(META_PREPROCESSING)
    if text is None:
        return None
    try:
        contract = read_contract(text, str(path))
    except ContractError as err:
        raise OnnxModelError(str(err)) from None
    if contract.leads is not None and leads is not None and contract.leads != leads:
        raise OnnxModelError(f"{path}: its pre-processing names leads {list(contract.leads)}, "
                             f"its {META_LEADS} {list(leads)}")
    return contract
