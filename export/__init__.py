"""ONNX export and onnxruntime inference (installed as ``ecgfast.export``)."""
