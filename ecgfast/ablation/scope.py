"""Which windows each pretraining run of an ablation sees: never a probe's test subject,
unless the user says so.

Three scopes (:func:`pretraining_scope`):

- ``"per-fold"`` (``--pretrain-data`` absent or the same source as ``--data``): every
  probe fold has its own pretraining run on the windows of that fold's training part;
  its early-stopping subjects are drawn from those training subjects. The test part of
  a fold is never seen in pretraining (checked with :func:`check_disjoint`).
- ``"separate"`` (another source): one pretraining run per cell on the other source,
  after checking that it shares no window with the labelled data and is not the same
  dataset (:func:`check_separate`).
- ``"transductive"`` (``--transductive``): one pretraining run per cell on every
  labelled window but those of the early-stopping subjects, test subjects included, as
  much of the literature does; stated in every table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

SCOPE_TEXT = {
    "per-fold": "pretrained per probe fold on that fold's training windows only (no test "
                "subject is seen in pretraining; checked)",
    "separate": "pretrained on a separate source that shares no window and no dataset with "
                "the labelled data (checked)",
    "transductive": "TRANSDUCTIVE: pretrained once on the labelled windows of all subjects, "
                    "the probes' test subjects included",
}


@dataclass(frozen=True)
class Unit:
    """One pretraining run of a cell: ``name`` (its folder), the split and fold it serves
    (None, None: every fold), and the indices of its training and validation windows
    into the pretraining source."""

    name: str
    split: str | None
    fold: int | None
    train: np.ndarray
    validation: np.ndarray


def validation_subjects(subject: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The subjects held out of pretraining for early stopping (at least one, never all)."""
    subjects = np.unique(subject)
    if subjects.size < 2:
        raise ValueError(f"pretraining with early stopping needs at least 2 subjects, got "
                         f"{subjects.size}")
    k = min(subjects.size - 1, max(1, round(fraction * subjects.size)))
    return np.sort(np.random.default_rng(seed).permutation(subjects)[:k])


def _split_off_validation(index: np.ndarray, subject, fraction: float, seed: int):
    """(train, validation) indices: validation = the windows of held-out subjects (or, for
    a source without subjects, a seeded ``fraction`` of the windows)."""
    if subject is None:
        order = np.random.default_rng(seed).permutation(index)
        k = min(len(order) - 1, max(1, round(fraction * len(order))))
        return np.sort(order[k:]), np.sort(order[:k])
    held = validation_subjects(subject[index], fraction, seed)
    is_val = np.isin(subject[index], held)
    return index[~is_val], index[is_val]


def window_hashes(windows) -> set[bytes]:
    """A digest of every window's float32 bytes."""
    w = np.ascontiguousarray(np.asarray(windows, dtype=np.float32))
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in w.reshape(len(w), -1)}


def check_disjoint(units: list[Unit], folds: dict, subject: np.ndarray) -> None:
    """Raise if a per-fold unit's pretraining windows include a subject of its test fold."""
    for u in units:
        test_subjects = set(np.unique(subject[folds[u.split][u.fold]]).tolist())
        seen = set(np.unique(subject[np.concatenate([u.train, u.validation])]).tolist())
        if u.split == "subject" and test_subjects & seen:
            raise RuntimeError(f"{u.name}: test subjects {sorted(test_subjects & seen)} would be "
                               "seen in pretraining")
        if len(np.intersect1d(folds[u.split][u.fold], np.concatenate([u.train, u.validation]))):
            raise RuntimeError(f"{u.name}: test windows would be seen in pretraining")


def check_separate(labelled, source, source_name: str, labelled_name: str) -> dict:
    """Check that the pretraining ``source`` (windows, or a cohort) and the ``labelled``
    cohort share no window and are not one dataset; returns what was checked."""
    src_windows = getattr(source, "windows", source)
    common = len(window_hashes(labelled.windows) & window_hashes(src_windows))
    ds_a = (getattr(labelled, "provenance", {}) or {}).get("dataset")
    ds_b = (getattr(source, "provenance", {}) or {}).get("dataset")
    if common or (ds_a is not None and ds_a == ds_b):
        why = f"{common} window(s) in common" if common else f"both are dataset {ds_a!r}"
        raise ValueError(
            f"--pretrain-data {source_name}: {why} with --data {labelled_name}, so the probes' "
            "test subjects could be seen in pretraining; give the same source to both "
            "(pretraining then runs per fold on the training subjects) or pass --transductive")
    return {"windows_in_common": 0, "labelled_dataset": ds_a, "pretraining_dataset": ds_b}


def pretraining_units(scope: str, folds: dict, *, n_source: int, subject_source, fraction: float,
                      seed: int) -> list[Unit]:
    """The pretraining runs of one cell with seed ``seed``. ``folds``: {split: [test
    indices]} of the labelled cohort (per-fold scope: the source *is* that cohort);
    ``subject_source``: the subject of every source window, or None."""
    everything = np.arange(n_source)
    if scope in ("separate", "transductive"):
        train, val = _split_off_validation(everything, subject_source, fraction, seed)
        return [Unit("all", None, None, train, val)]
    units = []
    for split, tests in folds.items():
        for k, test in enumerate(tests):
            train, val = _split_off_validation(np.setdiff1d(everything, test), subject_source,
                                               fraction, seed)
            units.append(Unit(f"{split}-fold{k}", split, k, train, val))
    return units
