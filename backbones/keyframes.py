"""Keyframe interpolation with DynamiCrafter interp/loop models: N keyframes → N−1 segments → one video.

Segment k is an interpolation video from keyframe k (first frame) to keyframe k+1 (last frame); the N−1
segments are sampled together as one batch of videos (frames-as-batch, ``num_video_frames`` = segment length),
so each segment has its own noise, guidance rescale and image tokens (those of its first keyframe, as the
official interpolation code). Joining drops the one frame where consecutive segments meet (both show the
same keyframe), so nothing repeats: ``(N−1)·(T−1) + 1`` frames.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .conditioning import check_request, encode, fit_image, video_conds

SEAMS: tuple[str, ...] = ("next_segment", "previous_segment", "average")


def gather_keyframes(images: Sequence[torch.Tensor | None], width: int, height: int,
                     resize_mode: str = "crop") -> torch.Tensor:
    """Keyframes ``[N, height, width, 3]`` from IMAGE inputs in order (each may be a batch; None skipped),
    each brought to the video size on its own (so their sizes may differ)."""
    frames = [fit_image(img, width, height, resize_mode) for img in images if img is not None]
    keys = torch.cat(frames) if frames else torch.zeros(0, height, width, 3)
    if keys.shape[0] < 2:
        raise ValueError(f"keyframe interpolation needs at least 2 keyframes; got {keys.shape[0]}")
    return keys


def keyframe_conditioning(vae, clip_vision, keys: torch.Tensor, width: int, height: int, length: int,
                          fps: int) -> tuple[dict, dict, torch.Tensor]:
    """Cond values and the empty latent of the N−1 segments between ``keys`` ``[N, H, W, 3]`` (already at
    the video size): segment k starts at keyframe k and ends at keyframe k+1, ``length`` frames each."""
    if length < 2:
        raise ValueError(f"a segment needs at least 2 frames (its two keyframes); got length {length}")
    check_request(vae, clip_vision, width, height, length, keys.shape[0] - 1, interp=True)
    lat = encode(vae, keys)  # each keyframe once: it ends one segment and starts the next
    return video_conds(clip_vision, keys[:-1], lat[:-1], lat[1:], length, fps)


def join_segments(images: torch.Tensor, segment_length: int, seam: str = "next_segment") -> torch.Tensor:
    """Frames of consecutive segments ``[S·T, …]`` → one video ``[S·(T−1) + 1, …]``: where segment k ends and
    k+1 begins (the same keyframe) one frame is kept — the next segment's first (``next_segment``), the
    previous one's last (``previous_segment``) or their mean (``average``)."""
    if seam not in SEAMS:
        raise ValueError(f"unknown seam {seam!r}; expected one of {', '.join(SEAMS)}")
    t = int(segment_length)
    if t < 2 or images.shape[0] % t:
        raise ValueError(f"{images.shape[0]} frames are not whole segments of segment_length {t}: set it to the "
                         f"length of the keyframe node")
    segs = list(images.reshape(-1, t, *images.shape[1:]))
    out = [segs[0][:-1]]
    for prev, nxt in zip(segs[:-1], segs[1:]):
        meet = {"next_segment": nxt[:1], "previous_segment": prev[-1:],
                "average": (prev[-1:] + nxt[:1]) / 2}[seam]
        out += [meet, nxt[1:-1]]
    out.append(segs[-1][-1:])
    return torch.cat(out)


__all__ = ["SEAMS", "gather_keyframes", "keyframe_conditioning", "join_segments"]
