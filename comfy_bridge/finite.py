"""The one NaN/Inf scan of the pack: checkpoints at load, merge inputs, the weights a sampler is about to use."""
from __future__ import annotations

from typing import Iterable

import torch

_MATH_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def nonfinite(tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating tensors among ``(name, tensor)`` that hold NaN or ±Inf, in the given order.

    One ``aminmax`` per tensor (NaN and ±Inf propagate into it; no tensor-sized temporary), fp8 storage upcast one
    tensor at a time, and a single device synchronisation at the end, so it costs one read of the weights."""
    names: list[str] = []
    flags: list[torch.Tensor] = []
    for name, t in tensors:
        if t is None or not t.is_floating_point() or t.numel() == 0:
            continue
        flat = t.detach().reshape(-1)
        if flat.dtype not in _MATH_DTYPES:
            flat = flat.to(torch.float32)
        lo, hi = torch.aminmax(flat)
        names.append(name)
        flags.append(torch.isfinite(lo) & torch.isfinite(hi))
    if not flags:
        return []
    ok: list[bool] = [True] * len(flags)
    by_device: dict[torch.device, list[int]] = {}
    for i, f in enumerate(flags):
        by_device.setdefault(f.device, []).append(i)
    for idx in by_device.values():  # one transfer per device
        for i, good in zip(idx, torch.stack([flags[i] for i in idx]).cpu().tolist()):
            ok[i] = good
    return [n for n, good in zip(names, ok) if not good]
