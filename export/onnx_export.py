"""Export the encoder to ONNX and check the file against PyTorch.

:func:`export_onnx` traces the *eager* graph of an :class:`~ecgfast.models.ECGEncoder`
(whatever backend the model or checkpoint was trained with) with PyTorch's
``torch.export``-based ONNX exporter, so the file holds only standard ONNX ops
(Conv, Relu/LeakyRelu, ReduceMean, Gemm, Sigmoid, Mul, Add, MaxPool, ReduceMax), with a
dynamic batch axis and a dynamic length axis: input ``ecg`` (batch, 1, length) float32,
output ``embedding`` (batch, 128) float32.

Rewrites follow the trace; all keep the maths and all are checked by the parity run that
ends every export:

1. ``torch.export`` specialises the length axis of ``F.max_pool1d`` to the example
   length (seen with PyTorch 2.13), so the trace runs with max_pool1d written as a (1, k)
   max_pool2d and the resulting Unsqueeze -> MaxPool(1, k) -> Squeeze is folded back into
   a 1-D MaxPool afterwards.
2. The 'same' padding of the even kernels (F.pad + conv1d in the eager maths) becomes the
   Conv's own asymmetric ``pads`` attribute (onnxscript's optimizer does this; a pass here
   does it too, with constant folding, so the result does not depend on it): no Pad node.
3. ``layout="2d"`` (the default) writes every 1-D op on a (batch, C, 1, length) tensor:
   a Conv with kernel (1, K), a MaxPool with (1, k), reductions over (1, length), and the
   squeeze-excitation mean over time a GlobalAveragePool. The arithmetic is the same; the
   point is that onnxruntime's CPU provider runs 2-D convs in its blocked NCHWc layout
   with direct-convolution kernels and the activation fused in, while it runs 1-D convs
   through its generic NCHW path; and that its INT8 (QDQ) path has a uint8
   GlobalAveragePool in the channels-last layout of its INT8 convs, where a ReduceMean
   costs a dequantization and a transpose of the whole block output (7 % of the INT8
   model's time). ``layout="1d"`` keeps the graph as traced. (benchmarks/bench_inference.py
   measures both.)
4. :func:`fold_rows` rewrites block 1's two convolutions to run on the signal folded
   into two rows: onnxruntime splits an NCHWc convolution's work by 32-channel filter
   set and output row, so block 1's 32-channel convolutions on one row run on one thread
   at batch 1. :class:`ecgfast.export.OnnxEncoder` uses a folded copy for small batches;
   the file keeps the plain graph.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from ecgfast.export.passes import (
    CannotLift,
    fold_constants,
    fold_max_pool_2d,
    fold_pad_into_conv,
    lift_to_2d,
)
from ecgfast.models import ECGEncoder

INPUT_NAME = "ecg"
OUTPUT_NAME = "embedding"
DEFAULT_BATCH_SIZES = (1, 7, 64)
DEFAULT_LENGTHS = (2560, 4000)
DEFAULT_TOLERANCE = 1e-4
LAYOUTS = ("2d", "1d")

# metadata_props keys written into every exported file (read back by OnnxEncoder)
META_CONFIG = "ecgfast.encoder_config"
META_MIN_LENGTH = "ecgfast.min_length"
META_LAYOUT = "ecgfast.layout"
META_VERSION = "ecgfast.version"


class OnnxExportError(RuntimeError):
    """Export or its verification failed; the message names the file."""


class ParityError(OnnxExportError):
    """onnxruntime and PyTorch disagree by more than the tolerance."""


# --------------------------------------------------------------------------- report


@dataclass
class ParityRow:
    """One (batch, length) comparison: errors are max |ort - torch| over the output."""

    batch: int
    length: int
    scale: float  # max |torch output|
    max_abs_error: float
    tolerance: float  # allowed max_abs_error = rel_tolerance * scale

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / self.scale if self.scale > 0 else self.max_abs_error

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.max_abs_error <= self.tolerance


@dataclass
class VerificationReport:
    """What :func:`verify_onnx` found for one file.

    ``rows``: one :class:`ParityRow` per (batch, length); ``rel_tolerance``: the bound on
    max abs error as a fraction of the output scale (max |torch output| of that row).
    """

    path: Path
    rel_tolerance: float
    provider: str
    rows: list[ParityRow] = field(default_factory=list)
    checker_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.checker_ok and all(r.ok for r in self.rows)

    @property
    def max_relative_error(self) -> float:
        return max((r.relative_error for r in self.rows), default=0.0)

    def format(self) -> str:
        lines = [
            (
                f"{self.path}: onnx.checker {'ok' if self.checker_ok else 'FAILED'}; "
                f"onnxruntime ({self.provider}) vs PyTorch eager, bound: max abs error <= "
                f"{self.rel_tolerance:g} x max|torch output|"
            ),
            (
                f"{'batch':>6} {'length':>7} {'max|torch|':>11} {'max abs err':>12} "
                f"{'err/scale':>10}  result"
            ),
        ]
        for r in self.rows:
            lines.append(
                f"{r.batch:>6} {r.length:>7} {r.scale:>11.4g} {r.max_abs_error:>12.3e} "
                f"{r.relative_error:>10.2e}  {'ok' if r.ok else 'FAIL'}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# --------------------------------------------------------------------------- export


def _eager_copy(model_or_checkpoint) -> ECGEncoder:
    """An eval-mode, CPU, float32, backend="eager" copy of the encoder."""
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        path = Path(model_or_checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"export_onnx: checkpoint {path} does not exist")
        from ecgfast.checkpoint import load_encoder

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
    """F.max_pool1d written as a (1, k) max_pool2d; identical values (see module doc)."""
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


def _trace(model: ECGEncoder, opset: int, optimize: bool = True) -> onnx.ModelProto:
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
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:  # pragma: no cover - depends on the torch/onnxscript versions
        raise OnnxExportError(f"asked for opset {opset}, the exporter produced opset {got}")
    return proto


def _finish(model: onnx.ModelProto, encoder: ECGEncoder, layout: str) -> onnx.ModelProto:
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
    from ecgfast import __version__

    meta = {
        META_CONFIG: json.dumps(encoder.config.to_dict(), sort_keys=True),
        META_MIN_LENGTH: str(encoder.min_length),
        META_LAYOUT: layout,
        META_VERSION: __version__,
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    model.doc_string = (
        "ecgfast ECGEncoder: input 'ecg' (batch, 1, length) float32 -> "
        "'embedding' (batch, 128) float32"
    )
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def build_onnx(
    model_or_checkpoint, *, opset: int = 18, layout: str = "2d", _optimize: bool = True
) -> onnx.ModelProto:
    """Trace the eager graph of an encoder into an in-memory ONNX model (no checks).

    Same arguments as :func:`export_onnx`; ``_optimize=False`` skips onnxscript's graph
    optimizer (for tests of this module's own rewrites).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 18 <= opset <= 23:
        raise ValueError(f"opset must be an int in [18, 23], got {opset!r}")
    encoder = _eager_copy(model_or_checkpoint)
    model = fold_pad_into_conv(fold_max_pool_2d(fold_constants(_trace(encoder, opset, _optimize))))
    used_layout = "1d"
    if layout == "2d":
        try:
            model = lift_to_2d(model)
            used_layout = "2d"
        except CannotLift as why:  # pragma: no cover - the encoder's ops all lift
            warnings.warn(f"export_onnx: keeping the 1-D graph ({why})", stacklevel=2)
    return _finish(model, encoder, used_layout)


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
) -> VerificationReport | None:
    """Export an encoder to ONNX at ``path``, then check and compare it.

    Args:
        model_or_checkpoint: an :class:`~ecgfast.models.ECGEncoder` (any backend, any
            mode) or a checkpoint directory (read with
            :func:`ecgfast.checkpoint.load_encoder`). An eval-mode ``backend="eager"``
            copy on the CPU in float32 is traced; the argument is not modified.
        path: the .onnx file to write (parent folders are created).
        opset: ONNX opset, 18 to 23 (default 18).
        layout: "2d" (default; 1-D ops as height-1 2-D ops, fast in onnxruntime) or "1d".
        verify: run :func:`verify_onnx` after writing (onnx.checker + onnxruntime vs
            PyTorch at every ``batch_sizes`` x ``lengths``).
        rel_tolerance: allowed max abs error as a fraction of max |torch output|.
        print_report: print the verification table.

    Returns:
        The :class:`VerificationReport`, or None when ``verify`` is False.

    Raises:
        ParityError: onnxruntime disagrees with PyTorch beyond the tolerance (the file is
            kept for inspection; the message names it).
    """
    path = Path(path)
    if path.exists() and path.is_dir():
        raise IsADirectoryError(f"export_onnx: path {path} is a directory, expected a .onnx file")
    encoder = _eager_copy(model_or_checkpoint)
    if verify:
        _check_verify_args(batch_sizes, lengths, rel_tolerance, encoder.min_length)
    model = build_onnx(encoder, opset=opset, layout=layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    if not verify:
        return None
    report = verify_onnx(
        path, encoder, batch_sizes=batch_sizes, lengths=lengths, rel_tolerance=rel_tolerance
    )
    if print_report:
        print(report.format())
    if not report.ok:
        raise ParityError(
            f"{path}: onnxruntime output differs from PyTorch by up to "
            f"{report.max_relative_error:.3g} x the output scale (bound {rel_tolerance:g})\n"
            + report.format()
        )
    return report


# --------------------------------------------------------------------------- verification


def _check_verify_args(batch_sizes, lengths, rel_tolerance, min_length: int = 1) -> None:
    for name, values in (("batch_sizes", batch_sizes), ("lengths", lengths)):
        values = tuple(values)
        if not values or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
        ):
            raise ValueError(
                f"{name} must be a non-empty sequence of positive ints, got {values!r}"
            )
    if min(lengths) < min_length:
        raise ValueError(
            f"lengths must be >= the encoder's minimum input length {min_length}, got {tuple(lengths)}"
        )
    if not (isinstance(rel_tolerance, (int, float)) and rel_tolerance > 0):
        raise ValueError(f"rel_tolerance must be > 0, got {rel_tolerance!r}")


def verify_onnx(
    path: str | os.PathLike,
    model_or_checkpoint,
    *,
    batch_sizes=DEFAULT_BATCH_SIZES,
    lengths=DEFAULT_LENGTHS,
    rel_tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> VerificationReport:
    """onnx.checker on ``path``, then onnxruntime (CPU) vs PyTorch eager on random inputs.

    For each batch size B and length L the input is N(0, 1) noise of shape (B, 1, L)
    (seeded); the row passes when max |ort - torch| <= rel_tolerance * max |torch|.
    """
    from ecgfast.export.runtime import OnnxEncoder

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verify_onnx: {path} does not exist")
    _check_verify_args(batch_sizes, lengths, rel_tolerance)
    checker_ok = True
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:
        raise OnnxExportError(f"{path}: onnx.checker rejected the model: {err}") from err
    encoder = _eager_copy(model_or_checkpoint)
    _check_verify_args(batch_sizes, lengths, rel_tolerance, encoder.min_length)
    runtime = OnnxEncoder(path, providers="cpu")
    report = VerificationReport(path, rel_tolerance, runtime.provider, checker_ok=checker_ok)
    gen = torch.Generator().manual_seed(seed)
    for length in lengths:
        for batch in batch_sizes:
            x = torch.randn(batch, encoder.config.in_channels, length, generator=gen)
            with torch.inference_mode():
                expected = encoder(x).numpy().astype(np.float64)
            got = runtime.embed(x.numpy()).astype(np.float64)
            scale = float(np.abs(expected).max())
            err = float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
            report.rows.append(ParityRow(batch, length, scale, err, rel_tolerance * scale))
    return report
