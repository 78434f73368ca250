"""Every random draw of a run derives from ``PretrainConfig.seed``, one stream per use.

A stream's seed is :func:`derived_seed` of (stream, run seed, position in the run), so the
draws of one use never depend on how much another used, and a run resumed at epoch k
draws what an uninterrupted run draws from epoch k on:

- ``INIT`` (seed): torch's default generator before the model is built (initial weights);
- ``ORDER`` (seed, epoch): the epoch's permutation of the windows (the same on every rank);
- ``AUGMENT`` (seed, epoch, rank, step): the step's :class:`~ecgfast.keyed.KeyedRandom`,
  which keys every augmentation and dropout mask by window (so a chunked step draws what
  the one-pass step draws);
- ``GLOBAL`` (seed, epoch, rank): torch's default generator at the start of each epoch,
  for anything else that draws from it;
- ``VALIDATION`` (seed, rank): the generator of the validation views, the same every epoch.
"""

from __future__ import annotations

import numpy as np
import torch

from ecgfast.keyed import KeyedRandom

INIT, ORDER, AUGMENT, GLOBAL, VALIDATION = range(5)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed derived from the integers ``parts`` (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def seed_model_init(seed: int) -> None:
    """Seed torch's default generator for the initial weights."""
    torch.manual_seed(derived_seed(INIT, seed))


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch's default generator at the start of ``epoch`` on ``rank``."""
    torch.manual_seed(derived_seed(GLOBAL, seed, epoch, rank))


def order_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of ``epoch``'s permutation of the windows."""
    return torch.Generator().manual_seed(derived_seed(ORDER, seed, epoch))


def step_random(seed: int, epoch: int, rank: int, step: int, n: int,
                device: torch.device) -> KeyedRandom:
    """The keyed draws of one step of ``n`` windows."""
    return KeyedRandom.for_batch(derived_seed(AUGMENT, seed, epoch, rank, step), n, device)


def validation_generator(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of the validation views (reset every epoch: the same views)."""
    return torch.Generator(device=device).manual_seed(derived_seed(VALIDATION, seed, rank))
