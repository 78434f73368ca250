"""Summaries of cross-validated scores and paired differences with their intervals.

Scores come as a grid: one list of fold scores per seed (each seed reshuffles the folds,
and re-initialises or re-pretrains what depends on it). Two feature sets probed with
the same seeds are paired fold by fold: the same test windows, the same training windows.

The interval of a mean paired difference is the *corrected repeated k-fold t interval*
(Nadeau & Bengio 2003, "Inference for the generalization error"; Bouckaert & Frank 2004):
over the n = seeds x folds differences d,

    mean(d) ± t(0.975, n - 1) * sd(d) * sqrt(1/n + n_test/n_train)

A plain t interval (sd / sqrt(n)) treats the n differences as independent; they are not
(every two folds of a seed share most of their training windows, every seed reuses the
windows), and it is too narrow. The n_test/n_train term is Nadeau and Bengio's correction
for that overlap. A bootstrap over subjects would capture subject-to-subject variation
but not the training randomness across seeds; the corrected t covers both, coarsely.
"""

from __future__ import annotations

import math

import numpy as np

INTERVAL = ("95 % corrected repeated k-fold t interval (Nadeau & Bengio 2003) over the "
            "seeds x folds paired differences: mean ± t(0.975, n-1) sd sqrt(1/n + "
            "n_test/n_train)")


def stats(values) -> dict:
    """mean, sd (ddof 1; None for one value) and n of the finite ``values``."""
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    sd = float(v.std(ddof=1)) if v.size > 1 else None
    return {"mean": float(v.mean()) if v.size else math.nan, "sd": sd, "n": int(v.size)}


def corrected_t_interval(diffs, test_train_ratio: float) -> dict:
    """Mean of ``diffs`` with its corrected 95 % t interval (see the module docstring);
    ``test_train_ratio`` = n_test / n_train of a fold (0 gives the plain t interval).
    None bounds when fewer than 2 finite differences."""
    from scipy import stats as sps

    s = stats(diffs)
    if s["sd"] is None:
        return {**s, "low": None, "high": None}
    half = float(sps.t.ppf(0.975, s["n"] - 1)) * s["sd"] * math.sqrt(
        1.0 / s["n"] + test_train_ratio)
    return {**s, "low": s["mean"] - half, "high": s["mean"] + half}


def paired_difference(a: list[list[float]], b: list[list[float]], test_train_ratio: float) -> dict:
    """``a - b`` paired by (seed, fold), both [seed][fold] grids of one shape, with
    :func:`corrected_t_interval`, and ``verdict``: "ahead" / "behind" when the interval
    lies above / below 0, else "tied"."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: grids of shapes {a.shape} and {b.shape} do not pair")
    out = corrected_t_interval((a - b).ravel(), test_train_ratio)
    low, high = out["low"], out["high"]
    out["verdict"] = ("ahead" if low is not None and low > 0 else
                      "behind" if high is not None and high < 0 else "tied")
    return out


def test_train_ratio(n_test: list[int], n_total: int) -> float:
    """Mean over folds of n_test / n_train."""
    return float(np.mean([t / max(1, n_total - t) for t in n_test]))
