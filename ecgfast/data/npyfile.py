"""Reading one ``.npy`` array without trusting its header.

``numpy.load`` allocates the array the header describes before reading the data, so a
corrupt or hostile header can ask for any amount of memory. :func:`read_npy` checks the
header's size against the bytes the file actually holds first, refuses object arrays
(they would need pickle), and raises :class:`ECGDataError` for every malformed file.
"""

from __future__ import annotations

import math
import tokenize

import numpy as np

from ecgfast.data.errors import ECGDataError

_CHUNK = 1 << 20


def read_npy_header(f, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the header of the ``.npy`` stream ``f``,
    which is left at the first data byte; nothing is allocated from what it says.

    Raises:
        ECGDataError: naming ``where``: not a ``.npy`` stream or an unsupported version.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            return fmt.read_array_header_1_0(f)
        if version in ((2, 0), (3, 0)):
            return fmt.read_array_header_2_0(f)
    except (ValueError, OSError, EOFError, TypeError, SyntaxError, OverflowError,
            tokenize.TokenError, RecursionError) as exc:  # numpy tokenizes old headers
        raise ECGDataError(f"{where}: not a .npy array: {type(exc).__name__}: {exc}") from None
    raise ECGDataError(f"{where}: unsupported .npy version {version}")


def read_npy(f, n_bytes: int, where: str) -> np.ndarray:
    """The array in the binary stream ``f`` holding ``n_bytes`` bytes of ``.npy`` data.

    Raises:
        ECGDataError: naming ``where``: not a ``.npy`` stream, an unsupported version, an
            object dtype, a header claiming more data than ``n_bytes`` or a truncation.
    """
    shape, fortran, dtype = read_npy_header(f, where)
    if dtype.hasobject:
        raise ECGDataError(f"{where}: holds Python objects (refused: that needs pickle)")
    if any(d < 0 for d in shape):
        raise ECGDataError(f"{where}: negative shape {shape} in the header")
    size = math.prod(shape) * dtype.itemsize
    if size > n_bytes:
        raise ECGDataError(
            f"{where}: header says {shape} x {dtype} ({size} bytes) but the file holds "
            f"only {n_bytes} bytes"
        )
    arr = np.empty(math.prod(shape), dtype=dtype)
    if size:
        raw, pos = arr.view(np.uint8), 0
        while pos < size:  # in chunks: no second copy of the data in memory
            chunk = f.read(min(_CHUNK, size - pos))
            if not chunk:
                raise ECGDataError(f"{where}: truncated: {pos} of {size} data bytes")
            raw[pos : pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            pos += len(chunk)
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
