"""DynamiCrafter as a native ComfyUI model: model config, ``BaseModel`` subclass, variants.

The UNet and the Resampler are one ``diffusion_model`` (keys ``diffusion_model.*`` and
``diffusion_model.image_proj_model.*``), so LoRAs, core merge nodes and this pack's merges reach both.
Video latents are frames-as-batch ``[B·T, 4, H/8, W/8]`` like core SVD: B videos of T frames, frame-major
per video. T travels in the conditioning (``num_video_frames``, set by the image-to-video nodes); without it
the whole batch is one video. Per-video conditioning (text, CLIP-vision tokens: one row per video) is
expanded to the frames of its video here, so every later stage (ComfyUI's cond batching, context windows,
the UNet) sees per-frame rows.

Context windows (core ``Context Windows (Manual)``, ``dim`` 0; on ComfyUIs whose windows cannot take
frames-as-batch latents, e.g. 0.3.75, ``context_compat.py`` supplies that): ComfyUI slices the per-frame conds (concat latent, tokens) to each window; the window is
sampled as a video of its own frame count, causal anchor frame included (:meth:`resize_cond_for_context_window`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.supported_models_base
import comfy.utils

from ..comfy_bridge.building import conds
from .dynamicrafter_unet import DynamiCrafterUNet, UNetConfig


@dataclass(frozen=True)
class Variant:
    """What the weights cannot tell: prediction type, schedule and the defaults the paper used."""

    name: str
    v_prediction: bool
    zero_snr: bool
    default_fs: int
    width: int
    height: int
    frames: int
    base_scale: float  # dynamic-rescale floor of the official sampler
    interp: bool = False


VARIANTS: dict[str, Variant] = {
    "256": Variant("256", False, False, 3, 256, 256, 16, 1.0),
    "512": Variant("512", True, True, 24, 512, 320, 16, 0.7),
    "1024": Variant("1024", True, True, 10, 1024, 576, 16, 0.3),
    "512_interp": Variant("512_interp", True, True, 24, 512, 320, 16, 0.7, interp=True),
}


class DynamiCrafterConfig(comfy.supported_models_base.BASE):
    """ComfyUI model config for DynamiCrafter (not registered with core detection; our loader builds it)."""

    unet_extra_config: dict = {}
    latent_format = comfy.latent_formats.SD15
    memory_usage_factor = 2.0
    supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]

    def __init__(self, unet: UNetConfig, variant: Variant):
        super().__init__({"config": unet, "in_channels": unet.in_channels})
        self.variant = variant
        self.sampling_settings = {"zsnr": variant.zero_snr}

    def inpaint_model(self) -> bool:
        return False

    def get_model(self, state_dict=None, prefix: str = "", device=None) -> "DynamiCrafterModel":
        return DynamiCrafterModel(self, device=device)

    def process_unet_state_dict_for_saving(self, state_dict: dict) -> dict:
        """Save under the official names: UNet at ``model.diffusion_model.``, Resampler at ``image_proj_model.``."""
        out = {}
        for k, v in state_dict.items():
            if k.startswith("image_proj_model."):
                out[k] = v
            else:
                out["model.diffusion_model." + k] = v
        return out


def per_frame(t: torch.Tensor, videos: int, frames: int, what: str) -> torch.Tensor:
    """Rows of a per-video (``[B, …]``), shared (``[1, …]``) or per-frame (``[B·T, …]``) tensor as per-frame rows
    (shared ones stay one row; ComfyUI repeats them)."""
    n = t.shape[0]
    if n == videos * frames or n == 1:
        return t
    if n == videos:
        return t.repeat_interleave(frames, dim=0)
    raise ValueError(f"{what} has {n} rows, but the latent holds {videos} video(s) of {frames} frames: expected 1, "
                     f"{videos} (one per video) or {videos * frames} (one per frame)")


class DynamiCrafterModel(comfy.model_base.BaseModel):
    """``BaseModel`` whose conds are: concat latent, text, CLIP-vision tokens, fps / frame stride."""

    def __init__(self, model_config: DynamiCrafterConfig, device=None):
        mt = comfy.model_base.ModelType.V_PREDICTION if model_config.variant.v_prediction else comfy.model_base.ModelType.EPS
        super().__init__(model_config, mt, device=device, unet_model=DynamiCrafterUNet)
        self.variant = model_config.variant

    def extra_conds(self, **kwargs) -> dict:
        out = {}
        noise = kwargs["noise"]
        n = noise.shape[0]
        frames = int(kwargs.get("num_video_frames") or n)
        if frames < 1 or n % frames:
            raise ValueError(f"the latent has {n} frames, not a whole number of videos of {frames} frames "
                             f"(num_video_frames from the conditioning); sample the latent the image-to-video node made")
        videos = n // frames
        concat = kwargs.get("concat_latent_image", None)
        if concat is None:
            concat = torch.zeros_like(noise)
        else:
            concat = self.process_latent_in(concat)
            if concat.shape[-2:] != noise.shape[-2:]:
                concat = comfy.utils.common_upscale(concat, noise.shape[-1], noise.shape[-2], "bilinear", "center")
            if concat.shape[0] == frames and videos > 1:  # one video's concat for every video
                concat = concat.repeat(videos, 1, 1, 1)
            concat = comfy.utils.resize_to_batch_size(concat, n)
        out["c_concat"] = conds.CONDNoiseShape(concat)
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            out["c_crossattn"] = conds.CONDCrossAttn(per_frame(cross_attn, videos, frames, "the text conditioning"))
        tokens = kwargs.get("clip_vision_tokens", None)
        if tokens is not None:
            out["clip_tokens"] = conds.CONDRegular(per_frame(tokens, videos, frames, "clip_vision_tokens"))
        out["fs"] = conds.CONDConstant(int(kwargs.get("fs", self.variant.default_fs)))
        out["num_video_frames"] = conds.CONDConstant(frames)
        return out

    def resize_cond_for_context_window(self, cond_key, cond_value, window, x_in, device, retain_index_list=[]):
        """ComfyUI 0.33+ context windows: the frame count of a window includes its causal anchor frame."""
        if cond_key == "num_video_frames":
            total = getattr(cond_value, "cond", None)
            if isinstance(total, int) and x_in.shape[0] != total:
                raise ValueError(f"context windows sample one video at a time, but the latent holds "
                                 f"{x_in.shape[0] // total} videos of {total} frames: use batch_size 1 with context windows")
            anchor = getattr(window, "causal_anchor_index", None)
            return conds.CONDConstant(len(window.index_list) + (1 if anchor is not None and anchor >= 0 else 0))
        return None

    def extra_conds_shapes(self, **kwargs) -> dict:
        return {}
