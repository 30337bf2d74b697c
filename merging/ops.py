"""Pure per-tensor merge maths: DARE, TIES and the EDG coefficient identity.

Every function works on one tensor (one state-dict key) at a time, in float32, and never mutates its
inputs unless the name ends in ``_``. Randomness (DARE masks) comes from a counter-free generator seeded
by a stable hash of ``(seed, tag, key)``: the same inputs give bit-identical masks whatever the order
in which keys are computed, on any device (masks are drawn on the CPU and moved).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

__all__ = ["key_seed", "check_drop_rate", "dare_keep_mask", "dare", "dare_apply_", "pack_mask", "unpack_mask",
           "trim_top_k", "ties_merge", "edg_dynamics_delta_coeff"]


def key_seed(seed: int, key: str, tag: str = "") -> int:
    """A 64-bit seed from ``(seed, tag, key)`` via BLAKE2b (stable across processes, unlike ``hash()``)."""
    h = hashlib.blake2b(f"{int(seed)}\x1f{tag}\x1f{key}".encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def check_drop_rate(p: float) -> float:
    """Validate a DARE drop rate: a finite number in [0, 1)."""
    p = float(p)
    if not (0.0 <= p < 1.0):
        raise ValueError(f"DARE drop rate p must be in [0, 1) (the kept part is rescaled by 1/(1-p)); got {p}")
    return p


def dare_keep_mask(shape: Sequence[int] | torch.Size, p: float, seed: int, key: str, tag: str = "") -> torch.Tensor:
    """Bernoulli(1-p) keep mask (bool, CPU) for one tensor, seeded from ``(seed, tag, key)``.

    Drawn from 32-bit words of numpy's SFC64 generator: keep where ``u32 < round((1-p)·2^32)``, so the
    keep probability equals 1-p to within 2^-32. Elements are in C order of ``shape``.
    """
    p = check_drop_rate(p)
    n = 1
    for s in shape:
        n *= int(s)
    thr = int(round((1.0 - p) * 4294967296.0))
    if n == 0:
        return torch.zeros(tuple(shape), dtype=torch.bool)
    bits = np.random.SFC64(key_seed(seed, key, tag)).random_raw((n + 1) // 2)
    words = bits.view(np.uint32)[:n]
    if thr >= 4294967296:
        keep = np.ones(n, dtype=np.bool_)
    else:
        keep = words < np.uint32(thr)
    return torch.from_numpy(keep).reshape(tuple(shape))


def dare(delta: torch.Tensor, p: float, *, seed: int, key: str, tag: str = "", keep_1d: bool = True,
         inplace: bool = False) -> torch.Tensor:
    """DARE: drop each element with probability p and rescale the rest by 1/(1-p).

    ``keep_1d`` leaves tensors with ndim <= 1 (biases, norm gains) untouched, as the EDG release does.
    Masks depend only on ``(seed, tag, key)`` and the shape, so they are reproducible per key.
    """
    p = check_drop_rate(p)
    if p == 0.0 or (keep_1d and delta.ndim <= 1):
        return delta if inplace else delta.clone()
    mask = dare_keep_mask(delta.shape, p, seed, key, tag).to(delta.device, non_blocking=True)
    if inplace:
        return dare_apply_(delta, mask, p)
    return torch.where(mask, delta * (1.0 / (1.0 - p)), torch.zeros((), dtype=delta.dtype, device=delta.device))


def dare_apply_(delta: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """The DARE arithmetic on ``delta`` in place: ``delta · keep · 1/(1-p)`` (``keep``: bool or 0/1 of
    ``delta``'s dtype, same shape or flat elements of a range). Element by element, so a range of a tensor gives
    the bits of the whole tensor's range. A bool mask is multiplied as the 0/1 of ``delta``'s dtype it promotes to
    (the same products, signed zeros and NaNs included; torch's bool-to-float promotion inside ``mul`` is ~10×
    slower on the CPU than converting first)."""
    if keep.dtype != delta.dtype:
        keep = keep.to(delta.dtype)
    return delta.mul_(keep).mul_(1.0 / (1.0 - p))


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask packed 8 elements a byte (C order, first element in the high bit): a uint8 CPU tensor."""
    flat = mask.detach().reshape(-1).to("cpu").numpy()
    return torch.from_numpy(np.packbits(flat))


def unpack_mask(packed: torch.Tensor, start: int, stop: int, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Elements ``[start, stop)`` of a mask packed by :func:`pack_mask` as a flat tensor on ``device`` (``start`` a
    multiple of 8): bool, or 0/1 of ``dtype``. Unpacked on the device: only the packed bytes travel."""
    if start % 8:
        raise ValueError(f"unpack_mask: start {start} is not a multiple of 8")
    device = torch.device(device)
    n = stop - start
    part = packed[start // 8:(stop + 7) // 8]
    if device.type == "cpu":
        bits = torch.from_numpy(np.unpackbits(part.numpy(), count=n))
    else:
        part = part.to(device, non_blocking=True)
        shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=device)
        bits = ((part.unsqueeze(1) >> shifts) & 1).reshape(-1)[:n]
    return bits.view(torch.bool) if dtype == torch.bool else bits.to(dtype)


def trim_top_k(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES trim: keep the ``density`` fraction of entries with the largest magnitude, zero the rest."""
    density = float(density)
    if not (0.0 < density <= 1.0):
        raise ValueError(f"TIES density (top-k fraction) must be in (0, 1]; got {density}")
    n = delta.numel()
    k = int(round(density * n))
    if density >= 1.0 or k >= n:
        return delta.clone()
    if k <= 0:
        return torch.zeros_like(delta)
    mag = delta.abs().reshape(-1).to(torch.float32)
    # k-th largest = (n-k+1)-th smallest; ties at the threshold are kept (deterministic).
    thr = torch.kthvalue(mag.cpu(), n - k + 1).values.to(delta.device)
    return torch.where(delta.abs() >= thr, delta, torch.zeros((), dtype=delta.dtype, device=delta.device))


def ties_merge(deltas: Sequence[torch.Tensor], density: float | None = None) -> torch.Tensor:
    """TIES merge of already-weighted deltas ``v_i = w_i·τ_i``: trim (top-k), elect sign, disjoint mean.

    Sign election: γ = sign(Σ_i v̂_i). Disjoint mean: average of the v̂_i whose sign agrees with γ over
    the number of such (non-zero) entries. ``density=None`` skips the trim (used after DARE).
    """
    if len(deltas) == 0:
        raise ValueError("ties_merge needs at least one delta")
    trimmed = [d if density is None else trim_top_k(d, density) for d in deltas]
    stacked = torch.stack([t.to(torch.float32) for t in trimmed])
    elected = torch.sign(stacked.sum(dim=0))
    agree = (torch.sign(stacked) == elected) & (stacked != 0)
    num = (stacked * agree).sum(dim=0)
    cnt = agree.sum(dim=0).clamp_min(1)
    return num / cnt


def edg_dynamics_delta_coeff(alpha_d: float, beta_d: float) -> float:
    """θ_dyn = θ_base + β_d·DARE(α_d·(θ_base − θ_ft)) = θ_base + (−α_d·β_d)·DARE(τ) (DARE is linear)."""
    return -float(alpha_d) * float(beta_d)
