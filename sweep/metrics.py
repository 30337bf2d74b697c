"""Per-video metrics that need no downloaded weights (numpy + OpenCV), and the layout metrics hook.

- ``flow_mean``: mean optical-flow magnitude (pixels per frame) over every pixel and consecutive frame pair,
  OpenCV's Farneback flow on grey frames.
- ``dynamic``: a dynamic-degree proxy with VBench's rule (per frame pair the mean of the largest 5 % flow
  magnitudes; the video "moves" when at least ``round(4 * T / 16)`` pairs exceed ``6 * min(H, W) / 256``), but with
  **Farneback flow instead of VBench's RAFT** (no weights can be downloaded), so values are comparable within
  a sweep, not with published VBench numbers. ``motion_top5`` is the mean of those per-pair scores.
- ``flicker``: mean absolute difference between consecutive frames (0..255; lower is steadier), the quantity
  VBench's temporal-flickering score is built on.
- ``layout``: where the workflow holds a layout (a ``I2VMotion_LayoutGuide``), the pack's own
  ``I2VMotion_LayoutMetrics`` node is added to the prompt (fed the guide's source image and layout and the
  collected video, its JSON report shown by a stock ``PreviewAny``), so vIoU@0.5, mIoU, background PSNR and the
  afterimage score are computed by the pack inside ComfyUI on the decoded frames, before any compression.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

LAYOUT_NODE = "sweep_layout_metrics"
LAYOUT_REPORT = "sweep_layout_report"
LAYOUT_KEYS = ("viou50", "miou", "background_psnr", "afterimage")
VIDEO_EXT = (".webp", ".gif", ".png", ".apng", ".mp4", ".webm", ".mov", ".mkv", ".avi")


def load_frames(data: bytes, name: str):
    """Frames ``[T, H, W, 3]`` uint8 of an animated image (PIL) or a video file (OpenCV)."""
    import numpy as np

    suffix = Path(name).suffix.lower()
    if suffix in (".webp", ".gif", ".png", ".apng"):
        from PIL import Image, ImageSequence

        with Image.open(io.BytesIO(data)) as im:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    import tempfile

    import cv2

    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        cap = cv2.VideoCapture(tmp.name)
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        cap.release()
    if not frames:
        raise ValueError(f"{name}: no frames could be read")
    return np.stack(frames)


def video_metrics(frames) -> dict[str, float]:
    """``flow_mean``, ``motion_top5``, ``dynamic`` and ``flicker`` of frames ``[T, H, W, 3]`` (see module doc)."""
    import cv2
    import numpy as np

    T, H, W = frames.shape[:3]
    if T < 2:
        return {"flow_mean": float("nan"), "motion_top5": float("nan"), "dynamic": float("nan"),
                "flicker": float("nan")}
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    means, tops = [], []
    for a, b in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mag = np.sqrt((flow.astype(np.float64) ** 2).sum(-1)).ravel()
        means.append(float(mag.mean()))
        k = max(1, int(mag.size * 0.05))
        tops.append(float(np.partition(mag, mag.size - k)[-k:].mean()))
    thres = 6.0 * min(H, W) / 256.0
    need = max(1, round(4 * T / 16.0))
    moving = sum(t > thres for t in tops) >= need
    diffs = np.abs(frames[1:].astype(np.int16) - frames[:-1].astype(np.int16))
    return {"flow_mean": float(np.mean(means)), "motion_top5": float(np.mean(tops)), "dynamic": float(moving),
            "flicker": float(diffs.mean())}


def primary_video(files: list[tuple[str, bytes]]) -> tuple[str, bytes] | None:
    """The first collected file that is a video or an animated image."""
    return next(((n, d) for n, d in files if Path(n).suffix.lower() in VIDEO_EXT), None)


def add_layout_metrics(prompt: dict, video_node: str | None) -> bool:
    """Add the pack's Layout Metrics node (+ a PreviewAny showing its report) to an API prompt that holds a
    ``I2VMotion_LayoutGuide``; the video is what ``video_node`` (an output node) saves. Returns whether added."""
    guides = [n for n in prompt.values() if n.get("class_type") == "I2VMotion_LayoutGuide"]
    if not guides or video_node is None or video_node not in prompt:
        return False
    g = guides[0]["inputs"]
    video = prompt[video_node]["inputs"].get("images")
    if not (isinstance(g.get("image"), list) and isinstance(g.get("layout"), list) and isinstance(video, list)):
        return False
    prompt[LAYOUT_NODE] = {"class_type": "I2VMotion_LayoutMetrics",
                           "inputs": {"source": g["image"], "video": video, "layout": g["layout"], "work_size": 128},
                           "_meta": {"title": "Layout Metrics (added by the sweep)"}}
    prompt[LAYOUT_REPORT] = {"class_type": "PreviewAny", "inputs": {"source": [LAYOUT_NODE, 0]},
                             "_meta": {"title": "Layout report (added by the sweep)"}}
    return True


def layout_metrics(outputs: dict) -> dict[str, Any]:
    """vIoU@0.5, mIoU, background PSNR and afterimage from the added report node's history output ({} if none)."""
    texts = (outputs.get(LAYOUT_REPORT) or {}).get("text") or []
    if not texts:
        return {}
    try:
        rep = json.loads(texts[0])
    except ValueError:
        return {}
    return {k: (float(rep[k]) if isinstance(rep.get(k), (int, float)) else math.nan) for k in LAYOUT_KEYS}


def compute(files: list[tuple[str, bytes]], outputs: dict, wanted: list[str]) -> dict[str, Any]:
    """The requested metrics of one job's collected files and history outputs (missing ones are NaN)."""
    out: dict[str, Any] = {}
    if {"flow", "dynamic_degree", "flicker"} & set(wanted):
        vid = primary_video(files)
        if vid is not None:
            frames = load_frames(vid[1], vid[0])
            m = video_metrics(frames)
            if "flow" in wanted:
                out["flow_mean"] = m["flow_mean"]
            if "dynamic_degree" in wanted:
                out["dynamic"] = m["dynamic"]
                out["motion_top5"] = m["motion_top5"]
            if "flicker" in wanted:
                out["flicker"] = m["flicker"]
    if "layout" in wanted:
        out.update(layout_metrics(outputs))
    return out
