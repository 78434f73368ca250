"""benchmarks/gpu_check.sh, the one-call GPU check: its dry run on the CPU (every step, the
correctness fields, one step cut off on purpose mid-case), the per-case JSON lines that
survive a cut, and a summary that survives any partial input and compares only what both
variants finished."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
EXPECTED = ("env.json", "cases.jsonl", "gpu_check.log", "summary.json")
STEPS = ["install", "env", "kernels", "nt_xent", "encoder", "compile", "tests", "summary"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def _module(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRITON_INTERPRET", "GPU_CHECK_BUDGET_S", "ECGFAST_GPU_CHECK_CUT")}
    env.update(OUT=str(out), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    return out, proc


@pytest.mark.slow
def test_dry_run_runs_every_step_and_keeps_what_a_cut_step_finished(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # at most 8 flat files come back from a GPU call; these four are all of them
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED)
    assert all(p.is_file() and p.stat().st_size < 5 * 2**20 for p in out.iterdir())
    # the plan is printed first: slots and deadlines counted from the start, in this order
    plan = re.findall(r"^  (\w+) +(\d+)  +(\d+)$", proc.stdout, re.MULTILINE)
    assert [name for name, _, _ in plan] == STEPS
    deadlines = [int(d) for _, _, d in plan]
    assert deadlines == sorted(deadlines)
    assert deadlines[-1] == sum(int(s) for _, s, _ in plan)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["problems"] == [], summary["problems"]
    status = {name: s["status"] for name, s in summary["steps"].items()}
    assert status == {"install": "pass", "env": "pass", "kernels": "pass", "nt_xent": "pass",
                      "encoder": "timeout", "compile": "pass", "tests": "pass",
                      "summary": "running"}
    env = json.loads((out / "env.json").read_text())
    assert env["imports"] and all(r.startswith("ok") for r in env["imports"].values())
    assert env["triton_skip_reason"] is None
    # the cut step: bf16 finished, fp32 eager interrupted inside its rounds, fp32 triton
    # not reached; the interrupted line lacks the fields the case records after its rounds
    enc = summary["cases"]["encoder"]
    assert (enc["collected"], enc["passed"], enc["interrupted"], enc["not_reached"]) == (4, 2, 1, 1)
    assert enc["interrupted_cases"] == [
        "benchmarks/bench_encoder_block.py::test_encoder_block_forward_backward[cuda-3-eager-fp32]"]
    cut = next(r for r in _lines(out / "cases.jsonl") if r.get("status") == "interrupted")
    assert cut["benchmark"]["extra_info"] == {} and cut["step"] == "encoder"
    # compared only over what both finished: bf16 has every comparison, fp32 none
    bf16, fp32 = summary["encoder"]["bf16"], summary["encoder"]["fp32"]
    for variant in ("eager", "compile", "compile-cudagraphs"):
        assert bf16[f"triton_over_{variant}"]["blocks"] == ["3"]
    assert not any(k.startswith("triton_over") for k in fp32)
    assert fp32["eager"]["3"]["state"] == "interrupted"
    assert fp32["triton"]["3"]["state"] == "not reached"
    assert bf16["triton"]["3"]["correct"] is True
    # correctness next to every NT-Xent time
    nt = summary["nt_xent"]
    for size in ("32", "48"):
        triton = nt[size]["triton-bf16"]["correctness"]
        assert triton["ok"] and triton["float64"]["ok"] and "eager-bf16" in triton["vs"]
        assert nt[size]["triton_over_eager-bf16"]["counts"] is True
    largest = nt["largest"]["triton-bf16"]["correctness"]
    assert largest["finite"] and largest["random_unit"]["ok"]
    # every target evaluated, none claimed: a dry run measures nothing
    assert all(t["status"] == "not measured" for t in summary["targets"].values())
    verdicts = {k: t["dry_run_verdict"]["status"] for k, t in summary["targets"].items()}
    assert verdicts["nt_xent_2^20_finite_and_sane"] == "met"
    assert verdicts["cuda_tests_pass"] == "met"
    assert summary["cases"]["tests"]["collected"] == summary["cases"]["tests"]["passed"] == 2
    log = (out / "gpu_check.log").read_text()
    assert "targets:" in log and log.count("== summary: exit 0") == 1


def _cases_file(tmp_path) -> Path:
    """The lines of a run: a plan, a finished and an interrupted benchmark case (no
    extra_info: cut inside its rounds), a failed test, one case never reached."""
    enc = "benchmarks/bench_encoder_block.py::test_encoder_block_forward_backward"
    ids = [f"{enc}[cuda-1-eager-bf16]", f"{enc}[cuda-1-triton-bf16]", f"{enc}[cuda-2-eager-bf16]",
           f"{enc}[cuda-2-triton-bf16]"]
    ok = {"ok": True}
    lines = [
        {"event": "plan", "steps": [{"step": s, "planned_s": 1, "deadline_s": i}
                                    for i, s in enumerate(STEPS)]},
        {"event": "step-start", "step": "encoder", "limit_s": 5},
        {"event": "collected", "step": "encoder", "nodeids": ids},
        {"event": "case", "step": "encoder", "nodeid": ids[0], "status": "passed",
         "benchmark": {"extra_info": {"median_s": 2.0, "peak_memory_bytes": 100,
                                      "correctness": ok}}},
        {"event": "case", "step": "encoder", "nodeid": ids[1], "status": "passed",
         "benchmark": {"extra_info": {"median_s": 1.0, "peak_memory_bytes": 40,
                                      "correctness": ok}}},
        {"event": "case", "step": "encoder", "nodeid": ids[2], "status": "interrupted",
         "benchmark": {"extra_info": {}, "rounds": 2}},
        {"event": "step", "step": "encoder", "status": "timeout", "seconds": 5, "limit_s": 5},
        {"event": "collected", "step": "tests", "nodeids": ["t.py::a", "t.py::b", "t.py::c"]},
        {"event": "case", "step": "tests", "nodeid": "t.py::a", "status": "passed"},
        {"event": "case", "step": "tests", "nodeid": "t.py::b", "status": "failed",
         "error": "AssertionError: off by 3"},
    ]
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_summary_compares_only_what_both_finished_and_counts_not_reached(tmp_path):
    summarize = _module("gpu_check_summary").summarize
    _cases_file(tmp_path)
    summary, problems = summarize(tmp_path, dry_run=False)
    cmp = summary["encoder"]["bf16"]["triton_over_eager"]
    assert cmp["blocks"] == ["1"] and cmp["speedup"] == 2.0 and cmp["counts"]
    assert summary["encoder"]["bf16"]["eager"]["2"]["state"] == "interrupted"
    assert summary["encoder"]["bf16"]["triton"]["2"]["state"] == "not reached"
    target = summary["targets"]["encoder_1.5x_eager"]
    assert target["status"] == "not measured" and "only blocks ['1']" in target["reason"]
    tests = summary["cases"]["tests"]
    assert (tests["passed"], tests["failed"], tests["not_reached"]) == (1, 1, 1)
    assert tests["failed_cases"][0]["error"] == "AssertionError: off by 3"
    assert summary["targets"]["cuda_tests_pass"]["status"] == "not met"
    assert summary["targets"]["nt_xent_65536_5x_eager"]["status"] == "not measured"
    assert summary["steps"]["nt_xent"]["status"] == "not reached"
    assert "step encoder: timeout" in problems and "step tests: 1 case(s) failed" in problems


def test_a_fast_wrong_kernel_is_a_failure_not_a_speedup(tmp_path):
    summarize = _module("gpu_check_summary").summarize
    path = _cases_file(tmp_path)
    lines = path.read_text().replace('"median_s": 1.0, "peak_memory_bytes": 40, '
                                     '"correctness": {"ok": true}',
                                     '"median_s": 1.0, "peak_memory_bytes": 40, '
                                     '"correctness": {"ok": false}')
    path.write_text(lines)
    summary, problems = summarize(tmp_path, dry_run=False)
    cmp = summary["encoder"]["bf16"]["triton_over_eager"]
    assert cmp["counts"] is False and "out of tolerance" in cmp["note"]
    assert any("results out of tolerance" in p for p in problems)


def test_summary_survives_truncated_and_empty_input(tmp_path):
    summarize = _module("gpu_check_summary").summarize
    data = _cases_file(tmp_path).read_bytes()
    for cut in [0, 1, *range(7, len(data), 97), len(data) - 1]:
        (tmp_path / "cases.jsonl").write_bytes(data[:cut])
        summary, problems = summarize(tmp_path, dry_run=False)
        json.dumps(summary, default=str)
        whole_lines = cut == 0 or data[cut - 1:cut] == b"\n"
        assert summary["malformed_lines"] == (0 if whole_lines else summary["malformed_lines"])
        assert summary["malformed_lines"] <= 1, cut
        assert set(summary["targets"]) >= {"nt_xent_2^20_finite_and_sane", "cuda_tests_pass"}
    (tmp_path / "cases.jsonl").unlink()
    summary, problems = summarize(tmp_path, dry_run=False)
    assert all(t["status"] == "not measured" for t in summary["targets"].values())
    assert "env.json missing or unreadable" in problems[0]


def test_a_cut_pytest_run_keeps_its_finished_cases(tmp_path):
    """The runner under `timeout -s INT`, started with SIGINT ignored (as a shell starts a
    background job): the case cut off mid-run gets an "interrupted" line, the one before it
    its "passed" line, the one after none (not reached), and timeout exits 124."""
    (tmp_path / "test_cut.py").write_text(
        "def test_fast():\n    pass\n\ndef test_slow():\n    pass\n\ndef test_after():\n"
        "    pass\n")
    jsonl = tmp_path / "cases.jsonl"
    env = dict(os.environ, ECGFAST_GPU_CHECK_CUT="test_slow")
    proc = subprocess.run(
        ["timeout", "-s", "INT", "-k", "20", "60", sys.executable,
         str(ROOT / "benchmarks" / "gpu_check.py"), "pytest", "--step", "s", "--jsonl",
         str(jsonl), "--", str(tmp_path / "test_cut.py"), "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.returncode == 124, proc.stdout + proc.stderr
    lines = _lines(jsonl)
    assert [r["event"] for r in lines] == ["collected", "case", "case", "session"]
    assert [r.get("status") for r in lines[1:3]] == ["passed", "interrupted"]
    assert lines[0]["nodeids"][2].endswith("test_after") and lines[-1]["exitstatus"] == 2


def test_overlay_imports_ecgfast_without_installing(tmp_path):
    overlay = _module("gpu_check").make_overlay(tmp_path / "site")
    proc = subprocess.run(
        [sys.executable, "-c",
         "import ecgfast.kernels, ecgfast.export, ecgfast.losses; print(ecgfast.kernels.__file__)"],
        env=dict(os.environ, PYTHONPATH=str(overlay)), cwd=tmp_path, capture_output=True,
        text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(overlay))


def test_random_unit_expectation_holds_and_catches_a_wrong_loss():
    """The values the 2^20 case is checked against, on the eager loss at 2N = 2048."""
    accuracy = _module("accuracy")
    from ecgfast.losses import nt_xent

    def loss_times(factor):
        def run(a, b):
            loss = nt_xent(a, b, 0.5) * factor
            loss.backward()
            return loss
        return run

    torch.manual_seed(0)
    z1, z2 = torch.randn(1024, 128), torch.randn(1024, 128)
    check = accuracy.nt_xent_check(loss_times(1.0), z1, z2, 0.5, "eager")
    exp = check["random_unit"]
    assert check["ok"] and exp["ok"] and check["float64"]["grad_error"] < 1e-5
    assert exp["loss_error"] <= exp["loss_tol"] < 0.06
    assert abs(exp["loss"] - (math.log(2047) + 1 / (2 * 128 * 0.25))) < 1e-12
    assert abs(exp["grad_ratio_got"] - exp["grad_ratio"]) <= exp["grad_ratio_tol"] < 0.2
    # a loss off by a constant or a gradient off by a factor fails the same check
    wrong = accuracy.nt_xent_check(loss_times(1.1), z1, z2, 0.5, "wrong")
    assert not wrong["random_unit"]["ok"] and not wrong["float64"]["ok"] and not wrong["ok"]
    assert wrong["vs"]["eager"]["loss_diff"] > 0.05
