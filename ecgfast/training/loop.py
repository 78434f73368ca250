"""The pretraining loop: :func:`pretrain`, from windows to checkpoints.

:func:`pretrain` trains an encoder on unlabelled windows with one of the objectives of
:mod:`ecgfast.objectives` and writes, in ``run_dir``:

- ``checkpoints/epoch-NNNN/`` after every epoch (see :mod:`ecgfast.training.checkpoint`),
- ``metrics.jsonl``: one JSON record per step (``"kind": "step"``) and per epoch,
- ``training_curve.png``: loss per step and per epoch (see :mod:`ecgfast.training.runlog`),
- with ``validation`` windows: ``best/``, the checkpoint of the lowest validation loss
  (see :mod:`ecgfast.training.validation`); ``PretrainConfig.patience`` stops training
  once that many epochs in a row brought no new lowest loss (early stopping).

It reads top-down: :func:`_start_run` (the data checked, the process group, a fresh run
or the newest checkpoint's state), :func:`_build_step` (the objective and its
:class:`~ecgfast.training.step.TrainStep`), then per epoch :func:`_train_epoch` and
:func:`_end_epoch` (validation, metrics, checkpoints), and :func:`_result`.

Randomness derives from the seed (:mod:`ecgfast.training.seeds`), so a run resumed from
the checkpoint of epoch k ends with the same weights as an uninterrupted run on the same
device. Under ``torchrun --nproc_per_node K`` the objective is wrapped in
DistributedDataParallel (gloo on the CPU, nccl on GPUs), each rank takes every K-th
window of the shuffled order, and the contrastive loss gathers all ranks' embeddings.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ecgfast.distributed import DistContext, init_process_group_from_env, wrap_ddp
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.objectives import build_objective
from ecgfast.precision import Precision
from ecgfast.provenance import KEY, checkpoint_provenance
from ecgfast.training import checkpoint as ckpt
from ecgfast.training.batches import (
    as_windows,
    data_fingerprint,
    encoder_for_data,
    epoch_batches,
    iter_batches,
    take,
)
from ecgfast.training.chunked import resolve_chunk_size
from ecgfast.training.config import PretrainConfig, resolve_device
from ecgfast.training.runlog import (
    CURVE,
    METRICS,
    append_jsonl,
    plot_training_curve,
    truncate_metrics,
)
from ecgfast.training.seeds import seed_epoch, seed_model_init, step_random
from ecgfast.training.step import TrainStep
from ecgfast.training.validation import EarlyStopping, validation_loss

BEST = "best"
_STEP_FIELDS = ("kind", "epoch", "step", "global_step", "loss")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is untouched."""


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: where things are and the epoch records.

    ``best_checkpoint``/``best_epoch`` (lowest validation loss) and ``stopped_early`` are
    set only when validation windows were given; ``encoder`` holds the last epoch's weights.
    """

    run_dir: Path
    checkpoint: Path | None
    history: list[dict]
    encoder: ECGEncoder
    best_checkpoint: Path | None = None
    best_epoch: int | None = None
    stopped_early: bool = False


def pretrain(
    windows,
    run_dir: str | os.PathLike,
    encoder_config: EncoderConfig | None = None,
    config: PretrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    validation=None,
    loader_workers: int | None = None,
    provenance: dict | None = None,
) -> PretrainResult:
    """Pretrain an encoder on ``windows`` and write the run to ``run_dir``.

    ``windows``: (N, L) or (N, C, L) (an array or tensor), or a
    :class:`~ecgfast.data.WindowStore` read through a ``DataLoader`` with
    ``loader_workers`` processes (see :mod:`ecgfast.training.batches`). An encoder config
    left at ``in_channels=1`` takes the windows' lead count.

    With ``resume=True`` training continues from the newest checkpoint in ``run_dir``
    with the encoder and training options saved there (only ``config.epochs`` and
    ``config.device`` may change); without it, a ``run_dir`` that already holds a
    checkpoint is refused so that nothing is overwritten. Raises
    :class:`TrainingDivergedError` if the loss stops being finite.

    ``validation`` (M, L) / (M, C, L) windows or a store, e.g. of subjects held out of
    ``windows``, are scored after every epoch (``val_loss`` in the epoch records) and the
    best epoch is kept in ``run_dir/best``; with ``config.patience`` training stops early.
    The early-stopping state and the epoch records travel in every checkpoint, so a
    resumed run stops where an uninterrupted one would.

    ``provenance`` describes the training data and its pre-processing
    (:func:`ecgfast.provenance.describe_data`); every checkpoint records it, with the
    software versions, for the exported model's contract and card (a store describes
    itself when it is None).
    """
    run = _start_run(Path(run_dir), windows, validation, encoder_config or EncoderConfig(),
                     config or PretrainConfig(), resume, provenance)
    objective, step = _build_step(run)
    for epoch in range(run.start_epoch, run.config.epochs):
        if run.stop.exhausted(run.config.patience):
            break
        records, epoch_record = _train_epoch(run, step, epoch, progress, loader_workers)
        _end_epoch(run, objective, step, records, epoch_record)
    return _result(run, objective.encoder)


@dataclass
class _Run:
    """One run: its data, options and place in the process group, and what it carries
    from epoch to epoch (and through checkpoints)."""

    dir: Path
    windows: object  # a (N, C, L) tensor or a WindowStore
    validation: object | None
    config: PretrainConfig
    encoder_config: EncoderConfig
    ctx: DistContext
    fingerprint: str
    validation_fingerprint: str | None
    provenance: dict  # the data's provenance and the software versions (ecgfast.provenance)
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    logged: list[dict] = field(default_factory=list)  # metrics.jsonl's records, for the curve
    stop: EarlyStopping = field(default_factory=EarlyStopping)
    saved: ckpt.Checkpoint | None = None  # the checkpoint a resumed run continues
    step_state: dict | None = None  # ... and its TrainStep state
    last_checkpoint: Path | None = None

    @property
    def rank(self) -> int:
        return self.ctx.rank

    @property
    def world(self) -> int:
        return self.ctx.world_size

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def checkpoint_config(self, step: TrainStep) -> dict:
        """The config.json of an epoch's checkpoint."""
        return {
            "encoder": self.encoder_config.to_dict(),
            "objective": self.config.objective,
            "training": self.config.to_dict(),
            "data_fingerprint": self.fingerprint,
            "validation_fingerprint": self.validation_fingerprint,
            "n_windows": len(self.windows),
            "window_length": int(self.windows.shape[-1]),
            "world_size": self.world,
            KEY: self.provenance,
            "history": self.history,
            "early_stopping": self.stop.asdict(),
            "step_state": step.state_dict(),
        }


def _start_run(run_dir: Path, windows, validation, encoder_config: EncoderConfig,
               config: PretrainConfig, resume: bool, provenance: dict | None) -> _Run:
    """The data checked, the process group joined, and the run's state: the newest
    checkpoint's when resuming, else a fresh run directory."""
    windows = as_windows(windows)
    val = None if validation is None else as_windows(validation, "validation")
    ctx = init_process_group_from_env(resolve_device(config.device))
    run = _Run(run_dir, windows, val, config, encoder_config, ctx, data_fingerprint(windows),
               None if val is None else data_fingerprint(val),
               checkpoint_provenance(provenance, windows))
    has_checkpoint = (run_dir / "checkpoints" / ckpt.LATEST).exists()
    if has_checkpoint and not resume:
        raise FileExistsError(
            f"{run_dir}: already holds a checkpoint; pass resume=True (--resume) to continue it "
            "or choose another run directory")
    if has_checkpoint:
        _resume(run)
    if run.config.patience is not None and val is None:
        raise ValueError("patience (early stopping) needs validation windows")
    if run.saved is None and run.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / METRICS).unlink(missing_ok=True)
    run.encoder_config = encoder_for_data(run.encoder_config, windows)
    if val is not None:
        encoder_for_data(run.encoder_config, val, "validation windows")
    return run


def _resume(run: _Run) -> None:
    """Take the state of the newest checkpoint in ``run.dir``: its encoder and training
    options (the caller's only for ``epochs`` and ``device``), epoch, records, early
    stopping and step state. The windows must be the ones it was trained and validated on."""
    saved = ckpt.load_checkpoint(run.dir)
    state = ckpt.run_state(saved)
    for key, now, what, windows in (
            ("data_fingerprint", run.fingerprint, "trained on other data", "windows"),
            ("validation_fingerprint", run.validation_fingerprint, "validated on other windows",
             "validation windows")):
        if saved.config.get(key) != now:
            raise ValueError(f"{saved.path}: this run was {what} (fingerprint "
                             f"{saved.config.get(key)}, now {now}); resume needs the same {windows}")
    run.saved, run.last_checkpoint, run.start_epoch = saved, saved.path, saved.epoch
    run.encoder_config = saved.encoder_config
    run.config = dataclasses.replace(state.training, epochs=run.config.epochs,
                                     device=run.config.device)
    run.history, run.step_state = state.history, state.step_state
    run.stop = EarlyStopping(**state.early_stopping)
    if run.rank == 0:
        run.logged = truncate_metrics(run.dir / METRICS, run.start_epoch)


def _build_step(run: _Run) -> tuple[torch.nn.Module, TrainStep]:
    """The objective on the run's device (with the saved weights when resuming) and its
    step: optimizer, schedule, precision and the chunk size, each resolved once here."""
    config = run.config
    seed_model_init(config.seed)
    objective = build_objective(
        config.objective, ECGEncoder(run.encoder_config), temperature=config.temperature,
        nt_xent_backend=config.nt_xent_backend, gather_distributed=run.world > 1,
        transform_weight=config.transform_weight, contrastive_weight=config.contrastive_weight,
        augment=config.augment,
    )
    if run.saved is not None:
        objective.load_state_dict(run.saved.state_dict)
    objective.to(run.device)
    model = wrap_ddp(objective, run.ctx)
    precision = Precision(config.precision, run.device)
    chunk_size = resolve_chunk_size(config.chunk_size, (run.step_state or {}).get("chunk_size"),
                                    objective, lambda: _first_batch(run), precision.autocast)
    step = TrainStep.build(config, model, objective, precision, chunk_size, run.world)
    if run.saved is not None:
        step.optimizer.load_state_dict(run.saved.load_optimizer_state())
        step.load_state_dict(run.step_state, str(run.saved.path))
    return objective, step


def _first_batch(run: _Run) -> torch.Tensor:
    """The run's first batch on its device (what chunk_size "auto" is measured on)."""
    idx = epoch_batches(len(run.windows), run.start_epoch, run.config, run.rank, run.world)[0]
    return take(run.windows, idx).to(run.device)


def _train_epoch(run: _Run, step: TrainStep, epoch: int, progress: bool,
                 loader_workers: int | None) -> tuple[list[dict], dict]:
    """One epoch of steps: the steps' records and the epoch's record."""
    config, rank, world, device = run.config, run.rank, run.world, run.device
    batches = epoch_batches(len(run.windows), epoch, config, rank, world)
    seed_epoch(config.seed, epoch, rank)
    step.model.train()
    global_step = run.history[-1]["global_step"] if run.history else 0
    records, losses, seen, t0 = [], [], 0, time.perf_counter()
    bar = tqdm(iter_batches(run.windows, batches, device, loader_workers), total=len(batches),
               desc=f"pretrain {config.objective} epoch {epoch + 1}/{config.epochs}",
               unit="batch", disable=not progress or rank != 0, leave=True, dynamic_ncols=True)
    for i, x in enumerate(bar):
        x = x.to(device, non_blocking=True)
        random = step_random(config.seed, epoch, rank, i, x.shape[0], device)
        loss, metrics, status = step(x, random, epoch, i, len(batches))
        if status == "diverged":
            raise _diverged(run, loss, epoch, i)
        if status == "skipped":  # fp16: the scaler backed off; see ecgfast.precision
            continue
        global_step += 1
        seen += x.shape[0]
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}",
                        win_s=f"{seen * world / (time.perf_counter() - t0):.1f}")
        records.append({"kind": "step", "epoch": epoch + 1, "step": i + 1,
                        "global_step": global_step, "loss": losses[-1],
                        **{k: float(v) for k, v in metrics.items()}})
    elapsed = time.perf_counter() - t0
    means = {k: float(np.mean([r[k] for r in records]))
             for k in (records[-1] if records else ()) if k not in _STEP_FIELDS}
    return records, {
        "kind": "epoch", "epoch": epoch + 1, "global_step": global_step,
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "windows_per_s": seen * world / elapsed if elapsed > 0 else 0.0,
        "seconds": elapsed, **means,
    }


def _diverged(run: _Run, loss: torch.Tensor, epoch: int, step: int) -> TrainingDivergedError:
    kept = (f"the last checkpoint ({run.last_checkpoint}) is untouched" if run.last_checkpoint
            else "no checkpoint was written yet")
    return TrainingDivergedError(f"loss became {loss.item()} at epoch {epoch + 1}, step "
                                 f"{step + 1}; {kept}. Try a lower lr (now {run.config.lr}).")


def _end_epoch(run: _Run, objective: torch.nn.Module, step: TrainStep, records: list[dict],
               epoch_record: dict) -> None:
    """Score the validation windows, then (rank 0) append the metrics, save the best and
    the epoch's checkpoints and redraw the curve."""
    epoch = epoch_record["epoch"]
    if run.validation is not None:
        v0 = time.perf_counter()
        epoch_record["val_loss"] = validation_loss(objective, run.validation, run.config,
                                                   run.device, run.rank, run.world)
        epoch_record["val_seconds"] = time.perf_counter() - v0
        run.stop.update(epoch, epoch_record["val_loss"])
        epoch_record["best_epoch"] = run.stop.best_epoch
    run.history.append(epoch_record)
    if run.rank != 0:
        return
    config = run.checkpoint_config(step)
    # metrics first: a resume drops records past its checkpoint, never misses one
    append_jsonl(run.dir / METRICS, records + [epoch_record])
    run.logged += records + [epoch_record]
    if run.validation is not None and run.stop.best_epoch == epoch:
        ckpt.save_checkpoint(run.dir / BEST, epoch=epoch, keep=1,
                             state_dict=objective.state_dict(), config=config)
    run.last_checkpoint = ckpt.save_checkpoint(
        run.dir, epoch=epoch, state_dict=objective.state_dict(), config=config,
        optimizer_state=step.optimizer.state_dict(), keep=run.config.keep_checkpoints)
    plot_training_curve(run.logged, run.dir / CURVE)


def _result(run: _Run, encoder: ECGEncoder) -> PretrainResult:
    encoder.eval()
    best = None
    if run.rank == 0 and run.stop.best_epoch is not None:
        best = ckpt.resolve_checkpoint(run.dir / BEST)
    return PretrainResult(run.dir, run.last_checkpoint, run.history, encoder, best,
                          run.stop.best_epoch, run.stop.exhausted(run.config.patience))
