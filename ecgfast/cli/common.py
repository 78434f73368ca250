"""What the ``ecgfast`` commands share: errors, data and encoder options, JSON output.

``--data`` takes ``synthetic`` (the built-in ECGSYN cohort), a cohort ``.npz``, a
recording (``.npy``, ``.csv``, WFDB, EDF/BDF, Poly5), a window store folder (``ecgfast
prepare``), or ``NAME:ROOT`` for a dataset in its official layout (``ecgfast datasets``
lists the names), cached pre-processed under :func:`default_cache_dir` unless
``--no-cache``, or a manifest ``.csv``/``.tsv`` of your own recordings and labels
(``docs/manifests.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

from ecgfast.data.contract import Preprocessing

#: ``--residual``'s choices: the keys of :data:`ecgfast.models.RESIDUAL_PRESETS` (spelled
#: out so that building the parser imports no PyTorch; a test checks that they agree).
RESIDUAL_CHOICES = ("none", "first", "first_two", "all")
#: ``--augment``'s choices: the keys of :data:`ecgfast.transforms.AUGMENT_PRESETS` (the same).
AUGMENT_CHOICES = ("report", "no-warp", "hr-preserving")


class UsageError(ValueError):
    """An argument the user gave is wrong; the message names it."""


#: The chain ``--data RECORDING`` runs (each recording z-scored on its own).
RECORDING_CHAIN = Preprocessing()

_DATASET_SPEC = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(.+)$")
DATA_DEFAULTS = {"data": "synthetic", "fs": None, "subjects": 8, "sessions": 4,
                 "session_seconds": 60.0, "data_seed": 0, "threshold": None, "lead": None,
                 "skip_bad": False, "cache_dir": None, "no_cache": False}


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ecgfast``, else ``~/.cache/ecgfast``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "ecgfast"


def dataset_spec(source: str) -> tuple[str, str] | None:
    """``(name, root)`` when ``source`` reads ``NAME:ROOT`` and is not an existing path."""
    match = _DATASET_SPEC.match(str(source))
    if match is None or Path(source).exists():
        return None
    return match.group(1).lower(), match.group(2)


def add_data_args(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """The data options; ``suppress`` leaves unset ones out of the namespace (so that a
    config file can fill them, see ``ecgfast ablation``)."""
    d = {k: (argparse.SUPPRESS if suppress else v) for k, v in DATA_DEFAULTS.items()}
    g = p.add_argument_group("data")
    g.add_argument("--data", default=d["data"], metavar="SOURCE",
                   help="'synthetic' (the built-in ECGSYN cohort), NAME:ROOT for a dataset in its "
                        "official layout (see `ecgfast datasets`), a cohort .npz written by "
                        "Cohort.save, a manifest .csv/.tsv of your own recordings and labels "
                        "(docs/manifests.md), or recordings (.npy, .csv, WFDB .hea, .edf, .bdf, "
                        "Poly5 .S00) or a window store folder (`ecgfast prepare`) for pretraining")
    g.add_argument("--fs", type=float, default=d["fs"],
                   help="sampling rate in Hz of .npy/.csv recordings (WFDB, EDF and Poly5 headers "
                        "carry theirs; a manifest's rows without an fs cell)")
    g.add_argument("--subjects", type=int, default=d["subjects"], help="synthetic cohort: subjects")
    g.add_argument("--sessions", type=int, default=d["sessions"],
                   help="synthetic cohort: sessions per subject")
    g.add_argument("--session-seconds", type=float, default=d["session_seconds"],
                   help="synthetic cohort: seconds per session")
    g.add_argument("--data-seed", type=int, default=d["data_seed"], help="synthetic cohort: seed")
    g.add_argument("--threshold", type=float, default=d["threshold"],
                   help="NAME:ROOT: rating above which a window is 'high' (default: the dataset's)")
    g.add_argument("--lead", default=d["lead"],
                   help="NAME:ROOT: which lead of a two-lead dataset (default: the first); a "
                        "recording: the lead's name or index (EDF labels also by part, e.g. ECG)")
    g.add_argument("--skip-bad", action="store_true", default=d["skip_bad"],
                   help="NAME:ROOT: skip (and list) subjects whose files are unreadable")
    g.add_argument("--cache-dir", default=d["cache_dir"], metavar="DIR",
                   help=f"NAME:ROOT: cache of pre-processed cohorts (default: {default_cache_dir()})")
    g.add_argument("--no-cache", action="store_true", default=d["no_cache"],
                   help="NAME:ROOT: neither read nor write the cache")


def datasets_module(source: str):
    try:
        from ecgfast import datasets
    except ImportError as err:
        raise UsageError(f"--data {source}: the dataset loaders are not available ({err})") from err
    return datasets


def _load_named_dataset(name: str, root: str, args):
    datasets = datasets_module(f"{name}:{root}")
    if name not in datasets.DATASETS:
        raise UsageError(f"--data {name}:{root}: unknown dataset {name!r}; the datasets are "
                         f"{', '.join(sorted(datasets.DATASETS))} (see `ecgfast datasets`)")
    cache = None if args.no_cache else Path(args.cache_dir or default_cache_dir())
    cohort = datasets.load_dataset(name, root, threshold=args.threshold, lead=args.lead,
                                   cache_dir=cache, progress=not getattr(args, "quiet", False),
                                   skip_bad=args.skip_bad)
    skipped = cohort.provenance.get("skipped_subjects")
    if skipped and is_rank_zero():
        print(f"--data {name}:{root}: skipped (--skip-bad): {skipped}", file=sys.stderr)
    return cohort


def load_data(args, *, need_labels: bool):
    """(windows, cohort-or-None) from the data options in ``args`` (a namespace or dict)."""
    from ecgfast.data import Cohort, make_cohort, preprocess, read_recording

    if isinstance(args, dict):
        args = SimpleNamespace(**{**DATA_DEFAULTS, **args})
    source = str(args.data)
    spec = dataset_spec(source)
    if spec is not None:
        cohort = _load_named_dataset(*spec, args)
        return cohort.windows, cohort
    if getattr(args, "threshold", None) is not None:
        raise UsageError(f"--threshold applies to --data NAME:ROOT only, not to {source!r}")
    lead = getattr(args, "lead", None)
    if lead is not None and (source == "synthetic" or Path(source).is_dir()
                             or Path(source).suffix == ".npz"):
        raise UsageError(f"--lead applies to --data NAME:ROOT and recordings only, not to "
                         f"{source!r}")
    if source == "synthetic":
        if is_rank_zero():
            print(f"generating the synthetic ECGSYN cohort: {args.subjects} subjects x "
                  f"{args.sessions} sessions x {args.session_seconds:g} s", file=sys.stderr)
        cohort = make_cohort(n_subjects=args.subjects, sessions_per_subject=args.sessions,
                             session_seconds=args.session_seconds, seed=args.data_seed)
        return cohort.windows, cohort
    path = Path(source)
    if not path.exists() and not path.with_suffix(".hea").exists():
        raise UsageError(f"--data {source}: no such file")
    from ecgfast.data.manifest import is_manifest

    if is_manifest(path):
        if lead is not None:
            raise UsageError(f"--lead does not apply to the manifest {source}: its lead column "
                             "names each row's lead")
        return _load_manifest(path, args, need_labels)
    if path.is_dir():  # a window store (`ecgfast prepare`)
        if need_labels:
            raise UsageError(f"--data {source}: a window store is for pretraining; probing "
                             "needs a labelled cohort (.npz, NAME:ROOT or 'synthetic')")
        from ecgfast.data.store import WindowStore

        # --leads picks (and orders) the store's leads; the encoder takes their names
        return WindowStore(path, leads=parse_leads(getattr(args, "leads", None))), None
    if path.suffix == ".npz":
        cohort = Cohort.load(path)
        return cohort.windows, cohort
    if need_labels:
        raise UsageError(
            f"--data {source}: probing needs labelled windows (a cohort .npz, NAME:ROOT or "
            "'synthetic'); a bare recording has no labels"
        )
    column = int(lead) if lead is not None and str(lead).isdigit() else lead
    rec = read_recording(path, fs=args.fs, column=column)
    win = preprocess(rec.signal, rec.fs, source=str(path), preprocessing=RECORDING_CHAIN)
    if win.n_skipped_flat:
        print(f"{path}: skipped {win.n_skipped_flat} flat-line window(s)", file=sys.stderr)
    return win.windows, None


def _load_manifest(path: Path, args, need_labels: bool):
    """A manifest's windows; with ``need_labels``, the Cohort of those labelled for every
    task of ``--tasks`` (default: all its label columns)."""
    from ecgfast.data.manifest import manifest_windows

    data = manifest_windows(path, fs=args.fs)
    if not need_labels:
        return data.windows, None
    tasks = getattr(args, "tasks", None)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    cohort = data.cohort(tasks or None)
    dropped = cohort.provenance["windows_unlabelled_for_these_tasks"]
    if dropped and is_rank_zero():
        print(f"--data {path}: {dropped} window(s) of rows unlabelled for "
              f"{', '.join(cohort.tasks)} left out", file=sys.stderr)
    return cohort.windows, cohort


def data_provenance(args, windows, cohort) -> dict:
    """What :func:`load_data` gave, described for the checkpoint
    (:func:`ecgfast.provenance.describe_data`): a cohort, a store, the windows of a
    manifest (per-subject statistics), or a recording pre-processed with
    :data:`RECORDING_CHAIN`."""
    from ecgfast.data.contract import SUBJECT_CHAIN
    from ecgfast.data.manifest import is_manifest, read_manifest
    from ecgfast.provenance import describe_data

    source = str(args["data"] if isinstance(args, dict) else args.data)
    if cohort is None and is_manifest(source):
        manifest = read_manifest(source)
        found = describe_data(windows, source=source, preprocessing=SUBJECT_CHAIN.to_record())
        found["data"].update(dataset="manifest", manifest_sha256=manifest.sha256,
                             n_subjects=len({row.subject for row in manifest.rows}))
        return found
    recording = cohort is None and not hasattr(windows, "manifest")
    return describe_data(windows, cohort=cohort, source=source,
                         preprocessing=RECORDING_CHAIN.to_record() if recording else None)


def select_tasks(cohort, requested: str | list | None) -> list[str]:
    """The tasks to probe: ``requested`` ("a,b" or a list), else arousal and valence where
    the cohort has them, else all its tasks."""
    from ecgfast.evaluation import default_tasks

    available = list(cohort.tasks)
    if requested:
        names = requested.split(",") if isinstance(requested, str) else list(requested)
        names = [n.strip() for n in names if n.strip()]
        unknown = [n for n in names if n not in available]
        if unknown:
            raise UsageError(f"--tasks: {unknown} not among this cohort's tasks {available}")
    else:
        names = default_tasks(available)
    if not names:
        raise UsageError("--data: this cohort has no labelled tasks to probe")
    return names


def add_encoder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder")
    g.add_argument("--residual", default="all", choices=RESIDUAL_CHOICES,
                   help="blocks with a shortcut connection (default: all)")
    g.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True,
                   help="squeeze-excitation after each block (default: on)")
    g.add_argument("--se-reduction", type=int, default=8)
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--activation", default="relu", choices=("relu", "leaky_relu"))
    g.add_argument("--backend", default="auto", choices=("auto", "eager", "triton"),
                   help="encoder kernels (default: auto)")
    g.add_argument("--leads", default=None, metavar="NAMES",
                   help="the leads to train on: comma-separated names (I,II,V1) or 'all' "
                        "(default: the data's leads; one lead for single-lead data)")


def parse_leads(text: str | None, option: str = "--leads") -> str | tuple[str, ...] | None:
    """``--leads``: None (not given), "all", or the comma-separated lead names, in order."""
    if text is None:
        return None
    text = str(text).strip()
    if text == "all":
        return "all"
    names = tuple(n.strip() for n in text.split(","))
    if not names or any(not n for n in names):
        raise UsageError(f"{option} {text!r}: expected comma-separated lead names (I,II,V1) "
                         "or 'all'")
    if len(set(names)) != len(names):
        raise UsageError(f"{option} {text!r}: a lead is named twice")
    return names


def encoder_config(args, data_leads: tuple[str, ...] | None = None):
    """The encoder options of ``args``; ``data_leads`` names the leads of the windows it
    will see (a store's, a multi-lead recording's), which set ``in_channels`` and
    ``leads`` and must agree with ``--leads`` when both are given."""
    from ecgfast.models import EncoderConfig

    wanted = parse_leads(getattr(args, "leads", None))
    leads = None if data_leads is None else tuple(data_leads)
    if isinstance(wanted, tuple):
        if leads is not None and [n.lower() for n in leads] != [n.lower() for n in wanted]:
            raise UsageError(f"--leads {','.join(wanted)}: the data has leads "
                             f"{','.join(leads)}")
        leads = leads or wanted  # the data's own spelling (a store matches case-insensitively)
    try:
        return EncoderConfig(residual=args.residual, attention=args.attention,
                             se_reduction=args.se_reduction, dropout=args.dropout,
                             activation=args.activation, backend=args.backend,
                             in_channels=len(leads) if leads else 1, leads=leads)
    except (TypeError, ValueError) as err:
        raise UsageError(f"encoder options: {err}") from err


def write_json(path: Path, payload: dict) -> None:
    from ecgfast.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
