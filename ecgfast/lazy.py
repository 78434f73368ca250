"""Package attributes imported on first use (PEP 562), so that importing a package does not
import what its names need (``ecgfast.export`` and torch, ``ecgfast.data`` and scipy)."""

from __future__ import annotations

import importlib


def lazy_names(package: str, where: dict[str, str], namespace: dict):
    """``(__getattr__, __dir__)`` for ``package``, whose name ``n`` is attribute ``n`` of
    module ``where[n]``, imported on first use and then kept in ``namespace`` (the
    package's ``globals()``). A name that is also one of the package's submodules must be
    imported eagerly instead: importing the submodule sets the package attribute to it."""

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
