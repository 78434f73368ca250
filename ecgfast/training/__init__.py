"""Pretraining: the loop, its step, its configuration, its seeds, checkpoints and run log.

One file per part, read in this order:

- :mod:`.loop`: :func:`pretrain`, the epoch loop (resume, validation, early stopping);
- :mod:`.config`: :class:`PretrainConfig`, every option checked once;
- :mod:`.step`: :class:`TrainStep`, one optimizer step (precision, chunking, DDP averaging);
- :mod:`.chunked`: the chunked contrastive step and the chunk size "auto";
- :mod:`.optim`: optimizers (LARS) and learning-rate schedules;
- :mod:`.seeds`: the random streams every draw of a run derives from;
- :mod:`.batches`: the batches pretrain reads, from a tensor or a window store;
- :mod:`.validation`: the validation loss and early stopping;
- :mod:`.checkpoint`: crash-safe checkpoints; :mod:`.runlog`: metrics and the curve.
"""

from ecgfast.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)
from ecgfast.training.config import PretrainConfig, resolve_device
from ecgfast.training.loop import PretrainResult, TrainingDivergedError, pretrain
from ecgfast.training.step import TrainStep

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "PretrainConfig",
    "PretrainResult",
    "TrainStep",
    "TrainingDivergedError",
    "load_checkpoint",
    "load_encoder",
    "pretrain",
    "resolve_device",
    "save_checkpoint",
]
