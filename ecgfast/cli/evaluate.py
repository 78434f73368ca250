"""``ecgfast evaluate``: frozen encoders beside the baselines, under declared protocols.

The options it shares with ``ecgfast ablation`` (baselines, probes, calibration, feature
sets) are added by :func:`add_protocol_args`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ecgfast.cli.common import (
    UsageError,
    add_data_args,
    add_encoder_args,
    encoder_config,
    load_data,
    select_tasks,
    write_json,
)


def add_protocol_args(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """``--baselines``, ``--probe``, ``--calibrate``, ``--features``, ``--supervised-epochs``."""
    def d(value):
        return argparse.SUPPRESS if suppress else value

    g = p.add_argument_group("baselines and protocol")
    g.add_argument("--baselines", default=d("hrv,random"), metavar="A,B",
                   help="beside every encoder: hrv (heart-rate and HRV features of sleepecg's R "
                        "peaks), random (the randomly initialised encoder, one per seed), "
                        "supervised (the encoder trained end to end on each training fold); "
                        "'none' for none (default: hrv,random)")
    g.add_argument("--probe", default=d("both"), choices=("linear", "mlp", "both"),
                   help="linear: logistic regression on standardised features; mlp: one hidden "
                        "layer (default: both)")
    g.add_argument("--calibrate", default=d("none"), choices=("none", "subject", "both"),
                   help="subject: standardise features within each subject using that "
                        "subject's unlabelled windows, test subjects included (transductive, "
                        "stated in every table); both: tables for each (default: none)")
    g.add_argument("--features", default=d("encoder"), choices=("encoder", "encoder+hrv", "both"),
                   help="what an encoder row's probe sees: the embedding, or the embedding and "
                        "the HRV features side by side (default: encoder)")
    g.add_argument("--supervised-epochs", type=int, default=d(10),
                   help="epochs of the supervised baseline on each training fold (10)")


def protocol_options(args) -> dict:
    """The parsed protocol options of ``args`` (a namespace or dict), validated."""
    from ecgfast.evaluation import CALIBRATIONS, FEATURE_MODES, PROBES
    from ecgfast.evaluation.baselines import parse_baselines, parse_choices

    get = args.get if isinstance(args, dict) else lambda k, default=None: getattr(args, k, default)
    try:
        out = {"baselines": parse_baselines(get("baselines", "hrv,random")),
               "probes": parse_choices(get("probe", "both"), PROBES, "--probe"),
               "calibrations": parse_choices(get("calibrate", "none"), CALIBRATIONS, "--calibrate"),
               "features_modes": parse_choices(get("features", "encoder"), FEATURE_MODES,
                                               "--features")}
    except ValueError as err:
        raise UsageError(str(err)) from None
    epochs = get("supervised_epochs", 10)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UsageError(f"--supervised-epochs must be an integer >= 1, got {epochs!r}")
    return out


def _augment_of(path) -> str | None:
    from ecgfast.training import load_checkpoint

    training = load_checkpoint(path).config.get("training", {})
    if training.get("objective") == "transform":
        return "n/a (transformation task)"
    return training.get("augment", "report")


def cmd_evaluate(args) -> int:
    from ecgfast.evaluation import evaluate_suite, markdown_tables
    from ecgfast.evaluation.protocol import CALIBRATION_TEXT
    from ecgfast.evaluation.stats import INTERVAL
    from ecgfast.evaluation.tables import differences, summarise
    from ecgfast.training import load_encoder, resolve_device

    opts = protocol_options(args)
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    encoders, augment, random_config = {}, {}, None
    for spec in args.checkpoints:
        if spec == "random":  # the first interface: the random baseline
            opts["baselines"] = tuple(dict.fromkeys([*opts["baselines"], "random"]))
            continue
        encoders[str(spec)] = load_encoder(spec)
        augment[str(spec)] = _augment_of(spec)
        random_config = random_config or encoders[str(spec)].config
    if not encoders and not opts["baselines"]:
        raise UsageError("nothing to evaluate: give a checkpoint or --baselines")
    _, cohort = load_data(args, need_labels=True)
    tasks = select_tasks(cohort, args.tasks)
    seeds = list(range(args.seed, args.seed + args.seeds))
    result = evaluate_suite(
        encoders, cohort, tasks, split=args.split, n_folds=args.folds, seeds=seeds,
        random_config=random_config or encoder_config(args), device=resolve_device("auto"),
        supervised={"epochs": args.supervised_epochs}, progress=not args.quiet,
        epochs=args.probe_epochs, **opts)
    rows = result["rows"]
    protocol = {
        "split": args.split, "folds": args.folds, "seeds": seeds, "probes": list(opts["probes"]),
        "calibrations": {c: CALIBRATION_TEXT[c] for c in opts["calibrations"]},
        "transductive": "subject" in opts["calibrations"],
        "features": list(opts["features_modes"]), "baselines": list(opts["baselines"]),
        "augmentation": augment, "interval": INTERVAL, "hrv": result["hrv"],
        "random_and_supervised_encoder": (random_config or encoder_config(args)).to_dict(),
        "mlp_probe_epochs": args.probe_epochs, "supervised_epochs": args.supervised_epochs,
    }
    print(markdown_tables(rows, tasks))
    if result["hrv"]:
        h = result["hrv"]
        print(f"HRV: R-peak detection failed on {h['n_failed']} of {h['n_windows']} windows "
              f"{h['reasons']}; their features are imputed with each training fold's medians, "
              "with a 'failed' indicator column")
    if args.out:
        write_json(Path(args.out), {
            "format": "ecgfast.evaluate", "version": 2, "protocol": protocol,
            "rows": [{**r, "summary": summarise(r)} for r in rows],
            "differences": differences(rows),
            "classes": {t: list(cohort.classes[t]) for t in tasks},
            "provenance": cohort.provenance})
        print(f"results: {args.out}")
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("evaluate", help="probe frozen encoders beside HRV, random-init and "
                                        "supervised baselines",
                       description="Probe frozen encoders with linear and MLP probes beside the "
                                   "baselines, under subject-wise or window-level folds, "
                                   "repeated over --seeds; prints accuracy, macro-F1, balanced "
                                   "accuracy and AUROC, the chance rate, and paired differences "
                                   "to the baselines with their intervals.")
    p.add_argument("checkpoints", nargs="*",
                   help="checkpoint or run directories ('random' adds the random baseline); the "
                        "random and supervised baselines take the first one's architecture, "
                        "else the encoder options below")
    p.add_argument("--tasks", default=None, metavar="A,B",
                   help="tasks to probe (default: arousal and valence where present, else all)")
    p.add_argument("--split", default="subject", choices=("subject", "window"))
    p.add_argument("--folds", type=int, default=None,
                   help="folds (default: 5 subject folds, or 10 window folds)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--seeds", type=int, default=3,
                   help="repeats of the cross-validation (seeds --seed, --seed + 1, ...): each "
                        "reshuffles the folds and draws its own random encoder (default: 3)")
    p.add_argument("--probe-epochs", type=int, default=300, help="full-batch Adam steps of the MLP")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--quiet", action="store_true")
    add_protocol_args(p)
    add_data_args(p)
    add_encoder_args(p)
    p.set_defaults(func=cmd_evaluate)
