"""LoRA files as core's LoraLoader reads them: the key map of a model and one weight adapter per patched key."""
from __future__ import annotations

import logging
import os
from typing import Any

import torch

import comfy.lora
import comfy.utils

from .weights import WeightAdapterBase

__all__ = ["load_lora_adapters", "adapter_delta"]


def load_lora_adapters(patcher: Any, path: str) -> dict[str, Any]:
    """``{ModelPatcher key: core patch}`` for the diffusion-model part of the LoRA file at ``path`` (safetensors or a
    weights-only pickle), read through core's key map and adapter loaders exactly as LoraLoaderModelOnly does."""
    sd = comfy.utils.load_torch_file(path, safe_load=True)
    key_map = comfy.lora.model_lora_keys_unet(patcher.model, {})
    level = logging.getLogger().level
    logging.getLogger().setLevel(max(level, logging.ERROR))  # core logs every unmatched key; we report them ourselves
    try:
        patches = comfy.lora.load_lora(sd, key_map, log_missing=False)
    except TypeError:  # older load_lora without log_missing
        patches = comfy.lora.load_lora(sd, key_map)
    finally:
        logging.getLogger().setLevel(level)
    if not patches:
        name = os.path.basename(path)
        raise ValueError(f"{name}: none of its {len(sd)} tensors is a LoRA of this model's diffusion-model weights "
                         f"(it is for another model, or a text-encoder-only LoRA)")
    return patches


def adapter_delta(patch: Any, key: str, shape: torch.Size, device: torch.device | str, scale: float = 1.0) -> torch.Tensor:
    """The weight change ``scale``·α·(B·A) a LoRA patch makes at ``key``, computed by core's own patch code on a zero
    weight (float32): adding it to a weight equals core applying the patch at strength ``scale``, bit for bit."""
    weights = getattr(patch, "weights", None) if isinstance(patch, WeightAdapterBase) else None
    if weights is not None and len(weights) > 4 and torch.is_tensor(weights[4]):
        raise ValueError(f"{key}: a DoRA LoRA (dora_scale) rescales the base weight itself, so it is not a task vector; "
                         f"apply it with a LoRA loader instead")
    if isinstance(patch, tuple) and len(patch) == 2 and patch[0] == "set":
        raise ValueError(f"{key}: a 'set' patch replaces the weight; it is not a task vector")
    zero = torch.zeros(tuple(shape), dtype=torch.float32, device=device)
    return comfy.lora.calculate_weight([(float(scale), patch, 1.0, None, None)], zero, key,
                                       intermediate_dtype=torch.float32)
