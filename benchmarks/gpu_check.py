"""The Python half of ``benchmarks/gpu_check.sh``: its first step and its last.

    python benchmarks/gpu_check.py env OUT/env.json
    python benchmarks/gpu_check.py summary OUT STEPS_TSV [--dry-run]

``env`` records the card, driver, library versions and onnxruntime's providers.
``summary`` reads every step's result file and writes ``OUT/summary.json``: pass/fail per
step, the ratios of the benchmarks (triton over eager and over torch.compile, time over
the floor, peak-memory ratios), the CUDA test counts and the environment; it exits 1 when a
step failed or, with ``--dry-run``, when an expected file is missing or lacks its fields.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

#: Result file of each step, as gpu_check.sh names them.
FILES = {"env": "env.json", "ntxent": "ntxent.json", "encoder": "encoder_block.json",
         "compile": "encoder_compile.json", "tests": "tests.xml"}
ORT_CUDA_NOT_CHECKABLE = ("not checkable on this image: its onnxruntime has no CUDA provider "
                          "and onnxruntime-gpu's CUDA libraries exceed what the device tool "
                          "can carry")


def environment(dry_run: bool) -> dict:
    import numpy
    import torch

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "dry_run": dry_run, "python": platform.python_version(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "numpy": numpy.__version__,
           "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
    for name in ("triton", "onnxruntime"):
        try:
            env[name] = __import__(name).__version__
        except Exception as err:  # noqa: BLE001 - a missing package is recorded, not fatal
            env[name] = f"unavailable: {err}"
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except Exception:  # noqa: BLE001
        providers = []
    env["onnxruntime_providers"] = providers
    env["onnxruntime_cuda"] = ("CUDAExecutionProvider listed (not exercised by gpu_check)"
                               if "CUDAExecutionProvider" in providers else ORT_CUDA_NOT_CHECKABLE)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory,
                   sm_count=props.multi_processor_count,
                   capability=f"{props.major}.{props.minor}")
        try:
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            env["nvidia_smi"] = f"unavailable: {err}"
    with open("/proc/cpuinfo") as f:
        env["cpu"] = next((line.split(":", 1)[1].strip() for line in f
                           if line.startswith("model name")), platform.processor())
    return env


def _benchmarks(path: Path) -> list[dict]:
    return json.loads(path.read_text())["benchmarks"]


def ntxent_ratios(results: list[dict]) -> dict:
    """Per 2N: each case's median, time over floor, peak memory; triton's speed-up over
    eager bf16 and eager fp32 strict."""
    by = {}
    for r in results:
        info = r["extra_info"]
        key = f"{info['backend']}-{'fp32-strict' if info.get('fp32_strict') else 'bf16'}"
        by.setdefault(str(info["two_n"]), {})[key] = {
            k: info.get(k) for k in ("median_s", "peak_memory_bytes", "time_over_floor",
                                     "floor_s", "fraction_of_gemm", "gemm_flops_per_s")}
    for cases in by.values():
        triton = cases.get("triton-bf16")
        for base in ("eager-bf16", "eager-fp32-strict"):
            if triton and base in cases:
                cases[f"triton_speedup_over_{base}"] = cases[base]["median_s"] / triton["median_s"]
                cases[f"triton_memory_over_{base}"] = (
                    triton["peak_memory_bytes"] / max(cases[base]["peak_memory_bytes"], 1))
    return by


def encoder_ratios(results: list[dict]) -> dict:
    """Per dtype: every variant's median per block and summed over the blocks measured;
    triton's speed-up over every other variant and its peak memory over eager's."""
    by = {}
    for r in results:
        info = r["extra_info"]
        cases = by.setdefault(info["dtype"], {}).setdefault(info["variant"], {})
        cases[f"block{info['block']}"] = {"median_s": info["median_s"],
                                          "peak_memory_bytes": info["peak_memory_bytes"],
                                          "compile_mode": info.get("compile_mode")}
    for variants in by.values():
        for cases in variants.values():
            blocks = [v for k, v in cases.items() if k.startswith("block")]
            cases["sum_median_s"] = sum(b["median_s"] for b in blocks)
            cases["max_peak_memory_bytes"] = max(b["peak_memory_bytes"] for b in blocks)
        triton = variants.get("triton")
        for name, cases in list(variants.items()):
            if triton and name != "triton":
                variants[f"triton_speedup_over_{name}"] = (cases["sum_median_s"]
                                                           / triton["sum_median_s"])
                if name == "eager":
                    variants["triton_memory_over_eager"] = (
                        triton["max_peak_memory_bytes"] / max(cases["max_peak_memory_bytes"], 1))
    return by


def _target(value, ok, dry_run: bool) -> dict:
    if dry_run:  # CPU, interpreter, tiny sizes: the plumbing is checked, not the targets
        return {"value": value, "met": None, "note": "dry run: not a measurement"}
    return {"value": value, "met": None if value is None else bool(ok(value))}


def targets(summary: dict) -> dict:
    """The issue's targets, each with its measured value and whether it was met (None: not
    measured in this run, e.g. a dry run's sizes)."""
    nt = summary.get("ntxent", {})
    mid, top = nt.get("65536", {}), nt.get(str(2**20), {})
    enc = summary.get("encoder", {}).get("bf16", {})
    tests = summary.get("tests")
    dry = summary["dry_run"]
    return {
        "ntxent_65536_time_over_floor_le_2": _target(
            mid.get("triton-bf16", {}).get("time_over_floor"), lambda v: v <= 2, dry),
        "ntxent_65536_speedup_over_eager_ge_5": _target(
            mid.get("triton_speedup_over_eager-bf16"), lambda v: v >= 5, dry),
        "ntxent_2^20_runs": _target(top.get("triton-bf16", {}).get("median_s"), lambda v: True, dry),
        "encoder_bf16_speedup_over_eager_ge_1.5": _target(
            enc.get("triton_speedup_over_eager"), lambda v: v >= 1.5, dry),
        "encoder_bf16_speedup_over_compile_cudagraphs_ge_1.15": _target(
            enc.get("triton_speedup_over_compile-cudagraphs"), lambda v: v >= 1.15, dry),
        "encoder_bf16_memory_over_eager_le_0.5": _target(
            enc.get("triton_memory_over_eager"), lambda v: v <= 0.5, dry),
        "cuda_tests_all_pass": _target(
            None if tests is None else tests["failures"] + tests["errors"], lambda v: v == 0, dry),
    }


def junit_counts(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites)
              for k in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
                        if c.find("failure") is not None or c.find("error") is not None][:50]
    return counts


#: Fields a dry run checks in each benchmark file's extra_info.
REQUIRED = {"ntxent": ("median_s", "gemm_flops_per_s", "floor_s", "time_over_floor"),
            "encoder": ("median_s", "peak_memory_bytes", "fraction_of_gemm_rate"),
            "compile": ("median_s", "compile_mode")}


def summarize(out: Path, steps_tsv: Path, dry_run: bool) -> tuple[dict, list[str]]:
    problems, summary, encoder_results = [], {"dry_run": dry_run, "steps": []}, []
    for line in steps_tsv.read_text().splitlines():
        name, rc, seconds, limit, file = line.split("\t")
        rc = int(rc)
        status = "pass" if rc == 0 else "timeout" if rc in (124, 130, 137) else "fail"
        summary["steps"].append({"name": name, "exit": rc, "status": status,
                                 "seconds": int(seconds), "limit_s": int(limit), "file": file,
                                 "file_written": (out / file).is_file()})
        if status != "pass":
            problems.append(f"step {name}: {status} (exit {rc})")
    for name, file in FILES.items():
        path = out / file
        if not path.is_file():
            problems.append(f"{file} was not written")
            continue
        try:
            if name == "env":
                summary["env"] = json.loads(path.read_text())
            elif name == "tests":
                summary["tests"] = junit_counts(path)
            else:
                results = _benchmarks(path)
                if dry_run and not results:
                    problems.append(f"{file} holds no benchmark")
                for r in results:
                    missing = [k for k in REQUIRED[name] if k not in r["extra_info"]]
                    if missing:
                        problems.append(f"{file}: {r['name']} lacks {', '.join(missing)}")
                if name == "ntxent":
                    summary["ntxent"] = ntxent_ratios(results)
                else:  # eager/triton and compile come from two files, compared together
                    encoder_results.extend(results)
        except (ValueError, KeyError, ET.ParseError) as err:
            problems.append(f"{file} does not parse: {err!r}")
    if encoder_results:
        summary["encoder"] = encoder_ratios(encoder_results)
    if not (out / "gpu_check.log").is_file():
        problems.append("gpu_check.log was not written")
    summary["onnxruntime_cuda"] = summary.get("env", {}).get("onnxruntime_cuda",
                                                             ORT_CUDA_NOT_CHECKABLE)
    summary["targets"] = targets(summary)
    summary["problems"] = problems
    return summary, problems


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "env":
        env = environment(os.environ.get("ECGFAST_GPU_DRY_RUN") == "1")
        Path(argv[1]).write_text(json.dumps(env, indent=2) + "\n")
        print(json.dumps(env, indent=2))
        return 0
    if len(argv) in (3, 4) and argv[0] == "summary" and argv[3:] in ([], ["--dry-run"]):
        out = Path(argv[1])
        summary, problems = summarize(out, Path(argv[2]), bool(argv[3:]))
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps({k: v for k, v in summary.items() if k != "env"}, indent=2))
        for p in problems:
            print("PROBLEM:", p)
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
