"""Capability probes and names that moved between ComfyUI versions (0.3.75 … 0.33, and what is known of 0.38)."""
from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

import comfy.model_management
import comfy.utils


def string_to_seed(data: str) -> int:
    """ComfyUI's per-key seed (stochastic rounding), from wherever this ComfyUI keeps it (``comfy.utils`` since
    0.33; ``comfy.model_patcher`` before, where the old name now logs a warning per call)."""
    fn = getattr(comfy.utils, "string_to_seed", None)
    if fn is None:
        from comfy import model_patcher

        fn = model_patcher.string_to_seed
    return fn(data)


def patch_compute_dtype(device: torch.device | str | None) -> torch.dtype:
    """The dtype ComfyUI's own ``patch_weight_to_device`` computes patched weights in on ``device``
    (``lora_compute_dtype``: fp16 on GPUs that prefer it since 0.33, float32 before and on the CPU)."""
    fn = getattr(comfy.model_management, "lora_compute_dtype", None)
    if fn is None or device is None:
        return torch.float32
    return fn(torch.device(device))


@functools.lru_cache(maxsize=None)
def rounds_elementwise(dtype: torch.dtype) -> bool:
    """Whether ComfyUI rounds a patched weight to ``dtype`` element by element (to nearest: the result of an element
    depends neither on the key's seed nor on the other elements), so that a weight written range by range gets the
    bits of the whole. True for float32 / float16 / bfloat16 on today's ComfyUI; False for fp8 (stochastic rounding
    from one generator over the whole tensor), and for any dtype a future ComfyUI rounds stochastically."""
    import comfy.float

    if not dtype.is_floating_point:
        return False
    x = torch.randn(4099, generator=torch.Generator().manual_seed(0), dtype=torch.float32) * 3.1
    try:
        a = comfy.float.stochastic_rounding(x, dtype, seed=1)
        b = comfy.float.stochastic_rounding(x, dtype, seed=2)
        c = comfy.float.stochastic_rounding(x[1001:3003], dtype, seed=1)
        return a.dtype == dtype and torch.equal(a, b) and torch.equal(a, x.to(dtype)) and torch.equal(a[1001:3003], c)
    except Exception:  # a dtype this ComfyUI (or torch, for comparisons) cannot handle here
        return False


def io_type(name: str) -> Any | None:
    """A ``comfy_api.latest.io`` type by name (``"BoundingBox"``, ``"Tracks"``) where this ComfyUI has it, else None."""
    from comfy_api.latest import io

    return getattr(io, name, None)


def schema_has_field(name: str) -> bool:
    """Whether the host's V3 ``io.Schema`` has field ``name`` (``search_aliases`` arrived after 0.3.75)."""
    from comfy_api.latest import io

    return name in getattr(io.Schema, "__dataclass_fields__", {})


def cli_flag(name: str, default: Any = None) -> Any:
    """A ComfyUI command-line flag (``disable_metadata`` …), or ``default`` where this ComfyUI has none."""
    import comfy.cli_args

    return getattr(comfy.cli_args.args, name, default)


def takes_keyword(fn: Any, name: str) -> bool:
    """Whether callable ``fn`` names parameter ``name`` in its signature (a ``**kwargs`` catch-all does not count)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
