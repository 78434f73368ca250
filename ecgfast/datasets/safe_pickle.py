"""A pickle reader that builds numpy arrays and plain containers and nothing else.

Unpickling calls whatever global a pickle names, so a pickle can run code. WESAD ships
its data as pickles; :func:`load_pickle` reads them with an ``Unpickler`` whose
``find_class`` admits only the globals numpy arrays, dtypes and scalars are rebuilt from
(under both ``numpy.core``, numpy 1, and ``numpy._core``, numpy 2), the builtin
containers, and ``_codecs.encode`` restricted to latin-1 (how Python 3 writes bytes in a
protocol-2 pickle). Any other global is refused with an :class:`ECGDataError` before it
is called. Large Python 2 strings (array data) are kept as bytes and left out of the
memo, so peak memory while unpickling is about the file's size, not twice it.
"""

from __future__ import annotations

import codecs
import math
import pickle
import struct
from pathlib import Path
from typing import ClassVar

import numpy as np

from ecgfast.data import ECGDataError


def _latin1_encode(obj, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it: a str to latin-1 bytes, only."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(
            f"_codecs.encode is admitted only for str -> latin-1, got {type(obj).__name__} "
            f"with encoding {encoding!r}"
        )
    return obj.encode("latin1", errors="strict")


class _NdarrayClass:
    """Stands in for ``numpy.ndarray`` in a pickle: only ``_reconstruct`` accepts it, so
    the pickle cannot call ``ndarray(shape)`` itself (an allocation of any size)."""


_NDARRAY = _NdarrayClass()


def _resolve(module: str, name: str):
    import importlib
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _reconstruct_guard(real):
    def _reconstruct(cls, shape, dtype):
        """numpy's ``_reconstruct`` for plain ndarrays of at most one element; the
        array's data and real shape come in ``__setstate__``, which checks their sizes."""
        if cls is not _NDARRAY:
            raise pickle.UnpicklingError(f"_reconstruct of {cls!r}: only numpy.ndarray")
        if not isinstance(shape, tuple) or math.prod(int(d) for d in shape) > 1:
            raise pickle.UnpicklingError(f"_reconstruct with initial shape {shape!r}")
        return real(np.ndarray, shape, dtype)

    return _reconstruct


def _numpy_globals() -> dict[tuple[str, str], object]:
    found = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        real = _resolve(mod, "_reconstruct")
        if real is not None:
            found[(mod, "_reconstruct")] = _reconstruct_guard(real)
        found[(mod, "scalar")] = _resolve(mod, "scalar")
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        found[(mod, "_frombuffer")] = _resolve(mod, "_frombuffer")
    found[("numpy", "ndarray")] = _NDARRAY
    found[("numpy", "dtype")] = np.dtype
    return {k: v for k, v in found.items() if v is not None}


#: Containers a pickle may build; each takes an iterable from the pickle itself (no size
#: argument, so no allocation beyond the file's contents).
_ALLOWED_BUILTINS = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "complex": complex,
}


#: Strings longer than this are array data: a Python 2 ``str`` stays ``bytes`` (numpy's
#: ``__setstate__`` takes it as is) and is not kept in the memo, so the file's data is not
#: held twice while the arrays are built.
_BIG = 1 << 16
_DROPPED = object()


class _SafeUnpickler(pickle._Unpickler):
    """The pure-Python unpickler (its opcodes can be specialised; array pickles have few
    opcodes, so it is as fast as the C one here) with ``find_class`` restricted."""

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def load_binstring(self):
        (n,) = struct.unpack("<i", self.read(4))
        if n < 0:
            raise pickle.UnpicklingError("BINSTRING with a negative byte count")
        data = self.read(n)
        self.append(data if n > _BIG else self._decode_string(data))

    def _memo_value(self):
        top = self.stack[-1]
        return _DROPPED if isinstance(top, (bytes, str)) and len(top) > _BIG else top

    def load_binput(self):
        self.memo[self.read(1)[0]] = self._memo_value()

    def load_long_binput(self):
        self.memo[struct.unpack("<I", self.read(4))[0]] = self._memo_value()

    def load_memoize(self):
        self.memo[len(self.memo)] = self._memo_value()

    def _get(self, i: int):
        value = self.memo.get(i, None)
        if value is None and i not in self.memo:
            raise pickle.UnpicklingError(f"memo value not found at index {i}")
        if value is _DROPPED:
            raise pickle.UnpicklingError("a large string is referenced twice (numpy never does)")
        self.append(value)

    def load_binget(self):
        self._get(self.read(1)[0])

    def load_long_binget(self):
        self._get(struct.unpack("<I", self.read(4))[0])

    for _op, _fn in ((pickle.BINSTRING, load_binstring), (pickle.BINPUT, load_binput),
                     (pickle.LONG_BINPUT, load_long_binput), (pickle.MEMOIZE, load_memoize),
                     (pickle.BINGET, load_binget), (pickle.LONG_BINGET, load_long_binget)):
        dispatch[_op[0]] = _fn
    del _op, _fn

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source
        self.allowed = _numpy_globals()
        self.allowed.update({("builtins", k): v for k, v in _ALLOWED_BUILTINS.items()})
        self.allowed.update({("__builtin__", k): v for k, v in _ALLOWED_BUILTINS.items()})
        self.allowed[("_codecs", "encode")] = _latin1_encode

    def find_class(self, module: str, name: str):
        target = self.allowed.get((module, name))
        if target is None:
            raise RefusedGlobal(f"{self.source}: refused to unpickle global {module}.{name}: "
                                "only numpy arrays/dtypes/scalars and plain containers are "
                                "allowed (a pickle can run code)")
        return target

    def persistent_load(self, pid):
        raise RefusedGlobal(f"{self.source}: refused a persistent id in the pickle")


class RefusedGlobal(ECGDataError):
    """A pickle asked for a global that :func:`load_pickle` does not admit."""


def load_pickle(path: str | Path):
    """Unpickle ``path`` (Python 2 pickles too: latin-1 strings) admitting only numpy
    arrays, dtypes, scalars and plain containers. Reads from the file as it goes (no
    second copy of the file in memory).

    Raises:
        ECGDataError: the file is missing, unreadable, truncated or corrupt, or the pickle
            names any other global (the message names the file and the global).
    """
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - a missing file is told apart; closed below
    except FileNotFoundError:
        raise ECGDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise ECGDataError(f"{path}: cannot read: {exc}") from None
    try:
        with f:
            return _SafeUnpickler(f, str(path)).load()
    except ECGDataError:
        raise
    except RecursionError:
        raise ECGDataError(f"{path}: the pickle nests too deeply") from None
    except MemoryError:
        raise ECGDataError(f"{path}: the pickle asks for more memory than is available") from None
    except Exception as exc:  # noqa: BLE001 - any failure inside unpickling is a bad file
        raise ECGDataError(
            f"{path}: not a readable pickle (truncated or corrupt): {type(exc).__name__}: {exc}"
        ) from None
