"""SSL-ECG signal transformations and contrastive augmentations, batched on the device.

Every function takes a batch of single-lead windows ``x`` of shape (B, L) or (B, 1, L)
(any floating dtype, any device; L in samples) and returns a new contiguous tensor of
the same shape, dtype and device. There is no Python loop over windows: random choices
are drawn for the whole batch at once (one draw per window) and applied with gather,
``searchsorted`` and linear interpolation computed from index maths.

Randomness comes from the optional ``generator`` (a :class:`torch.Generator`);
``generator=None`` uses the global RNG. Random numbers are drawn on the generator's
device and moved to ``x``'s device, so pass a generator on ``x``'s device to keep
everything there. fp16/bf16 inputs are processed in fp32 and cast back.

The six SSL-ECG transformations (Sarkar & Etemad 2020, original parameters):
:func:`add_noise` (SNR 15 dB), :func:`scale` (x1.1), :func:`negate`, :func:`time_flip`,
:func:`permute_segments` (20 segments), :func:`time_warp` (9 segments, 5 stretched by
1.05 and 4 squeezed by 1/1.05, cropped back to L). :func:`make_pretext_batch` builds
the 7 versions (original + 6) of every window with labels in the order of
:data:`TRANSFORM_NAMES`, which is the order of ``ecgfast.losses.SSL_ECG_TASK_WEIGHTS``.

Contrastive augmentations (scaling, time shift, noise, time warping):
:func:`random_scale`, :func:`random_time_shift`, :func:`random_noise`,
:func:`random_time_warp`, composed by :class:`ContrastiveAugment`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "TRANSFORM_NAMES",
    "ContrastiveAugment",
    "PretextTransform",
    "add_noise",
    "apply_transform",
    "make_pretext_batch",
    "negate",
    "permute_segments",
    "random_noise",
    "random_scale",
    "random_time_shift",
    "random_time_warp",
    "scale",
    "time_flip",
    "time_warp",
]

#: Names of the 7 versions of a window in the SSL-ECG pretext task; label k of
#: :func:`make_pretext_batch` is ``TRANSFORM_NAMES[k]``. Same order as
#: ``ecgfast.losses.SSL_ECG_TASK_WEIGHTS``.
TRANSFORM_NAMES = ("original", "noise", "scale", "negate", "flip", "permute", "time_warp")


# --------------------------------------------------------------------------------------
# Input checks and helpers
# --------------------------------------------------------------------------------------


def _as_windows(x: torch.Tensor, fn: str) -> torch.Tensor:
    """Check ``x`` is (B, L) or (B, 1, L) floating point; return a (B, L) view/copy."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 3:
        if x.shape[1] != 1:
            raise ValueError(
                f"{fn}: x must be (B, L) or (B, 1, L) (one lead), got shape {tuple(x.shape)}"
            )
    elif x.dim() != 2:
        raise ValueError(
            f"{fn}: x must be (B, L) or (B, 1, L), got a {x.dim()}-D tensor of shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[-1] < 1:
        raise ValueError(f"{fn}: x must have at least one sample per window, got L = 0")
    return x.reshape(x.shape[0], x.shape[-1])


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64; everything else (fp32, fp16, bf16) computes in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _finish(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cast (B, L) result ``y`` back to ``x``'s dtype and shape, contiguous."""
    return y.to(x.dtype).reshape(x.shape).contiguous()


def _check_generator(generator: torch.Generator | None, fn: str) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{fn}: generator must be a torch.Generator or None, got {type(generator).__name__}"
        )


def _rand(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) draws, made on the generator's device, returned on ``device``."""
    if generator is None:
        return torch.rand(shape, device=device, dtype=dtype)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _randn(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws, made on the generator's device, returned on ``device``."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _check_real(value, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{fn}: {name} must be finite, got {value!r}")
    return float(value)


def _check_int(value, name: str, fn: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{fn}: {name} must be {bound}, got {value}")
    return value


def _check_range(value, name: str, fn: str, positive: bool = False) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(f"{fn}: {name} must be a (low, high) pair, got {value!r}")
    low = _check_real(value[0], f"{name}[0]", fn)
    high = _check_real(value[1], f"{name}[1]", fn)
    if low > high:
        raise ValueError(f"{fn}: {name} must have low <= high, got {value!r}")
    if positive and low <= 0:
        raise ValueError(f"{fn}: {name} must be > 0, got {value!r}")
    return low, high


def _uniform(batch, low, high, generator, device, dtype) -> torch.Tensor:
    """(batch,) per-window draws, uniform in [low, high]."""
    return low + (high - low) * _rand((batch,), generator, device, dtype)


def _interpolate_displaced(x2: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of each row of ``x2`` (B, L) at positions ``u + disp[:, u]``.

    ``disp`` (B, L) is the displacement in samples of output sample u's source position
    from u itself; keeping it apart from the integer u keeps the rounding error at the
    scale of the displacement (a zero displacement reads x exactly). Positions outside
    [0, L - 1] read the edge sample. Returns (B, L) in ``disp``'s dtype.
    """
    batch, length = x2.shape
    xw = x2.to(disp.dtype)
    if length == 1:
        return xw.clone()
    u = torch.arange(length, device=x2.device, dtype=torch.int64).expand(batch, length)
    whole = disp.floor()
    left = u + whole.long()
    weight = disp - whole
    below, above = left < 0, left > length - 2
    left = left.clamp(0, length - 2)
    weight = torch.where(below, torch.zeros_like(weight), weight)
    weight = torch.where(above, torch.ones_like(weight), weight)
    x_left = torch.gather(xw, 1, left)
    x_right = torch.gather(xw, 1, left + 1)
    return torch.lerp(x_left, x_right, weight)


# --------------------------------------------------------------------------------------
# The six SSL-ECG transformations
# --------------------------------------------------------------------------------------


def _noise_at_snr(x2: torch.Tensor, snr_db: torch.Tensor, generator) -> torch.Tensor:
    """x2 (B, L) plus white Gaussian noise at per-window SNR ``snr_db`` (B,) in dB."""
    work = _work_dtype(x2.dtype)
    xw = x2.to(work)
    signal_power = xw.square().mean(dim=1)  # (B,)
    noise_power = signal_power * torch.pow(10.0, -snr_db.to(work) / 10.0)
    noise = _randn(xw.shape, generator, xw.device, work)
    return xw + noise * noise_power.sqrt().unsqueeze(1)


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


def _random_permutations(batch: int, n: int, generator, device) -> torch.Tensor:
    """(batch, n) int64: an independent uniformly random permutation of 0..n-1 per row."""
    keys = _rand((batch, n), generator, device)
    return torch.argsort(keys, dim=1)


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


def _warp_displacement(factors: torch.Tensor, length: int) -> torch.Tensor:
    """Source position minus output position, per output sample, of a time warp.

    The window [0, L) is cut into n equal segments of L / n samples (continuous
    boundaries ``j L / n``); segment j is resampled to ``factors[:, j] * L / n`` samples
    (factor > 1 stretches, < 1 squeezes) and the results are concatenated. Output sample
    u lies in output segment j when ``c_j <= u < c_{j+1}`` (``c`` the cumulative output
    lengths) and reads the input at ``t(u) = j L / n + (u - c_j) / factors[:, j]``, a
    piecewise-linear, increasing time map.

    If the warped length ``c_n`` is >= L, the output is its first L samples (cropped at
    the end). If it is shorter, the warped signal is uniformly resampled to fill L
    samples (u is replaced by ``u * c_n / L``), so the output still covers the window.

    Args:
        factors: (B, n) positive factors, fp32 or fp64.
        length: L.

    Returns:
        (B, L) displacement ``t(u) - u`` in samples, same dtype as ``factors``. It is
        computed without forming ``t(u)`` so that all factors equal to 1 give exactly 0.
    """
    batch, n = factors.shape
    dtype, device = factors.dtype, factors.device
    seg_in = length / n
    ends = factors.cumsum(dim=1)  # cumulative output length in segment units
    starts = ends - factors
    out_end, out_start = ends * seg_in, starts * seg_in  # c_{j+1}, c_j in samples
    fit = torch.clamp(out_end[:, -1:] / length, max=1.0)  # (B, 1); 1 when cropping
    u = torch.arange(length, device=device, dtype=dtype).expand(batch, length)
    fit_disp = u * (fit - 1.0)  # u_eff - u, exactly 0 when cropping
    u_eff = u + fit_disp
    j = torch.searchsorted(out_end[:, :-1].contiguous(), u_eff.contiguous(), right=True)
    c_j = torch.gather(out_start, 1, j)
    f_j = torch.gather(factors, 1, j)
    # t - u = (j L/n - c_j) + (u_eff - c_j) (1/f_j - 1) + (u_eff - u)
    return (j.to(dtype) * seg_in - c_j) + (u_eff - c_j) * (1.0 / f_j - 1.0) + fit_disp


def _random_stretch_mask(batch: int, n: int, n_stretched: int, generator, device) -> torch.Tensor:
    """(batch, n) bool with exactly ``n_stretched`` True per row at random positions."""
    perm = _random_permutations(batch, n, generator, device)
    ranks = torch.argsort(perm, dim=1)  # rank of each segment in a random order
    return ranks < n_stretched


def _time_warp_by_factor(
    x2: torch.Tensor, stretch: torch.Tensor, n: int, n_stretched: int, generator
) -> torch.Tensor:
    """x2 (B, L); stretch (B,) per-window factor. Returns (B, L) in the work dtype."""
    batch, length = x2.shape
    mask = _random_stretch_mask(batch, n, n_stretched, generator, x2.device)
    s = stretch.unsqueeze(1)
    factors = torch.where(mask, s, 1.0 / s)
    return _interpolate_displaced(x2, _warp_displacement(factors, length))


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
    about 0.66 % longer than L, so the end is cropped. If a choice of parameters makes
    it shorter than L (e.g. ``stretch < 1``, or fewer stretched than squeezed segments),
    the warped signal is uniformly resampled to L samples instead. Computed for all
    windows at once from a piecewise-linear map output sample -> source position.
    ``stretch = 1`` is exactly the identity.

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


def _check_time_warp_args(x2: torch.Tensor, n_segments, n_stretched, fn: str) -> tuple[int, int]:
    length = x2.shape[-1]
    n = _check_int(n_segments, "n_segments", fn, 1)
    if n > length:
        raise ValueError(f"{fn}: n_segments must be <= the window length L = {length}, got {n}")
    n_st = _check_int(n_stretched, "n_stretched", fn, 0, n)
    return n, n_st


# --------------------------------------------------------------------------------------
# Pretext batch
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Contrastive augmentations
# --------------------------------------------------------------------------------------


def random_scale(
    x: torch.Tensor,
    low: float = 0.8,
    high: float = 1.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multiply each window by its own factor drawn uniformly from [low, high].

    Args:
        x: (B, L) or (B, 1, L) floating windows.
        low, high: factor range (dimensionless), finite, low <= high (default 0.8-1.2).
        generator: optional torch.Generator; None uses the global RNG.

    Returns:
        Scaled windows, same shape, dtype and device as ``x``.
    """
    fn = "random_scale"
    x2 = _as_windows(x, fn)
    low, high = _check_range((low, high), "(low, high)", fn)
    _check_generator(generator, fn)
    work = _work_dtype(x2.dtype)
    factor = _uniform(x2.shape[0], low, high, generator, x2.device, work)
    return _finish(x2.to(work) * factor.unsqueeze(1), x)


def _roll_per_window(x2: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Circular shift of each row of x2 (B, L) by shift (B,) int64 samples (to the right)."""
    batch, length = x2.shape
    u = torch.arange(length, device=x2.device, dtype=torch.int64).expand(batch, length)
    src = torch.remainder(u - shift.unsqueeze(1), length)
    return torch.gather(x2, 1, src)


def random_time_shift(
    x: torch.Tensor, max_shift: float = 0.1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Circularly shift (roll) each window by its own random whole number of samples.

    The shift s is uniform over the integers in [-S, S] with ``S = floor(max_shift * L)``;
    ``out[t] = x[(t - s) mod L]`` (positive s moves the signal later in time, like
    ``torch.roll``).

    Args:
        x: (B, L) or (B, 1, L) floating windows.
        max_shift: largest shift as a fraction of L, in [0, 1] (default 0.1 = 1 s of a
            10 s window).
        generator: optional torch.Generator; None uses the global RNG.

    Returns:
        Shifted windows, same shape, dtype and device as ``x``.
    """
    fn = "random_time_shift"
    x2 = _as_windows(x, fn)
    max_shift = _check_real(max_shift, "max_shift", fn)
    if not 0.0 <= max_shift <= 1.0:
        raise ValueError(f"{fn}: max_shift must be in [0, 1] (a fraction of L), got {max_shift}")
    _check_generator(generator, fn)
    shift = _random_shifts(x2, max_shift, generator)
    return _finish(_roll_per_window(x2, shift), x)


def _random_shifts(x2: torch.Tensor, max_shift: float, generator) -> torch.Tensor:
    batch, length = x2.shape
    s_max = math.floor(max_shift * length)
    u = _rand((batch,), generator, x2.device)
    # uniform over the 2 S + 1 integers -S..S
    return (u * (2 * s_max + 1)).floor().long().clamp(max=2 * s_max) - s_max


def random_noise(
    x: torch.Tensor,
    snr_db: tuple[float, float] = (15.0, 30.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add white Gaussian noise at a per-window SNR drawn uniformly from ``snr_db``.

    Same noise model as :func:`add_noise` (noise variance ``mean(x**2) * 10**(-SNR/10)``
    per window), with SNR ~ U[snr_db[0], snr_db[1]] dB independently per window.

    Args:
        x: (B, L) or (B, 1, L) floating windows.
        snr_db: (low, high) SNR range in dB (default 15-30 dB).
        generator: optional torch.Generator; None uses the global RNG.

    Returns:
        Noisy windows, same shape, dtype and device as ``x``.
    """
    fn = "random_noise"
    x2 = _as_windows(x, fn)
    low, high = _check_range(snr_db, "snr_db", fn)
    _check_generator(generator, fn)
    work = _work_dtype(x2.dtype)
    snr = _uniform(x2.shape[0], low, high, generator, x2.device, work)
    return _finish(_noise_at_snr(x2, snr, generator), x)


def random_time_warp(
    x: torch.Tensor,
    stretch: tuple[float, float] = (1.0, 1.1),
    n_segments: int = 9,
    n_stretched: int = 5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`time_warp` with a per-window stretch factor drawn uniformly from ``stretch``.

    Each window draws s ~ U[stretch[0], stretch[1]] and its own random set of
    ``n_stretched`` segments; those are stretched by s, the others squeezed by 1/s, and
    the result is cropped (or, if shorter, resampled) to L exactly as in
    :func:`time_warp`. The default range 1.0-1.1 goes from no warp to about twice the
    SSL-ECG pretext warp (1.05).

    Args:
        x: (B, L) or (B, 1, L) floating windows.
        stretch: (low, high) range of the stretch factor, both > 0 (default 1.0-1.1).
        n_segments: number of segments n, 1 <= n <= L (default 9).
        n_stretched: segments stretched per window, 0 <= k <= n (default 5).
        generator: optional torch.Generator; None uses the global RNG.

    Returns:
        Warped windows, same shape, dtype and device as ``x``.
    """
    fn = "random_time_warp"
    x2 = _as_windows(x, fn)
    low, high = _check_range(stretch, "stretch", fn, positive=True)
    n, n_st = _check_time_warp_args(x2, n_segments, n_stretched, fn)
    _check_generator(generator, fn)
    work = _work_dtype(x2.dtype)
    s = _uniform(x2.shape[0], low, high, generator, x2.device, work)
    return _finish(_time_warp_by_factor(x2, s, n, n_st, generator), x)


class ContrastiveAugment:
    """Random augmentation for contrastive (NT-Xent) pretraining: warp, shift, scale, noise.

    Applied in this order, each to every window with its own probability: time warp
    (:func:`random_time_warp`), circular time shift (:func:`random_time_shift`), amplitude
    scaling (:func:`random_scale`), additive noise (:func:`random_noise`; last, so its SNR
    is relative to the augmented signal). Whether a window gets an augmentation is a
    per-window Bernoulli draw; the augmentation is computed for the whole batch and
    selected with ``torch.where`` (no loop over windows).

    Args:
        scale: (low, high) amplitude factor range, or None to disable (default 0.8-1.2).
        max_shift: largest circular shift as a fraction of L, in [0, 1]; 0 disables
            (default 0.1).
        snr_db: (low, high) SNR range in dB, or None to disable (default 15-30 dB).
        warp: (low, high) stretch-factor range for :func:`random_time_warp` (9 segments,
            5 stretched), or None to disable (default 1.0-1.1).
        p: probability that a window gets each augmentation: one float for all four,
            or a 4-tuple in the order (warp, shift, scale, noise). Default 0.8 (an
            engineering choice, as SimCLR's colour jitter; the report gives none).

    Call: ``aug(x, generator=None)`` with x (B, L) or (B, 1, L) returns one augmented
    view, same shape, dtype and device; ``aug.two_views(x)`` returns two independent
    views ``(v1, v2)``.
    """

    _ORDER = ("warp", "shift", "scale", "noise")

    def __init__(
        self,
        scale: tuple[float, float] | None = (0.8, 1.2),
        max_shift: float = 0.1,
        snr_db: tuple[float, float] | None = (15.0, 30.0),
        warp: tuple[float, float] | None = (1.0, 1.1),
        p: float | Sequence[float] = 0.8,
    ):
        fn = "ContrastiveAugment"
        self.scale = None if scale is None else _check_range(scale, "scale", fn)
        self.max_shift = _check_real(max_shift, "max_shift", fn)
        if not 0.0 <= self.max_shift <= 1.0:
            raise ValueError(f"{fn}: max_shift must be in [0, 1], got {max_shift}")
        self.snr_db = None if snr_db is None else _check_range(snr_db, "snr_db", fn)
        self.warp = None if warp is None else _check_range(warp, "warp", fn, positive=True)
        if isinstance(p, Sequence) and not isinstance(p, str):
            if len(p) != 4:
                raise ValueError(f"{fn}: p must be a float or 4 floats {self._ORDER}, got {p!r}")
            probs = tuple(_check_real(v, "p", fn) for v in p)
        else:
            probs = (_check_real(p, "p", fn),) * 4
        if any(not 0.0 <= v <= 1.0 for v in probs):
            raise ValueError(f"{fn}: p must be in [0, 1], got {p!r}")
        self.p = dict(zip(self._ORDER, probs))

    def _maybe(self, name: str, y: torch.Tensor, out: torch.Tensor, generator) -> torch.Tensor:
        prob = self.p[name]
        if prob >= 1.0:
            return y
        keep = _rand((out.shape[0],), generator, out.device) < prob
        return torch.where(keep.unsqueeze(1), y, out)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        fn = "ContrastiveAugment"
        x2 = _as_windows(x, fn)
        _check_generator(generator, fn)
        out = x2.to(_work_dtype(x2.dtype))
        if self.warp is not None and self.p["warp"] > 0:
            y = random_time_warp(out, self.warp, generator=generator)
            out = self._maybe("warp", y, out, generator)
        if self.max_shift > 0 and self.p["shift"] > 0:
            y = random_time_shift(out, self.max_shift, generator)
            out = self._maybe("shift", y, out, generator)
        if self.scale is not None and self.p["scale"] > 0:
            y = random_scale(out, *self.scale, generator=generator)
            out = self._maybe("scale", y, out, generator)
        if self.snr_db is not None and self.p["noise"] > 0:
            y = random_noise(out, self.snr_db, generator)
            out = self._maybe("noise", y, out, generator)
        return _finish(out, x)

    def two_views(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views of x (B, L) or (B, 1, L): ``(v1, v2)``."""
        return self(x, generator), self(x, generator)

    def __repr__(self) -> str:
        return (
            f"ContrastiveAugment(scale={self.scale}, max_shift={self.max_shift}, "
            f"snr_db={self.snr_db}, warp={self.warp}, p={self.p})"
        )
