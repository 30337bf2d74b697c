"""Model-sampling facts the pack reads (prediction type, where a sigma lies on the model's own time axis), the
sampler base class custom samplers are made from, and conditioning helpers."""
from __future__ import annotations

from typing import Any

import torch

import comfy.model_sampling
import comfy.samplers

__all__ = ["KSAMPLER", "is_v_prediction", "is_flow", "model_timestep", "ddpm_timestep", "noise_percent",
           "model_sampling_of", "DDPM_STEPS", "set_cond_values"]

KSAMPLER = comfy.samplers.KSAMPLER  # what core's custom samplers are (a SAMPLER value)
DDPM_STEPS = 1000


def is_v_prediction(model_sampling: Any) -> bool:
    return isinstance(model_sampling, comfy.model_sampling.V_PREDICTION)


def is_flow(model_sampling: Any) -> bool:
    """Flow-matching models (Wan, SD3, Flux …): ComfyUI's ``CONST`` parameterisation, sigma in [0, 1]."""
    return isinstance(model_sampling, comfy.model_sampling.CONST)


def model_timestep(model_sampling: Any, sigma: torch.Tensor | float) -> float:
    """The model's own timestep of ``sigma`` (first element): what its network is conditioned on — DDPM
    0 … 999 for discrete schedules, ``sigma · multiplier`` (1000) for flow models such as Wan."""
    s = torch.as_tensor(sigma).detach().reshape(-1)[:1].float()
    return float(model_sampling.timestep(s).reshape(-1)[0])


def ddpm_timestep(model_sampling: Any, sigma: torch.Tensor | float) -> float:
    """The DDPM timestep of ``sigma`` (0 … 999): ComfyUI's own ``timestep`` for discrete schedules,
    ``999·(1 − percent)`` (inverting ``percent_to_sigma``) for continuous ones."""
    s = torch.as_tensor(sigma).detach().reshape(-1)[:1].float()
    if getattr(type(model_sampling), "timestep", None) is comfy.model_sampling.ModelSamplingDiscrete.timestep:
        return float(model_sampling.timestep(s).reshape(-1)[0])
    target = float(s[0])
    lo, hi = 0.0, 1.0  # percent_to_sigma decreases from sigma_max (0) to 0 (1)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if model_sampling.percent_to_sigma(mid) > target:
            lo = mid
        else:
            hi = mid
    return (DDPM_STEPS - 1) * (1.0 - 0.5 * (lo + hi))


def noise_percent(model_sampling: Any, sigma: torch.Tensor | float) -> float:
    """Where ``sigma`` lies in a whole sampling run on ComfyUI's own scale (0 = pure noise … 1 = clean), the scale of
    ``percent_to_sigma`` that conditioning timestep ranges and ControlNet start/end use: the same for one sampler or
    a run split over several, and over models of one family (Wan 2.2's two experts)."""
    return min(1.0, max(0.0, 1.0 - ddpm_timestep(model_sampling, sigma) / (DDPM_STEPS - 1)))


def model_sampling_of(model: Any) -> Any | None:
    """The ``model_sampling`` object behind a sampler's model wrapper (``extra_options["model"]``), or None."""
    for _ in range(4):
        if model is None:
            return None
        ms = getattr(model, "model_sampling", None)
        if ms is not None:
            return ms
        model = getattr(model, "inner_model", None)
    return None


def set_cond_values(conditioning: list, values: dict) -> list:
    """A copy of a CONDITIONING with ``values`` set on every entry (core's ``conditioning_set_values``)."""
    import node_helpers

    return node_helpers.conditioning_set_values(conditioning, values)
