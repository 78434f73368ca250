"""Pretraining objectives: an encoder, its heads and a loss, from raw windows to a scalar.

Each objective is an ``nn.Module`` whose ``forward(windows, generator)`` builds its own
views of a batch of windows (B, L), runs the encoder and returns ``(loss, metrics)``.
``generator``: a ``torch.Generator`` (or None: the global RNG) for the augmentations, the
dropout seeds then coming from torch's default generator; or a
:class:`~ecgfast.keyed.KeyedRandom` over the windows, which keys the augmentations and
every dropout mask by window (:meth:`KeyedRandom.child` gives the encoder's and heads'
rows for each view), so that any slice of the batch draws what it drew in the whole.
They are conveniences on top of the standalone pieces in :mod:`ecgfast.transforms`,
:mod:`ecgfast.models` and :mod:`ecgfast.losses`.

- :class:`TransformationRecognition`: SSL-ECG; 7 versions of each window, 7 binary heads.
- :class:`Contrastive`: SimCLR; two augmented views, projection head, NT-Xent.
- :class:`Combined`: ``w_t * transformation + w_c * contrastive``.

The contrastive objectives split a step in two, so that :mod:`ecgfast.training.chunked`
can run the first part chunk by chunk: :meth:`Contrastive.embed` (views, encoder, projection and
any per-window loss of a slice of the batch, an :class:`Embedded`) and
:meth:`Contrastive.join` (the NT-Xent over all the batch's embeddings). ``forward`` is
``join(embed(windows))``: the same functions, in the same order of random draws.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ecgfast.keyed import KeyedRandom
from ecgfast.losses import SSL_ECG_TASK_WEIGHTS, NTXentLoss, transformation_recognition_loss
from ecgfast.models import ECGEncoder, ProjectionHead, TransformationHeads
from ecgfast.transforms import TRANSFORM_NAMES, ContrastiveAugment, make_pretext_batch

OBJECTIVES = ("transform", "contrastive", "both")


def _view_random(generator, versions: int) -> KeyedRandom | None:
    """The keyed source of an encoder input of ``versions`` stacked views of the windows."""
    return generator.child(versions) if isinstance(generator, KeyedRandom) else None


def _transform_step(encoder, heads, windows, generator, weights):
    inputs, labels = make_pretext_batch(windows, generator=generator)
    random = _view_random(generator, len(TRANSFORM_NAMES))
    logits = heads(encoder(inputs, random), random)
    loss = transformation_recognition_loss(logits, labels, weights)
    with torch.no_grad():
        targets = torch.nn.functional.one_hot(labels.long(), logits.shape[1]).bool()
        acc = ((logits > 0) == targets).float().mean()
    return loss, {"transform_loss": loss.detach(), "transform_acc": acc}


class Embedded(NamedTuple):
    """What :meth:`Contrastive.embed` returns for a batch (or a slice) of n windows.

    ``z``: (2n, D) projections, view 1 then view 2 (row i and row n + i are a positive
    pair). ``local_loss``: the weighted part of the loss that is a mean over these
    windows (Combined: ``transform_weight * transformation loss``), or None.
    ``metrics``: detached scalars that are means over these windows.
    """

    z: torch.Tensor
    local_loss: torch.Tensor | None
    metrics: dict


def _contrastive_embed(encoder, projection, augment, windows, generator) -> torch.Tensor:
    v1, v2 = augment.two_views(windows, generator=generator)
    return projection(encoder(torch.cat([v1, v2]), _view_random(generator, 2)))


def _contrastive_loss(loss, temperature, backend, gather_distributed) -> NTXentLoss:
    """``loss`` itself, or one NTXentLoss built from the keyword shorthand (not both)."""
    shorthand = {k: v for k, v in (("temperature", temperature), ("backend", backend),
                                   ("gather_distributed", gather_distributed)) if v is not None}
    if loss is None:
        return NTXentLoss(**shorthand)
    if not isinstance(loss, NTXentLoss):
        raise TypeError(f"loss must be an ecgfast.losses.NTXentLoss or None, got "
                        f"{type(loss).__name__} (temperature, backend and gather_distributed "
                        "are keyword arguments)")
    if shorthand:
        raise ValueError(f"pass either loss or {', '.join(shorthand)}, not both (the loss "
                         "module holds its own settings)")
    return loss


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
    """SimCLR on ECG: NT-Xent between the projections of two augmented views.

    ``loss``: the :class:`~ecgfast.losses.NTXentLoss` to use (default ``NTXentLoss()``,
    temperature 0.5). ``temperature``, ``backend`` and ``gather_distributed`` are a
    shorthand for ``loss=NTXentLoss(temperature, backend=..., gather_distributed=...)``
    (the module is built once, here). The loss holds no parameters, so ``state_dict`` keys
    are those of ``encoder`` and ``projection``.
    """

    def __init__(self, encoder: ECGEncoder, projection: ProjectionHead | None = None,
                 augment: ContrastiveAugment | None = None, temperature: float | None = None,
                 backend: str | None = None, gather_distributed: bool | None = None, *,
                 loss: NTXentLoss | None = None):
        super().__init__()
        self.encoder = encoder
        self.projection = projection if projection is not None else ProjectionHead(
            encoder.embedding_dim
        )
        self.augment = augment if augment is not None else ContrastiveAugment()
        self.loss = _contrastive_loss(loss, temperature, backend, gather_distributed)

    def embed(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> Embedded:
        """Two augmented views of ``windows`` (B, L), through encoder and projection."""
        z = _contrastive_embed(self.encoder, self.projection, self.augment, windows, generator)
        return Embedded(z, None, {})

    def join(self, z1: torch.Tensor, z2: torch.Tensor, local_loss: torch.Tensor | None = None,
             metrics: dict | None = None):
        """``(loss, metrics)`` from all views' projections z1, z2 (N, D) and the
        :class:`Embedded` parts that are means over windows (already combined)."""
        lc = self.loss(z1, z2)
        return lc, {**(metrics or {}), "contrastive_loss": lc.detach()}

    def forward(self, windows: torch.Tensor, generator: torch.Generator | None = None):
        z, local_loss, metrics = self.embed(windows, generator)
        n = z.shape[0] // 2
        return self.join(z[:n], z[n:], local_loss, metrics)


class Combined(Contrastive):
    """``transform_weight * SSL-ECG loss + contrastive_weight * NT-Xent`` on one encoder.

    Holds ``encoder``, ``heads`` and ``projection`` once each, so the weights of all three
    objectives share their ``state_dict`` key names. ``contrastive_kwargs`` go to
    :class:`Contrastive` (``projection``, ``augment``, ``loss`` or its shorthand).
    """

    def __init__(self, encoder: ECGEncoder, transform_weight: float = 1.0,
                 contrastive_weight: float = 1.0, heads: TransformationHeads | None = None,
                 weights=SSL_ECG_TASK_WEIGHTS, **contrastive_kwargs):
        super().__init__(encoder, **contrastive_kwargs)
        self.heads = heads if heads is not None else _default_heads(encoder)
        self.weights = tuple(weights)
        self.transform_weight = transform_weight
        self.contrastive_weight = contrastive_weight

    def embed(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> Embedded:
        """The transformation loss of ``windows`` (weighted), then the contrastive views."""
        lt, mt = _transform_step(self.encoder, self.heads, windows, generator, self.weights)
        z = _contrastive_embed(self.encoder, self.projection, self.augment, windows, generator)
        return Embedded(z, self.transform_weight * lt, mt)

    def join(self, z1, z2, local_loss=None, metrics=None):
        lc, mc = super().join(z1, z2, None, metrics)
        return local_loss + self.contrastive_weight * lc, mc


def build_objective(name: str, encoder: ECGEncoder, *, temperature: float = 0.5,
                    nt_xent_backend: str = "auto", gather_distributed: bool = False,
                    transform_weight: float = 1.0, contrastive_weight: float = 1.0,
                    augment: str = "report") -> nn.Module:
    """The objective called ``name`` ("transform" | "contrastive" | "both") around ``encoder``
    (the contrastive ones with one ``NTXentLoss(temperature, backend=nt_xent_backend,
    gather_distributed=gather_distributed)`` and the augmentation set ``augment``, a
    :data:`~ecgfast.transforms.AUGMENT_PRESETS` name; the transformation task has none)."""
    augmenter = ContrastiveAugment.preset(augment)
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {name!r}")
    if name == "transform":
        return TransformationRecognition(encoder)
    loss = NTXentLoss(temperature, backend=nt_xent_backend,
                      gather_distributed=gather_distributed)
    if name == "contrastive":
        return Contrastive(encoder, augment=augmenter, loss=loss)
    return Combined(encoder, transform_weight, contrastive_weight, augment=augmenter, loss=loss)
