"""Where a weight lives in a ComfyUI model, and the one computation of a patched weight.

:func:`patched_weight` is ComfyUI's own ``patch_weight_to_device`` arithmetic (stored weight → compute dtype on
the device → ``convert_func`` → ``comfy.lora.calculate_weight`` → stochastic rounding to the storage dtype, seeded
by the key). Merges read their inputs with it (float32, unrounded), bakes write files with it, and the expert
schedule writes switched weights with it, so a weight is computed the same way everywhere.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Sequence

import torch

import comfy.float
import comfy.lora
import comfy.model_management
import comfy.model_patcher
import comfy.utils
from comfy.weight_adapter import WeightAdapterBase

from .probes import patch_compute_dtype, string_to_seed

__all__ = ["WeightAdapterBase", "LowVramPatch", "BackupRecord", "backup_record", "key_weight", "stored_weight",
           "patched_weight", "round_to_storage", "cast_to_device", "get_attr", "copy_to_param"]

LowVramPatch = comfy.model_patcher.LowVramPatch
# ComfyUI's own backup record is an anonymous ``namedtuple('Dimension', ['weight', 'inplace_update'])``; records
# the pack adds must read the same (``.weight``, ``.inplace_update``, tuple order).
BackupRecord = collections.namedtuple("BackupRecord", ["weight", "inplace_update"])


def backup_record(weight: torch.Tensor, inplace_update: bool) -> tuple:
    """A record for ``ModelPatcher.backup`` as ComfyUI writes them (the base weight, whether it is restored in place)."""
    return BackupRecord(weight, inplace_update)


def key_weight(model: torch.nn.Module, key: str) -> tuple[torch.Tensor, Callable | None, Callable | None]:
    """``(live tensor, set_func, convert_func)`` of ``key`` in a ``BaseModel`` (ComfyUI's ``get_key_weight``)."""
    return comfy.model_patcher.get_key_weight(model, key)


def stored_weight(patcher: Any, key: str) -> tuple[torch.Tensor, Callable | None, Callable | None]:
    """The weight ComfyUI patches for ``key`` — the live tensor, or the base it backed up while the model is
    patched (or hooked) — with its ``set_func`` / ``convert_func``. No copy."""
    weight, set_func, convert_func = key_weight(patcher.model, key)
    bk = patcher.backup.get(key, None)
    if bk is not None:
        weight = bk.weight
    hbk = getattr(patcher, "hook_backup", {}).get(key, None)
    if hbk is not None:
        weight = hbk[0]
    return weight, set_func, convert_func


def cast_to_device(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None,
                   copy: bool = False) -> torch.Tensor:
    return comfy.model_management.cast_to_device(t, torch.device(device), dtype, copy=copy)


def patched_weight(weight: torch.Tensor, patches: Sequence, key: str, device: torch.device | str, *,
                   compute_dtype: torch.dtype | None = None, convert_func: Callable | None = None,
                   round_to: torch.dtype | None = None) -> torch.Tensor:
    """A new tensor on ``device``: ``weight`` with ``patches`` applied as ComfyUI applies them at load.

    ``compute_dtype``: what the patches are computed in (default: what ComfyUI uses on ``device``,
    ``lora_compute_dtype``); ``round_to``: the storage dtype to round the result to (stochastic rounding seeded by
    ``key``, as ComfyUI does), or None to keep the compute dtype (merge inputs, float32)."""
    device = torch.device(device)
    compute = patch_compute_dtype(device) if compute_dtype is None else compute_dtype
    t = cast_to_device(weight, device, compute, copy=True)
    if convert_func is not None:
        t = convert_func(t, inplace=True)
    if patches:
        t = comfy.lora.calculate_weight(list(patches), t, key, intermediate_dtype=torch.float32)
    if round_to is not None:
        t = round_to_storage(t, round_to, key)
    return t


def round_to_storage(value: torch.Tensor, dtype: torch.dtype, key: str) -> torch.Tensor:
    """``value`` rounded to ``dtype`` as ComfyUI rounds a patched weight (stochastic rounding seeded by ``key``:
    fp16 to nearest, bf16 / fp8 stochastically). Idempotent on values already representable in ``dtype``."""
    return comfy.float.stochastic_rounding(value, dtype, seed=string_to_seed(key))


def get_attr(obj: Any, path: str) -> Any:
    return comfy.utils.get_attr(obj, path)


def copy_to_param(model: torch.nn.Module, key: str, value: torch.Tensor) -> None:
    """Write ``value`` into the live parameter ``key`` in place (its storage is kept)."""
    comfy.utils.copy_to_param(model, key, value)
