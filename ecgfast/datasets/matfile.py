"""MATLAB v5 files (DREAMER, AMIGOS) read with scipy, every failure an ECGDataError.

Files are read with ``squeeze_me=True, struct_as_record=False`` (structs as attribute
objects, 1 x 1 wrappers removed, so the code does not depend on MATLAB's nesting) and
``verify_compressed_data_integrity=False`` (some released files fail that check).
Squeezing turns a 1-element cell into its element; :func:`cells` undoes that. Each file
is first parsed in a forked child, because scipy's reader can crash on corrupt files.
"""

from __future__ import annotations

import faulthandler
import os
from pathlib import Path

import numpy as np

from ecgfast.data import ECGDataError


def _scipy_loadmat(path: Path) -> dict:
    import scipy.io

    return scipy.io.loadmat(
        path, squeeze_me=True, struct_as_record=False, verify_compressed_data_integrity=False
    )


def _crash_guard(path: Path) -> None:
    """Parse ``path`` once in a forked child first: scipy's compiled MAT reader can crash
    the interpreter (SIGSEGV) on some corrupt files (found by fuzzing), so a child that
    dies by a signal marks the file as corrupt before the parent parses it. Costs a
    second parse; skipped where ``os.fork`` does not exist (Windows)."""
    if not hasattr(os, "fork"):
        return
    pid = os.fork()
    if pid == 0:  # the child: parse, and report only whether it survived
        try:
            faulthandler.disable()
            _scipy_loadmat(path)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise ECGDataError(
            f"{path}: corrupt MATLAB file: scipy.io.loadmat crashed on it (signal "
            f"{os.WTERMSIG(status)})"
        )


def loadmat(path: Path) -> dict:
    """The variables of a MATLAB v5/v7 ``.mat`` file; ECGDataError naming it if it cannot
    be read (missing, truncated, corrupt, or a v7.3 HDF5 file)."""
    path = Path(path)
    if not path.is_file():
        raise ECGDataError(f"{path}: file not found")
    try:
        _crash_guard(path)
        return _scipy_loadmat(path)
    except ECGDataError:
        raise
    except NotImplementedError as exc:
        raise ECGDataError(
            f"{path}: a MATLAB v7.3 (HDF5) file, which this reader does not support; the "
            f"released files are v5 ({exc})"
        ) from None
    except MemoryError:
        raise ECGDataError(f"{path}: asks for more memory than is available (corrupt?)") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for a corrupt file
        raise ECGDataError(
            f"{path}: not a readable MATLAB file (truncated or corrupt): "
            f"{type(exc).__name__}: {exc}"
        ) from None


def field(obj, name: str, path: Path, where: str):
    """``obj.name`` (a struct field) or ``obj[name]`` (a file's variable); ECGDataError
    naming the file and ``where.name`` when it is absent."""
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
        have = sorted(k for k in obj if not k.startswith("__"))
    elif hasattr(obj, "_fieldnames"):
        if name in obj._fieldnames:
            return getattr(obj, name)
        have = list(obj._fieldnames)
    else:
        raise ECGDataError(
            f"{path}: {where} should be a struct with field {name!r}, got {type(obj).__name__}"
        )
    label = f"{where}.{name}" if where else name
    raise ECGDataError(f"{path}: no field {label!r} (found {have})")


def cells(obj) -> np.ndarray:
    """A cell array as a 1-D object array (one element when squeezing removed the cell)."""
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return obj.reshape(-1)
    out = np.empty(1, dtype=object)
    out[0] = obj
    return out


def numeric(obj, path: Path, where: str, *, ndim: int | None = None) -> np.ndarray:
    """``obj`` as a float64 array, or ECGDataError naming ``where`` when it is not numeric."""
    arr = np.asarray(obj)
    if arr.dtype.kind not in "fiub":
        raise ECGDataError(f"{path}: {where} must be numeric, got {arr.dtype} {arr.shape}")
    if ndim is not None and arr.ndim != ndim:
        raise ECGDataError(f"{path}: {where} must be {ndim}-D, got shape {arr.shape}")
    return arr.astype(np.float64)
