"""Pretraining objectives: an encoder, its heads and a loss, from raw windows to a scalar.

Each objective is an ``nn.Module`` whose ``forward(windows, generator)`` builds its own
views of a batch of windows (B, L), runs the encoder and returns ``(loss, metrics)``.
They are conveniences on top of the standalone pieces in :mod:`ecgfast.transforms`,
:mod:`ecgfast.models` and :mod:`ecgfast.losses`.

- :class:`TransformationRecognition`: SSL-ECG; 7 versions of each window, 7 binary heads.
- :class:`Contrastive`: SimCLR; two augmented views, projection head, NT-Xent.
- :class:`Combined`: ``w_t * transformation + w_c * contrastive``.
"""

from __future__ import annotations

import torch
from torch import nn

from ecgfast.losses import SSL_ECG_TASK_WEIGHTS, nt_xent, transformation_recognition_loss
from ecgfast.models import ECGEncoder, ProjectionHead, TransformationHeads
from ecgfast.transforms import ContrastiveAugment, make_pretext_batch

OBJECTIVES = ("transform", "contrastive", "both")


def _transform_step(encoder, heads, windows, generator, weights):
    inputs, labels = make_pretext_batch(windows, generator=generator)
    logits = heads(encoder(inputs))
    loss = transformation_recognition_loss(logits, labels, weights)
    with torch.no_grad():
        targets = torch.nn.functional.one_hot(labels.long(), logits.shape[1]).bool()
        acc = ((logits > 0) == targets).float().mean()
    return loss, {"transform_loss": loss.detach(), "transform_acc": acc}


def _contrastive_step(encoder, projection, augment, windows, generator, temperature, backend,
                      gather_distributed):
    v1, v2 = augment.two_views(windows, generator=generator)
    n = v1.shape[0]
    z = projection(encoder(torch.cat([v1, v2])))
    kwargs = {"gather_distributed": True} if gather_distributed else {}
    loss = nt_xent(z[:n], z[n:], temperature, backend=backend, **kwargs)
    return loss, {"contrastive_loss": loss.detach()}


def _default_heads(encoder: ECGEncoder) -> TransformationHeads:
    return TransformationHeads(encoder.embedding_dim, activation=encoder.config.activation,
                               negative_slope=encoder.config.negative_slope)


class TransformationRecognition(nn.Module):
    """SSL-ECG pretext task: recognise which of 7 versions a window is.

    Metrics: ``transform_loss`` and ``transform_acc``, the fraction of (window, head)
    binary decisions that are right.
    """

    def __init__(self, encoder: ECGEncoder, heads: TransformationHeads | None = None,
                 weights=SSL_ECG_TASK_WEIGHTS):
        super().__init__()
        self.encoder = encoder
        self.heads = heads if heads is not None else _default_heads(encoder)
        self.weights = tuple(weights)

    def forward(self, windows: torch.Tensor, generator: torch.Generator | None = None):
        return _transform_step(self.encoder, self.heads, windows, generator, self.weights)


class Contrastive(nn.Module):
    """SimCLR on ECG: NT-Xent between the projections of two augmented views."""

    def __init__(self, encoder: ECGEncoder, projection: ProjectionHead | None = None,
                 augment: ContrastiveAugment | None = None, temperature: float = 0.5,
                 backend: str = "auto", gather_distributed: bool = False):
        super().__init__()
        self.encoder = encoder
        self.projection = projection if projection is not None else ProjectionHead(
            encoder.embedding_dim
        )
        self.augment = augment if augment is not None else ContrastiveAugment()
        self.temperature = temperature
        self.backend = backend
        self.gather_distributed = gather_distributed

    def forward(self, windows: torch.Tensor, generator: torch.Generator | None = None):
        return _contrastive_step(self.encoder, self.projection, self.augment, windows, generator,
                                 self.temperature, self.backend, self.gather_distributed)


class Combined(Contrastive):
    """``transform_weight * SSL-ECG loss + contrastive_weight * NT-Xent`` on one encoder.

    Holds ``encoder``, ``heads`` and ``projection`` once each, so the weights of all three
    objectives share their ``state_dict`` key names.
    """

    def __init__(self, encoder: ECGEncoder, transform_weight: float = 1.0,
                 contrastive_weight: float = 1.0, heads: TransformationHeads | None = None,
                 weights=SSL_ECG_TASK_WEIGHTS, **contrastive_kwargs):
        super().__init__(encoder, **contrastive_kwargs)
        self.heads = heads if heads is not None else _default_heads(encoder)
        self.weights = tuple(weights)
        self.transform_weight = transform_weight
        self.contrastive_weight = contrastive_weight

    def forward(self, windows: torch.Tensor, generator: torch.Generator | None = None):
        lt, mt = _transform_step(self.encoder, self.heads, windows, generator, self.weights)
        lc, mc = super().forward(windows, generator)
        return self.transform_weight * lt + self.contrastive_weight * lc, {**mt, **mc}


def build_objective(name: str, encoder: ECGEncoder, *, temperature: float = 0.5,
                    nt_xent_backend: str = "auto", gather_distributed: bool = False,
                    transform_weight: float = 1.0, contrastive_weight: float = 1.0) -> nn.Module:
    """The objective called ``name`` ("transform" | "contrastive" | "both") around ``encoder``."""
    contrastive = {"temperature": temperature, "backend": nt_xent_backend,
                   "gather_distributed": gather_distributed}
    if name == "transform":
        return TransformationRecognition(encoder)
    if name == "contrastive":
        return Contrastive(encoder, **contrastive)
    if name == "both":
        return Combined(encoder, transform_weight, contrastive_weight, **contrastive)
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {name!r}")
