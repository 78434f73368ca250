"""What an ablation will cost, estimated before it starts from a short measured probe.

:func:`measure_rates` times a few training steps of the cell's objective (after one
warm-up step), a frozen-embedding pass and a supervised step on windows of the run's
length, with the run's precision and threads. :func:`estimate` turns the rates into an
upper bound of the wall time (every pretraining run going to ``max_epochs``; early
stopping only shortens it) and its parts.
"""

from __future__ import annotations

import time

import numpy as np
import torch


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN primitives
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def measure_rates(config, windows: np.ndarray, *, steps: int = 2) -> dict:
    """Windows/s of a pretraining step, a validation pass, a frozen embedding and a
    supervised step, measured on (up to a batch of) ``windows``."""
    from ecgfast.keyed import KeyedRandom
    from ecgfast.models import ECGEncoder
    from ecgfast.objectives import build_objective
    from ecgfast.precision import Precision
    from ecgfast.training import resolve_device

    device = resolve_device(config.device)
    enc_cfg = config.encoder_config(config.configs[-1], config.attention_settings[-1])
    n = min(config.batch_size, len(windows))
    x = torch.as_tensor(np.asarray(windows[:n], dtype=np.float32)).to(device)
    torch.manual_seed(0)
    encoder = ECGEncoder(enc_cfg).to(device)
    objective = build_objective(config.objective, encoder, augment=config.augment).to(device)
    opt = torch.optim.Adam(objective.parameters(), 1e-4)
    prec = Precision(config.precision, device)

    def train_step():
        with prec.autocast():
            loss, _ = objective(x, KeyedRandom.for_batch(0, n, device))
        opt.zero_grad(set_to_none=True)
        prec.scale(loss).backward()
        prec.step(opt)

    def validation_pass():
        with torch.no_grad(), prec.autocast():
            objective.eval()
            objective(x, KeyedRandom.for_batch(0, n, device))
            objective.train()

    def embed():
        with torch.no_grad():
            encoder.eval()
            encoder(x)
            encoder.train()

    head = torch.nn.Linear(encoder.embedding_dim, 2).to(device)

    def supervised_step():
        with prec.autocast():
            loss = head(encoder(x)).float().logsumexp(1).mean()
        loss.backward()

    rates = {name: n / _timed(fn, steps) for name, fn in (
        ("pretrain", train_step), ("validation", validation_pass), ("embed", embed),
        ("supervised", supervised_step))}
    return {"windows_per_s": rates, "probe_windows": n, "probe_steps": steps,
            "precision": prec.name, "threads": torch.get_num_threads(), "device": str(device)}


def estimate(config, rates: dict, *, n_labelled: int, unit_sizes: list[tuple[int, int]],
             n_tasks: int, n_train_per_fold: list[int]) -> dict:
    """Upper bound of the run's wall time in seconds, by part. ``unit_sizes``: (train,
    validation) windows of every pretraining run of one cell; ``n_train_per_fold``: the
    labelled training windows of every (split, fold) of one seed."""
    r = rates["windows_per_s"]
    cells = len(config.configs) * len(config.attention_settings) * config.seeds
    per_unit = [config.max_epochs * (t / r["pretrain"] + v / r["validation"]) + n_labelled / r["embed"]
                for t, v in unit_sizes]
    steps_cap = config.max_steps_per_epoch
    if steps_cap is not None:  # an epoch of at most steps_cap batches
        per_unit = [config.max_epochs * (min(t, steps_cap * config.batch_size) / r["pretrain"]
                                         + v / r["validation"]) + n_labelled / r["embed"]
                    for t, v in unit_sizes]
    parts = {"pretraining": cells * float(sum(per_unit))}
    if "random" in config.baselines:
        parts["random_init"] = cells * n_labelled / r["embed"]
    if "supervised" in config.baselines:
        parts["supervised"] = config.seeds * n_tasks * config.supervised_epochs * float(
            sum(n_train_per_fold)) / r["supervised"]
    return {"seconds": float(sum(parts.values())), "parts": parts,
            "pretraining_runs": cells * len(unit_sizes), "assumes": "every pretraining run "
            "reaches max_epochs (early stopping only shortens it); probes not counted"}


def hours(seconds: float) -> str:
    """``1 h 05 min``, ``12 min`` or ``40 s``."""
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
