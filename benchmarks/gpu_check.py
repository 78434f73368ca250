"""The Python half of ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_check.py env OUT/env.json REASON_FILE
    python benchmarks/gpu_check.py overlay DIR
    python benchmarks/gpu_check.py pytest --step NAME --group NAME --jsonl FILE -- ARGS...
    python benchmarks/gpu_check.py summary OUT [--dry-run] [--expect-cut STEP]

``env`` records the card, driver, library versions and the requirements, and imports every
module of ``ecgfast.kernels``; when one does not import (or Triton is missing) it writes that
one reason to REASON_FILE, and the script skips the Triton steps with it. ``overlay`` makes
``ecgfast`` importable from DIR (on PYTHONPATH) without installing it: links to the source
folders, laid out as pyproject.toml's ``package-dir`` maps them. ``pytest`` runs pytest with
a SIGINT handler of its own (a shell may start a background job with SIGINT ignored;
the first SIGINT interrupts, later ones are ignored) and the plugin ``gpu_check_cases`` (one JSON line per case). ``summary``: see
``gpu_check_summary``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Oldest compute capability the kernels are built for (bf16 tensor cores: sm_80).
MIN_CAPABILITY = (8, 0)


def import_check() -> tuple[dict, str | None]:
    """Every module of ``ecgfast.kernels`` imported: {module: "ok" or the error}, and the
    one reason to skip the Triton steps (None: they can run)."""
    results = {}
    for name in ("triton", "ecgfast.kernels"):
        try:
            mod = importlib.import_module(name)
            results[name] = f"ok ({getattr(mod, '__version__', None) or mod.__file__})"
        except Exception as err:  # noqa: BLE001 - recorded, and becomes the skip reason
            results[name] = f"{type(err).__name__}: {err}"
            return results, f"{name} does not import ({results[name]})"
    for info in pkgutil.iter_modules(sys.modules["ecgfast.kernels"].__path__):
        name = f"ecgfast.kernels.{info.name}"
        try:
            importlib.import_module(name)
            results[name] = "ok"
        except Exception as err:  # noqa: BLE001
            results[name] = f"{type(err).__name__}: {err}"
    failed = [m for m, r in results.items() if not r.startswith("ok")]
    if not failed:
        return results, None
    more = f" (and {len(failed) - 1} more modules)" if len(failed) > 1 else ""
    return results, f"{failed[0]} does not import ({results[failed[0]]}){more}"


def environment(dry_run: bool) -> dict:
    import numpy
    import torch

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "dry_run": dry_run, "python": platform.python_version(),
           "executable": sys.executable, "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "numpy": numpy.__version__,
           "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    for name in ("pytest", "pytest_benchmark", "onnxruntime"):
        try:
            env[name] = importlib.import_module(name).__version__
        except Exception as err:  # noqa: BLE001 - a missing package is recorded, not fatal
            env[name] = f"unavailable: {err}"
    try:
        import ecgfast

        env["ecgfast"] = ecgfast.__file__
    except Exception as err:  # noqa: BLE001
        env["ecgfast"] = f"unavailable: {err}"
    env["imports"], env["triton_skip_reason"] = import_check()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory,
                   sm_count=props.multi_processor_count,
                   capability=f"{props.major}.{props.minor}")
        try:
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20,
                check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            env["nvidia_smi"] = f"unavailable: {err}"
    env["requirements"] = requirements(env, dry_run)
    with open("/proc/cpuinfo") as f:
        env["cpu"] = next((line.split(":", 1)[1].strip() for line in f
                           if line.startswith("model name")), platform.processor())
    return env


def requirements(env: dict, dry_run: bool) -> dict:
    """What the check needs, each True or the reason it is missing."""
    cap = env.get("capability")
    gpu = (True if cap and tuple(map(int, cap.split("."))) >= MIN_CAPABILITY else
           f"compute capability {cap} < {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}" if cap else
           "no CUDA GPU visible to torch")
    return {
        "cuda_gpu_sm80_or_newer": "dry run: the CPU stands in" if dry_run else gpu,
        "triton_kernels_import": env["triton_skip_reason"] or True,
        "pytest": True if not str(env["pytest"]).startswith("unavailable") else env["pytest"],
        "pytest_benchmark": (True if not str(env["pytest_benchmark"]).startswith("unavailable")
                             else env["pytest_benchmark"]),
    }


def make_overlay(target: Path) -> Path:
    """``target/ecgfast``: links to every entry of ecgfast/ plus the folders that
    pyproject.toml's ``[tool.setuptools.package-dir]`` maps into it (kernels/, export/)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"].get(
        "package-dir", {})
    pkg = target / "ecgfast"
    pkg.mkdir(parents=True, exist_ok=True)
    for entry in (ROOT / "ecgfast").iterdir():
        if entry.name != "__pycache__" and not (pkg / entry.name).exists():
            (pkg / entry.name).symlink_to(entry)
    for name, folder in mapping.items():
        parts = name.split(".")
        if parts[0] == "ecgfast" and len(parts) == 2 and not (pkg / parts[1]).exists():
            (pkg / parts[1]).symlink_to(ROOT / folder)
    return target


def _interrupt_once(signum, frame):
    """SIGINT -> KeyboardInterrupt, once: ``timeout`` signals its child and then its whole
    process group, and a second interrupt would break pytest's report of the first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_pytest(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py pytest")
    parser.add_argument("--step", required=True)
    parser.add_argument("--group", default="")
    parser.add_argument("--jsonl", required=True)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    signal.signal(signal.SIGINT, _interrupt_once)
    import gpu_check_cases
    import pytest

    return pytest.main([*args, "--cases-jsonl", opts.jsonl, "--cases-step", opts.step,
                        "--cases-group", opts.group], plugins=[gpu_check_cases])


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "env":
        env = environment(os.environ.get("ECGFAST_GPU_DRY_RUN") == "1")
        Path(argv[1]).write_text(json.dumps(env, indent=2) + "\n")
        Path(argv[2]).write_text(env["triton_skip_reason"] or "")
        print(json.dumps(env, indent=2))
        return 0
    if len(argv) == 2 and argv[0] == "overlay":
        print(make_overlay(Path(argv[1])))
        return 0
    if argv[:1] == ["pytest"]:
        return run_pytest(argv[1:])
    if argv[:1] == ["summary"]:
        import gpu_check_summary

        return gpu_check_summary.main(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
