"""Thin V3 node classes, grouped by what users do. Each module exports ``NODES``."""
from __future__ import annotations

import functools
import importlib
import inspect

from comfy_api.latest import io

_MODULES = ("backbone", "sampling", "merging", "schedule", "layout")
_LISTED = 12


def _combo_choices(node_cls) -> dict[str, list]:
    """Combo inputs of a node and their current options (file lists are re-read each call)."""
    schema = node_cls.define_schema()
    return {i.id: list(i.options) for i in schema.inputs if isinstance(i, io.Combo.Input) and i.options}


def check_combos(node_cls, kwargs: dict) -> None:
    """ValueError naming an input whose value is not one of its choices (ComfyUI 0.3.75 does not check V3 combos)."""
    for name, options in _combo_choices(node_cls).items():
        if name in kwargs and isinstance(kwargs[name], str) and kwargs[name] not in options:
            shown = ", ".join(map(str, options[:_LISTED])) + (f", … ({len(options)} in all)" if len(options) > _LISTED else "")
            raise ValueError(f"{node_cls.__name__}: {name} = {kwargs[name]!r} is not one of its choices: {shown}")


def _with_combo_checks(node_cls):
    """Wrap ``execute`` so unknown combo values are refused by name before the node runs."""
    if getattr(node_cls, "_i2v_checked", False):
        return node_cls
    run = node_cls.execute.__func__
    if inspect.iscoroutinefunction(run):  # pragma: no cover - the pack's nodes are synchronous
        return node_cls

    @functools.wraps(run)
    def execute(cls, *args, **kwargs):
        check_combos(cls, kwargs)
        return run(cls, *args, **kwargs)

    node_cls.execute = classmethod(execute)
    node_cls._i2v_checked = True
    return node_cls


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
        out.extend(_with_combo_checks(n) for n in mod.NODES)
    return out
