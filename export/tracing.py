"""Tracing: the encoder written in the layout its ONNX file runs in, as ``torch.export`` sees it.

:func:`eager_copy` makes the one copy of the encoder an export works from: eval mode, CPU,
float32, ``backend="eager"`` (whatever backend the model or checkpoint was trained with);
it is also what the file is verified against. :class:`LayoutEncoder` computes that
copy's maths in the layout the file will run in, on its tensors (views, no second copy):

- ``"2d"``: every 1-D op as a height-1 2-D op on (batch, C, 1, length): Conv with (1, K)
  kernels and the 'same' padding in its ``pads``, MaxPool (1, k), the squeeze-excitation
  mean over time a GlobalAveragePool, the global max a ReduceMax over (1, length).
  onnxruntime's CPU provider runs 2-D convs in its blocked NCHWc layout with
  direct-convolution kernels and the activation fused in, but 1-D convs through its
  generic NCHW path; and its INT8 (QDQ) path has a uint8 GlobalAveragePool in the
  channels-last layout of its INT8 convs, where a ReduceMean costs a dequantization and a
  transpose of the whole block output (benchmarks/bench_inference.py measures both
  layouts).
- ``"1d"``: the eager graph on (batch, C, length). Its max pool is written as
  ``max_pool1d(..., return_indices=True)[0]``: ``torch.export`` specialises the length
  axis of plain ``F.max_pool1d`` to the example length (seen with PyTorch 2.13 and 2.14),
  not that of the pool with indices, whose unused indices the exporter drops.

:func:`trace` exports a :class:`LayoutEncoder` with a dynamic batch axis and a dynamic
length axis: input ``ecg`` (batch, C, length) float32 with C = ``config.in_channels``
leads (a fixed axis), output ``embedding`` (batch, 128) float32. The file holds only
standard ONNX ops; its initializers carry the encoder's ``state_dict`` names.
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
import torch.nn.functional as F

from ecgfast.export.errors import OnnxExportError
from ecgfast.export.metadata import INPUT_NAME, OUTPUT_NAME
from ecgfast.export.passes._graph import opset_of
from ecgfast.models import ECGEncoder
from ecgfast.ops.encoder_block import BlockParams, BlockSpec, activation, se_excite

LAYOUTS = ("2d", "1d")
#: The ``state_dict`` key (within a block) of each :class:`BlockParams` field.
_STATE_KEYS = tuple(f.replace("se_fc", "se.fc").replace("_weight", ".weight")
                    .replace("_bias", ".bias") for f in BlockParams._fields)



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


class LayoutEncoder(torch.nn.Module):
    """``encoder``'s maths (an :func:`eager_copy`) in ``layout`` ("2d" or "1d"), for tracing.

    Forward takes (batch, C, length) and returns (batch, embedding_dim) like the encoder;
    ``blocks`` are :class:`LayoutBlock` of the encoder's blocks, so the module scopes in the
    file name the blocks as the encoder's own do.
    """

    def __init__(self, encoder: ECGEncoder, layout: str):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.two_d = layout == "2d"
        self.blocks = torch.nn.ModuleList(LayoutBlock(b, self.two_d) for b in encoder.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.two_d:
            x = x.unsqueeze(2)
        for block in self.blocks:
            x = block(x)
        return x


class LayoutBlock(torch.nn.Module):
    """One :class:`~ecgfast.layers.EncoderBlock`'s maths in the 2-D or the 1-D layout.

    Holds the block's tensors under their ``state_dict`` names (the 3-D conv weights viewed
    as (C_out, C_in, 1, K) in the 2-D layout: no copy) and its spec.
    """

    def __init__(self, block, two_d: bool):
        super().__init__()
        self.spec: BlockSpec = block.spec
        self.two_d = two_d
        for name, tensor in block.state_dict(keep_vars=True).items():
            tensor = tensor.detach()
            if two_d and tensor.dim() == 3:  # a conv weight (C_out, C_in, K)
                tensor = tensor.unsqueeze(2)
            *path, leaf = name.split(".")
            holder = self
            for part in path:
                if not hasattr(holder, part):
                    holder.add_module(part, torch.nn.Module())
                holder = getattr(holder, part)
            holder.register_buffer(leaf, tensor)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        """Stride 1, 'same' padding (the extra zero of an even K on the right)."""
        k = weight.shape[-1]
        x = F.pad(x, ((k - 1) // 2, k - 1 - (k - 1) // 2))
        return (F.conv2d if self.two_d else F.conv1d)(x, weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tensors = dict(self.named_buffers())
        p = BlockParams(*(tensors.get(key) for key in _STATE_KEYS))
        spec = self.spec

        def act(t):
            return activation(t, spec.activation, spec.negative_slope)

        h = act(self._conv(x, p.conv1_weight, p.conv1_bias))
        f = act(self._conv(h, p.conv2_weight, p.conv2_bias))
        y = f
        if p.se is not None:  # the mean over (1, length): a GlobalAveragePool in the file
            s = F.adaptive_avg_pool2d(f, 1).flatten(1) if self.two_d else f.mean(dim=-1)
            a = se_excite(s, *p.se)
            y = f * (a[:, :, None, None] if self.two_d else a[:, :, None])
        if spec.residual:
            y = y + (x if p.shortcut_weight is None
                     else self._conv(x, p.shortcut_weight, p.shortcut_bias))
        if spec.pool_size is None:
            return y.amax(dim=(2, 3) if self.two_d else -1)
        if self.two_d:
            return F.max_pool2d(y, (1, spec.pool_size), (1, spec.pool_stride))
        return F.max_pool1d(y, spec.pool_size, spec.pool_stride, return_indices=True)[0]


def _global_average_pool(x, output_size):
    """``adaptive_avg_pool2d(x, 1)`` as ONNX's GlobalAveragePool (the exporter's own
    translation is a ReduceMean); :class:`LayoutBlock` asks for no other output size."""
    from onnxscript import opset18 as onnx_op  # the exporter's own dependency

    if list(output_size) != [1, 1]:
        raise NotImplementedError(f"adaptive_avg_pool2d to {output_size} is not exported")
    return onnx_op.GlobalAveragePool(x)


#: The exporter's translations replaced, for onnxruntime's fastest 2-D ops.
_TRANSLATIONS = {torch.ops.aten.adaptive_avg_pool2d.default: _global_average_pool}


def trace(encoder: ECGEncoder, layout: str, opset: int, optimize: bool = True
          ) -> onnx.ModelProto:
    """The ONNX graph of ``encoder`` (an :func:`eager_copy`) in ``layout``."""
    model = LayoutEncoder(encoder, layout).eval()
    example = torch.randn(2, encoder.config.in_channels, 2 * encoder.min_length + 64)
    batch = torch.export.Dim("batch", min=1)
    length = torch.export.Dim("length", min=encoder.min_length)
    log = io.StringIO()
    torch_onnx_logger = logging.getLogger("torch.onnx")
    level = torch_onnx_logger.level
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
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
                custom_translation_table=_TRANSLATIONS,
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
