"""V3 node-schema compatibility: what the pack adds to its node classes where a host's ``comfy_api`` lacks it.

- :func:`with_combo_checks` — ComfyUI 0.3.75 does not check a V3 combo value against its options; ``execute`` is
  wrapped so an unknown value is refused by name before the node runs (newer hosts check too; same message).
- :func:`with_search_aliases` — words the node search matches, on hosts whose ``io.Schema`` has
  ``search_aliases`` (0.33+); others get none.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

from comfy_api.latest import io

from .probes import schema_has_field

__all__ = ["HAS_SEARCH_ALIASES", "check_combos", "with_combo_checks", "with_search_aliases"]

HAS_SEARCH_ALIASES = schema_has_field("search_aliases")
_LISTED = 12


def _combo_choices(node_cls) -> dict[str, list]:
    """Combo inputs of a node and their current options (file lists are re-read each call)."""
    schema = node_cls.define_schema()
    return {i.id: list(i.options) for i in schema.inputs if isinstance(i, io.Combo.Input) and i.options}


def check_combos(node_cls, kwargs: dict) -> None:
    """ValueError naming an input whose value is not one of its choices."""
    for name, options in _combo_choices(node_cls).items():
        if name in kwargs and isinstance(kwargs[name], str) and kwargs[name] not in options:
            shown = ", ".join(map(str, options[:_LISTED])) + (f", … ({len(options)} in all)" if len(options) > _LISTED else "")
            raise ValueError(f"{node_cls.__name__}: {name} = {kwargs[name]!r} is not one of its choices: {shown}")


def with_combo_checks(node_cls):
    """``node_cls`` with ``execute`` refusing unknown combo values by name before the node runs (once)."""
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


def with_search_aliases(node_cls, aliases_for: Callable[[str], list[str]]):
    """``node_cls`` whose schema carries ``aliases_for(node_id)`` as search aliases where the host has the field."""
    if not HAS_SEARCH_ALIASES or getattr(node_cls, "_i2v_aliased", False):
        return node_cls
    define = node_cls.define_schema.__func__

    @functools.wraps(define)
    def define_schema(cls):
        schema = define(cls)
        if not schema.search_aliases:
            schema.search_aliases = list(aliases_for(schema.node_id))
        return schema

    node_cls.define_schema = classmethod(define_schema)
    node_cls._i2v_aliased = True
    return node_cls
