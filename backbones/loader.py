"""Build ComfyUI objects (MODEL, CLIP, VAE, CLIP_VISION) from a DynamiCrafter checkpoint."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import torch

import comfy.model_management as mm
import comfy.utils

from ..comfy_bridge.building import (make_clip_vision, make_sd2_clip, make_vae, openclip_vision_to_transformers,
                                     sd2_clip_state_dict)
from ..comfy_bridge.context_windows import ensure_context_compat
from ..comfy_bridge.finite import nonfinite
from ..comfy_bridge.patchers import ModelPatcher, ensure_skipped_params_patched, is_dynamic, new_model_patcher
from ..guards import ensure_guards
from ..runcache import ensure_run_cache
from .checkpoint import CheckpointError, Parts, detect_unet_config, guess_variant, read_state_dict, split_parts
from .model import VARIANTS, DynamiCrafterConfig

log = logging.getLogger("i2v_motion")


@dataclass
class Loaded:
    model: ModelPatcher
    clip: object | None
    vae: object | None
    clip_vision: object | None
    variant: str


def build_model(unet_sd: dict[str, torch.Tensor], variant: str = "auto", name: str = "checkpoint",
                meta: dict | None = None, dtype: torch.dtype | None = None,
                fp8_optimizations: bool = False) -> ModelPatcher:
    """UNet + Resampler weights (relative keys) → a ModelPatcher on ComfyUI's model management.

    ``dtype``: storage dtype of the weights (None: ComfyUI picks for the device); fp8 dtypes store in fp8
    and compute in the device's dtype (ComfyUI's manual cast), as its own diffusion-model loader does;
    ``fp8_optimizations`` is that loader's ``fp8_e4m3fn_fast`` (fp8 matmuls where the GPU has them)."""
    try:
        cfg = detect_unet_config(unet_sd, name, meta)
    except KeyError as e:
        raise CheckpointError(f"{name}: the UNet/Resampler is incomplete: tensor {e.args[0]!r} is missing") from None
    if variant == "auto":
        variant = guess_variant(cfg, name)
    if variant not in VARIANTS:
        raise CheckpointError(f"unknown variant {variant!r}; expected one of auto, {', '.join(VARIANTS)}")
    if VARIANTS[variant].name == "256" and not cfg.image_cross_attention_scale_learnable:
        raise CheckpointError(f"{name}: variant 256 was chosen but the weights are a 512/1024/interp model (no "
                              f"learnable attn2.alpha, which the 256 model has); choose auto, 512, 1024 or 512_interp")
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
    missing, unexpected = _load_checked(model.diffusion_model, unet_sd, name, "UNet/Resampler")
    if missing:
        raise CheckpointError(f"{name}: {len(missing)} UNet/Resampler weights missing, such as {missing[:4]}")
    if unexpected:
        log.warning("%s: %d unexpected UNet keys ignored, such as %s", name, len(unexpected), unexpected[:4])
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
    ensure_guards(patcher)  # NaN/Inf weights or results are errors, not a black video
    ensure_context_compat(patcher)  # core context windows on ComfyUIs whose handler cannot take frame batches
    ensure_run_cache(patcher)  # image tokens once per video and sampling run
    return patcher


_SIZE_MISMATCH = re.compile(r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) "
                            r"from checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)")


def _shape_error(e: Exception, name: str, part: str) -> CheckpointError | None:
    """torch's size-mismatch dump as one sentence naming the tensors, or None for other errors."""
    found = _SIZE_MISMATCH.findall(str(e))
    if not found:
        return None
    listed = "; ".join(f"{k}: file {a}, expected {b}" for k, a, b in found[:3])
    more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
    return CheckpointError(f"{name}: the {part} weights do not fit the architecture their other tensors describe — "
                           f"{len(found)} tensor(s) have another shape: {listed}{more}. The file is damaged or mixes "
                           f"models.")


def _load_checked(module: torch.nn.Module, sd: dict, name: str, part: str):
    try:
        return module.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        err = _shape_error(e, name, part)
        if err is None:
            raise
        raise err from None


def check_finite(sd: dict[str, torch.Tensor], name: str) -> None:
    """CheckpointError naming the tensors of ``sd`` that hold NaN or Inf."""
    bad = nonfinite(sd.items())
    if bad:
        more = f" (+{len(bad) - 4} more)" if len(bad) > 4 else ""
        raise CheckpointError(f"{name}: non-finite values (NaN/Inf) in {len(bad)} tensor(s): {', '.join(bad[:4])}{more}; "
                              f"the file is damaged (re-download it, or re-bake the merge with smaller coefficients)")


def build_vae(vae_sd: dict[str, torch.Tensor]):
    """SD AutoencoderKL from ``first_stage_model.*`` (channel width read from the weights)."""
    ch = int(vae_sd["encoder.conv_in.weight"].shape[0])
    if ch == 128:
        return make_vae(vae_sd)
    levels = sorted({int(k.split(".")[2]) for k in vae_sd if k.startswith("encoder.down.")})
    mult = [int(vae_sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // ch for i in levels]
    n_res = len({k.split(".")[4] for k in vae_sd if k.startswith("encoder.down.0.block.")})
    ddconfig = {"double_z": True, "z_channels": int(vae_sd["decoder.conv_in.weight"].shape[1]), "resolution": 256,
                "in_channels": 3, "out_ch": 3, "ch": ch, "ch_mult": mult, "num_res_blocks": n_res,
                "attn_resolutions": [], "dropout": 0.0}
    return make_vae(vae_sd, {"params": {"ddconfig": ddconfig, "embed_dim": int(vae_sd["post_quant_conv.weight"].shape[1])}})


def build_clip(text_sd: dict[str, torch.Tensor]):
    """OpenCLIP ViT-H text encoder (penultimate layer) through core's SD2 CLIP; width/depth from weights."""
    clip_sd = sd2_clip_state_dict(text_sd)
    width = int(clip_sd["clip_h.transformer.text_model.embeddings.token_embedding.weight"].shape[1])
    layers = len({k.split(".")[5] for k in clip_sd if k.startswith("clip_h.transformer.text_model.encoder.layers.")})
    model_options = {}
    if width != 1024 or layers != 24:
        model_options["clip_h_model_config"] = {
            "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": max(1, width // 64),
            "intermediate_size": int(clip_sd["clip_h.transformer.text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
            "projection_dim": width}
    clip, m = make_sd2_clip(clip_sd, comfy.utils.calculate_parameters(clip_sd), model_options)
    m = [k for k in m if not k.endswith(("position_ids", "logit_scale", "text_projection.weight"))]
    if m:
        log.warning("text encoder: missing %s", m[:4])
    return clip


def build_clip_vision(vision_sd: dict[str, torch.Tensor]):
    """OpenCLIP ViT-H vision tower (``embedder.model.visual.*``) as a core CLIP_VISION."""
    prefix = "embedder.model.visual." if any(k.startswith("embedder.model.visual.") for k in vision_sd) else "embedder.model."
    sd = openclip_vision_to_transformers(vision_sd, prefix)
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
    cv, m = make_clip_vision(sd, config)
    m = [k for k in m if not k.startswith(("visual_projection", "vision_model.post_layernorm"))]
    if m:
        log.warning("clip vision: missing %s", m[:4])
    return cv


def _part(build, sd: dict, name: str, part: str):
    """Build one part; a missing key or a shape that does not fit becomes a CheckpointError naming it."""
    try:
        return build(sd)
    except KeyError as e:
        raise CheckpointError(f"{name}: the {part} is incomplete: tensor {e.args[0]!r} is missing "
                              f"({len(sd)} {part} tensors found)") from None
    except RuntimeError as e:
        err = _shape_error(e, name, part)
        if err is None:
            raise
        raise err from None


_OPENCLIP_BLOCK = ("ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                   "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                   "mlp.c_proj.weight", "mlp.c_proj.bias")


def _require_openclip(sd: dict, prefix: str, top: tuple[str, ...], name: str, part: str) -> None:
    """CheckpointError naming the first tensor an OpenCLIP tower (top-level + every block found) lacks."""
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.", k))})
    if not layers:
        raise CheckpointError(f"{name}: the {part} is incomplete: no transformer blocks under {prefix}transformer.resblocks")
    need = [prefix + k for k in top] + [f"{prefix}transformer.resblocks.{i}.{k}" for i in range(layers[-1] + 1)
                                        for k in _OPENCLIP_BLOCK]
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"{name}: the {part} is incomplete: tensor {missing[0]!r} is missing"
                              + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))


def _check_vision(vision_sd: dict, unet_sd: dict, name: str) -> None:
    """DynamiCrafter needs OpenCLIP ViT-H/14's 257 tokens (224 px, patch 14) of the Resampler's input width."""
    p = "embedder.model.visual." if any(k.startswith("embedder.model.visual.") for k in vision_sd) else "embedder.model."
    conv, pos = vision_sd.get(p + "conv1.weight"), vision_sd.get(p + "positional_embedding")
    _require_openclip(vision_sd, p, ("conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight",
                                     "ln_pre.bias"), name, "CLIP vision tower")
    if conv.ndim != 4 or tuple(conv.shape[1:]) != (3, 14, 14) or pos.shape[0] != 257:
        raise CheckpointError(f"{name}: the CLIP vision tower is not OpenCLIP ViT-H/14 (patch 14, 257 positions = "
                              f"224 px): conv1 {tuple(conv.shape)}, positional_embedding {tuple(pos.shape)}")
    proj_in = unet_sd.get("image_proj_model.proj_in.weight")
    if proj_in is not None and proj_in.shape[1] != conv.shape[0]:
        raise CheckpointError(f"{name}: the CLIP vision tower is {conv.shape[0]} wide but the Resampler takes "
                              f"{proj_in.shape[1]}-wide tokens")


def load_dynamicrafter(path: str, variant: str = "auto", dtype: torch.dtype | None = None,
                       fp8_optimizations: bool = False) -> Loaded:
    """Load a DynamiCrafter checkpoint: MODEL always; CLIP, VAE, CLIP_VISION where the file holds them."""
    name = os.path.basename(path)
    sd, meta = read_state_dict(path)
    parts: Parts = split_parts(sd, name)
    del sd
    check_finite({**parts.unet, **parts.vae, **parts.text, **parts.vision}, name)
    if parts.vision:
        _check_vision(parts.vision, parts.unet, name)
    if parts.text:
        _require_openclip(parts.text, "cond_stage_model.model.", ("token_embedding.weight", "positional_embedding",
                                                                  "ln_final.weight", "ln_final.bias"), name, "text encoder")
    model = build_model(parts.unet, variant, name, meta, dtype, fp8_optimizations)
    vae = _part(build_vae, parts.vae, name, "VAE") if parts.vae else None
    if vae is not None:
        missing = [k for k in vae.first_stage_model.state_dict() if k not in parts.vae]
        if missing:
            raise CheckpointError(f"{name}: the VAE is incomplete: tensor {missing[0]!r} is missing"
                                  + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    clip = _part(build_clip, parts.text, name, "text encoder") if parts.text else None
    cv = _part(build_clip_vision, parts.vision, name, "CLIP vision tower") if parts.vision else None
    return Loaded(model, clip, vae, cv, model.model.variant.name)
