"""Procedural test scenes: a textured background and simple textured objects drawn in boxes (PIL).

Used to make the benchmark cases shipped in ``example_workflows/layout_cases`` (:func:`make_example_cases`) and
synthetic videos with known boxes for testing the tracker. Deterministic for a given seed.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from i2v_motion.layout.boxes import parse_layout

KINDS: tuple[str, ...] = ("ball", "car", "kite", "boat", "bird", "balloon")


def background(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Sky gradient over a textured meadow with some stones and bushes, ``[H, W, 3]`` uint8."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky = np.array([110, 160, 230]) * (1 - y) + np.array([200, 225, 250]) * y
    horizon = int(height * 0.48)
    img = np.broadcast_to(sky, (height, width, 3)).copy()
    g = np.array([70, 140, 60])
    noise = rng.normal(0, 1, (height // 4 + 1, width // 4 + 1))
    noise = np.kron(noise, np.ones((4, 4)))[:height, :width]
    yy = np.linspace(0, 1, height - horizon)[:, None]
    ground = g * (0.75 + 0.4 * yy)[..., None] + 18 * noise[horizon:, :, None]
    img[horizon:] = ground
    # clouds
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for _ in range(4):
        cx, cy = rng.uniform(0, width), rng.uniform(0.05, 0.35) * height
        for _ in range(5):
            rx, ry = rng.uniform(0.03, 0.07) * width, rng.uniform(0.03, 0.06) * height
            ox, oy = rng.uniform(-0.05, 0.05) * width, rng.uniform(-0.02, 0.02) * height
            d.ellipse([cx + ox - rx, cy + oy - ry, cx + ox + rx, cy + oy + ry], fill=(240, 244, 250))
    for _ in range(14):  # stones and bushes on the meadow
        cx, cy = rng.uniform(0, width), rng.uniform(horizon + 8, height)
        r = rng.uniform(0.01, 0.03) * width
        col = (120, 115, 105) if rng.random() < 0.5 else (40, 100, 40)
        d.ellipse([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=col)
    return np.asarray(im).copy()


def draw_object(d: ImageDraw.ImageDraw, kind: str, box: Sequence[float], colour: Sequence[int]) -> None:
    """Draw an object of ``kind`` filling most of the pixel ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    c = tuple(int(v) for v in colour)
    dark = tuple(int(v * 0.45) for v in c)
    light = tuple(int(255 - (255 - v) * 0.35) for v in c)

    def P(u: float, v: float) -> tuple[float, float]:
        return (x0 + u * w, y0 + v * h)

    if kind == "ball":
        d.ellipse([*P(0.04, 0.04), *P(0.96, 0.96)], fill=c, outline=dark, width=max(1, int(w * 0.03)))
        for i, v in enumerate((0.3, 0.5, 0.7)):
            d.chord([*P(0.1, v - 0.07), *P(0.9, v + 0.07)], 0, 360, fill=light if i % 2 == 0 else dark)
        d.ellipse([*P(0.22, 0.15), *P(0.38, 0.28)], fill=(255, 255, 255))
    elif kind == "car":
        d.rounded_rectangle([*P(0.02, 0.35), *P(0.98, 0.8)], radius=max(1, int(h * 0.1)), fill=c, outline=dark,
                            width=max(1, int(h * 0.03)))
        d.polygon([P(0.2, 0.38), P(0.32, 0.08), P(0.72, 0.08), P(0.84, 0.38)], fill=c, outline=dark)
        d.polygon([P(0.27, 0.36), P(0.35, 0.14), P(0.49, 0.14), P(0.49, 0.36)], fill=(170, 210, 240))
        d.polygon([P(0.53, 0.36), P(0.53, 0.14), P(0.69, 0.14), P(0.78, 0.36)], fill=(170, 210, 240))
        for u in (0.24, 0.76):
            d.ellipse([*P(u - 0.12, 0.62), *P(u + 0.12, 0.98)], fill=(25, 25, 25))
            d.ellipse([*P(u - 0.05, 0.73), *P(u + 0.05, 0.87)], fill=(190, 190, 190))
        d.rectangle([*P(0.9, 0.45), *P(0.97, 0.55)], fill=(255, 240, 120))
    elif kind == "kite":
        d.polygon([P(0.5, 0.02), P(0.95, 0.4), P(0.5, 0.98), P(0.05, 0.4)], fill=c, outline=dark)
        d.polygon([P(0.5, 0.02), P(0.95, 0.4), P(0.5, 0.4)], fill=light)
        d.polygon([P(0.5, 0.98), P(0.05, 0.4), P(0.5, 0.4)], fill=dark)
        d.line([P(0.5, 0.02), P(0.5, 0.98)], fill=(40, 30, 20), width=max(1, int(w * 0.03)))
        d.line([P(0.05, 0.4), P(0.95, 0.4)], fill=(40, 30, 20), width=max(1, int(w * 0.03)))
    elif kind == "boat":
        d.polygon([P(0.02, 0.62), P(0.98, 0.62), P(0.82, 0.95), P(0.18, 0.95)], fill=c, outline=dark)
        d.rectangle([*P(0.1, 0.7), *P(0.9, 0.76)], fill=light)
        d.line([P(0.5, 0.03), P(0.5, 0.62)], fill=(60, 40, 20), width=max(1, int(w * 0.03)))
        d.polygon([P(0.53, 0.05), P(0.9, 0.58), P(0.53, 0.58)], fill=(245, 245, 235), outline=(120, 120, 110))
        d.polygon([P(0.47, 0.15), P(0.12, 0.58), P(0.47, 0.58)], fill=light, outline=dark)
    elif kind == "bird":
        d.polygon([P(0.02, 0.2), P(0.45, 0.5), P(0.3, 0.62)], fill=dark)
        d.polygon([P(0.98, 0.15), P(0.55, 0.5), P(0.72, 0.62)], fill=dark)
        d.ellipse([*P(0.25, 0.42), *P(0.78, 0.78)], fill=c, outline=dark)
        d.ellipse([*P(0.66, 0.36), *P(0.9, 0.6)], fill=c, outline=dark)
        d.polygon([P(0.88, 0.45), P(0.99, 0.5), P(0.88, 0.54)], fill=(250, 180, 40))
        d.ellipse([*P(0.76, 0.42), *P(0.81, 0.48)], fill=(0, 0, 0))
        d.polygon([P(0.27, 0.55), P(0.04, 0.9), P(0.2, 0.95), P(0.36, 0.7)], fill=light)
    elif kind == "balloon":
        d.ellipse([*P(0.06, 0.02), *P(0.94, 0.8)], fill=c, outline=dark, width=max(1, int(w * 0.03)))
        d.pieslice([*P(0.06, 0.02), *P(0.94, 0.8)], 200, 250, fill=light)
        d.polygon([P(0.44, 0.78), P(0.56, 0.78), P(0.5, 0.84)], fill=dark)
        d.line([P(0.5, 0.84), P(0.45, 0.92), P(0.55, 0.98)], fill=(80, 80, 80), width=max(1, int(w * 0.02)))
        d.ellipse([*P(0.3, 0.25), *P(0.7, 0.5)], outline=light, width=max(1, int(w * 0.05)))
    else:
        raise ValueError(f"unknown synthetic object kind {kind!r} (one of {', '.join(KINDS)})")


def render(height: int, width: int, objects: Sequence[tuple[str, Sequence[float], Sequence[int]]],
           bg: np.ndarray | None = None, seed: int = 0, supersample: int = 4) -> np.ndarray:
    """Draw ``(kind, normalised box, colour)`` objects over ``bg`` (or :func:`background`), ``[H, W, 3]``
    uint8. Objects are drawn ``supersample`` times larger on a transparent layer and downsampled, so
    edges are anti-aliased like a real (or generated) image."""
    base = background(height, width, seed) if bg is None else bg
    s = max(1, int(supersample))
    layer = Image.new("RGBA", (width * s, height * s), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for kind, b, col in objects:
        draw_object(d, kind, (b[0] * width * s, b[1] * height * s, b[2] * width * s, b[3] * height * s), col)
    if s > 1:
        layer = layer.resize((width, height), Image.Resampling.BOX)
    out = Image.fromarray(base.copy()).convert("RGBA")
    out.alpha_composite(layer)
    return np.asarray(out.convert("RGB")).copy()


def render_video(height: int, width: int, kinds: Sequence[tuple[str, Sequence[int]]], boxes: torch.Tensor,
                 seed: int = 0, noise: float = 0.0) -> torch.Tensor:
    """Frames ``[T, H, W, 3]`` (0..1) with each object re-drawn at ``boxes`` ``[N, T, 4]`` (known truth)."""
    bg = background(height, width, seed)
    rng = np.random.default_rng(seed + 1)
    out = []
    for t in range(boxes.shape[1]):
        f = render(height, width, [(k, boxes[i, t].tolist(), c) for i, (k, c) in enumerate(kinds)], bg=bg)
        f = f.astype(np.float32) / 255
        if noise > 0:
            f = np.clip(f + rng.normal(0, noise, f.shape).astype(np.float32), 0, 1)
        out.append(f)
    return torch.from_numpy(np.stack(out))


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
