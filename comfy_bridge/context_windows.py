"""Core context windows on frames-as-batch latents where ComfyUI's own handler cannot take them.

DynamiCrafter (like core SVD) samples a video as a latent whose batch is the frames, so ComfyUI passes one
timestep per frame and per-frame conds. ComfyUI 0.33's ``IndexListContextHandler`` reads the first timestep
and slices every per-frame cond to the window (asking the model first, ``resize_cond_for_context_window``).
0.3.75's ``set_step`` compares the whole timestep batch with the schedule and fails with a tensor-size error,
and its ``get_resized_cond`` never slices a model cond along frames (its test reads ``ndim < dim``), so every
window would see the first frames' concat latent and image tokens. :func:`ensure_context_compat` registers an
outer-sample wrapper that probes the attached handler and, only for what it cannot do, gives it the newer
behaviour for the duration of the run (on that handler instance; nothing global changes).
"""
from __future__ import annotations

import torch

import comfy.conds

from .hooks import WrappersMP, add_wrapper_once

CONTEXT_KEY = "i2v_motion_context_windows"


def takes_frame_batches(handler) -> bool:
    """Whether ``handler.set_step`` accepts one timestep per frame (probed on the handler; its step is restored)."""
    step = getattr(handler, "_step", None)
    try:
        handler.set_step(torch.ones(2), {"transformer_options": {"sample_sigmas": torch.tensor([2.0, 1.0, 0.0])}})
    except RuntimeError:
        return False
    finally:
        if step is not None:
            handler._step = step
    return True


def slices_frame_conds(handler) -> bool:
    """Whether ``handler.get_resized_cond`` cuts a per-frame model cond to the window's frames."""
    import comfy.context_windows as cw  # imported here: ComfyUIs without context windows never call this

    x = torch.zeros(4, 1)
    cond = [{"model_conds": {"c": comfy.conds.CONDRegular(torch.arange(4.0).view(4, 1))}}]
    try:
        out = handler.get_resized_cond(cond, x, cw.IndexListContextWindow([1, 2], dim=0))
        return out[0]["model_conds"]["c"].cond.shape[0] == 2
    except Exception:
        return False


def _sliced_conds(get_resized_cond, model):
    """``get_resized_cond`` whose model conds are cut to the window as newer ComfyUI does: the model's own
    ``resize_cond_for_context_window`` first, then any cond tensor whose frame axis is the latent's."""
    resize = getattr(model, "resize_cond_for_context_window", None)

    def get_resized_cond_sliced(cond_in, x_in, window, device=None):
        out = get_resized_cond(cond_in, x_in, window, device)
        if cond_in is None:
            return out
        for orig, new in zip(cond_in, out):
            conds = orig.get("model_conds")
            if not isinstance(conds, dict):
                continue
            fixed = dict(new.get("model_conds", conds))
            for key, value in conds.items():
                result = resize(key, value, window, x_in, device) if resize is not None else None
                if result is None and torch.is_tensor(getattr(value, "cond", None)) and value.cond.ndim > 0 \
                        and value.cond.size(0) == x_in.size(0):
                    result = value._copy_with(window.get_tensor(value.cond, device))
                if result is not None:
                    fixed[key] = result
            new["model_conds"] = fixed
        return out

    get_resized_cond_sliced.i2v_compat = True
    return get_resized_cond_sliced


def _first_timestep(set_step):
    def set_step_first(timestep, model_options):
        if torch.is_tensor(timestep) and timestep.ndim > 0 and timestep.shape[0] > 1:
            timestep = timestep[:1]  # every frame of the step has the same timestep
        return set_step(timestep, model_options)

    set_step_first.i2v_compat = True
    return set_step_first


def _outer_sample(executor, *args, **kwargs):
    guider = executor.class_obj
    handler = (getattr(guider, "model_options", None) or {}).get("context_handler")
    shimmed = []
    if handler is not None and getattr(handler, "dim", None) == 0:  # frames-as-batch latents
        model = getattr(getattr(guider, "model_patcher", None), "model", None)
        for name, works, fix in (("set_step", takes_frame_batches, _first_timestep),
                                 ("get_resized_cond", slices_frame_conds, lambda f: _sliced_conds(f, model))):
            method = getattr(handler, name, None)
            if callable(method) and not getattr(method, "i2v_compat", False) and not works(handler):
                setattr(handler, name, fix(method))  # this handler instance, for this run only
                shimmed.append(name)
    try:
        return executor(*args, **kwargs)
    finally:
        for name in shimmed:
            delattr(handler, name)


def ensure_context_compat(patcher) -> None:
    """Register (once per patcher; clones inherit it) the context-window compatibility wrapper."""
    add_wrapper_once(patcher, WrappersMP.OUTER_SAMPLE, CONTEXT_KEY, _outer_sample)
