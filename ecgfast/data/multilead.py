"""Windows of a multi-lead (C, n) recording: each lead through the single-lead chain of
:mod:`ecgfast.data.windowing` with its own z-score statistics, the leads stacked into
(k, C, L) windows, and a window kept only when no lead is flat in it (docs/design.md: windows
are (leads, samples)). :func:`iter_lead_windows` works batch by batch on long recordings
(``ecgfast embed``); :func:`preprocess_leads` is its one-batch, in-memory case
(``ecgfast prepare``), as :func:`~ecgfast.data.preprocess` is of
:func:`~ecgfast.data.iter_windows`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from ecgfast.data.windowing import Windows, iter_windows


def iter_lead_windows(signal, fs: float, *, source: str = "signal", **kwargs) -> Iterator[Windows]:
    """:func:`ecgfast.data.iter_windows` for a (C, n) recording: yields
    :class:`~ecgfast.data.Windows` whose ``windows`` are (k, C, L).

    ``kwargs`` are :func:`~ecgfast.data.iter_windows`' (``batch_windows``, ``overlap``,
    the other :class:`~ecgfast.data.Preprocessing` settings, ...), applied to every lead.
    Batch j of every lead covers the same windows, and a window is kept when it is kept
    in every lead (``n_skipped_flat`` counts the windows flat in at least one lead).
    Arguments are checked, and the statistics computed, when this is called.
    """
    signal = np.asarray(signal)
    if signal.ndim != 2 or signal.shape[0] < 1:
        raise ValueError(f"{source}: expected a (leads, samples) signal, got shape {signal.shape}")
    per_lead = [iter_windows(row, fs, source=f"{source} lead {c}", **kwargs)
                for c, row in enumerate(signal)]
    return _joined(per_lead, source)


def preprocess_leads(signal, fs: float, *, source: str = "signal", **options) -> Windows:
    """The whole chain on an in-memory (C, n) recording: one :class:`~ecgfast.data.Windows`
    of (k, C, L) windows (``options``: :class:`~ecgfast.data.Preprocessing` settings)."""
    (only,) = iter_lead_windows(signal, fs, source=source, batch_windows=np.iinfo(np.int64).max,
                                chunk_seconds=math.inf, **options)
    return only


def _joined(per_lead: list, source: str) -> Iterator[Windows]:
    for batches in zip(*per_lead):
        first = batches[0]
        total = len(first) + first.n_skipped_flat
        common = first.starts_s
        for b in batches[1:]:
            common = np.intersect1d(common, b.starts_s)
        windows = np.stack([b.windows[np.isin(b.starts_s, common)] for b in batches], axis=1)
        yield replace(first, windows=windows, starts_s=common,
                      n_skipped_flat=total - len(common), source=source)
