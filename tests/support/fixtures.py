"""Random-weight DynamiCrafter checkpoints in the official key layout, for tests, demos and benchmarks.

No weights can be downloaded here, so tests write tiny checkpoints with exactly the official prefixes
(``model.diffusion_model.``, ``image_proj_model.``, ``first_stage_model.``, ``cond_stage_model.model.``,
``embedder.model.visual.``) and load them through the same code as real files. ``full_size=True``
gives the real 512 shapes (≈1.4 B UNet + Resampler parameters) for benchmarks.

:func:`make_tiny_svd_checkpoint` writes the smallest file ComfyUI's own *Image Only Checkpoint Loader* takes
for Stable Video Diffusion (``arch="svd"`` in :func:`make_tiny_checkpoint`): ComfyUI detects SVD by its UNet
(320 channels, context 1024, ADM 768, temporal layers; the channel multipliers are free: 1, 1, 1, 1 here)
and its image encoder by its depth (OpenCLIP ViT-H/14, whose 1024-wide embeddings SVD cross-attends), and
accepts a TAESD under ``first_stage_model.`` as the VAE.
"""
from __future__ import annotations

import os
from functools import partial

import torch

import comfy.ops

from i2v_motion.backbones.dynamicrafter_unet import DynamiCrafterUNet, ResamplerConfig, UNetConfig, init_random_

TINY_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), num_head_channels=8, context_dim=64,
                       resampler=ResamplerConfig(dim=64, depth=2, dim_head=16, heads=4, num_queries=16,
                                                 video_length=16, embedding_dim=64, output_dim=64, ff_mult=2))
TINY_TEXT_WIDTH = 64
TINY_VISION_WIDTH = 64


def unet_state_dict(cfg: UNetConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Random UNet + Resampler weights under their official checkpoint names."""
    with torch.device("cpu"):
        net = DynamiCrafterUNet(cfg, dtype=dtype, operations=comfy.ops.disable_weight_init)
    init_random_(net, seed)
    out = {}
    for k, v in net.state_dict().items():
        out[k if k.startswith("image_proj_model.") else "model.diffusion_model." + k] = v
    return out


def _randn(g: torch.Generator, *shape: int, scale: float | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    s = scale if scale is not None else (1.0 / max(1, shape[-1]) ** 0.5 if len(shape) > 1 else 0.1)
    if dtype is not None:  # drawn directly in ``dtype`` (one pass; big fixtures)
        return torch.empty(shape, dtype=dtype).normal_(0.0, s, generator=g)
    return torch.randn(*shape, generator=g) * s


def _openclip_blocks(g: torch.Generator, prefix: str, width: int, layers: int,
                     dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    r = partial(_randn, dtype=dtype)
    sd = {}
    for i in range(layers):
        p = f"{prefix}transformer.resblocks.{i}."
        sd.update({p + "ln_1.weight": 1 + r(g, width), p + "ln_1.bias": r(g, width),
                   p + "attn.in_proj_weight": r(g, 3 * width, width), p + "attn.in_proj_bias": r(g, 3 * width),
                   p + "attn.out_proj.weight": r(g, width, width), p + "attn.out_proj.bias": r(g, width),
                   p + "ln_2.weight": 1 + r(g, width), p + "ln_2.bias": r(g, width),
                   p + "mlp.c_fc.weight": r(g, 4 * width, width), p + "mlp.c_fc.bias": r(g, 4 * width),
                   p + "mlp.c_proj.weight": r(g, width, 4 * width), p + "mlp.c_proj.bias": r(g, width)})
    return sd


def text_state_dict(width: int = TINY_TEXT_WIDTH, layers: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    """OpenCLIP text tower (``cond_stage_model.model.*``), official SD2/DynamiCrafter layout."""
    g = torch.Generator().manual_seed(seed)
    p = "cond_stage_model.model."
    sd = {p + "token_embedding.weight": _randn(g, 49408, width, scale=0.02),
          p + "positional_embedding": _randn(g, 77, width, scale=0.01),
          p + "ln_final.weight": 1 + _randn(g, width), p + "ln_final.bias": _randn(g, width),
          p + "text_projection": _randn(g, width, width), p + "logit_scale": torch.tensor(4.6052)}
    sd.update(_openclip_blocks(g, p, width, layers))
    return sd


def vision_state_dict(width: int = TINY_VISION_WIDTH, layers: int = 2, seed: int = 2,
                      dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """OpenCLIP ViT-H/14-style vision tower (``embedder.model.visual.*``): 224 px, patch 14, 257 tokens."""
    g = torch.Generator().manual_seed(seed)
    r = partial(_randn, dtype=dtype)
    p = "embedder.model.visual."
    sd = {p + "conv1.weight": r(g, width, 3, 14, 14, scale=0.05), p + "class_embedding": r(g, width),
          p + "positional_embedding": r(g, 257, width, scale=0.02),
          p + "ln_pre.weight": 1 + r(g, width), p + "ln_pre.bias": r(g, width),
          p + "ln_post.weight": 1 + r(g, width), p + "ln_post.bias": r(g, width),
          p + "proj": r(g, width, width)}
    sd.update(_openclip_blocks(g, p, width, layers, dtype))
    return sd


def vae_state_dict(ch: int = 32, seed: int = 3) -> dict[str, torch.Tensor]:
    """SD AutoencoderKL (``first_stage_model.*``) with a narrow channel width; same keys as the real one."""
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": ch,
                "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    init_random_(vae, seed)
    return {"first_stage_model." + k: v for k, v in vae.state_dict().items()}


def make_checkpoint(path: str, variant: str = "512", seed: int = 0, with_vae: bool = True,
                    with_clip: bool = True, with_clip_vision: bool = True, full_size: bool = False,
                    dtype: torch.dtype = torch.float32, unet: UNetConfig | None = None) -> str:
    """Write a random-weight DynamiCrafter checkpoint; the format follows the extension.

    ``.ckpt``: Lightning layout (``{'state_dict', 'epoch', 'global_step'}``); ``.pt``: EDG layout
    (``{'state_dict'}``); ``.safetensors``: flat. ``variant='256'`` adds the learnable image-attention
    scale (``attn2.alpha``) that tells the 256 model apart.
    """
    cfg = unet or (UNetConfig() if full_size else TINY_UNET)
    if variant == "256":
        cfg = UNetConfig(**{**cfg.__dict__, "image_cross_attention_scale_learnable": True})
    sd = unet_state_dict(cfg, seed, dtype)
    if with_vae:
        sd.update(vae_state_dict(128 if full_size else 32))
    if with_clip:
        sd.update(text_state_dict(*((1024, 24) if full_size else (TINY_TEXT_WIDTH, 3))))
    if with_clip_vision:
        sd.update(vision_state_dict(*((1280, 32) if full_size else (cfg.resampler.embedding_dim, 2))))
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, path, metadata={"i2v.fixture": "random weights"})
    elif path.endswith(".ckpt"):
        torch.save({"state_dict": sd, "epoch": 0, "global_step": 0}, path)
    else:
        torch.save({"state_dict": sd}, path)
    return path


def make_tiny_checkpoint(path: str, variant: str = "512", seed: int = 0, arch: str = "dynamicrafter", **kw) -> str:
    """Tiny checkpoint for tests: DynamiCrafter (model_channels 32; loads and samples in seconds on a CPU), or
    with ``arch="svd"`` the smallest SVD checkpoint core's loader detects (:func:`make_tiny_svd_checkpoint`)."""
    if arch == "svd":
        return make_tiny_svd_checkpoint(path, seed=seed, **kw)
    if arch != "dynamicrafter":
        raise ValueError(f"unknown tiny checkpoint arch {arch!r}; expected dynamicrafter or svd")
    return make_checkpoint(path, variant, seed, **kw)


SVD_PREFIX_VISION = "conditioner.embedders.0.open_clip.model.visual."


def svd_unet_config() -> dict:
    """The smallest UNet ComfyUI's model detection reads as ``SVD_img2vid`` (``comfy.supported_models``):
    everything its ``unet_config`` matches on, with channel multipliers 1, 1, 1, 1 (≈212 M parameters)."""
    return dict(model_channels=320, in_channels=8, out_channels=4, use_linear_in_transformer=True,
                transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                channel_mult=[1, 1, 1, 1], num_res_blocks=[2, 2, 2, 2], context_dim=1024, adm_in_channels=768,
                use_temporal_attention=True, use_temporal_resblock=True, num_classes="sequential",
                transformer_depth_middle=1, use_spatial_transformer=True, legacy=False, image_size=32,
                extra_ff_mix_layer=True, use_spatial_context=True, merge_strategy="learned_with_images", merge_factor=0.0,
                video_kernel_size=[3, 1, 1], disable_temporal_crossattention=False, max_ddpm_temb_period=10000)


def init_random_perturbed_(module: torch.nn.Module, seed: int, perturb_of: int | None = None,
                           scale: float = 0.05) -> None:
    """Random weights from ``seed``; with ``perturb_of``: the weights ``perturb_of`` gives plus
    ``scale``·noise(``seed``) — a stand-in fine-tune of that model."""
    init_random_(module, seed if perturb_of is None else perturb_of)
    if perturb_of is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                p.add_((torch.randn(p.shape, generator=g) * scale).to(p.dtype))


def svd_unet_state_dict(seed: int = 0, perturb_of: int | None = None, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """Random SVD UNet weights (``model.diffusion_model.*``) built by ComfyUI's own SVD model code; with
    ``perturb_of``: model ``perturb_of``'s weights plus ``scale``·noise(seed) (a stand-in fine-tune)."""
    import comfy.supported_models

    mc = comfy.supported_models.SVD_img2vid(svd_unet_config())
    mc.set_inference_dtype(torch.float32, None)
    with torch.device("cpu"):
        model = mc.get_model({})
    init_random_perturbed_(model.diffusion_model, seed, perturb_of, scale)
    return {"model.diffusion_model." + k: v for k, v in model.diffusion_model.state_dict().items()}


def taesd_state_dict(seed: int = 4) -> dict[str, torch.Tensor]:
    """A random TAESD (``first_stage_model.taesd_*``): ComfyUI's VAE takes it for 4-channel SD latents."""
    import comfy.taesd.taesd

    with torch.device("cpu"):
        vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    init_random_(vae, seed)
    with torch.no_grad():
        vae.vae_scale.fill_(1.0)
        vae.vae_shift.fill_(0.0)
    return {"first_stage_model." + k: v for k, v in vae.state_dict().items()}


def make_tiny_svd_checkpoint(path: str, seed: int = 0, perturb_of: int | None = None, with_clip_vision: bool = True,
                             dtype: torch.dtype = torch.float16) -> str:
    """An SVD checkpoint in the layout ``ImageOnlyCheckpointLoader`` loads: ``model.diffusion_model.*`` (the
    smallest detectable SVD UNet), ``conditioner.embedders.0.open_clip.model.visual.*`` (OpenCLIP ViT-H/14,
    the only vision tower with SVD's 1024-wide embeddings; left out with ``with_clip_vision=False``, e.g. for a
    fine-tune that is only merged) and a TAESD as ``first_stage_model.*``. Stored in ``dtype`` (≈0.4 GB UNet,
    ≈1.3 GB vision tower in fp16)."""
    from safetensors.torch import save_file

    sd = svd_unet_state_dict(seed, perturb_of)
    sd.update(taesd_state_dict())
    if with_clip_vision:
        vis = vision_state_dict(1280, 32, seed=2, dtype=dtype)
        vis["embedder.model.visual.proj"] = _randn(torch.Generator().manual_seed(seed + 7), 1280, 1024)  # → 1024 wide
        sd.update({SVD_PREFIX_VISION + k[len("embedder.model.visual."):]: v for k, v in vis.items()})
    sd = {k: v.to(dtype).contiguous() if v.is_floating_point() else v.contiguous() for k, v in sd.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(sd, path, metadata={"i2v.fixture": "random weights (tiny SVD)"})
    return path

