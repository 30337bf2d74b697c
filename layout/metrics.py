"""Layout metrics without downloaded weights.

* trajectory adherence: the source object crop is tracked through the video (:mod:`.track`); per frame
  IoU of the tracked box with the target box (both clipped to the image) -> ``viou50`` (fraction of
  scored object-frames with IoU >= 0.5) and ``miou``; frames where less than ``min_visible`` of the
  target box is inside the image are not scored;
* object consistency: SSIM of the tracked object crop against the source crop (both at the smaller size);
* background consistency: PSNR / SSIM outside every target and source box vs the source;
* afterimage: in the vacated region (source boxes not covered by any object at that frame),
  ``1 - rms(video - source) / rms(plate - source)`` clipped to 0..1: 0 = as unlike the object as the
  background plate is ("plate level"), 1 = the object is still there.

All functions take channel-first tensors (``[C, H, W]`` / ``[T, C, H, W]``, RGB or latents).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .boxes import Layout, box_iou, clip_boxes, visibility
from .guide import make_plate
from .masks import box_masks, soft_union
from .track import crop_box, track_template, work_size_for

Progress = Callable[[int, int], None]


def json_safe(x: Any) -> Any:
    """A report with NaN/±Inf floats as None (JSON has no NaN), dicts and lists walked, tuples as lists."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def _gauss(window: int, sigma: float, dtype=torch.float64) -> torch.Tensor:
    x = torch.arange(window, dtype=dtype) - (window - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11,
             sigma: float = 1.5) -> torch.Tensor:
    """SSIM map ``[..., H', W']`` (valid region, averaged over channels) of ``[..., C, H, W]`` tensors."""
    a = a.double()
    b = b.double()
    shape = a.shape
    C, H, W = shape[-3:]
    window = min(window, H, W)
    window = max(1, window - (1 - window % 2))
    g = _gauss(window, sigma * window / 11)
    kh = g[None, None, :, None].repeat(C, 1, 1, 1)  # the Gaussian window is separable: rows, then columns
    kw = g[None, None, None, :].repeat(C, 1, 1, 1)
    a = a.reshape(-1, C, H, W)
    b = b.reshape(-1, C, H, W)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, kh, groups=C), kw, groups=C)

    mu_a, mu_b = filt(a), filt(b)
    saa = filt(a * a) - mu_a ** 2
    sbb = filt(b * b) - mu_b ** 2
    sab = filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    m = m.mean(1)
    return m.reshape(*shape[:-3], *m.shape[-2:])


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM of two ``[..., C, H, W]`` tensors."""
    return float(ssim_map(a, b, data_range).mean())


def masked_ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0,
                window: int = 11) -> float:
    """SSIM averaged where the whole window lies inside ``mask`` ``[..., H, W]`` (nan if nowhere)."""
    C, H, W = a.shape[-3:]
    win = min(window, H, W)
    win = max(1, win - (1 - win % 2))
    m = ssim_map(a, b, data_range, win)
    inside = -F.max_pool2d(-(mask > 0.5).double().reshape(-1, 1, H, W), win, stride=1)
    inside = inside.reshape(*m.shape)
    if float(inside.sum()) < 1:
        return float("nan")
    return float((m * inside).sum() / inside.sum())


def psnr(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB from a mean squared error (capped at 100 dB for identical signals)."""
    if mse <= 0:
        return 100.0
    return min(100.0, 10 * math.log10(data_range ** 2 / mse))


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared error over ``mask`` ``[..., H, W]`` (broadcast over channels)."""
    m = mask.double().unsqueeze(-3)
    d = ((a.double() - b.double()) ** 2 * m).sum()
    n = float(m.sum()) * a.shape[-3]
    return float(d / n) if n > 0 else float("nan")


def background_mask(layout: Layout, height: int, width: int, margin: float = 2.0) -> torch.Tensor:
    """``[T, H, W]`` 1 where no object is (now or in the source), boxes grown by ``margin`` px."""
    boxes = layout.boxes()
    N, T = boxes.shape[:2]
    obj = soft_union(box_masks(boxes.reshape(-1, 4), height, width, 0, margin).reshape(N, T, height, width), 0)
    src = soft_union(box_masks(boxes[:, 0], height, width, 0, margin), 0)
    return ((obj + src[None]) <= 0).float()


def vacated_mask(layout: Layout, height: int, width: int, margin: float = 2.0) -> torch.Tensor:
    """``[T, H, W]`` 1 inside a source box (shrunk by ``margin``) where no object box (grown) is now."""
    boxes = layout.boxes()
    N, T = boxes.shape[:2]
    obj = soft_union(box_masks(boxes.reshape(-1, 4), height, width, 0, margin).reshape(N, T, height, width), 0)
    src = soft_union(box_masks(boxes[:, 0], height, width, 0, -margin), 0)
    return ((src[None] >= 1 - 1e-6) & (obj <= 0)).float()


def background_consistency(video: torch.Tensor, source: torch.Tensor, layout: Layout,
                           data_range: float = 1.0, margin: float = 2.0) -> dict[str, float]:
    """PSNR (pooled MSE) and SSIM outside every box, video ``[T,C,H,W]`` vs source ``[C,H,W]``."""
    T, C, H, W = video.shape
    m = background_mask(layout, H, W, margin)
    src = source[None].expand_as(video)
    mse = masked_mse(video, src, m)
    return {"psnr": psnr(mse, data_range), "ssim": masked_ssim(video, src, m, data_range),
            "fraction": float(m.mean())}


def afterimage_score(video: torch.Tensor, source: torch.Tensor, plate: torch.Tensor, layout: Layout,
                     margin: float = 2.0, min_pixels: int = 4) -> dict[str, Any]:
    """Afterimage in the vacated region per frame and its mean (nan where nothing is vacated)."""
    T, C, H, W = video.shape
    v = vacated_mask(layout, H, W, margin)
    plate = plate if plate.ndim == 4 else plate[None].expand_as(video)
    per = []
    for t in range(T):
        if float(v[t].sum()) < min_pixels:
            per.append(float("nan"))
            continue
        d_v = masked_mse(video[t], source, v[t])
        d_p = masked_mse(plate[t], source, v[t])
        per.append(float("nan") if d_p <= 1e-12 else max(0.0, min(1.0, 1 - math.sqrt(d_v / d_p))))
    valid = [p for p in per if not math.isnan(p)]
    return {"score": sum(valid) / len(valid) if valid else float("nan"), "per_frame": per,
            "frames": len(valid)}


def object_consistency(video: torch.Tensor, source: torch.Tensor, source_box: torch.Tensor,
                       boxes: torch.Tensor, data_range: float = 1.0, min_visible: float = 0.9) -> dict[str, Any]:
    """SSIM of the crop at ``boxes[t]`` against the source crop, at the smaller of the two sizes."""
    T, C, H, W = video.shape
    sw, sh = float(source_box[2] - source_box[0]) * W, float(source_box[3] - source_box[1]) * H
    per = []
    vis = visibility(boxes)
    for t in range(T):
        if float(vis[t]) < min_visible:
            per.append(float("nan"))
            continue
        bw, bh = float(boxes[t, 2] - boxes[t, 0]) * W, float(boxes[t, 3] - boxes[t, 1]) * H
        oh, ow = max(7, round(min(sh, bh))), max(7, round(min(sw, bw)))
        a, _ = crop_box(video[t].float(), boxes[t], oh, ow)
        b, _ = crop_box(source.float(), source_box, oh, ow)
        per.append(ssim(a, b, data_range))
    valid = [p for p in per if not math.isnan(p)]
    return {"ssim": sum(valid) / len(valid) if valid else float("nan"), "per_frame": per}


def trajectory_adherence(tracked: torch.Tensor, target: torch.Tensor, min_visible: float = 0.3) -> dict[str, Any]:
    """IoU of tracked vs target boxes ``[T, 4]`` after clipping; frames with a mostly hidden target skipped."""
    ious = box_iou(clip_boxes(tracked), clip_boxes(target))
    scored = visibility(target) >= min_visible
    s = ious[scored]
    return {"viou50": float((s >= 0.5).float().mean()) if len(s) else float("nan"),
            "miou": float(s.mean()) if len(s) else float("nan"),
            "ious": [round(float(i), 4) if bool(k) else None for i, k in zip(ious, scored)],
            "frames": int(scored.sum())}


def evaluate_layout(video: torch.Tensor, source: torch.Tensor, layout: Layout, plate: torch.Tensor | None = None,
                    data_range: float | None = None, work_size: int = 128, fill: str = "diffuse",
                    margin: float | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """All metrics for a video ``[T, C, H, W]`` made from ``source`` ``[C, H, W]`` following ``layout``.

    ``plate`` (``[C,H,W]`` or ``[T,C,H,W]``) is the afterimage reference; by default the built-in fill.
    ``work_size`` is the tracking resolution, raised for small boxes (:func:`.track.work_size_for`).
    ``margin`` (px) grows the boxes for the background and vacated regions (default 3% of the longer
    side, at least 2 px: feathered guide edges are not background).
    Returns a JSON-able dict: overall ``viou50``, ``miou``, ``object_ssim``, ``background_psnr``,
    ``background_ssim``, ``afterimage`` and per-object details including the tracked boxes.
    """
    T, C, H, W = video.shape
    if T != layout.frames:
        raise ValueError(f"video has {T} frames but the layout has {layout.frames}")
    if tuple(source.shape) != (C, H, W):
        raise ValueError(f"source is {tuple(source.shape)} but video frames are {(C, H, W)}")
    if data_range is None:
        data_range = float(source.max() - source.min()) or 1.0
    if plate is None:
        plate = make_plate(source, layout, fill)
    boxes = layout.boxes()
    N = boxes.shape[0]
    objs, all_ious = [], []
    for k in range(N):
        def prog(i: int, n: int, k=k) -> None:
            if progress is not None:
                progress(k * T + i, N * T)
        ws = work_size_for(boxes[k][visibility(boxes[k]) >= 0.3], H, W, work_size)
        tr = track_template(video, source, boxes[k, 0], work_size=ws, progress=prog)
        adh = trajectory_adherence(tr.boxes, boxes[k])
        cons = object_consistency(video, source, boxes[k, 0], tr.boxes, data_range)
        all_ious += [i for i in adh["ious"] if i is not None]
        objs.append({"phrase": layout.objects[k].phrase, **{k2: adh[k2] for k2 in ("viou50", "miou", "frames", "ious")},
                     "object_ssim": cons["ssim"], "tracked_boxes": [[round(float(v), 4) for v in b] for b in tr.boxes],
                     "track_scores": [round(float(s), 4) for s in tr.scores]})
    if margin is None:
        margin = max(2.0, 0.03 * max(H, W))
    bg = background_consistency(video, source, layout, data_range, margin)
    aft = afterimage_score(video, source, plate, layout, margin)
    ssims = [o["object_ssim"] for o in objs if not math.isnan(o["object_ssim"])]
    return {
        "frames": T, "objects_count": N,
        "viou50": sum(i >= 0.5 for i in all_ious) / len(all_ious) if all_ious else float("nan"),
        "miou": sum(all_ious) / len(all_ious) if all_ious else float("nan"),
        "object_ssim": sum(ssims) / len(ssims) if ssims else float("nan"),
        "background_psnr": bg["psnr"], "background_ssim": bg["ssim"],
        "afterimage": aft["score"], "afterimage_per_frame": aft["per_frame"],
        "objects": objs,
    }
