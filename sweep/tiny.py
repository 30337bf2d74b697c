"""Tiny random-weight stand-in checkpoints, so a sweep (like ``tools/demo.py``) runs where no real ones are.

A developer and demo feature: the videos are noise, but every node, server and metric runs for real. It needs
the repository's ``tools/`` and the pack's fixture maker (a ``git clone`` has them; a Registry install does not,
and says so). Which checkpoints a workflow needs, and the small sizes it runs at on them, come from the spec's
``tiny: {models, overrides}`` or the workflow's ``.expect.json`` sidecar (``tests/integration/expect/``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .comfy import PACK_DIR
from .spec import Spec, SpecError

# The one maker of stand-in files (tests/support/standins.py, run with tools/ and tests/ on PYTHONPATH).
_MAKER = r"""
import json, sys
import comfy_inproc
comfy_inproc.bootstrap("cpu")
from support.standins import make_all
make_all(sys.argv[2], json.loads(sys.argv[3]))
"""


def make_tiny_checkpoints(models_root: Path | str, models: dict[str, dict], comfy_dir: Path | str,
                          python: Path | str | None = None) -> list[Path]:
    """Write ``{"<models sub-path>": stand-in spec}`` (``support.standins``: DynamiCrafter, SVD, Wan …) under
    ``models_root`` (skipping files already there), run by ``python`` on the ComfyUI at ``comfy_dir``; returns the
    paths."""
    root = Path(models_root)
    todo = {rel: dict(kw or {}) for rel, kw in models.items() if not (root / rel).is_file()}
    if todo:
        if not (PACK_DIR / "tools" / "comfy_inproc.py").is_file():
            raise SystemExit("tiny stand-in checkpoints need the repository's tools/ (a git clone of the pack); this "
                             f"install lacks {PACK_DIR / 'tools'}: put the workflow's real checkpoints in ComfyUI's "
                             "models folders, or run the sweep from a git clone")
        env = dict(os.environ, I2V_COMFY_DIR=str(Path(comfy_dir).resolve()), OMP_NUM_THREADS=os.environ.get(
            "OMP_NUM_THREADS", "1"))
        env["PYTHONPATH"] = os.pathsep.join([str(PACK_DIR / "tools"), str(PACK_DIR / "tests")]
                                            + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        subprocess.run([str(python or sys.executable), "-c", _MAKER, str(PACK_DIR), str(root), json.dumps(todo)],
                       check=True, env=env)
    return [root / rel for rel in models]


def tiny_settings(spec: Spec) -> dict:
    """``{"models": {...}, "overrides": {...}}`` for the spec's workflow ({} when none are known)."""
    if isinstance(spec.tiny, dict):
        return {"models": spec.tiny.get("models") or {}, "overrides": spec.tiny.get("overrides") or {}}
    side = spec.workflow_path.with_name(spec.workflow_path.stem + ".expect.json")
    if not side.is_file():
        side = PACK_DIR / "tests" / "integration" / "expect" / (spec.workflow_path.stem + ".expect.json")
    if not side.is_file():
        return {}
    expect = json.loads(side.read_text())
    return {"models": expect.get("tiny_models") or {}, "overrides": expect.get("tiny_overrides") or {}}


def prepare(spec: Spec, opts) -> dict:
    """The engine's ``prepare`` hook: when the workflow's checkpoints are missing from the ComfyUI (and the
    spec's ``tiny`` allows it), tiny stand-ins under ``<out>/tiny_models`` and their small-size overrides."""
    if spec.tiny is False or not opts.comfyui:
        return {}
    t = tiny_settings(spec)
    if not t.get("models"):
        if spec.tiny is True:
            raise SpecError(f"{spec.where('tiny')}: tiny: true, but no tiny models are known for "
                            f"{spec.workflow_path.name} (give tiny: {{models, overrides}})")
        return {}
    roots = [Path(opts.comfyui) / "models", *map(Path, opts.model_dirs)]
    missing = [rel for rel in t["models"] if not any((r / rel).is_file() for r in roots)]
    if spec.tiny == "auto" and not missing:
        return {}
    dest = Path(opts.out).resolve() / "tiny_models"
    print(f"[sweep] {', '.join(missing) or 'the checkpoints'} not found in {', '.join(map(str, roots))}: using tiny "
          "random-weight stand-ins (the pipeline runs end to end, the videos are noise) at the workflow's small "
          "CI sizes", file=sys.stderr, flush=True)
    make_tiny_checkpoints(dest, t["models"], opts.comfyui, opts.python)
    return {"model_dirs": [str(dest)], "overrides": t.get("overrides") or {}}
