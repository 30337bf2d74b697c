"""Out-of-place guide video: each object's source-box content moved and scaled into its per-frame box,
feathered, over a background plate whose vacated source regions are filled (MAS at the pixel level).

Images here are channel-first ``[C, H, W]`` / ``[T, C, H, W]`` float tensors (any channel count).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .boxes import Layout
from .frames import latent_groups
from .masks import box_masks, soft_union

FILLS: tuple[str, ...] = ("diffuse", "mean", "none")
Progress = Callable[[int, int], None]


def _pushpull(p: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Fill unknown pixels of a premultiplied image ``p`` ``[C,H,W]`` with weights ``w`` ``[1,H,W]``."""
    if bool((w > 1e-6).all()):
        return p / w
    H, W = p.shape[-2:]
    if H <= 1 and W <= 1:
        return torch.full_like(p, 0.5)
    pd = F.avg_pool2d(p[None], 2, ceil_mode=True)[0]
    wd = F.avg_pool2d(w[None], 2, ceil_mode=True)[0]
    coarse = _pushpull(pd, wd)
    up = F.interpolate(coarse[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    a = w.clamp(0, 1)
    return a * (p / w.clamp(min=1e-6)) + (1 - a) * up


def fill_region(image: torch.Tensor, region: torch.Tensor, method: str = "diffuse") -> torch.Tensor:
    """Fill ``region`` (``[H, W]``, 1 = replace) of ``image`` ``[C, H, W]`` without any model.

    ``diffuse``: push-pull pyramid interpolation from the surrounding pixels (smooth, seamless);
    ``mean``: the mean colour of a ring around the region; ``none``: keep the source (no suppression).
    """
    if method not in FILLS:
        raise ValueError(f"fill {method!r} is not one of {', '.join(FILLS)}")
    region = region.to(image).clamp(0, 1)[None]
    if method == "none" or not bool((region > 0).any()):
        return image.clone()
    known = 1 - region
    if method == "diffuse":
        filled = _pushpull(image.double() * known.double(), known.double()).to(image.dtype)
    else:
        H, W = image.shape[-2:]
        r = max(2, round(0.05 * max(H, W)))
        ring = F.max_pool2d((region > 0).float()[None], 2 * r + 1, stride=1, padding=r)[0] * known
        if float(ring.sum()) < 1:
            ring = known
        mean = (image * ring).sum((-1, -2), keepdim=True) / ring.sum().clamp(min=1e-6)
        filled = mean.expand_as(image)
    return image * known + filled * region


def make_plate(image: torch.Tensor, layout: Layout, method: str = "diffuse", margin: float = 4.0) -> torch.Tensor:
    """Background plate ``[C, H, W]``: the source with every object's source box (grown by ``margin`` px) filled."""
    H, W = image.shape[-2:]
    region = soft_union(box_masks(layout.source_boxes(), H, W, 0.0, margin), 0)
    return fill_region(image, region, method)


def _pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    out = [image]
    for _ in range(levels):
        if min(out[-1].shape[-2:]) < 2:
            break
        out.append(F.avg_pool2d(out[-1][None], 2, ceil_mode=True)[0])
    return out


def warp_box(image: torch.Tensor, src_box: torch.Tensor, dst_boxes: torch.Tensor,
             pyramid: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Map the content of ``src_box`` onto each of ``dst_boxes`` ``[T, 4]`` over the whole frame.

    Returns colours ``[T, C, H, W]`` and coverage ``[T, H, W]`` (0 where the mapped point falls outside
    the source image). Shrinking samples a pre-filtered pyramid level, so small boxes do not alias.
    """
    C, H, W = image.shape
    pyr = pyramid if pyramid is not None else _pyramid(image, 6)
    T = dst_boxes.shape[0]
    sb = src_box.double()
    db = dst_boxes.double()
    sw, sh = sb[2] - sb[0], sb[3] - sb[1]
    dw, dh = db[:, 2] - db[:, 0], db[:, 3] - db[:, 1]
    xs = (torch.arange(W, dtype=torch.float64) + 0.5) / W
    ys = (torch.arange(H, dtype=torch.float64) + 0.5) / H
    # normalised destination coordinate -> normalised source coordinate (per frame, separable)
    gx = sb[0] + (xs[None] - db[:, :1]) * (sw / dw)[:, None]  # [T, W]
    gy = sb[1] + (ys[None] - db[:, 1:2]) * (sh / dh)[:, None]  # [T, H]
    grid = torch.stack([gx[:, None, :].expand(T, H, W), gy[:, :, None].expand(T, H, W)], -1) * 2 - 1
    scale = torch.minimum(dw / sw, dh / sh)  # < 1: shrinking
    level = (-torch.log2(scale.clamp(min=1e-6))).floor().clamp(0, len(pyr) - 1).long()
    colour = torch.empty(T, C, H, W, dtype=image.dtype)
    cover = torch.empty(T, H, W, dtype=image.dtype)
    for lv in level.unique().tolist():
        idx = torch.nonzero(level == lv).flatten()
        src = torch.cat([pyr[lv], torch.ones_like(pyr[lv][:1])], 0)[None].expand(len(idx), -1, -1, -1)
        s = F.grid_sample(src, grid[idx].to(image.dtype), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        cov = s[:, -1]
        colour[idx] = s[:, :-1] / cov[:, None].clamp(min=1e-6)
        cover[idx] = cov
    return colour, cover.clamp(0, 1)


def composite_guide(image: torch.Tensor, layout: Layout, plate: torch.Tensor | None = None,
                    feather: float = 8.0, margin: float = 4.0, fill: str = "diffuse",
                    progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Guide video ``[T, C, H, W]`` and the plate used (``[C,H,W]`` or ``[T,C,H,W]``).

    Each object (in layout order, later ones on top) is pasted at its frame box grown by ``margin + 1``
    px, with an outward feather of ``feather`` px, over ``plate`` (or the built-in ``fill`` of the
    source boxes grown by ``margin`` px). A box that does not move reproduces the source exactly.
    """
    C, H, W = image.shape
    T = layout.frames
    if plate is None:
        plate = make_plate(image, layout, fill, margin)
    plate = plate.to(image)
    if plate.ndim == 3:
        frames = plate[None].repeat(T, 1, 1, 1)
    elif plate.shape[0] == T:
        frames = plate.clone()
    elif plate.shape[0] == 1:
        frames = plate.repeat(T, 1, 1, 1)
    else:
        raise ValueError(f"plate has {plate.shape[0]} frames; give 1 or the layout's {T}")
    if tuple(frames.shape[1:]) != (C, H, W):
        raise ValueError(f"plate is {frames.shape[-1]}x{frames.shape[-2]} but the image is {W}x{H}")
    boxes = layout.boxes()
    pyr = _pyramid(image, 6)
    N = boxes.shape[0]
    for k in range(N):
        colour, cover = warp_box(image, boxes[k, 0], boxes[k], pyr)
        alpha = box_masks(boxes[k], H, W, feather, margin + 1.0) * cover
        frames = frames * (1 - alpha[:, None]) + colour * alpha[:, None]
        if progress is not None:
            progress(k + 1, N)
    return frames, plate


def change_mask(layout: Layout, height: int, width: int, grow: float) -> torch.Tensor:
    """Hard ``[T, H, W]`` mask of everything the guide may change: frame boxes and source boxes, grown."""
    boxes = layout.boxes()
    N, T = boxes.shape[:2]
    m = box_masks(boxes.reshape(-1, 4), height, width, 0.0, grow).reshape(N, T, height, width)
    s = box_masks(boxes[:, 0], height, width, 0.0, grow)
    return ((soft_union(m, 0) + soft_union(s, 0)[None]) > 0).float()


def compose_latents(source_latent: torch.Tensor, frame_latents: torch.Tensor, layout: Layout,
                    grow: float = 2.0, ratio: int = 1) -> torch.Tensor:
    """Guide latents: the encoded guide where the guide may differ from the source (boxes grown by ``grow`` latent
    px) and exactly the source latent everywhere else.

    Frames as batch (``ratio`` 1): ``frame_latents`` ``[T, C, h, w]``, ``source_latent`` one frame's. Video latents
    ``[B, C, T', h, w]`` (``ratio`` frames per latent frame after the first): ``source_latent`` is the static source
    video's, and a latent frame may differ wherever any of its frames may."""
    if frame_latents.ndim == 5:
        C, Tl, h, w = frame_latents.shape[1:]
        m = change_mask(layout, h, w, grow)
        m = torch.stack([m[g].amax(0) for g in latent_groups(layout.frames, ratio)])[None, None].to(frame_latents)
        if m.shape[2] != Tl:
            raise ValueError(f"the guide has {Tl} latent frames but the layout's {layout.frames} frames make {m.shape[2]}")
        return source_latent.to(frame_latents) * (1 - m) + frame_latents * m
    T, C, h, w = frame_latents.shape
    src = source_latent.reshape(-1, C, h, w)[:1].to(frame_latents)
    m = change_mask(layout, h, w, grow).to(frame_latents)[:, None]
    return src * (1 - m) + frame_latents * m


def latent_grow(feather: float, margin: float, ratio: int) -> float:
    """Pixel feather + margin in latent pixels (rounded up, plus one for the encoder's reach)."""
    return float(math.ceil((feather + margin + 1.0) / max(1, ratio)) + 1)
