"""Render result files as Markdown tables for benchmarks/README.md: pytest-benchmark JSON,
and the ahead-of-time compilation reports (``aot-triton-*.json``, one row per kernel,
dtype, configuration and target).

    python benchmarks/report.py benchmarks/results/encoder-cpu.json
"""

from __future__ import annotations

import json
import sys

KEYS = [  # (extra_info key, column title, format)
    ("windows_per_s", "windows/s", "{:.1f}"),
    ("model_flops_per_s", "model GFLOP/s", lambda v: f"{v / 1e9:.1f}"),
    ("fraction_of_gemm", "of fp32 GEMM", lambda v: f"{100 * v:.0f} %"),
    ("gemm_flops_per_s", "GEMM GFLOP/s", lambda v: f"{v / 1e9:.1f}"),
    ("peak_memory_bytes", "peak memory", lambda v: f"{v / 2**20:.0f} MiB"),
]


def _fmt(fmt, value):
    return fmt(value) if callable(fmt) else fmt.format(value)


def render(path: str) -> str:
    with open(path) as f:
        data = json.load(f)
    if "rows" in data:
        return render_aot(path, data)
    machine = data.get("machine_info", {})
    lines = [
        (
            f"`{path}`: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
            f"{data.get('datetime', '?')[:10]}"
        ),
        "",
    ]
    benches = data["benchmarks"]
    keys = [k for k in KEYS if any(k[0] in b["extra_info"] for b in benches)]
    lines.append("| benchmark | median | " + " | ".join(t for _, t, _ in keys) + " |")
    lines.append("|---|---:|" + "---:|" * len(keys))
    for b in benches:
        cells = [
            _fmt(fmt, b["extra_info"][k]) if k in b["extra_info"] else ""
            for k, _, fmt in keys
        ]
        median = b["stats"]["median"]
        lines.append(f"| `{b['name']}` | {median * 1e3:.1f} ms | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_aot(path: str, data: dict) -> str:
    """One AOT report: the version and host, then a row per compile."""
    lines = [
        f"`{path}`: Triton {data['triton']}, {data['measured']}, {data['host']}",
        "",
        (
            "| kernel | dtype | config | target | warps | stages | registers | spill (B) "
            "| LDL/STL | shared (B) | MMA |"
        ),
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        mma = ", ".join(r["mma_instructions"]) if r["tensor_core"] else "no"
        lines.append(
            f"| {r['kernel']} | {r['dtype']} | {r['config']} | {r['target']} "
            f"| {r['num_warps']} | {r['num_stages']} | {r['registers']} | {r['stack_bytes']} "
            f"| {r['local_loads']}/{r['local_stores']} | {r['shared_bytes']} | {mma} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(render(p))
        print()
