"""The ``ecgfast`` command: pretrain, evaluate, demo, ablation, datasets, export, embed,
prepare.

Run ``ecgfast COMMAND --help`` for the options of each command. Errors in what the user
gave (:data:`USER_ERRORS`: files, arguments, data) are printed as one line naming the file
or argument, exit code 2; a diverged run exits with 3, a failed export check with 3, an
interrupt with 130. Any other exception is a bug and surfaces as a traceback (so does a
user error with ``ECGFAST_DEBUG`` set). The commands live in :mod:`.train`,
:mod:`.ablation`, :mod:`.onnx` and :mod:`.prepare`; the options they share in
:mod:`.common`.

Building the parser and running ``embed`` import no PyTorch, so that the inference install
(``pip install ./serving``: onnxruntime, numpy, scipy, wfdb) runs them; there the
commands of :data:`TRAINING_COMMANDS` stop with a message saying that they need the
training install.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from ecgfast.cli import ablation, onnx, prepare, train
from ecgfast.cli.common import UsageError
from ecgfast.data.errors import ECGDataError

__all__ = ["TRAINING_COMMANDS", "USER_ERRORS", "UsageError", "build_parser", "main"]

#: The errors of what the user gave, each naming the file or argument: a wrong argument
#: (UsageError), an unreadable or unsuitable data file (ECGDataError), a missing or corrupt
#: checkpoint (CheckpointError, a ValueError), any other value the library refuses
#: (ValueError, how every ecgfast function reports a bad value it was given), a missing
#: file, an output that would be overwritten. A TypeError, KeyError, AttributeError, ...
#: is a programming error, never one of these.
USER_ERRORS = (UsageError, ECGDataError, ValueError, FileNotFoundError, FileExistsError)
#: Commands that need the training install (PyTorch; ``export`` also onnxscript).
TRAINING_COMMANDS = {"pretrain": ("torch",), "evaluate": ("torch",), "demo": ("torch",),
                     "ablation": ("torch",), "export": ("torch", "onnxscript")}
#: Modules of the training install that the inference install lacks.
TRAINING_MODULES = ("torch", "triton", "onnxscript", "safetensors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecgfast", description="Self-supervised ECG representation learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_commands(sub)
    ablation.add_commands(sub)
    onnx.add_commands(sub)
    prepare.add_commands(sub)
    return parser


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a module without a spec
        return False


def _training_install_needed(command: str, missing: str) -> int:
    print(f"ecgfast {command}: needs the training install ({missing} is not installed in this "
          "environment, the inference install, which serves ONNX models with `ecgfast "
          "embed`); install the full package (from the repository: pip install .)",
          file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for module in TRAINING_COMMANDS.get(args.command, ()):
        if not _installed(module):
            return _training_install_needed(args.command, module)
    try:
        return args.func(args)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in TRAINING_MODULES:
            raise
        return _training_install_needed(args.command, err.name)
    except USER_ERRORS as err:
        if os.environ.get("ECGFAST_DEBUG"):
            raise
        print(f"ecgfast {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        training = sys.modules.get("ecgfast.training")  # loaded if it raised
        if training is not None and isinstance(err, training.TrainingDivergedError):
            print(f"ecgfast {args.command}: training diverged: {err}", file=sys.stderr)
            return 3
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
