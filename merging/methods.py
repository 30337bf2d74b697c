"""Merge methods declared as data: each is a sparsification of every task vector × a consensus over them,
with typed parameters (as mergekit and sd-mecha declare theirs), instead of an ``if`` ladder.

- sparsify ``none``: the weighted task vectors as they are; ``dare``: each through DARE (drop with probability p,
  rescale the kept part by 1/(1-p), masks seeded per key); ``magnitude``: TIES' trim to the top ``density``
  fraction of each weighted task vector by magnitude.
- consensus ``sum``: task arithmetic; ``ties``: elect a sign per element, disjoint mean of the agreeing values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Param", "MergeMethod", "METHODS", "PARAMS", "method_help", "get_method"]


@dataclass(frozen=True)
class Param:
    """A typed parameter of merge methods: its range is checked before anything is built."""

    name: str
    kind: type
    default: Any
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    help: str = ""

    def check(self, value: Any) -> Any:
        v = self.kind(value)
        if self.kind is float and v != v:  # NaN
            raise ValueError(f"{self.name} must be a number; got {value}")
        bad_lo = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        bad_hi = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
        if bad_lo or bad_hi:
            lb = "(" if self.lo_open else "["
            hb = ")" if self.hi_open else "]"
            raise ValueError(f"{self.help or self.name} must be in {lb}{self.lo:g}, {self.hi:g}{hb}; got {value}")
        return v


PARAMS: dict[str, Param] = {p.name: p for p in (
    Param("p", float, 0.7, 0.0, 1.0, hi_open=True,
          help="DARE drop rate p (the kept part is rescaled by 1/(1-p))"),
    Param("seed", int, 0, help="DARE mask seed"),
    Param("keep_1d", bool, True, help="leave 1-D tensors undropped"),
    Param("density", float, 0.2, 0.0, 1.0, lo_open=True, help="TIES density (top-k fraction)"),
)}


@dataclass(frozen=True)
class MergeMethod:
    """One merge method: how each weighted task vector is sparsified, how they are combined, what it reads."""

    name: str
    sparsify: str      # "none" | "dare" | "magnitude"
    consensus: str     # "sum" | "ties"
    params: tuple[str, ...]
    help: str

    @property
    def uses_dare(self) -> bool:
        return self.sparsify == "dare"

    @property
    def trim_density(self) -> bool:
        return self.sparsify == "magnitude"


METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    MergeMethod("sum", "none", "sum", (), "task arithmetic."),
    MergeMethod("dare", "dare", "sum", ("p", "seed", "keep_1d"), "each τ through DARE (drop p, rescale 1/(1-p))."),
    MergeMethod("ties", "magnitude", "ties", ("density",),
                "trim each wᵢτᵢ to its top-k magnitudes, elect a sign per element, disjoint mean."),
    MergeMethod("dare_ties", "dare", "ties", ("p", "seed", "keep_1d"),
                "DARE instead of the trim, then sign election and disjoint mean."),
)}


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown merge method {name!r}; expected one of {', '.join(METHODS)}") from None


def method_help() -> str:
    """One line naming every method, for the node's tooltip."""
    return " ".join(f"{m.name}: {m.help}" for m in METHODS.values())
