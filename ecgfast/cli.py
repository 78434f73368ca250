"""The ``ecgfast`` command: pretrain, evaluate, demo.

Run ``ecgfast COMMAND --help`` for the options of each command. Errors in what the user
gave (files, arguments) are printed as one line naming the file or argument, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ecgfast.models import RESIDUAL_PRESETS, EncoderConfig


class UsageError(ValueError):
    """An argument the user gave is wrong; the message names it."""


# ---------------------------------------------------------------------------- data


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="synthetic", metavar="SOURCE",
                   help="'synthetic' (the built-in ECGSYN cohort), a cohort .npz written by "
                        "Cohort.save, or recordings (.npy, .csv, WFDB .hea) for pretraining")
    g.add_argument("--fs", type=float, default=None,
                   help="sampling rate in Hz of .npy/.csv recordings (WFDB headers carry theirs)")
    g.add_argument("--subjects", type=int, default=8, help="synthetic cohort: subjects")
    g.add_argument("--sessions", type=int, default=4, help="synthetic cohort: sessions per subject")
    g.add_argument("--session-seconds", type=float, default=60.0,
                   help="synthetic cohort: seconds per session")
    g.add_argument("--data-seed", type=int, default=0, help="synthetic cohort: seed")


def _load_data(args, *, need_labels: bool):
    """(windows, cohort-or-None) from --data."""
    from ecgfast.data import Cohort, make_cohort, preprocess, read_recording

    source = args.data
    if source == "synthetic":
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"generating the synthetic ECGSYN cohort: {args.subjects} subjects x "
                  f"{args.sessions} sessions x {args.session_seconds:g} s", file=sys.stderr)
        cohort = make_cohort(n_subjects=args.subjects, sessions_per_subject=args.sessions,
                             session_seconds=args.session_seconds, seed=args.data_seed)
        return cohort.windows, cohort
    path = Path(source)
    if not path.exists() and not path.with_suffix(".hea").exists():
        raise UsageError(f"--data {source}: no such file")
    if path.suffix == ".npz":
        cohort = Cohort.load(path)
        return cohort.windows, cohort
    if need_labels:
        raise UsageError(
            f"--data {source}: probing needs labelled windows (a cohort .npz with arousal, "
            "valence and subject arrays); a bare recording has no labels"
        )
    rec = read_recording(path, fs=args.fs)
    win = preprocess(rec.signal, rec.fs, source=str(path))
    if win.n_skipped_flat:
        print(f"{path}: skipped {win.n_skipped_flat} flat-line window(s)", file=sys.stderr)
    return win.windows, None


# ---------------------------------------------------------------------------- encoder


def _add_encoder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder")
    g.add_argument("--residual", default="all", choices=tuple(RESIDUAL_PRESETS),
                   help="blocks with a shortcut connection (default: all)")
    g.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True,
                   help="squeeze-excitation after each block (default: on)")
    g.add_argument("--se-reduction", type=int, default=8)
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--activation", default="relu", choices=("relu", "leaky_relu"))
    g.add_argument("--backend", default="auto", choices=("auto", "eager", "triton"),
                   help="encoder kernels (default: auto)")


def _encoder_config(args) -> EncoderConfig:
    try:
        return EncoderConfig(residual=args.residual, attention=args.attention,
                             se_reduction=args.se_reduction, dropout=args.dropout,
                             activation=args.activation, backend=args.backend)
    except ValueError as err:
        raise UsageError(f"encoder options: {err}") from err


# ---------------------------------------------------------------------------- commands


def _add_pretrain_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--objective", default="transform", choices=("transform", "contrastive", "both"))
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=128, help="windows per step")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temperature", type=float, default=0.5, help="NT-Xent tau")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--max-steps-per-epoch", type=int, default=None)


def _pretrain_config(args):
    from ecgfast.training import PretrainConfig

    try:
        return PretrainConfig(objective=args.objective, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              temperature=args.temperature, device=args.device,
                              max_steps_per_epoch=args.max_steps_per_epoch)
    except ValueError as err:
        raise UsageError(f"training options: {err}") from err


def cmd_pretrain(args) -> int:
    from ecgfast.distributed import destroy_process_group
    from ecgfast.training import pretrain

    windows, _ = _load_data(args, need_labels=False)
    try:
        result = pretrain(windows, args.out, _encoder_config(args), _pretrain_config(args),
                          resume=args.resume, progress=not args.quiet)
    finally:
        destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    last = result.history[-1] if result.history else {}
    print(f"checkpoint: {result.checkpoint}")
    if last:
        print(f"final epoch {last['epoch']}: loss {last['loss']:.4f}, "
              f"{last['windows_per_s']:.1f} windows/s")
    return 0


def _evaluate(encoders: dict, cohort, args) -> dict:
    from ecgfast.evaluation import evaluate_encoder

    labels = {"arousal": cohort.arousal, "valence": cohort.valence}
    return {
        name: evaluate_encoder(enc, cohort.windows, labels, split=args.split,
                               groups=cohort.subject, n_folds=args.folds, seed=args.seed,
                               progress=not args.quiet, epochs=args.probe_epochs)
        for name, enc in encoders.items()
    }


def _write_json(path: Path, payload: dict) -> None:
    from ecgfast.checkpoint import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def cmd_evaluate(args) -> int:
    import torch

    from ecgfast.checkpoint import load_encoder
    from ecgfast.evaluation import format_table
    from ecgfast.models import ECGEncoder

    encoders = {}
    for spec in args.checkpoints:
        if spec == "random":
            torch.manual_seed(args.seed)
            encoders["random init"] = ECGEncoder(_encoder_config(args)).eval()
        else:
            encoders[str(spec)] = load_encoder(spec)
    _, cohort = _load_data(args, need_labels=True)
    results = _evaluate(encoders, cohort, args)
    print(format_table(results))
    if args.out:
        _write_json(Path(args.out), {"split": args.split, "results": results})
        print(f"results: {args.out}")
    return 0


def cmd_demo(args) -> int:
    import torch

    from ecgfast.data import make_cohort
    from ecgfast.evaluation import format_table
    from ecgfast.models import ECGEncoder
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
    result = pretrain(cohort.windows, out, enc_cfg, train_cfg, progress=not args.quiet)
    torch.manual_seed(args.seed)
    random_encoder = ECGEncoder(enc_cfg).eval()
    print(f"[3/3] probing frozen embeddings (split: {args.split})")
    args.folds = None
    results = _evaluate({"pretrained": result.encoder, "random init": random_encoder}, cohort, args)
    table = format_table(results)
    print()
    print(f"arousal / valence probe on the synthetic cohort, {args.split}-wise folds (%, mean ± std)")
    print(table)
    _write_json(out / "demo_results.json", {
        "split": args.split, "results": results, "pretraining": result.history,
        "seconds": time.perf_counter() - t0,
    })
    print(f"\nrun, checkpoints, metrics.jsonl, training_curve.png and demo_results.json in {out} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


def cmd_export(args) -> int:
    from ecgfast.export import export_onnx, quantize_onnx

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UsageError(f"--out {out}: expected a .onnx file name")
    export_onnx(args.checkpoint, out, opset=args.opset)
    print(f"wrote {out}")
    if args.int8:
        if args.calibration is None:
            raise UsageError("--int8 needs --calibration DATA (real windows to calibrate on)")
        args.data = args.calibration
        windows, cohort = _load_data(args, need_labels=False)
        rng = np.random.default_rng(0)
        pick = np.sort(rng.permutation(len(windows))[: args.calibration_windows])
        int8 = out.with_name(out.stem + ".int8.onnx") if args.int8_out is None else Path(args.int8_out)
        labels = None if cohort is None else cohort.arousal
        quantize_onnx(out, int8, windows[pick], eval_windows=windows if labels is not None else None,
                      eval_labels=labels)
        print(f"wrote {int8}")
    return 0


def cmd_embed(args) -> int:
    import math

    from ecgfast.data import iter_windows, read_recording
    from ecgfast.export import OnnxEncoder
    from ecgfast.export.embed import embed_windows

    encoder = OnnxEncoder(args.model, providers=args.providers, threads=args.threads)
    recording = read_recording(args.recording, fs=args.fs)
    if not 0.0 <= args.overlap < 1.0:
        raise UsageError(f"--overlap must be in [0, 1), got {args.overlap}")
    batches = iter_windows(recording.signal, recording.fs, overlap=args.overlap,
                           batch_windows=args.batch_windows, source=str(args.recording))
    n_windows = max(0, math.floor((recording.duration_s - 10.0) / (10.0 * (1 - args.overlap))) + 1)
    summary = embed_windows(encoder, batches, args.out, progress=not args.quiet,
                            total=math.ceil(n_windows / args.batch_windows))
    print(summary)
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecgfast", description="Self-supervised ECG representation learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain an encoder on unlabelled windows")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, curve)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data_args(p)
    _add_encoder_args(p)
    _add_pretrain_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("evaluate", help="probe frozen encoders for arousal and valence")
    p.add_argument("checkpoints", nargs="+",
                   help="checkpoint or run directories, or 'random' for a random-init encoder")
    p.add_argument("--split", default="subject", choices=("subject", "window"))
    p.add_argument("--folds", type=int, default=None,
                   help="folds (default: 5 subject folds, or 10 window folds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-epochs", type=int, default=300, help="full-batch Adam steps of the probe")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--quiet", action="store_true")
    _add_data_args(p)
    _add_encoder_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="synthetic cohort -> pretrain -> probe, in a few minutes")
    p.add_argument("--out", default=None,
                   help="run directory (default: a new ecgfast-demo[-N] in the current directory)")
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--session-seconds", type=float, default=40.0)
    p.add_argument("--objective", default="transform", choices=("transform", "contrastive", "both"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--split", default="subject", choices=("subject", "window"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-epochs", type=int, default=300, help="full-batch Adam steps of the probe")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export a checkpoint's encoder to ONNX (optionally INT8)")
    p.add_argument("checkpoint", help="checkpoint or run directory")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--int8", action="store_true", help="also write a static INT8 (QDQ) model")
    p.add_argument("--int8-out", default=None, help="INT8 file (default: OUT with .int8.onnx)")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="windows for INT8 calibration: 'synthetic', a cohort .npz or a recording")
    p.add_argument("--calibration-windows", type=int, default=128)
    p.add_argument("--quiet", action="store_true")
    _add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("embed", help="embed a recording with an ONNX encoder, window by window")
    p.add_argument("model", help="the .onnx encoder")
    p.add_argument("recording", help=".npy, .csv or WFDB record")
    p.add_argument("--fs", type=float, default=None,
                   help="sampling rate in Hz of .npy/.csv recordings (WFDB headers carry theirs)")
    p.add_argument("--out", required=True,
                   help="embeddings: OUT.npy (N, D) plus OUT.starts.npy (N,) seconds, or one .npz")
    p.add_argument("--overlap", type=float, default=0.0, help="window overlap in [0, 1)")
    p.add_argument("--batch-windows", type=int, default=256, help="windows per batch (bounds memory)")
    p.add_argument("--providers", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_embed)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ecgfast.checkpoint import CheckpointError
    from ecgfast.training import TrainingDivergedError

    try:
        return args.func(args)
    except (UsageError, CheckpointError, FileNotFoundError, FileExistsError, ValueError,
            TypeError) as err:
        if os.environ.get("ECGFAST_DEBUG"):
            raise
        print(f"ecgfast {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f"ecgfast {args.command}: training diverged: {err}", file=sys.stderr)
        return 3
    except RuntimeError as err:
        if type(err).__name__ != "ParityError" or os.environ.get("ECGFAST_DEBUG"):
            raise
        print(f"ecgfast {args.command}: export check failed: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"ecgfast {args.command}: interrupted; checkpoints written so far are intact",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
