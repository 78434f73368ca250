"""The inference install against the full one, side by side on one machine.

For each environment (a Python interpreter, optionally with a ``PYTHONPATH`` that puts
another ecgfast checkout's installed copy first) this measures, in fresh processes:

- ``import``: the cold import of ``from ecgfast.export import OnnxEncoder`` (seconds, in
  the process), then loading a model (``OnnxEncoder(model, providers=...)``), and the
  process's peak resident memory after both (``ru_maxrss``), and whether torch was loaded;
- ``embed``: ``OnnxEncoder.embed_recording`` of a long recording (seconds and windows/s,
  the model already loaded), then its two parts on their own (the pre-processing, and
  onnxruntime on the windows in batches of 256), and ``ecgfast embed`` of it end to end
  (process wall time);

the environments taking turns, ``--rounds`` times, so that the machine's load falls on
all alike; medians are reported. ``--size NAME=VENV`` adds a virtual environment's size on
disk and its number of installed distributions. Standard library only: run it with any
Python::

    python benchmarks/inference_install.py --model m.onnx --recording rec.npy --fs 500 \\
        --env inference=/venv-inf/bin/python --env full=/venv-full/bin/python \\
        --size inference=/venv-inf --size full=/venv-full --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORT = """
import json, resource, sys, time
t0 = time.perf_counter()
from ecgfast.export import OnnxEncoder
t1 = time.perf_counter()
enc = OnnxEncoder(sys.argv[1], providers=sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch_loaded": "torch" in sys.modules, "provider": enc.provider}))
"""

EMBED = """
import json, sys, time
import numpy as np
from ecgfast.export import OnnxEncoder
from ecgfast.export.embed import recording_batches, serving_chain
enc = OnnxEncoder(sys.argv[1], providers="cpu")
signal, fs = np.load(sys.argv[2]), float(sys.argv[3])
t0 = time.perf_counter()
emb, starts = enc.embed_recording(signal, fs)
t1 = time.perf_counter()
windows = np.concatenate([b.windows for b in recording_batches(enc, signal, fs,
                                                                serving_chain(enc))])
t2 = time.perf_counter()
for i in range(0, len(windows), 256):
    enc.embed(windows[i:i + 256])
t3 = time.perf_counter()
print(json.dumps({"embed_s": t1 - t0, "windows": len(emb), "windows_per_s": len(emb) / (t1 - t0),
                  "preprocess_s": t2 - t1, "onnxruntime_s": t3 - t2}))
"""


def _run(python: str, pythonpath: str | None, args: list[str]) -> tuple[str, float]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    t0 = time.perf_counter()
    proc = subprocess.run([python, *args], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir(), timeout=1800, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{python} {args[:2]}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return proc.stdout, wall


def measure_once(python, pythonpath, model, recording, fs, providers) -> dict:
    load = os.getloadavg()[0]
    out, wall = _run(python, pythonpath, ["-c", IMPORT, model, providers])
    found = {**json.loads(out.strip().splitlines()[-1]), "import_process_wall_s": wall}
    if recording is not None:
        out, _ = _run(python, pythonpath, ["-c", EMBED, model, recording, str(fs)])
        found.update(json.loads(out.strip().splitlines()[-1]))
        with tempfile.TemporaryDirectory() as d:
            _, wall = _run(python, pythonpath, ["-m", "ecgfast", "embed", model, recording,
                                                "--fs", str(fs), "--providers", "cpu",
                                                "--quiet", "--out", str(Path(d) / "e.npy")])
        found["cli_embed_wall_s"] = wall
    found["load_average_1min"] = load
    return found


def venv_size(path: str) -> dict:
    """Bytes of the files under ``path`` (links not followed) and its distributions."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    python = str(Path(path) / "bin" / "python")
    listing = subprocess.run([python, "-m", "pip", "list", "--format", "json"],
                             capture_output=True, text=True, check=True).stdout
    names = sorted(d["name"] for d in json.loads(listing))
    heavy = [n for n in names if n.lower().startswith(("torch", "triton", "nvidia", "cuda"))]
    return {"bytes": total, "gib": total / 2**30, "distributions": len(names),
            "training_stack": heavy}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--recording", default=None, help=".npy of raw samples (1-D)")
    p.add_argument("--fs", type=float, default=500.0)
    p.add_argument("--env", action="append", default=[], metavar="NAME=PYTHON[:PYTHONPATH]")
    p.add_argument("--providers", action="append", default=[], metavar="NAME=PROVIDERS",
                   help="OnnxEncoder providers of an environment's import run (default auto)")
    p.add_argument("--no-embed", action="append", default=[], metavar="NAME",
                   help="environments measured for the import only")
    p.add_argument("--size", action="append", default=[], metavar="NAME=VENV")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    envs = {}
    for spec in args.env:
        name, rest = spec.split("=", 1)
        python, _, path = rest.partition(":")
        envs[name] = (python, path or None)
    providers = dict(spec.split("=", 1) for spec in args.providers)
    model = str(Path(args.model).resolve())  # the runs start in the temporary folder
    recording = None if args.recording is None else str(Path(args.recording).resolve())
    result = {"what": "benchmarks/inference_install.py", "machine": {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "host": platform.node(),
        "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "fs": args.fs,
        "sizes": {}, "runs": {n: [] for n in envs}}
    for spec in args.size:
        name, path = spec.split("=", 1)
        result["sizes"][name] = venv_size(path)
        print(name, result["sizes"][name], file=sys.stderr)
    for r in range(args.rounds):
        for name, (python, path) in envs.items():
            run = measure_once(python, path, model, None if name in args.no_embed else recording,
                               args.fs, providers.get(name, "auto"))
            result["runs"][name].append(run)
            print(f"round {r + 1} {name}: {run}", file=sys.stderr)
    result["medians"] = {
        name: {key: statistics.median(run[key] for run in runs)
               for key in runs[0] if isinstance(runs[0][key], (int, float))
               and not isinstance(runs[0][key], bool)}
        for name, runs in result["runs"].items()}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["medians"], indent=1))


if __name__ == "__main__":
    main()
