"""Spatio-temporal masked denoising: a per-step, per-region schedule as a ComfyUI denoise-mask function.

ComfyUI's sampler (``KSamplerX0Inpaint``) holds every latent pixel with denoise mask 0 to the latent
image (our guide latents, noised to the current sigma) and lets pixels with mask 1 be denoised freely;
``model_options["denoise_mask_function"](sigma, mask, extra_options)`` may replace the mask per step.
:class:`LayoutDenoiseMask` is such a function: regions are held to the guide while the sampling
progress is below their ``*_end`` fraction and released afterwards.

* background (``background_end``, default 0.9): held to the source for most steps;
* object (``object_end``, default 0.4): pulled to the moved/scaled object early, so position and size
  follow the boxes, then released for in-place motion and edge blending by the video model;
* vacated (``vacated_end``, default 0.8): pulled to the background plate, so the object cannot linger
  where it was (motion afterimage suppression).

This module does not import comfy; it only reads ``extra_options["sigmas"]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RegionSchedule:
    """Fractions of the sampling steps during which each region is held to the guide."""

    object_end: float = 0.4
    vacated_end: float = 0.8
    background_end: float = 0.9

    def __post_init__(self) -> None:
        for name in ("object_end", "vacated_end", "background_end"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"schedule {name}={v} must be within 0..1")

    def held(self, progress: float) -> tuple[bool, bool, bool]:
        """Whether (object, vacated, background) are held at ``progress`` (0 = first step)."""
        return (progress < self.object_end, progress < self.vacated_end, progress < self.background_end)


def step_progress(sigma: float, sigmas: torch.Tensor | None) -> float:
    """Fraction of the schedule done when the model is evaluated at ``sigma``: step index / step count.

    A sigma between two schedule entries (second-order samplers) counts as the later step.
    """
    if sigmas is None or len(sigmas) < 2:
        return 0.0
    s = sigmas.detach().float().cpu()
    n = len(s) - 1
    i = int((s[:-1] > float(sigma) * (1 + 1e-4) + 1e-8).sum())
    return min(i, n) / n


def free_mask(regions: torch.Tensor, schedule: RegionSchedule, progress: float) -> torch.Tensor:
    """Denoise mask (1 = free) from region weights ``[3, ...]`` (object, vacated, background)."""
    held = torch.tensor(schedule.held(progress), dtype=regions.dtype, device=regions.device)
    return (1 - (regions * held.view(3, *([1] * (regions.ndim - 1)))).sum(0)).clamp(0, 1)


class LayoutDenoiseMask:
    """``denoise_mask_function`` for ComfyUI: region masks that change with the sampling step.

    ``regions`` is ``[3, T, h, w]`` (object, vacated, background; a partition of unity) at latent size.
    Frames-as-batch latents ``[B, C, h, w]`` need ``B`` to be a multiple of ``T``; video latents
    ``[B, C, T, h, w]`` are supported too. A latent of another size than the masks is an error (the masks
    were made for the guide latent, which is what must be sampled).
    """

    def __init__(self, regions: torch.Tensor, schedule: RegionSchedule) -> None:
        if regions.ndim != 4 or regions.shape[0] != 3:
            raise ValueError(f"regions must be [3, T, h, w], got {tuple(regions.shape)}")
        self.regions = regions.float().cpu()
        self.schedule = schedule
        self._cache: dict = {}

    def __deepcopy__(self, memo: dict) -> "LayoutDenoiseMask":
        # ModelPatcher.clone() deep-copies model_options; the masks are never mutated, share them.
        return LayoutDenoiseMask(self.regions, self.schedule)

    def mask_for(self, progress: float, shape: torch.Size | tuple, device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The denoise mask for a latent/mask of ``shape`` at ``progress``."""
        T, h, w = self.regions.shape[1:]
        shape = tuple(shape)
        key = (shape, str(device), dtype)
        reg = self._cache.get(key)
        if reg is None:
            reg = self.regions
            H, W = shape[-2:]
            if (H, W) != (h, w):
                raise ValueError(f"the sampled latent is {W}x{H} but the layout regions were made for {w}x{h} (the "
                                 f"guide latent): sample the LATENT that Layout Masked Denoise returns")
            if len(shape) == 5:  # [B, C, T, H, W]
                if shape[2] != T:
                    raise ValueError(f"video latent has {shape[2]} frames but the layout has {T}")
                reg = reg[:, None, None]  # [3, 1, 1, T, H, W]
            else:
                B = shape[0]
                if B % T:
                    raise ValueError(f"latent batch of {B} frames is not a multiple of the layout's {T} frames")
                reg = reg.repeat(1, B // T, 1, 1)[:, :, None]  # [3, B, 1, H, W]
            reg = reg.to(device=device, dtype=dtype)
            self._cache = {key: reg}
        return free_mask(reg, self.schedule, progress).expand(shape)

    def progress(self, sigma: torch.Tensor | float, extra_options: dict | None) -> float:
        """Where the sampler is when it calls with ``sigma`` (0 = first step … 1)."""
        s = float(sigma.max()) if torch.is_tensor(sigma) else float(sigma)
        return step_progress(s, (extra_options or {}).get("sigmas"))

    def __call__(self, sigma: torch.Tensor, denoise_mask: torch.Tensor, extra_options: dict) -> torch.Tensor:
        p = self.progress(sigma, extra_options)
        return self.mask_for(p, denoise_mask.shape, denoise_mask.device, denoise_mask.dtype)


def region_stack(object_mask: torch.Tensor, vacated_mask: torch.Tensor, background_mask: torch.Tensor) -> torch.Tensor:
    """Stack ``[T, h, w]`` region masks into the ``[3, T, h, w]`` form :class:`LayoutDenoiseMask` takes."""
    return torch.stack([object_mask, vacated_mask, background_mask]).float()


def static_mask(regions: torch.Tensor) -> torch.Tensor:
    """Fallback latent ``noise_mask`` ``[T, 1, h, w]`` for samplers without our function: background held."""
    return (1 - regions[2]).clamp(0, 1)[:, None]
