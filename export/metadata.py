"""What an exported file promises its readers: tensor names and the ecgfast metadata keys.

:func:`ecgfast.export.export_onnx` writes the ``META_*`` entries into the model's
``metadata_props``; :class:`ecgfast.export.OnnxEncoder` reads them back and
:func:`ecgfast.export.quantize_onnx` carries them over to the INT8 file, adding
:data:`META_QUANTIZATION`. The values are strings, as ONNX stores them. No PyTorch here:
the runtime imports this module.
"""

from __future__ import annotations

import onnx

INPUT_NAME = "ecg"  # (batch, leads, length) float32; leads = EncoderConfig.in_channels
OUTPUT_NAME = "embedding"  # (batch, D) float32


def doc_string(leads: int, dim: int) -> str:
    """The model's doc string: its interface in one line."""
    return (f"ecgfast ECGEncoder: input '{INPUT_NAME}' (batch, {leads}, length) float32 -> "
            f"'{OUTPUT_NAME}' (batch, {dim}) float32")


META_CONFIG = "ecgfast.encoder_config"  # json of EncoderConfig.to_dict(), sorted keys
META_MIN_LENGTH = "ecgfast.min_length"  # shortest accepted input, in samples
META_LEADS = "ecgfast.leads"  # json list of the input's lead names (files whose leads have names)
META_LAYOUT = "ecgfast.layout"  # "2d" or "1d" (ecgfast.export.tracing.LAYOUTS)
META_VERSION = "ecgfast.version"  # ecgfast.__version__ of the exporter
META_QUANTIZATION = "ecgfast.quantization"  # INT8 files only
META_PREPROCESSING = "ecgfast.preprocessing"  # json record of ecgfast.data.contract (+ leads)
META_CARD = "ecgfast.model_card"  # json of the model card (ecgfast.export.card)
INT8_QDQ_PER_CHANNEL = "int8-qdq-per-channel"  # the value quantize_onnx writes

# a file without a readable META_MIN_LENGTH (not ours, or edited) accepts any length
DEFAULT_MIN_LENGTH = 1


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's ``metadata_props`` as a dict (a repeated key: its last value)."""
    return {p.key: p.value for p in model.metadata_props}


def write_metadata(
    model: onnx.ModelProto, entries: dict[str, str], *, keep_existing: bool = False
) -> None:
    """Set ``entries`` in the model's ``metadata_props``, in order; a key the model has
    already keeps its value when ``keep_existing``, else takes the new one."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in entries.items():
        if key not in existing:
            existing[key] = model.metadata_props.add(key=key, value=value)
        elif not keep_existing:
            existing[key].value = value


def min_length_of(metadata: dict[str, str]) -> int:
    """:data:`META_MIN_LENGTH` as an int; :data:`DEFAULT_MIN_LENGTH` when absent, not an
    integer or below it."""
    try:
        value = int(metadata.get(META_MIN_LENGTH, DEFAULT_MIN_LENGTH))
    except ValueError:
        return DEFAULT_MIN_LENGTH
    return max(value, DEFAULT_MIN_LENGTH)
