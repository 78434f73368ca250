"""``ecgfast pretrain``, ``demo`` and ``datasets`` (``evaluate`` is in :mod:`.evaluate`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ecgfast.cli import evaluate
from ecgfast.cli.common import (
    AUGMENT_CHOICES,
    UsageError,
    add_data_args,
    add_encoder_args,
    data_provenance,
    datasets_module,
    default_cache_dir,
    encoder_config,
    is_rank_zero,
    load_data,
    write_json,
)

OBJECTIVE_CHOICES = ("transform", "contrastive", "both")


def _add_pretrain_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--objective", default="transform", choices=OBJECTIVE_CHOICES)
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=128, help="windows per step")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temperature", type=float, default=0.5, help="NT-Xent tau")
    g.add_argument("--augment", default="report", choices=AUGMENT_CHOICES,
                   help="the contrastive augmentation set: report (time warp, circular "
                        "shift, scaling, noise), no-warp, hr-preserving (scaling and noise: "
                        "every RR interval kept); recorded in the checkpoint")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--max-steps-per-epoch", type=int, default=None)
    g.add_argument("--loader-workers", type=int, default=None,
                   help="--data STORE: DataLoader processes (default: up to 4, one per core)")
    _add_large_batch_args(p)


def _add_large_batch_args(p: argparse.ArgumentParser) -> None:
    """Step options for large batches: chunking, optimizer, schedule, precision."""
    g = p.add_argument_group("large batches")
    g.add_argument("--chunk-size", default=None, metavar="N|auto",
                   help="windows per encoder pass of a contrastive step (default: the whole "
                        "batch; auto: the largest that fits half the free memory)")
    g.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "lars"))
    g.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"))
    g.add_argument("--warmup-epochs", type=float, default=0.0, help="linear lr warm-up")
    g.add_argument("--lr-scaling", default="none", choices=("none", "linear", "sqrt"),
                   help="scale --lr by (global batch / 256), or its square root")
    g.add_argument("--weight-decay", type=float, default=0.0,
                   help="not applied to biases with adamw and lars")
    g.add_argument("--momentum", type=float, default=0.9, help="LARS momentum")
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast dtype (auto: bf16 on CUDA GPUs that support it and on CPUs "
                        "with AMX-BF16 or AVX512-BF16, else fp32)")


def _pretrain_config(args):
    from ecgfast.training import PretrainConfig

    try:
        return PretrainConfig(objective=args.objective, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              temperature=args.temperature, augment=args.augment,
                              device=args.device,
                              max_steps_per_epoch=args.max_steps_per_epoch,
                              chunk_size=args.chunk_size, optimizer=args.optimizer,
                              lr_schedule=args.lr_schedule, warmup_epochs=args.warmup_epochs,
                              lr_scaling=args.lr_scaling, weight_decay=args.weight_decay,
                              momentum=args.momentum, precision=args.precision)
    except ValueError as err:
        raise UsageError(f"training options: {err}") from err


def cmd_pretrain(args) -> int:
    from ecgfast.distributed import destroy_process_group
    from ecgfast.training import pretrain

    windows, cohort = load_data(args, need_labels=False)
    data_leads = getattr(windows, "leads", None)  # a window store names its leads
    try:
        result = pretrain(windows, args.out, encoder_config(args, data_leads),
                          _pretrain_config(args),
                          resume=args.resume, progress=not args.quiet,
                          loader_workers=getattr(args, "loader_workers", None),
                          provenance=data_provenance(args, windows, cohort))
    finally:
        destroy_process_group()
    if not is_rank_zero():
        return 0
    last = result.history[-1] if result.history else {}
    print(f"checkpoint: {result.checkpoint}")
    if last:
        print(f"final epoch {last['epoch']}: loss {last['loss']:.4f}, "
              f"{last['windows_per_s']:.1f} windows/s")
    return 0


def _evaluate(encoders: dict, cohort, args, tasks=("arousal", "valence")) -> dict:
    from ecgfast.evaluation import evaluate_encoder

    labels = {t: cohort.labels[t] for t in tasks}
    n_classes = {t: len(cohort.classes[t]) for t in tasks}
    return {
        name: evaluate_encoder(enc, cohort.windows, labels, split=args.split,
                               groups=cohort.subject, n_folds=args.folds, seed=args.seed,
                               progress=not args.quiet, epochs=args.probe_epochs,
                               n_classes=n_classes)
        for name, enc in encoders.items()
    }


def cmd_demo(args) -> int:
    import torch

    from ecgfast.data import make_cohort
    from ecgfast.evaluation import format_table
    from ecgfast.models import ECGEncoder, EncoderConfig
    from ecgfast.provenance import describe_data
    from ecgfast.training import PretrainConfig, pretrain

    t0 = time.perf_counter()
    if args.out is None:  # a fresh directory each time: ecgfast-demo, ecgfast-demo-2, ...
        out, n = Path("ecgfast-demo"), 1
        while out.exists():
            n += 1
            out = Path(f"ecgfast-demo-{n}")
    else:
        out = Path(args.out)
        if (out / "checkpoints").exists():
            raise UsageError(f"--out {out}: already holds a run; choose another directory")
    print(f"[1/3] synthetic ECGSYN cohort: {args.subjects} subjects x {args.sessions} sessions "
          f"x {args.session_seconds:g} s (synthetic data, not a real affect study)")
    cohort = make_cohort(n_subjects=args.subjects, sessions_per_subject=args.sessions,
                         session_seconds=args.session_seconds, seed=args.seed)
    print(f"      {len(cohort)} windows of {cohort.windows.shape[1]} samples at {cohort.fs:g} Hz")
    enc_cfg = EncoderConfig(residual="all", attention=True, dropout=0.1)
    train_cfg = PretrainConfig(objective=args.objective, epochs=args.epochs,
                               batch_size=args.batch_size, seed=args.seed, device="auto",
                               max_steps_per_epoch=args.max_steps_per_epoch)
    print(f"[2/3] pretraining ({args.objective}, {args.epochs} epochs) -> {out}")
    result = pretrain(cohort.windows, out, enc_cfg, train_cfg, progress=not args.quiet,
                      provenance=describe_data(cohort.windows, cohort=cohort, source="synthetic"))
    torch.manual_seed(args.seed)
    random_encoder = ECGEncoder(enc_cfg).eval()
    print(f"[3/3] probing frozen embeddings (split: {args.split})")
    args.folds = None
    results = _evaluate({"pretrained": result.encoder, "random init": random_encoder}, cohort, args)
    table = format_table(results)
    print()
    print(f"arousal / valence probe on the synthetic cohort, {args.split}-wise folds (%, mean ± std)")
    print(table)
    write_json(out / "demo_results.json", {
        "split": args.split, "results": results, "pretraining": result.history,
        "seconds": time.perf_counter() - t0,
    })
    print(f"\nrun, checkpoints, metrics.jsonl, training_curve.png and demo_results.json in {out} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


def cmd_datasets(args) -> int:
    catalogue = datasets_module("NAME:ROOT").DATASETS
    names = args.names or list(catalogue)
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise UsageError(f"{unknown}: no such dataset; the datasets are {', '.join(sorted(catalogue))}")
    for name in names:
        info = catalogue[name]
        print(f"{info.name}: {info.title}")
        print(f"  tasks: {', '.join(info.tasks)}")
        if info.default_threshold is not None:
            print(f"  default --threshold: {info.default_threshold:g}")
        if len(info.leads) > 1:
            print(f"  leads (--lead): {', '.join(map(str, info.leads))} (default {info.leads[0]})")
        print("  layout:")
        for line in str(info.layout).strip().splitlines():
            print(f"    {line}")
        print()
    print(f"load one with --data NAME:ROOT (e.g. --data {names[0]}:/path/to/{names[0]}); "
          f"pre-processed cohorts are cached in {default_cache_dir()} (--cache-dir, --no-cache)")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain an encoder on unlabelled windows")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, curve)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_args(p)
    add_encoder_args(p)
    _add_pretrain_args(p)
    p.set_defaults(func=cmd_pretrain)

    evaluate.add_command(sub)

    p = sub.add_parser("demo", help="synthetic cohort -> pretrain -> probe, in a few minutes")
    p.add_argument("--out", default=None,
                   help="run directory (default: a new ecgfast-demo[-N] in the current directory)")
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--session-seconds", type=float, default=40.0)
    p.add_argument("--objective", default="transform", choices=OBJECTIVE_CHOICES)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--split", default="subject", choices=("subject", "window"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-epochs", type=int, default=300, help="full-batch Adam steps of the probe")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("datasets", help="list the datasets --data NAME:ROOT reads, and their layouts")
    p.add_argument("names", nargs="*", help="only these datasets")
    p.set_defaults(func=cmd_datasets)
