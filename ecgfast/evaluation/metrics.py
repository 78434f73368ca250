"""The scores of a probe on one test fold: accuracy, macro-F1, balanced accuracy, AUROC
(binary tasks), and the chance level (the majority-class rate of the fold)."""

from __future__ import annotations

import numpy as np

#: Scores of every fold; ``auroc`` only for binary tasks.
METRICS = ("accuracy", "f1", "balanced_accuracy", "auroc")
NAMES = {"accuracy": "Acc.", "f1": "F1", "balanced_accuracy": "Bal. acc.", "auroc": "AUROC"}


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


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of the recall of that class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the positive class 1 (the Mann-Whitney
    U statistic over n1 n0, ties counting one half); NaN when a class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(y_true) == 1
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def majority_rate(y_true: np.ndarray) -> float:
    """The share of the most frequent class: the accuracy of always predicting it."""
    counts = np.bincount(np.asarray(y_true))
    return float(counts.max() / counts.sum())


def fold_scores(y_true: np.ndarray, proba: np.ndarray, n_classes: int) -> dict:
    """Every :data:`METRICS` entry (``auroc`` for binary tasks only) and ``majority_rate``
    of one fold, from the class probabilities ``proba`` (M, n_classes)."""
    y_true = np.asarray(y_true)
    pred = np.asarray(proba).argmax(1)
    out = {"accuracy": float(np.mean(pred == y_true)), "f1": macro_f1(y_true, pred, n_classes),
           "balanced_accuracy": balanced_accuracy(y_true, pred),
           "majority_rate": majority_rate(y_true)}
    if n_classes == 2:
        out["auroc"] = auroc(y_true, np.asarray(proba)[:, 1])
    return out
