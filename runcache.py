"""Values that are the same at every model evaluation of one sampling run, computed once per run.

A :class:`RunCache` lives in the run's ``transformer_options`` from the start of ``OUTER_SAMPLE`` (once per
sampling run, around model loading and sampling) to its end, where a ``finally`` drops it: nothing is kept past
the run. Model code asks it for a named store (:func:`run_store`); anything that changes the weights during the run
(the expert schedule's switches) calls :func:`weights_changed`, which empties every store. Runs whose model carries
weight hooks (conditioning-scheduled LoRAs: the weights change between the cond and uncond passes of one step)
get no cache.

:class:`RowMemo` is the store of a function whose output rows depend only on the same input rows (DynamiCrafter's
Resampler: image tokens from CLIP-vision tokens, one row per video). ComfyUI rebuilds the conditioning tensors at
every step, so rows are matched by value (``torch.equal``: one pass over a small tensor), never by identity.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .comfy_bridge.hooks import WrappersMP, add_wrapper_once

RUN_CACHE_KEY = "i2v_motion.run_cache"

__all__ = ["RUN_CACHE_KEY", "RunCache", "RowMemo", "run_store", "weights_changed", "ensure_run_cache"]


class RunCache:
    """Named stores of one sampling run; :meth:`invalidate` empties them all (the weights changed)."""

    def __init__(self):
        self.stores: dict[str, Any] = {}
        self.invalidations = 0

    def store(self, name: str, factory: Callable[[], Any]) -> Any:
        s = self.stores.get(name)
        if s is None:
            s = self.stores[name] = factory()
        return s

    def invalidate(self) -> None:
        self.invalidations += 1
        self.stores.clear()


class RowMemo:
    """Memo of ``fn(x)[i]`` by the value of ``x[i]`` for a row-wise function ``fn`` (up to ``max_rows`` rows).

    :meth:`__call__` returns ``fn(x)`` computing only the rows not seen before (in one call, in their order); a
    call with no row seen before is exactly ``fn(x)``. ``hits`` / ``misses`` count rows."""

    def __init__(self, max_rows: int = 16):
        self.max_rows = max_rows
        self.rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.hits = 0
        self.misses = 0

    def _find(self, row: torch.Tensor) -> torch.Tensor | None:
        for key, out in self.rows:
            if key.dtype == row.dtype and key.device == row.device and key.shape == row.shape and torch.equal(key, row):
                return out
        return None

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        found = [self._find(x[i]) for i in range(x.shape[0])]
        missing = [i for i, f in enumerate(found) if f is None]
        self.hits += len(found) - len(missing)
        self.misses += len(missing)
        if not missing:
            return torch.stack(found)
        fresh = fn(x if len(missing) == len(found) else x[missing])
        if len(self.rows) + len(missing) <= self.max_rows:
            self.rows += [(x[i].clone(), fresh[j]) for j, i in enumerate(missing)]
        if len(missing) == len(found):
            return fresh
        for j, i in enumerate(missing):
            found[i] = fresh[j]
        return torch.stack(found)


def _cache(transformer_options: dict | None) -> RunCache | None:
    c = transformer_options.get(RUN_CACHE_KEY) if transformer_options else None
    return c if isinstance(c, RunCache) else None


def run_store(transformer_options: dict | None, name: str, factory: Callable[[], Any]) -> Any | None:
    """This run's store ``name`` (made by ``factory`` on first use), or None outside a cached run or with autograd
    on (a cached value would carry one evaluation's graph into another)."""
    c = _cache(transformer_options)
    if c is None or torch.is_grad_enabled():
        return None
    return c.store(name, factory)


def weights_changed(transformer_options: dict | None) -> None:
    """The model's weights changed during the run: empty every store of its cache."""
    c = _cache(transformer_options)
    if c is not None:
        c.invalidate()


def _outer_sample_run_cache(executor, *args, **kwargs):
    guider = executor.class_obj
    patcher = getattr(guider, "model_patcher", None)
    if patcher is not None and any(getattr(patcher, "hook_patches", {}).values()):
        return executor(*args, **kwargs)  # weights may differ per conditioning: nothing may be shared
    topts = guider.model_options.setdefault("transformer_options", {})
    prev = topts.get(RUN_CACHE_KEY)
    cache = topts[RUN_CACHE_KEY] = RunCache()
    try:
        return executor(*args, **kwargs)
    finally:
        cache.stores.clear()
        if prev is None:
            topts.pop(RUN_CACHE_KEY, None)
        else:
            topts[RUN_CACHE_KEY] = prev


def ensure_run_cache(patcher) -> None:
    """Register (once per patcher; clones inherit it) the ``OUTER_SAMPLE`` wrapper giving each run a cache."""
    add_wrapper_once(patcher, WrappersMP.OUTER_SAMPLE, RUN_CACHE_KEY, _outer_sample_run_cache)
