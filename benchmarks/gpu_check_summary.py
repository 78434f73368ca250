"""The last step of ``benchmarks/gpu_check.sh``: ``summary.json`` from the lines the steps
appended, and a short table printed to the log.

    python benchmarks/gpu_check.py summary OUT [--dry-run] [--expect-cut STEP]

Reads ``OUT/cases.jsonl`` line by line: a line that does not parse (a truncated last line
included) is counted and skipped, and an empty or missing file gives a summary of nothing
measured. Reports, per step: its status (pass, fail, timeout, skipped with its reason, cut
off when the script itself ended during it, not reached) and its cases, passed, failed
(errors included), skipped, interrupted (running when the deadline came) and not reached
(collected but no line). Benchmarks: each case's median, peak memory, time over the floor
and correctness; variants are compared only over work both finished (the encoder: the
blocks both finished), and a speed-up counts only when the faster variant's results are
within tolerance (``accuracy``), else it is a failure. Then every target: met, not met or
not measured, with the reason. ``--expect-cut STEP`` (the dry run): STEP was cut off on
purpose; its timeout is expected, and it must have kept a finished case and the
interrupted one. Exit status 1 when anything failed or is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CASES = "cases.jsonl"
#: Steps whose cases are the CUDA test subset, and those that run benchmarks.
TEST_STEPS = ("kernels", "tests")
BENCH_STEPS = ("nt_xent", "encoder", "compile")
#: 2N of the NT-Xent targets: bench_nt_xent.py's GPU_SIZES include 65536; the largest case
#: (2^20) is its own test. A dry run's sizes are tiny (its GPU_SIZES there: 32, 48).
TARGET_ROWS = {False: "65536", True: "48"}
DRY_NOTE = "dry run: CPU, Triton interpreter, tiny sizes; no GPU figure"


def read_lines(path: Path) -> tuple[list[dict], int]:
    """The JSON objects of a JSON-lines file, and how many lines did not parse."""
    if not path.is_file():
        return [], 0
    records, bad = [], 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def _params(nodeid: str) -> list[str]:
    return nodeid.partition("[")[2].rstrip("]").split("-") if "[" in nodeid else []


def steps_and_cases(records: list[dict]) -> tuple[dict, dict]:
    """({step: status record}, {step: {"collected": set, "cases": {nodeid: line}}})."""
    plan = next((r for r in reversed(records) if r.get("event") == "plan"), {})
    steps = {s["step"]: {"step": s["step"], "status": "not reached",
                         "planned_s": s.get("planned_s"), "deadline_s": s.get("deadline_s")}
             for s in plan.get("steps", []) if isinstance(s, dict) and "step" in s}
    cases: dict[str, dict] = {}
    for r in records:
        event, step = r.get("event"), str(r.get("step", "?"))
        if event == "step-start":
            steps.setdefault(step, {"step": step}).update(
                status="cut off (the script ended during it)", limit_s=r.get("limit_s"))
        elif event == "step":
            steps.setdefault(step, {"step": step}).update(
                {k: v for k, v in r.items() if k not in ("event",)})
        elif event == "collected":
            c = cases.setdefault(step, {"collected": set(), "cases": {}})
            new = [n for n in r.get("nodeids") or [] if n not in c["collected"]]
            c.setdefault("order", []).extend(new)
            c["collected"].update(new)
        elif event == "case" and "nodeid" in r:
            cases.setdefault(step, {"collected": set(), "cases": {}})["cases"][r["nodeid"]] = r
    return steps, cases


def counts(step_cases: dict) -> dict:
    """passed / failed / skipped / interrupted / not reached of one step's cases."""
    by_status: dict[str, list[str]] = {}
    for nodeid, line in step_cases["cases"].items():
        by_status.setdefault(line.get("status", "?"), []).append(nodeid)
    not_reached = sorted(step_cases["collected"] - set(step_cases["cases"]))
    failed = sorted(by_status.get("failed", []) + by_status.get("error", []))
    return {
        "collected": len(step_cases["collected"]),
        "passed": len(by_status.get("passed", [])) + len(by_status.get("xfailed", [])),
        "failed": len(failed), "skipped": len(by_status.get("skipped", [])),
        "interrupted": len(by_status.get("interrupted", [])), "not_reached": len(not_reached),
        "failed_cases": [{"nodeid": n, "error": (step_cases["cases"][n].get("error") or "")[-600:]}
                         for n in failed[:40]],
        "interrupted_cases": by_status.get("interrupted", [])[:40],
        "not_reached_cases": not_reached[:40],
    }


def _bench(line: dict) -> dict:
    return (line.get("benchmark") or {}).get("extra_info") or {}


def _finished(line: dict | None) -> bool:
    return bool(line) and line.get("status") == "passed" and "median_s" in _bench(line)


def _correct(line: dict) -> bool | None:
    ok = (_bench(line).get("correctness") or {}).get("ok")
    return None if ok is None else bool(ok)


def _case_state(line: dict | None) -> str:
    if line is None:
        return "not reached"
    if _finished(line):
        return "finished"
    return line.get("status", "?")


def nt_xent_summary(step_cases: dict) -> dict:
    """{2N or "largest": {variant: case, "triton_over_<variant>": comparison}}."""
    out: dict[str, dict] = {}
    lines = step_cases["cases"]
    order = step_cases.get("order", [])
    for nodeid in order + sorted(set(lines) - set(order)):
        params = _params(nodeid)
        if "largest" in nodeid:
            size, variant = "largest", "triton-bf16"
        elif len(params) >= 3 and params[-1].isdigit():
            size, variant = params[-1], "-".join(params[:-1])
        else:
            continue
        line = lines.get(nodeid)
        info = _bench(line) if line else {}
        case = {"state": _case_state(line)}
        if _finished(line):
            case.update({k: info.get(k) for k in ("two_n", "median_s", "peak_memory_bytes",
                                                  "time_over_floor", "floor_s")})
            case["correct"] = _correct(line)
            case["correctness"] = info.get("correctness")
        elif line and line.get("error"):
            case["error"] = line["error"][-300:]
        out.setdefault(size, {})[variant] = case
    for cases in out.values():
        triton = cases.get("triton-bf16", {})
        for base in ("eager-bf16", "eager-fp32-strict"):
            other = cases.get(base, {})
            if triton.get("state") == other.get("state") == "finished":
                cases[f"triton_over_{base}"] = _speedup(other["median_s"], triton["median_s"],
                                                        triton.get("correct"),
                                                        other.get("peak_memory_bytes"),
                                                        triton.get("peak_memory_bytes"))
    return out


def _speedup(base_s, fast_s, correct, base_mem=None, fast_mem=None) -> dict:
    out = {"speedup": base_s / fast_s if fast_s else None, "counts": correct is True}
    if base_mem and fast_mem is not None:
        out["memory_ratio"] = fast_mem / base_mem
    if correct is not True:
        out["note"] = ("void: the faster variant's results are out of tolerance"
                       if correct is False else "void: no correctness recorded")
    return out


def encoder_summary(steps: list[dict]) -> dict:
    """{dtype: {variant: {block: case}, "triton_over_<variant>": comparison over the blocks
    both finished}} from the encoder and compile steps' cases."""
    out: dict[str, dict] = {}
    lines = {n: line for s in steps for n, line in s["cases"].items()}
    for nodeid in sorted(set(lines).union(*(s["collected"] for s in steps))):
        line = lines.get(nodeid)
        params = _params(nodeid)
        if len(params) < 4 or params[0] != "cuda":
            continue
        block, variant, dtype = params[1], "-".join(params[2:-1]), params[-1]
        info = _bench(line) if line else {}
        case = {"state": _case_state(line)}
        if _finished(line):
            case.update(median_s=info["median_s"], peak_memory_bytes=info.get("peak_memory_bytes"),
                        correct=_correct(line),
                        failing=(info.get("correctness") or {}).get("failing"))
        out.setdefault(dtype, {}).setdefault(variant, {})[block] = case
    for variants in out.values():
        triton = variants.get("triton", {})
        for name in [v for v in variants if v != "triton"]:
            other = variants[name]
            common = sorted(b for b in triton if b in other and triton[b]["state"] ==
                            other[b]["state"] == "finished")
            if not common:
                continue
            correct = all(triton[b].get("correct") is True for b in common) or (
                None if all(triton[b].get("correct") is not False for b in common) else False)
            cmp = _speedup(sum(other[b]["median_s"] for b in common),
                           sum(triton[b]["median_s"] for b in common), correct,
                           max(other[b].get("peak_memory_bytes") or 0 for b in common),
                           max(triton[b].get("peak_memory_bytes") or 0 for b in common))
            cmp["blocks"] = common
            variants[f"triton_over_{name}"] = cmp
    return out


def _verdict(target: str, value, ok, reason: str = "") -> dict:
    if value is None:
        return {"target": target, "status": "not measured", "value": None, "reason": reason}
    return {"target": target, "status": "met" if ok else "not met", "value": value,
            "reason": reason}


def _ratio_target(target, cmp, pred, missing, blocks=None) -> dict:
    if cmp is None:
        return _verdict(target, None, False, missing)
    if blocks and cmp.get("blocks") != blocks:
        return _verdict(target, None, False,
                        f"only blocks {cmp.get('blocks')} finished in both variants "
                        f"(ratio over them: {cmp.get('speedup'):.3g})")
    if not cmp["counts"]:
        return _verdict(target, cmp["speedup"], False, cmp.get("note", ""))
    return _verdict(target, cmp["speedup"], pred(cmp["speedup"]))


def _missing(case: dict | None, what: str) -> str:
    if not case:
        return f"{what}: not reached"
    state = case.get("state")
    return f"{what}: {state}" + (f" ({case['error'][-200:]})" if case.get("error") else "")


def targets(summary: dict, dry_run: bool) -> dict:
    """The project's GPU targets, each met / not met / not measured with the reason."""
    skip = summary.get("triton_skipped")
    nt = summary.get("nt_xent", {})
    mid, top = nt.get(TARGET_ROWS[dry_run], {}), nt.get("largest", {})
    triton_mid = mid.get("triton-bf16")
    enc = summary.get("encoder", {}).get("bf16", {})
    blocks = ["3"] if dry_run else ["1", "2", "3"]
    out = {}
    floor = (triton_mid or {}).get("time_over_floor")
    if triton_mid and triton_mid.get("state") == "finished" and floor is None:
        out["nt_xent_65536_within_2x_floor"] = _verdict(
            "NT-Xent bf16 D=128 2N=65536 time <= 2x its floor", None, False,
            "no floor: the SFU rate is unknown on this machine")
    elif triton_mid and triton_mid.get("state") == "finished":
        ok = triton_mid.get("correct") is True
        out["nt_xent_65536_within_2x_floor"] = _verdict(
            "NT-Xent bf16 D=128 2N=65536 time <= 2x its floor", floor, ok and floor <= 2,
            "" if ok else "void: triton's results are out of tolerance")
    else:
        out["nt_xent_65536_within_2x_floor"] = _verdict(
            "NT-Xent bf16 D=128 2N=65536 time <= 2x its floor", None, False,
            skip or _missing(triton_mid, "triton 2N=65536"))
    out["nt_xent_65536_5x_eager"] = _ratio_target(
        "NT-Xent bf16 D=128 2N=65536 triton >= 5x eager", mid.get("triton_over_eager-bf16"),
        lambda v: v >= 5, skip or _missing(triton_mid, "triton 2N=65536") + "; "
        + _missing(mid.get("eager-bf16"), "eager 2N=65536"))
    big = top.get("triton-bf16")
    if big and big.get("state") == "finished":
        c = big.get("correctness") or {}
        sane = c.get("finite") is True and (c.get("random_unit") or {}).get("ok") is True
        out["nt_xent_2^20_finite_and_sane"] = _verdict(
            "NT-Xent bf16 D=128 2N=2^20 completes, loss and gradients finite and sane",
            (c.get("random_unit") or {}).get("loss_error"), sane,
            "loss error against log(2N-1) + 1/(2 D tau^2); gradient size ratio checked")
    else:
        out["nt_xent_2^20_finite_and_sane"] = _verdict(
            "NT-Xent bf16 D=128 2N=2^20 completes, loss and gradients finite and sane", None,
            False, skip or _missing(big, "triton 2N=2^20"))
    for key, text, variant, pred in (
            ("encoder_1.5x_eager", "encoder bf16 batch 256 fwd+bwd triton >= 1.5x eager",
             "eager", lambda v: v >= 1.5),
            ("encoder_1.15x_compile_cudagraphs",
             "encoder bf16 batch 256 fwd+bwd triton >= 1.15x torch.compile (CUDA graphs)",
             "compile-cudagraphs", lambda v: v >= 1.15)):
        out[key] = _ratio_target(text, enc.get(f"triton_over_{variant}"), pred,
                                 skip or f"triton and {variant} finished no block in common",
                                 blocks)
    cmp = enc.get("triton_over_eager")
    mem_target = "encoder bf16 batch 256 triton peak memory <= 0.5x eager's"
    if cmp is None or "memory_ratio" not in cmp:
        out["encoder_half_eager_memory"] = _verdict(mem_target, None, False,
                                                    skip or "triton and eager finished no block in common")
    else:
        out["encoder_half_eager_memory"] = _ratio_target(
            mem_target, dict(cmp, speedup=cmp["memory_ratio"]), lambda v: v <= 0.5, "", blocks)
    out["cuda_tests_pass"] = _tests_target(summary)
    if dry_run:
        for key, v in out.items():
            out[key] = {"target": v["target"], "status": "not measured", "reason": DRY_NOTE,
                        "dry_run_verdict": {k: v[k] for k in ("status", "value", "reason")}}
    return out


def _tests_target(summary: dict) -> dict:
    text = "every CUDA test in the subset passes"
    steps = [summary["steps"].get(s, {}) for s in TEST_STEPS]
    skipped = [s.get("reason") for s in steps if s.get("status") == "skipped"]
    if skipped:
        return _verdict(text, None, False, f"skipped: {skipped[0]}")
    c = [summary["cases"].get(s) for s in TEST_STEPS]
    total = {k: sum(x[k] for x in c if x) for k in ("collected", "passed", "failed",
                                                    "skipped", "interrupted", "not_reached")}
    value = f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped"
    if total["failed"]:
        return _verdict(text, value, False, f"{total['failed']} failed")
    if any(x is None for x in c):
        missing = [s for s, x in zip(TEST_STEPS, c) if x is None]
        return _verdict(text, None, False, f"step {missing[0]} collected nothing (not reached)")
    if total["interrupted"] or total["not_reached"]:
        return _verdict(text, None, False,
                        f"{value}; {total['interrupted']} interrupted and "
                        f"{total['not_reached']} not reached of {total['collected']}")
    return _verdict(text, value, total["passed"] > 0)


def summarize(out: Path, dry_run: bool, expect_cut: str | None = None) -> tuple[dict, list[str]]:
    records, bad = read_lines(out / CASES)
    steps, cases = steps_and_cases(records)
    if str(steps.get("summary", {}).get("status", "")).startswith("cut off"):
        steps["summary"]["status"] = "running"  # this step: it writes what is read here
    problems = [f"{CASES}: {bad} line(s) do not parse"] if bad else []
    summary = {"dry_run": dry_run, "malformed_lines": bad, "steps": steps,
               "cases": {s: counts(c) for s, c in cases.items()}}
    try:
        summary["env"] = json.loads((out / "env.json").read_text())
    except (OSError, ValueError) as err:
        problems.append(f"env.json missing or unreadable: {err}")
        summary["env"] = {}
    summary["triton_skipped"] = summary["env"].get("triton_skip_reason") or None
    gpu = summary["env"].get("gpu")
    summary["note"] = (DRY_NOTE if dry_run else f"measured on {gpu}" if gpu else
                       "no CUDA GPU was visible: nothing was measured on a GPU")
    summary["nt_xent"] = nt_xent_summary(cases.get("nt_xent", {"collected": set(), "cases": {}}))
    summary["encoder"] = encoder_summary([cases[s] for s in ("encoder", "compile") if s in cases])
    summary["targets"] = targets(summary, dry_run)
    for name, step in steps.items():
        status = step.get("status")
        if name == "summary":  # this one, running now
            continue
        if name == expect_cut:
            problems += _check_cut(name, step, summary["cases"].get(name))
        elif status != "pass":
            problems.append(f"step {name}: {status}"
                            + (f" ({step['reason']})" if step.get("reason") else ""))
    for name, c in summary["cases"].items():
        if c["failed"]:
            problems.append(f"step {name}: {c['failed']} case(s) failed")
    for name, line in _all_lines(cases):
        if _finished(line) and _correct(line) is False:
            problems.append(f"{line['nodeid']}: results out of tolerance")
        elif dry_run and _finished(line) and _correct(line) is None and name in BENCH_STEPS:
            problems.append(f"{line['nodeid']}: no correctness recorded")
    if not (out / "gpu_check.log").is_file():
        problems.append("gpu_check.log was not written")
    summary["problems"] = problems
    return summary, problems


def _all_lines(cases: dict):
    for name, c in cases.items():
        for line in c["cases"].values():
            yield name, line


def _check_cut(name: str, step: dict, c: dict | None) -> list[str]:
    """The step cut off on purpose must have timed out, kept a finished case and written the
    interrupted one."""
    if step.get("status") != "timeout":
        return [f"step {name} was to be cut off but ended {step.get('status')}"]
    if not c or c["passed"] + c["skipped"] < 1 or c["interrupted"] != 1:
        kept = (c or {}).get("passed"), (c or {}).get("interrupted")
        return [(f"step {name} was cut off but kept {kept[0]} finished and {kept[1]} "
                "interrupted case(s)")]
    return []


def table(summary: dict) -> str:
    """A short human-readable table of steps, comparisons and targets."""
    lines = [f"gpu_check summary ({summary['note']})",
             (f"{'step':9} {'status':12} {'s':>5} {'limit':>5}  passed failed skipped "
              "interrupted not-reached")]
    for name, s in summary["steps"].items():
        c = summary["cases"].get(name)
        tail = (f"  {c['passed']:6} {c['failed']:6} {c['skipped']:7} {c['interrupted']:11} "
                f"{c['not_reached']:11}" if c else "")
        lines.append(f"{name:9} {str(s.get('status'))[:12]:12} {s.get('seconds', '-')!s:>5} "
                     f"{s.get('limit_s', '-')!s:>5}{tail}")
        if s.get("reason"):
            lines.append(f"{'':9} reason: {s['reason']}")
    lines.append("NT-Xent (bf16, D = 128): triton over eager, time over floor, correct")
    for size, cases in summary["nt_xent"].items():
        t = cases.get("triton-bf16", {})
        cmp = cases.get("triton_over_eager-bf16") or {}
        lines.append(f"  2N={size:>8}: triton {t.get('state', '-')}, "
                     f"speed-up {_fmt(cmp.get('speedup'))}, floor x{_fmt(t.get('time_over_floor'))}, "
                     f"correct {t.get('correct', '-')}" + (f" [{cmp['note']}]" if cmp.get("note") else ""))
    for dtype, variants in summary["encoder"].items():
        for key, cmp in variants.items():
            if key.startswith("triton_over_"):
                lines.append(f"  encoder {dtype} {key} blocks {','.join(cmp['blocks'])}: "
                             f"{_fmt(cmp['speedup'])}x, memory {_fmt(cmp.get('memory_ratio'))}"
                             + (f" [{cmp['note']}]" if cmp.get("note") else ""))
    lines.append("targets:")
    for t in summary["targets"].values():
        v = t.get("dry_run_verdict", t)
        lines.append(f"  {t['status']:12} {t['target']} = {_fmt(v.get('value'))}"
                     + (f" ({v['reason']})" if v.get("reason") else "")
                     + (f"  [dry-run verdict: {v['status']}]" if "dry_run_verdict" in t else ""))
    lines.append(f"problems: {len(summary['problems'])}")
    lines += [f"  {p}" for p in summary["problems"][:30]]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else "-" if v is None else str(v)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    out, rest = Path(argv[0]), argv[1:]
    dry_run = "--dry-run" in rest
    expect_cut = rest[rest.index("--expect-cut") + 1] if "--expect-cut" in rest else None
    summary, problems = summarize(out, dry_run, expect_cut)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(table(summary))
    return 1 if problems else 0
