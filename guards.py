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

A third wrapper, on MODELs that carry a layout (Layout Masked Denoise), compares the layout's length with the length
the conditioning was made for (the family says where that is: DynamiCrafter's ``num_video_frames``, Wan's start-image
latent) before sampling, so a 16-frame layout sampled with 8-frame conditioning is an error, not a stretched video.

Merges say what they did in a typed attachment (:class:`MergeNote`, written by ``merging`` through
:func:`add_merge_note`), which the result check reads to name the likely cause; this module imports nothing of
the pack but the bridge.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from . import families
from .comfy_bridge.finite import nonfinite
from .comfy_bridge.hooks import WrappersMP, add_wrapper_once, get_attachment

log = logging.getLogger("i2v_motion")

GUARD_KEY = "i2v_motion.guards"
_MAX_NAMED = 5


class NonFiniteError(RuntimeError):
    """A weight or a sampled latent holds NaN/Inf."""


MERGE_NOTES_KEY = "i2v_motion.merge_notes"


@dataclass(frozen=True)
class MergeNote:
    """What one merge did to a MODEL's weights, for messages: the node, its named coefficients (EDG's α/β) or
    its task-vector weights, and DARE's drop rate."""

    node: str
    coefficients: tuple[tuple[str, float], ...] = ()
    weights: tuple[float, ...] = ()
    p: float = 0.0


def add_merge_note(patcher, note: MergeNote) -> None:
    """Record ``note`` on ``patcher`` (a fresh clone the merge made; its parents' notes are kept)."""
    patcher.set_attachments(MERGE_NOTES_KEY, merge_notes(patcher) + (note,))


def merge_notes(patcher) -> tuple[MergeNote, ...]:
    """The merges recorded on a MODEL (its own and those of the models it was cloned from)."""
    return tuple(get_attachment(patcher, MERGE_NOTES_KEY) or ())


def nonfinite_weights(model: torch.nn.Module, device: torch.device | None = None) -> list[str]:
    """Names of floating parameters (on ``device`` when given) that hold NaN or Inf."""
    return nonfinite((name, p) for name, p in model.named_parameters()
                     if device is None or p.device == device)


def _merge_hint(patcher) -> str:
    parts = []
    for note in merge_notes(patcher):
        coeffs = dict(note.coefficients)
        p = float(note.p)
        big = [w for w in list(note.weights) + list(coeffs.values()) if abs(float(w)) > 3.0]
        if big or p >= 0.95:
            desc = ", ".join(f"{k} {v:g}" for k, v in coeffs.items()) or \
                "weights " + ", ".join(f"{float(w):g}" for w in note.weights)
            parts.append(f"{note.node} ({desc}{f', DARE p {p:g} rescales kept deltas ×{1 / (1 - p):.0f}' if p >= 0.95 else ''})")
    if not parts:
        return ""
    return ("; likely cause: merge coefficients that push the weights far from both models: " + "; ".join(parts)
            + " — use smaller weights (EDG: |w| ≤ 1.5) or a smaller DARE p")


def _listing(names: list[str]) -> str:
    more = f" (+{len(names) - _MAX_NAMED} more)" if len(names) > _MAX_NAMED else ""
    return ", ".join(names[:_MAX_NAMED]) + more


def overflow_hint(dtype: torch.dtype | None) -> str:
    """What to try when finite weights gave a non-finite result, for the dtype the weights are in."""
    wider = {torch.float16: "weight_dtype bf16 or fp32 (fp16 overflows above 65504)",
             torch.bfloat16: "weight_dtype fp32"}.get(dtype)
    name = str(dtype).replace("torch.", "") if dtype is not None else "unknown"
    if wider is not None:
        return f"the weights are finite, so an activation overflowed in {name}: try {wider}, a lower CFG, or check the " \
               f"conditioning inputs"
    return f"the weights are finite and already {name}, so the inputs or settings drove the model out of range: try a " \
           f"lower CFG or fewer extreme merge weights, and check the conditioning inputs (NaN/Inf in an image or latent)"


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
                cause = "; " + overflow_hint(dtype)
        raise NonFiniteError(f"sampling produced NaN/Inf in {share:.0%} of the latent{cause}")
    return out


def ensure_guards(patcher) -> None:
    """Register (once per patcher) the weight, result and frame-count checks on ``patcher``."""
    add_wrapper_once(patcher, WrappersMP.SAMPLER_SAMPLE, GUARD_KEY, _sampler_sample_guard)
    add_wrapper_once(patcher, WrappersMP.OUTER_SAMPLE, GUARD_KEY, _outer_sample_guard)
    ensure_frame_check(patcher)


FRAME_CHECK_KEY = "i2v_motion.frame_check"


def _layout_frames(model_options: dict) -> int | None:
    """Latent frames of the layout a MODEL carries (its denoise-mask function's regions), or None."""
    fn = model_options.get("denoise_mask_function")
    regions = getattr(getattr(fn, "inner", fn), "regions", None)
    return int(regions.shape[1]) if torch.is_tensor(regions) and regions.ndim == 4 else None


def check_conditioning_frames(patcher, model_options: dict, conds: dict, latent: torch.Tensor | None = None) -> None:
    """ValueError when the conditioning was made for another length than the layout on ``patcher`` (any family that
    records a length: DynamiCrafter, Wan) or, for video latents (Wan), than the latent that is sampled."""
    family = families.of_model(patcher)
    layout = _layout_frames(model_options)
    sampled = int(latent.shape[2]) if family.video_latent and torch.is_tensor(latent) and latent.ndim == 5 else None
    if layout is None and sampled is None:
        return
    unit = "latent frames" if family.video_latent else "frames"
    for name, entries in (conds or {}).items():
        for cond in entries or ():
            made = family.cond_frames(cond) if isinstance(cond, dict) else None
            if made is None:
                continue
            if layout is not None and made != layout:
                raise ValueError(f"frame-count mismatch: the layout was made for {layout} {unit} but the {name} "
                                 f"conditioning for {made} ({family.cond_frames_source}); the video would be stretched "
                                 f"or cut without a word: give the layout and the image-to-video node the same length")
            if sampled is not None and made != sampled:
                raise ValueError(f"frame-count mismatch: the latent being sampled has {sampled} {unit} but the {name} "
                                 f"conditioning was made for {made} ({family.cond_frames_source}); use the latent the "
                                 f"image-to-video node made, or give both the same length")


def _frame_check(executor, *args, **kwargs):
    guider = executor.class_obj
    patcher = getattr(guider, "model_patcher", None)
    if patcher is not None:
        latent = args[1] if len(args) > 1 else kwargs.get("latent_image")
        check_conditioning_frames(patcher, getattr(guider, "model_options", {}) or {},
                                  getattr(guider, "original_conds", None) or getattr(guider, "conds", None) or {},
                                  latent)
    return executor(*args, **kwargs)


def ensure_frame_check(patcher) -> None:
    """Register (once per patcher) the layout-vs-conditioning length check."""
    add_wrapper_once(patcher, WrappersMP.OUTER_SAMPLE, FRAME_CHECK_KEY, _frame_check)
