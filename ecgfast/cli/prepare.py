"""``ecgfast prepare``: build a window store for corpora larger than memory; ``--info``."""

from __future__ import annotations

import os

from ecgfast.cli.common import UsageError


def cmd_prepare(args) -> int:
    if args.info is not None:
        if args.sources or args.out:
            raise UsageError("--info STORE takes no SOURCE or --out")
        from ecgfast.data.store import WindowStore

        info = WindowStore(args.info).info()
        subjects = info["subjects"] if info["subjects"] is not None else "unknown"
        print(f"store: {info['path']}")
        print(f"  windows: {info['windows']} x {len(info['leads'])} leads x "
              f"{info['window_length']} samples at {info['fs']:g} Hz ({info['dtype']}, "
              f"{info['bytes_per_window']} bytes per window)")
        print(f"  records: {info['records']}, subjects: {subjects}, "
              f"rejected: {info['rejected']} (see rejected.jsonl)")
        print(f"  leads: {','.join(info['leads'])}")
        print(f"  shards: {info['shards']}, bytes on disk: {info['bytes']}")
        if info["tasks"]:
            print(f"  tasks: {', '.join(info['tasks'])}")
        for note in info["notes"]:
            print(f"  note: {note}")
        return 0
    if not args.sources or not args.out:
        raise UsageError("give SOURCE... and --out STORE (or --info STORE)")
    from ecgfast.data.prepare import prepare

    leads = None
    if args.leads is not None and args.leads != "all":
        leads = [name.strip() for name in args.leads.split(",") if name.strip()]
        if not leads:
            raise UsageError(f"--leads {args.leads!r}: no lead names")
    out = prepare(args.sources, args.out, leads=leads, dtype=args.dtype, fs=args.fs,
                  workers=args.workers, shard_windows=args.shard_windows,
                  progress=not args.quiet)
    from ecgfast.data import storefile

    m = storefile.read_manifest(out)
    print(f"store: {out}: {m['n_windows']} windows from {m['n_records']} records, "
          f"{m['n_rejected']} rejected (listed in {out / storefile.REJECTED})")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("prepare", help="pre-process recordings into a window store on disk")
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="folders searched for WFDB records (PTB-XL, MIMIC-IV-ECG layouts) and "
                        "EDF/BDF/Poly5 files, recordings (.hea, .edf, .bdf, .S00, .npy, .csv), "
                        "manifests (.csv/.tsv with a path column, docs/manifests.md) or datasets "
                        "NAME:ROOT")
    p.add_argument("--out", default=None, metavar="STORE", help="the store folder to write")
    p.add_argument("--info", default=None, metavar="STORE", help="summarise a store and exit")
    p.add_argument("--leads", default=None, metavar="I,II,...|all",
                   help="leads to keep (a record lacking one is rejected); default all, "
                        "which every record must share")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--fs", type=float, default=None,
                   help="sampling rate in Hz of .npy/.csv recordings (and of manifest rows "
                        "that give none)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes reading records (default: the core count)")
    p.add_argument("--shard-windows", type=int, default=None,
                   help="windows per shard (default: about 64 MiB per shard)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)
