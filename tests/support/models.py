"""Tiny core models and readers of the weights ComfyUI runs with, shared by tests and tools.

- :func:`tiny_svd`: core's SVD_img2vid with a narrow UNet (the real topology, fewer channels), random weights, or
  a stand-in fine-tune of another seed;
- :func:`stored` / :func:`loaded_weights`: a model's stored weights, and the weights after ComfyUI's model
  management loads it;
- :func:`dc_cond` / :func:`ksample` / :func:`sample_dc`: a small DynamiCrafter conditioning and stock sampling.
"""
from __future__ import annotations

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.supported_models
import nodes as comfy_nodes
from support.fixtures import init_random_perturbed_

CPU = torch.device("cpu")
SEED, STEPS, CFG = 0, 4, 7.5  # the device runs' sampling (tests/unit/test_device_runs.py)


class TinySVD(comfy.supported_models.SVD_img2vid):
    """Core's SVD model config with a narrow UNet (the real topology, fewer channels)."""

    unet_extra_config = {"num_heads": -1, "num_head_channels": 16, "attn_precision": torch.float32}


def svd_config(channels: int = 32) -> dict:
    return dict(model_channels=channels, in_channels=8, out_channels=4, use_linear_in_transformer=True,
                transformer_depth=[1, 1, 1, 1], transformer_depth_output=[1, 1, 1, 1, 1, 1], channel_mult=[1, 2],
                num_res_blocks=[1, 1], context_dim=64, adm_in_channels=768, use_temporal_attention=True,
                use_temporal_resblock=True, num_classes="sequential", transformer_depth_middle=1,
                use_spatial_transformer=True, legacy=False, image_size=32, extra_ff_mix_layer=True,
                use_spatial_context=True, merge_strategy="learned_with_images", merge_factor=0.0,
                video_kernel_size=[3, 1, 1], disable_temporal_crossattention=False, max_ddpm_temb_period=10000)


def tiny_svd(seed: int = 0, dtype: torch.dtype = torch.float32, channels: int = 32,
             perturb_of: int | None = None, scale: float = 0.05) -> comfy.model_patcher.ModelPatcher:
    """A random SVD_img2vid (explicitly initialised: comfy ops start as torch.empty). With ``perturb_of``:
    the weights of model ``perturb_of`` plus ``scale``·noise(seed) — a stand-in fine-tune."""
    mc = TinySVD(svd_config(channels))
    mc.set_inference_dtype(dtype, None)
    model = mc.get_model({})
    model.requires_grad_(False)  # as after any ComfyUI patch/unpatch round trip (see tests/unit/test_merging_dc.py load)
    init_random_perturbed_(model.diffusion_model, seed, perturb_of, scale)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def stored(m: comfy.model_patcher.ModelPatcher) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.model.state_dict().items()}


def loaded_weights(m: comfy.model_patcher.ModelPatcher) -> dict[str, torch.Tensor]:
    """Weights after ComfyUI's model management loads the model (then unloads it again)."""
    mm.load_models_gpu([m])
    try:
        return {k: v.detach().clone() for k, v in m.model.state_dict().items()}
    finally:
        mm.unload_all_models()


def diffusion_keys(m) -> list[str]:
    return [k for k, _ in m.model.named_parameters() if k.startswith("diffusion_model.")]


def noisy_clone(model, seed: int, keep=lambda k, p: k.startswith("diffusion_model.") and p.ndim > 1,
                scale: float = 0.05):
    """A clone of ``model`` with random additive patches (``scale``·N(0, 1), drawn in parameter order from ``seed``)
    on the parameters ``keep(key, param)`` selects: a second expert that differs from the first."""
    g = torch.Generator().manual_seed(seed)
    out = model.clone()
    out.add_patches({k: (scale * torch.randn(p.shape, generator=g),) for k, p in model.model.named_parameters()
                     if keep(k, p)}, 1.0)
    return out


def dc_cond(seed: int = 0, frames: int = 4, size: int = 8):
    """Random positive / negative DynamiCrafter cond values (tiny widths) and an empty latent of ``frames``."""
    g = torch.Generator().manual_seed(seed)
    c = {"concat_latent_image": torch.randn(1, 4, size, size, generator=g),
         "clip_vision_tokens": torch.randn(1, 257, 64, generator=g), "fs": 24}
    pos = [[torch.randn(1, 77, 64, generator=g), dict(c)]]
    neg = [[torch.zeros(1, 77, 64), {**c, "clip_vision_tokens": torch.zeros(1, 257, 64)}]]
    return pos, neg, {"samples": torch.zeros(frames, 4, size, size)}


def ksample(model, cond) -> torch.Tensor:
    """Stock KSampler (euler, simple) on :func:`dc_cond`'s values."""
    pos, neg, latent = cond
    return comfy_nodes.common_ksampler(model, SEED, STEPS, CFG, "euler", "simple", pos, neg, latent)[0]["samples"]


def sample_dc(model) -> torch.Tensor:
    """Two euler steps of a tiny DynamiCrafter on a fixed random conditioning (side-by-side graph checks)."""
    g = torch.Generator().manual_seed(0)
    cond = {"concat_latent_image": torch.randn(1, 4, 8, 8, generator=g),
            "clip_vision_tokens": torch.randn(1, 257, 64, generator=g), "fs": 24}
    pos = [[torch.randn(1, 77, 64, generator=g), dict(cond)]]
    neg = [[torch.zeros(1, 77, 64), {**cond, "clip_vision_tokens": torch.zeros(1, 257, 64)}]]
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    return comfy_nodes.common_ksampler(model, 0, 2, 3.0, "euler", "normal", pos, neg, latent)[0]["samples"]


# -- Wan 2.1 / 2.2 (core's own WanModel, tiny widths) -------------------------------------------------------------------

WAN_KINDS: dict[str, dict] = {
    # what core's detection reads from the repackaged files (comfy/model_detection.py), at tiny widths
    "wan21_i2v": {"model_type": "i2v", "in_dim": 36, "out_dim": 16},     # Wan 2.1 I2V 14B: img_emb, k_img / v_img
    "wan22_a14b": {"model_type": "t2v", "in_dim": 36, "out_dim": 16},    # Wan 2.2 I2V A14B expert: no image embedding
    "wan22_ti2v": {"model_type": "t2v", "in_dim": 48, "out_dim": 48},    # Wan 2.2 TI2V 5B: 48-channel latents
}
WAN_DIM, WAN_FFN, WAN_LAYERS = 128, 256, 2  # core derives heads as dim // 128: one head


def wan_config(kind: str) -> dict:
    """The unet config core's detection makes for a Comfy-Org repackaged Wan file of ``kind``, at tiny widths."""
    spec = WAN_KINDS[kind]
    return {"image_model": "wan2.1", "dim": WAN_DIM, "out_dim": spec["out_dim"], "num_heads": WAN_DIM // 128,
            "ffn_dim": WAN_FFN, "num_layers": WAN_LAYERS, "patch_size": (1, 2, 2), "freq_dim": 256,
            "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
            "in_dim": spec["in_dim"], "model_type": spec["model_type"]}


def tiny_wan(kind: str = "wan21_i2v", seed: int = 0, dtype: torch.dtype = torch.float32,
             perturb_of: int | None = None, scale: float = 0.05) -> comfy.model_patcher.ModelPatcher:
    """Core's own Wan model (the model class core's detection picks for ``kind``) with random weights; with
    ``perturb_of``: model ``perturb_of``'s weights plus ``scale``·noise(seed), a stand-in fine-tune."""
    import comfy.model_detection

    mc = comfy.model_detection.model_config_from_unet_config(wan_config(kind))
    assert mc is not None, f"core has no model config for {kind}"
    mc.set_inference_dtype(dtype, None)
    model = mc.get_model({})
    model.requires_grad_(False)
    init_random_perturbed_(model.diffusion_model, seed, perturb_of, scale)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def wan_text(text: str = "a boat", tokens: int = 8, negative: bool = False) -> list:
    """umT5-XXL-shaped text conditioning ``[[tensor [1, tokens, 4096], {}]]`` (what CLIPTextEncode returns for Wan),
    deterministic per text: the tests' stand-in for the 5.7 B-parameter text encoder."""
    from i2v_motion.merging.ops import key_seed

    g = torch.Generator().manual_seed(key_seed(0, text, "wan_text") & 0x7FFFFFFF)
    t = torch.zeros(1, tokens, 4096) if negative else torch.randn(1, tokens, 4096, generator=g) * 0.1
    return [[t, {}]]
