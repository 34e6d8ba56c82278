"""Lazy package exports (PEP 562): ``import reslab.engine`` does no work until a name is used."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable, list[str]]:
    """Returns ``(__getattr__, __dir__, __all__)`` for a package whose names live in submodules.

    Args:
        package: the package's ``__name__``.
        exports: public name -> submodule (relative, without the leading dot).
    """
    names = sorted(exports)

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return names

    return __getattr__, __dir__, names
