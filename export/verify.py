"""Verification: onnx.checker, then onnxruntime against PyTorch eager on random inputs.

:func:`verify_onnx` writes one :class:`ParityRow` per (batch, length) into a
:class:`VerificationReport`; :func:`require_parity` turns a failed report into a
:class:`~ecgfast.export.ParityError`, which :func:`ecgfast.export.export_onnx` raises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from ecgfast.export.errors import OnnxExportError, ParityError
from ecgfast.export.runtime import OnnxEncoder
from ecgfast.export.tracing import eager_copy

DEFAULT_BATCH_SIZES = (1, 7, 64)
DEFAULT_LENGTHS = (2560, 4000)
DEFAULT_TOLERANCE = 1e-4


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
    max abs error as a fraction of the output scale (max |torch output| of that row). A
    report exists only for a file that onnx.checker accepted (:func:`verify_onnx` raises
    otherwise).
    """

    path: Path
    rel_tolerance: float
    provider: str
    rows: list[ParityRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def max_relative_error(self) -> float:
        return max((r.relative_error for r in self.rows), default=0.0)

    def format(self) -> str:
        lines = [
            (
                f"{self.path}: onnx.checker ok; "
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

    __str__ = format


def check_verify_args(batch_sizes, lengths, rel_tolerance, min_length: int = 1) -> None:
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verify_onnx: {path} does not exist")
    encoder = eager_copy(model_or_checkpoint)
    check_verify_args(batch_sizes, lengths, rel_tolerance, encoder.min_length)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:
        raise OnnxExportError(f"{path}: onnx.checker rejected the model: {err}") from err
    runtime = OnnxEncoder(path, providers="cpu")
    report = VerificationReport(path, rel_tolerance, runtime.provider)
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


def require_parity(report: VerificationReport) -> None:
    """Raise :class:`~ecgfast.export.ParityError` (naming the file, with the table) unless
    every row of ``report`` is within its tolerance."""
    if not report.ok:
        raise ParityError(
            f"{report.path}: onnxruntime output differs from PyTorch by up to "
            f"{report.max_relative_error:.3g} x the output scale (bound "
            f"{report.rel_tolerance:g})\n" + report.format()
        )
