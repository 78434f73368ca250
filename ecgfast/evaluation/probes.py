"""Frozen embeddings and the probes trained on them.

- :func:`extract_features`: the encoder's embeddings of windows (eval mode, no grad).
- :func:`train_linear`: multinomial logistic regression (L2, full-batch L-BFGS): the
  usual linear evaluation of a representation.
- :func:`train_probe`: a Linear -> ReLU -> Linear MLP (full-batch Adam).
- :func:`fit_probe`: either, on features standardised with the training rows' mean and
  SD after NaN entries (failed HRV windows) are replaced by the training rows' median;
  returns a :class:`FittedProbe` (call it for class indices, ``.proba`` for probabilities).

Both probes run with one torch thread: their steps are too small for a second thread to
pay (benchmarks/README.md), and it keeps them fast on a loaded machine.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ecgfast.models import ECGEncoder

PROBES = ("linear", "mlp")


@torch.no_grad()
def extract_features(encoder: ECGEncoder, windows, *, batch_size: int = 64,
                     device: str | torch.device = "cpu", progress: bool = False) -> np.ndarray:
    """Embeddings (N, D) float32 of windows (N, L) with the encoder in eval mode.

    ``batch_size`` bounds memory and does not change the result (each window is embedded
    on its own); the default is the faster of those measured on a 2-core CPU
    (benchmarks/README.md).
    """
    windows = torch.as_tensor(np.asarray(windows, dtype=np.float32))
    was_training = encoder.training
    encoder.eval().to(device)
    out = []
    starts = range(0, windows.shape[0], batch_size)
    for i in tqdm(starts, desc="embedding", unit="batch", disable=not progress):
        out.append(encoder(windows[i:i + batch_size].to(device)).float().cpu())
    encoder.train(was_training)
    return torch.cat(out).numpy()


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _class_count(y: torch.Tensor, n_classes: int | None) -> int:
    top = int(y.max().item()) + 1 if y.numel() else 2
    if n_classes is None:
        return max(2, top)
    if n_classes < top:
        raise ValueError(f"labels go up to {top - 1} but n_classes is {n_classes}")
    return n_classes


def train_probe(features: np.ndarray, labels: np.ndarray, *, hidden: int = 64, epochs: int = 300,
                lr: float = 1e-2, weight_decay: float = 1e-3, seed: int = 0,
                n_classes: int | None = None) -> nn.Module:
    """A Linear(D, hidden) -> ReLU -> Linear(hidden, C) probe, full-batch Adam.

    C is ``n_classes`` (default: the largest label + 1, at least 2); give it when a
    training fold may lack the task's last class, so the output width stays the task's.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    n_classes = _class_count(y, n_classes)
    probe = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p.shape[-1])) ** 0.5)
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    with _one_thread():
        for _ in range(epochs):
            opt.zero_grad()
            loss_fn(probe(x), y).backward()
            opt.step()
    return probe.eval()


def train_linear(features: np.ndarray, labels: np.ndarray, *, c: float = 1.0,
                 max_iter: int = 200, n_classes: int | None = None, **_ignored) -> nn.Module:
    """Multinomial logistic regression ``Linear(D, C)``: minimises the mean cross-entropy
    plus ``|W|^2 / (2 c n)`` (scikit-learn's ``LogisticRegression(C=c)`` objective divided by
    n; the bias is not penalised), full batch, L-BFGS with a strong-Wolfe line search,
    from zero weights (deterministic). MLP options (``epochs``, ``seed``...) are ignored.
    """
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    n_classes = _class_count(y, n_classes)
    if not c > 0:
        raise ValueError(f"c (inverse L2 strength) must be > 0, got {c}")
    model = nn.Linear(x.shape[1], n_classes).double()
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20)
    penalty = 1.0 / (2.0 * c * max(1, x.shape[0]))

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + penalty * model.weight.pow(2).sum()
        loss.backward()
        return loss

    with _one_thread():
        opt.step(closure)
    return model.float().eval()


class FittedProbe:
    """A probe with the imputation and standardisation of its training rows.

    ``probe(features)`` -> (M,) class indices; ``probe.proba(features)`` -> (M, C)."""

    def __init__(self, model: nn.Module, median: np.ndarray, mean: np.ndarray, sd: np.ndarray):
        self.model, self.median, self.mean, self.sd = model, median, mean, sd

    def transform(self, features: np.ndarray) -> np.ndarray:
        x = np.array(features, dtype=np.float32)
        holes = np.isnan(x)
        if holes.any():
            x[holes] = np.broadcast_to(self.median, x.shape)[holes]
        return (x - self.mean) / self.sd

    def proba(self, features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.model(torch.as_tensor(self.transform(features)))
        return torch.softmax(logits.double(), 1).numpy()

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.proba(features).argmax(1)


def fit_probe(train_features: np.ndarray, train_labels: np.ndarray, *, kind: str = "mlp",
              seed: int = 0, **probe_kwargs) -> FittedProbe:
    """Impute NaN entries with the training rows' column medians (0 for a column with no
    value), standardise with the training mean and SD, train a ``kind`` probe
    (:func:`train_linear` or :func:`train_probe`, ``probe_kwargs`` to it)."""
    if kind not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")
    x = np.asarray(train_features, dtype=np.float32)
    with np.errstate(all="ignore"), _quiet_nan_warnings():
        median = np.nan_to_num(np.nanmedian(x, axis=0)) if np.isnan(x).any() else np.zeros(x.shape[1])
    fitted = FittedProbe(None, median.astype(np.float32), 0.0, 1.0)
    z = fitted.transform(x)
    fitted.mean = z.mean(0)
    fitted.sd = z.std(0) + 1e-6
    z = (z - fitted.mean) / fitted.sd
    train = train_linear if kind == "linear" else train_probe
    fitted.model = train(z, train_labels, seed=seed, **probe_kwargs)
    return fitted


@contextlib.contextmanager
def _quiet_nan_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
