"""Never report garbage as success: non-finite weights and non-finite sampling results are errors.

Two sampling wrappers on every MODEL this pack makes (DynamiCrafter from its loader, merges, schedules):

- before the sampler runs (``SAMPLER_SAMPLE``, the model is loaded): the weights that sit on the device
  are checked for NaN/Inf once per load (one reduction per tensor, one synchronisation), and a bad weight
  stops the run with its name;
- after the run (``OUTER_SAMPLE``): a latent with NaN/Inf is an error naming the likely cause — non-finite
  weights, merge coefficients that blow the weights up (large task-vector weights, DARE p near 1), or a
  half-precision overflow — instead of a black video reported as a success.

Weights computed on the fly (low-VRAM / dynamic-VRAM patches) are not materialised at load; a problem
there shows in the result check.
"""
from __future__ import annotations

import logging

import torch

from comfy.patcher_extension import WrappersMP

from .compat import add_wrapper_once

log = logging.getLogger("i2v_motion")

GUARD_KEY = "i2v_motion.guards"
_MAX_NAMED = 5


class NonFiniteError(RuntimeError):
    """A weight or a sampled latent holds NaN/Inf."""


def nonfinite_weights(model: torch.nn.Module, device: torch.device | None = None) -> list[str]:
    """Names of floating parameters (on ``device`` when given) that hold NaN or Inf."""
    names, flags = [], []
    for name, p in model.named_parameters():
        if not p.is_floating_point() or p.numel() == 0 or (device is not None and p.device != device):
            continue
        t = p.detach()
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            t = t.float()  # fp8 storage: no reductions
        names.append(name)
        flags.append(torch.isfinite(t).all())
    if not flags:
        return []
    ok = torch.stack([f.to("cpu") if f.device.type != flags[0].device.type else f for f in flags]).cpu()
    return [n for n, good in zip(names, ok.tolist()) if not good]


def _merge_hint(patcher) -> str:
    try:
        from .merging.patches import merge_recipes
    except ImportError:  # pragma: no cover
        return ""
    recipes, _ = merge_recipes(patcher)
    parts = []
    for r in recipes:
        coeffs = {k: r[k] for k in ("alpha_d", "beta_d", "alpha_c", "beta_c") if k in r}
        weights = r.get("weights") or []
        p = float(r.get("p") or 0.0)
        big = [w for w in list(weights) + list(coeffs.values()) if abs(float(w)) > 3.0]
        if big or p >= 0.95:
            desc = ", ".join(f"{k} {v:g}" for k, v in coeffs.items()) or \
                "weights " + ", ".join(f"{float(w):g}" for w in weights)
            parts.append(f"{r.get('node', 'merge')} ({desc}{f', DARE p {p:g} rescales kept deltas ×{1 / (1 - p):.0f}' if p >= 0.95 else ''})")
    if not parts:
        return ""
    return ("; likely cause: merge coefficients that push the weights far from both models: " + "; ".join(parts)
            + " — use smaller weights (EDG: |w| ≤ 1.5) or a smaller DARE p")


def _listing(names: list[str]) -> str:
    more = f" (+{len(names) - _MAX_NAMED} more)" if len(names) > _MAX_NAMED else ""
    return ", ".join(names[:_MAX_NAMED]) + more


def check_loaded_weights(patcher) -> None:
    """Raise NonFiniteError when a weight on the load device holds NaN/Inf (once per load)."""
    model = patcher.model
    stamp = (id(patcher), getattr(model, "current_weight_patches_uuid", None), getattr(model, "device", None))
    if getattr(model, "_i2v_finite_stamp", None) == stamp:
        return
    bad = nonfinite_weights(model, patcher.load_device if model.device == patcher.load_device else None)
    if bad:
        raise NonFiniteError(f"non-finite values (NaN/Inf) in {len(bad)} weight(s) of the loaded model: {_listing(bad)}"
                             + (_merge_hint(patcher) or "; the checkpoint (or a patch applied to it) is damaged"))
    model._i2v_finite_stamp = stamp


def _sampler_sample_guard(executor, *args, **kwargs):
    guider = args[0] if args else None
    patcher = getattr(guider, "model_patcher", None)
    if patcher is not None:
        check_loaded_weights(patcher)
    return executor(*args, **kwargs)


def _outer_sample_guard(executor, *args, **kwargs):
    out = executor(*args, **kwargs)
    if torch.is_tensor(out) and out.is_floating_point() and not bool(torch.isfinite(out).all()):
        guider = executor.class_obj
        patcher = getattr(guider, "model_patcher", None)
        share = float((~torch.isfinite(out)).float().mean())
        cause = ""
        if patcher is not None:
            bad = nonfinite_weights(patcher.model)
            if bad:
                cause = f"; non-finite weights: {_listing(bad)}"
            else:
                cause = _merge_hint(patcher)
            if not cause:
                dtype = patcher.model.get_dtype() if hasattr(patcher.model, "get_dtype") else None
                cause = (f"; the weights are finite, so an activation overflowed ({dtype} weights): try weight_dtype "
                         "fp32/bf16, a lower CFG, or check the conditioning inputs")
        raise NonFiniteError(f"sampling produced NaN/Inf in {share:.0%} of the latent{cause}")
    return out


def ensure_guards(patcher) -> None:
    """Register (once per patcher) the weight and result checks on ``patcher``."""
    add_wrapper_once(patcher, WrappersMP.SAMPLER_SAMPLE, GUARD_KEY, _sampler_sample_guard)
    add_wrapper_once(patcher, WrappersMP.OUTER_SAMPLE, GUARD_KEY, _outer_sample_guard)
