"""The six SSL-ECG transformations (Sarkar & Etemad 2020, original parameters) and the
pretext batch built from them.

:func:`add_noise` (SNR 15 dB), :func:`scale` (x1.1), :func:`negate`, :func:`time_flip`,
:func:`permute_segments` (20 segments), :func:`time_warp` (9 segments, 5 stretched by
1.05 and 4 squeezed by 1/1.05, cropped back to L). :func:`make_pretext_batch` builds
the 7 versions (original + 6) of every window with labels in the order of
:data:`TRANSFORM_NAMES`, which is the order of ``ecgfast.losses.SSL_ECG_TASK_WEIGHTS``.
"""

from __future__ import annotations

import torch

from ecgfast.transforms._common import (
    _as_windows,
    _work_dtype,
    _finish,
    _check_generator,
    _check_real,
    _check_int,
    _noise_at_snr,
    _random_permutations,
    _time_warp_by_factor,
    _check_time_warp_args,
)

#: Names of the 7 versions of a window in the SSL-ECG pretext task; label k of
#: :func:`make_pretext_batch` is ``TRANSFORM_NAMES[k]``. Same order as
#: ``ecgfast.losses.SSL_ECG_TASK_WEIGHTS``.
TRANSFORM_NAMES = ("original", "noise", "scale", "negate", "flip", "permute", "time_warp")


def add_noise(
    x: torch.Tensor, snr_db: float = 15.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add white Gaussian noise at a signal-to-noise ratio of ``snr_db`` per window.

    The signal power of each window is ``P_s = mean(x**2)`` over its L samples; the noise
    is zero-mean Gaussian with variance ``P_s * 10**(-snr_db / 10)``, so its expected
    power gives ``10 log10(P_s / P_n) = snr_db``. An all-zero window gets no noise.

    Args:
        x: (B, L) or (B, 1, L) floating windows (any unit, e.g. mV or z-scored).
        snr_db: target SNR in dB (SSL-ECG: 15).
        generator: optional torch.Generator; None uses the global RNG.

    Returns:
        Noisy windows, same shape, dtype and device as ``x``.
    """
    fn = "add_noise"
    x2 = _as_windows(x, fn)
    snr = _check_real(snr_db, "snr_db", fn)
    _check_generator(generator, fn)
    work = _work_dtype(x2.dtype)
    snr_t = torch.full((x2.shape[0],), snr, dtype=work, device=x2.device)
    return _finish(_noise_at_snr(x2, snr_t, generator), x)


def scale(x: torch.Tensor, factor: float = 1.1) -> torch.Tensor:
    """Multiply every sample by ``factor`` (SSL-ECG: 1.1).

    Args:
        x: (B, L) or (B, 1, L) floating windows.
        factor: finite amplitude factor (dimensionless).

    Returns:
        ``x * factor``, same shape, dtype and device, contiguous.
    """
    fn = "scale"
    _as_windows(x, fn)
    factor = _check_real(factor, "factor", fn)
    return (x * factor).contiguous()


def negate(x: torch.Tensor) -> torch.Tensor:
    """Flip the sign of every sample: ``-x``. x: (B, L) or (B, 1, L); same shape out."""
    _as_windows(x, "negate")
    return torch.neg(x).contiguous()


def time_flip(x: torch.Tensor) -> torch.Tensor:
    """Reverse time: ``out[..., t] = x[..., L - 1 - t]``. x: (B, L) or (B, 1, L)."""
    _as_windows(x, "time_flip")
    return x.flip(-1).contiguous()


def _segment_bounds(length: int, n_segments: int, device) -> torch.Tensor:
    """Integer boundaries ``floor(j * L / n)`` for j = 0..n: (n + 1,) int64.

    Segment j is samples [b_j, b_{j+1}); the lengths differ by at most one sample and
    sum to L, so no sample is dropped.
    """
    return torch.arange(n_segments + 1, device=device, dtype=torch.int64) * length // n_segments


def permute_segments(
    x: torch.Tensor, n_segments: int = 20, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cut each window into ``n_segments`` pieces and shuffle their order, per window.

    Segment j covers samples ``[floor(j L / n), floor((j + 1) L / n))``; when L is not
    divisible by n the segments differ in length by at most one sample. All segments are
    kept whole (the output is a concatenation of the same multiset of segments, no
    sample is dropped, duplicated or resampled); each window gets its own independent
    uniformly random order (which may, with probability 1/n!, be the original one).

    Args:
        x: (B, L) or (B, 1, L) floating windows.
        n_segments: number of segments n, 1 <= n <= L (SSL-ECG: 20).
        generator: optional torch.Generator; None uses the global RNG.

    Returns:
        Permuted windows, same shape, dtype and device as ``x``.
    """
    fn = "permute_segments"
    x2 = _as_windows(x, fn)
    batch, length = x2.shape
    n = _check_int(n_segments, "n_segments", fn, 1)
    if n > length:
        raise ValueError(f"{fn}: n_segments must be <= the window length L = {length}, got {n}")
    _check_generator(generator, fn)
    device = x2.device

    bounds = _segment_bounds(length, n, device)  # (n + 1,)
    seg_start, seg_len = bounds[:-1], bounds[1:] - bounds[:-1]  # (n,)
    perm = _random_permutations(batch, n, generator, device)  # (B, n)
    out_len = seg_len[perm]  # (B, n): length of the k-th output segment
    out_end = out_len.cumsum(dim=1)  # (B, n), last column == L
    out_start = out_end - out_len
    u = torch.arange(length, device=device, dtype=torch.int64).expand(batch, length).contiguous()
    k = torch.searchsorted(out_end, u, right=True)  # (B, L): output segment of sample u
    src_seg = torch.gather(perm, 1, k)
    src = seg_start[src_seg] + (u - torch.gather(out_start, 1, k))
    return _finish(torch.gather(x2, 1, src), x)


def time_warp(
    x: torch.Tensor,
    n_segments: int = 9,
    stretch: float = 1.05,
    n_stretched: int = 5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SSL-ECG time warping: stretch some segments, squeeze the others, crop to L.

    Each window is cut into ``n_segments`` equal segments (continuous boundaries
    ``j L / n``). ``n_stretched`` of them, chosen at random per window, are resampled by
    linear interpolation to ``stretch`` times their length, the others to
    ``1 / stretch`` times; the pieces are concatenated and the first L samples kept.
    With the defaults (9 segments, 5 stretched by 1.05, 4 squeezed) the warped signal is
    (5 x 1.05 + 4 / 1.05) / 9 = 1.0066 times L long, so the end is cropped. If a choice
    of parameters makes it shorter than L (e.g. ``stretch < 1``, or fewer stretched than
    squeezed segments), the warped signal is uniformly resampled to L samples instead.
    Computed for all windows at once from a piecewise-linear map output sample -> source
    position. ``stretch = 1`` is exactly the identity.

    Args:
        x: (B, L) or (B, 1, L) floating windows.
        n_segments: number of segments n, 1 <= n <= L (SSL-ECG: 9).
        stretch: finite factor > 0 (SSL-ECG: 1.05).
        n_stretched: segments stretched per window, 0 <= k <= n (SSL-ECG: 5).
        generator: optional torch.Generator; None uses the global RNG.

    Returns:
        Warped windows, same shape, dtype and device as ``x``.
    """
    fn = "time_warp"
    x2 = _as_windows(x, fn)
    n, n_st = _check_time_warp_args(x2, n_segments, n_stretched, fn)
    stretch = _check_real(stretch, "stretch", fn)
    if stretch <= 0:
        raise ValueError(f"{fn}: stretch must be > 0, got {stretch}")
    _check_generator(generator, fn)
    work = _work_dtype(x2.dtype)
    s = torch.full((x2.shape[0],), stretch, dtype=work, device=x2.device)
    return _finish(_time_warp_by_factor(x2, s, n, n_st, generator), x)


def apply_transform(
    x: torch.Tensor, name: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply the SSL-ECG transformation called ``name`` with its original parameters.

    Args:
        x: (B, L) or (B, 1, L) floating windows.
        name: one of :data:`TRANSFORM_NAMES`; "original" returns a contiguous copy.
        generator: used by "noise", "permute" and "time_warp".

    Returns:
        Same shape, dtype and device as ``x``.
    """
    if not isinstance(name, str) or name not in TRANSFORM_NAMES:
        raise ValueError(f"apply_transform: name must be one of {TRANSFORM_NAMES}, got {name!r}")
    if name == "original":
        _as_windows(x, "apply_transform")
        return x.clone(memory_format=torch.contiguous_format)
    if name == "noise":
        return add_noise(x, 15.0, generator)
    if name == "scale":
        return scale(x, 1.1)
    if name == "negate":
        return negate(x)
    if name == "flip":
        return time_flip(x)
    if name == "permute":
        return permute_segments(x, 20, generator)
    return time_warp(x, 9, 1.05, 5, generator)


def make_pretext_batch(
    x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the SSL-ECG pretext batch: the 7 versions of every window, with labels.

    Args:
        x: (B, L) or (B, 1, L) floating windows.
        generator: optional torch.Generator (drawn in order: noise, permute, time warp).

    Returns:
        inputs: (7B, L) (or (7B, 1, L) for a 3-D ``x``), version-major: rows
            ``k*B:(k+1)*B`` are ``apply_transform(x, TRANSFORM_NAMES[k])``.
        labels: (7B,) int64 on ``x``'s device, ``labels[k*B + b] = k`` (index into
            :data:`TRANSFORM_NAMES`).
    """
    _as_windows(x, "make_pretext_batch")
    _check_generator(generator, "make_pretext_batch")
    versions = [apply_transform(x, name, generator) for name in TRANSFORM_NAMES]
    inputs = torch.cat(versions, dim=0)
    labels = torch.arange(len(TRANSFORM_NAMES), device=x.device).repeat_interleave(x.shape[0])
    return inputs, labels


class PretextTransform:
    """Callable form of :func:`make_pretext_batch`: ``inputs, labels = PretextTransform()(x)``."""

    names = TRANSFORM_NAMES

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return make_pretext_batch(x, generator)

    def __repr__(self) -> str:
        return f"PretextTransform(names={self.names})"

