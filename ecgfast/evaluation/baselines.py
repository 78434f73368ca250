"""The baselines every learnt embedding is compared with (:data:`BASELINES`).

- ``hrv``: heart-rate and HRV features of each window (:mod:`ecgfast.hrv`), with the
  detection-failed indicator as one more column; a probe imputes the failed windows'
  features with its training rows' medians.
- ``random``: the randomly initialised encoder, one per seed (:func:`random_encoder`:
  the initialisation pretraining with that seed starts from, so a pretrained encoder and
  the random one of its seed differ only by the pretraining).
- ``supervised``: the same encoder trained end to end on each training fold's labels with
  a linear head, scored on that fold's test part (:func:`supervised_scores`): the upper
  reference of what the architecture can learn from the labels alone.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ecgfast.evaluation.metrics import fold_scores

BASELINES = ("hrv", "random", "supervised")
DEFAULT_BASELINES = ("hrv", "random")
FEATURE_MODES = ("encoder", "encoder+hrv")


def parse_baselines(value) -> tuple[str, ...]:
    """``"hrv,random"`` / a sequence / "" or "none" -> a tuple of :data:`BASELINES` names."""
    if value is None:
        return DEFAULT_BASELINES
    names = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(n.strip() for n in names if n.strip() and n.strip() != "none")
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise ValueError(f"baselines: {bad} not among {BASELINES}")
    return tuple(dict.fromkeys(names))


def parse_choices(value, allowed: tuple[str, ...], what: str, both: tuple[str, ...] | None = None):
    """``"a,b"`` / ``"both"`` / a sequence -> a tuple of ``allowed`` names (in order)."""
    if isinstance(value, str):
        names = list(both or allowed) if value == "both" else value.split(",")
    else:
        names = list(value)
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"{what}: {bad or '(none)'}: each must be one of {allowed}")
    return names


def hrv_matrix(windows, fs: float, *, progress: bool = False):
    """(:class:`ecgfast.hrv.HRVFeatures`, the (N, F + 1) matrix a probe gets)."""
    from ecgfast.hrv import hrv_features

    feats = hrv_features(windows, fs, progress=progress)
    return feats, feats.with_indicator()


def random_encoder(encoder_config, seed: int):
    """The encoder that :func:`ecgfast.training.pretrain` with ``seed`` starts from."""
    from ecgfast.models import ECGEncoder
    from ecgfast.training.seeds import seed_model_init

    seed_model_init(seed)
    return ECGEncoder(encoder_config).eval()


def _class_weights(y: np.ndarray, k: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    w = np.where(counts > 0, len(y) / (k * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(w, dtype=torch.float32)


def train_supervised(windows: np.ndarray, labels: np.ndarray, *, encoder_config, n_classes: int,
                     epochs: int = 10, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                     device="cpu", precision: str = "auto") -> nn.Module:
    """The encoder and a Linear(embedding, n_classes) head trained end to end with Adam on
    class-weighted cross-entropy (weights n / (C n_c): the classes count equally), in
    shuffled mini-batches; returns ``nn.Sequential(encoder, head)`` in eval mode."""
    from ecgfast.precision import Precision
    from ecgfast.training.seeds import GLOBAL, derived_seed

    device = torch.device(device)
    encoder = random_encoder(encoder_config, seed)
    model = nn.Sequential(encoder, nn.Linear(encoder.embedding_dim, n_classes)).to(device).train()
    prec = Precision(precision, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss(weight=_class_weights(labels, n_classes).to(device))
    x_all = torch.as_tensor(np.asarray(windows, dtype=np.float32))
    y_all = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    rng = np.random.default_rng(derived_seed(GLOBAL, seed))
    torch.manual_seed(derived_seed(GLOBAL, seed, 1))
    for _ in range(epochs):
        order = rng.permutation(len(y_all))
        for i in range(0, len(order), batch_size):
            idx = torch.as_tensor(order[i:i + batch_size])
            with prec.autocast():
                logits = model(x_all[idx].to(device))
            loss = loss_fn(logits.float(), y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            prec.scale(loss).backward()
            prec.step(opt)
    return model.eval()


@torch.no_grad()
def _predict_proba(model: nn.Module, windows: np.ndarray, device, batch_size: int = 64) -> np.ndarray:
    x = torch.as_tensor(np.asarray(windows, dtype=np.float32))
    out = [torch.softmax(model(x[i:i + batch_size].to(device)).double(), 1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def supervised_scores(windows: np.ndarray, labels: dict, folds: list[np.ndarray], *,
                      encoder_config, n_classes: dict, seed: int = 0, epochs: int = 10,
                      batch_size: int = 64, lr: float = 1e-3, device="cpu",
                      precision: str = "auto") -> dict[str, dict]:
    """:func:`train_supervised` on each fold's training windows (one model per task, seed
    ``seed``), scored on its test windows; the record of
    :func:`ecgfast.evaluation.protocol.score_folds`."""
    n = len(windows)
    out = {}
    for name, y in labels.items():
        y = np.asarray(y)
        rec: dict[str, list] = {}
        for test in folds:
            train = np.setdiff1d(np.arange(n), test)
            model = train_supervised(windows[train], y[train], encoder_config=encoder_config,
                                     n_classes=n_classes[name], epochs=epochs,
                                     batch_size=batch_size, lr=lr, seed=seed, device=device,
                                     precision=precision)
            scores = fold_scores(y[test], _predict_proba(model, windows[test], device),
                                 n_classes[name])
            for key, value in scores.items():
                rec.setdefault(key, []).append(value)
            rec.setdefault("n_test", []).append(len(test))
        out[name] = rec
    return out
