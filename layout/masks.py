"""Per-frame box masks and the region split used by guide compositing, masked denoising and metrics.

Regions per frame ``t`` (soft, they sum to 1 everywhere):

* ``objects``: where objects are at frame ``t`` (their boxes grown by ``margin`` and feathered outward);
* ``vacated``: the objects' source boxes (frame 0) not covered by an object at ``t``: the place an
  object left, which must show the background plate, never the object (motion afterimage suppression);
* ``background``: everything else, which must stay the source.
"""
from __future__ import annotations

import torch

from .boxes import Layout


def _profile(lo: torch.Tensor, hi: torch.Tensor, n: int, feather: float) -> torch.Tensor:
    """1-D soft indicator of ``[lo, hi]`` (pixel units) sampled at ``n`` pixels: ``[B, n]``.

    Without feather it is the exact pixel coverage (anti-aliased); with feather it ramps from 1 at the
    interval edge to 0 at ``feather`` pixels outside.
    """
    x = torch.arange(n, dtype=torch.float32)
    lo, hi = lo[:, None].float(), hi[:, None].float()
    if feather <= 0:
        return (torch.minimum(x + 1, hi) - torch.maximum(x, lo)).clamp(0, 1)
    c = x + 0.5
    d = torch.maximum(lo - c, c - hi).clamp(min=0)
    return (1 - d / feather).clamp(0, 1)


def box_masks(boxes: torch.Tensor, height: int, width: int, feather: float = 0.0,
              grow: float = 0.0) -> torch.Tensor:
    """Soft masks ``[B, H, W]`` of normalised boxes ``[B, 4]`` (pixels: ``feather`` ramp, ``grow`` dilation)."""
    b = boxes.reshape(-1, 4).float()
    mx = _profile(b[:, 0] * width - grow, b[:, 2] * width + grow, width, feather)
    my = _profile(b[:, 1] * height - grow, b[:, 3] * height + grow, height, feather)
    return my[:, :, None] * mx[:, None, :]


def soft_union(masks: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Probabilistic union ``1 - prod(1 - m)`` along ``dim``."""
    return 1 - (1 - masks.clamp(0, 1)).prod(dim)


def object_masks(layout: Layout, height: int, width: int, feather: float = 0.0,
                 grow: float = 0.0) -> torch.Tensor:
    """Per-object, per-frame masks ``[N, T, H, W]``."""
    boxes = layout.boxes()
    N, T = boxes.shape[:2]
    return box_masks(boxes.reshape(-1, 4), height, width, feather, grow).reshape(N, T, height, width)


def layout_mask(layout: Layout, height: int, width: int, feather: float = 0.0, grow: float = 0.0,
                objects: list[int] | None = None) -> torch.Tensor:
    """ComfyUI MASK ``[T, H, W]``: union of the chosen objects' boxes at each frame."""
    m = object_masks(layout, height, width, feather, grow)
    if objects is not None:
        for i in objects:
            if not 0 <= i < m.shape[0]:
                raise ValueError(f"layout object {i} does not exist (layout has {m.shape[0]} objects)")
        m = m[objects]
    return soft_union(m, 0)


def region_masks(layout: Layout, height: int, width: int, feather: float = 0.0,
                 margin: float = 0.0) -> dict[str, torch.Tensor]:
    """``objects``/``vacated``/``background`` masks ``[T, H, W]`` (partition of unity) and ``source`` ``[H, W]``."""
    boxes = layout.boxes()
    N, T = boxes.shape[:2]
    obj = soft_union(box_masks(boxes.reshape(-1, 4), height, width, feather, margin).reshape(N, T, height, width), 0)
    src = soft_union(box_masks(boxes[:, 0], height, width, feather, margin), 0)
    vac = (src[None] - obj).clamp(min=0)
    bg = 1 - torch.maximum(obj, src[None])
    return {"objects": obj, "vacated": vac, "background": bg, "source": src}
