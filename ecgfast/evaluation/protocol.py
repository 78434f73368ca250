"""Cross-validated probing: folds, per-subject calibration, and the scores of every fold.

Two splits:

- ``split="subject"`` (the honest one): k-fold over subjects, so no subject is in both
  the training and the test part of a fold.
- ``split="window"``: the SSL-ECG paper's window-level 10-fold; windows of one subject
  land on both sides, which is optimistic.

Two calibrations (:data:`CALIBRATIONS`):

- ``"none"``: features as they are; the probe standardises them with its training rows.
- ``"subject"``: every feature standardised within each subject with the mean and SD of
  that subject's windows, before the folds (:func:`calibrate_within_subject`). It uses
  the test subjects' *unlabelled* windows, so it is transductive (what a deployed model
  could do only after seeing some of a new user's data), and every table says so.
"""

from __future__ import annotations

import numpy as np

from ecgfast.evaluation.metrics import METRICS, fold_scores
from ecgfast.evaluation.probes import PROBES, fit_probe

SPLITS = ("subject", "window")
CALIBRATIONS = ("none", "subject")
LABELS = ("arousal", "valence")
CALIBRATION_TEXT = {
    "none": "no calibration (each probe standardises features with its training folds)",
    "subject": "per-subject calibration: features standardised within each subject with "
               "that subject's unlabelled windows, test subjects included (transductive)",
}


def default_tasks(available) -> list[str]:
    """Arousal and valence where ``available`` has them, otherwise every task."""
    available = list(available)
    return [t for t in LABELS if t in available] or available


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


def calibrate_within_subject(features: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``features`` (N, D) with every column standardised within each subject of
    ``groups`` (N,): minus that subject's mean, over its SD (1 where the SD is 0 or
    undefined). NaN entries stay NaN and are left out of the statistics. No labels."""
    x = np.array(features, dtype=np.float32)
    groups = np.asarray(groups)
    if groups.shape != (x.shape[0],):
        raise ValueError(f"groups must be ({x.shape[0]},), got shape {groups.shape}")
    for s in np.unique(groups):
        rows = groups == s
        block = x[rows]
        finite = np.isfinite(block)
        n = finite.sum(0)
        filled = np.where(finite, block, 0.0)
        mean = filled.sum(0) / np.maximum(n, 1)
        var = (np.where(finite, block - mean, 0.0) ** 2).sum(0) / np.maximum(n, 1)
        sd = np.sqrt(var)
        sd[~(sd > 1e-6)] = 1.0
        x[rows] = (block - mean) / sd
    return x


def calibrate(features: np.ndarray, groups: np.ndarray, calibration: str) -> np.ndarray:
    """:func:`calibrate_within_subject` for ``"subject"``, ``features`` for ``"none"``."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    return features if calibration == "none" else calibrate_within_subject(features, groups)


def _check_labels(labels: dict, n: int) -> dict:
    out = {}
    for name, y in labels.items():
        y = np.asarray(y)
        if y.shape != (n,):
            raise ValueError(f"labels[{name!r}] must be ({n},), got shape {y.shape}")
        if y.size and y.min() < 0:
            raise ValueError(f"labels[{name!r}] must be class indices >= 0, got {int(y.min())}")
        out[name] = y
    return out


def score_folds(features, labels: dict, folds: list[np.ndarray], *, groups=None,
                probe: str = "mlp", calibration: str = "none", seed: int = 0,
                n_classes: dict | None = None, **probe_kwargs) -> dict[str, dict]:
    """Train a ``probe`` on each fold's training part and score its test part.

    ``features``: (N, D), or a list of one (N, D) array per fold (e.g. embeddings by an
    encoder pretrained on that fold's training subjects). Returns {task: {metric: [one
    score per fold], "majority_rate": [...], "n_test": [...]}}.
    """
    per_fold = isinstance(features, (list, tuple))
    if per_fold and len(features) != len(folds):
        raise ValueError(f"{len(features)} feature arrays for {len(folds)} folds")
    arrays = list(features) if per_fold else [features]
    arrays = [np.asarray(f, dtype=np.float32) for f in arrays]
    n = arrays[0].shape[0]
    for f in arrays:
        if f.ndim != 2 or f.shape[0] != n:
            raise ValueError(f"features must be (N, D) with N = {n}, got shape {f.shape}")
    if calibration != "none" and groups is None:
        raise ValueError("calibration='subject' needs the subject of every window (groups)")
    arrays = [calibrate(f, groups, calibration) for f in arrays]
    labels = _check_labels(labels, n)
    out = {}
    for name, y in labels.items():
        k = (n_classes or {}).get(name) or int(max(2, y.max() + 1 if y.size else 2))
        rec: dict[str, list] = {}
        for i, test in enumerate(folds):
            x = arrays[i if per_fold else 0]
            train = np.setdiff1d(np.arange(n), test)
            fitted = fit_probe(x[train], y[train], kind=probe, seed=seed, n_classes=k,
                               **probe_kwargs)
            for key, value in fold_scores(y[test], fitted.proba(x[test]), k).items():
                rec.setdefault(key, []).append(value)
            rec.setdefault("n_test", []).append(len(test))
        out[name] = rec
    return out


def summarise_folds(rec: dict) -> dict:
    """``<metric>_folds``, ``<metric>_mean`` and ``<metric>_std`` (over folds) of one
    task's :func:`score_folds` record."""
    out = {"n_test_folds": list(rec["n_test"])}
    for key in (*METRICS, "majority_rate"):
        if key in rec:
            v = np.asarray(rec[key], dtype=np.float64)
            out[f"{key}_folds"] = [float(x) for x in v]
            out[f"{key}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            out[f"{key}_std"] = float(np.nanstd(v)) if np.isfinite(v).any() else float("nan")
    return out


def probe_features(features, labels: dict[str, np.ndarray], *, split: str = "subject",
                   groups: np.ndarray | None = None, n_folds: int | None = None,
                   seed: int = 0, n_classes: dict[str, int] | None = None, probe: str = "mlp",
                   calibration: str = "none", **probe_kwargs) -> dict[str, dict]:
    """Cross-validated probe scores for every label in ``labels`` ({name: (N,) ints}):
    folds from :func:`make_folds` (``seed``), then :func:`score_folds`.

    ``n_classes`` gives a task's number of classes (default: its largest label + 1, at
    least 2): the probe's output width and the classes macro-F1 averages over. Returns
    {task: :func:`summarise_folds` plus ``split``, ``n_folds``, ``probe``, ``calibration``}.
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    n = len(features[0]) if isinstance(features, (list, tuple)) else len(features)
    folds = make_folds(n, split, groups=groups, n_folds=n_folds, seed=seed)
    recs = score_folds(features, labels, folds, groups=groups, probe=probe,
                       calibration=calibration, seed=seed, n_classes=n_classes, **probe_kwargs)
    return {name: {**summarise_folds(rec), "split": split, "n_folds": len(folds), "probe": probe,
                   "calibration": calibration} for name, rec in recs.items()}
