"""Patcher kinds (classic / low-VRAM / dynamic VRAM), where each keeps a weight's deferred patches, and the
ON_LOAD callback that applies the patches ComfyUI's loaders leave out.

- :func:`new_model_patcher` — core loaders build ``CoreModelPatcher`` (dynamic VRAM where ComfyUI enables it); so
  do ours. Never subclassed: ComfyUI 0.38's ``ModelPatcher.__init__``/``clone`` take new keywords (``fast_disk``),
  which a subclass would have to track; the pack only wraps and attaches.
- :func:`lowvram_patches_of` — a weight's deferred patches live in ``<attr>_function`` (low-VRAM partial loads) or
  ``<attr>_lowvram_function`` (dynamic VRAM, 0.33).
- :func:`ensure_skipped_params_patched` — parameters of non-leaf modules (DynamiCrafter's
  ``image_proj_model.latents``, 256's ``attn2.alpha``) and leaf parameters without cast support that a
  dynamic-VRAM load records in its backup without patching get their patches where the weight lives.
"""
from __future__ import annotations

from typing import Any

import torch

import comfy.model_patcher
import comfy.utils

from .hooks import CallbacksMP, add_callback_once

__all__ = ["ModelPatcher", "is_model_patcher", "new_model_patcher", "patcher_kind", "is_dynamic", "lowvram_slot",
           "lowvram_patches_of", "mark_module_dirty", "ensure_skipped_params_patched"]

ModelPatcher = comfy.model_patcher.ModelPatcher


def is_model_patcher(x: Any) -> bool:
    return isinstance(x, comfy.model_patcher.ModelPatcher)


def new_model_patcher(model: torch.nn.Module, load_device: torch.device,
                      offload_device: torch.device) -> comfy.model_patcher.ModelPatcher:
    """The patcher core loaders use now: ``CoreModelPatcher`` (dynamic VRAM where enabled), else ModelPatcher."""
    cls = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    return cls(model, load_device=load_device, offload_device=offload_device)


def is_dynamic(patcher: Any) -> bool:
    """True for a dynamic-VRAM patcher (weights streamed per module, patches in ``_lowvram_function``)."""
    fn = getattr(patcher, "is_dynamic", None)
    return bool(fn()) if callable(fn) else False


def patcher_kind(patcher: Any) -> str:
    """``"dynamic"`` (dynamic VRAM), ``"lowvram"`` (loaded in part: some weights computed per forward) or
    ``"classic"`` (every weight patched in place at load, or not loaded)."""
    if is_dynamic(patcher):
        return "dynamic"
    lowvram = getattr(patcher.model, "model_lowvram", False) or getattr(patcher.model, "lowvram_patch_counter", 0)
    return "lowvram" if lowvram else "classic"


def lowvram_slot(attr: str) -> str:
    """Attribute name of a module's dynamic-VRAM patch slot for parameter ``attr`` (0.33+)."""
    return f"{attr}_lowvram_function"


def lowvram_patches_of(module: torch.nn.Module, attr: str, key: str) -> list:
    """The ``LowVramPatch`` objects that compute ``key`` on the fly: in ``<attr>_function`` (partial loads)
    and in ``<attr>_lowvram_function`` (dynamic VRAM)."""
    out = [f for f in (getattr(module, f"{attr}_function", None) or [])
           if getattr(f, "key", None) == key and isinstance(f, comfy.model_patcher.LowVramPatch)]
    slot = getattr(module, lowvram_slot(attr), None)
    if slot is not None and getattr(slot, "key", None) == key:
        out.append(slot)
    return out


def mark_module_dirty(module: torch.nn.Module) -> None:
    """Make a dynamic-VRAM module re-cast (and re-patch) its weights on next use: its resident copy in
    the VRAM buffer was written with the patches of before."""
    if hasattr(module, "_v_signature"):
        module._v_signature = None


_PATCHED_MARK = "_i2v_motion_patched"
_SKIPPED_CALLBACK_KEY = "i2v_motion.patch_skipped_params"


def _patch_skipped_params(patcher, device_to, lowvram_model_memory, force_patch_weights, full_load):
    """ON_LOAD callback: apply, where the weight lives, the patches the load left out. Idempotent per load:
    keys patched by ComfyUI, computed by a ``LowVramPatch`` or already patched by this callback are skipped."""
    dynamic = is_dynamic(patcher)
    done: dict[str, torch.nn.Module] = {}
    for key in list(patcher.patches):
        path, _, name = key.rpartition(".")
        try:
            mod = comfy.utils.get_attr(patcher.model, path) if path else patcher.model
        except AttributeError:
            continue
        own = dict(mod.named_parameters(recurse=False))
        if name not in own or lowvram_patches_of(mod, name, key):
            continue
        live = own[name]
        if key in patcher.backup:
            # ComfyUI patched it, except a dynamic load's leaf params without cast support (backed up only)
            if not dynamic or hasattr(mod, "comfy_cast_weights") or any(True for _ in mod.children()):
                continue
            if getattr(live, _PATCHED_MARK, None) == patcher.patches_uuid:
                continue
        elif dynamic and getattr(live, _PATCHED_MARK, None) == patcher.patches_uuid:
            continue
        patcher.patch_weight_to_device(key, device_to=live.device)
        new = comfy.utils.get_attr(patcher.model, key)
        try:
            setattr(new, _PATCHED_MARK, patcher.patches_uuid)
        except AttributeError:  # pragma: no cover - tensors take attributes
            pass
        done[path] = mod
    for mod in done.values():
        # comfy must not patch these modules again if a later partial load finds room for them
        mod.comfy_patched_weights = True


def ensure_skipped_params_patched(model: comfy.model_patcher.ModelPatcher) -> None:
    """Register (once per patcher) the ON_LOAD callback :func:`_patch_skipped_params`."""
    add_callback_once(model, CallbacksMP.ON_LOAD, _SKIPPED_CALLBACK_KEY, _patch_skipped_params)
