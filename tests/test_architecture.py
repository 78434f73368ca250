"""docs/architecture.md is the map of the ops: every file it names exists, and every op
and backend that dispatch knows has its row."""

import re
from pathlib import Path

from ecgfast import dispatch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def _op_rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `(\w+)` \|", line)
        if m:
            rows[m.group(1)] = line
    return rows


def _module_path(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["ecgfast", "kernels"]:
        return "/".join(["kernels", *parts[2:]]) + ".py"
    if parts[:2] == ["ecgfast", "export"]:
        return "/".join(["export", *parts[2:]]) + ".py"
    return "/".join(parts) + ".py"


def test_every_named_file_exists():
    named = set(re.findall(r"`((?:[\w.-]+/)+[\w.-]+\.(?:py|sh|md))`", DOC.read_text()))
    assert len(named) >= 10
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_op_and_backend_has_its_row():
    rows = _op_rows()
    assert set(rows) == set(dispatch._MODULES), (sorted(rows), sorted(dispatch._MODULES))
    for op, backends in dispatch._MODULES.items():
        row = rows[op]
        for name, module in backends.items():
            assert f"{name} `{_module_path(module)}`" in row, (op, name, module)
        cells = [c.strip() for c in row.strip("|").split("|")]
        reference, tests, bench = cells[2], cells[4], cells[5]
        assert reference.startswith("`ecgfast/ops/"), row
        assert re.search(r"tests/\S*test_\w+\.py", tests), row
        assert re.search(r"benchmarks/bench_\w+\.py", bench), row
