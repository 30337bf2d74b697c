"""The test side of workflows: ``*.expect.json`` sidecars, tiny stand-in checkpoints, shipped input pictures.

The UI -> API conversion itself lives in the pack's ``sweep/workflow.py`` (the sweep runner needs it at run time);
its names are re-exported here so tools and tests keep ``import workflow``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # for the pack's ``sweep`` package; last, so ComfyUI's own top-level modules win
    sys.path.append(str(_REPO))

from sweep.workflow import *  # noqa: E402,F401,F403
from sweep.workflow import _entry_type, find_nodes  # noqa: E402,F401

EXPECT_DIR = Path(__file__).resolve().parent.parent / "tests" / "integration" / "expect"


def load_expect(path: Path | str) -> dict:
    """The ``<name>.expect.json`` sidecar of a workflow ({} when absent; format in tests/integration): beside the
    file, else in ``tests/integration/expect/`` (where the example workflows' sidecars live, so that
    ``example_workflows/`` holds only loadable workflows — ComfyUI's template browser lists every .json there)."""
    path = Path(path)
    side = path.with_name(path.stem + ".expect.json")
    if not side.is_file():
        side = EXPECT_DIR / (path.stem + ".expect.json")
    return json.loads(side.read_text()) if side.is_file() else {}


PACK_LOADER = "I2VMotion_LoadDynamiCrafter"


def tiny_models(prompt: dict, expect: dict) -> dict[str, dict]:
    """Tiny checkpoints a run on random weights needs: ``{"<models sub-path>": make_tiny_checkpoint kwargs}``.

    ``expect["tiny_models"]`` when given; else one per ``ckpt_name`` of the pack's loader, under that very
    name in ``checkpoints/`` (variant: the loader's, or "256" when the name says so, else "512").
    """
    if "tiny_models" in expect:
        return dict(expect["tiny_models"])
    out: dict[str, dict] = {}
    for nid in find_nodes(prompt, PACK_LOADER):
        inputs = prompt[nid]["inputs"]
        name, variant = inputs.get("ckpt_name"), inputs.get("variant", "auto")
        if isinstance(name, str):
            if variant == "auto":
                variant = "256" if "256" in Path(name).stem else "512"
            out[f"checkpoints/{name}"] = {"variant": variant}
    return out


def input_files(wf_path: Path | str, prompt: dict, expect: dict) -> dict[str, Path | None]:
    """``LoadImage`` file names of a prompt mapped to the shipped file (``expect["inputs"]`` paths are
    relative to the workflow; else a same-named file beside it or in ``inputs/``), or None if none ships."""
    base = Path(wf_path).resolve().parent
    mapping = expect.get("inputs") or {}
    out: dict[str, Path | None] = {}
    for nid in find_nodes(prompt, "LoadImage"):
        name = prompt[nid]["inputs"].get("image")
        if not isinstance(name, str):
            continue
        cands = ([base / mapping[name]] if name in mapping else []) + [base / name, base / "inputs" / name]
        out[name] = next((c for c in cands if c.is_file()), None)
    return out
