"""The official DynamiCrafter sampler on ComfyUI's sampling machinery.

Official sampling = DDIM on ``uniform_trailing`` timesteps (ComfyUI's ``simple`` scheduler gives
exactly those), eta, CFG with guidance rescale applied to the guided **v** over the whole video, and
dynamic rescale of ``pred_x0``. Both rescales need things stock samplers cannot see (the cond/uncond
split over the whole video, the schedule's next timestep, ``e_t`` from the un-rescaled prediction), so
this is a ``KSAMPLER`` usable from SamplerCustom/SamplerCustomAdvanced, plus a model patch for the
guidance rescale alone that works with any stock sampler.

Conventions: ComfyUI keeps ``x = x_t / sqrt(ā)`` (``ā = 1/(1+σ²)``); the official code keeps ``x_t``.
Zero-terminal-SNR models have ``ā = 0`` at t = 999; ComfyUI stores a tiny positive value there, so the
terminal step recovers the raw ``v`` from ComfyUI's ``x0`` and redoes the official formulas with ``ā = 0``.
"""
from __future__ import annotations


import torch
from tqdm.auto import trange

import comfy.model_sampling


def dynamic_rescale_scale(t: torch.Tensor | float, base_scale: float) -> torch.Tensor:
    """``scale_arr[t]``: ``linspace(1, base_scale, 400)[t]`` below 400, ``base_scale`` above."""
    t = torch.as_tensor(t, dtype=torch.float64)
    ti = t.round().clamp(0, 999)
    lin = 1.0 + (base_scale - 1.0) * ti / 399.0
    return torch.where(ti < 400, lin, torch.full_like(ti, base_scale))


def _is_v(ms) -> bool:
    return isinstance(ms, comfy.model_sampling.V_PREDICTION)


def _abar(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + sigma.double() ** 2)


def _official_abar(ms, sigma: torch.Tensor) -> torch.Tensor:
    """ā the official code uses at ``sigma``: exactly 0 at a zero-SNR model's terminal step."""
    a = _abar(sigma)
    if getattr(ms, "zsnr", False) and float(sigma) >= float(ms.sigma_max) * (1 - 1e-4):
        return torch.zeros_like(a)
    return a


def _prediction(x_off: torch.Tensor, denoised: torch.Tensor, a_c: torch.Tensor, sigma: torch.Tensor, v: bool):
    """Raw model prediction (v or eps) from ComfyUI's x0, in official ``x_t`` space."""
    if v:
        return (a_c.sqrt() * x_off - denoised) / (1 - a_c).sqrt()
    return (x_off / a_c.sqrt() - denoised) / sigma.double()


def rescale_cfg_video(args: dict, guidance_rescale: float) -> torch.Tensor:
    """``sampler_cfg_function``: CFG, then the official guidance rescale on v (or eps), std over the
    whole video (all frames of the frames-as-batch latent), against the conditional prediction."""
    x, sigma = args["input"], args["sigma"]
    cond, uncond, scale = args["cond_denoised"], args["uncond_denoised"], args["cond_scale"]
    ms = args["model"].model_sampling
    s = sigma.reshape(-1)[0].double()
    a_c = _abar(s)
    x_off = x.double() * a_c.sqrt()
    v = _is_v(ms)
    pc = _prediction(x_off, cond.double(), a_c, s, v)
    pu = _prediction(x_off, uncond.double(), a_c, s, v)
    cfg = pu + scale * (pc - pu)
    if guidance_rescale > 0:
        cfg = guidance_rescale * cfg * (pc.std() / cfg.std()) + (1 - guidance_rescale) * cfg
    if v:
        den = a_c.sqrt() * x_off - (1 - a_c).sqrt() * cfg
    else:
        den = x.double() - cfg * s
    return (x.double() - den).to(x.dtype)


@torch.no_grad()
def sample_dynamicrafter_ddim(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                              callback=None, disable: bool | None = None, eta: float = 1.0,
                              guidance_rescale: float = 0.7, base_scale: float | None = 0.7) -> torch.Tensor:
    """Official DDIM step (``p_sample_ddim``) on any sigma schedule; ``base_scale=None`` disables dynamic
    rescale. The last step lands on ``ā(t=0)`` as the official sampler does."""
    extra_args = dict(extra_args or {})
    mo = dict(extra_args.get("model_options", {}))
    if guidance_rescale > 0 and "sampler_cfg_function" not in mo:
        mo["sampler_cfg_function"] = lambda a: rescale_cfg_video(a, guidance_rescale)
    extra_args["model_options"] = mo
    ms = model.inner_model.inner_model.model_sampling
    v = _is_v(ms)
    gen = torch.Generator(device="cpu").manual_seed(int(extra_args.get("seed", 0) or 0))
    s_in = x.new_ones([x.shape[0]])
    a_final = _abar(ms.sigmas[0])
    for i in trange(len(sigmas) - 1, disable=disable):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s * s_in, **extra_args)
        a_c = _abar(s)
        x_off = x.double() * a_c.sqrt()
        pred = _prediction(x_off, denoised.double(), a_c, s, v)
        a = _official_abar(ms, s)
        if v:
            x0 = a.sqrt() * x_off - (1 - a).sqrt() * pred
            e_t = a.sqrt() * pred + (1 - a).sqrt() * x_off
        else:
            x0, e_t = denoised.double(), pred
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s, "sigma_hat": s, "denoised": x0.to(x.dtype)})
        if s_next > 0:
            a_prev = _abar(s_next)
            t_cur, t_next = ms.timestep(s.reshape(1)), ms.timestep(s_next.reshape(1))
        else:
            a_prev = a_final
            t_cur = t_next = ms.timestep(s.reshape(1))
        if base_scale is not None:
            x0 = x0 * (dynamic_rescale_scale(t_next, base_scale) / dynamic_rescale_scale(t_cur, base_scale)).item()
        sig = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt() if eta > 0 else torch.zeros_like(a)
        x_prev = a_prev.sqrt() * x0 + (1 - a_prev - sig ** 2).clamp(min=0).sqrt() * e_t
        if eta > 0:
            x_prev = x_prev + sig * torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x_prev)
        x = (x_prev / (a_prev.sqrt() if s_next > 0 else 1.0)).to(x.dtype)
    return x


def trailing_sigmas(model_sampling, steps: int) -> torch.Tensor:
    """``uniform_trailing`` DDIM timesteps (999, 999−1000/N, …) as sigmas ending in 0 (= ComfyUI 'simple')."""
    n = len(model_sampling.sigmas)
    ss = n / steps
    sig = [float(model_sampling.sigmas[-(1 + int(x * ss))]) for x in range(steps)]
    return torch.tensor(sig + [0.0], dtype=torch.float32)


def official_timesteps(steps: int, ddpm_steps: int = 1000) -> list[int]:
    """The official ``uniform_trailing`` timesteps, descending (for checks and docs)."""
    c = ddpm_steps / steps
    return [int(round(ddpm_steps - k * c)) - 1 for k in range(steps)]


__all__ = ["sample_dynamicrafter_ddim", "rescale_cfg_video", "trailing_sigmas", "official_timesteps",
           "dynamic_rescale_scale"]
