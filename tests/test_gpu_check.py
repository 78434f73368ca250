"""benchmarks/gpu_check.sh, the one-call GPU check: its dry run on the CPU writes every
expected file, an interrupted pytest step still writes its report, and the summary names
what is missing or failed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
EXPECTED = ("env.json", "ntxent.json", "encoder_block.json", "encoder_compile.json",
            "tests.xml", "gpu_check.log", "summary.json")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def _gpu_check():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    return gpu_check


@pytest.mark.slow
def test_dry_run_writes_every_expected_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET",)}
    env.update(OUT=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # at most 8 files come back from a device call; all of them are ours
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(EXPECTED)
    assert len(written) <= 8
    # the budget is printed first and adds up to at most 8 minutes
    budget = re.findall(r"^  (\w+) +(\d+) s  -> ", proc.stdout, re.MULTILINE)
    assert [name for name, _ in budget] == ["env", "ntxent", "encoder", "compile", "tests",
                                            "summary"]
    assert sum(int(s) for _, s in budget) <= 480
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["problems"] == []
    assert [s["name"] for s in summary["steps"]] == [n for n, _ in budget[:-1]]
    assert all(s["status"] == "pass" and s["file_written"] for s in summary["steps"])
    assert "not checkable" in summary["onnxruntime_cuda"] or "listed" in summary["onnxruntime_cuda"]
    # every comparison the GPU run reports is there, computed from the dry run's files
    assert {"triton-bf16", "eager-bf16", "eager-fp32-strict",
            "triton_speedup_over_eager-bf16"} <= set(summary["ntxent"]["32"])
    bf16 = summary["encoder"]["bf16"]
    assert {"eager", "triton", "compile", "compile-cudagraphs", "triton_speedup_over_eager",
            "triton_speedup_over_compile-cudagraphs", "triton_memory_over_eager"} <= set(bf16)
    assert summary["tests"]["failures"] == summary["tests"]["errors"] == 0
    assert summary["tests"]["tests"] >= 1
    assert all(t["met"] is None for t in summary["targets"].values())
    assert (tmp_path / "gpu_check.log").read_text().count("== summary: exit 0") == 1


def test_interrupted_pytest_step_still_writes_its_report(tmp_path):
    """The script's pytest runner turns timeout's SIGINT into KeyboardInterrupt, so pytest
    writes its JUnit XML with the results so far (SIGTERM would lose them)."""
    runner = re.search(r"PYTEST_MAIN='(.*?)'", SCRIPT.read_text(), re.DOTALL).group(1)
    (tmp_path / "test_slow.py").write_text(
        "import time\n\ndef test_fast():\n    pass\n\n"
        "def test_slow():\n    time.sleep(60)\n")
    xml = tmp_path / "out.xml"
    # started with SIGINT ignored, as a non-interactive shell may start a job
    proc = subprocess.run(
        ["timeout", "-s", "INT", "-k", "20", "8", sys.executable, "-c", runner,
         str(tmp_path / "test_slow.py"), "-q", "-p", "no:cacheprovider", "--junitxml", str(xml)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        preexec_fn=lambda: __import__("signal").signal(2, __import__("signal").SIG_IGN))
    assert proc.returncode != 0
    assert xml.is_file(), proc.stdout + proc.stderr
    counts = _gpu_check().junit_counts(xml)
    assert counts["tests"] >= 1


def test_summary_names_missing_files_and_failed_steps(tmp_path):
    steps = tmp_path / "steps.tsv"
    steps.write_text("env\t0\t1\t30\tenv.json\nntxent\t124\t120\t120\tntxent.json\n")
    (tmp_path / "env.json").write_text(json.dumps({"onnxruntime_cuda": "x"}))
    summary, problems = _gpu_check().summarize(tmp_path, steps, dry_run=True)
    assert "step ntxent: timeout (exit 124)" in problems
    for missing in ("ntxent.json", "encoder_block.json", "encoder_compile.json", "tests.xml",
                    "gpu_check.log"):
        assert any(missing in p for p in problems), missing
    assert summary["steps"][1]["file_written"] is False
    (tmp_path / "ntxent.json").write_text("{not json")
    _, problems = _gpu_check().summarize(tmp_path, steps, dry_run=True)
    assert any(p.startswith("ntxent.json does not parse") for p in problems)
