"""Probe accuracy of two encoders' embeddings of the same windows (e.g. fp32 and INT8;
used by :func:`ecgfast.export.quantize_onnx`)."""

from __future__ import annotations

import numpy as np

from ecgfast.evaluation.probes import fit_probe


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
