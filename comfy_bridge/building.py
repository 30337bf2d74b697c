"""Constructors of the ComfyUI objects a checkpoint loader builds (VAE, CLIP, CLIP vision) and the cond types a
``BaseModel.extra_conds`` returns: the names that moved or grew arguments between ComfyUI versions."""
from __future__ import annotations

import json
import os
import tempfile

import comfy.clip_vision
import comfy.conds
import comfy.sd
import comfy.supported_models

from .probes import takes_keyword

__all__ = ["conds", "make_vae", "make_sd2_clip", "make_clip_vision", "openclip_vision_to_transformers",
           "sd2_clip_state_dict"]

conds = comfy.conds  # CONDRegular, CONDNoiseShape, CONDCrossAttn, CONDConstant


def make_vae(sd: dict, config: dict | None = None):
    """A core VAE from its weights (``config``: an LDM AutoencoderKL config where detection needs help)."""
    return comfy.sd.VAE(sd=sd) if config is None else comfy.sd.VAE(sd=sd, config=config)


def sd2_clip_state_dict(text_sd: dict) -> dict:
    """An OpenCLIP text tower's ``cond_stage_model.model.*`` weights in the key layout core's SD2 CLIP loads."""
    return comfy.supported_models.SD20({}).process_clip_state_dict(dict(text_sd))


def make_sd2_clip(clip_sd: dict, parameters: int, model_options: dict):
    """Core's SD2 CLIP (OpenCLIP ViT-H text, penultimate layer) holding ``clip_sd`` (in :func:`sd2_clip_state_dict`
    layout). ComfyUI 0.33+ loads weights (and the encoder to the GPU) at construction; older ones after.
    Returns ``(clip, missing_keys)``."""
    target = comfy.supported_models.SD20({}).clip_target()
    if takes_keyword(comfy.sd.CLIP.__init__, "state_dict"):
        return comfy.sd.CLIP(target, parameters=parameters, model_options=model_options, state_dict=clip_sd), []
    clip = comfy.sd.CLIP(target, parameters=parameters, model_options=model_options)
    missing, _ = clip.load_sd(clip_sd, full_model=True)
    return clip, list(missing)


def openclip_vision_to_transformers(vision_sd: dict, prefix: str) -> dict:
    """An OpenCLIP vision tower's weights under ``prefix`` in the transformers layout core's CLIP vision loads."""
    return comfy.clip_vision.convert_to_transformers(dict(vision_sd), prefix)


def make_clip_vision(sd: dict, config: dict):
    """Core CLIP_VISION from transformers-layout weights and a ``clip_vision_config.json``-style dict.
    Returns ``(clip_vision, missing_keys)``."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "clip_vision_config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        cv = comfy.clip_vision.ClipVisionModel(path)
    missing, _ = cv.load_sd(sd)
    return cv, list(missing)
