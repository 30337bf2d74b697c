"""What differs between the ComfyUI versions the pack runs on (0.3.75 … 0.33+), behind capability checks.

Every name here is looked up when it is used (``main.py`` rebinds some of them at start-up, e.g.
``comfy.model_patcher.CoreModelPatcher`` becomes the dynamic-VRAM patcher on NVIDIA), never by version.

- :func:`string_to_seed` — moved from ``comfy.model_patcher`` to ``comfy.utils`` (the old name logs a
  warning per call on 0.33).
- :func:`patch_compute_dtype` — the dtype ComfyUI computes weight patches in on a device
  (``lora_compute_dtype``: fp16 on GPUs that prefer it since 0.33, float32 before).
- :func:`new_model_patcher` — core loaders build ``CoreModelPatcher`` (dynamic VRAM where ComfyUI enables
  it); so do ours.
- :func:`lowvram_patches_of` — where a weight's deferred patches live: ``<attr>_function`` (low-VRAM
  partial loads) or ``<attr>_lowvram_function`` (dynamic VRAM, 0.33).
- :func:`ensure_skipped_params_patched` — an ON_LOAD callback applying the patches ComfyUI's loaders
  leave out: parameters of non-leaf modules (DynamiCrafter's ``image_proj_model.latents``, 256's
  ``attn2.alpha``), and leaf parameters without cast support that a dynamic-VRAM load records in its
  backup without patching.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.utils
from comfy.patcher_extension import CallbacksMP

log = logging.getLogger("i2v_motion")


def string_to_seed(data: str) -> int:
    """ComfyUI's per-key seed (stochastic rounding), from wherever this ComfyUI keeps it."""
    fn = getattr(comfy.utils, "string_to_seed", None) or comfy.model_patcher.string_to_seed
    return fn(data)


def patch_compute_dtype(device: torch.device | str | None) -> torch.dtype:
    """The dtype ComfyUI's own ``patch_weight_to_device`` computes patched weights in on ``device``."""
    fn = getattr(comfy.model_management, "lora_compute_dtype", None)
    if fn is None or device is None:
        return torch.float32
    return fn(torch.device(device))


def new_model_patcher(model: torch.nn.Module, load_device: torch.device,
                      offload_device: torch.device) -> comfy.model_patcher.ModelPatcher:
    """The patcher core loaders use now: ``CoreModelPatcher`` (dynamic VRAM where enabled), else ModelPatcher."""
    cls = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    return cls(model, load_device=load_device, offload_device=offload_device)


def is_dynamic(patcher: Any) -> bool:
    """True for a dynamic-VRAM patcher (weights streamed per module, patches in ``_lowvram_function``)."""
    fn = getattr(patcher, "is_dynamic", None)
    return bool(fn()) if callable(fn) else False


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


# --------------------------------------------------------------------------------------------------
# patches the loaders leave out

_PATCHED_MARK = "_i2v_motion_patched"


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


_SKIPPED_CALLBACK_KEY = "i2v_motion.patch_skipped_params"


def add_wrapper_once(patcher: Any, kind: str, key: str, fn) -> None:
    """Add wrapper ``fn`` of ``kind`` under ``key`` unless ``patcher`` has it already (clones inherit wrappers)."""
    if fn not in patcher.wrappers.get(kind, {}).get(key, []):
        patcher.add_wrapper_with_key(kind, key, fn)


def ensure_skipped_params_patched(model: comfy.model_patcher.ModelPatcher) -> None:
    """Register (once per patcher) the ON_LOAD callback :func:`_patch_skipped_params`."""
    cbs = model.callbacks.get(CallbacksMP.ON_LOAD, {}).get(_SKIPPED_CALLBACK_KEY, [])
    if _patch_skipped_params not in cbs:
        model.add_callback_with_key(CallbacksMP.ON_LOAD, _SKIPPED_CALLBACK_KEY, _patch_skipped_params)
