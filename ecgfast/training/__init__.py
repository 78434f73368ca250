"""Pretraining: the loop, its step, its configuration, checkpoints and the run log.

- :mod:`.loop`: :func:`pretrain`, the epoch loop (resume, validation, early stopping).
- :mod:`.chunked`: :class:`TrainStep`, one optimizer step, and the chunked step.
- :mod:`.optim`: optimizers (LARS) and learning-rate schedules.
- :mod:`.batches`: the batches pretrain reads, from a tensor or a window store.
- :mod:`.checkpoint`: crash-safe checkpoints; :mod:`.runlog`: metrics and curve.
"""

from ecgfast.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)
from ecgfast.training.loop import (
    PretrainConfig,
    PretrainResult,
    TrainingDivergedError,
    pretrain,
    resolve_device,
)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "PretrainConfig",
    "PretrainResult",
    "TrainingDivergedError",
    "load_checkpoint",
    "load_encoder",
    "pretrain",
    "resolve_device",
    "save_checkpoint",
]
