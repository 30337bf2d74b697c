"""Where things are in a checkout, for the developer tools and the tests: the one place that knows the layout.

Tools run as scripts have ``tools/`` on ``sys.path`` already (Python puts a script's folder first); pytest gets
``tools/`` and ``tests/`` from ``pyproject.toml``'s ``pythonpath``. What else a tool needs goes through here:
:func:`use_support` (the test support package ``support``: tiny checkpoints, synthetic scenes), :func:`pythonpath`
for child processes, :func:`layout_package` (the pack's pure layout maths without ComfyUI). The pack itself is
imported as ``i2v_motion`` by ``comfy_inproc.bootstrap``, and the hosts are ``host.py``'s.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"
TESTS = REPO / "tests"
SUPPORT = TESTS / "support"
SHARED = REPO.parent / "shared"


def use_support() -> None:
    """Make the test support package importable as ``support`` (and the tools as top-level modules)."""
    for p in (str(TESTS), str(TOOLS)):
        if p not in sys.path:
            sys.path.insert(0, p)


def use_pack_root() -> None:
    """Make the pack's own top-level packages that run without ComfyUI (``sweep``) importable: the checkout's root
    goes *last* on the path, so ComfyUI's top-level modules (``nodes``, ``server`` …) keep winning."""
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))


def pythonpath(env: dict | None = None) -> str:
    """A ``PYTHONPATH`` for a child python that imports the tools and ``support`` (before ``env``'s own)."""
    parts = [str(TOOLS), str(TESTS)]
    old = (env if env is not None else os.environ).get("PYTHONPATH")
    return os.pathsep.join(parts + ([old] if old else []))


def layout_package() -> ModuleType:
    """The pack's pure layout package (torch/numpy/PIL only), imported as ``i2v_layout`` without ComfyUI."""
    if "i2v_layout" in sys.modules:
        return sys.modules["i2v_layout"]
    spec = importlib.util.spec_from_file_location("i2v_layout", REPO / "layout" / "__init__.py",
                                                  submodule_search_locations=[str(REPO / "layout")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["i2v_layout"] = mod
    spec.loader.exec_module(mod)
    return mod
