"""SSL-ECG signal transformations and contrastive augmentations, batched on the device.

The arguments every function shares (each function's docstring refers here):

- ``x``: a batch of windows, (B, L) (one lead) or (B, C, L) (C leads), any floating
  dtype, any device, L in samples. The result is a new contiguous tensor of the same
  shape, dtype and device. fp16/bf16 inputs are processed in fp32 and cast back.
- ``generator``: optional :class:`torch.Generator` the random choices come from;
  None uses the global RNG. Random numbers are drawn on the generator's device and moved
  to ``x``'s device, so pass a generator on ``x``'s device to keep everything there.
  An :class:`ecgfast.keyed.KeyedRandom` (rows: the windows of ``x``) is accepted too: every
  draw is then a function of (seed, draw, window), so a window's augmentation does not
  depend on the other windows of its batch (what chunked training steps need); each
  call uses the next stream of draws.
- ``per_lead`` (random functions only): False (the default) makes one draw per window,
  applied to all its leads alike (the same scale factor, shift, segment order, time warp,
  SNR; a multi-lead ECG stays one heartbeat seen from C directions); True makes one
  draw per (window, lead), as if every lead were a window of its own. Noise samples are
  independent per sample either way, and the SNR is relative to each lead's own power.
  For C = 1 both give the same result.

There is no Python loop over windows: random choices are drawn for the whole batch at
once and applied with gather, ``searchsorted`` and linear interpolation computed from
index maths.

- :mod:`ecgfast.transforms.pretext`: the six SSL-ECG transformations (Sarkar & Etemad
  2020, original parameters) and :func:`make_pretext_batch`, the 7 versions of every
  window labelled in the order of :data:`TRANSFORM_NAMES`.
- :mod:`ecgfast.transforms.contrastive`: the contrastive augmentations, composed by
  :class:`ContrastiveAugment`.
- ``ecgfast.transforms._common``: the input checks, random draws, noise model and
  time-warp maths both use.
"""

from ecgfast.transforms.contrastive import (
    AUGMENT_PRESETS,
    ContrastiveAugment,
    random_noise,
    random_scale,
    random_time_shift,
    random_time_warp,
)
from ecgfast.transforms.pretext import (
    TRANSFORM_NAMES,
    PretextTransform,
    add_noise,
    apply_transform,
    make_pretext_batch,
    negate,
    permute_segments,
    scale,
    time_flip,
    time_warp,
)

__all__ = [
    "AUGMENT_PRESETS",
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
