"""Files written all at once: a crash leaves the old file or the new one, never a mix.

No PyTorch here: the inference path (``ecgfast embed``, the data readers' caches) writes
through these as well as the training side (checkpoints, run logs, ablation tables).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Flush ``path``'s contents to disk."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Flush ``path``'s directory entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Replace ``path`` all at once: ``write(tmp)`` fills a temporary file beside it (same
    suffix, so writers that append one, like ``numpy.save``, keep its name), which is
    flushed to disk and renamed over ``path``. A crash leaves the old file or the new one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of a text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
