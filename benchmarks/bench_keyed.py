"""What keyed draws (:mod:`ecgfast.keyed`) cost against torch's generator draws.

Since the chunked step needs draws keyed by window, every training step's dropout masks
and augmentations are keyed; these rows price that, each pair in one run:

- ``dropout``: inverted dropout (p = 0.1) forward of one encoder activation, block 1's
  conv output (B, 32, L): ``F.dropout`` (torch's Bernoulli draw) against
  :func:`ecgfast.keyed.keyed_dropout` (the hashed mask, row-blocked on the CPU).
- ``augment``: :class:`ecgfast.transforms.ContrastiveAugment` ``two_views`` of (B, 1, L)
  windows with a ``torch.Generator`` against a :class:`~ecgfast.keyed.KeyedRandom`.

CPU: B = 256, L = 2560 (10 s at 256 Hz); CUDA (when present): B = 4096. ``extra_info``
holds the elements per second and the device. Run::

    python -m pytest benchmarks/bench_keyed.py --benchmark-json benchmarks/results/keyed-cpu.json
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from common import device_info, sync

from ecgfast.keyed import KeyedRandom, keyed_dropout
from ecgfast.transforms import ContrastiveAugment

BATCH = {"cpu": 256, "cuda": 4096}
LENGTH, CHANNELS, P = 2560, 32, 0.1
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _run(benchmark, device, fn, numel):
    fn()
    sync(device)

    def call():
        fn()
        sync(device)

    benchmark.pedantic(call, rounds=5, warmup_rounds=1)
    benchmark.extra_info.update({"elements_per_s": numel / benchmark.stats.stats.median,
                                 "device": device_info()})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["torch", "keyed"])
def test_dropout(benchmark, device, kind):
    b = BATCH[device]
    x = torch.randn(b, CHANNELS, LENGTH, device=device)
    if kind == "torch":
        def fn():
            return F.dropout(x, P, training=True)
    else:
        keys = KeyedRandom.for_batch(0, b, device).dropout_keys(1, device)[0]

        def fn():
            return keyed_dropout(x, P, keys)
    benchmark.group = f"dropout-{device}"
    _run(benchmark, device, fn, x.numel())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["torch", "keyed"])
def test_augment(benchmark, device, kind):
    b = BATCH[device]
    x = torch.randn(b, 1, LENGTH, device=device)
    aug = ContrastiveAugment()
    if kind == "torch":
        gen = torch.Generator(device=device).manual_seed(0)

        def fn():
            return aug.two_views(x, gen)
    else:
        def fn():
            return aug.two_views(x, KeyedRandom.for_batch(0, b, device))
    benchmark.group = f"augment-{device}"
    _run(benchmark, device, fn, 2 * x.numel())
