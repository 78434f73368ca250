"""Counter-based random numbers keyed by (seed, stream, row): draws that do not depend on
how a batch is cut.

A torch generator hands out numbers in order, so the draws a window gets depend on where
in the batch it sits and on how much was drawn before it: a batch embedded in chunks
(:mod:`ecgfast.training.chunked`) would see other augmentations and dropout masks than
the same batch in one pass. Here every random number is a pure function of

- ``seed``: a 64-bit integer for the batch (the training step derives it from the run's
  seed, the epoch, the step and the rank, :mod:`ecgfast.training.seeds`);
- ``stream``: which draw of the forward pass it is (the k-th call to a draw method of a
  :class:`KeyedRandom`, a path of such numbers for derived objects);
- ``row``: the window's index in the batch (a view's, a lead's, a pretext version's: an
  injective integer function of it);
- ``j``: the element's index within that row's draw.

so a chunk holding rows a..b draws exactly what rows a..b drew in the whole batch, in
any order of chunks, on any device, eager or Triton.

The maths (uint32 values held in int32 tensors, products wrapping modulo 2^32):

- ``mix32``: the bijective 32-bit integer hash ``x ^= x >> 16; x *= 0x7feb352d;
  x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16`` (logical shifts).
- ``base(seed, path) = fold(mix32(mix32(hi ^ 0x9e3779b9) ^ lo), path)`` with
  ``fold(h, (s, ...)) = fold(mix32(h ^ s), ...)``, hi and lo the seed's 32-bit halves.
  The seed is held as a 0-d int64 tensor and the base computed by tensor ops, so a new
  seed every step neither synchronises with the device nor makes ``torch.compile``
  specialise on (and recompile for) its value.
- ``row key: key(row) = mix32(mix32(base ^ lo(row)) ^ hi(row))``, one per row and stream.
- ``bits(key, j) = mix32(mix32(j) ^ key)``; a uniform is ``(bits >> 8) * 2^-24`` in
  [0, 1) (24 bits, also for fp64 work), a dropout element is kept iff
  ``bits >> 8 >= ceil(p * 2^24)`` (:func:`keep_threshold`), and a normal is Box-Muller
  of the uniforms at ``2j`` and ``2j + 1``.

The Triton conv kernels compute ``bits`` in their epilogue from the same row keys, so the
eager and fused encoder drop the same elements (:func:`dropout_keep` is their reference).
"""

from __future__ import annotations

import math

import torch

M32 = 0xFFFFFFFF
MIX_MUL1 = 0x7FEB352D
MIX_MUL2 = 0x846CA68B
GOLDEN = 0x9E3779B9
#: Draws are computed this many elements at a time on the CPU (stays in cache).
CPU_BLOCK_ELEMENTS = 1 << 20


def _as_i32(v: int) -> int:
    """A uint32 value as the int32 with the same bits."""
    v &= M32
    return v - (1 << 32) if v >= 1 << 31 else v


def mix32_int(x: int) -> int:
    """The hash on a Python integer (the reference of :func:`mix32`)."""
    x &= M32
    x ^= x >> 16
    x = (x * MIX_MUL1) & M32
    x ^= x >> 15
    x = (x * MIX_MUL2) & M32
    x ^= x >> 16
    return x


def mix32_(x: torch.Tensor) -> torch.Tensor:
    """The hash in place on an int32 tensor (uint32 bits); returns ``x``."""
    x ^= (x >> 16) & 0xFFFF
    x *= MIX_MUL1
    x ^= (x >> 15) & 0x1FFFF
    x *= _as_i32(MIX_MUL2)
    x ^= (x >> 16) & 0xFFFF
    return x


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The hash of an int32 tensor (uint32 bits), a new tensor."""
    return mix32_(x.to(torch.int32, copy=True))


def _halves(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) 32-bit halves of int64 ``v`` as int32 tensors (uint32 bits)."""
    lo = v & M32
    lo = torch.where(lo >= 1 << 31, lo - (1 << 32), lo).to(torch.int32)
    return lo, (v >> 32).to(torch.int32)


def stream_base(seed: torch.Tensor | int, path: tuple[int, ...], device=None) -> torch.Tensor:
    """The 32-bit base of stream ``path`` of ``seed`` (module docstring): a 0-d int32
    tensor on ``device`` (seed: a 0-d int64 tensor, or an int)."""
    seed = torch.as_tensor(seed, dtype=torch.int64).to(device)
    lo, hi = _halves(seed)
    h = mix32_(mix32_(hi ^ _as_i32(GOLDEN)) ^ lo)
    for s in path:
        h = mix32_(h ^ _as_i32(s))
    return h


def row_keys(base: torch.Tensor | int, rows: torch.Tensor) -> torch.Tensor:
    """int32 (R,) keys of ``rows`` (int64 ids >= 0) for a stream with base ``base`` (a 0-d
    int32 tensor from :func:`stream_base`, or a uint32 int)."""
    lo, hi = _halves(rows.to(torch.int64))
    if not isinstance(base, torch.Tensor):
        base = torch.tensor(_as_i32(base), dtype=torch.int32, device=rows.device)
    return mix32_(mix32_(lo ^ base) ^ hi)


def _hashed_index(n: int, device) -> torch.Tensor:
    return mix32_(torch.arange(n, dtype=torch.int32, device=device))


def _row_block(n: int, device) -> int:
    return max(1, CPU_BLOCK_ELEMENTS // max(n, 1)) if torch.device(device).type == "cpu" else 1 << 30


def _bit_blocks(keys: torch.Tensor, n: int):
    """Yields ``(rows, bits)``: ``bits(keys[rows], j) >> 8`` (24 random bits, int32,
    (len(rows), n)) for j < n, over cache-sized blocks of rows on the CPU (one block on
    other devices)."""
    if n >= 1 << 31:
        raise ValueError(f"a keyed draw of {n} elements per row exceeds the 31-bit index")
    hj = _hashed_index(n, keys.device)
    step = _row_block(n, keys.device)
    for a in range(0, keys.shape[0], step):
        v = torch.bitwise_xor(hj[None, :], keys[a:a + step, None])
        mix32_(v)
        v >>= 8
        v &= 0xFFFFFF
        yield slice(a, a + step), v


def element_bits(keys: torch.Tensor, n: int) -> torch.Tensor:
    """``bits(keys[r], j) >> 8`` (24 random bits, int32) for j < n: (R, n)."""
    out = torch.empty((keys.shape[0], n), dtype=torch.int32, device=keys.device)
    for rows, bits in _bit_blocks(keys, n):
        out[rows] = bits
    return out


def keep_threshold(p: float) -> int:
    """Dropout keeps an element iff its 24 bits are >= this (P(keep) = 1 - thr / 2^24)."""
    return math.ceil(p * (1 << 24))


def dropout_keep(keys: torch.Tensor, shape, p: float) -> torch.Tensor:
    """bool mask (B, *shape) of the elements a dropout with row keys ``keys`` (B,) keeps;
    element j of row b is ``shape``'s flat index (the reference of the Triton kernels)."""
    n, thr = math.prod(shape), keep_threshold(p)
    out = torch.empty((keys.shape[0], n), dtype=torch.bool, device=keys.device)
    for rows, bits in _bit_blocks(keys, n):
        torch.ge(bits, thr, out=out[rows])
    return out.view(keys.shape[0], *shape)


def keyed_dropout(x: torch.Tensor, p: float, keys: torch.Tensor | None) -> torch.Tensor:
    """Inverted dropout of x (B, ...) with row keys ``keys`` (B,) int32; the identity when
    ``keys`` is None or p is 0. Autograd saves the bool mask, as ``F.dropout`` does."""
    if keys is None or p == 0:
        return x
    if keys.shape != (x.shape[0],):
        raise ValueError(f"dropout keys must be ({x.shape[0]},) for a batch of {x.shape[0]} "
                         f"rows, got {tuple(keys.shape)}")
    with torch.no_grad():
        keep = dropout_keep(keys, x.shape[1:], p)
    return torch.where(keep, x * (1.0 / (1.0 - p)), torch.zeros((), dtype=x.dtype, device=x.device))


class KeyedRandom:
    """The random source of one batch: draws keyed by (seed, stream, row) (module docstring).

    ``KeyedRandom(seed, rows)``: ``rows`` (B,) int64 ids of the batch's windows (or
    ``KeyedRandom.for_batch(seed, n, device)`` for ids 0..n-1); ``seed`` an int in
    [0, 2^63) or a 0-d int64 tensor (kept as one on rows' device). Every draw method uses the
    next stream number; objects made by :meth:`select` start over at stream 0 with the same
    seed and path, so a slice of the batch replays its rows' draws exactly. Accepted as the
    ``generator`` of every function in :mod:`ecgfast.transforms` and of the objectives.
    """

    __slots__ = ("_next", "path", "rows", "seed")

    def __init__(self, seed, rows: torch.Tensor, path: tuple[int, ...] = ()):
        if not isinstance(rows, torch.Tensor) or rows.dim() != 1 or rows.is_floating_point():
            raise ValueError(f"KeyedRandom: rows must be a 1-D integer tensor of row ids, got "
                             f"{getattr(rows, 'shape', type(rows).__name__)}")
        if isinstance(seed, torch.Tensor):
            if seed.dim() != 0 or seed.dtype != torch.int64:
                raise ValueError(f"KeyedRandom: a seed tensor must be 0-d int64, got "
                                 f"{seed.dtype} {tuple(seed.shape)}")
        elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 63:
            raise ValueError(f"KeyedRandom: seed must be an integer in [0, 2**63), got {seed!r}")
        self.seed = torch.as_tensor(seed, dtype=torch.int64).to(rows.device)
        self.rows, self.path, self._next = rows.to(torch.int64), tuple(path), 0

    @classmethod
    def for_batch(cls, seed: int, n: int, device=None) -> KeyedRandom:
        return cls(seed, torch.arange(n, dtype=torch.int64, device=device))

    @classmethod
    def from_default_generator(cls, n: int, device=None) -> KeyedRandom:
        """A seed drawn from torch's default CPU generator (``torch.manual_seed``
        reproduces it; no device synchronisation), rows 0..n-1."""
        return cls.for_batch(torch.randint(0, 2**62, (), dtype=torch.int64), n, device)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __repr__(self) -> str:
        return f"KeyedRandom(rows={len(self)}, path={self.path}, device={self.rows.device})"

    def select(self, index) -> KeyedRandom:
        """The same streams for ``rows[index]`` (a slice or an index tensor), from stream 0."""
        return KeyedRandom(self.seed, self.rows[index], self.path)

    def _stream(self) -> tuple[int, ...]:
        self._next += 1
        return (*self.path, self._next - 1)

    def child(self, versions: int) -> KeyedRandom:
        """A derived source (next stream) for a batch of ``versions`` stacked copies of these
        rows, version-major (row ``v * B + b`` is version v of row b; its id is
        ``rows[b] * versions + v``): the encoder input of two views or of a pretext batch."""
        rows = self.rows[None, :] * versions + torch.arange(versions, device=self.rows.device)[:, None]
        return KeyedRandom(self.seed, rows.reshape(-1), self._stream())

    def _keys(self, n_rows: int, device, what: str) -> torch.Tensor:
        """Keys of the next stream for a draw of ``n_rows`` rows: ``len(self) * k`` rows, row
        ``b * k + i`` being sub-row i of row b (the leads of a per-lead draw)."""
        b = len(self)
        if b == 0 or n_rows % b:
            raise ValueError(f"{what}: a keyed draw for {n_rows} rows from a KeyedRandom of "
                             f"{b} rows (it must be a multiple: rows or rows x leads)")
        k = n_rows // b
        rows = self.rows.to(device)
        if k > 1:
            rows = (rows[:, None] * k + torch.arange(k, device=device)).reshape(-1)
        return row_keys(stream_base(self.seed, self._stream(), device), rows)

    def uniform(self, shape, device, dtype=torch.float32) -> torch.Tensor:
        """Uniform [0, 1) draws of ``shape`` (shape[0] rows) on ``device``."""
        keys = self._keys(shape[0], device, "uniform")
        bits = element_bits(keys, math.prod(shape[1:]))
        return (bits.to(torch.float32) * 2.0**-24).to(dtype).view(shape)

    def normal(self, shape, device, dtype=torch.float32) -> torch.Tensor:
        """Standard normal draws of ``shape`` (Box-Muller of the uniforms at 2j, 2j + 1)."""
        keys = self._keys(shape[0], device, "normal")
        u = element_bits(keys, 2 * math.prod(shape[1:])).to(torch.float32).mul_(2.0**-24)
        u = u.view(shape[0], -1, 2)
        radius = torch.log1p(-u[..., 0]).mul_(-2.0).sqrt_()
        return (radius * torch.cos((2 * math.pi) * u[..., 1])).to(dtype).view(shape)

    def dropout_keys(self, layers: int, device) -> torch.Tensor:
        """int32 (layers, B): row keys of the next ``layers`` streams, one dropout each."""
        return torch.stack([self._keys(len(self), device, "dropout_keys") for _ in range(layers)])
