"""Embed a whole recording, window by window, with an ONNX encoder.

The recording is pre-processed with the chain the model was trained with, read from the
file (:func:`serving_chain`; by default high-pass, resampling to 256 Hz, robust z-score
over the whole recording, 10 s windows: see :func:`ecgfast.data.iter_windows`), in
batches, so memory stays bounded by the batch size and the recording itself; the
embeddings (512 bytes a window) are collected and written once, atomically, at the end.
A multi-lead recording goes through the same chain lead by lead (each lead z-scored with
its own statistics, as the window store does) and a window is kept only when none of its
leads is a flat line (:func:`ecgfast.data.multilead.iter_lead_windows`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ecgfast.atomic import atomic_write
from ecgfast.data.contract import Preprocessing
from ecgfast.data.multilead import iter_lead_windows
from ecgfast.data.windowing import Windows, iter_windows


@dataclass
class EmbedSummary:
    """What :func:`embed_windows` wrote."""

    embeddings_path: Path
    starts_path: Path | None
    n_windows: int
    n_skipped_flat: int
    dim: int

    def __str__(self) -> str:
        where = str(self.embeddings_path)
        if self.starts_path is not None:
            where += f" (+ start times in {self.starts_path})"
        return (
            f"{self.n_windows} windows embedded ({self.dim}-d), "
            f"{self.n_skipped_flat} flat-line window(s) skipped -> {where}"
        )


def _outputs(out: Path) -> tuple[Path, Path | None]:
    if out.suffix == ".npz":
        return out, None
    if out.suffix == ".npy":
        return out, out.with_name(out.stem + ".starts.npy")
    raise ValueError(f"--out {out}: expected a .npy or .npz file name")


def embed_windows(
    encoder,
    batches: Iterable,
    out: str | os.PathLike,
    *,
    total: int | None = None,
    progress: bool = True,
) -> EmbedSummary:
    """Embed every batch of windows and write the embeddings and start times.

    Args:
        encoder: anything with ``.embed(windows (B, L) or (B, C, L)) -> (B, D)``, e.g.
            :class:`ecgfast.export.OnnxEncoder`.
        batches: iterable of :class:`ecgfast.data.Windows` (``windows``, ``starts_s``,
            ``n_skipped_flat``), e.g. from :func:`ecgfast.data.iter_windows` or
            :func:`ecgfast.data.multilead.iter_lead_windows`.
        out: ``X.npy`` (embeddings (N, D) float32, start times in seconds in
            ``X.starts.npy``) or ``X.npz`` (arrays ``embeddings`` and ``starts_s``).
        total: number of batches, for the progress bar.
    """
    out = Path(out)
    emb_path, starts_path = _outputs(out)
    embeddings, starts, skipped = [], [], 0
    for batch in tqdm(batches, total=total, desc="embedding", unit="batch", disable=not progress):
        skipped += batch.n_skipped_flat
        if len(batch.windows):
            embeddings.append(np.asarray(encoder.embed(batch.windows), dtype=np.float32))
            starts.append(np.asarray(batch.starts_s, dtype=np.float64))
    dim = embeddings[0].shape[1] if embeddings else 0
    emb = np.concatenate(embeddings) if embeddings else np.zeros((0, dim), np.float32)
    st = np.concatenate(starts) if starts else np.zeros((0,), np.float64)
    out.parent.mkdir(parents=True, exist_ok=True)
    if starts_path is None:
        atomic_write(emb_path, lambda p: np.savez(p, embeddings=emb, starts_s=st))
    else:
        atomic_write(starts_path, lambda p: np.save(p, st))
        atomic_write(emb_path, lambda p: np.save(p, emb))
    return EmbedSummary(emb_path, starts_path, len(emb), skipped, dim)


def serving_chain(encoder, overlap: float | None = None) -> Preprocessing:
    """The pre-processing to serve ``encoder`` (an :class:`~ecgfast.export.OnnxEncoder`)
    with: its file's recorded chain, else (a file exported before files recorded one)
    this version's default chain, with a warning that says so; ``overlap`` replaces the
    chain's own (serving may overlap windows the model saw without overlap)."""
    chain = encoder.preprocessing
    if chain is None:
        chain = Preprocessing()
        warnings.warn(f"{encoder.path.name} records no pre-processing (exported before ecgfast "
                      "recorded it); serving it with this version's default chain: "
                      f"{chain.describe()}", stacklevel=3)
    return chain if overlap is None else replace(chain, overlap=overlap)


def recording_batches(encoder, signal, fs: float, chain: Preprocessing, *,
                      batch_windows: int = 256, source: str = "signal") -> Iterator[Windows]:
    """Batches of ``signal`` ((n,) for a one-lead encoder, (C, n) for C leads) through
    ``chain``, windows shaped for ``encoder``; ValueError naming ``source`` for a signal
    of another lead count."""
    c = encoder.in_channels
    shape = np.shape(signal)
    if len(shape) == 2 and shape[0] == c:
        return iter_lead_windows(signal, fs, source=source, preprocessing=chain,
                                 batch_windows=batch_windows)
    if len(shape) == 1 and c == 1:
        return iter_windows(signal, fs, source=source, preprocessing=chain,
                            batch_windows=batch_windows)
    names = f" ({', '.join(encoder.leads)})" if encoder.leads else ""
    want = "(n,) or (1, n)" if c == 1 else f"({c}, n)"
    raise ValueError(f"{source}: {encoder.path.name} takes {c} lead(s){names}: expected a "
                     f"{want} signal, got shape {shape}")


def expected_batches(n_samples: int, fs: float, chain: Preprocessing, batch_windows: int) -> int:
    """About how many batches :func:`recording_batches` yields (for a progress bar)."""
    duration, hop = n_samples / fs, chain.window_seconds * (1 - chain.overlap)
    n_windows = max(0, math.floor((duration - chain.window_seconds) / hop) + 1)
    return math.ceil(n_windows / batch_windows)


def embed_recording(encoder, signal, fs: float, *, overlap: float | None = None,
                    batch_windows: int = 256, source: str = "signal"):
    """(embeddings (N, D) float32, starts_s (N,) float64) of a raw recording with the
    encoder's own chain (:meth:`ecgfast.export.OnnxEncoder.embed_recording`)."""
    chain = serving_chain(encoder, overlap)
    embeddings, starts = [], []
    for batch in recording_batches(encoder, signal, fs, chain, batch_windows=batch_windows,
                                   source=source):
        if len(batch.windows):
            embeddings.append(np.asarray(encoder.embed(batch.windows), dtype=np.float32))
            starts.append(batch.starts_s)
    dim = encoder.embedding_dim or 0
    if not embeddings:
        return np.zeros((0, dim), np.float32), np.zeros((0,), np.float64)
    return np.concatenate(embeddings), np.concatenate(starts)
