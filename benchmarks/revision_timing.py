"""Time the hot paths of one ecgfast checkout, for comparing two revisions on one machine.

Run it with each checkout's interpreter (each venv imports its own ecgfast), alternating,
and compare the medians within the same session::

    python benchmarks/revision_timing.py --label new > new.json

Cases: the default encoder's forward+backward (eager, CPU), the Contrastive objective's
forward+backward (eager NT-Xent), and NT-Xent forward+backward with the eager and the
streaming backends. Only public API that both revisions have is used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--label", required=True)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    import ecgfast
    from ecgfast.losses import nt_xent
    from ecgfast.models import ECGEncoder, EncoderConfig
    from ecgfast.objectives import build_objective

    torch.manual_seed(0)
    encoder = ECGEncoder(EncoderConfig(backend="eager"))
    x = torch.randn(16, 1, 2560)

    def encoder_step():
        encoder.zero_grad(set_to_none=True)
        encoder(x).sum().backward()

    objective = build_objective("contrastive", ECGEncoder(EncoderConfig(backend="eager")),
                                nt_xent_backend="eager")
    windows = torch.randn(16, 2560)

    def objective_step():
        objective.zero_grad(set_to_none=True)
        loss, _ = objective(windows, torch.Generator().manual_seed(1))
        loss.backward()

    def loss_step(two_n, backend):
        z1 = torch.randn(two_n // 2, 128, requires_grad=True)
        z2 = torch.randn(two_n // 2, 128, requires_grad=True)

        def step():
            nt_xent(z1, z2, 0.5, backend=backend).backward()
        return step

    cases = {
        "encoder_fwd_bwd_b16": encoder_step,
        "contrastive_objective_b16": objective_step,
        "nt_xent_eager_2n2048": loss_step(2048, "eager"),
        "nt_xent_streaming_2n8192": loss_step(8192, "streaming"),
    }
    out = {"label": args.label, "ecgfast": ecgfast.__file__, "torch": torch.__version__,
           "threads": args.threads, "median_s": {}}
    for name, fn in cases.items():
        out["median_s"][name] = _median_time(fn, args.repeats)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
