"""Encoders and baselines under every requested protocol: the rows ``ecgfast evaluate``
tabulates (see :mod:`ecgfast.evaluation.tables` for the row format).

Every seed s reshuffles the folds (``make_folds(seed=s)``), initialises the random
encoder of that seed and trains the probes with s; the frozen encoders and the HRV
features are probed on the same folds, so all rows pair by (seed, fold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ecgfast.evaluation.baselines import hrv_matrix, random_encoder, supervised_scores
from ecgfast.evaluation.probes import extract_features
from ecgfast.evaluation.protocol import make_folds, score_folds


@dataclass
class Source:
    """A feature set: ``features(seed)`` gives its (N, D) matrix (or one per fold)."""

    name: str
    kind: str
    features_mode: str
    features: Callable[[int], object]
    configuration: str | None = None


def grid_of(per_seed: list[dict]) -> dict:
    """[{task: {metric: [folds]}} per seed] -> {task: {metric: [[folds] per seed]}}."""
    out: dict = {}
    for rec in per_seed:
        for task, metrics in rec.items():
            for key, folds in metrics.items():
                out.setdefault(task, {}).setdefault(key, []).append(list(folds))
    return out


def probe_rows(sources: list[Source], labels: dict, folds_of: Callable[[int], list], *,
               seeds: list[int], split: str, groups, probes, calibrations, n_classes: dict,
               **probe_kwargs) -> list[dict]:
    """One row per (source, probe, calibration) with every seed's fold scores."""
    rows = []
    for src in sources:
        per_seed = {(p, c): [] for p in probes for c in calibrations}
        for seed in seeds:
            feats = src.features(seed)
            for p in probes:
                for c in calibrations:
                    per_seed[(p, c)].append(score_folds(
                        feats, labels, folds_of(seed), groups=groups, probe=p, calibration=c,
                        seed=seed, n_classes=n_classes, **probe_kwargs))
        for (p, c), recs in per_seed.items():
            rows.append({"name": src.name, "kind": src.kind, "features": src.features_mode,
                         "configuration": src.configuration, "probe": p, "calibration": c,
                         "split": split, "seeds": list(seeds), "scores": grid_of(recs)})
    return rows


def evaluate_suite(encoders: dict, cohort, tasks: list[str], *, split: str = "subject",
                   n_folds: int | None = None, seeds: list[int] = (0,), probes=("linear",),
                   calibrations=("none",), baselines=("hrv", "random"),
                   features_modes=("encoder",), random_config=None,
                   supervised: dict | None = None, device="cpu", progress: bool = False,
                   **probe_kwargs) -> dict:
    """Rows of ``encoders`` ({name: frozen encoder}) and the ``baselines`` on ``cohort``.

    ``random_config``: the :class:`~ecgfast.models.EncoderConfig` of the random encoders;
    ``supervised``: options of :func:`~ecgfast.evaluation.baselines.supervised_scores`
    (epochs, batch_size, lr, precision; the encoder is ``random_config``). Returns
    {"rows": [...], "hrv": summary of the detection or None}.
    """
    seeds = list(seeds)
    labels = {t: cohort.labels[t] for t in tasks}
    n_classes = {t: len(cohort.classes[t]) for t in tasks}
    folds = {s: make_folds(len(cohort), split, groups=cohort.subject, n_folds=n_folds, seed=s)
             for s in seeds}
    need_hrv = "hrv" in baselines or "encoder+hrv" in features_modes
    hrv, hrv_x = hrv_matrix(cohort.windows, cohort.fs, progress=progress) if need_hrv else (None, None)

    def modes(name, kind, get, configuration=None):
        out = []
        for mode in features_modes:
            if mode == "encoder":
                out.append(Source(name, kind, mode, get, configuration))
            else:
                out.append(Source(f"{name} + HRV", kind, mode,
                                  lambda s, get=get: np.concatenate([get(s), hrv_x], axis=1),
                                  configuration))
        return out

    cache: dict = {}

    def embed(key, make):
        if key not in cache:
            cache[key] = extract_features(make(), cohort.windows, device=device, progress=progress)
        return cache[key]

    sources = []
    if "hrv" in baselines:
        sources.append(Source("HRV features", "hrv", "hrv", lambda s: hrv_x))
    if "random" in baselines:
        if random_config is None:
            raise ValueError("the random baseline needs random_config (an EncoderConfig)")
        sources += modes("random init", "random",
                         lambda s: embed(("random", s), lambda: random_encoder(random_config, s)))
    for name, enc in encoders.items():
        sources += modes(str(name), "encoder", lambda s, name=name, enc=enc: embed(name, lambda: enc))
    rows = probe_rows(sources, labels, folds.__getitem__, seeds=seeds, split=split,
                      groups=cohort.subject, probes=probes, calibrations=calibrations,
                      n_classes=n_classes, **probe_kwargs)
    if "supervised" in baselines:
        opts = dict(supervised or {})
        recs = [supervised_scores(cohort.windows, labels, folds[s], encoder_config=random_config,
                                  n_classes=n_classes, seed=s, device=device, **opts)
                for s in seeds]
        rows.append({"name": "supervised (end to end)", "kind": "supervised", "features": "-",
                     "configuration": None, "probe": "end-to-end", "calibration": "none",
                     "split": split, "seeds": seeds, "scores": grid_of(recs)})
    return {"rows": rows, "hrv": hrv.summary() if hrv is not None else None}
