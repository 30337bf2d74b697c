"""Thin V3 node classes, grouped by what users do. Each module exports ``NODES``."""
from __future__ import annotations

import importlib

_MODULES = ("backbone", "sampling", "merging", "schedule", "layout")


def all_nodes() -> list:
    """Collect ``NODES`` from every node module that exists (in a stable order)."""
    out = []
    for name in _MODULES:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue
            raise
        out.extend(mod.NODES)
    return out
