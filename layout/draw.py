"""Draw layouts (boxes, paths, key boxes, labels) and tracked boxes onto frames, with PIL."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .boxes import Layout

PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64), (64, 160, 255), (64, 220, 96), (255, 200, 32), (200, 96, 255), (32, 224, 224),
    (255, 128, 192), (160, 160, 160))


def _px(box: Sequence[float], W: int, H: int) -> list[float]:
    return [box[0] * W, box[1] * H, box[2] * W - 1, box[3] * H - 1]


def _rect(d: ImageDraw.ImageDraw, box: list[float], colour: tuple, width: int, dashed: bool = False) -> None:
    x0, y0, x1, y1 = box
    if not dashed:
        d.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        return
    dash = max(4, 3 * width)
    for (a, b) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        L = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        n = max(1, int(L // dash))
        for i in range(0, n, 2):
            s, e = i / n, min(1.0, (i + 1) / n)
            d.line([(a[0] + (b[0] - a[0]) * s, a[1] + (b[1] - a[1]) * s),
                    (a[0] + (b[0] - a[0]) * e, a[1] + (b[1] - a[1]) * e)], fill=colour, width=width)


def draw_layout(frames: torch.Tensor, layout: Layout, line_width: int = 2, show_path: bool = True,
                show_labels: bool = True, tracked: torch.Tensor | None = None) -> torch.Tensor:
    """Draw on IMAGE frames ``[T, H, W, 3]`` (0..1): each object's current box, its whole centre path with
    key boxes marked, its phrase, and optionally ``tracked`` boxes ``[N, T, 4]`` dashed. Returns a copy."""
    T, H, W = frames.shape[:3]
    boxes = layout.boxes().tolist()
    font = ImageFont.load_default()
    arr = (frames[..., :3].clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    out = []
    for t in range(T):
        im = Image.fromarray(arr[t])
        d = ImageDraw.Draw(im)
        for k, obj in enumerate(layout.objects):
            col = PALETTE[k % len(PALETTE)]
            if show_path:
                pts = [((b[0] + b[2]) / 2 * W, (b[1] + b[3]) / 2 * H) for b in boxes[k]]
                if len(pts) > 1:
                    d.line(pts, fill=col, width=max(1, line_width // 2))
                for key in obj.keys:
                    cx, cy = (key.x0 + key.x1) / 2 * W, (key.y0 + key.y1) / 2 * H
                    r = line_width + 1
                    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
                    if key.frame == t:
                        continue
                    _rect(d, _px(key.box, W, H), tuple(c // 2 for c in col), 1)
            _rect(d, _px(boxes[k][t], W, H), col, line_width)
            if tracked is not None:
                _rect(d, _px(tracked[k, t].tolist(), W, H), (255, 255, 255), max(1, line_width - 1), dashed=True)
            if show_labels and obj.phrase:
                x, y = boxes[k][t][0] * W + 2, boxes[k][t][1] * H + 1
                x, y = min(max(0, x), W - 8), min(max(0, y), H - 10)
                d.text((x + 1, y + 1), obj.phrase, fill=(0, 0, 0), font=font)
                d.text((x, y), obj.phrase, fill=col, font=font)
        out.append(np.asarray(im))
    return torch.from_numpy(np.stack(out)).float() / 255.0
