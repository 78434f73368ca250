"""docs/architecture.md is the map of the ops: every file it names exists, every op and
backend that dispatch knows has its row, and one name runs through every layer of an op
(its reference, backends, the modules they use, tests and benchmark carry the op's name)."""

import ast
import re
from pathlib import Path

import pytest

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


def _package_modules(path: Path) -> set[str]:
    """The ecgfast.ops / ecgfast.kernels modules that the file at ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if (ROOT / _module_path(n)).exists()
                  and n.split(".")[:2] in (["ecgfast", "ops"], ["ecgfast", "kernels"])}
    return found


@pytest.mark.parametrize("op", sorted(dispatch._MODULES))
def test_one_name_per_op_everywhere(op):
    """``op``'s reference, each backend and every ops/kernels module they use (but what all
    ops share: the backend declaration, ops/backend.py, and the kernels' _common.py) are
    files named after the op; so are the tests and the
    benchmark its row names, and the reference tests (tests/ops/test_<op>.py), the Triton
    tests (tests/kernels/test_<op>_triton*.py) and benchmarks/bench_<op>.py exist."""
    cells = [c.strip() for c in _op_rows()[op].strip("|").split("|")]
    named = lambda cell: re.findall(r"`([\w./-]+\.py)`", cell)
    files = {p for p in named(cells[2]) + named(cells[3])}
    todo = [_module_path(m) for m in dispatch._MODULES[op].values()]
    while todo:
        path = todo.pop()
        if path not in files:
            files.add(path)
        todo += [p for p in map(_module_path, _package_modules(ROOT / path)) if p not in files]
    files -= {"ecgfast/ops/backend.py", "kernels/_common.py"}
    assert all(op in Path(f).name for f in files), sorted(f for f in files if op not in f)
    tests, benches = named(cells[4]), named(cells[5])
    assert all(op in Path(t).name for t in tests), tests
    assert f"tests/ops/test_{op}.py" in tests
    if "triton" in dispatch._MODULES[op]:
        assert any(re.fullmatch(rf"tests/kernels/test_{op}_triton\w*\.py", t) for t in tests)
    assert f"benchmarks/bench_{op}.py" in benches
    on_disk = {str(p.relative_to(ROOT)) for p in ROOT.glob(f"tests/**/test_{op}*.py")}
    assert on_disk <= set(tests), f"test files of {op} missing from its row: {on_disk - set(tests)}"
