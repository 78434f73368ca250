"""ONNX export and onnxruntime inference (installed as ``ecgfast.export``).

- :func:`export_onnx`: trace the eager encoder into an ONNX file with dynamic batch and
  length axes, then check it (onnx.checker, onnxruntime vs PyTorch); :func:`verify_onnx`
  runs the check alone.
- :class:`OnnxEncoder`: run the file with onnxruntime (CUDA with I/O binding when a GPU
  is usable, else the CPU).
- :func:`quantize_onnx`: static INT8 (QDQ, per-channel weights) calibrated on windows.

Modules, one job each: ``tracing`` (the eager copy and the ``torch.export`` trace),
``passes`` (every graph rewrite), ``onnx_export`` (trace + passes + metadata -> file),
``verify`` (the parity check), ``runtime`` (:class:`OnnxEncoder`) and ``providers`` (its
execution providers' options), ``quantize`` (INT8 quantization) and ``quantize_report``
(INT8 measured against fp32), ``metadata`` (the file's interface names and metadata
keys), ``card`` (the model card and the pre-processing contract in the metadata),
``errors``, ``embed`` (a whole recording through an encoder, with the model's own
pre-processing). The probe statistics live in :mod:`ecgfast.evaluation`.
"""

# Every name is imported on first use (PEP 562), so that ``from ecgfast.export import
# OnnxEncoder`` loads onnxruntime and numpy but never PyTorch: the torch-using modules
# (onnx_export, verify, quantize) load only when their names are.
from ecgfast.lazy import lazy_names

_WHERE = {
    "OnnxExportError": "ecgfast.export.errors",
    "OnnxModelError": "ecgfast.export.errors",
    "ParityError": "ecgfast.export.errors",
    "OnnxEncoder": "ecgfast.export.runtime",
    "cuda_usable": "ecgfast.export.runtime",
    "build_onnx": "ecgfast.export.onnx_export",
    "export_onnx": "ecgfast.export.onnx_export",
    "fp32_tail_nodes": "ecgfast.export.quantize",
    "quantize_onnx": "ecgfast.export.quantize",
    "QuantizationReport": "ecgfast.export.quantize_report",
    "ParityRow": "ecgfast.export.verify",
    "VerificationReport": "ecgfast.export.verify",
    "verify_onnx": "ecgfast.export.verify",
}

__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
