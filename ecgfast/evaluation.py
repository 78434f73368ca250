"""Linear-ish probing of frozen embeddings for arousal, valence or any labelled task.

The encoder is frozen; its 128-d embeddings of every window are standardised (with the
training fold's statistics) and a small MLP is trained per label. Two protocols:

- ``split="subject"`` (default, the honest one): k-fold over subjects, so no subject is
  in both the training and the test fold.
- ``split="window"``: the SSL-ECG paper's window-level 10-fold; windows of one subject
  land on both sides, which is optimistic.

Reported per label: accuracy and macro-F1 (over all of the task's classes, binary or
multi-class), mean and std over folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ecgfast.models import ECGEncoder

SPLITS = ("subject", "window")
LABELS = ("arousal", "valence")


def default_tasks(available) -> list[str]:
    """Arousal and valence where ``available`` has them, otherwise every task."""
    available = list(available)
    return [t for t in LABELS if t in available] or available


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


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 2) -> float:
    """Unweighted mean over classes of F1 (a class absent from both counts as F1 = 0)."""
    scores = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def make_folds(n: int, split: str, *, groups: np.ndarray | None = None, n_folds: int | None = None,
               seed: int = 0) -> list[np.ndarray]:
    """Test-index arrays of each fold (the training fold is the rest).

    ``split="subject"`` needs ``groups`` (the subject of every window) and makes
    ``min(n_folds or 5, n_subjects)`` folds of whole subjects; ``split="window"`` shuffles
    windows into ``n_folds or 10`` folds.
    """
    rng = np.random.default_rng(seed)
    if split == "subject":
        if groups is None:
            raise ValueError("split='subject' needs the subject of every window (groups)")
        subjects = rng.permutation(np.unique(groups))
        k = min(n_folds or 5, len(subjects))
        if k < 2:
            raise ValueError(f"split='subject' needs at least 2 subjects, got {len(subjects)}")
        return [np.flatnonzero(np.isin(groups, part)) for part in np.array_split(subjects, k)]
    if split == "window":
        k = n_folds or 10
        if n < k:
            raise ValueError(f"split='window' with {k} folds needs at least {k} windows, got {n}")
        return list(np.array_split(rng.permutation(n), k))
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


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
    if n_classes is None:
        n_classes = int(max(2, y.max().item() + 1))
    elif n_classes < int(y.max().item()) + 1:
        raise ValueError(f"labels go up to {int(y.max().item())} but n_classes is {n_classes}")
    probe = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p.shape[-1])) ** 0.5)
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steps this small: handing work to threads costs more than it
    try:
        for _ in range(epochs):
            opt.zero_grad()
            loss_fn(probe(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return probe.eval()


def fit_probe(train_features: np.ndarray, train_labels: np.ndarray, *, seed: int = 0,
              **probe_kwargs):
    """Standardise with the training statistics, train :func:`train_probe`, and return
    ``predict(features (M, D)) -> (M,) class indices``."""
    train_features = np.asarray(train_features, dtype=np.float32)
    mu = train_features.mean(0)
    sd = train_features.std(0) + 1e-6
    probe = train_probe((train_features - mu) / sd, train_labels, seed=seed, **probe_kwargs)

    def predict(features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, dtype=np.float32) - mu) / sd
        with torch.no_grad():
            return probe(torch.as_tensor(z)).argmax(1).numpy()

    return predict


@dataclass
class ProbeScore:
    """Accuracy and macro-F1 per fold, with their mean and std."""

    accuracy: list[float]
    f1: list[float]

    def summary(self) -> dict:
        return {
            "accuracy_mean": float(np.mean(self.accuracy)),
            "accuracy_std": float(np.std(self.accuracy)),
            "f1_mean": float(np.mean(self.f1)),
            "f1_std": float(np.std(self.f1)),
            "accuracy_folds": [float(a) for a in self.accuracy],
            "f1_folds": [float(f) for f in self.f1],
        }


def probe_features(features: np.ndarray, labels: dict[str, np.ndarray], *, split: str = "subject",
                   groups: np.ndarray | None = None, n_folds: int | None = None,
                   seed: int = 0, n_classes: dict[str, int] | None = None,
                   **probe_kwargs) -> dict[str, dict]:
    """Cross-validated probe scores for every label in ``labels`` ({name: (N,) ints}).

    ``n_classes`` gives a task's number of classes (default: its largest label + 1, at
    least 2): the probe's output width and the classes macro-F1 averages over.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    folds = make_folds(len(features), split, groups=groups, n_folds=n_folds, seed=seed)
    results = {}
    for name, y in labels.items():
        y = np.asarray(y)
        if y.shape != (len(features),):
            raise ValueError(f"labels[{name!r}] must be ({len(features)},), got shape {y.shape}")
        if y.size and y.min() < 0:
            raise ValueError(f"labels[{name!r}] must be class indices >= 0, got {int(y.min())}")
        k = (n_classes or {}).get(name) or int(max(2, y.max() + 1 if y.size else 2))
        score = ProbeScore([], [])
        for test in folds:
            train = np.setdiff1d(np.arange(len(features)), test)
            pred = fit_probe(features[train], y[train], seed=seed, n_classes=k,
                             **probe_kwargs)(features[test])
            score.accuracy.append(float(np.mean(pred == y[test])))
            score.f1.append(macro_f1(y[test], pred, k))
        results[name] = {**score.summary(), "split": split, "n_folds": len(folds)}
    return results


def evaluate_encoder(encoder: ECGEncoder, windows, labels: dict[str, np.ndarray], *,
                     split: str = "subject", groups: np.ndarray | None = None,
                     n_folds: int | None = None, seed: int = 0, device="cpu",
                     progress: bool = False, n_classes: dict[str, int] | None = None,
                     **probe_kwargs) -> dict[str, dict]:
    """Embed ``windows`` with the frozen encoder, then :func:`probe_features`.

    ``probe_kwargs`` go to :func:`train_probe` (hidden, epochs, lr, weight_decay).
    """
    features = extract_features(encoder, windows, device=device, progress=progress)
    return probe_features(features, labels, split=split, groups=groups, n_folds=n_folds,
                          seed=seed, n_classes=n_classes, **probe_kwargs)


def format_table(rows: dict[str, dict[str, dict]], tasks: tuple[str, ...] | None = None) -> str:
    """A text table: one row per model, accuracy / macro-F1 (%) per task.

    ``tasks`` defaults to every task in ``rows``, arousal and valence first (both columns
    whenever either is there).
    """
    found = [t for res in rows.values() for t in res]
    first = LABELS if set(LABELS) & set(found) or not found else ()
    tasks = tasks or tuple(dict.fromkeys([*first, *found]))
    wide = {lab: max(16, len(lab) + 5) for lab in tasks}
    head = f"{'model':<24}" + "".join(f"{lab + ' acc':>{wide[lab]}}{lab + ' F1':>{wide[lab]}}"
                                      for lab in tasks)
    lines = [head, "-" * len(head)]
    for model, res in rows.items():
        cells = ""
        for lab in tasks:
            r, pad = res.get(lab), wide[lab] - 6
            if r is None:
                cells += f"{'-':>{wide[lab]}}{'-':>{wide[lab]}}"
                continue
            cells += f"{100 * r['accuracy_mean']:>{pad}.1f} ± {100 * r['accuracy_std']:<3.1f}"
            cells += f"{100 * r['f1_mean']:>{pad}.1f} ± {100 * r['f1_std']:<3.1f}"
        lines.append(f"{model:<24}{cells}")
    return "\n".join(lines)


# ======================================================================================
# Probe accuracy of two encoders' embeddings of the same windows (e.g. fp32 and INT8;
# used by ecgfast.export.quantize_onnx)
# ======================================================================================


def standard_error(values) -> float | None:
    """Standard error of the mean of ``values`` (None for None or fewer than 2 values)."""
    if values is None or len(values) < 2:
        return None
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def linear_probe_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: list[np.ndarray],
    test_labels: np.ndarray,
    **probe_kwargs,
) -> list[float]:
    """Accuracy of one probe (:func:`fit_probe`) fit on ``train_features``, scored on every
    array in ``test_features``, so fp32 and INT8 features of the same windows are compared
    like for like."""
    predict = fit_probe(train_features, np.asarray(train_labels).astype(np.int64), **probe_kwargs)
    return [float((predict(f) == test_labels).mean()) for f in test_features]


def compare_probe_accuracy(
    fp32_features: np.ndarray, int8_features: np.ndarray, labels: np.ndarray, splits: int = 5
) -> dict:
    """Probe accuracy of two encoders' embeddings of the same labelled windows.

    For each of ``splits`` seeded half/half splits: a probe fit on the fp32 embeddings of
    one half scores the fp32 and the INT8 embeddings of the other half, and a probe fit on
    the INT8 embeddings of the first half scores the INT8 embeddings of the second.

    Returns: {"fp32", "int8", "int8_fp32_probe": mean accuracies; "change_per_split":
    INT8 - fp32 accuracy per split; "change_se": its standard error over the splits (None
    for one split; the splits share windows, so it understates the uncertainty);
    "fp32_probe_change_per_split": the fp32 probe's accuracy on INT8 minus on fp32
    embeddings, per split}.
    """
    acc32, acc8, swap = [], [], []
    for seed in range(splits):
        order = np.random.default_rng(seed).permutation(len(labels))
        train, test = order[: len(order) // 2], order[len(order) // 2 :]
        a32, a_swap = linear_probe_accuracy(
            fp32_features[train],
            labels[train],
            [fp32_features[test], int8_features[test]],
            labels[test],
        )
        (a8,) = linear_probe_accuracy(
            int8_features[train], labels[train], [int8_features[test]], labels[test]
        )
        acc32.append(a32)
        acc8.append(a8)
        swap.append(a_swap)
    change = [b - a for a, b in zip(acc32, acc8)]
    return {
        "fp32": float(np.mean(acc32)),
        "int8": float(np.mean(acc8)),
        "int8_fp32_probe": float(np.mean(swap)),
        "change_per_split": change,
        "change_se": standard_error(change),
        "fp32_probe_change_per_split": [b - a for a, b in zip(acc32, swap)],
    }
