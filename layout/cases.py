"""Benchmark cases in the paper's form (Fig. 1): an image, key boxes per object and a motion caption.

A case folder holds one ``<name>.json`` per case::

    {"image": "ball_roll.png", "caption": "a striped ball rolls to the right", "frames": 16,
     "interpolation": "linear", "objects": [{"phrase": "striped ball", "boxes": [[0, x0, y0, x1, y1], ...]}]}

``image`` is relative to the JSON file and must lie in the case folder (links are resolved first); a case
folder given to the nodes must lie inside an allowed root (ComfyUI's input folder, the shipped cases), see
:func:`confine`. Objects may carry ``"kind"``/``"colour"``: how :func:`make_example_cases` drew them (ignored
by the loader).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .boxes import Layout, parse_layout


@dataclass
class Case:
    """One benchmark case: ``image`` is an IMAGE ``[1, H, W, 3]`` in 0..1."""

    name: str
    image: torch.Tensor
    layout: Layout
    caption: str
    path: Path


class PathRefused(ValueError):
    """A path outside the folders a node may read; the message reveals nothing about the path."""


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def confine(path: str | Path, roots: list[str | Path], what: str,
            where: str = "ComfyUI's input folder or the pack's shipped layout cases") -> Path:
    """``path`` resolved (links followed) if it lies inside one of ``roots``; else :class:`PathRefused`.

    The refusal is the same whether or not the path exists, so a node's errors cannot probe the disk."""
    real = os.path.realpath(os.path.expanduser(str(path)))
    for r in roots:
        if _inside(real, os.path.realpath(str(r))):
            return Path(real)
    raise PathRefused(f"{what} must be inside {where}")


def list_cases(folder: str | Path) -> list[str]:
    """Names (JSON stems) of the cases in ``folder``, sorted."""
    p = Path(folder)
    if not p.is_dir():
        raise ValueError(f"layout case folder {str(p)!r} does not exist")
    return sorted(f.stem for f in p.glob("*.json"))


MAX_LISTED_CASES = 256  # case files looked at in the input folder (the combo lists at most this many)
MAX_CASE_DEPTH = 3      # input/a/b/c/<case>.json at the deepest
MAX_CASE_BYTES = 1 << 20


def _looks_like_case(path: Path) -> bool:
    """A small JSON object with an ``image`` name and ``objects`` (not any JSON file a user keeps in input/)."""
    try:
        if path.stat().st_size > MAX_CASE_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("image"), str) and isinstance(data.get("objects"), list)


def input_case_names(input_dir: str | Path) -> list[str]:
    """Cases in the sub-folders of ComfyUI's input folder, as ``"sub/folder/name"`` (no suffix), sorted.

    Only files whose real path stays inside ``input_dir`` are listed (links out of it are skipped), at most
    :data:`MAX_CASE_DEPTH` folders deep and :data:`MAX_LISTED_CASES` files looked at."""
    root = Path(os.path.realpath(str(input_dir)))
    if not root.is_dir():
        return []
    out, seen = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        depth = len(rel.parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_CASE_DEPTH else []
        if depth == 0:
            continue  # cases live in sub-folders (the input folder itself holds users' images)
        for f in sorted(filenames):
            if not f.endswith(".json") or seen >= MAX_LISTED_CASES:
                continue
            seen += 1
            p = Path(dirpath) / f
            if _inside(os.path.realpath(p), str(root)) and _looks_like_case(p):
                out.append((rel / f[:-5]).as_posix())
    return sorted(out)


def load_image(path: str | Path) -> torch.Tensor:
    """An image file as IMAGE ``[1, H, W, 3]`` float 0..1."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy())[None]


def load_case(folder: str | Path, name: str | int) -> Case:
    """Load case ``name`` (or the ``name``-th case in sorted order) from ``folder``."""
    names = list_cases(folder)
    if not names:
        raise ValueError(f"layout case folder {str(folder)!r} has no .json cases")
    if isinstance(name, int):
        if not 0 <= name < len(names):
            raise ValueError(f"case index {name} is out of range: {str(folder)!r} has {len(names)} cases")
        name = names[name]
    if name not in names:
        raise ValueError(f"case {name!r} not found in {str(folder)!r}; cases: {', '.join(names)}")
    path = Path(folder) / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"case {name!r}: {path.name} is malformed at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict) or "image" not in data:
        raise ValueError(f"case {name!r}: {path.name} needs an 'image' file name")
    image = str(data["image"])
    img_path = confine(path.parent / image, [path.parent], f"case {name!r}: its image", "its case folder")
    if not img_path.is_file():
        raise ValueError(f"case {name!r}: image {image!r} not found in the case folder")
    try:
        layout = parse_layout(data)
    except ValueError as e:
        raise ValueError(f"case {name!r}: {e}") from None
    caption = str(data.get("caption", ""))
    try:
        img = load_image(img_path)
    except (OSError, ValueError):  # PIL: UnidentifiedImageError is an OSError
        raise ValueError(f"case {name!r}: {image!r} is not a readable image (PNG, JPEG, WebP)") from None
    return Case(name, img, layout, caption, path)


# --------------------------------------------------------------------------------------------------
# The example cases shipped with the pack (procedural images; regenerate with make_example_cases)

EXAMPLE_SIZE = (320, 512)  # H, W (DynamiCrafter's 320x512 model)
EXAMPLE_CASES: list[dict] = [
    {"name": "ball_roll", "caption": "a striped ball rolls to the right across the meadow", "seed": 1,
     "interpolation": "linear",
     "objects": [{"phrase": "striped ball", "kind": "ball", "colour": [230, 60, 50],
                  "boxes": [[0, 0.08, 0.55, 0.26, 0.83], [15, 0.70, 0.55, 0.88, 0.83]]}]},
    {"name": "car_approach", "caption": "a red car drives toward the camera and grows larger", "seed": 2,
     "interpolation": "ease_in_out",
     "objects": [{"phrase": "red car", "kind": "car", "colour": [200, 30, 40],
                  "boxes": [[0, 0.40, 0.50, 0.58, 0.66], [15, 0.22, 0.40, 0.70, 0.83]]}]},
    {"name": "kite_exit", "caption": "a kite flies up and out of the frame to the right", "seed": 3,
     "interpolation": "linear",
     "objects": [{"phrase": "kite", "kind": "kite", "colour": [250, 180, 30],
                  "boxes": [[0, 0.50, 0.12, 0.64, 0.44], [11, 0.92, 0.02, 1.06, 0.34], [15, 1.08, -0.05, 1.22, 0.27]]}]},
    {"name": "two_boats", "caption": "two boats sail past each other, the far one drifting away", "seed": 4,
     "interpolation": "linear",
     "objects": [{"phrase": "blue boat", "kind": "boat", "colour": [40, 80, 200],
                  "boxes": [[0, 0.05, 0.52, 0.30, 0.80], [15, 0.62, 0.54, 0.87, 0.82]]},
                 {"phrase": "orange boat", "kind": "boat", "colour": [240, 120, 30],
                  "boxes": [[0, 0.68, 0.22, 0.90, 0.46], [15, 0.12, 0.27, 0.27, 0.43]]}]},
    {"name": "bird_curve", "caption": "a bird swoops down and flies away along a curve", "seed": 5,
     "interpolation": "catmull_rom",
     "objects": [{"phrase": "bird", "kind": "bird", "colour": [90, 60, 160],
                  "boxes": [[0, 0.10, 0.08, 0.30, 0.36], [8, 0.42, 0.42, 0.57, 0.62], [15, 0.76, 0.18, 0.87, 0.33]]}]},
    {"name": "three_balloons", "caption": "two balloons rise, one out of the frame, while the third sways in place",
     "seed": 6, "interpolation": "ease_in_out",
     "objects": [{"phrase": "green balloon", "kind": "balloon", "colour": [60, 190, 80],
                  "boxes": [[0, 0.08, 0.50, 0.22, 0.82], [15, 0.10, 0.06, 0.24, 0.38]]},
                 {"phrase": "pink balloon", "kind": "balloon", "colour": [240, 90, 170],
                  "boxes": [[0, 0.44, 0.55, 0.58, 0.87], [15, 0.48, -0.26, 0.62, 0.06]]},
                 {"phrase": "yellow balloon", "kind": "balloon", "colour": [245, 215, 40],
                  "boxes": [[0, 0.78, 0.50, 0.92, 0.82]]}]},
]


def make_example_cases(folder: str | Path, frames: int = 16) -> list[str]:
    """Write the procedural example cases (PNG + JSON) into ``folder``; returns their names."""
    from .synth import render

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    H, W = EXAMPLE_SIZE
    names = []
    for spec in EXAMPLE_CASES:
        objs = [(o["kind"], o["boxes"][0][1:], o["colour"]) for o in spec["objects"]]
        img = render(H, W, objs, seed=spec["seed"])
        Image.fromarray(img).save(out / f"{spec['name']}.png", optimize=True)
        data = {"image": f"{spec['name']}.png", "caption": spec["caption"], "frames": frames,
                "interpolation": spec["interpolation"],
                "objects": [{k: o[k] for k in ("phrase", "boxes", "kind", "colour")} for o in spec["objects"]]}
        parse_layout(data)  # validate
        text = json.dumps(data, indent=1)
        text = re.sub(r"\[\s*([-0-9.,\s]+?)\s*\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text)
        (out / f"{spec['name']}.json").write_text(text + "\n", encoding="utf-8")
        names.append(spec["name"])
    return names
