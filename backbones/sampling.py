"""The official DynamiCrafter sampler on ComfyUI's sampling machinery.

Official sampling = DDIM on ``uniform_trailing`` timesteps (``uniform`` for the 256 scripts), starting
from pure noise x_T ~ N(0, I), eta, CFG with guidance rescale applied to the guided **v** per video, and
dynamic rescale of ``pred_x0``. Both rescales need things stock samplers cannot see (the cond/uncond
split over each whole video, the schedule's next timestep, ``e_t`` from the un-rescaled prediction), so
this is a ``KSAMPLER`` usable from SamplerCustom/SamplerCustomAdvanced, plus a model patch for the
guidance rescale alone that works with any stock sampler.

ComfyUI's ``simple`` scheduler truncates where the official spacing rounds, so the two agree only when
the step count divides 1000 (1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, …); :func:`official_sigmas` gives the
official timesteps for every step count.

Conventions: ComfyUI keeps ``x = x_t / sqrt(ā)`` (``ā = 1/(1+σ²)``); the official code keeps ``x_t``.
Zero-terminal-SNR models have ``ā = 0`` at t = 999; ComfyUI stores a tiny positive value there, so the
terminal step recovers the raw ``v`` from ComfyUI's ``x0`` and redoes the official formulas with ``ā = 0``.
"""
from __future__ import annotations


import torch
from tqdm.auto import trange

from ..comfy_bridge.sampling import KSAMPLER, is_v_prediction


def dynamic_rescale_scale(t: torch.Tensor | float, base_scale: float) -> torch.Tensor:
    """``scale_arr[t]``: ``linspace(1, base_scale, 400)[t]`` below 400, ``base_scale`` above."""
    t = torch.as_tensor(t, dtype=torch.float64)
    ti = t.round().clamp(0, 999)
    lin = 1.0 + (base_scale - 1.0) * ti / 399.0
    return torch.where(ti < 400, lin, torch.full_like(ti, base_scale))


def _is_v(ms) -> bool:
    return is_v_prediction(ms)


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


def video_frames_of(conds: list | None, batch: int) -> int:
    """Frames per video of a frames-as-batch evaluation: ``num_video_frames`` from the conds (ComfyUI's
    processed cond dicts), else the whole batch is one video."""
    for c in conds or ():
        nvf = (c.get("model_conds") or {}).get("num_video_frames") if isinstance(c, dict) else None
        t = getattr(nvf, "cond", None)
        if isinstance(t, int) and t > 0 and batch % t == 0:
            return t
    return batch


def _per_video_std(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Std over (frames, C, H, W) of each video of a frames-as-batch tensor, broadcast back to every frame."""
    b = x.shape[0] // frames
    return x.reshape(b, -1).std(dim=1).repeat_interleave(frames).view(-1, *([1] * (x.ndim - 1)))


def rescale_cfg_video(args: dict, guidance_rescale: float) -> torch.Tensor:
    """``sampler_cfg_function``: CFG, then the official guidance rescale on v (or eps) with the std over each
    whole video (all its frames; ``num_video_frames`` from the conds), against the conditional prediction."""
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
        # frames-as-batch: num_video_frames per video; a video latent [B, C, T, H, W]: one video per entry
        frames = video_frames_of(args.get("input_cond"), x.shape[0]) if x.ndim == 4 else 1
        cfg = guidance_rescale * cfg * (_per_video_std(pc, frames) / _per_video_std(cfg, frames)) \
            + (1 - guidance_rescale) * cfg
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


SPACINGS: tuple[str, ...] = ("uniform_trailing", "uniform")


def official_timesteps(steps: int, spacing: str = "uniform_trailing", ddpm_steps: int = 1000) -> list[int]:
    """The official DDIM timesteps (``make_ddim_timesteps``), descending.

    ``uniform_trailing``: ``round(arange(1000, 0, -1000/N)) - 1`` (999, 979, …, 19 for 50; rounded, not
    truncated). ``uniform`` (the 256 scripts): ``range(0, 1000, 1000 // N) + 1`` (901, 801, …, 1 for 10) —
    as in the official code that is more than N steps when N does not divide 1000 (7 → 8 steps). Entries the
    official code could not index are dropped: a ``-1`` that float round-off adds to ``uniform_trailing`` at a
    few step counts (61, 103, …) and ``uniform`` timesteps ≥ 1000 (N = 3: 1, 334, 667, not 1000).
    """
    import numpy as np

    if steps < 1:
        raise ValueError(f"steps must be ≥ 1; got {steps}")
    if spacing == "uniform_trailing":
        ts = np.round(np.arange(ddpm_steps, 0, -ddpm_steps / steps)).astype(np.int64) - 1
    elif spacing == "uniform":
        ts = np.asarray(list(range(0, ddpm_steps, max(1, ddpm_steps // steps))), dtype=np.int64)[::-1] + 1
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    return [int(t) for t in ts if 0 <= t < ddpm_steps]


def official_sigmas(model_sampling, steps: int, spacing: str = "uniform_trailing") -> torch.Tensor:
    """:func:`official_timesteps` as ComfyUI sigmas (the model's own schedule), ending in 0."""
    n = len(model_sampling.sigmas)
    ts = official_timesteps(steps, spacing, n)
    return torch.tensor([float(model_sampling.sigmas[t]) for t in ts] + [0.0], dtype=torch.float32)


def trailing_sigmas(model_sampling, steps: int) -> torch.Tensor:
    """``uniform_trailing`` DDIM timesteps (999, 979, …, 19 for 50 steps) as sigmas ending in 0."""
    return official_sigmas(model_sampling, steps, "uniform_trailing")


class OfficialKSampler(KSAMPLER):
    """``KSAMPLER`` that starts a generation from pure noise x_T ~ N(0, I), as the official DDIM sampler does
    whatever its first timestep (``uniform`` spacing starts below 999, where ComfyUI would scale the noise by
    σ0 instead of sqrt(1 + σ0²)). With a non-empty latent (img2img, layout guides) ComfyUI's own noise
    scaling is kept."""

    _from_empty = False

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        self._from_empty = latent_image is None or not bool(torch.any(latent_image != 0))
        return super().sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                              disable_pbar)

    def max_denoise(self, model_wrap, sigmas) -> bool:
        return self._from_empty or super().max_denoise(model_wrap, sigmas)


def official_sampler(eta: float = 1.0, guidance_rescale: float = 0.7,
                     base_scale: float | None = 0.7) -> OfficialKSampler:
    """The official DDIM sampler as a ComfyUI ``SAMPLER`` (``base_scale=None``: no dynamic rescale)."""
    return OfficialKSampler(sample_dynamicrafter_ddim, extra_options={
        "eta": eta, "guidance_rescale": guidance_rescale, "base_scale": base_scale})


__all__ = ["sample_dynamicrafter_ddim", "rescale_cfg_video", "trailing_sigmas", "official_timesteps",
           "official_sigmas", "official_sampler", "OfficialKSampler", "SPACINGS", "dynamic_rescale_scale",
           "video_frames_of"]
