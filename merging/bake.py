"""Bake a (lazily merged) MODEL into a .safetensors file, one tensor at a time.

Each key is computed exactly as ComfyUI computes it when it loads the model fully on the bake device
(stored weight → the device's patch compute dtype, ``lora_compute_dtype``: float32 on CPU, fp16 on many
GPUs since 0.33 → the model's patches via ``comfy.lora.calculate_weight`` → storage dtype, stochastic
rounding seeded by the key), so the file equals the weights a full load of the lazy merge runs with. ``safetensors.save_file`` needs the whole state dict in memory; ``StreamingSafetensorsWriter``
writes the format directly (8-byte little-endian header length, JSON header, raw tensor bytes) with the
next tensor computed while the previous one is written.
"""
from __future__ import annotations

import json
import os
import queue
import threading
from typing import Callable

import torch

from ..comfy_bridge.patchers import ModelPatcher
from ..comfy_bridge.weights import patched_weight, stored_weight
from ..limits import nbytes
from .filters import DIFFUSION_PREFIX, detect_architecture
from .patches import merge_recipes

ST_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
OUT_DTYPES: dict[str, torch.dtype | None] = {"keep": None, "fp16": torch.float16, "bf16": torch.bfloat16,
                                             "fp32": torch.float32}


PARTIAL_SUFFIX = ".i2v-partial"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def clean_stale_partials(folder: str) -> list[str]:
    """Delete the temporary files of bakes whose process is gone (a crash or kill -9); returns their paths.

    Temporary files are ``.<name>.<pid>.i2v-partial`` beside the target; a running bake's file is kept."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for n in names:
        if not (n.startswith(".") and n.endswith(PARTIAL_SUFFIX)):
            continue
        try:
            pid = int(n[: -len(PARTIAL_SUFFIX)].rsplit(".", 1)[1])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            try:
                os.remove(os.path.join(folder, n))
                removed.append(os.path.join(folder, n))
            except OSError:
                pass
    return removed


class StreamingSafetensorsWriter:
    """Write a .safetensors file tensor by tensor, in a declared order, to ``path`` (atomically).

    ``entries``: ``(name, dtype, shape)`` in write order. ``write`` must be called in that order with
    matching tensors; ``close`` renames the temporary file into place. Use as a context manager. The
    temporary file is hidden and carries the writer's pid (``.<name>.<pid>.i2v-partial``), so a bake killed
    mid-way leaves nothing a loader lists, and :func:`clean_stale_partials` removes it at the next start.
    """

    def __init__(self, path: str, entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        self.path = path
        folder, base = os.path.split(os.path.abspath(path))
        self.tmp = os.path.join(folder, f".{base}.{os.getpid()}{PARTIAL_SUFFIX}")
        self.entries = list(entries)
        header: dict = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        off = 0
        for name, dtype, shape in self.entries:
            if dtype not in ST_DTYPES:
                raise ValueError(f"{name}: dtype {dtype} cannot be stored in safetensors")
            n = nbytes(shape, dtype)
            header[name] = {"dtype": ST_DTYPES[dtype], "shape": [int(s) for s in shape], "data_offsets": [off, off + n]}
            off += n
        blob = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
        blob += b" " * ((-len(blob)) % 8)
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        self._f = open(self.tmp, "wb")
        self._f.write(len(blob).to_bytes(8, "little"))
        self._f.write(blob)
        self._next = 0
        self.total_bytes = off

    def write(self, name: str, tensor: torch.Tensor) -> None:
        ename, dtype, shape = self.entries[self._next]
        if name != ename or tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"write order/shape mismatch: expected {ename} {dtype} {tuple(shape)}, "
                             f"got {name} {tensor.dtype} {tuple(tensor.shape)}")
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        if t.numel():
            self._f.write(memoryview(t.view(torch.uint8).numpy()))
        self._next += 1

    def close(self) -> None:
        if self._f is None:
            return
        if self._next != len(self.entries):
            self.abort()
            raise ValueError(f"only {self._next} of {len(self.entries)} tensors were written")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self) -> "StreamingSafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def saved_key_names(model: ModelPatcher, keys: list[str]) -> dict[str, str]:
    """ModelPatcher key → checkpoint name, via the model config's own saving convention.

    DynamiCrafter: ``model.diffusion_model.X`` and ``image_proj_model.Y``; ComfyUI models: their
    ``process_unet_state_dict_for_saving`` (``model.diffusion_model.X`` for SVD and most others).
    """
    rel = {k[len(DIFFUSION_PREFIX):]: k for k in keys}
    mapped = None
    cfg = getattr(model.model, "model_config", None)
    if cfg is not None and hasattr(cfg, "process_unet_state_dict_for_saving"):
        try:
            out = cfg.process_unet_state_dict_for_saving({r: r for r in rel})
            if isinstance(out, dict) and len(out) == len(rel) and set(out.values()) == set(rel):
                mapped = {rel[v]: k for k, v in out.items()}
        except Exception:  # a config that inspects tensors: fall back to the plain convention
            mapped = None
    if mapped is None:
        arch = detect_architecture(keys)
        mapped = {}
        for r, k in rel.items():
            resampler = arch == "dynamicrafter" and r.startswith("image_proj_model.")
            mapped[k] = r if resampler else "model.diffusion_model." + r
    return mapped


def patched_tensor(model: ModelPatcher, key: str, device: torch.device,
                   out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One key's weight as a full ComfyUI load computes it (stored weight + patches); patched keys are
    computed on ``device``, unpatched ones are returned where they are."""
    weight, _set_func, convert_func = stored_weight(model, key)
    store = weight.dtype
    target = out_dtype if (out_dtype is not None and weight.is_floating_point()) else store
    if key not in model.patches:
        return weight.detach().to(dtype=target)  # nothing to compute: no trip through ``device``
    # ComfyUI's patch_weight_to_device: the device's patch compute dtype, then round to the storage dtype
    return patched_weight(weight, model.patches[key], key, device, convert_func=convert_func, round_to=store).to(target)


def bake_model(model: ModelPatcher, path: str, *, out_dtype: str = "keep",
               extra_metadata: dict[str, str] | None = None, device: torch.device | str | None = None,
               progress: Callable[[int, int], None] | None = None,
               check_interrupt: Callable[[], None] | None = None) -> dict:
    """Write the model's diffusion model (all its patches applied) to ``path``; returns a summary.

    ``out_dtype``: "keep" (each key's storage dtype), "fp16", "bf16" or "fp32" (floating tensors).
    Metadata holds the merge recipes of this pack's patches (``i2v_motion.recipe``), a count of other
    patches, the architecture and the key convention.
    """
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {', '.join(OUT_DTYPES)}; got {out_dtype!r}")
    odt = OUT_DTYPES[out_dtype]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    with model.use_ejected():
        sd = model.model.state_dict()
    keys = [k for k in sd if k.startswith(DIFFUSION_PREFIX)]
    if not keys:
        raise ValueError("the model has no diffusion_model weights to bake")
    names = saved_key_names(model, keys)
    entries = []
    for k in keys:
        w = model.backup[k].weight if k in model.backup else sd[k]
        dt = odt if (odt is not None and w.is_floating_point()) else w.dtype
        entries.append((names[k], dt, tuple(w.shape)))
    del sd
    recipes, others = merge_recipes(model)
    arch = detect_architecture(keys)
    meta = {
        "format": "pt",
        "i2v_motion.recipe": json.dumps(recipes, sort_keys=True),
        "i2v_motion.other_patches": json.dumps(others, sort_keys=True),
        "i2v_motion.architecture": arch,
        "i2v_motion.key_convention": "model.diffusion_model.* + image_proj_model.*" if arch == "dynamicrafter"
        else "model.diffusion_model.*",
        "i2v_motion.out_dtype": out_dtype,
    }
    meta.update(extra_metadata or {})

    # compute in this thread, write in another: one tensor in flight
    q: queue.Queue = queue.Queue(maxsize=2)
    err: list[BaseException] = []

    def writer_loop(w: StreamingSafetensorsWriter):
        while True:
            item = q.get()
            if item is None:
                return
            if err:
                continue
            try:
                w.write(*item)
            except BaseException as e:  # reported to the producer
                err.append(e)

    writer = StreamingSafetensorsWriter(path, entries, meta)
    th = threading.Thread(target=writer_loop, args=(writer,), daemon=True)
    th.start()
    ok = False
    try:
        for i, k in enumerate(keys):
            if check_interrupt is not None:
                check_interrupt()
            if err:
                raise err[0]
            t = patched_tensor(model, k, dev, entries[i][1]).to("cpu")
            q.put((names[k], t))
            if progress is not None:
                progress(i + 1, len(keys))
        q.put(None)
        th.join()
        if err:
            raise err[0]
        writer.close()
        ok = True
    finally:
        if not ok:
            while th.is_alive():
                try:
                    q.put(None, timeout=0.1)
                except queue.Full:
                    pass
                th.join(timeout=0.1)
            writer.abort()
    return {"path": path, "tensors": len(keys), "bytes": writer.total_bytes, "recipes": len(recipes),
            "architecture": arch}
