"""Checkpoints that survive a crash: safetensors weights + JSON config + optimizer state.

A run directory looks like::

    RUN/checkpoints/epoch-0003/model.safetensors   all weights (encoder.*, heads.*, ...)
    RUN/checkpoints/epoch-0003/config.json         encoder config, objective, training args
    RUN/checkpoints/epoch-0003/optimizer.pt        optimizer state (torch.save, tensors only)
    RUN/checkpoints/latest                         name of the newest complete checkpoint

A checkpoint is written into a temporary directory, every file flushed to disk, then
renamed into place; only then is ``latest`` replaced (write a temporary file, rename). A
process killed at any point leaves the previous checkpoint and a ``latest`` that names a
complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file

from ecgfast.atomic import atomic_write_text, fsync_dir, fsync_file
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.training.config import PretrainConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIMIZER = "optimizer.pt"
LATEST = "latest"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupt; the message names the file."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes:
        path: the checkpoint directory.
        config: the parsed config.json (``encoder``, ``objective``, ``epoch``, ...).
        state_dict: every tensor of model.safetensors.
    """

    path: Path
    config: dict
    state_dict: dict[str, torch.Tensor]

    @property
    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig.from_dict(self.config["encoder"])

    @property
    def epoch(self) -> int:
        return self.config["epoch"]

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        prefix = "encoder."
        return {k[len(prefix):]: v for k, v in self.state_dict.items() if k.startswith(prefix)}

    def load_optimizer_state(self) -> dict:
        path = self.path / OPTIMIZER
        if not path.is_file():
            raise CheckpointError(f"{path}: optimizer state is missing")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unpickling failure means the file is corrupt
            raise CheckpointError(f"{path}: cannot read the optimizer state ({err})") from err


def save_checkpoint(
    run_dir: str | os.PathLike,
    *,
    epoch: int,
    state_dict: dict[str, torch.Tensor],
    config: dict,
    optimizer_state: dict | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``epoch`` under ``run_dir/checkpoints`` atomically; return its path.

    ``state_dict`` holds every weight (keys ``encoder.*`` for the encoder); ``config`` must
    hold ``encoder`` (an :meth:`EncoderConfig.to_dict`). The ``keep`` newest checkpoints
    are kept, older ones deleted after the new one is complete.
    """
    if "encoder" not in config:
        raise ValueError("config must hold the encoder config under 'encoder'")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "ecgfast", "epoch": str(epoch)})
    with open(tmp / CONFIG, "w") as f:
        json.dump({**config, "epoch": epoch, "format_version": FORMAT_VERSION}, f, indent=2)
    if optimizer_state is not None:
        torch.save(optimizer_state, tmp / OPTIMIZER)
    for file in tmp.iterdir():
        fsync_file(file)
    fsync_dir(tmp)
    if final.exists():  # a re-run of the same epoch replaces it
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(root)
    atomic_write_text(root / LATEST, name + "\n")
    complete = sorted(p for p in root.glob("epoch-*") if p.is_dir())
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory for a run dir, its ``checkpoints`` dir or a checkpoint dir."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if (path / WEIGHTS).exists() or (path / CONFIG).exists():
        return path
    for root in (path / "checkpoints", path):
        latest = root / LATEST
        if latest.is_file():
            try:
                name = latest.read_text().strip()
            except (OSError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{latest}: unreadable checkpoint name ({err})") from None
            target = root / name
            if not name or "\x00" in name or not target.is_dir():
                raise CheckpointError(f"{latest}: names {name!r}, which does not exist")
            return target
    raise CheckpointError(
        f"{path}: not a checkpoint (no {WEIGHTS}) and not a run directory (no checkpoints/{LATEST})"
    )


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate a checkpoint (see :func:`resolve_checkpoint` for ``path``)."""
    ckpt_dir = resolve_checkpoint(path)
    config_path = ckpt_dir / CONFIG
    weights_path = ckpt_dir / WEIGHTS
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or "encoder" not in config:
        raise CheckpointError(f"{config_path}: has no 'encoder' section")
    try:
        EncoderConfig.from_dict(config["encoder"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: invalid encoder config ({err})") from err
    epoch = config.get("epoch")
    if type(epoch) is not int or epoch < 0:
        raise CheckpointError(f"{config_path}: 'epoch' must be a non-negative integer, got "
                              f"{epoch!r}")
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: missing")
    try:
        state_dict = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{weights_path}: corrupt or not a safetensors file ({err})") from err
    return Checkpoint(ckpt_dir, config, state_dict)


def load_encoder(path: str | os.PathLike, *, backend: str | None = None) -> ECGEncoder:
    """The encoder of a checkpoint, in eval mode, on the CPU.

    ``backend`` overrides the one it was trained with (e.g. "eager" for export).
    """
    ckpt = load_checkpoint(path)
    config = ckpt.encoder_config
    if backend is not None:
        config = config.replace(backend=backend)
    encoder = ECGEncoder(config)
    try:
        encoder.load_state_dict(ckpt.encoder_state_dict())
    except RuntimeError as err:
        raise CheckpointError(
            f"{ckpt.path / WEIGHTS}: weights do not match the encoder config ({err})"
        ) from err
    return encoder.eval()


class RunState(NamedTuple):
    """What a resumed :func:`~ecgfast.training.pretrain` reads from a checkpoint's
    config.json besides the encoder: the training options,
    the epoch records, the early-stopping state and the step state (schedule, gradient
    scaler, chunk size)."""

    training: PretrainConfig
    history: list
    early_stopping: dict
    step_state: dict


def run_state(ckpt: Checkpoint) -> RunState:
    """The :class:`RunState` of a checkpoint written by pretrain; CheckpointError naming
    config.json when a part is missing or of the wrong kind."""
    kinds = {"training": dict, "history": list, "early_stopping": dict, "step_state": dict}
    for key, kind in kinds.items():
        if not isinstance(ckpt.config.get(key), kind):
            raise CheckpointError(f"{ckpt.path / CONFIG}: {key!r} is missing or not a "
                                  f"{kind.__name__}; not a checkpoint pretrain can resume")
    stop = ckpt.config["early_stopping"]
    if set(stop) != {"best_epoch", "best_loss", "bad_epochs"}:
        raise CheckpointError(f"{ckpt.path / CONFIG}: invalid early_stopping state {stop!r}")
    try:
        training = PretrainConfig.from_dict(ckpt.config["training"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt.path / CONFIG}: invalid training options ({err})") from err
    return RunState(training, *(ckpt.config[key] for key in list(kinds)[1:]))
