"""Benchmark cases in the paper's form (Fig. 1): an image, key boxes per object and a motion caption.

A case folder holds one ``<name>.json`` per case::

    {"image": "ball_roll.png", "caption": "a striped ball rolls to the right", "frames": 16,
     "interpolation": "linear", "objects": [{"phrase": "striped ball", "boxes": [[0, x0, y0, x1, y1], ...]}]}

``image`` is relative to the JSON file and must lie in the case folder (links are resolved first); a case
folder given to the nodes must lie inside an allowed root (ComfyUI's input folder, the shipped cases), see
:func:`confine`. Objects may carry ``"kind"``/``"colour"``: how ``tests/support/synth.py`` drew the shipped cases
(ignored by the loader).
"""
from __future__ import annotations

import json
import os
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


def load_case(folder: str | Path, name: str | int, roots: list[str | Path] | None = None) -> Case:
    """Load case ``name`` (or the ``name``-th case in sorted order) from ``folder``.

    ``roots``: where the case file may really lie (links followed); a case JSON that is a link out of them is refused
    before it is read, with a message that says nothing of its target or content."""
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
    real = confine(path, roots, f"layout case {name!r}") if roots is not None else path
    try:
        data = json.loads(real.read_text(encoding="utf-8"))
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
