"""Wrapper and callback registration on a ModelPatcher (once per patcher; clones inherit them), and attachments."""
from __future__ import annotations

from typing import Any, Callable

from comfy.patcher_extension import CallbacksMP, WrappersMP

__all__ = ["WrappersMP", "CallbacksMP", "add_wrapper_once", "add_callback_once", "get_attachment"]


def add_wrapper_once(patcher: Any, kind: str, key: str, fn: Callable) -> None:
    """Add wrapper ``fn`` of ``kind`` under ``key`` unless ``patcher`` has it already (clones inherit wrappers)."""
    if fn not in patcher.wrappers.get(kind, {}).get(key, []):
        patcher.add_wrapper_with_key(kind, key, fn)


def add_callback_once(patcher: Any, kind: str, key: str, fn: Callable) -> None:
    """Add callback ``fn`` of ``kind`` under ``key`` unless ``patcher`` has it already."""
    if fn not in patcher.callbacks.get(kind, {}).get(key, []):
        patcher.add_callback_with_key(kind, key, fn)


def get_attachment(patcher: Any, key: str) -> Any | None:
    """An attachment of ``patcher`` (None where absent, or for objects that are not ModelPatchers)."""
    fn = getattr(patcher, "get_attachment", None)
    return fn(key) if callable(fn) else None
