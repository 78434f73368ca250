"""The ``ecgfast`` command: pretrain, evaluate, demo, ablation, datasets, export, embed,
prepare.

Run ``ecgfast COMMAND --help`` for the options of each command. Errors in what the user
gave (files, arguments) are printed as one line naming the file or argument, exit code 2.
The commands live in :mod:`.train`, :mod:`.ablation`, :mod:`.onnx` and :mod:`.prepare`;
the options they share in :mod:`.common`.
"""

from __future__ import annotations

import argparse
import os
import sys

from ecgfast.cli import ablation, onnx, prepare, train
from ecgfast.cli.common import UsageError

__all__ = ["UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecgfast", description="Self-supervised ECG representation learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_commands(sub)
    ablation.add_commands(sub)
    onnx.add_commands(sub)
    prepare.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ecgfast.training import CheckpointError, TrainingDivergedError

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
