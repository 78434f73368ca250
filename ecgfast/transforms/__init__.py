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

- :mod:`ecgfast.transforms.pretext`: the six SSL-ECG transformations (Sarkar & Etemad
  2020, original parameters) and :func:`make_pretext_batch`, the 7 versions of every
  window labelled in the order of :data:`TRANSFORM_NAMES`.
- :mod:`ecgfast.transforms.contrastive`: the contrastive augmentations, composed by
  :class:`ContrastiveAugment`.
- ``ecgfast.transforms._common``: the input checks, random draws, noise model and
  time-warp maths both use.
"""

from ecgfast.transforms.contrastive import (
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
