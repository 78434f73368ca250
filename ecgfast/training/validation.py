"""Validation windows scored after every epoch, and early stopping on their loss.

:func:`validation_loss` is the pretext loss in eval mode on views drawn from a generator
reset every epoch (:func:`~ecgfast.training.seeds.validation_generator`), so the epochs'
losses are comparable. :class:`EarlyStopping` keeps the best epoch and counts the epochs
since; its state travels in every checkpoint, so a resumed run stops where an
uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ecgfast.training.batches import take
from ecgfast.training.seeds import validation_generator


@torch.no_grad()
def validation_loss(objective: torch.nn.Module, windows, config, device: torch.device,
                    rank: int = 0, world: int = 1) -> float:
    """Mean pretext loss over ``windows`` (a tensor or a store) in eval mode, with the
    views drawn from :func:`~ecgfast.training.seeds.validation_generator`.

    Under DDP each rank takes an equal share (the remainder is left out, so that every
    rank runs the same number of batches) and the sums are all-reduced.
    """
    n = len(windows)
    share = torch.arange(n)[rank::world][: n // world]
    gen = validation_generator(config.seed, rank, device)
    was_training = objective.training
    objective.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for idx in torch.split(share, config.batch_size):
        loss, _ = objective(take(windows, idx).to(device), gen)
        total += loss.double() * len(idx)
    sums = torch.stack([total, torch.tensor(float(len(share)), dtype=torch.float64, device=device)])
    if world > 1:
        torch.distributed.all_reduce(sums)
    objective.train(was_training)
    return float(sums[0] / sums[1]) if sums[1] > 0 else float("nan")


@dataclass
class EarlyStopping:
    """The best epoch (1-based) and its validation loss, and the epochs since it;
    :meth:`asdict` / ``EarlyStopping(**saved)`` go through the checkpoint."""

    best_epoch: int | None = None
    best_loss: float = math.inf
    bad_epochs: int = 0

    def update(self, epoch: int, loss: float) -> None:
        """Record the validation ``loss`` of ``epoch`` (1-based)."""
        if loss < self.best_loss:
            self.best_epoch, self.best_loss, self.bad_epochs = epoch, loss, 0
        else:
            self.bad_epochs += 1

    def exhausted(self, patience: int | None) -> bool:
        """Whether ``patience`` epochs in a row brought no new best (never without one)."""
        return patience is not None and self.bad_epochs >= patience

    def asdict(self) -> dict:
        return asdict(self)
