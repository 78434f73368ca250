"""Pretraining loop: objectives, progress, crash-safe checkpoints, exact resume, DDP.

:func:`pretrain` trains an encoder on unlabelled windows with one of the objectives of
:mod:`ecgfast.objectives` and writes, in ``run_dir``:

- ``checkpoints/epoch-NNNN/`` after every epoch (see :mod:`ecgfast.checkpoint`),
- ``metrics.jsonl``: one JSON record per step (``"kind": "step"``) and per epoch,
- ``training_curve.png``: loss per step and per epoch.
- with ``validation`` windows: ``best/``, the checkpoint of the lowest validation loss
  (the pretext loss in eval mode on fixed augmentations, so epochs are comparable);
  ``PretrainConfig.patience`` stops training once that many epochs in a row brought no
  new lowest loss (early stopping).

Randomness is derived from the seed: the shuffle order from ``(seed, epoch)``, and every
step's augmentations and dropout masks from one :class:`~ecgfast.keyed.KeyedRandom` keyed
by ``(seed, epoch, rank, step)`` and the window's place in the batch (so a chunked step
draws what the one-pass step draws). A run resumed from the checkpoint of epoch k ends
with the same weights as an uninterrupted run on the same device.

Under ``torchrun --nproc_per_node K`` the objective is wrapped in
DistributedDataParallel (gloo on the CPU, nccl on GPUs), each rank takes every K-th
window of the shuffled order, and the contrastive loss gathers all ranks' embeddings.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ecgfast.distributed import init_process_group_from_env, wrap_ddp
from ecgfast.keyed import KeyedRandom
from ecgfast.models import ECGEncoder, EncoderConfig
from ecgfast.objectives import OBJECTIVES, build_objective
from ecgfast.training import checkpoint as ckpt
from ecgfast.training.batches import (
    AUGMENT,
    GLOBAL,
    INIT,
    as_windows,
    data_fingerprint,
    derived_seed,
    encoder_for_data,
    epoch_batches,
    iter_batches,
    validation_loss,
)
from ecgfast.training.chunked import TrainStep, check_step_options
from ecgfast.training.runlog import (
    CURVE,
    METRICS,
    append_jsonl,
    plot_training_curve,
    truncate_metrics,
)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is untouched."""


@dataclass
class PretrainConfig:
    """Options of :func:`pretrain`.

    Attributes:
        objective: "transform" (SSL-ECG), "contrastive" (NT-Xent) or "both".
        epochs: total number of epochs (a resumed run continues up to this).
        batch_size: windows per step, before the 7 versions / 2 views are made.
        lr, weight_decay, optimizer ("adam" | "adamw" | "lars"), momentum (LARS),
            lr_schedule ("constant" | "cosine" after ``warmup_epochs`` of warm-up, over
            ``schedule_epochs`` or ``epochs``), lr_scaling ("none" | "linear" | "sqrt"):
            see :mod:`ecgfast.optim`. precision: see :mod:`ecgfast.precision`.
        chunk_size: windows per encoder pass, int or "auto" (:mod:`ecgfast.chunked`).
        seed: all randomness derives from it.
        temperature: NT-Xent tau.
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
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name in ("epochs", "batch_size", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}")
        if self.patience is not None and not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"patience must be an integer >= 1 or None, got {self.patience!r}")
        check_step_options(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        """The inverse of :meth:`to_dict`. A dict saved before ``precision`` existed (an
        older checkpoint) ran in fp32, so it gets "fp32", not today's "auto" (bf16 on a
        GPU): a resumed old run keeps its arithmetic. The other large-batch fields'
        defaults (adam, constant lr, no chunks) are what such runs did."""
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in d.items() if k in known}
        if "precision" not in d:
            kept["precision"] = "fp32"
        return cls(**kept)


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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is available")
    return dev


BEST = "best"


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
) -> PretrainResult:
    """Pretrain an encoder on ``windows`` and write the run to ``run_dir``.

    ``windows``: (N, L) or (N, C, L) (an array or tensor), or a
    :class:`~ecgfast.data.WindowStore` read through a ``DataLoader`` with
    ``loader_workers`` processes (see :mod:`ecgfast.data.batches`). An encoder config
    left at ``in_channels=1`` takes the windows' lead count.

    With ``resume=True`` training continues from the newest checkpoint in ``run_dir``
    with the encoder and training options saved there (only ``config.epochs`` may grow);
    without it, a ``run_dir`` that already holds a checkpoint is refused so that nothing
    is overwritten. Raises :class:`TrainingDivergedError` if the loss stops being finite.

    ``validation`` (M, L) / (M, C, L) windows or a store, e.g. of subjects held out of ``windows``, are scored
    after every epoch (``val_loss`` in the epoch records) and the best epoch is kept in
    ``run_dir/best``; with ``config.patience`` training stops early. The early-stopping
    state and the epoch records travel in every checkpoint, so a resumed run stops where
    an uninterrupted one would.
    """
    run_dir = Path(run_dir)
    config = config or PretrainConfig()
    encoder_config = encoder_config or EncoderConfig()
    windows = as_windows(windows)
    fingerprint = data_fingerprint(windows)
    val = None if validation is None else as_windows(validation, "validation")
    val_fingerprint = None if val is None else data_fingerprint(val)
    ctx = init_process_group_from_env(resolve_device(config.device))
    rank, world, device = ctx.rank, ctx.world_size, ctx.device
    has_checkpoint = (run_dir / "checkpoints" / ckpt.LATEST).exists()

    start_epoch, history, optimizer_state, state, step_state = 0, [], None, None, None
    logged: list[dict] = []  # what metrics.jsonl holds, for the training curve
    stop = {"best_epoch": None, "best_loss": math.inf, "bad_epochs": 0}
    if resume and has_checkpoint:
        saved = ckpt.load_checkpoint(run_dir)
        saved_cfg = PretrainConfig.from_dict(saved.config.get("training", {}))
        if saved.config.get("data_fingerprint") not in (None, fingerprint):
            raise ValueError(
                f"{saved.path}: this run was trained on other data (fingerprint "
                f"{saved.config.get('data_fingerprint')}, now {fingerprint}); resume needs the same windows"
            )
        if saved.config.get("validation_fingerprint") != val_fingerprint:
            raise ValueError(
                f"{saved.path}: this run was validated on other windows (fingerprint "
                f"{saved.config.get('validation_fingerprint')}, now {val_fingerprint}); "
                "resume needs the same validation windows"
            )
        encoder_config = saved.encoder_config
        config = dataclasses.replace(saved_cfg, epochs=config.epochs, device=config.device)
        start_epoch, state = saved.epoch, saved.state_dict
        optimizer_state = saved.load_optimizer_state()
        logged = truncate_metrics(run_dir / METRICS, start_epoch) if rank == 0 else []
        history = saved.config.get("history") or [r for r in logged if r.get("kind") == "epoch"]
        stop.update(saved.config.get("early_stopping") or {})
        step_state = saved.config.get("step_state")
    elif has_checkpoint:
        raise FileExistsError(
            f"{run_dir}: already holds a checkpoint; pass resume=True (--resume) to continue it "
            "or choose another run directory"
        )
    elif rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / METRICS).unlink(missing_ok=True)
    if config.patience is not None and val is None:
        raise ValueError("patience (early stopping) needs validation windows")
    encoder_config = encoder_for_data(encoder_config, windows)
    if val is not None:
        encoder_for_data(encoder_config, val, "validation windows")

    torch.manual_seed(derived_seed(INIT, config.seed))
    encoder = ECGEncoder(encoder_config)
    objective = build_objective(
        config.objective, encoder, temperature=config.temperature,
        nt_xent_backend=config.nt_xent_backend, gather_distributed=world > 1,
        transform_weight=config.transform_weight, contrastive_weight=config.contrastive_weight,
    )
    if state is not None:
        objective.load_state_dict(state)
    objective.to(device)
    model = wrap_ddp(objective, ctx)
    stepper = TrainStep.build(config, model, objective, world, device)
    if optimizer_state is not None:
        stepper.optimizer.load_state_dict(optimizer_state)
        stepper.load_state_dict(step_state, str(ckpt.resolve_checkpoint(run_dir)))

    saved_config = {
        "encoder": encoder_config.to_dict(),
        "objective": config.objective,
        "training": config.to_dict(),
        "data_fingerprint": fingerprint,
        "validation_fingerprint": val_fingerprint,
        "n_windows": len(windows),
        "window_length": int(windows.shape[-1]),
        "world_size": world,
    }
    last_path = ckpt.resolve_checkpoint(run_dir) if start_epoch else None
    global_step = history[-1]["global_step"] if history else 0
    for epoch in range(start_epoch, config.epochs):
        if config.patience is not None and stop["bad_epochs"] >= config.patience:
            break
        batches = epoch_batches(len(windows), epoch, config, rank, world)
        torch.manual_seed(derived_seed(GLOBAL, config.seed, epoch, rank))
        model.train()
        records, losses, seen, t0 = [], [], 0, time.perf_counter()
        bar = tqdm(iter_batches(windows, batches, device, loader_workers), total=len(batches),
                   desc=f"pretrain {config.objective} epoch {epoch + 1}/{config.epochs}",
                   unit="batch", disable=not progress or rank != 0, leave=True, dynamic_ncols=True)
        for step, x in enumerate(bar):
            x = x.to(device, non_blocking=True)
            random = KeyedRandom.for_batch(derived_seed(AUGMENT, config.seed, epoch, rank, step),
                                           x.shape[0], device)
            loss, metrics, status = stepper(x, random, epoch, step, len(batches))
            if status == "diverged":
                where = f"epoch {epoch + 1}, step {step + 1}"
                kept = f"the last checkpoint ({last_path}) is untouched" if last_path else "no checkpoint was written yet"
                raise TrainingDivergedError(
                    f"loss became {loss.item()} at {where}; {kept}. Try a lower lr (now {config.lr})."
                )
            if status == "skipped":  # fp16: the scaler backed off; see ecgfast.precision
                continue
            global_step += 1
            seen += x.shape[0]
            losses.append(loss.item())
            rate = seen * world / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", win_s=f"{rate:.1f}")
            records.append({"kind": "step", "epoch": epoch + 1, "step": step + 1,
                            "global_step": global_step, "loss": losses[-1],
                            **{k: float(v) for k, v in metrics.items()}})
        elapsed = time.perf_counter() - t0
        epoch_record = {
            "kind": "epoch", "epoch": epoch + 1, "global_step": global_step,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "windows_per_s": seen * world / elapsed if elapsed > 0 else 0.0,
            "seconds": elapsed,
            **{k: float(np.mean([r[k] for r in records])) for k in metrics},
        }
        if val is not None:
            v0 = time.perf_counter()
            epoch_record["val_loss"] = validation_loss(objective, val, config, device, rank, world)
            epoch_record["val_seconds"] = time.perf_counter() - v0
            improved = epoch_record["val_loss"] < stop["best_loss"]
            if improved:
                stop.update(best_epoch=epoch + 1, best_loss=epoch_record["val_loss"], bad_epochs=0)
            else:
                stop["bad_epochs"] += 1
            epoch_record["best_epoch"] = stop["best_epoch"]
        history.append(epoch_record)
        state_config = {**saved_config, "history": history, "early_stopping": stop,
                        "step_state": stepper.state_dict()}
        if rank == 0:
            # metrics first: a resume drops records past its checkpoint, never misses one
            append_jsonl(run_dir / METRICS, records + [epoch_record])
            logged += records + [epoch_record]
            if val is not None and stop["best_epoch"] == epoch + 1:
                ckpt.save_checkpoint(run_dir / BEST, epoch=epoch + 1, keep=1,
                                     state_dict=objective.state_dict(), config=state_config)
            last_path = ckpt.save_checkpoint(
                run_dir, epoch=epoch + 1, state_dict=objective.state_dict(),
                config=state_config, optimizer_state=stepper.optimizer.state_dict(),
                keep=config.keep_checkpoints,
            )
            plot_training_curve(logged, run_dir / CURVE)
    if rank == 0 and last_path is None and has_checkpoint:
        last_path = ckpt.resolve_checkpoint(run_dir)
    encoder.eval()
    best_path = None
    if rank == 0 and stop["best_epoch"] is not None:
        best_path = ckpt.resolve_checkpoint(run_dir / BEST)
    stopped = config.patience is not None and stop["bad_epochs"] >= config.patience
    return PretrainResult(run_dir, last_path, history, encoder, best_path, stop["best_epoch"],
                          stopped)
