"""The oracle layout pipeline: a small real ComfyUI model whose prediction is replaced (the guide, a posterior
over a few videos), so that only the pack's latent noise mask and denoise-mask schedule decide the result, sampled
by stock ``common_ksampler``; and a stand-in VAE mapping 8x8 pixel blocks linearly to 4 channels, so the tracker
runs on latents directly. Used by the layout, SVD and device tests and by ``tools/bench_limits.py``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

import comfy.model_patcher
import comfy.supported_models
import nodes as comfy_nodes
from i2v_motion import layout as L
from i2v_motion.nodes import layout as N

CASES = Path(__file__).resolve().parents[2] / "example_workflows" / "layout_cases"
STEPS = 20
COND = [[torch.zeros(1, 4, 32), {}]]


class FakeVAE:
    """Stand-in VAE: 8x average pooling and a fixed 3 -> 4 channel map (SD-like latent range)."""

    scale = 8  # pixels per latent pixel
    M = torch.tensor([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [1.5, 1.5, 1.5]])
    b = torch.tensor([-2.0, -2.0, -2.0, -2.25])

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(pixels[..., :3].movedim(-1, 1).float(), self.scale)
        return torch.einsum("ck,bkhw->bchw", self.M, x) + self.b[None, :, None, None]


class VideoVAE(FakeVAE):
    def encode(self, pixels):
        return super().encode(pixels).movedim(0, 1)[None]  # [1, C, T, h, w]


def tiny_model() -> comfy.model_patcher.ModelPatcher:
    uc = {"context_dim": 32, "model_channels": 32, "use_linear_in_transformer": False, "adm_in_channels": None,
          "use_temporal_attention": False, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1],
          "channel_mult": [1], "transformer_depth": [0], "transformer_depth_output": [0, 0], "num_heads": 2,
          "num_head_channels": -1, "image_size": 32, "use_spatial_transformer": True,
          "transformer_depth_middle": 0, "legacy": False}
    cfg = comfy.supported_models.SD15(uc)
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # comfy ops start as torch.empty: initialise explicitly
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def predicting(model, target: torch.Tensor):
    """A clone whose denoised prediction is always ``target`` (VAE latent space: ``[T, C, h, w]`` frames as batch or
    ``[1, C, T', h, w]`` video latents)."""
    m = model.clone()
    t_in = m.model.process_latent_in(target)

    def wrapper(apply_model, args):
        x = args["input"]
        return t_in.repeat(x.shape[0] // t_in.shape[0], *([1] * (t_in.ndim - 1))).to(x)

    m.set_model_unet_function_wrapper(wrapper)
    return m


def posterior(model, candidates: torch.Tensor):
    """The ideal denoiser for a data set of a few videos ``[K, T, C, h, w]``: per frame the posterior mean."""
    m = model.clone()
    c_in = m.model.process_latent_in(candidates.flatten(0, 1)).reshape(candidates.shape)

    def wrapper(apply_model, args):
        x, sigma = args["input"], args["timestep"]
        c = c_in.repeat(1, x.shape[0] // c_in.shape[1], 1, 1, 1).to(x)
        d2 = ((x[None] - c) ** 2).flatten(2).sum(-1)
        w = torch.softmax(-d2 / (2 * sigma.view(1, -1) ** 2), 0)
        return (w[..., None, None, None] * c).sum(0)

    m.set_model_unet_function_wrapper(wrapper)
    return m


def sample(model, latent: dict, seed: int = 0) -> torch.Tensor:
    return comfy_nodes.common_ksampler(model, seed, STEPS, 1.0, "euler", "normal", COND, COND, latent,
                                       denoise=1.0)[0]["samples"]


class Run:
    def __init__(self, name: str, feather: float = 8.0, margin: float = 4.0):
        self.vae = FakeVAE()
        self.image, self.layout, self.caption, self.name = N.LayoutCaseLoader.execute("", 0, name).result
        self.guide, self.glat, self.plate = N.LayoutGuide.execute(self.image, self.layout, self.vae, feather, margin,
                                                                  "diffuse").result
        self.src = self.vae.encode(self.image)[0]
        self.plate_lat = self.vae.encode(self.plate)[0]
        self.range = float(self.src.max() - self.src.min())
        self.g = self.glat["samples"]
        self.grow = L.latent_grow(feather, margin, 8)

    def masked(self, model, ends=(0.4, 0.8, 0.9)):
        return N.LayoutMaskedDenoise.execute(model, self.glat, self.layout, *ends, 1.0, 1.0).result

    def evaluate(self, out: torch.Tensor) -> dict:
        rep = L.evaluate_layout(out, self.src, self.layout, plate=self.plate_lat, data_range=self.range)
        keep = 1 - L.guide.change_mask(self.layout, *out.shape[-2:], self.grow)  # outside every region mask
        mse = L.metrics.masked_mse(out, self.src[None].expand_as(out), keep)
        rep["psnr_outside_masks"] = L.psnr(mse, self.range)
        return rep


def record_progress(model) -> list[float]:
    """Make ``model`` (a test's own clone from Layout Masked Denoise) record the sampling progress of every call
    of its layout denoise-mask function; returns the list it fills. The recorder keeps the function as ``inner``."""
    fn = model.model_options["denoise_mask_function"]
    seen: list[float] = []

    def recording(sigma, denoise_mask, extra_options):
        seen.append(fn.progress(sigma, extra_options))
        return fn(sigma, denoise_mask, extra_options)

    recording.inner = fn
    model.set_model_denoise_mask_function(recording)
    return seen


# -- video VAEs that pack frames (Wan-shaped latents) -------------------------------------------------------------------

class PackingVAE(FakeVAE):
    """Stand-in for a causal video VAE with ``ratio`` frames per latent frame after the first (Wan: 4), as ComfyUI
    describes one (``downscale_index_formula``): 5-D latents ``[1, channels, T', h, w]``. Latent frame ``j`` is the
    linear map of the last of its frames (sample and hold), repeated over ``channels // 4`` channel groups; decode
    repeats each latent frame over its frames. A stand-in whose latents can be tracked, not Wan's VAE."""

    def __init__(self, ratio: int = 4, channels: int = 16, scale: int = 8):
        self.ratio, self.channels, self.scale = ratio, channels, scale
        self.downscale_index_formula = (ratio, scale, scale)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        from i2v_motion.layout.frames import pixel_frames_of

        lat = super().encode(pixels[pixel_frames_of(pixels.shape[0], self.ratio)])  # [T', 4, h, w]
        return lat.repeat(1, self.channels // 4, 1, 1).movedim(0, 1)[None]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        from i2v_motion.layout.frames import frames_for_latents, latent_groups

        lat = latent[0, :4].movedim(1, 0)  # [T', 4, h, w]
        idx = [j for j, g in enumerate(latent_groups(frames_for_latents(lat.shape[0], self.ratio), self.ratio))
               for _ in g]
        rgb = torch.einsum("kc,tchw->tkhw", torch.linalg.pinv(self.M), lat[idx] - self.b[None, :, None, None])
        return F.interpolate(rgb, scale_factor=self.scale, mode="nearest").movedim(1, -1).clamp(0, 1)


def stretch(layout, frames: int):
    """The layout over ``frames`` frames, its key frames moved in proportion (the same path, slower)."""
    objs = [L.make_object(o.phrase, [(round(k.frame * (frames - 1) / (layout.frames - 1)), k.box) for k in o.keys],
                          frames, i, o.interpolation) for i, o in enumerate(layout.objects)]
    return L.Layout(frames=frames, objects=tuple(objs), size_space=layout.size_space)


def layout_at(layout, frames: list[int]):
    """A layout of ``len(frames)`` frames whose frame i has ``layout``'s boxes at ``frames[i]`` (every frame a key)."""
    boxes = layout.boxes()
    objs = [L.make_object(o.phrase, [(i, boxes[n, f].tolist()) for i, f in enumerate(frames)], len(frames), n,
                          "linear") for n, o in enumerate(layout.objects)]
    return L.Layout(frames=len(frames), objects=tuple(objs), size_space=layout.size_space)
