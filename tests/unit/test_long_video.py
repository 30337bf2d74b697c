"""Videos longer than the trained 16 frames with ComfyUI's own context windows (core ``Context Windows
(Manual)`` on our MODEL, ``dim`` 0 for frames-as-batch latents), on the tiny DynamiCrafter.

What is checked: every UNet call of a 32-frame run sees one window (16 frames, +1 causal anchor frame on
ComfyUI versions that add it) with ``num_video_frames`` equal to its frame count and the concat latent of
exactly its frames (interp: the last frame's latent reaches the last window); the image tokens per frame;
the output has every frame and no seam at the window boundaries beyond what the same frames show without
windows; a batch of several videos with windows is refused clearly; on a ComfyUI whose context handler cannot
take one timestep per frame (0.3.75) the pack's wrapper makes the same runs work.
"""
from __future__ import annotations

import inspect
import time

import pytest
import torch

import nodes as comfy_nodes
from comfy.patcher_extension import WrappersMP
from i2v_motion.backbones.dynamicrafter_unet import QUERIES_PER_FRAME, TEXT_TOKENS
from i2v_motion.comfy_bridge.context_windows import CONTEXT_KEY, takes_frame_batches
from i2v_motion.nodes.backbone import DynamiCrafterImageToVideo

cw_nodes = pytest.importorskip("comfy_extras.nodes_context_windows",
                               reason="this ComfyUI has no core context windows (comfy_extras/nodes_context_windows.py)")


def _core_handler():
    import comfy.context_windows as cw

    return cw.IndexListContextHandler(cw.get_matching_context_schedule("standard_static"),
                                      cw.get_matching_fuse_method("pyramid"), 16, 4)


# ComfyUI 0.3.75's set_step compares the whole per-frame timestep batch with the schedule and fails; the pack's
# outer-sample wrapper (comfy_bridge/context_windows.py) hands such a handler the step's one timestep.
CORE_TAKES_FRAME_BATCHES = takes_frame_batches(_core_handler())


W, H = 64, 64
STEPS = 3


def _out(o):
    return o.result if hasattr(o, "result") else o


def windowed(model, length=16, overlap=4, **extra):
    """Core Context Windows (Manual) on ``model``: static windows, pyramid fusion, dim 0; ``extra`` only where
    this ComfyUI's node has the input (e.g. causal_window_fix on 0.33+)."""
    node = cw_nodes.ContextWindowsManualNode
    params = inspect.signature(node.execute.__func__ if hasattr(node.execute, "__func__") else node.execute).parameters
    kw = dict(model=model, context_length=length, context_overlap=overlap, context_schedule="standard_static",
              context_stride=1, closed_loop=False, fuse_method="pyramid", dim=0)
    if "freenoise" in params:
        kw["freenoise"] = False
    kw.update({k: v for k, v in extra.items() if k in params})
    return _out(node.execute(**kw))[0], {k: v for k, v in extra.items() if k in params}


def _has_param(name: str) -> bool:
    node = cw_nodes.ContextWindowsManualNode
    return name in inspect.signature(node.execute).parameters


@pytest.fixture(scope="module")
def conds(tiny_dc):
    pos = comfy_nodes.CLIPTextEncode().encode(tiny_dc.clip, "waves rolling onto a beach")[0]
    neg = comfy_nodes.CLIPTextEncode().encode(tiny_dc.clip, "")[0]
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(1, 64, 64, 3, generator=g), torch.rand(1, 64, 64, 3, generator=g)

    def make(frames, interp=False, batch=1):
        return _out(DynamiCrafterImageToVideo.execute(pos, neg, tiny_dc.vae, tiny_dc.clip_vision, a, W, H, frames, 24,
                                                      end_image=b if interp else None, batch_size=batch))
    return make


class CallLog:
    """Forward pre-hook on the UNet: what each call received (frames, num_video_frames, window, concat)."""

    def __init__(self, net):
        self.calls: list[dict] = []
        self.h = net.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        x = args[0]
        w = (kwargs.get("transformer_options") or {}).get("context_window")
        anchor = getattr(w, "causal_anchor_index", None)
        lead = [anchor] if w is not None and anchor is not None and anchor >= 0 else []
        self.calls.append({"n": x.shape[0], "nvf": kwargs.get("num_video_frames"), "concat": x[:, 4:].detach().clone(),
                           "idx": None if w is None else lead + list(w.index_list), "anchored": bool(lead)})

    def close(self):
        self.h.remove()


def _sample(model, pos, neg, latent, seed=0):
    return comfy_nodes.common_ksampler(model, seed, STEPS, 7.5, "euler", "simple", pos, neg, latent)[0]["samples"]


def seam_ratio(frames: torch.Tensor, boundaries: list[int]) -> float:
    """Mean |frame[i+1] − frame[i]| across the given boundaries over the mean across all other transitions."""
    d = (frames[1:] - frames[:-1]).abs().flatten(1).mean(1)
    at = torch.tensor([i for i in range(len(d)) if i in boundaries])
    rest = torch.tensor([i for i in range(len(d)) if i not in boundaries])
    return float(d[at].mean() / d[rest].mean())


def test_32_frames_in_windows_of_16(tiny_dc, conds):
    """With this ComfyUI's defaults (0.33: causal anchor frames on); the seam test below runs without."""
    anchor = _has_param("causal_window_fix")
    pos, neg, latent = conds(32, interp=True)
    model, used = windowed(tiny_dc.model, causal_window_fix=anchor)
    concat_full = tiny_dc.model.model.process_latent_in(pos[0][1]["concat_latent_image"])
    log = CallLog(tiny_dc.model.model.diffusion_model)
    try:
        out = _sample(model, pos, neg, latent)
    finally:
        log.close()
    assert out.shape == latent["samples"].shape and torch.isfinite(out).all()
    windows = [c for c in log.calls if c["idx"] is not None]
    assert windows and len(windows) == len(log.calls), "every UNet call runs in a window"
    seen = set()
    for c in windows:
        frames = len(c["idx"])
        assert c["nvf"] == frames and c["n"] % frames == 0, c
        assert frames == 16 + c["anchored"] and (not c["anchored"] or anchor)
        # the concat channels of each cond group are exactly the window's frames of the whole video
        for g in range(c["n"] // frames):
            torch.testing.assert_close(c["concat"][g * frames:(g + 1) * frames], concat_full[c["idx"]].to(c["concat"]),
                                       rtol=0, atol=1e-6)
        seen.update(c["idx"])
    assert seen == set(range(32))
    assert not anchor or any(c["anchored"] for c in windows)
    last = [c for c in windows if c["idx"][-1] == 31]  # interp: the last frame's latent reaches the last window
    assert last and all(bool(c["concat"][len(c["idx"]) - 1].abs().max() > 0) for c in last)
    print(f"context windows ({'with' if anchor else 'no'} causal anchor): "
          f"{sorted({tuple(c['idx'][:1] + c['idx'][-1:]) for c in windows})}")


def test_seams_and_time_vs_16_frames(tiny_dc, conds):
    """32 frames with windows: no seam at the window boundaries beyond what the same frames show when all 32
    are sampled at once (the longer-than-trained fallback); time against one 16-frame video."""
    pos16, neg16, lat16 = conds(16)
    pos, neg, latent = conds(32)
    model, _ = windowed(tiny_dc.model, causal_window_fix=False)
    t0 = time.perf_counter()
    _sample(tiny_dc.model, pos16, neg16, lat16)
    t16 = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = _sample(model, pos, neg, latent)
    t32 = time.perf_counter() - t0
    full = _sample(tiny_dc.model, pos, neg, latent)  # 32 frames at once, no windows
    frames = comfy_nodes.VAEDecode().decode(tiny_dc.vae, {"samples": out})[0]
    frames_full = comfy_nodes.VAEDecode().decode(tiny_dc.vae, {"samples": full})[0]
    # static windows of 16 with overlap 4 over 32 frames: [0-15], [12-27], [16-31]
    bounds = [11, 12, 15, 16, 27]  # transitions i→i+1 where a window starts or ends
    r_win, r_full = seam_ratio(frames, bounds), seam_ratio(frames_full, bounds)
    r_lat = seam_ratio(out, bounds)
    print(f"32 frames in context windows: {frames.shape[0]} frames out; seam ratio at window boundaries "
          f"{r_win:.3f} (latents {r_lat:.3f}) vs {r_full:.3f} for the same frames sampled at once; "
          f"{t32:.2f} s vs {t16:.2f} s for 16 frames ({t32 / t16:.2f}x; 3 windows of 16), {STEPS} steps")
    assert frames.shape[0] == 32 and torch.isfinite(frames).all()
    assert r_win <= 1.1 * r_full + 0.05


def test_image_tokens_per_frame_in_a_window(tiny_dc):
    net = tiny_dc.model.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, TEXT_TOKENS, net.config.context_dim, generator=g)
    clip = torch.randn(1, 257, net.config.resampler.embedding_dim, generator=g)
    with torch.no_grad():
        img = net.image_proj_model(clip)  # 16 slots × 16 tokens
        ctx16 = net.image_context(text, clip, 16)
        ctx17 = net.image_context(text, clip, 17, lead=1)
        ctx32 = net.image_context(text, clip, 32)
    q = QUERIES_PER_FRAME
    for f in range(16):  # trained length: frame f sees its own 16 tokens
        torch.testing.assert_close(ctx16[f, TEXT_TOKENS:], img[0, f * q:(f + 1) * q])
        torch.testing.assert_close(ctx17[f + 1, TEXT_TOKENS:], img[0, f * q:(f + 1) * q])
    torch.testing.assert_close(ctx17[0], ctx17[1])  # the causal anchor takes the first frame's tokens
    assert ctx32.shape[1] == TEXT_TOKENS + 16 * q  # longer than trained: every frame sees all tokens


def test_windows_with_a_batch_of_videos_are_refused(tiny_dc, conds):
    pos, neg, latent = conds(20, batch=2)
    model, _ = windowed(tiny_dc.model, causal_window_fix=False)
    with pytest.raises(Exception, match="one video at a time"):
        _sample(model, pos, neg, latent)


def test_windows_need_the_pack_only_where_core_cannot_take_frame_batches(tiny_dc, conds):
    """Without the pack's wrapper, a ComfyUI whose handler fails the probe (0.3.75) fails with a tensor-size
    error; with it, the same run works there, and on hosts that need no help (0.33) the wrapper changes nothing."""
    pos, neg, latent = conds(20)
    model, _ = windowed(tiny_dc.model, causal_window_fix=False)
    bare = model.clone()
    bare.remove_wrappers_with_key(WrappersMP.OUTER_SAMPLE, CONTEXT_KEY)
    assert model.wrappers[WrappersMP.OUTER_SAMPLE].get(CONTEXT_KEY)
    out = _sample(model, pos, neg, latent)
    handler = model.model_options["context_handler"]
    assert "set_step" not in vars(handler), "the shim is gone after the run"
    if CORE_TAKES_FRAME_BATCHES:
        assert torch.equal(_sample(bare, pos, neg, latent), out)
    else:
        with pytest.raises(RuntimeError, match="size of tensor"):
            _sample(bare, pos, neg, latent)
    print(f"core context handler takes frame batches: {CORE_TAKES_FRAME_BATCHES}; "
          f"windows work {'without' if CORE_TAKES_FRAME_BATCHES else 'only with'} the pack's wrapper")
