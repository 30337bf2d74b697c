"""Spatio-temporal masked denoising: a per-step, per-region schedule as a ComfyUI denoise-mask function.

ComfyUI's sampler (``KSamplerX0Inpaint``) holds every latent pixel with denoise mask 0 to the latent
image (our guide latents, noised to the current sigma) and lets pixels with mask 1 be denoised freely;
``model_options["denoise_mask_function"](sigma, mask, extra_options)`` may replace the mask per step.
:class:`LayoutDenoiseMask` is such a function: each region is held to the guide while the run's progress is below
its ``*_end`` and released afterwards.

* background (``background_end``, default 0.9): held to the source for most of the run;
* object (``object_end``, default 0.4): pulled to the moved/scaled object early, so position and size
  follow the boxes, then released for in-place motion and edge blending by the video model;
* vacated (``vacated_end``, default 0.8): pulled to the background plate, so the object cannot linger
  where it was (motion afterimage suppression).

Progress is a point of the *whole* run on the noise level (0 = pure noise … 1 = clean), not a step index of one
sampler call: the node passes ComfyUI's own scale (``percent_to_sigma``'s, as conditioning timestep ranges use), so
``object_end`` means the same whether one KSampler runs every step or two KSamplerAdvanced with two models (Wan 2.2
A14B's experts) split the run; with ComfyUI's usual schedulers it is the share of the steps done. The three ends are
independent (the regions partition every pixel), so every order has a meaning: a region is held until its own end.

This module does not import comfy: the progress function is given to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

END_TOLERANCE = 1e-6  # a step exactly at a region's end is already released (progress computed in float)


@dataclass(frozen=True)
class RegionSchedule:
    """Points of the run (0 = pure noise … 1 = clean) until which each region is held to the guide."""

    object_end: float = 0.4
    vacated_end: float = 0.8
    background_end: float = 0.9

    def __post_init__(self) -> None:
        for name in ("object_end", "vacated_end", "background_end"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"schedule {name}={v} must be within 0..1")

    def held(self, progress: float) -> tuple[bool, bool, bool]:
        """Whether (object, vacated, background) are held at ``progress`` (0 = pure noise); an end of 1.0 holds the
        region to the very last step (the last step's noise level may already read as 1.0)."""
        return tuple(end >= 1.0 or progress < end - END_TOLERANCE
                     for end in (self.object_end, self.vacated_end, self.background_end))


def free_mask(regions: torch.Tensor, schedule: RegionSchedule, progress: float) -> torch.Tensor:
    """Denoise mask (1 = free) from region weights ``[3, ...]`` (object, vacated, background)."""
    held = torch.tensor(schedule.held(progress), dtype=regions.dtype, device=regions.device)
    return (1 - (regions * held.view(3, *([1] * (regions.ndim - 1)))).sum(0)).clamp(0, 1)


class LayoutDenoiseMask:
    """``denoise_mask_function`` for ComfyUI: region masks that change with the run's progress.

    ``regions`` is ``[3, T, h, w]`` (object, vacated, background; a partition of unity) at latent size, one plane per
    *latent* frame (``layout.frames.combine_regions`` for VAEs that pack several frames into one). Frames-as-batch
    latents ``[B, C, h, w]`` need ``B`` to be a multiple of ``T``; video latents ``[B, C, T, h, w]`` need ``T``. A
    latent of another size than the masks is an error (the masks were made for the guide latent, which is what must
    be sampled). ``progress(sigma, extra_options)`` says where the run is (0 … 1, see the module doc).
    ``base_mask``: a noise mask the latent already had (Wan 2.2 TI2V's start frame), multiplied in so it is kept.
    """

    def __init__(self, regions: torch.Tensor, schedule: RegionSchedule,
                 progress: Callable[[torch.Tensor | float, dict | None], float],
                 base_mask: torch.Tensor | None = None) -> None:
        if regions.ndim != 4 or regions.shape[0] != 3:
            raise ValueError(f"regions must be [3, T, h, w], got {tuple(regions.shape)}")
        self.regions = regions.float().cpu()
        self.schedule = schedule
        self.progress_of = progress
        self.base_mask = None if base_mask is None else base_mask.float().cpu()
        self._cache: dict = {}

    def __deepcopy__(self, memo: dict) -> "LayoutDenoiseMask":
        # ModelPatcher.clone() deep-copies model_options; the masks are never mutated, share them.
        return LayoutDenoiseMask(self.regions, self.schedule, self.progress_of, self.base_mask)

    def _layout_for(self, shape: tuple, device, dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        T, h, w = self.regions.shape[1:]
        H, W = shape[-2:]
        if (H, W) != (h, w):
            raise ValueError(f"the sampled latent is {W}x{H} but the layout regions were made for {w}x{h} (the "
                             f"guide latent): sample the LATENT that Layout Masked Denoise returns")
        base = None
        if len(shape) == 5:  # [B, C, T, H, W]
            if shape[2] != T:
                raise ValueError(f"video latent has {shape[2]} latent frames but the layout has {T}")
            reg = self.regions[:, None, None]  # [3, 1, 1, T, H, W]
            if self.base_mask is not None:
                base = self.base_mask.to(device=device, dtype=dtype)
                if base.shape[0] not in (1, shape[0]):
                    base = base[:1]
        else:
            B = shape[0]
            if B % T:
                raise ValueError(f"latent batch of {B} frames is not a multiple of the layout's {T} frames")
            reg = self.regions.repeat(1, B // T, 1, 1)[:, :, None]  # [3, B, 1, H, W]
        return reg.to(device=device, dtype=dtype), base

    def mask_for(self, progress: float, shape: torch.Size | tuple, device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The denoise mask for a latent/mask of ``shape`` at ``progress``."""
        shape = tuple(shape)
        key = (shape, str(device), dtype)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._layout_for(shape, device, dtype)
            self._cache = {key: hit}
        reg, base = hit
        free = free_mask(reg, self.schedule, progress)
        if base is not None:
            free = free * base
        return free.expand(shape)

    def progress(self, sigma: torch.Tensor | float, extra_options: dict | None) -> float:
        """Where the run is when the sampler calls with ``sigma`` (0 = pure noise … 1 = clean)."""
        s = sigma.max() if torch.is_tensor(sigma) else torch.tensor(float(sigma))
        return float(self.progress_of(s, extra_options))

    def __call__(self, sigma: torch.Tensor, denoise_mask: torch.Tensor, extra_options: dict) -> torch.Tensor:
        p = self.progress(sigma, extra_options)
        return self.mask_for(p, denoise_mask.shape, denoise_mask.device, denoise_mask.dtype)


def region_stack(object_mask: torch.Tensor, vacated_mask: torch.Tensor, background_mask: torch.Tensor) -> torch.Tensor:
    """Stack ``[T, h, w]`` region masks into the ``[3, T, h, w]`` form :class:`LayoutDenoiseMask` takes."""
    return torch.stack([object_mask, vacated_mask, background_mask]).float()


def static_mask(regions: torch.Tensor) -> torch.Tensor:
    """Fallback latent ``noise_mask`` ``[T, 1, h, w]`` for samplers without our function: background held."""
    return (1 - regions[2]).clamp(0, 1)[:, None]
