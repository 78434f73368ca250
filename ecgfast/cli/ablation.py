"""``ecgfast ablation``: the report's Table 1 (see :mod:`ecgfast.ablation`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ecgfast.cli.common import (
    AUGMENT_CHOICES,
    UsageError,
    add_data_args,
    load_data,
    select_tasks,
)
from ecgfast.cli.evaluate import add_protocol_args

S = argparse.SUPPRESS  # unset flags stay out of the namespace, so --config can fill them


def cmd_ablation(args) -> int:
    from ecgfast.ablation import resolve, run_ablation
    from ecgfast.ablation.runner import check_out_dir

    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command", "out", "config")}
    quiet = flags.pop("quiet", False)
    try:
        config = resolve(flags, args.config)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = Path(args.out)
    check_out_dir(out, config)  # before loading data: a mismatch fails at once
    _, cohort = load_data({**config.to_dict(), "quiet": quiet}, need_labels=True)
    tasks = select_tasks(cohort, config.tasks)
    source = None
    if config.pretrain_data not in (None, config.data):
        import numpy as np

        windows, src = load_data({**config.to_dict(), "data": config.pretrain_data, "quiet": quiet},
                                 need_labels=False)
        source = (np.asarray(windows), src)
    payload = run_ablation(config, cohort, out, tasks=tasks, progress=not quiet,
                           pretrain_source=source)
    print((out / "table1.md").read_text())
    n = len(payload["cells"])
    print(f"{n} cells; table1.md, table1.csv, table1.json, table1.png and ablation.toml in {out}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "ablation", help="the report's Table 1: skip configurations trained to convergence, probed",
        description="Pretrain every skip configuration (x attention x seed) until the pretext "
                    "loss of held-out subjects stops improving, probe the best epoch's frozen "
                    "encoder under subject-wise and window-level folds, and write "
                    "OUT/table1.{md,csv,json,png}. Rerun the same command to continue a run "
                    "that was stopped. Every option can also be given in --config FILE.toml "
                    "(keys as the flags, with _ for -); flags win over the file.")
    p.add_argument("--out", required=True, help="output directory (cells, tables, figure)")
    p.add_argument("--config", default=None, metavar="FILE.toml", help="options from a TOML file")
    p.add_argument("--preset", default=S, choices=("quick",),
                   help="quick: a small synthetic smoke test for a 2-core CPU")
    p.add_argument("--quiet", action="store_true", default=S, help="no progress bars")
    add_data_args(p, suppress=True)
    p.add_argument("--pretrain-data", default=S, metavar="SOURCE",
                   help="pretrain on this source (anything --data takes) and probe on --data; "
                        "refused when the two share a window or a dataset, unless --transductive "
                        "(default: --data itself, pretrained per fold on its training subjects)")
    p.add_argument("--transductive", action="store_true", default=S,
                   help="pretrain once per cell on every labelled subject, the probes' test "
                        "subjects included (stated in every table)")
    add_protocol_args(p, suppress=True)
    g = p.add_argument_group("experiment")
    g.add_argument("--configs", default=S, metavar="A,B",
                   help="skip configurations (default: none,first,first_two,all)")
    g.add_argument("--attention", default=S, choices=("off", "on", "both"),
                   help="squeeze-excitation attention (default: off, as in the report's Table 1)")
    g.add_argument("--objective", default=S, choices=("transform", "contrastive", "both"),
                   help="pretext task (default: transform, SSL-ECG's)")
    g.add_argument("--seeds", type=int, default=S, help="seeds per configuration (default: 3)")
    g.add_argument("--max-epochs", type=int, default=S, help="at most this many epochs (100)")
    g.add_argument("--patience", type=int, default=S,
                   help="stop after this many epochs without a lower validation loss (5)")
    g.add_argument("--validation-fraction", type=float, default=S,
                   help="fraction of subjects held out of pretraining for early stopping (0.2)")
    g.add_argument("--batch-size", type=int, default=S, help="windows per step (128)")
    g.add_argument("--lr", type=float, default=S, help="Adam's learning rate (1e-3)")
    g.add_argument("--dropout", type=float, default=S, help="dropout after each conv (0.1)")
    g.add_argument("--max-steps-per-epoch", type=int, default=S)
    g.add_argument("--split", default=S, choices=("subject", "window", "both"),
                   help="probe protocol (default: both; subject-wise is the headline)")
    g.add_argument("--tasks", default=S, metavar="A,B",
                   help="tasks to probe (default: arousal and valence where present, else all)")
    g.add_argument("--subject-folds", type=int, default=S, help="subject-wise folds (5)")
    g.add_argument("--window-folds", type=int, default=S, help="window-level folds (10)")
    g.add_argument("--probe-epochs", type=int, default=S, help="full-batch Adam steps (300)")
    g.add_argument("--device", default=S, help="auto | cpu | cuda | cuda:N")
    g.add_argument("--backend", default=S, choices=("auto", "eager", "triton"),
                   help="encoder kernels (default: auto, Triton on a GPU)")
    g.add_argument("--precision", default=S, choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast dtype of pretraining and of the supervised baseline (auto: "
                        "see ecgfast pretrain --help)")
    g.add_argument("--threads", type=int, default=S,
                   help="torch intra-op threads (default: torch's, one per core); on a CPU "
                        "shared with other jobs one thread can be several times faster "
                        "(benchmarks/README.md)")
    g.add_argument("--augment", default=S, choices=AUGMENT_CHOICES,
                   help="contrastive augmentation set: report (time warp, circular shift, "
                        "scaling, noise; the default), no-warp, hr-preserving (scaling and "
                        "noise only: heart rate and RR intervals kept)")
    p.set_defaults(func=cmd_ablation)
