"""Where a weight lives in a ComfyUI model, and the one computation of a patched weight.

:func:`patched_weight` is ComfyUI's own ``patch_weight_to_device`` arithmetic (stored weight → compute dtype on
the device → ``convert_func`` → ``comfy.lora.calculate_weight`` → stochastic rounding to the storage dtype, seeded
by the key). Merges read their inputs with it (float32, unrounded), bakes write files with it, and the expert
schedule writes switched weights with it, so a weight is computed the same way everywhere.
"""
from __future__ import annotations

import collections
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import torch

import comfy.float
import comfy.lora
import comfy.model_management
import comfy.model_patcher
import comfy.utils
from comfy.weight_adapter import WeightAdapterBase

from .probes import patch_compute_dtype, rounds_elementwise, string_to_seed

__all__ = ["WeightAdapterBase", "LowVramPatch", "BackupRecord", "backup_record", "key_weight", "stored_weight",
           "backed_up_weight", "patched_weight", "write_patched_", "write_patched_many_", "round_to_storage", "cast_to_device", "get_attr",
           "copy_to_param", "SPAN_ELEMENTS"]

# elements per range when a weight is written piece by piece: on the CPU the range's float32 temporaries (1 MiB
# each) stay in a core's L2 cache and the ~10 operations per range cost little next to their work; on a GPU, large
# enough to amortise kernel launches while the range's temporaries stay small (≈ 5 × 16 MiB of VRAM)
SPAN_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 22}

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
    bk = backed_up_weight(patcher, key)
    return (weight if bk is None else bk), set_func, convert_func


def backed_up_weight(patcher: Any, key: str) -> torch.Tensor | None:
    """The stored weight of ``key`` that ``patcher``'s model backed up while its live weight holds patched values
    (ComfyUI's load, a weight hook, an expert schedule writing a phase in place), or None where nothing is backed up.
    Clones of one model share these records."""
    hbk = getattr(patcher, "hook_backup", {}).get(key, None)
    if hbk is not None:
        return hbk[0]
    bk = getattr(patcher, "backup", {}).get(key, None)
    return None if bk is None else bk.weight


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


def write_patched_(live: torch.Tensor, base: torch.Tensor, patches: Sequence, key: str, *,
                   span: int | None = None) -> bool:
    """Write into ``live`` in place (same storage) exactly what ``patched_weight(base, patches, key, live.device,
    round_to=live.dtype)`` computes, range by range, without whole-tensor temporaries; False (nothing written)
    where that cannot be done with the same bits.

    Taken where every step is elementwise: no patches (a cast copy of the base), or one patch without offset or
    function whose adapter offers ``span_patch`` (this pack's merges: sums over dense task vectors), a storage
    dtype ComfyUI rounds to nearest (:func:`~.probes.rounds_elementwise`), contiguous tensors of one shape. Each
    range goes through ComfyUI's steps in ComfyUI's order: cast to the patch compute dtype, ``strength_model``,
    the adapter, rounding to the storage dtype; then it is copied into ``live``."""
    if live.shape != base.shape or not live.is_contiguous() or not base.is_contiguous():
        return False
    if not patches:
        live.detach().copy_(base)  # = cast_to_device(base, device, live.dtype, copy=True): an elementwise cast
        return True
    if len(patches) != 1 or len(patches[0]) < 5 or not rounds_elementwise(live.dtype):
        return False
    strength, adapter, strength_model, offset, function = patches[0][:5]
    span_patch = getattr(adapter, "span_patch", None)
    apply = span_patch(key, strength, offset, function) if callable(span_patch) else None
    if apply is None:
        return False
    device = live.device
    compute = patch_compute_dtype(device)
    step = span or SPAN_ELEMENTS.get(device.type, SPAN_ELEMENTS["cuda"])
    step = max(8, step - step % 8)
    out, src = live.detach().view(-1), base.detach().reshape(-1)
    with _one_cpu_thread(device):
        for start in range(0, out.numel(), step):
            stop = min(out.numel(), start + step)
            dest = out[start:stop]
            if live.dtype == compute:  # the live range is ComfyUI's temporary copy: computed where it is kept
                t = dest.copy_(src[start:stop])  # = cast_to_device(base, device, compute, copy=True), in place
            else:
                t = cast_to_device(src[start:stop], device, compute, copy=True)
            if strength_model != 1.0:
                t *= strength_model  # comfy.lora.calculate_weight's own step before the adapter
            t = apply(t, start)
            r = round_to_storage(t, live.dtype, key)  # elementwise here: value.to(dtype)
            if r.data_ptr() != dest.data_ptr():
                dest.copy_(r)
    return True


def write_patched_many_(jobs: Sequence[tuple[torch.Tensor, torch.Tensor, Sequence, str]]) -> list:
    """:func:`write_patched_` for many ``(live, base, patches, key)`` at once: per job True (written), False (nothing
    written: take the whole-tensor path) or the exception it raised. On the CPU the weights are shared out over
    torch's threads, one weight per thread at a time (each with one intra-op thread: L2-sized ranges, no barriers);
    the bits are the same as one by one (every step is elementwise). Elsewhere, one by one."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def one(job):
        # grad and inference mode are per thread: the pool's threads take the caller's (ComfyUI's executor loads
        # weights as inference tensors, which only inference mode may update in place)
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return write_patched_(*job)
        except Exception as e:  # noqa: BLE001 - reported per job to the caller, which keeps going with the others
            return e

    n = torch.get_num_threads()
    if n == 1 or len(jobs) < 2 or any(live.device.type != "cpu" for live, *_ in jobs):
        return [one(j) for j in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0].numel())  # largest first: the threads end together
    results: list = [None] * len(jobs)
    torch.set_num_threads(1)  # new threads take this at their first operation
    try:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="i2v-weights") as pool:
            for i, r in zip(order, pool.map(one, [jobs[i] for i in order])):
                results[i] = r
    finally:
        torch.set_num_threads(n)
    return results


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Element-wise work on L2-sized CPU ranges in this thread alone: torch's intra-op threads would meet at a barrier
    after every operation, which costs more than the operation on a busy machine (measured on 2 shared cores: 28 s
    instead of 0.5 s for 224 MB)."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def round_to_storage(value: torch.Tensor, dtype: torch.dtype, key: str) -> torch.Tensor:
    """``value`` rounded to ``dtype`` as ComfyUI rounds a patched weight (stochastic rounding seeded by ``key``:
    fp16 to nearest, bf16 / fp8 stochastically). Idempotent on values already representable in ``dtype``.
    Where this ComfyUI rounds to nearest (:func:`~.probes.rounds_elementwise`) that is ``value.to(dtype)``, without
    hashing the key (ComfyUI's seed hash is Python code, ~0.2 ms a key: it dominated switches written by ranges)."""
    if rounds_elementwise(dtype):
        return value.to(dtype=dtype)
    return comfy.float.stochastic_rounding(value, dtype, seed=string_to_seed(key))


def get_attr(obj: Any, path: str) -> Any:
    return comfy.utils.get_attr(obj, path)


def copy_to_param(model: torch.nn.Module, key: str, value: torch.Tensor) -> None:
    """Write ``value`` into the live parameter ``key`` in place (its storage is kept)."""
    comfy.utils.copy_to_param(model, key, value)
