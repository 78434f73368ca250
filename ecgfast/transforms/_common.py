"""What the SSL-ECG transformations and the contrastive augmentations share: input checks,
random draws on the generator's device, the noise model and the time-warp maths
(private to :mod:`ecgfast.transforms`). Windows are handled as (B, C, L); random draws are
(B,) (or (B, L) time maps) and broadcast over the C leads."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ecgfast.keyed import KeyedRandom


def _as_windows(x: torch.Tensor, fn: str) -> torch.Tensor:
    """Check ``x`` is (B, L) or (B, C, L) floating point; return a (B, C, L) view (C = 1
    for (B, L))."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() not in (2, 3):
        raise ValueError(
            f"{fn}: x must be (B, L) or (B, C, L) (C leads), got a {x.dim()}-D tensor of shape "
            f"{tuple(x.shape)}"
        )
    if x.dim() == 3 and x.shape[1] < 1:
        raise ValueError(f"{fn}: x must have at least one lead, got shape {tuple(x.shape)}")
    if x.shape[-1] < 1:
        raise ValueError(f"{fn}: x must have at least one sample per window, got L = 0")
    return x.reshape(x.shape[0], -1, x.shape[-1])


def _check_per_lead(per_lead, fn: str) -> None:
    if not isinstance(per_lead, bool):
        raise TypeError(f"{fn}: per_lead must be True or False, got {per_lead!r}")


def _per_lead(x3: torch.Tensor, per_lead, fn: str) -> torch.Tensor:
    """``x3`` (B, C, L) as the windows that take one draw each: itself (one draw per
    window, shared by its leads) or, with ``per_lead``, (B * C, 1, L) (one per lead)."""
    _check_per_lead(per_lead, fn)
    return x3.reshape(-1, 1, x3.shape[-1]) if per_lead else x3


def _windows(x: torch.Tensor, fn: str, per_lead: bool = False, generator=None) -> torch.Tensor:
    """The checks every transform starts with (x, per_lead, generator); returns the
    windows that take one draw each, as :func:`_per_lead` does."""
    x3 = _per_lead(_as_windows(x, fn), per_lead, fn)
    _check_generator(generator, fn)
    return x3


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64; everything else (fp32, fp16, bf16) computes in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _finish(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cast result ``y`` ((B, C, L) or (B * C, 1, L)) back to ``x``'s dtype and shape,
    contiguous."""
    return y.to(x.dtype).reshape(x.shape).contiguous()


def _check_generator(generator, fn: str) -> None:
    if generator is not None and not isinstance(generator, (torch.Generator, KeyedRandom)):
        raise TypeError(
            f"{fn}: generator must be a torch.Generator, an ecgfast.keyed.KeyedRandom or None, "
            f"got {type(generator).__name__}"
        )


def _rand(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Uniform [0, 1) draws, made on the generator's device, returned on ``device`` (a
    :class:`KeyedRandom` draws on ``device``, one stream per call, rows on axis 0)."""
    if generator is None:
        return torch.rand(shape, device=device, dtype=dtype)
    if isinstance(generator, KeyedRandom):
        return generator.uniform(tuple(shape), device, dtype)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _randn(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws, as :func:`_rand`."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    if isinstance(generator, KeyedRandom):
        return generator.normal(tuple(shape), device, dtype)
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


def _noise_at_snr(x3: torch.Tensor, snr_db: torch.Tensor, generator) -> torch.Tensor:
    """x3 (B, C, L) plus white Gaussian noise at per-window SNR ``snr_db`` (B,) in dB.

    Each lead gets the window's SNR relative to its own power (leads differ in amplitude),
    and independent noise samples.
    """
    work = _work_dtype(x3.dtype)
    xw = x3.to(work)
    signal_power = xw.square().mean(dim=-1)  # (B, C)
    noise_power = signal_power * torch.pow(10.0, -snr_db.to(work) / 10.0).unsqueeze(1)
    noise = _randn(xw.shape, generator, xw.device, work)
    return xw + noise * noise_power.sqrt().unsqueeze(-1)


def _random_permutations(batch: int, n: int, generator, device) -> torch.Tensor:
    """(batch, n) int64: an independent uniformly random permutation of 0..n-1 per row."""
    keys = _rand((batch, n), generator, device)
    return torch.argsort(keys, dim=1)


def _gather_time(x3: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[b, c, u] = x3[b, c, index[b, u]]``: one time map (B, L) for all leads."""
    return torch.gather(x3, 2, index.unsqueeze(1).expand(-1, x3.shape[1], -1))


def _interpolate_displaced(x3: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of each lead of ``x3`` (B, C, L) at positions ``u + disp[:, u]``
    (one displacement (B, L) per window, the same for its leads).

    ``disp`` (B, L) is the displacement in samples of output sample u's source position
    from u itself; keeping it apart from the integer u keeps the rounding error at the
    scale of the displacement (a zero displacement reads x exactly). Positions outside
    [0, L - 1] read the edge sample. Returns (B, C, L) in ``disp``'s dtype.
    """
    batch, _, length = x3.shape
    xw = x3.to(disp.dtype)
    if length == 1:
        return xw.clone()
    u = torch.arange(length, device=x3.device, dtype=torch.int64).expand(batch, length)
    whole = disp.floor()
    left = u + whole.long()
    weight = disp - whole
    below, above = left < 0, left > length - 2
    left = left.clamp(0, length - 2)
    weight = torch.where(below, torch.zeros_like(weight), weight)
    weight = torch.where(above, torch.ones_like(weight), weight)
    x_left = _gather_time(xw, left)
    x_right = _gather_time(xw, left + 1)
    return torch.lerp(x_left, x_right, weight.unsqueeze(1))


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
    x3: torch.Tensor, stretch: torch.Tensor, n: int, n_stretched: int, generator
) -> torch.Tensor:
    """x3 (B, C, L); stretch (B,) per-window factor. Returns (B, C, L) in the work dtype."""
    batch, _, length = x3.shape
    mask = _random_stretch_mask(batch, n, n_stretched, generator, x3.device)
    s = stretch.unsqueeze(1)
    factors = torch.where(mask, s, 1.0 / s)
    return _interpolate_displaced(x3, _warp_displacement(factors, length))


def _check_time_warp_args(x3: torch.Tensor, n_segments, n_stretched, fn: str) -> tuple[int, int]:
    length = x3.shape[-1]
    n = _check_int(n_segments, "n_segments", fn, 1)
    if n > length:
        raise ValueError(f"{fn}: n_segments must be <= the window length L = {length}, got {n}")
    n_st = _check_int(n_stretched, "n_stretched", fn, 0, n)
    return n, n_st

