"""Video frames ↔ latent frames, for latents whose VAE compresses time (Wan: 4 frames per latent frame).

A causal video VAE with temporal ratio ``r`` turns ``1 + r·k`` frames into ``1 + k`` latent frames: latent frame 0
is frame 0 alone, latent frame ``j ≥ 1`` holds frames ``r(j−1)+1 … rj``. ``r`` comes from ComfyUI (the VAE's
``downscale_index_formula``, the latent format's ``temporal_downscale_ratio``: ``families.temporal_ratio``); with
``r = 1`` (DynamiCrafter, SVD: one latent per frame) every function here is the identity.

Region masks of a latent frame are made from its pixel frames (:func:`combine_regions`): the object region is
where an object is in *any* of the frames (so the guide's motion inside the latent frame is followed), the vacated
region is where any frame shows a vacated place and no frame an object, and the background region is what is
background in all of them — the three still sum to 1.
"""
from __future__ import annotations

import torch

__all__ = ["latent_frames", "frames_for_latents", "latent_groups", "check_frame_count", "combine_regions",
           "pixel_frames_of"]


def latent_frames(frames: int, ratio: int) -> int:
    """Latent frames of a ``frames``-frame video (``(frames − 1) // ratio + 1``, as core's Wan nodes make them)."""
    return (int(frames) - 1) // int(ratio) + 1 if ratio > 1 else int(frames)


def frames_for_latents(latents: int, ratio: int) -> int:
    """The video length ``1 + ratio·(latents − 1)`` that fills ``latents`` latent frames exactly."""
    return 1 + int(ratio) * (int(latents) - 1) if ratio > 1 else int(latents)


def check_frame_count(frames: int, ratio: int, what: str = "the layout") -> None:
    """ValueError unless ``frames`` fills whole latent frames (``1 + ratio·k``)."""
    if ratio > 1 and (frames - 1) % ratio:
        lo = frames_for_latents(latent_frames(frames, ratio), ratio)
        raise ValueError(f"{what} has {frames} frames, but this VAE packs {ratio} frames into each latent frame after "
                         f"the first: use 1 + {ratio}k frames (e.g. {lo} or {lo + ratio}; Wan's default is 81)")


def latent_groups(frames: int, ratio: int) -> list[list[int]]:
    """For each latent frame, the pixel frames it holds: ``[[0], [1..r], [r+1..2r], …]`` (``[[0], [1], …]`` for r=1)."""
    if ratio <= 1:
        return [[t] for t in range(frames)]
    return [[0]] + [list(range(ratio * (j - 1) + 1, min(ratio * j, frames - 1) + 1))
                    for j in range(1, latent_frames(frames, ratio))]


def pixel_frames_of(frames: int, ratio: int) -> list[int]:
    """The last pixel frame of each latent frame (where a latent frame "is" in time)."""
    return [g[-1] for g in latent_groups(frames, ratio)]


def combine_regions(regions: torch.Tensor, ratio: int) -> torch.Tensor:
    """Per-frame region masks ``[3, T, h, w]`` (objects, vacated, background) → per-latent-frame ``[3, T', h, w]``.

    ``ratio`` 1 returns the input unchanged (bit for bit). Otherwise, per latent frame: objects = max over its frames,
    vacated = min(max over its frames, 1 − objects), background = 1 − objects − vacated (still a partition of 1)."""
    if ratio <= 1:
        return regions
    if regions.ndim != 4 or regions.shape[0] != 3:
        raise ValueError(f"regions must be [3, T, h, w], got {tuple(regions.shape)}")
    out = []
    for group in latent_groups(regions.shape[1], ratio):
        obj = regions[0, group].amax(0)
        vac = torch.minimum(regions[1, group].amax(0), 1 - obj)
        out.append(torch.stack([obj, vac, (1 - obj - vac).clamp(min=0)]))
    return torch.stack(out, 1)
