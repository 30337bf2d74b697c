"""Trajectory interop: layouts to and from the point/box formats other nodes make.

- **Tracks** (ComfyUI 0.33 ``io.Tracks``, WanMove): ``{"track_path": [T, N, 2] float (x, y) pixels,
  "track_visibility": [T, N] bool}``. A layout gives one track per object (its box centre); tracks give
  objects whose box of a given size moves with the point, one key box per frame.
- **KJNodes spline editor** ``coord_str``: JSON text, a list of ``{"x": px, "y": px}`` (one spline) or a list
  of such lists (several splines), pixels of a ``width`` x ``height`` canvas — what core's
  TracksFromCoords reads too. Each spline is one object; its points are spread over the frames.
- **KJNodes BBOX**: a list of ``(x, y, w, h)`` (BatchCropFromMask, PointsEditor ``xywh``) or
  ``(x0, y0, x1, y1)`` (PointsEditor ``xyxy``) boxes in pixels, as Python values or JSON text. Either one
  object with a box per frame, or one object per box (held still).

Pure maths (torch only); coordinates of layouts are fractions of the image as everywhere in :mod:`layout`.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import torch

from .boxes import Layout, make_object

BBOX_FORMATS: tuple[str, ...] = ("xywh", "xyxy")
BBOX_MODES: tuple[str, ...] = ("one object, a box per frame", "one object per box")


def _frame_of(i: int, n: int, frames: int) -> int:
    """Key frame of point ``i`` of ``n`` spread over ``frames`` frames (first at 0, last at frames-1)."""
    if n == frames:
        return i
    if n == 1:
        return 0
    return round(i * (frames - 1) / (n - 1))


def _dedupe_keys(keys: list[tuple[int, Sequence[float]]]) -> list[tuple[int, Sequence[float]]]:
    """Keep the first point that lands on each frame (more points than frames: the path is subsampled)."""
    seen, out = set(), []
    for f, box in keys:
        if f not in seen:
            seen.add(f)
            out.append((f, box))
    return out


def _phrase(phrases: Sequence[str], n: int, default: str) -> str:
    """Object ``n``'s phrase: the user's where given, else ``default``."""
    return phrases[n] if n < len(phrases) else default


def centre_box(cx: float, cy: float, bw: float, bh: float) -> tuple[float, float, float, float]:
    return (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)


# --------------------------------------------------------------------------------------------------
# Tracks


def layout_to_tracks(layout: Layout, width: int, height: int) -> dict[str, torch.Tensor]:
    """One track per object: its box centre at every frame in pixels ``[T, N, 2]`` (x, y); visible where any
    part of the box is inside the image ``[T, N]``."""
    from .boxes import visibility

    b = layout.boxes().double()  # [N, T, 4]
    cx = (b[..., 0] + b[..., 2]) / 2 * width
    cy = (b[..., 1] + b[..., 3]) / 2 * height
    path = torch.stack([cx, cy], -1).permute(1, 0, 2).float().contiguous()
    vis = (visibility(b.float()) > 0).permute(1, 0).contiguous()
    return {"track_path": path, "track_visibility": vis}


def tracks_to_layout(tracks: dict, width: int, height: int, box_width: float, box_height: float,
                     phrases: Sequence[str] = (), interpolation: str = "linear", size_space: str = "log",
                     simplify: float = 0.0) -> Layout:
    """Objects whose ``box_width`` x ``box_height`` pixel box is centred on each track, a key box per frame.

    ``simplify`` > 0 drops a key box where the straight line between its kept neighbours passes within that
    many pixels of it (fewer keys to edit); 0 keeps every frame, so the centres are the tracks exactly."""
    path = tracks.get("track_path") if isinstance(tracks, dict) else None
    if not isinstance(path, torch.Tensor) or path.ndim != 3 or path.shape[-1] != 2:
        raise ValueError("tracks must be a TRACKS value with track_path [frames, tracks, 2] (x, y pixels)")
    T, N = path.shape[:2]
    if T < 1 or N < 1:
        raise ValueError(f"tracks are empty ({T} frames, {N} tracks)")
    p = path.double().cpu()
    bw, bh = box_width / width, box_height / height
    objs = []
    for n in range(N):
        pts = [(float(p[t, n, 0]) / width, float(p[t, n, 1]) / height) for t in range(T)]
        frames = _simplify(pts, simplify / max(width, height)) if simplify > 0 else list(range(T))
        keys = [(t, centre_box(*pts[t], bw, bh)) for t in frames]
        objs.append(make_object(_phrase(phrases, n, f"track {n}"), keys, T, n, interpolation))
    return Layout(T, tuple(objs), size_space)


def _simplify(pts: list[tuple[float, float]], tol: float) -> list[int]:
    """Indices kept by Douglas-Peucker on a path parametrised by frame (time-aware: a point is dropped only
    if linear interpolation *in time* between its kept neighbours reproduces it within ``tol``)."""
    keep = {0, len(pts) - 1}

    def rec(a: int, b: int) -> None:
        worst, at = -1.0, -1
        for i in range(a + 1, b):
            u = (i - a) / (b - a)
            x = pts[a][0] + (pts[b][0] - pts[a][0]) * u
            y = pts[a][1] + (pts[b][1] - pts[a][1]) * u
            d = ((pts[i][0] - x) ** 2 + (pts[i][1] - y) ** 2) ** 0.5
            if d > worst:
                worst, at = d, i
        if at >= 0 and worst > tol:
            keep.add(at)
            rec(a, at)
            rec(at, b)

    rec(0, len(pts) - 1)
    return sorted(keep)


# --------------------------------------------------------------------------------------------------
# KJNodes spline editor coordinates


def _json(text: Any, what: str) -> Any:
    if not isinstance(text, str):
        return text
    if not text.strip():
        raise ValueError(f"{what} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:  # KJNodes and core's parse_json_tracks accept single quotes
            return json.loads(text.replace("'", '"'))
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} is not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def parse_points(text: Any) -> list[list[tuple[float, float]]]:
    """Splines from KJNodes ``coord_str``: ``[{"x", "y"}, ...]`` or ``[[{"x", "y"}, ...], ...]`` (pixels)."""
    data = _json(text, "coordinates")
    if isinstance(data, list) and data and all(isinstance(p, dict) for p in data):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(s, list) and s for s in data):
        raise ValueError('coordinates must be a list of {"x": .., "y": ..} points (one spline) or a list of such '
                         "lists (KJNodes spline editor coord_str)")
    out = []
    for si, spline in enumerate(data):
        pts = []
        for pi, pt in enumerate(spline):
            if not isinstance(pt, dict) or "x" not in pt or "y" not in pt:
                raise ValueError(f"coordinates: spline {si}, point {pi} must be {{\"x\": .., \"y\": ..}}, got {pt!r}")
            try:
                pts.append((float(pt["x"]), float(pt["y"])))
            except (TypeError, ValueError):
                raise ValueError(f"coordinates: spline {si}, point {pi} has a non-number x/y: {pt!r}") from None
        out.append(pts)
    return out


def layout_from_points(text: Any, width: int, height: int, box_width: float, box_height: float, frames: int = 0,
                       phrases: Sequence[str] = (), interpolation: str = "linear",
                       size_space: str = "log") -> Layout:
    """One object per spline: a ``box_width`` x ``box_height`` pixel box centred on each point; the points
    are spread evenly over ``frames`` (0: one frame per point of the longest spline)."""
    splines = parse_points(text)
    frames = frames or max(len(s) for s in splines)
    bw, bh = box_width / width, box_height / height
    objs = []
    for n, pts in enumerate(splines):
        keys = [(_frame_of(i, len(pts), frames), centre_box(x / width, y / height, bw, bh)) for i, (x, y) in enumerate(pts)]
        objs.append(make_object(_phrase(phrases, n, f"spline {n}"), _dedupe_keys(keys), frames, n, interpolation))
    return Layout(frames, tuple(objs), size_space)


# --------------------------------------------------------------------------------------------------
# KJNodes BBOX


def parse_bboxes(value: Any, fmt: str = "xywh") -> list[tuple[float, float, float, float]]:
    """Boxes ``(x0, y0, x1, y1)`` in pixels from a BBOX value (list of 4-tuples) or its JSON text."""
    if fmt not in BBOX_FORMATS:
        raise ValueError(f"bbox_format {fmt!r} is not one of {', '.join(BBOX_FORMATS)}")
    data = _json(value, "bbox")
    if isinstance(data, (list, tuple)) and len(data) == 4 and all(isinstance(v, (int, float)) for v in data):
        data = [data]
    if not isinstance(data, (list, tuple)) or not data:
        raise ValueError("bbox must be a list of boxes [x, y, w, h] (or [x0, y0, x1, y1] with bbox_format xyxy)")
    out = []
    for i, b in enumerate(data):
        if hasattr(b, "tolist"):
            b = b.tolist()
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            raise ValueError(f"bbox {i}: {b!r} must be 4 numbers")
        try:
            x, y, c, d = (float(v) for v in b)
        except (TypeError, ValueError):
            raise ValueError(f"bbox {i}: {b!r} must be 4 numbers") from None
        out.append((x, y, x + c, y + d) if fmt == "xywh" else (x, y, c, d))
    return out


def layout_from_bboxes(value: Any, width: int, height: int, fmt: str = "xywh", mode: str = BBOX_MODES[0],
                       frames: int = 0, phrases: Sequence[str] = (), interpolation: str = "linear",
                       size_space: str = "log") -> Layout:
    """A layout from pixel boxes: ``mode`` "one object, a box per frame" (BatchCropFromMask: box i spread over
    the frames; 0 frames = one per box) or "one object per box" (PointsEditor: each box an object held still)."""
    if mode not in BBOX_MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(BBOX_MODES)}")
    boxes = [(x0 / width, y0 / height, x1 / width, y1 / height) for x0, y0, x1, y1 in parse_bboxes(value, fmt)]
    if mode == BBOX_MODES[0]:
        frames = frames or len(boxes)
        keys = _dedupe_keys([(_frame_of(i, len(boxes), frames), b) for i, b in enumerate(boxes)])
        objs = (make_object(_phrase(phrases, 0, "object"), keys, frames, 0, interpolation),)
    else:
        frames = frames or 16
        objs = tuple(make_object(_phrase(phrases, n, f"object {n}"), [(0, b)], frames, n, interpolation)
                     for n, b in enumerate(boxes))
    return Layout(frames, objs, size_space)


def split_phrases(text: str) -> list[str]:
    """Comma- or newline-separated object phrases (empty entries dropped)."""
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


# --------------------------------------------------------------------------------------------------
# Core bounding boxes (ComfyUI 0.33+ ``BOUNDING_BOX``: Create Bounding Boxes, RT-DETR, SAM3, Draw BBoxes)

BOX_MATCHES: tuple[str, ...] = ("box order", "description")


def _box_name(box: dict) -> str:
    """A box's description: ``metadata.desc`` (else ``text``: the form Create Bounding Boxes reads, though its own
    output drops it) or a detector's ``label``."""
    meta = box.get("metadata") if isinstance(box.get("metadata"), dict) else {}
    for v in (meta.get("desc"), meta.get("text"), box.get("label")):
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


def _core_box(box: Any, where: str) -> tuple[tuple[float, float, float, float], str]:
    """``(x0, y0, x1, y1)`` pixels and the description of one ``{"x", "y", "width", "height"}`` box."""
    if not isinstance(box, dict):
        raise ValueError(f"{where}: {box!r} is not a bounding box {{\"x\", \"y\", \"width\", \"height\"}} (pixels)")
    missing = [k for k in ("x", "y", "width", "height") if k not in box]
    if missing:
        raise ValueError(f"{where}: {box!r} has no {', '.join(missing)} (a bounding box is x, y, width, height "
                         f"in pixels)")
    vals = []
    for k in ("x", "y", "width", "height"):
        v = box[k]
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: {k} = {v!r} is not a finite number")
        vals.append(float(v))
    x, y, w, h = vals
    if w < 0 or h < 0:
        raise ValueError(f"{where}: width {w:g} and height {h:g} must not be negative")
    return (x, y, x + w, y + h), _box_name(box)


def bounding_box_frames(value: Any) -> list[list[dict]]:
    """The frames of a ``BOUNDING_BOX`` value as core writes it: one box (a dict: Bounding Box), one frame (a list
    of dicts: what Create Bounding Boxes reads), or a list of frames (a list of lists: Create Bounding Boxes,
    RT-DETR, SAM3 and Draw BBoxes, a frame per image); JSON text of these too. Boxes are not validated here."""
    data = _json(value, "bounding boxes")
    if isinstance(data, dict):
        return [[data]]
    if not isinstance(data, (list, tuple)):
        raise ValueError(f"bounding boxes must be a box {{x, y, width, height}}, a list of boxes or a list of frames "
                         f"(lists of boxes), got {type(data).__name__}")
    if not data:
        return []
    if all(isinstance(f, (list, tuple)) for f in data):
        return [list(f) for f in data]
    if all(isinstance(b, dict) for b in data):
        return [list(data)]
    raise ValueError("bounding boxes must be a list of boxes {x, y, width, height} or a list of frames (lists of "
                     "boxes), not a mix of both")


def parse_frame_list(text: str) -> list[int]:
    """Key frame indices from text such as ``"0, 8, 15"`` (commas, spaces or new lines between them)."""
    out = []
    for part in text.replace(",", " ").split():
        try:
            f = int(part)
        except ValueError:
            raise ValueError(f"key_frames: {part!r} is not a whole number (give frame indices like 0, 8, 15)") from None
        if f < 0:
            raise ValueError(f"key_frames: {f} is negative (frame indices start at 0)")
        out.append(f)
    return out


def layout_from_bounding_boxes(values: Sequence[Any], width: int, height: int, frames: int = 16,
                               key_frames: Sequence[int] = (), match: str = BOX_MATCHES[0],
                               phrases: Sequence[str] = (), interpolation: str = "linear",
                               size_space: str = "log") -> Layout:
    """A layout from core bounding boxes: every frame of every value in ``values`` (in order) is one key frame.

    Key frames are ``key_frames`` (one per box frame) or spread evenly from 0 to ``frames - 1`` (``frames`` 0: one
    frame per box frame; more box frames than frames: the first that lands on a frame wins). Object identity across
    key frames is ``match``: "box order" (the i-th box of every frame is object i: the drawing order Create Bounding
    Boxes keeps; its boxes carry no description) or "description" (boxes with the same label or ``metadata.desc`` are
    one object, a repeated one pairs by its order within the frame; boxes without one pair by their order among
    those). A box of zero width or height gives its object no key box at that frame. Phrases: ``phrases`` where
    given, else the label or description, else "object n"."""
    if match not in BOX_MATCHES:
        raise ValueError(f"match {match!r} is not one of {', '.join(BOX_MATCHES)}")
    box_frames = [f for v in values for f in bounding_box_frames(v)]
    if not any(box_frames):
        raise ValueError("no bounding boxes: connect Create Bounding Boxes (draw at least one box) or another node's "
                         "BOUNDING_BOX output")
    n = len(box_frames)
    if key_frames:
        key_frames = list(key_frames)
        if len(key_frames) != n:
            raise ValueError(f"key_frames names {len(key_frames)} frames but the bounding boxes have {n} frames "
                             f"(one key frame each, in input order)")
        if len(set(key_frames)) != n:
            raise ValueError(f"key_frames {key_frames} names a frame twice")
        frames = frames or max(key_frames) + 1
        if max(key_frames) >= frames:
            raise ValueError(f"key_frames {key_frames} go beyond the layout length ({frames} frames, valid 0.."
                             f"{frames - 1}): raise frames")
    else:
        frames = frames or n
        key_frames = [_frame_of(i, n, frames) for i in range(n)]
    objs: dict[Any, dict] = {}  # identity -> {"name", "keys"}, in order of first appearance
    for fi, (kf, boxes) in enumerate(zip(key_frames, box_frames)):
        seen: dict[str, int] = {}
        for j, raw in enumerate(boxes):
            (x0, y0, x1, y1), name = _core_box(raw, f"bounding box frame {fi}, box {j}")
            if match == BOX_MATCHES[0]:
                ident: Any = j
            else:
                ident = (name, seen.get(name, 0))
                seen[name] = ident[1] + 1
            o = objs.setdefault(ident, {"name": name, "keys": []})
            o["name"] = o["name"] or name
            if x1 <= x0 or y1 <= y0:
                continue  # an empty box: no key box for this object here
            nb = (x0 / width, y0 / height, x1 / width, y1 / height)
            if min(nb) < -1.0 or max(nb) > 2.0:
                raise ValueError(f"bounding box frame {fi}, box {j} ({x0:g}, {y0:g}, {x1 - x0:g} x {y1 - y0:g} px) lies "
                                 f"far outside a {width} x {height} image: are width and height those of the canvas "
                                 f"the boxes were drawn on?")
            o["keys"].append((kf, nb))
    kept = [o for o in objs.values() if o["keys"]]
    if not kept:
        raise ValueError("every bounding box has zero width or height")
    out = tuple(make_object(_phrase(phrases, i, o["name"] or f"object {i}"), _dedupe_keys(o["keys"]), frames, i,
                            interpolation) for i, o in enumerate(kept))
    return Layout(frames, out, size_space)


def layout_to_bounding_boxes(layout: Layout, width: int, height: int, clip: bool = False) -> list[list[dict]]:
    """Core ``BOUNDING_BOX`` frames from a layout: for every frame, every object's box in pixels (corners rounded to
    whole pixels), in object order, the phrase as ``metadata.desc`` (Create Bounding Boxes) and ``label``
    (Draw BBoxes). ``clip``: boxes cut to the image (one wholly outside has zero width or height there)."""
    b = layout.boxes().double() * torch.tensor([width, height, width, height], dtype=torch.float64)
    if clip:
        b = torch.stack([b[..., 0].clamp(0, width), b[..., 1].clamp(0, height),
                         b[..., 2].clamp(0, width), b[..., 3].clamp(0, height)], -1)
    r = b.round().long().tolist()  # [N][T][4]
    out = []
    for t in range(layout.frames):
        frame = []
        for o, boxes in zip(layout.objects, r):
            x0, y0, x1, y1 = boxes[t]
            frame.append({"x": x0, "y": y0, "width": max(0, x1 - x0), "height": max(0, y1 - y0),
                          "label": o.phrase, "metadata": {"type": "obj", "desc": o.phrase}})
        out.append(frame)
    return out
