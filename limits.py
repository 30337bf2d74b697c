"""Limits shared by every node of the pack, and memory estimates made before allocating.

One frame limit for the whole pack (layouts, masks, guides, I2V latents), one pixel limit for images and
masks the pack makes, and :func:`check_alloc`: a request whose working memory is estimated above what the
device (or RAM, for CPU tensors) has free is refused with the estimate, before anything is allocated.
"""
from __future__ import annotations

import math

import torch

from .layout.boxes import MAX_FRAMES  # frames of any video the pack builds (the models were trained on 16)

__all__ = ["MAX_FRAMES", "MAX_SIDE", "HEADROOM", "nbytes", "human", "free_memory", "check_alloc", "check_frames",
           "check_side", "vae_encode_need"]
MAX_SIDE = 8192      # pixels per side of images/masks the pack makes
HEADROOM = 0.9       # share of the free memory a single request may plan to use


def nbytes(shape, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype``."""
    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty((), dtype=dtype).element_size()


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_memory(device: torch.device | str | None = None) -> int:
    """Free memory of ``device`` as ComfyUI sees it (RAM for the CPU)."""
    import comfy.model_management as mm

    dev = torch.device(device) if device is not None else torch.device("cpu")
    try:
        return int(mm.get_free_memory(dev))
    except Exception:  # a device ComfyUI cannot query: do not block on it
        return 1 << 62


def check_alloc(estimate: int, what: str, device: torch.device | str | None = None,
                hint: str = "") -> None:
    """Refuse (ValueError) a request whose estimated working memory exceeds what ``device`` has free."""
    free = free_memory(device)
    if estimate > HEADROOM * free:
        where = "RAM" if device is None or torch.device(device).type == "cpu" else str(device)
        raise ValueError(f"{what} would need about {human(estimate)} of memory, more than the {human(free)} free "
                         f"{'in ' if where == 'RAM' else 'on '}{where}{'; ' + hint if hint else ''}")


def vae_encode_need(vae, height: int, width: int) -> int:
    """Bytes ComfyUI expects one ``height``×``width`` VAE encode to take *in RAM* (its own
    ``memory_used_encode`` estimate; 0 when the VAE runs on a GPU, where ComfyUI tiles instead of failing)."""
    fn = getattr(vae, "memory_used_encode", None)
    dev = torch.device(getattr(vae, "device", "cpu") or "cpu")
    if fn is None or dev.type != "cpu":
        return 0
    try:
        return int(fn((1, 3, int(height), int(width)), getattr(vae, "vae_dtype", torch.float32)))
    except Exception:  # a VAE whose estimate wants other shapes: no estimate
        return 0


def check_frames(frames: int, what: str = "frames") -> int:
    """A frame count in 1..MAX_FRAMES (ValueError otherwise)."""
    if not isinstance(frames, (int, float)) or frames != int(frames) or not 1 <= int(frames) <= MAX_FRAMES:
        raise ValueError(f"{what} must be a whole number in 1..{MAX_FRAMES}; got {frames}")
    return int(frames)


def check_side(value: int, what: str) -> int:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 1 <= int(value) <= MAX_SIDE:
        raise ValueError(f"{what} must be 1..{MAX_SIDE} pixels; got {value}")
    return int(value)
