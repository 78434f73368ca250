"""Where pretraining batches come from: an in-memory tensor or a :class:`WindowStore`.

:func:`~ecgfast.training.pretrain` sees windows as (N, C, L) (single-lead is
C = 1; (N, L) input is accepted and becomes (N, 1, L)). Every epoch's order is a
permutation seeded from ``(seed, epoch)`` alone; rank ``r`` of ``K`` takes every K-th
window of it (:func:`epoch_batches`), so each rank reads only its share and a resumed
run draws the same batches as an uninterrupted one. A tensor is indexed in place; a
store is read through a ``DataLoader`` whose batch sampler is that list of batches
(workers read ahead; pinned memory when training on CUDA), so the batches, and the
weights they lead to, do not depend on the number of loader workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import torch

from ecgfast.data.store import WindowStore
from ecgfast.training.seeds import order_generator


def as_windows(windows, name: str = "windows"):
    """``windows`` checked: a :class:`WindowStore` as it is, else a (N, C, L) float32
    contiguous tensor from a (N, L) or (N, C, L) floating-point array or tensor."""
    if isinstance(windows, WindowStore):
        if len(windows) < 1:
            raise ValueError(f"{name}: the store {windows.path} holds no windows")
        return windows
    if isinstance(windows, np.ndarray):
        windows = torch.from_numpy(windows)
    if not isinstance(windows, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array, a tensor or a WindowStore, got "
                        f"{type(windows).__name__}")
    if windows.dim() == 2:
        windows = windows[:, None]
    if windows.dim() != 3:
        raise ValueError(f"{name} must be (N, L) or (N, C, L), got shape {tuple(windows.shape)}")
    if not windows.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {windows.dtype}")
    if windows.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    bad = ~torch.isfinite(windows).flatten(1).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise ValueError(
            f"{name}: {int(bad.sum())} window(s) hold NaN or Inf samples (first: window {first})"
        )
    return windows.to(torch.float32).contiguous()


def data_fingerprint(windows) -> str:
    """A short hash of the windows: for a (N, C, L) tensor, its shape and a strided sample
    of its values; for a store, :meth:`WindowStore.fingerprint`."""
    if isinstance(windows, WindowStore):
        return windows.fingerprint()
    flat = windows.reshape(-1)
    step = max(1, flat.numel() // 65536)
    h = hashlib.sha1(str(tuple(windows.shape)).encode())
    h.update(flat[::step].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def encoder_for_data(config, windows, name: str = "windows"):
    """``config`` fitted to the windows: ``in_channels`` set to their lead count (an
    encoder left at the default 1 lead, with no lead names, takes it; any other count
    must match), and ``leads`` to a store's lead names when the config names none."""
    leads = int(windows.shape[1])
    names = tuple(windows.leads) if isinstance(windows, WindowStore) else None
    own = getattr(config, "leads", None)
    if config.in_channels != leads:
        if config.in_channels != 1 or own is not None:
            raise ValueError(
                f"the encoder takes {config.in_channels} lead(s) {own or ''} but {name} have "
                f"{leads}{' ' + str(list(names)) if names else ''}")
        config = dataclasses.replace(config, in_channels=leads)
    if names is not None and hasattr(config, "leads"):
        if own is None:
            config = dataclasses.replace(config, leads=names)
        elif tuple(own) != names:
            raise ValueError(f"the encoder's leads {list(own)} differ from {name}'s {list(names)}")
    return config


def epoch_batches(n: int, epoch: int, cfg, rank: int, world: int) -> list[torch.Tensor]:
    """This rank's batches of window indices for ``epoch``: every ``world``-th index of
    the epoch's permutation (the same share size on every rank), in ``cfg.batch_size``
    chunks, at most ``cfg.max_steps_per_epoch`` of them."""
    order = torch.randperm(n, generator=order_generator(cfg.seed, epoch))
    per_rank = n // world if world > 1 else n
    mine = order[rank::world][:per_rank]
    batches = list(torch.split(mine, cfg.batch_size))
    if cfg.max_steps_per_epoch is not None:
        batches = batches[: cfg.max_steps_per_epoch]
    return batches


def take(windows, idx: torch.Tensor) -> torch.Tensor:
    """Windows ``idx`` of a tensor or a store, (B, C, L) float32 on the CPU."""
    if isinstance(windows, WindowStore):
        return windows.get_batch(idx.numpy())
    return windows[idx]


def _whole_batch(batch):
    return batch  # __getitems__ already returns one (B, C, L) tensor


def default_loader_workers() -> int:
    """Loader processes for a store when none are asked for: up to 4, one per core."""
    return min(4, os.cpu_count() or 1)


def iter_batches(windows, batches, device: torch.device, workers: int | None = None):
    """The (B, C, L) float32 CPU tensors of ``batches`` in order; from a store through a
    ``DataLoader`` with ``workers`` processes (default :func:`default_loader_workers`)."""
    if not isinstance(windows, WindowStore):
        return (windows[idx] for idx in batches)
    workers = default_loader_workers() if workers is None else int(workers)
    # its own generator: the loader's base seed must not be drawn from the global stream
    return torch.utils.data.DataLoader(
        windows, batch_sampler=[idx.tolist() for idx in batches], num_workers=workers,
        collate_fn=_whole_batch, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0))
