"""Layout data: objects with key boxes, JSON parsing with clear errors, interpolation to every frame.

Boxes are ``(x0, y0, x1, y1)`` in normalised image coordinates (0..1, origin top-left). Boxes may leave
the image (coordinates outside 0..1); coordinates further out than ``COORD_MIN``/``COORD_MAX`` are
rejected as a probable unit mistake (pixels instead of fractions).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import torch

log = logging.getLogger("i2v_motion.layout")

INTERPOLATIONS: tuple[str, ...] = ("linear", "ease_in_out", "catmull_rom")
SIZE_SPACES: tuple[str, ...] = ("log", "linear")
COORD_MIN, COORD_MAX = -1.0, 2.0
MAX_FRAMES = 256  # the pack's one frame limit (``limits.MAX_FRAMES``); layout/ stays importable on its own


@dataclass(frozen=True)
class KeyBox:
    """One user-given box of an object at a frame index."""

    frame: int
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(frozen=True)
class LayoutObject:
    """An object: a phrase and its key boxes (sorted by frame, one per frame)."""

    phrase: str
    keys: tuple[KeyBox, ...]
    interpolation: str = "linear"


@dataclass(frozen=True)
class Layout:
    """A box layout for a video of ``frames`` frames: the value behind the ``I2V_LAYOUT`` type."""

    frames: int
    objects: tuple[LayoutObject, ...]
    size_space: str = "log"
    caption: str = ""
    _cache: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def boxes(self) -> torch.Tensor:
        """Per-frame boxes of every object, ``[N, T, 4]`` float32 (not clipped to the image)."""
        if "boxes" not in self._cache:
            self._cache["boxes"] = torch.stack(
                [interpolate_keys(o.keys, self.frames, o.interpolation, self.size_space) for o in self.objects])
        return self._cache["boxes"].clone()

    def source_boxes(self) -> torch.Tensor:
        """Each object's box in the source image (frame 0), ``[N, 4]``."""
        return self.boxes()[:, 0]

    def to_dict(self) -> dict[str, Any]:
        return layout_to_dict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_text(self) -> str:
        """Compact, readable JSON: one object per line head, one key box per line (see :func:`format_layout`)."""
        return format_layout(self.to_dict())


# --------------------------------------------------------------------------------------------------
# Parsing and validation


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{what} must be a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{what} must be finite, got {v!r}")
    return f


def _parse_key(raw: Any, where: str) -> tuple[int, list[float]]:
    """A key box as ``[frame, x0, y0, x1, y1]`` or ``{"frame": f, "box": [...]}`` / ``{"frame", "x0", ...}``."""
    if isinstance(raw, dict):
        if "frame" not in raw:
            raise ValueError(f"{where}: key box {raw!r} has no 'frame'")
        frame = raw["frame"]
        if "box" in raw:
            coords = raw["box"]
        elif all(k in raw for k in ("x0", "y0", "x1", "y1")):
            coords = [raw["x0"], raw["y0"], raw["x1"], raw["y1"]]
        else:
            raise ValueError(f"{where}: key box {raw!r} needs 'box': [x0, y0, x1, y1] or x0, y0, x1, y1")
    elif isinstance(raw, (list, tuple)):
        if len(raw) != 5:
            raise ValueError(f"{where}: key box {list(raw)!r} must be [frame, x0, y0, x1, y1] (5 numbers)")
        frame, coords = raw[0], list(raw[1:])
    else:
        raise ValueError(f"{where}: key box {raw!r} must be a list [frame, x0, y0, x1, y1] or an object")
    if not isinstance(coords, (list, tuple)) or len(coords) != 4:
        raise ValueError(f"{where}: box {coords!r} must be 4 numbers [x0, y0, x1, y1]")
    f = _num(frame, f"{where}: frame")
    if f != int(f):
        raise ValueError(f"{where}: frame {frame!r} must be a whole number")
    return int(f), [_num(c, f"{where}, key frame {int(f)}: coordinate") for c in coords]


def make_object(phrase: str, keys: Iterable[tuple[int, Sequence[float]]], frames: int, index: int = 0,
                interpolation: str = "linear") -> LayoutObject:
    """Validate key boxes ``(frame, (x0, y0, x1, y1))`` of one object; sort by frame, last duplicate wins."""
    name = f"layout object {index}" + (f" ({phrase!r})" if phrase else "")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"{name}: interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    by_frame: dict[int, KeyBox] = {}
    order: list[int] = []
    for frame, coords in keys:
        where = f"{name}, key frame {frame}"
        if frame < 0 or frame >= frames:
            raise ValueError(f"{where}: frame index is beyond the layout length "
                             f"({frames} frames, valid indices 0..{frames - 1})")
        x0, y0, x1, y1 = (float(c) for c in coords)
        for cname, c in zip(("x0", "y0", "x1", "y1"), (x0, y0, x1, y1)):
            if not math.isfinite(c):
                raise ValueError(f"{where}: {cname} is not finite")
            if c < COORD_MIN or c > COORD_MAX:
                raise ValueError(
                    f"{where}: {cname}={c:g} is far outside [0, 1] (allowed {COORD_MIN:g}..{COORD_MAX:g}); "
                    f"coordinates are fractions of the image size (divide pixel values by width/height)")
        if x1 <= x0:
            raise ValueError(f"{where}: x1={x1:g} must be greater than x0={x0:g}")
        if y1 <= y0:
            raise ValueError(f"{where}: y1={y1:g} must be greater than y0={y0:g}")
        if frame in by_frame:
            log.warning("%s: key frame %d given more than once; the last one wins", name, frame)
        else:
            order.append(frame)
        by_frame[frame] = KeyBox(frame, x0, y0, x1, y1)
    if not by_frame:
        raise ValueError(f"{name} has no key boxes")
    if order != sorted(order):
        log.warning("%s: key frames %s are not in order; sorted", name, order)
    return LayoutObject(str(phrase), tuple(by_frame[f] for f in sorted(by_frame)), interpolation)


def parse_layout(data: str | dict | list, frames: int | None = None, interpolation: str | None = None,
                 size_space: str | None = None) -> Layout:
    """Build a :class:`Layout` from JSON text or its parsed value.

    Accepted: ``{"frames": 16, "interpolation": "linear", "size_space": "log", "caption": "...",
    "objects": [{"phrase": "a dog", "boxes": [[0, x0, y0, x1, y1], ...]}]}`` or just the objects list.
    ``frames``/``interpolation``/``size_space`` arguments override the JSON values (an object's own
    ``"interpolation"`` still wins over the layout default).
    """
    if isinstance(data, str):
        if not data.strip():
            raise ValueError("layout JSON is empty")
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise ValueError(f"layout JSON is malformed at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if isinstance(data, list):
        data = {"objects": data}
    if not isinstance(data, dict):
        raise ValueError(f"layout JSON must be an object with 'objects' (or a list of objects), got {type(data).__name__}")
    if frames is None:
        frames = data.get("frames", 16)
    frames = _num(frames, "layout 'frames'")
    if frames != int(frames) or not (1 <= frames <= MAX_FRAMES):
        raise ValueError(f"layout 'frames' must be a whole number in 1..{MAX_FRAMES}, got {frames:g}")
    frames = int(frames)
    interpolation = interpolation or data.get("interpolation", "linear")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"layout interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    size_space = size_space or data.get("size_space", "log")
    if size_space not in SIZE_SPACES:
        raise ValueError(f"layout size_space {size_space!r} is not one of {', '.join(SIZE_SPACES)}")
    objs = data.get("objects")
    if objs is None:
        raise ValueError("layout JSON has no 'objects' list")
    if not isinstance(objs, list):
        raise ValueError(f"layout 'objects' must be a list, got {type(objs).__name__}")
    if not objs:
        raise ValueError("layout has zero objects; give at least one object with key boxes")
    out = []
    for i, o in enumerate(objs):
        if not isinstance(o, dict):
            raise ValueError(f"layout object {i} must be an object with 'phrase' and 'boxes', got {o!r}")
        phrase = o.get("phrase", o.get("label", ""))
        if not isinstance(phrase, str):
            raise ValueError(f"layout object {i}: 'phrase' must be text, got {phrase!r}")
        where = f"layout object {i}" + (f" ({phrase!r})" if phrase else "")
        raw = o.get("boxes", o.get("keys"))
        if not isinstance(raw, list) or not raw:
            raise ValueError(f"{where} has no key boxes: give 'boxes': [[frame, x0, y0, x1, y1], ...]")
        keys = [_parse_key(k, where) for k in raw]
        out.append(make_object(phrase, keys, frames, i, o.get("interpolation", interpolation)))
    caption = data.get("caption", "")
    return Layout(frames, tuple(out), size_space, caption if isinstance(caption, str) else "")


def layout_to_dict(layout: Layout) -> dict[str, Any]:
    """The JSON-able form that :func:`parse_layout` reads back."""
    d: dict[str, Any] = {"frames": layout.frames, "size_space": layout.size_space, "objects": [
        {"phrase": o.phrase, "interpolation": o.interpolation,
         "boxes": [[k.frame, round(k.x0, 6), round(k.y0, 6), round(k.x1, 6), round(k.y1, 6)] for k in o.keys]}
        for o in layout.objects]}
    if layout.caption:
        d["caption"] = layout.caption
    return d


def format_layout(data: dict[str, Any]) -> str:
    """Layout JSON pretty-printed compactly: top-level keys on the first line, then one line per object head
    and one line per key box ``[frame, x0, y0, x1, y1]``. Parses back to the same value."""
    head = {k: v for k, v in data.items() if k != "objects"}
    objs = data.get("objects") or []
    lines = [json.dumps(head)[:-1] + (", " if head else "") + '"objects": [']
    for i, o in enumerate(objs):
        meta = {k: v for k, v in o.items() if k != "boxes"}
        boxes = o.get("boxes") or []
        lines.append(" " + json.dumps(meta)[:-1] + (", " if meta else "") + '"boxes": [')
        for j, b in enumerate(boxes):
            lines.append("  " + json.dumps(b) + ("," if j < len(boxes) - 1 else ""))
        lines[-1] += "]}" + ("," if i < len(objs) - 1 else "")
    lines[-1] += "]}"
    return "\n".join(lines)


def with_frames(layout: Layout, frames: int) -> Layout:
    """The same layout with another length (errors if a key frame no longer fits)."""
    objs = tuple(make_object(o.phrase, [(k.frame, k.box) for k in o.keys], frames, i, o.interpolation)
                 for i, o in enumerate(layout.objects))
    return replace(layout, frames=frames, objects=objs, _cache={})


def merge_layouts(a: Layout, b: Layout) -> Layout:
    """Objects of ``a`` then ``b`` (lengths must agree)."""
    if a.frames != b.frames:
        raise ValueError(f"cannot merge layouts of {a.frames} and {b.frames} frames")
    return replace(a, objects=a.objects + b.objects, _cache={})


# --------------------------------------------------------------------------------------------------
# Interpolation


def _ease(u: torch.Tensor) -> torch.Tensor:
    return u * u * (3.0 - 2.0 * u)


def interpolate_keys(keys: Sequence[KeyBox], frames: int, interpolation: str = "linear",
                     size_space: str = "log") -> torch.Tensor:
    """Boxes for frames ``0..frames-1`` from sorted key boxes, ``[T, 4]`` float32.

    Centres follow ``interpolation`` (linear, ease-in-out per segment, or time-parametrised Catmull-Rom);
    sizes are interpolated linearly in ``size_space`` (log: geometric, no overshoot on zooms). Before the
    first and after the last key box the box holds still. Every key box is hit exactly.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    if size_space not in SIZE_SPACES:
        raise ValueError(f"size_space {size_space!r} is not one of {', '.join(SIZE_SPACES)}")
    kf = torch.tensor([k.frame for k in keys], dtype=torch.float64)
    kb = torch.tensor([k.box for k in keys], dtype=torch.float64)
    centre = (kb[:, :2] + kb[:, 2:]) / 2
    size = kb[:, 2:] - kb[:, :2]
    if size_space == "log":
        size = size.log()
    t = torch.arange(frames, dtype=torch.float64)
    K = len(keys)
    if K == 1:
        c, s = centre[0].expand(frames, 2), size[0].expand(frames, 2)
    else:
        tc = t.clamp(kf[0], kf[-1])
        i = (torch.searchsorted(kf, tc, right=True) - 1).clamp(0, K - 2)
        f0, f1 = kf[i], kf[i + 1]
        dt = (f1 - f0)[:, None]
        u = ((tc - f0) / (f1 - f0))[:, None]
        p0, p1 = centre[i], centre[i + 1]
        if interpolation == "catmull_rom":
            m = torch.empty_like(centre)  # tangents per frame
            m[0] = (centre[1] - centre[0]) / (kf[1] - kf[0])
            m[-1] = (centre[-1] - centre[-2]) / (kf[-1] - kf[-2])
            if K > 2:
                m[1:-1] = (centre[2:] - centre[:-2]) / (kf[2:] - kf[:-2])[:, None]
            u2, u3 = u * u, u * u * u
            c = ((2 * u3 - 3 * u2 + 1) * p0 + (u3 - 2 * u2 + u) * dt * m[i]
                 + (-2 * u3 + 3 * u2) * p1 + (u3 - u2) * dt * m[i + 1])
            us = u
        else:
            us = _ease(u) if interpolation == "ease_in_out" else u
            c = p0 + (p1 - p0) * us
        s = size[i] + (size[i + 1] - size[i]) * us
    if size_space == "log":
        s = s.exp()
    out = torch.cat([c - s / 2, c + s / 2], dim=-1)
    # exact key boxes (no round-off drift at the keys)
    for k in keys:
        out[k.frame] = torch.tensor(k.box, dtype=torch.float64)
    return out.float()


# --------------------------------------------------------------------------------------------------
# Geometry helpers


def clip_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Clip boxes ``[..., 4]`` to the unit square (empty boxes collapse to zero area)."""
    b = boxes.clone()
    b[..., 0::2] = b[..., 0::2].clamp(0, 1)
    b[..., 1::2] = b[..., 1::2].clamp(0, 1)
    return b


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def visibility(boxes: torch.Tensor) -> torch.Tensor:
    """Fraction of each box's area inside the image, ``[...]``."""
    a = box_area(boxes)
    return torch.where(a > 0, box_area(clip_boxes(boxes)) / a.clamp(min=1e-12), torch.zeros_like(a))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching boxes ``[..., 4]`` (0 where both are empty)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def mask_bbox(mask: torch.Tensor, threshold: float = 0.5) -> tuple[float, float, float, float] | None:
    """Normalised bounding box of ``mask > threshold`` for a ``[H, W]`` mask, or None if empty."""
    m = mask > threshold
    if not bool(m.any()):
        return None
    H, W = m.shape
    ys = torch.nonzero(m.any(1)).flatten()
    xs = torch.nonzero(m.any(0)).flatten()
    return (int(xs[0]) / W, int(ys[0]) / H, (int(xs[-1]) + 1) / W, (int(ys[-1]) + 1) / H)


def layout_from_masks(masks: torch.Tensor, phrase: str, frames: int, key_frames: Sequence[int] | None = None,
                      interpolation: str = "linear", size_space: str = "log", threshold: float = 0.5) -> Layout:
    """One object from a batch of masks ``[N, H, W]``: each non-empty mask gives a key box.

    ``key_frames[i]`` is the frame of mask ``i``; by default mask ``i`` is frame ``i`` when ``N == frames``,
    else the masks are spread evenly over the video (one mask: frame 0).
    """
    if masks.ndim == 2:
        masks = masks[None]
    N = masks.shape[0]
    if key_frames is None or len(key_frames) == 0:
        if N == frames:
            key_frames = list(range(N))
        elif N == 1:
            key_frames = [0]
        else:
            key_frames = [round(i * (frames - 1) / (N - 1)) for i in range(N)]
    if len(key_frames) != N:
        raise ValueError(f"mask batch has {N} masks but {len(key_frames)} key frames were given")
    keys = []
    for i, f in enumerate(key_frames):
        bb = mask_bbox(masks[i], threshold)
        if bb is not None:
            keys.append((int(f), bb))
    if not keys:
        raise ValueError(f"layout object 0 ({phrase!r}): every mask is empty (nothing above {threshold})")
    return Layout(frames, (make_object(phrase, keys, frames, 0, interpolation),), size_space)
