"""ComfyUI 0.33's dynamic-VRAM weight layout on the CPU, and the weights ``comfy.ops`` runs with, for tests.

``ModelPatcherDynamic`` (0.33 ``comfy/model_patcher.py``) engages only on CUDA with comfy-aimdo: on a CPU
device its constructor returns a plain ``ModelPatcher``, and its host buffers need aimdo's native library.
What its ``load`` leaves for the forward pass are plain ComfyUI objects, though, and :func:`dynamic_load`
lays them out the same way on a CPU patcher (same rules, same ComfyUI functions):

- modules with cast support over 16 KiB: weights stay as stored; ``<attr>_lowvram_function`` holds
  ``LowVramPatch(key, patcher.patches)`` when the key has patches, else None; ``<attr>_function`` holds the
  weight wrappers;
- smaller such modules, resizing patches, and parameters other than weight/bias: force-loaded with
  ``patch_weight_to_device(key, device, force_cast=True)`` (backed up, patched in place);
- leaf modules without cast support: a backup record ``(weight, False)`` and a cast copy, *not patched*;
- parameters of non-leaf modules: left where they are;
- then the ON_LOAD callbacks, with ``is_dynamic()`` answering True as ``ModelPatcherDynamic`` does.

:func:`effective_weights` computes each weight as ``resolve_cast_module_with_vbar``'s ``post_cast`` does for a
streamed module: ``prepare`` the slot's patches into a staging buffer (0.33's prefetch, which rebuilds every
weight adapter as ``type(v)(v.loaded_keys, weights)``), cast the stored weight to the compute dtype, apply
the slot, round to the storage dtype (stochastic rounding seeded by the module name). The GPU check
(``tools/gpu_check.py``) runs the real ``ModelPatcherDynamic`` on CUDA.
"""
from __future__ import annotations


import pytest
import torch

import comfy.float
import comfy.lora
import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
from comfy.patcher_extension import CallbacksMP
from i2v_motion.comfy_bridge.patchers import lowvram_slot
from i2v_motion.comfy_bridge.probes import string_to_seed
from i2v_motion.comfy_bridge.weights import backup_record

CPU = torch.device("cpu")

SMALL_MODULE = 16 * 1024  # ModelPatcherDynamic force-loads modules up to this size


def require_dynamic_host() -> None:
    """Skip where the host has no dynamic VRAM (ComfyUI before 0.33: no prepared/prefetched patches)."""
    if not hasattr(comfy.model_patcher, "ModelPatcherDynamic") or \
            not hasattr(comfy.model_patcher.LowVramPatch, "prepare"):
        pytest.skip("this ComfyUI has no dynamic VRAM (ModelPatcherDynamic / LowVramPatch.prepare): 0.33+ only")


def _is_nonleaf_owner(m: torch.nn.Module) -> bool:
    own = {n for n, _ in m.named_parameters(recurse=False)}
    return any(n not in own for n, _ in m.named_parameters(recurse=True))


def dynamic_load(patcher: comfy.model_patcher.ModelPatcher, device: torch.device = CPU) -> None:
    """Lay out ``patcher``'s weights and patches as ``ModelPatcherDynamic.load`` does (see module doc)."""
    patcher.patch_model(device, load_weights=False)
    patcher.is_dynamic = lambda: True
    model = patcher.model

    def force_load(key: str) -> None:
        weight, _, _ = comfy.model_patcher.get_key_weight(model, key)
        if weight is None:
            return
        if key in patcher.backup:
            comfy.utils.set_attr_param(model, key, patcher.backup[key].weight)
        patcher.patch_weight_to_device(key, device_to=device, force_cast=True)

    for n, m in model.named_modules():
        params = dict(m.named_parameters(recurse=False))
        if _is_nonleaf_owner(m) or not (hasattr(m, "comfy_cast_weights") or params):
            continue
        if hasattr(m, "comfy_cast_weights"):
            m.comfy_cast_weights = True
            m.seed_key = n
            force = mm.module_size(m) <= SMALL_MODULE
            if not force:
                for attr in ("weight", "bias"):
                    key = f"{n}.{attr}"
                    w = getattr(m, attr, None)
                    if w is None:
                        continue
                    if key in patcher.patches:
                        if comfy.lora.calculate_shape(patcher.patches[key], w, key) != w.shape:
                            force = True
                        setattr(m, lowvram_slot(attr), comfy.model_patcher.LowVramPatch(key, patcher.patches))
                    else:
                        setattr(m, lowvram_slot(attr), None)
                    setattr(m, f"{attr}_function", list(patcher.weight_wrapper_patches.get(key, [])))
            if force:
                for attr in ("weight", "bias"):
                    if hasattr(m, lowvram_slot(attr)):
                        setattr(m, lowvram_slot(attr), None)
                    force_load(f"{n}.{attr}")
            for attr in params:
                if attr not in ("weight", "bias"):
                    force_load(f"{n}.{attr}")
        else:
            for attr, w in params.items():
                key = f"{n}.{attr}" if n else attr
                if key not in patcher.backup:
                    patcher.backup[key] = backup_record(w, False)
                dtype = getattr(m, attr + "_comfy_model_dtype", None)
                comfy.utils.set_attr_param(model, key, w.to(dtype=dtype, device=device))
    model.device = device
    model.current_weight_patches_uuid = patcher.patches_uuid
    for cb in patcher.get_all_callbacks(CallbacksMP.ON_LOAD):
        cb(patcher, device, 0, False, False)


def dynamic_unload(patcher: comfy.model_patcher.ModelPatcher) -> None:
    """Undo :func:`dynamic_load` (``restore_loaded_backups`` + slots cleared)."""
    model = patcher.model
    for key in list(patcher.backup):
        comfy.utils.set_attr_param(model, key, patcher.backup.pop(key).weight)
    for m in model.modules():
        for attr in ("weight", "bias"):
            if hasattr(m, lowvram_slot(attr)):
                delattr(m, lowvram_slot(attr))
        for name in ("comfy_patched_weights", "_v_signature"):
            if name in m.__dict__:
                delattr(m, name)
        if hasattr(m, "comfy_cast_weights"):
            m.weight_function, m.bias_function = [], []
    model.current_weight_patches_uuid = None
    del patcher.is_dynamic
    patcher.unpatch_model(CPU, unpatch_weights=False)


def effective_weights(patcher: comfy.model_patcher.ModelPatcher,
                      keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Each parameter as the forward pass of a dynamically loaded model computes it (see module doc)."""
    model = patcher.model
    compute = getattr(model, "manual_cast_dtype", None)
    out = {}
    want = set(keys) if keys is not None else None
    for n, m in model.named_modules():
        for attr, p in m.named_parameters(recurse=False):
            key = f"{n}.{attr}" if n else attr
            if want is not None and key not in want:
                continue
            x = p.detach()
            slot = getattr(m, lowvram_slot(attr), None)
            if slot is not None:
                size = slot.memory_required()
                staging = torch.empty(max(1, size), dtype=torch.uint8)
                slot.prepare(staging, None, copy=True, commit=True)
                try:
                    x = slot(x.to(compute or p.dtype, copy=True))
                finally:
                    slot.clear_prepared()
                x = comfy.float.stochastic_rounding(x, p.dtype, seed=string_to_seed(m.seed_key))
            for f in getattr(m, f"{attr}_function", None) or []:
                x = f(x)
            out[key] = x.detach().clone()
    return out
