"""ONNX export and onnxruntime inference (installed as ``ecgfast.export``).

- :func:`export_onnx`: trace the eager encoder into an ONNX file with dynamic batch and
  length axes, then check it (onnx.checker, onnxruntime vs PyTorch); :func:`verify_onnx`
  runs the check alone.
- :class:`OnnxEncoder`: run the file with onnxruntime (CUDA with I/O binding when a GPU
  is usable, else the CPU).
- :func:`quantize_onnx`: static INT8 (QDQ, per-channel weights) calibrated on windows.

Modules, one job each: ``tracing`` (the eager copy and the ``torch.export`` trace),
``passes`` (every graph rewrite), ``onnx_export`` (trace + passes + metadata -> file),
``verify`` (the parity check), ``runtime`` (:class:`OnnxEncoder`), ``quantize`` (INT8
quantization) and ``quantize_report`` (INT8 measured against fp32), ``metadata`` (the
file's interface names and metadata keys), ``errors``, ``embed`` (a whole recording
through an encoder). The probe statistics live in :mod:`ecgfast.evaluation`.
"""

from ecgfast.export.errors import OnnxExportError, OnnxModelError, ParityError
from ecgfast.export.onnx_export import build_onnx, export_onnx
from ecgfast.export.quantize import fp32_tail_nodes, quantize_onnx
from ecgfast.export.quantize_report import QuantizationReport
from ecgfast.export.runtime import OnnxEncoder, cuda_usable
from ecgfast.export.verify import ParityRow, VerificationReport, verify_onnx

__all__ = [
    "OnnxEncoder",
    "OnnxExportError",
    "OnnxModelError",
    "ParityError",
    "ParityRow",
    "QuantizationReport",
    "VerificationReport",
    "build_onnx",
    "cuda_usable",
    "export_onnx",
    "fp32_tail_nodes",
    "quantize_onnx",
    "verify_onnx",
]
