"""The layer list of docs/architecture.md holds for the whole package: every module (but the
package's own ``__init__.py``, which imports nothing) is placed by the list and imports
only what the list places below it, module-level and function-level imports alike, so
following a training batch, an export or a prepare never returns upward."""

import ast
from pathlib import Path

from training_path import layer_entries, layer_of  # benchmarks/, on pytest's pythonpath

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
CHECKED = sorted(
    [p.relative_to(ROOT / "ecgfast").as_posix() for p in (ROOT / "ecgfast").rglob("*.py")
     if p != ROOT / "ecgfast" / "__init__.py"]
    + [p.relative_to(ROOT).as_posix() for top in ("kernels", "export")
       for p in (ROOT / top).rglob("*.py")])


def _file(module: str) -> Path:
    return ROOT / module if module.split("/")[0] in ("kernels", "export") else ROOT / "ecgfast" / module


def _imports(path: Path) -> set[str]:
    """The ecgfast modules ``path`` imports, as paths under the package folders."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "ecgfast" or len(parts) < 2:
                continue
            for k in range(len(parts), 1, -1):  # the longest prefix that is a file or package
                rel = "/".join(parts[1:k])
                for place in (f"{rel}.py", f"{rel}/__init__.py"):
                    top = place.split("/")[0]
                    base = ROOT if top in ("kernels", "export") else ROOT / "ecgfast"
                    if (base / place).is_file():
                        found.add(place)
                        break
                else:
                    continue
                break
    return found


def test_each_checked_module_imports_only_what_lies_below_it():
    entries = layer_entries(DOC)
    upward = []
    for module in CHECKED:
        mine = layer_of(module, entries)
        assert mine is not None, f"docs/architecture.md does not place {module}"
        for target in _imports(_file(module)):
            theirs = layer_of(target, entries)
            package = target.removesuffix("__init__.py")
            same_package = target.endswith("/__init__.py") and module.startswith(package)
            if theirs is not None and theirs < mine and not same_package:
                upward.append(f"{module} -> {target}")
    assert not upward, upward
