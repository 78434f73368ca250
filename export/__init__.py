"""ONNX export and onnxruntime inference (installed as ``ecgfast.export``).

- :func:`export_onnx`: trace the eager encoder into an ONNX file with dynamic batch and
  length axes, then check it (onnx.checker, onnxruntime vs PyTorch); :func:`verify_onnx`
  runs the check alone.
- :class:`OnnxEncoder`: run the file with onnxruntime (CUDA with I/O binding when a GPU
  is usable, else the CPU).
- :func:`quantize_onnx`: static INT8 (QDQ, per-channel weights) calibrated on windows.
"""

from ecgfast.export.onnx_export import (
    OnnxExportError,
    ParityError,
    ParityRow,
    VerificationReport,
    build_onnx,
    export_onnx,
    verify_onnx,
)
from ecgfast.export.quantize import (
    QuantizationReport,
    compare_probe_accuracy,
    fp32_tail_nodes,
    linear_probe_accuracy,
    quantize_onnx,
)
from ecgfast.export.runtime import OnnxEncoder, OnnxModelError, cuda_usable

__all__ = [
    "OnnxEncoder",
    "OnnxExportError",
    "OnnxModelError",
    "ParityError",
    "ParityRow",
    "QuantizationReport",
    "VerificationReport",
    "build_onnx",
    "compare_probe_accuracy",
    "cuda_usable",
    "export_onnx",
    "fp32_tail_nodes",
    "linear_probe_accuracy",
    "quantize_onnx",
    "verify_onnx",
]
