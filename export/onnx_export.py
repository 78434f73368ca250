"""Export the encoder to ONNX: :func:`build_onnx` (in memory) and :func:`export_onnx`
(to a file, then checked against PyTorch).

The steps, each in its own module: :mod:`ecgfast.export.tracing` makes one eager copy of
the encoder and traces it with ``torch.export`` in the layout the file runs in (2-D by
default); the folds of :mod:`ecgfast.export.passes` clean the trace up (constants, Pad
into Conv); :func:`_finish` names the interface axes and writes the ecgfast metadata;
:mod:`ecgfast.export.verify` compares the file with the same eager copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx

from ecgfast.export.card import export_metadata
from ecgfast.export.metadata import (
    META_CONFIG,
    META_LAYOUT,
    META_LEADS,
    META_MIN_LENGTH,
    META_VERSION,
    doc_string,
    write_metadata,
)
from ecgfast.export.passes import fold_constants, fold_pad_into_conv
from ecgfast.export.tracing import LAYOUTS, eager_copy, trace
from ecgfast.export.verify import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_LENGTHS,
    DEFAULT_TOLERANCE,
    VerificationReport,
    check_verify_args,
    require_parity,
    verify_onnx,
)
from ecgfast.models import ECGEncoder

#: Node metadata the exporter writes that records the exporting machine's source files.
SOURCE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


def _finish(model: onnx.ModelProto, encoder: ECGEncoder, layout: str,
            provenance: dict[str, str]) -> onnx.ModelProto:
    g = model.graph
    del g.value_info[:]
    # readable, stable dim names on the interface
    for vi, names in ((g.input[0], ("batch", None, "length")), (g.output[0], ("batch", None))):
        for dim, name in zip(vi.type.tensor_type.shape.dim, names):
            if name is not None:
                dim.Clear()
                dim.dim_param = name
    # drop exporter-specific metadata on the interface; keep the model's own
    for vi in (*g.input, *g.output):
        del vi.metadata_props[:]
    # and the per-node source records: the Python stack trace and FX node of the export
    # name files by absolute path (where ecgfast was installed, on the exporting machine)
    # and change with every edit of the source; the module scopes stay (profilers read them)
    for node in g.node:
        kept = [p for p in node.metadata_props if p.key not in SOURCE_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    from ecgfast import __version__

    meta = {
        META_CONFIG: json.dumps(encoder.config.to_dict(), sort_keys=True),
        META_MIN_LENGTH: str(encoder.min_length),
        META_LAYOUT: layout,
        META_VERSION: __version__,
    }
    if encoder.config.leads is not None:
        meta[META_LEADS] = json.dumps(list(encoder.config.leads))
    meta.update(provenance)  # the pre-processing contract and the model card
    del model.metadata_props[:]
    write_metadata(model, meta)
    model.doc_string = doc_string(encoder.config.in_channels, encoder.embedding_dim)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def build_onnx(
    model_or_checkpoint, *, opset: int = 18, layout: str = "2d", _optimize: bool = True,
    preprocessing=None, probe_results=None,
) -> onnx.ModelProto:
    """Trace the eager graph of an encoder into an in-memory ONNX model (no checks).

    Same arguments as :func:`export_onnx`; ``_optimize=False`` skips onnxscript's graph
    optimizer (for tests of this module's own rewrites).
    """
    _check_build_args(opset, layout)
    encoder = eager_copy(model_or_checkpoint)
    provenance = export_metadata(model_or_checkpoint, encoder, preprocessing=preprocessing,
                                 probe_results=probe_results)
    return _build(encoder, opset, layout, provenance, _optimize)


def _check_build_args(opset, layout) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 18 <= opset <= 23:
        raise ValueError(f"opset must be an int in [18, 23], got {opset!r}")


def _build(encoder: ECGEncoder, opset: int, layout: str, provenance: dict[str, str],
           optimize: bool = True) -> onnx.ModelProto:
    """:func:`build_onnx` of an :func:`eager_copy` (arguments checked), with the
    ``provenance`` entries (:func:`ecgfast.export.card.export_metadata`) in its metadata."""
    model = fold_pad_into_conv(fold_constants(trace(encoder, layout, opset, optimize)))
    return _finish(model, encoder, layout, provenance)


def export_onnx(
    model_or_checkpoint,
    path: str | os.PathLike,
    *,
    opset: int = 18,
    layout: str = "2d",
    verify: bool = True,
    batch_sizes=DEFAULT_BATCH_SIZES,
    lengths=DEFAULT_LENGTHS,
    rel_tolerance: float = DEFAULT_TOLERANCE,
    print_report: bool = True,
    preprocessing=None,
    probe_results=None,
) -> VerificationReport | None:
    """Export an encoder to ONNX at ``path``, then check and compare it.

    Args:
        model_or_checkpoint: an :class:`~ecgfast.models.ECGEncoder` (any backend, any
            mode) or a checkpoint directory (read with
            :func:`ecgfast.training.load_encoder`). An eval-mode ``backend="eager"``
            copy on the CPU in float32 is traced; the argument is not modified.
        path: the .onnx file to write (parent folders are created).
        opset: ONNX opset, 18 to 23 (default 18).
        layout: "2d" (default; 1-D ops as height-1 2-D ops, fast in onnxruntime) or "1d".
        verify: run :func:`verify_onnx` after writing (onnx.checker + onnxruntime vs
            PyTorch at every ``batch_sizes`` x ``lengths``).
        rel_tolerance: allowed max abs error as a fraction of max |torch output|.
        print_report: print the verification table.
        preprocessing: the :class:`~ecgfast.data.contract.Preprocessing` the encoder was
            trained with, recorded in the file (default: a checkpoint's own record; none
            for an encoder): serving applies it (:mod:`ecgfast.export.card`).
        probe_results: a JSON file of ``ecgfast evaluate --out`` for the model card
            embedded in the file (default: the run's demo results, if any).

    Returns:
        The :class:`VerificationReport`, or None when ``verify`` is False.

    Raises:
        ParityError: onnxruntime disagrees with PyTorch beyond the tolerance (the file is
            kept for inspection; the message names it).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"export_onnx: path {path} is a directory, expected a .onnx file")
    _check_build_args(opset, layout)
    encoder = eager_copy(model_or_checkpoint)
    if verify:
        check_verify_args(batch_sizes, lengths, rel_tolerance, encoder.min_length)
    provenance = export_metadata(model_or_checkpoint, encoder, preprocessing=preprocessing,
                                 probe_results=probe_results)
    model = _build(encoder, opset, layout, provenance)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    if not verify:
        return None
    report = verify_onnx(
        path, encoder, batch_sizes=batch_sizes, lengths=lengths, rel_tolerance=rel_tolerance
    )
    if print_report:
        print(report.format())
    require_parity(report)
    return report
