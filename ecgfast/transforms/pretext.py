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
    _check_int,
    _check_per_lead,
    _check_real,
    _check_time_warp_args,
    _finish,
    _gather_time,
    _noise_at_snr,
    _random_permutations,
    _time_warp_by_factor,
    _windows,
    _work_dtype,
)

#: Names of the 7 versions of a window in the SSL-ECG pretext task; label k of
#: :func:`make_pretext_batch` is ``TRANSFORM_NAMES[k]``. Same order as
#: ``ecgfast.losses.SSL_ECG_TASK_WEIGHTS``.
TRANSFORM_NAMES = ("original", "noise", "scale", "negate", "flip", "permute", "time_warp")


def add_noise(
    x: torch.Tensor, snr_db: float = 15.0, generator: torch.Generator | None = None,
    *, per_lead: bool = False,
) -> torch.Tensor:
    """Add white Gaussian noise at a signal-to-noise ratio of ``snr_db`` per window.

    The signal power of each window's lead is ``P_s = mean(x**2)`` over its L samples; the
    noise is zero-mean Gaussian with variance ``P_s * 10**(-snr_db / 10)``, so its
    expected power gives ``10 log10(P_s / P_n) = snr_db``. An all-zero lead gets no noise.
    ``snr_db``: target SNR in dB (SSL-ECG: 15). ``x`` (any unit, e.g. mV or z-scored),
    ``generator``, ``per_lead`` and the result: see :mod:`ecgfast.transforms`.
    """
    fn = "add_noise"
    x3 = _windows(x, fn, per_lead, generator)
    snr = _check_real(snr_db, "snr_db", fn)
    work = _work_dtype(x3.dtype)
    snr_t = torch.full((x3.shape[0],), snr, dtype=work, device=x3.device)
    return _finish(_noise_at_snr(x3, snr_t, generator), x)


def scale(x: torch.Tensor, factor: float = 1.1) -> torch.Tensor:
    """Multiply every sample by ``factor`` (SSL-ECG: 1.1).

    ``factor``: finite amplitude factor (dimensionless); ``x`` and the result: see
    :mod:`ecgfast.transforms`.
    """
    fn = "scale"
    _as_windows(x, fn)
    factor = _check_real(factor, "factor", fn)
    return (x * factor).contiguous()


def negate(x: torch.Tensor) -> torch.Tensor:
    """Flip the sign of every sample: ``-x`` (x: see :mod:`ecgfast.transforms`)."""
    _as_windows(x, "negate")
    return torch.neg(x).contiguous()


def time_flip(x: torch.Tensor) -> torch.Tensor:
    """Reverse time: ``out[..., t] = x[..., L - 1 - t]`` (x: see :mod:`ecgfast.transforms`)."""
    _as_windows(x, "time_flip")
    return x.flip(-1).contiguous()


def _segment_bounds(length: int, n_segments: int, device) -> torch.Tensor:
    """Integer boundaries ``floor(j * L / n)`` for j = 0..n: (n + 1,) int64.

    Segment j is samples [b_j, b_{j+1}); the lengths differ by at most one sample and
    sum to L, so no sample is dropped.
    """
    return torch.arange(n_segments + 1, device=device, dtype=torch.int64) * length // n_segments


def permute_segments(
    x: torch.Tensor, n_segments: int = 20, generator: torch.Generator | None = None,
    *, per_lead: bool = False,
) -> torch.Tensor:
    """Cut each window into ``n_segments`` pieces and shuffle their order, per window.

    Segment j covers samples ``[floor(j L / n), floor((j + 1) L / n))``; when L is not
    divisible by n the segments differ in length by at most one sample. All segments are
    kept whole (the output is a concatenation of the same multiset of segments, no
    sample is dropped, duplicated or resampled); each window gets its own independent
    uniformly random order (which may, with probability 1/n!, be the original one).
    ``n_segments``: number of segments n, 1 <= n <= L (SSL-ECG: 20). ``x``,
    ``generator``, ``per_lead`` and the result: see :mod:`ecgfast.transforms`.
    """
    fn = "permute_segments"
    x3 = _windows(x, fn, per_lead, generator)
    batch, _, length = x3.shape
    n = _check_int(n_segments, "n_segments", fn, 1)
    if n > length:
        raise ValueError(f"{fn}: n_segments must be <= the window length L = {length}, got {n}")
    device = x3.device

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
    return _finish(_gather_time(x3, src), x)


def time_warp(
    x: torch.Tensor,
    n_segments: int = 9,
    stretch: float = 1.05,
    n_stretched: int = 5,
    generator: torch.Generator | None = None,
    *,
    per_lead: bool = False,
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
        n_segments: number of segments n, 1 <= n <= L (SSL-ECG: 9).
        stretch: finite factor > 0 (SSL-ECG: 1.05).
        n_stretched: segments stretched per window, 0 <= k <= n (SSL-ECG: 5).

    ``x``, ``generator``, ``per_lead`` and the result: see :mod:`ecgfast.transforms`.
    """
    fn = "time_warp"
    x3 = _windows(x, fn, per_lead, generator)
    n, n_st = _check_time_warp_args(x3, n_segments, n_stretched, fn)
    stretch = _check_real(stretch, "stretch", fn)
    if stretch <= 0:
        raise ValueError(f"{fn}: stretch must be > 0, got {stretch}")
    work = _work_dtype(x3.dtype)
    s = torch.full((x3.shape[0],), stretch, dtype=work, device=x3.device)
    return _finish(_time_warp_by_factor(x3, s, n, n_st, generator), x)


def apply_transform(
    x: torch.Tensor, name: str, generator: torch.Generator | None = None,
    *, per_lead: bool = False,
) -> torch.Tensor:
    """Apply the SSL-ECG transformation called ``name`` with its original parameters.

    ``name``: one of :data:`TRANSFORM_NAMES`; "original" returns a contiguous copy.
    ``generator`` and ``per_lead`` are used by "noise", "permute" and "time_warp"; they,
    ``x`` and the result: see :mod:`ecgfast.transforms`.
    """
    if not isinstance(name, str) or name not in TRANSFORM_NAMES:
        raise ValueError(f"apply_transform: name must be one of {TRANSFORM_NAMES}, got {name!r}")
    _check_per_lead(per_lead, "apply_transform")
    if name == "original":
        _as_windows(x, "apply_transform")
        return x.clone(memory_format=torch.contiguous_format)
    if name == "noise":
        return add_noise(x, 15.0, generator, per_lead=per_lead)
    if name == "scale":
        return scale(x, 1.1)
    if name == "negate":
        return negate(x)
    if name == "flip":
        return time_flip(x)
    if name == "permute":
        return permute_segments(x, 20, generator, per_lead=per_lead)
    return time_warp(x, 9, 1.05, 5, generator, per_lead=per_lead)


def make_pretext_batch(
    x: torch.Tensor, generator: torch.Generator | None = None, *, per_lead: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the SSL-ECG pretext batch: the 7 versions of every window, with labels.

    ``x``, ``generator`` (drawn in order: noise, permute, time warp) and ``per_lead``:
    see :mod:`ecgfast.transforms`.

    Returns:
        inputs: (7B, L) (or (7B, C, L) for a 3-D ``x``), version-major: rows
            ``k*B:(k+1)*B`` are ``apply_transform(x, TRANSFORM_NAMES[k])``.
        labels: (7B,) int64 on ``x``'s device, ``labels[k*B + b] = k`` (index into
            :data:`TRANSFORM_NAMES`).
    """
    _windows(x, "make_pretext_batch", per_lead, generator)
    versions = [apply_transform(x, name, generator, per_lead=per_lead)
                for name in TRANSFORM_NAMES]
    inputs = torch.cat(versions, dim=0)
    labels = torch.arange(len(TRANSFORM_NAMES), device=x.device).repeat_interleave(x.shape[0])
    return inputs, labels


class PretextTransform:
    """Callable form of :func:`make_pretext_batch`: ``inputs, labels = PretextTransform()(x)``
    (``PretextTransform(per_lead=True)`` draws per lead)."""

    names = TRANSFORM_NAMES

    def __init__(self, per_lead: bool = False):
        _check_per_lead(per_lead, "PretextTransform")
        self.per_lead = per_lead

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return make_pretext_batch(x, generator, per_lead=self.per_lead)

    def __repr__(self) -> str:
        return f"PretextTransform(names={self.names}, per_lead={self.per_lead})"

