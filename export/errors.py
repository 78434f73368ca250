"""The errors ecgfast.export raises for its own reasons; each message names the file."""


class OnnxExportError(RuntimeError):
    """Export or its verification failed; the message names the file."""


class ParityError(OnnxExportError):
    """onnxruntime and PyTorch disagree by more than the tolerance."""


class OnnxModelError(ValueError):
    """The file is not an ONNX encoder this runtime can run; the message names the file."""
