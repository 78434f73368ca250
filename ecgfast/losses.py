"""Self-supervised losses, each usable on its own in any training loop.

- :func:`nt_xent` / :class:`NTXentLoss`: SimCLR's normalised temperature-scaled cross
  entropy over two views (formula in :func:`ecgfast.ops.nt_xent_reference`).
- :func:`transformation_recognition_loss` / :class:`TransformationRecognitionLoss`:
  the SSL-ECG pretext loss, a weighted sum of one binary cross entropy per version.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ecgfast import dispatch
from ecgfast.precision import op_precision

#: Loss weight of each SSL-ECG head, in the order of ``ecgfast.transforms.TRANSFORM_NAMES``
#: (original, noise, scale, negate, flip, permute, time_warp), as in the original code.
SSL_ECG_TASK_WEIGHTS = (0.195, 0.195, 0.195, 0.0125, 0.0125, 0.195, 0.195)


def _check_temperature(temperature) -> float:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature > 0):
        raise ValueError(f"nt_xent: temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _check_embeddings(z1: torch.Tensor, z2: torch.Tensor, check_finite: bool) -> None:
    """The one check of NT-Xent's inputs (metadata only, unless ``check_finite``)."""
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"nt_xent: {name} must be a torch.Tensor, got {type(z).__name__}")
        if z.dim() != 2:
            raise ValueError(f"nt_xent: {name} must be (N, D), got shape {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"nt_xent: {name} must be floating point, got {z.dtype}")
        if z.shape[0] < 1 or z.shape[1] < 1:
            raise ValueError(f"nt_xent: {name} must have N >= 1 and D >= 1, got {tuple(z.shape)}")
    if z1.shape != z2.shape:
        raise ValueError(
            f"nt_xent: z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.device != z2.device:
        raise ValueError(f"nt_xent: z1 is on {z1.device} but z2 is on {z2.device}")
    if check_finite:  # reads every value back to the host: a debugging aid, off by default
        for name, z in (("z1", z1), ("z2", z2)):
            if not bool(torch.isfinite(z).all()):
                raise ValueError(f"nt_xent: {name} contains NaN or Inf values")


def _nt_xent(z1, z2, temperature: float, backend: str, gather_distributed: bool,
             check_finite: bool) -> torch.Tensor:
    """:func:`nt_xent` with its settings already checked (``NTXentLoss`` checks them once)."""
    _check_embeddings(z1, z2, check_finite)
    shard = None
    if gather_distributed:
        from ecgfast.distributed import is_distributed
        from ecgfast.ops.nt_xent_distributed import RowShard

        if is_distributed():
            shard = RowShard.of_process_group(z1.shape[0], z1.device)
    with op_precision("nt_xent", z1, z2) as (a, b):
        return dispatch.nt_xent(a, b, temperature, backend, shard)


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    *,
    backend: str = "auto",
    gather_distributed: bool = False,
    check_finite: bool = False,
) -> torch.Tensor:
    """NT-Xent loss of two views.

    Args:
        z1, z2: (N, D) embeddings (projection-head outputs) of the two views; row i of
            each is a positive pair. Any floating dtype; normalised inside.
        temperature: tau > 0.
        backend: "auto" | "eager" | "streaming" | "triton" (see :mod:`ecgfast.dispatch`).
        gather_distributed: under an initialised ``torch.distributed`` process group,
            all-gather both views from every rank and return the loss of the whole global
            batch: every rank's embeddings are negatives for every anchor, and the value
            equals one process computing the loss on the concatenated batch. Each rank
            computes only its own anchor rows' terms (1/world_size of the work, see
            :class:`ecgfast.ops.nt_xent_distributed.RowShard`). With
            DistributedDataParallel (which averages gradients over ranks) the parameter
            gradients are exactly those of that single process. A no-op without a process group.
        check_finite: raise ValueError naming the view if z1 or z2 holds NaN or Inf. Off by
            default: it reads the values back to the host (a device synchronisation on
            every call), and a non-finite loss already shows the problem.

    Returns:
        fp32 (or fp64 for fp64 inputs) scalar, the mean over the 2N rows of
        ``logsumexp_{j != i}(s_ij) - s_{i,pos}`` with ``s = z z^T / tau``.

    Only the shapes, dtypes and devices of z1 and z2 are checked, never their values
    (unless ``check_finite``), so the call runs on ``device="meta"`` tensors too.
    """
    temperature = _check_temperature(temperature)
    return _nt_xent(z1, z2, temperature, backend, gather_distributed, check_finite)


class NTXentLoss(nn.Module):
    """Module form of :func:`nt_xent`: ``NTXentLoss(0.5)(z1, z2)``.

    The settings are checked once, here; each call checks only its tensors. No parameters
    or buffers (an objective holding one has the same ``state_dict`` keys without it).
    """

    def __init__(
        self, temperature: float = 0.5, *, backend: str = "auto", gather_distributed: bool = False,
        check_finite: bool = False,
    ):
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.backend = dispatch.check_backend("nt_xent", backend)
        self.gather_distributed = bool(gather_distributed)
        self.check_finite = bool(check_finite)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return _nt_xent(z1, z2, self.temperature, self.backend, self.gather_distributed,
                        self.check_finite)

    def extra_repr(self) -> str:
        debug = ", check_finite=True" if self.check_finite else ""
        return (
            f"temperature={self.temperature}, backend={self.backend!r}, "
            f"gather_distributed={self.gather_distributed}{debug}"
        )


def transformation_recognition_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: Sequence[float] = SSL_ECG_TASK_WEIGHTS,
) -> torch.Tensor:
    """Weighted sum over heads of the binary cross entropy "is this version k?".

    Args:
        logits: (B, K) outputs of :class:`ecgfast.models.TransformationHeads`.
        labels: (B,) integer version index in [0, K).
        weights: K loss weights (default: the SSL-ECG weights).

    Returns:
        Scalar ``sum_k w_k * mean_b BCE(logits[b, k], labels[b] == k)``.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, K), got shape {tuple(logits.shape)}")
    k = logits.shape[1]
    if len(weights) != k:
        raise ValueError(f"weights has {len(weights)} entries but logits has {k} heads")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must be ({logits.shape[0]},), got shape {tuple(labels.shape)}")
    with op_precision("transformation_recognition_loss", logits) as (scores,):
        targets = F.one_hot(labels.long(), k).to(scores.dtype)
        per_head = F.binary_cross_entropy_with_logits(scores, targets,
                                                      reduction="none").mean(dim=0)
    if isinstance(weights, torch.Tensor):
        w = torch.as_tensor(weights, dtype=per_head.dtype, device=per_head.device)
    else:  # filled on the device from scalars: a blocking host-to-device copy (what
        # torch.as_tensor of a sequence does) waits for the device stream on every call
        w = torch.stack([per_head.new_full((), float(v)) for v in weights])
    return (per_head * w).sum()


class TransformationRecognitionLoss(nn.Module):
    """Module form of :func:`transformation_recognition_loss`."""

    def __init__(self, weights: Sequence[float] = SSL_ECG_TASK_WEIGHTS):
        super().__init__()
        self.weights = tuple(float(w) for w in weights)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return transformation_recognition_loss(logits, labels, self.weights)
