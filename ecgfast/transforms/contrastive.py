"""Contrastive augmentations (scaling, time shift, noise, time warping):
:func:`random_scale`, :func:`random_time_shift`, :func:`random_noise`,
:func:`random_time_warp`, composed by :class:`ContrastiveAugment`, whose named sets are
:data:`AUGMENT_PRESETS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ecgfast.transforms._common import (
    _check_per_lead,
    _check_range,
    _check_real,
    _check_time_warp_args,
    _finish,
    _gather_time,
    _noise_at_snr,
    _rand,
    _time_warp_by_factor,
    _uniform,
    _windows,
    _work_dtype,
)


def random_scale(
    x: torch.Tensor,
    low: float = 0.8,
    high: float = 1.2,
    generator: torch.Generator | None = None,
    *,
    per_lead: bool = False,
) -> torch.Tensor:
    """Multiply each window by its own factor drawn uniformly from [low, high].

    ``low, high``: factor range (dimensionless), finite, low <= high (default 0.8-1.2).
    ``x``, ``generator``, ``per_lead`` and the result: see :mod:`ecgfast.transforms`.
    """
    fn = "random_scale"
    x3 = _windows(x, fn, per_lead, generator)
    low, high = _check_range((low, high), "(low, high)", fn)
    work = _work_dtype(x3.dtype)
    factor = _uniform(x3.shape[0], low, high, generator, x3.device, work)
    return _finish(x3.to(work) * factor[:, None, None], x)


def _roll_per_window(x3: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Circular shift of each window of x3 (B, C, L) by shift (B,) int64 samples (to the
    right), all its leads alike."""
    batch, _, length = x3.shape
    u = torch.arange(length, device=x3.device, dtype=torch.int64).expand(batch, length)
    src = torch.remainder(u - shift.unsqueeze(1), length)
    return _gather_time(x3, src)


def random_time_shift(
    x: torch.Tensor, max_shift: float = 0.1, generator: torch.Generator | None = None,
    *, per_lead: bool = False,
) -> torch.Tensor:
    """Circularly shift (roll) each window by its own random whole number of samples.

    The shift s is uniform over the integers in [-S, S] with ``S = floor(max_shift * L)``;
    ``out[t] = x[(t - s) mod L]`` (positive s moves the signal later in time, like
    ``torch.roll``). ``max_shift``: largest shift as a fraction of L, in [0, 1] (default
    0.1 = 1 s of a 10 s window). ``x``, ``generator``, ``per_lead`` and the result: see
    :mod:`ecgfast.transforms`.
    """
    fn = "random_time_shift"
    x3 = _windows(x, fn, per_lead, generator)
    max_shift = _check_real(max_shift, "max_shift", fn)
    if not 0.0 <= max_shift <= 1.0:
        raise ValueError(f"{fn}: max_shift must be in [0, 1] (a fraction of L), got {max_shift}")
    shift = _random_shifts(x3, max_shift, generator)
    return _finish(_roll_per_window(x3, shift), x)


def _random_shifts(x3: torch.Tensor, max_shift: float, generator) -> torch.Tensor:
    batch, _, length = x3.shape
    s_max = math.floor(max_shift * length)
    u = _rand((batch,), generator, x3.device)
    # uniform over the 2 S + 1 integers -S..S
    return (u * (2 * s_max + 1)).floor().long().clamp(max=2 * s_max) - s_max


def random_noise(
    x: torch.Tensor,
    snr_db: tuple[float, float] = (15.0, 30.0),
    generator: torch.Generator | None = None,
    *,
    per_lead: bool = False,
) -> torch.Tensor:
    """Add white Gaussian noise at a per-window SNR drawn uniformly from ``snr_db``.

    Same noise model as :func:`add_noise` (noise variance ``mean(x**2) * 10**(-SNR/10)``
    per lead), with SNR ~ U[snr_db[0], snr_db[1]] dB independently per window.
    ``snr_db``: (low, high) SNR range in dB (default 15-30 dB). ``x``, ``generator``,
    ``per_lead`` and the result: see :mod:`ecgfast.transforms`.
    """
    fn = "random_noise"
    x3 = _windows(x, fn, per_lead, generator)
    low, high = _check_range(snr_db, "snr_db", fn)
    work = _work_dtype(x3.dtype)
    snr = _uniform(x3.shape[0], low, high, generator, x3.device, work)
    return _finish(_noise_at_snr(x3, snr, generator), x)


def random_time_warp(
    x: torch.Tensor,
    stretch: tuple[float, float] = (1.0, 1.1),
    n_segments: int = 9,
    n_stretched: int = 5,
    generator: torch.Generator | None = None,
    *,
    per_lead: bool = False,
) -> torch.Tensor:
    """:func:`time_warp` with a per-window stretch factor drawn uniformly from ``stretch``.

    Each window draws s ~ U[stretch[0], stretch[1]] and its own random set of
    ``n_stretched`` segments; those are stretched by s, the others squeezed by 1/s, and
    the result is cropped (or, if shorter, resampled) to L exactly as in
    :func:`time_warp`. The default range 1.0-1.1 goes from no warp to about twice the
    SSL-ECG pretext warp (1.05). ``stretch``: (low, high) range of the stretch factor,
    both > 0 (default 1.0-1.1); ``n_segments`` (default 9) and ``n_stretched`` (default
    5) as in :func:`time_warp`. ``x``, ``generator``, ``per_lead`` and the result: see
    :mod:`ecgfast.transforms`.
    """
    fn = "random_time_warp"
    x3 = _windows(x, fn, per_lead, generator)
    low, high = _check_range(stretch, "stretch", fn, positive=True)
    n, n_st = _check_time_warp_args(x3, n_segments, n_stretched, fn)
    work = _work_dtype(x3.dtype)
    s = _uniform(x3.shape[0], low, high, generator, x3.device, work)
    return _finish(_time_warp_by_factor(x3, s, n, n_st, generator), x)


#: Named augmentation sets (``--augment``), as :class:`ContrastiveAugment` arguments:
#:
#: - ``report``: the report's four (time warp, circular shift, scaling, noise); the default.
#: - ``no-warp``: no time warp, so the RR intervals inside a window are kept; the circular
#:   shift still joins the window's end to its start (one RR interval at the seam changes).
#: - ``hr-preserving``: scaling and noise only: heart rate and every RR interval kept, for
#:   tasks whose signal is the heart rate (stress, arousal, mental load).
AUGMENT_PRESETS = {
    "report": {},
    "no-warp": {"warp": None},
    "hr-preserving": {"warp": None, "max_shift": 0.0},
}


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
        per_lead: draw every choice (whether, and how much) per lead instead of per
            window (see :mod:`ecgfast.transforms`); default False.

    Call: ``aug(x, generator=None)`` returns one augmented view of x, same shape, dtype
    and device; ``aug.two_views(x)`` returns two independent views ``(v1, v2)``.
    """

    _ORDER = ("warp", "shift", "scale", "noise")

    def __init__(
        self,
        scale: tuple[float, float] | None = (0.8, 1.2),
        max_shift: float = 0.1,
        snr_db: tuple[float, float] | None = (15.0, 30.0),
        warp: tuple[float, float] | None = (1.0, 1.1),
        p: float | Sequence[float] = 0.8,
        per_lead: bool = False,
    ):
        fn = "ContrastiveAugment"
        _check_per_lead(per_lead, fn)
        self.per_lead = per_lead
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

    @classmethod
    def preset(cls, name: str, **overrides) -> ContrastiveAugment:
        """The named set of :data:`AUGMENT_PRESETS` (``overrides``: other arguments)."""
        if name not in AUGMENT_PRESETS:
            raise ValueError(f"augment must be one of {tuple(AUGMENT_PRESETS)}, got {name!r}")
        return cls(**{**AUGMENT_PRESETS[name], **overrides})

    def _maybe(self, name: str, y: torch.Tensor, out: torch.Tensor, generator) -> torch.Tensor:
        prob = self.p[name]
        if prob >= 1.0:
            return y
        keep = _rand((out.shape[0],), generator, out.device) < prob
        return torch.where(keep[:, None, None], y, out)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        fn = "ContrastiveAugment"
        x3 = _windows(x, fn, self.per_lead, generator)
        out = x3.to(_work_dtype(x3.dtype))
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
        """Two independently augmented views of x: ``(v1, v2)``."""
        return self(x, generator), self(x, generator)

    def __repr__(self) -> str:
        return (
            f"ContrastiveAugment(scale={self.scale}, max_shift={self.max_shift}, "
            f"snr_db={self.snr_db}, warp={self.warp}, p={self.p}, per_lead={self.per_lead})"
        )

