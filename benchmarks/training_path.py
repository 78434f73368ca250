"""Follow one training batch from ``ecgfast pretrain`` to the ops, and count what it visits.

Runs ``ecgfast pretrain`` on the CPU for two steps of one epoch (a small recording
written to a temporary folder, ``--max-steps-per-epoch 2``) under ``sys.setprofile`` and
records every call of a Python function of ``ecgfast``, with the ``ecgfast`` frames above
it (frames of torch and other libraries in between, e.g. ``nn.Module.__call__``, are
skipped). An op call is a call into ``ecgfast/ops/`` (the references, the streaming
backend) or ``kernels/`` that receives a tensor. The calls counted are one period of the training loop:
those after the last op call of step 1 up to the last op call of step 2 (the loop's
bookkeeping of step 1, then step 2 from fetching its batch down to its last op), plus
the frames above them (the CLI, the command, pretrain). Counted:

- ``modules``: the distinct ``ecgfast`` modules (files) among those calls and frames;
- ``edges``: the distinct (caller module, callee module) pairs among them;
- ``upward``: the edges whose callee sits higher in the layer list of
  ``docs/architecture.md`` than its caller (a return upward); modules the list does not
  place are reported as ``unplaced`` and take part in no upward edge.

The place of a module is the longest entry of the list that names it (``training/step.py``
before ``training/``; ``kernels/`` and ``export/`` are the top-level folders installed as
``ecgfast.kernels`` and ``ecgfast.export``). Steps are told apart by their frames: the op
calls of one step share the frame, below the loop, that every op call of the run passes
through.

Run it with a checkout's interpreter; it reads that checkout's ``docs/architecture.md``
unless ``--layers`` names another (``--alias`` then places modules the list does not
name, so that two checkouts can be counted against one list)::

    python benchmarks/training_path.py                      # transform objective, one pass
    python benchmarks/training_path.py --objective both --chunk-size 2
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: the ops' modules: the references and the streaming backend (ops/), the Triton kernels
OP_PATHS = ("ops/", "kernels/")


def layer_entries(doc: Path) -> list[str]:
    """The entries of the ``## Layers`` block of ``doc``, highest layer first: a line's
    first word (``training/``, ``models.py``), or, on a line indented by exactly two
    spaces, a file of the folder above (``training/step.py``)."""
    block = doc.read_text().split("## Layers", 1)[1].split("```", 2)[1]
    entries: list[str] = []
    folder = ""
    for line in block.splitlines():
        if m := re.match(r"^([\w./]+)\s", line + " "):
            entries.append(m.group(1))
            folder = m.group(1) if m.group(1).endswith("/") else ""
        elif folder and (m := re.match(r"^  ([\w.]+)\s", line)):
            entries.append(folder + m.group(1))
    return entries


def layer_of(path: str, entries: list[str]) -> int | None:
    """The index in ``entries`` of the longest entry naming ``path`` (a file or a folder
    holding it), or None."""
    best = None
    for rank, entry in enumerate(entries):
        hit = path == entry or (entry.endswith("/") and path.startswith(entry))
        if hit and (best is None or len(entry) > len(entries[best])):
            best = rank
    return best


def is_op(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in OP_PATHS)


class Recorder:
    """The ``sys.setprofile`` hook. Each ecgfast call is recorded as (callee module, the
    modules of the ecgfast frames above it, nearest first, whether it is an op call on
    tensors); :attr:`serials` holds the serial numbers of its frame and those above it,
    so that two calls of one function are told apart."""

    def __init__(self):
        self.calls: list[tuple[str, tuple[str, ...], bool]] = []
        self.serials: list[tuple[int, ...]] = []
        self._live: dict[int, int] = {}

    def __call__(self, frame, event, arg):
        if event not in ("call", "return"):
            return
        module = module_of(frame)
        if module is None:
            return
        if event == "return":
            self._live.pop(id(frame), None)
            return
        self._live[id(frame)] = serial = len(self.calls)
        stack, serials, f = [], [serial], frame.f_back
        while f is not None:
            m = module_of(f)
            if m is not None:
                serials.append(self._live.get(id(f), -1))
                if not stack or stack[-1] != m:
                    stack.append(m)
            f = f.f_back
        self.calls.append((module, tuple(stack), is_op(module) and takes_tensor(frame)))
        self.serials.append(tuple(serials))


def module_of(frame) -> str | None:
    """The file of ``frame`` as a path under the repository's package folders
    (``training/step.py``, ``kernels/conv1d.py``), or None outside ecgfast."""
    name = frame.f_globals.get("__name__", "")
    if not (name == "ecgfast" or name.startswith("ecgfast.")):
        return None
    parts = name.split(".")[1:]
    if Path(frame.f_code.co_filename).name == "__init__.py":
        parts.append("__init__")
    return "/".join(parts) + ".py"


def takes_tensor(frame) -> bool:
    """Whether a call's arguments include a tensor (an op running on data, not a spec
    being built)."""
    import torch

    code = frame.f_code
    n = code.co_argcount + code.co_kwonlyargcount
    values = [frame.f_locals.get(v) for v in code.co_varnames[:n]]
    return any(isinstance(v, torch.Tensor) for v in values)


def step_of(serials: list[tuple[int, ...]], op_calls: list[int]) -> list[int]:
    """For each op call, the frame that holds its step: the child, on its stack, of the
    deepest frame that every op call runs under (the loop)."""
    chains = [serials[i][::-1] for i in op_calls]  # outermost frame first
    depth = 0
    while all(len(c) > depth + 1 and c[depth] == chains[0][depth] for c in chains):
        depth += 1
    return [c[depth] for c in chains]


def count(recorder: Recorder, entries: list[str], alias: dict[str, str]) -> dict:
    """The counts of the module docstring over one period of the training loop: the calls
    after step 1's last op call up to step 2's last op call. ``alias`` places a module
    where the layer list names another (``chunked.py`` of an older checkout as
    ``training/chunked.py``)."""
    calls = recorder.calls
    op_calls = [i for i, (_, _, op) in enumerate(calls) if op]
    steps = step_of(recorder.serials, op_calls)
    if len(set(steps)) != 2:
        raise RuntimeError(f"expected the op calls of 2 steps, found {len(set(steps))}")
    first_of_step2 = op_calls[steps.index(steps[-1])]
    last_of_step1 = max(i for i in op_calls if i < first_of_step2)
    window = calls[last_of_step1 + 1:op_calls[-1] + 1]
    modules: set[str] = set()
    edges: set[tuple[str, str]] = set()
    for module, stack, _ in window:
        chain = [module, *stack]  # callee, its caller, ... up to the CLI
        modules.update(chain)
        edges.update((chain[k + 1], chain[k]) for k in range(len(chain) - 1)
                     if chain[k + 1] != chain[k])
    rank = {m: layer_of(alias.get(m, m), entries) for m in modules}
    upward = sorted((a, b) for a, b in edges
                    if rank[a] is not None and rank[b] is not None and rank[b] < rank[a])
    return {
        "modules": len(modules),
        "edges": len(edges),
        "upward": len(upward),
        "module_list": sorted(modules),
        "upward_edges": [f"{a} -> {b}" for a, b in upward],
        "unplaced": sorted(m for m in modules if rank[m] is None),
        "layers": entries,
    }


def run(args) -> dict:
    from ecgfast.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "ecg.npy"
        t = np.arange(256 * 10 * 2 * args.windows) / 256.0  # two batches of 10 s windows
        rng = np.random.default_rng(0)
        np.save(rec, (np.sin(2 * np.pi * 1.2 * t) + 0.1 * rng.standard_normal(t.size))
                .astype(np.float32))
        argv = ["pretrain", "--data", str(rec), "--out", str(Path(tmp) / "run"), "--fs", "256",
                "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size",
                str(args.windows), "--device", "cpu", "--quiet", "--backend", args.backend,
                "--objective", args.objective, "--precision", args.precision]
        if args.chunk_size:
            argv += ["--chunk-size", args.chunk_size]
        recorder = Recorder()
        sys.setprofile(recorder)
        try:
            status = main(argv)
        finally:
            sys.setprofile(None)
        if status != 0:
            raise RuntimeError(f"ecgfast {' '.join(argv)} exited with {status}")
    alias = dict(a.split("=", 1) for a in args.alias)
    return {"argv": argv[5:], **count(recorder, layer_entries(Path(args.layers)), alias)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objective", default="transform", choices=("transform", "contrastive", "both"))
    p.add_argument("--chunk-size", default=None)
    p.add_argument("--backend", default="eager")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--windows", type=int, default=4, help="windows per batch")
    p.add_argument("--layers", default=str(ROOT / "docs" / "architecture.md"),
                   help="the document whose layer list places the modules (default: this "
                        "checkout's docs/architecture.md)")
    p.add_argument("--alias", action="append", default=[], metavar="PATH=PLACE",
                   help="place module PATH (e.g. chunked.py) where the list names PLACE")
    p.add_argument("--full", action="store_true", help="also list the modules and edges")
    args = p.parse_args()
    result = run(args)
    if not args.full:
        result = {k: v for k, v in result.items() if k not in ("module_list", "layers")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
