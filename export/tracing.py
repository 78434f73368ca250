"""Tracing: the encoder as PyTorch's ``torch.export``-based ONNX exporter sees it.

:func:`eager_copy` makes the copy that is traced: eval mode, CPU, float32,
``backend="eager"`` (whatever backend the model or checkpoint was trained with), so the
file holds only standard ONNX ops (Conv, Relu/LeakyRelu, ReduceMean, Gemm, Sigmoid, Mul,
Add, MaxPool, ReduceMax). :func:`trace` exports it with a dynamic batch axis and a dynamic
length axis: input ``ecg`` (batch, C, length) float32 with C = ``config.in_channels`` leads
(a fixed axis), output ``embedding`` (batch, 128) float32. ``torch.export`` specialises
the length axis of ``F.max_pool1d`` to the example length (seen with PyTorch 2.13), so the
trace runs with max_pool1d written as a (1, k) max_pool2d, which
:func:`ecgfast.export.passes.fold_max_pool_2d` folds back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import onnx
import torch
from ecgfast.export.errors import OnnxExportError
from ecgfast.export.metadata import INPUT_NAME, OUTPUT_NAME
from ecgfast.export.passes._graph import opset_of

from ecgfast.models import ECGEncoder


def eager_copy(model_or_checkpoint) -> ECGEncoder:
    """An eval-mode, CPU, float32, backend="eager" copy of the encoder."""
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        path = Path(model_or_checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"export_onnx: checkpoint {path} does not exist")
        from ecgfast.training import load_encoder

        model = load_encoder(path)
    elif isinstance(model_or_checkpoint, ECGEncoder):
        model = model_or_checkpoint
    else:
        raise TypeError(
            "export_onnx: model_or_checkpoint must be an ECGEncoder or a checkpoint directory "
            f"path, got {type(model_or_checkpoint).__name__}"
        )
    eager = ECGEncoder(model.config.replace(backend="eager"))
    state = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    eager.load_state_dict(state)
    return eager.eval()


def _max_pool1d_as_2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
):
    """F.max_pool1d written as a (1, k) max_pool2d; identical values (see the module doc)."""
    if return_indices:
        raise NotImplementedError("max_pool1d with return_indices is not exported")

    def one(v):
        return v[0] if isinstance(v, (tuple, list)) else v

    k = one(kernel_size)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and not stride) else one(stride)
    return torch.nn.functional.max_pool2d(
        input.unsqueeze(-2), (1, k), (1, s), (0, one(padding)), (1, one(dilation)), ceil_mode
    ).squeeze(-2)


@contextlib.contextmanager
def _traceable_max_pool1d():
    original = torch.nn.functional.max_pool1d
    torch.nn.functional.max_pool1d = _max_pool1d_as_2d
    try:
        yield
    finally:
        torch.nn.functional.max_pool1d = original


def trace(model: ECGEncoder, opset: int, optimize: bool = True) -> onnx.ModelProto:
    example = torch.randn(2, model.config.in_channels, 2 * model.min_length + 64)
    batch = torch.export.Dim("batch", min=1)
    length = torch.export.Dim("length", min=model.min_length)
    log = io.StringIO()
    torch_onnx_logger = logging.getLogger("torch.onnx")
    level = torch_onnx_logger.level
    try:
        with (
            _traceable_max_pool1d(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(log),
        ):
            warnings.simplefilter("ignore")
            torch_onnx_logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
            program = torch.onnx.export(
                model,
                (example,),
                None,
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch, 2: length},),
                optimize=optimize,
                verbose=False,
            )
    except ImportError as err:
        raise OnnxExportError(
            f"export_onnx needs the onnxscript package for torch.onnx.export(dynamo=True): {err}"
        ) from err
    finally:
        torch_onnx_logger.setLevel(level)
    if program is None:  # pragma: no cover - depends on the torch version
        raise OnnxExportError("torch.onnx.export(dynamo=True) returned no program")
    proto = program.model_proto
    got = opset_of(proto)
    if got != opset:  # pragma: no cover - depends on the torch/onnxscript versions
        raise OnnxExportError(f"asked for opset {opset}, the exporter produced opset {got}")
    return proto
