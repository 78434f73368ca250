"""The options of :func:`~ecgfast.training.pretrain` and their one validation.

:class:`PretrainConfig` checks every field when it is made (a ValueError naming the
field), so a config that exists is one that can run; what depends on the machine (the
device, the precision "auto", the chunk size "auto") is resolved once when the run
starts (:func:`resolve_device`, :class:`ecgfast.precision.Precision`,
:func:`ecgfast.training.chunked.resolve_chunk_size`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ecgfast.models import exact_fields
from ecgfast.objectives import OBJECTIVES
from ecgfast.precision import check_precision
from ecgfast.training.optim import (
    LR_SCALINGS,
    LR_SCHEDULES,
    OPTIMIZERS,
    LRSchedule,
    check_choice,
)
from ecgfast.transforms import AUGMENT_PRESETS

AUTO = "auto"


@dataclass
class PretrainConfig:
    """Options of :func:`~ecgfast.training.pretrain`.

    Attributes:
        objective: "transform" (SSL-ECG), "contrastive" (NT-Xent) or "both".
        epochs: total number of epochs (a resumed run continues up to this).
        batch_size: windows per step, before the 7 versions / 2 views are made.
        lr, weight_decay, optimizer ("adam" | "adamw" | "lars"), momentum (LARS),
            lr_schedule ("constant" | "cosine" after ``warmup_epochs`` of warm-up, over
            ``schedule_epochs`` or ``epochs``), lr_scaling ("none" | "linear" | "sqrt"):
            see :mod:`ecgfast.training.optim`. precision: see :mod:`ecgfast.precision`.
        chunk_size: windows per encoder pass of a contrastive step: None (the whole
            batch), an int in [1, batch_size], "auto", or the text of an int (as the
            command line gives it); see :mod:`ecgfast.training.chunked`.
        seed: all randomness derives from it (:mod:`ecgfast.training.seeds`).
        temperature: NT-Xent tau.
        augment: the contrastive augmentation set, a name in
            :data:`~ecgfast.transforms.AUGMENT_PRESETS` (default "report").
        transform_weight, contrastive_weight: for "both".
        nt_xent_backend: see :func:`ecgfast.losses.nt_xent`.
        device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
        max_steps_per_epoch: cap on steps per epoch (None: all windows).
        keep_checkpoints: how many of the newest checkpoints to keep.
        patience: with validation windows, stop after this many epochs without a new
            lowest validation loss (None: train all ``epochs``, the maximum).
    """

    # what is learnt, for how long, from how many windows a step
    objective: str = "transform"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    # the losses
    temperature: float = 0.5
    augment: str = "report"
    transform_weight: float = 1.0
    contrastive_weight: float = 1.0
    nt_xent_backend: str = "auto"
    # the run: device, length, checkpoints, early stopping
    device: str = "auto"
    max_steps_per_epoch: int | None = None
    keep_checkpoints: int = 2
    patience: int | None = None
    # large batches: the optimizer, its schedule, the precision, chunked passes
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    schedule_epochs: int | None = None
    lr_scaling: str = "none"
    precision: str = "auto"
    chunk_size: int | str | None = None

    def __post_init__(self):
        _check_run_options(self)
        _check_optimizer_options(self)
        check_precision(self.precision)
        self.chunk_size = _checked_chunk_size(self.chunk_size, self.batch_size, self.objective)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        """The inverse of :meth:`to_dict`: every field, and nothing else."""
        return cls(**exact_fields(cls, d))


def _check_run_options(cfg: PretrainConfig) -> None:
    check_choice(cfg.objective, OBJECTIVES, "objective")
    for name in ("epochs", "batch_size", "keep_checkpoints"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"lr must be a finite number > 0, got {cfg.lr}")
    if not cfg.temperature > 0:
        raise ValueError(f"temperature must be > 0, got {cfg.temperature}")
    check_choice(cfg.augment, tuple(AUGMENT_PRESETS), "augment")
    if not (isinstance(cfg.seed, int) and cfg.seed >= 0):
        raise ValueError(f"seed must be an integer >= 0, got {cfg.seed!r}")
    if cfg.max_steps_per_epoch is not None and cfg.max_steps_per_epoch < 1:
        raise ValueError(f"max_steps_per_epoch must be >= 1, got {cfg.max_steps_per_epoch}")
    if cfg.patience is not None and not (isinstance(cfg.patience, int) and cfg.patience >= 1):
        raise ValueError(f"patience must be an integer >= 1 or None, got {cfg.patience!r}")


def _check_optimizer_options(cfg: PretrainConfig) -> None:
    check_choice(cfg.optimizer, OPTIMIZERS, "optimizer")
    check_choice(cfg.lr_schedule, LR_SCHEDULES, "lr_schedule")
    check_choice(cfg.lr_scaling, LR_SCALINGS, "lr_scaling")
    if not (isinstance(cfg.momentum, (int, float)) and 0.0 <= cfg.momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {cfg.momentum!r}")
    if not (isinstance(cfg.weight_decay, (int, float)) and math.isfinite(cfg.weight_decay)
            and cfg.weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {cfg.weight_decay!r}")
    if cfg.schedule_epochs is not None and not (
            isinstance(cfg.schedule_epochs, int) and cfg.schedule_epochs >= 1):
        raise ValueError(f"schedule_epochs must be an integer >= 1 or None, got "
                         f"{cfg.schedule_epochs!r}")
    LRSchedule(cfg.lr, cfg.lr_schedule, cfg.warmup_epochs, cfg.schedule_epochs or cfg.epochs)


def _checked_chunk_size(chunk_size, batch_size: int, objective: str) -> int | str | None:
    """``chunk_size`` as None, "auto" or an int in [1, batch_size] (text of an int read)."""
    if chunk_size is None:
        return None
    if objective == "transform":
        raise ValueError("chunk_size: the transformation objective has nothing to chunk (its "
                         "loss is a mean over windows: lower batch_size instead); chunking is "
                         "for the contrastive objectives")
    if chunk_size == AUTO:
        return AUTO
    if isinstance(chunk_size, str) and chunk_size.strip().isdigit():
        chunk_size = int(chunk_size)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, 'auto' or None, got {chunk_size!r}")
    if chunk_size > batch_size:
        raise ValueError(f"chunk_size ({chunk_size}) is larger than batch_size ({batch_size}); "
                         "leave it unset for one pass over the whole batch")
    return chunk_size


def resolve_device(device: str) -> torch.device:
    """The torch device of ``PretrainConfig.device``: "auto" is CUDA when present."""
    if device == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is available")
    return dev
