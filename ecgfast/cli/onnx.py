"""``ecgfast export`` (ONNX, optionally INT8) and ``ecgfast embed`` (onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgfast.cli.common import UsageError, add_data_args, load_data, parse_leads


def cmd_export(args) -> int:
    from ecgfast.export import export_onnx, quantize_onnx
    from ecgfast.export.card import write_card_files

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UsageError(f"--out {out}: expected a .onnx file name")
    export_onnx(args.checkpoint, out, opset=args.opset, probe_results=args.probe_results)
    print(f"wrote {out} (model card: {', '.join(map(str, write_card_files(out)))})")
    if args.int8:
        if args.calibration is None:
            raise UsageError("--int8 needs --calibration DATA (real windows to calibrate on)")
        args.data = args.calibration
        windows, cohort = _calibration(args, out)
        rng = np.random.default_rng(0)
        pick = np.sort(rng.permutation(len(windows))[: args.calibration_windows])
        int8 = out.with_name(out.stem + ".int8.onnx") if args.int8_out is None else Path(args.int8_out)
        labels = None if cohort is None or "arousal" not in cohort.labels else cohort.arousal
        quantize_onnx(out, int8, windows[pick], eval_windows=windows if labels is not None else None,
                      eval_labels=labels)
        print(f"wrote {int8} (model card: {', '.join(map(str, write_card_files(int8)))})")
    return 0


def embed_leads(encoder, requested) -> list | None:
    """The leads ``embed`` reads for ``encoder``: ``--leads`` (names or "all") as given,
    else the model's own lead names from its metadata, else its first C leads; None for
    a one-lead model without names and no ``--leads`` (the single-lead reader)."""
    if requested is not None:
        return requested if requested == "all" else list(requested)
    if encoder.leads is not None:
        return list(encoder.leads)
    return None if encoder.in_channels == 1 else list(range(encoder.in_channels))


def _read_for(encoder, recording, fs, leads_text):
    """(signal (C, n) or (n,), fs) of ``recording`` with the leads ``encoder`` takes."""
    from ecgfast.data import read_leads, read_recording

    leads = embed_leads(encoder, parse_leads(leads_text))
    if leads is None:
        rec = read_recording(recording, fs=fs)
        return rec.signal, rec.fs
    rec = read_leads(recording, fs=fs, leads=leads)
    if len(rec.leads) != encoder.in_channels:
        own = f" ({', '.join(encoder.leads)})" if encoder.leads else ""
        raise UsageError(f"--leads {leads_text}: {recording} gives {len(rec.leads)} "
                         f"lead(s) ({', '.join(rec.leads)}), but {encoder.path.name} takes "
                         f"{encoder.in_channels}{own}")
    return rec.signal, rec.fs


def _calibration(args, model: Path):
    """(windows, cohort or None) to calibrate ``model`` on: ``--calibration`` as ``--data``
    for one lead; for C leads a recording read with the model's leads, through its chain."""
    from ecgfast.export import OnnxEncoder
    from ecgfast.export.embed import recording_batches, serving_chain

    encoder = OnnxEncoder(model, providers="cpu")
    if encoder.in_channels == 1:
        return load_data(args, need_labels=False)
    path = Path(args.calibration)
    if path.suffix == ".npz" or not (path.exists() or path.with_suffix(".hea").exists()):
        raise UsageError(f"--calibration {args.calibration}: {model.name} takes "
                         f"{encoder.in_channels} leads; calibrate it on a recording that has "
                         "them (WFDB record, EDF/BDF, .csv or .npy)")
    signal, fs = _read_for(encoder, path, args.fs, None)
    batches = recording_batches(encoder, signal, fs, serving_chain(encoder), source=str(path))
    return np.concatenate([b.windows for b in batches]), None


def cmd_embed(args) -> int:
    from ecgfast.export import OnnxEncoder
    from ecgfast.export.embed import (
        embed_windows,
        expected_batches,
        recording_batches,
        serving_chain,
    )

    encoder = OnnxEncoder(args.model, providers=args.providers, threads=args.threads)
    signal, fs = _read_for(encoder, args.recording, args.fs, args.leads)
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise UsageError(f"--overlap must be in [0, 1), got {args.overlap}")
    chain = serving_chain(encoder, args.overlap)
    batches = recording_batches(encoder, signal, fs, chain, batch_windows=args.batch_windows,
                                source=str(args.recording))
    summary = embed_windows(encoder, batches, args.out, progress=not args.quiet,
                            total=expected_batches(signal.shape[-1], fs, chain,
                                                   args.batch_windows))
    print(summary)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint's encoder to ONNX (optionally INT8) "
                                      "with its pre-processing contract and a model card")
    p.add_argument("checkpoint", help="checkpoint or run directory")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--probe-results", default=None, metavar="JSON",
                   help="probe results of this checkpoint (`ecgfast evaluate --out`) for the "
                        "model card (default: the run's demo_results.json, if it scored it)")
    p.add_argument("--int8", action="store_true", help="also write a static INT8 (QDQ) model")
    p.add_argument("--int8-out", default=None, help="INT8 file (default: OUT with .int8.onnx)")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="windows for INT8 calibration: 'synthetic', a cohort .npz or a recording")
    p.add_argument("--calibration-windows", type=int, default=128)
    p.add_argument("--quiet", action="store_true")
    add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("embed", help="embed a recording with an ONNX encoder, window by window")
    p.add_argument("model", help="the .onnx encoder")
    p.add_argument("recording", help=".npy, .csv, WFDB record, EDF/BDF or Poly5 file")
    p.add_argument("--fs", type=float, default=None,
                   help="sampling rate in Hz of .npy/.csv recordings (WFDB, EDF and Poly5 "
                        "headers carry theirs)")
    p.add_argument("--leads", default=None, metavar="NAMES",
                   help="the recording's leads to embed, in the model's input order: "
                        "comma-separated names (I,II,V1: WFDB signal names, EDF labels, CSV "
                        "header; "
                        "0,1,2 for unnamed columns) or 'all' (default: the leads named in the "
                        "model's metadata, else its first C)")
    p.add_argument("--out", required=True,
                   help="embeddings: OUT.npy (N, D) plus OUT.starts.npy (N,) seconds, or one .npz")
    p.add_argument("--overlap", type=float, default=None,
                   help="window overlap in [0, 1) (default: the model's, recorded in its file)")
    p.add_argument("--batch-windows", type=int, default=256, help="windows per batch (bounds memory)")
    p.add_argument("--providers", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_embed)
