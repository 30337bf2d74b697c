"""Backbone families as data: one small declared record per family of I2V models the pack works on.

A :class:`Family` says what the nodes would otherwise branch on model classes for:

- how it is recognised — from a MODEL (its ``BaseModel`` class names) or from weight keys alone (merges);
- its latent layout — frames as batch ``[B·T, C, h, w]`` (DynamiCrafter, SVD) or video latents
  ``[B, C, T', h, w]`` (Wan), with the frame ↔ latent-frame map read from ComfyUI's VAE / latent format
  (:func:`temporal_ratio`), never a table of ours;
- its merge filter presets (named key sets: EDG's temporal/spatial split, image cross-attention …);
- the timestep unit of an expert switch: DDPM timesteps (0 … 999) for the DDPM/EDM families, the model's own
  timestep (σ·1000) for flow-matching Wan, where Wan 2.2's official boundary 900 lives;
- which conditioning says how many frames it was made for (checked against the latent that is sampled).

Nodes look a family up (:func:`of_model`, :func:`of_keys`) instead of testing model classes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

__all__ = ["Preset", "Family", "FAMILIES", "GENERIC", "of_model", "of_keys", "by_name", "preset_names",
           "preset_help", "temporal_ratio", "DIFFUSION_PREFIX"]

DIFFUSION_PREFIX = "diffusion_model."


@dataclass(frozen=True)
class Preset:
    """A named set of diffusion-model weights: ``match`` is a predicate over ModelPatcher keys."""

    name: str
    help: str
    match: Callable[[str], bool]


@dataclass(frozen=True)
class Family:
    """What the pack needs to know of one family of I2V backbones (see the module doc)."""

    name: str
    title: str
    model_classes: tuple[str, ...]                 # ComfyUI BaseModel class names (any in the MRO)
    keys_match: Callable[[list[str]], bool]        # recognise the family from its weight keys
    video_latent: bool                             # True: [B, C, T', h, w]; False: frames as batch
    switch_on: str                                 # "ddpm" | "model": the timestep an expert switch is given in
    presets: tuple[Preset, ...] = ()
    # the length (in latent frames) the conditioning was made for, read from one cond dict, and what holds it
    cond_frames: Callable[[dict], int | None] = lambda cond: None
    cond_frames_source: str = ""
    notes: dict = field(default_factory=dict, compare=False)

    def preset(self, name: str) -> Preset | None:
        return next((p for p in self.presets if p.name == name), None)


def _regex(pattern: str) -> Callable[[str], bool]:
    rx = re.compile(pattern)
    return lambda k: bool(rx.search(k))


# name-based temporal parts of any UNet video model
_TEMPORAL_NAMES = _regex(r"temopral_conv|temporal_conv"             # DynamiCrafter ResBlock temporal convs
                         r"|^diffusion_model\.init_attn\."           # DynamiCrafter first temporal attention
                         r"|(^|\.)time_(stack|mixer|pos_embed|mix\w*)(\.|$)")  # SVD / comfy video blocks
# DynamiCrafter only: the TemporalTransformer is module 2 of every attention block (spatial is 1)
_DC_TEMPORAL_BLOCKS = _regex(r"^diffusion_model\.((input_blocks|output_blocks)\.\d+|middle_block)\.2\.")
_DC_IMAGE_XATTN = _regex(r"\.attn2\.(to_k_ip|to_v_ip)\.|\.attn2\.alpha$")
_ATTN2 = _regex(r"\.attn2\.")
RESAMPLER_PREFIX = "diffusion_model.image_proj_model."


def _dc_temporal(k: str) -> bool:
    return _TEMPORAL_NAMES(k) or _DC_TEMPORAL_BLOCKS(k)


def _resampler(k: str) -> bool:
    return k.startswith(RESAMPLER_PREFIX)


DYNAMICRAFTER = Family(
    name="dynamicrafter", title="DynamiCrafter",
    model_classes=("DynamiCrafterModel",),
    keys_match=lambda keys: any(("temopral_conv" in k) or k.startswith(RESAMPLER_PREFIX) for k in keys),
    video_latent=False, switch_on="ddpm",
    cond_frames=lambda cond: cond.get("num_video_frames") if isinstance(cond.get("num_video_frames"), int) else None,
    cond_frames_source="num_video_frames of DynamiCrafter Image to Video",
    presets=(
        Preset("temporal", "temporal layers (temopral_conv, init_attn, the temporal transformer at index 2 of "
                           "every attention block)", _dc_temporal),
        Preset("spatial", "UNet weights that are not temporal and not the Resampler",
               lambda k: not _dc_temporal(k) and not _resampler(k)),
        Preset("image_cross_attention", "image cross-attention attn2.to_k_ip / to_v_ip (+ attn2.alpha on 256)",
               _DC_IMAGE_XATTN),
        Preset("resampler", "the Resampler that makes the image tokens (diffusion_model.image_proj_model.*)",
               _resampler),
    ),
)

SVD = Family(
    name="svd", title="Stable Video Diffusion",
    model_classes=("SVD_img2vid",),
    keys_match=lambda keys: any(".time_stack." in k or ".time_mixer." in k for k in keys),
    video_latent=False, switch_on="ddpm",  # SVD's conditioning records no length: checked through `reference`
    presets=(
        Preset("temporal", "temporal layers (time_stack, time_mixer, time_pos_embed, time_mix*)", _TEMPORAL_NAMES),
        Preset("spatial", "UNet weights that are not temporal", lambda k: not _TEMPORAL_NAMES(k) and not _resampler(k)),
        Preset("image_cross_attention", "every attn2, whose only context is the CLIP image embedding", _ATTN2),
        Preset("resampler", "(SVD has no Resampler: selects nothing)", _resampler),
    ),
)

# Wan 2.1 / 2.2 DiT (Comfy-Org repackaged keys: diffusion_model.blocks.N.{self_attn,cross_attn,ffn,norm3,modulation})
_WAN_SELF = _regex(r"\.blocks\.\d+\.self_attn\.")
_WAN_IMG_XATTN = _regex(r"\.blocks\.\d+\.cross_attn\.(k_img|v_img|norm_k_img)\.|^diffusion_model\.img_emb\.")
_WAN_TEXT_XATTN = _regex(r"\.blocks\.\d+\.cross_attn\.(q|k|v|o|norm_q|norm_k)\.|\.blocks\.\d+\.norm3\."
                         r"|^diffusion_model\.text_embedding\.")
_WAN_FFN = _regex(r"\.blocks\.\d+\.ffn\.")
_WAN_MOD = _regex(r"\.blocks\.\d+\.modulation$|^diffusion_model\.(time_embedding|time_projection)\.")
_WAN_HEAD = _regex(r"^diffusion_model\.head\.")

WAN = Family(
    name="wan", title="Wan 2.1 / 2.2",
    model_classes=("WAN21", "WAN22"),
    keys_match=lambda keys: any(k.startswith("diffusion_model.blocks.") and ".self_attn." in k for k in keys)
    and any(k.startswith("diffusion_model.patch_embedding.") for k in keys),
    video_latent=True, switch_on="model",
    cond_frames=lambda cond: (int(cond["concat_latent_image"].shape[2])
                              if getattr(cond.get("concat_latent_image"), "ndim", 0) == 5 else None),
    cond_frames_source="the start-image latent (concat_latent_image) of WanImageToVideo",
    presets=(
        Preset("temporal", "Wan has no separate temporal layers: its 3-D self-attention is the only place frames "
                           "exchange information, so 'temporal' is the self-attention (which is spatial too)",
               _WAN_SELF),
        Preset("spatial", "everything that acts on each token alone: cross-attention, FFN, modulation, "
                          "embeddings, head (not the self-attention)", lambda k: not _WAN_SELF(k)),
        Preset("self_attention", "3-D self-attention of every block (q, k, v, o, norm_q, norm_k)", _WAN_SELF),
        Preset("text_cross_attention", "text cross-attention (q, k, v, o, norms, norm3) and the text embedding",
               _WAN_TEXT_XATTN),
        Preset("image_cross_attention", "image cross-attention k_img / v_img / norm_k_img and img_emb (Wan 2.1 I2V; "
                                        "Wan 2.2 has none)", _WAN_IMG_XATTN),
        Preset("ffn", "feed-forward layers of every block", _WAN_FFN),
        Preset("modulation", "time modulation of every block and the time embedding / projection", _WAN_MOD),
        Preset("head", "the output head (head.head, head.modulation)", _WAN_HEAD),
    ),
)

GENERIC = Family(
    name="generic", title="other model", model_classes=(), keys_match=lambda keys: True,
    video_latent=False, switch_on="ddpm",
    presets=(
        Preset("temporal", "temporal layers by name (time_stack, time_mixer, temporal_conv …)", _TEMPORAL_NAMES),
        Preset("spatial", "weights that are not temporal by name", lambda k: not _TEMPORAL_NAMES(k) and not _resampler(k)),
        Preset("image_cross_attention", "every attn2", _ATTN2),
        Preset("resampler", "diffusion_model.image_proj_model.*", _resampler),
    ),
)

FAMILIES: tuple[Family, ...] = (DYNAMICRAFTER, SVD, WAN)


def by_name(name: str) -> Family:
    for f in FAMILIES + (GENERIC,):
        if f.name == name:
            return f
    raise KeyError(name)


def of_keys(keys: Iterable[str]) -> Family:
    """The family whose weights these ModelPatcher keys are (GENERIC when none matches)."""
    keys = list(keys)
    for f in FAMILIES:
        if f.keys_match(keys):
            return f
    return GENERIC


def of_model(model: Any) -> Family:
    """The family of a MODEL (ModelPatcher) or ``BaseModel``: by class (MRO names), else by its weight keys."""
    base = getattr(model, "model", model)
    names = {c.__name__ for c in type(base).__mro__}
    for f in FAMILIES:
        if names.intersection(f.model_classes):
            return f
    try:
        keys = [n for n, _ in base.named_parameters()]
    except AttributeError:
        return GENERIC
    return of_keys(keys)


def preset_names() -> tuple[str, ...]:
    """Every preset a filter input offers: ``all``, each family's presets (first seen order), ``custom``."""
    out = ["all"]
    for f in FAMILIES:
        out += [p.name for p in f.presets if p.name not in out]
    return tuple(out + ["custom"])


def preset_help() -> dict[str, str]:
    """One help line per preset name, naming what it selects in each family that has it."""
    out = {"all": "every diffusion-model weight (UNet / DiT and, for DynamiCrafter, the Resampler)"}
    for name in preset_names()[1:-1]:
        parts = [f"{f.title}: {f.preset(name).help}" for f in FAMILIES if f.preset(name) is not None]
        out[name] = "; ".join(parts)
    out["custom"] = "keys matching the custom regular expression (re.search on the ModelPatcher key)"
    return out


def temporal_ratio(vae: Any = None, latent_format: Any = None) -> int:
    """Frames per latent frame, as ComfyUI says: the VAE's ``downscale_index_formula`` (``(4, 8, 8)`` for Wan),
    else the latent format's ``temporal_downscale_ratio`` (0.33+), else 1 (image VAEs: one latent per frame)."""
    formula = getattr(vae, "downscale_index_formula", None)
    if isinstance(formula, (tuple, list)) and len(formula) == 3:
        return int(formula[0])
    ratio = getattr(latent_format, "temporal_downscale_ratio", None)
    if isinstance(ratio, int) and ratio >= 1:
        return ratio
    return 1
