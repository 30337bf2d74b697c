"""Build ComfyUI objects (MODEL, CLIP, VAE, CLIP_VISION) from a DynamiCrafter checkpoint."""
from __future__ import annotations

import inspect
import json
import logging
import os
import tempfile
from dataclasses import dataclass

import torch

import comfy.clip_vision
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils

from ..compat import ensure_skipped_params_patched, is_dynamic, new_model_patcher
from .checkpoint import CheckpointError, Parts, detect_unet_config, guess_variant, read_state_dict, split_parts
from .model import VARIANTS, DynamiCrafterConfig

log = logging.getLogger("i2v_motion")


@dataclass
class Loaded:
    model: comfy.model_patcher.ModelPatcher
    clip: object | None
    vae: object | None
    clip_vision: object | None
    variant: str


def build_model(unet_sd: dict[str, torch.Tensor], variant: str = "auto", name: str = "checkpoint",
                meta: dict | None = None, dtype: torch.dtype | None = None,
                fp8_optimizations: bool = False) -> comfy.model_patcher.ModelPatcher:
    """UNet + Resampler weights (relative keys) → a ModelPatcher on ComfyUI's model management.

    ``dtype``: storage dtype of the weights (None: ComfyUI picks for the device); fp8 dtypes store in fp8
    and compute in the device's dtype (ComfyUI's manual cast), as its own diffusion-model loader does;
    ``fp8_optimizations`` is that loader's ``fp8_e4m3fn_fast`` (fp8 matmuls where the GPU has them)."""
    cfg = detect_unet_config(unet_sd, name, meta)
    if variant == "auto":
        variant = guess_variant(cfg, name)
    if variant not in VARIANTS:
        raise CheckpointError(f"unknown variant {variant!r}; expected one of auto, {', '.join(VARIANTS)}")
    if VARIANTS[variant].name == "256" and not cfg.image_cross_attention_scale_learnable:
        log.warning("%s: variant 256 chosen but the weights have no attn2.alpha (they look like 512/1024)", name)
    if variant != "256" and cfg.image_cross_attention_scale_learnable:
        raise CheckpointError(f"{name}: weights are the 256 model (attn2.alpha present) but variant {variant} was chosen")
    cfg.default_fs = VARIANTS[variant].default_fs
    model_config = DynamiCrafterConfig(cfg, VARIANTS[variant])
    params = comfy.utils.calculate_parameters(unet_sd)
    load_device = mm.get_torch_device()
    if dtype is None:
        dtype = mm.unet_dtype(model_params=params, supported_dtypes=model_config.supported_inference_dtypes,
                              weight_dtype=comfy.utils.weight_dtype(unet_sd))
    model_config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes))
    if fp8_optimizations:
        model_config.optimizations["fp8"] = True
    model = model_config.get_model(unet_sd, "", device=mm.unet_inital_load_device(params, dtype))
    missing, unexpected = model.diffusion_model.load_state_dict(unet_sd, strict=False)
    if missing:
        raise CheckpointError(f"{name}: {len(missing)} UNet/Resampler weights missing, such as {missing[:4]}")
    if unexpected:
        log.warning("%s: %d unexpected UNet keys ignored, such as %s", name, len(unexpected), unexpected[:4])
    for k, v in unet_sd.items():
        if k.endswith("attn2.alpha") and not torch.isfinite(v).all():
            raise CheckpointError(f"{name}: non-finite weight {k}")
    model.requires_grad_(False)  # inference only; also keeps kernel choice stable across patch/unpatch cycles
    # CoreModelPatcher like core loaders: dynamic VRAM where ComfyUI enables it (0.33+ on NVIDIA)
    offload_device = mm.unet_offload_device()
    patcher = new_model_patcher(model, load_device, offload_device)
    if is_dynamic(patcher) and model.device != offload_device:
        model.to(offload_device)  # dynamic VRAM streams weights from the offload device (as core loaders do)
        model.device = offload_device
    # image_proj_model.latents and attn2.alpha sit on modules with children, which ComfyUI's loaders do
    # not patch; this callback applies their patches (LoRAs, core merges, this pack's merges) on load.
    ensure_skipped_params_patched(patcher)
    return patcher


def build_vae(vae_sd: dict[str, torch.Tensor]):
    """SD AutoencoderKL from ``first_stage_model.*`` (channel width read from the weights)."""
    ch = int(vae_sd["encoder.conv_in.weight"].shape[0])
    if ch == 128:
        return comfy.sd.VAE(sd=vae_sd)
    levels = sorted({int(k.split(".")[2]) for k in vae_sd if k.startswith("encoder.down.")})
    mult = [int(vae_sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // ch for i in levels]
    n_res = len({k.split(".")[4] for k in vae_sd if k.startswith("encoder.down.0.block.")})
    ddconfig = {"double_z": True, "z_channels": int(vae_sd["decoder.conv_in.weight"].shape[1]), "resolution": 256,
                "in_channels": 3, "out_ch": 3, "ch": ch, "ch_mult": mult, "num_res_blocks": n_res,
                "attn_resolutions": [], "dropout": 0.0}
    return comfy.sd.VAE(sd=vae_sd, config={"params": {"ddconfig": ddconfig,
                                                       "embed_dim": int(vae_sd["post_quant_conv.weight"].shape[1])}})


def build_clip(text_sd: dict[str, torch.Tensor]):
    """OpenCLIP ViT-H text encoder (penultimate layer) through core's SD2 CLIP; width/depth from weights."""
    target = comfy.supported_models.SD20({}).clip_target()
    clip_sd = comfy.supported_models.SD20({}).process_clip_state_dict(dict(text_sd))
    width = int(clip_sd["clip_h.transformer.text_model.embeddings.token_embedding.weight"].shape[1])
    layers = len({k.split(".")[5] for k in clip_sd if k.startswith("clip_h.transformer.text_model.encoder.layers.")})
    model_options = {}
    if width != 1024 or layers != 24:
        model_options["clip_h_model_config"] = {
            "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": max(1, width // 64),
            "intermediate_size": int(clip_sd[f"clip_h.transformer.text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
            "projection_dim": width}
    params = comfy.utils.calculate_parameters(clip_sd)
    if "state_dict" in inspect.signature(comfy.sd.CLIP.__init__).parameters:
        # 0.33+: CLIP loads its weights and then the encoder to the GPU at construction (as core loaders do)
        return comfy.sd.CLIP(target, parameters=params, model_options=model_options, state_dict=clip_sd)
    clip = comfy.sd.CLIP(target, parameters=params, model_options=model_options)
    m, u = clip.load_sd(clip_sd, full_model=True)
    m = [k for k in m if not k.endswith(("position_ids", "logit_scale", "text_projection.weight"))]
    if m:
        log.warning("text encoder: missing %s", m[:4])
    return clip


def build_clip_vision(vision_sd: dict[str, torch.Tensor]):
    """OpenCLIP ViT-H vision tower (``embedder.model.visual.*``) as a core CLIP_VISION."""
    prefix = "embedder.model.visual." if any(k.startswith("embedder.model.visual.") for k in vision_sd) else "embedder.model."
    sd = comfy.clip_vision.convert_to_transformers(dict(vision_sd), prefix)
    width = int(sd["vision_model.embeddings.patch_embedding.weight"].shape[0])
    patch = int(sd["vision_model.embeddings.patch_embedding.weight"].shape[-1])
    layers = len({k.split(".")[3] for k in sd if k.startswith("vision_model.encoder.layers.")})
    n_pos = int(sd["vision_model.embeddings.position_embedding.weight"].shape[0])
    side = int(round((n_pos - 1) ** 0.5)) * patch
    config = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": width,
              "image_size": side, "initializer_factor": 1.0, "initializer_range": 0.02,
              "intermediate_size": int(sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
              "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": max(1, width // 80),
              "num_channels": 3, "num_hidden_layers": layers, "patch_size": patch,
              "projection_dim": int(sd["visual_projection.weight"].shape[0]) if "visual_projection.weight" in sd else width,
              "torch_dtype": "float32"}
    if (width, layers, patch) == (1280, 32, 14):
        config["num_attention_heads"] = 16
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "clip_vision_config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        cv = comfy.clip_vision.ClipVisionModel(path)
    m, _ = cv.load_sd(sd)
    m = [k for k in m if not k.startswith(("visual_projection", "vision_model.post_layernorm"))]
    if m:
        log.warning("clip vision: missing %s", m[:4])
    return cv


def load_dynamicrafter(path: str, variant: str = "auto", dtype: torch.dtype | None = None,
                       fp8_optimizations: bool = False) -> Loaded:
    """Load a DynamiCrafter checkpoint: MODEL always; CLIP, VAE, CLIP_VISION where the file holds them."""
    name = os.path.basename(path)
    sd, meta = read_state_dict(path)
    parts: Parts = split_parts(sd, name)
    del sd
    if variant == "auto":
        variant = guess_variant(detect_unet_config(parts.unet, name, meta), name)
    model = build_model(parts.unet, variant, name, meta, dtype, fp8_optimizations)
    vae = build_vae(parts.vae) if parts.vae else None
    clip = build_clip(parts.text) if parts.text else None
    cv = build_clip_vision(parts.vision) if parts.vision else None
    return Loaded(model, clip, vae, cv, variant)
