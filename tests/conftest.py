"""Collection in an environment without PyTorch (the inference install, ``pip install
./serving``; .ci/run runs ``pytest -m inference`` there): only the test modules that declare
``inference`` tests (``pytest.mark.inference``; such a module imports no torch) and the
folders that hold one are collected, so that the others' torch imports do not break the
run. With PyTorch installed everything is collected as usual."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HAS_TORCH = importlib.util.find_spec("torch") is not None
MARK = "mark.inference"


def _declares_inference(path: Path) -> bool:
    if path.is_dir():
        return any(_declares_inference(p) for p in path.rglob("test_*.py"))
    return MARK in path.read_text(encoding="utf-8", errors="replace")


def pytest_ignore_collect(collection_path: Path, config):
    if HAS_TORCH:
        return None
    if collection_path.is_dir() or (collection_path.suffix == ".py"
                                    and collection_path.name.startswith(("test_", "bench_"))):
        return None if _declares_inference(collection_path) else True
    return None
