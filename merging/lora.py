"""LoRAs as task vectors: the weight change of a LoRA file (the formats core's LoraLoader reads) over the model it
is for, computed lazily per key by core's own adapter code, so DARE, TIES, extrapolation (weight > 1, negative) and
TIES combinations of several LoRAs work as they do for fine-tunes — and task arithmetic (``sum``, weight w) equals
core's LoraLoaderModelOnly at strength w bit for bit."""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from ..comfy_bridge.lora import adapter_delta, load_lora_adapters
from ..comfy_bridge.patchers import ModelPatcher, is_model_patcher
from .filters import KeyFilter, detect_architecture
from .patches import KeyedVector, _listing, diffusion_param_keys

__all__ = ["LoraTaskVector", "make_lora_task_vector"]


class LoraTaskVector(KeyedVector):
    """τ = α/r·B·A per key of one LoRA file over the model it was loaded for (the value on I2V_TASK_VECTOR sockets).
    Holds core's patch objects (the file's tensors), never a dense copy."""

    folds_scale = True  # a term's coefficient becomes the LoRA strength (core's own arithmetic)

    def __init__(self, name: str, patches: dict[str, Any], keys: Sequence[str], shapes: dict[str, torch.Size],
                 key_filter: KeyFilter, info: dict):
        super().__init__(keys, shapes, key_filter, info)
        self.name = name
        self.patches = patches

    def scaled_delta(self, key: str, device: torch.device | str, scale: float) -> torch.Tensor:
        return adapter_delta(self.patches[key], key, self.shapes[key], device, scale)


def make_lora_task_vector(model: ModelPatcher, path: str, preset: str = "all", regex: str = "") -> LoraTaskVector:
    """The task vector of the LoRA file at ``path`` over ``model`` (the base it was trained on), over the keys the
    filter selects. Errors name the file: not a LoRA of this model, a filter that selects none of its keys, DoRA."""
    if not is_model_patcher(model):
        raise TypeError(f"model must be a ComfyUI MODEL (ModelPatcher), got {type(model).__name__}")
    name = os.path.basename(path)
    patches = load_lora_adapters(model, path)
    shapes = diffusion_param_keys(model)
    key_filter = KeyFilter(preset, regex or "")
    pred = key_filter.predicate(list(shapes))
    lora_keys = [k for k in patches if k in shapes]
    keys = [k for k in lora_keys if pred(k)]
    if not keys:
        raise ValueError(f"{name}: filter {key_filter.describe()} selects none of the {len(lora_keys)} weights this "
                         f"LoRA changes (e.g. {_listing(lora_keys, 3)})")
    for k in keys[:1]:  # a DoRA / 'set' file is refused now, not when the model loads
        adapter_delta(patches[k], k, shapes[k], "cpu")
    info = {"lora": name, "architecture": detect_architecture(shapes), "model_class": type(model.model).__name__,
            "lora_keys": len(lora_keys)}
    return LoraTaskVector(name, patches, keys, {k: shapes[k] for k in keys}, key_filter, info)
