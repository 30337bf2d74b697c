"""Nodes and spatio-temporal masked denoising through ComfyUI's real sampling.

A small real comfy BaseModel (SD1-style UNet, explicitly random-initialised) hosts a
``model_function_wrapper`` that replaces its prediction, so that only our latent noise mask and
denoise-mask schedule decide the result. Stock ``common_ksampler`` (the KSampler node's code) and
``SamplerCustomAdvanced`` do the sampling. Everything is measured in latent space: the stand-in VAE
maps 8x8 pixel blocks linearly to 4 channels, so the tracker runs on latents directly.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

import comfy.model_patcher
import comfy.samplers
import comfy.supported_models
from i2v_motion import layout as L
from i2v_motion.nodes import layout as N

from support.oracle import (CASES, COND, STEPS, FakeVAE, Run, VideoVAE, posterior, predicting, record_progress,  # noqa: F401
                            sample, tiny_model)


def _run_points(model, scheduler: str) -> list[float]:
    """Where each step of a ``scheduler`` run lies on ComfyUI's noise scale (1 − t/999 for this DDPM model):
    with ComfyUI's usual schedulers about the share of the steps done."""
    ms = model.get_model_object("model_sampling")
    sig = comfy.samplers.calculate_sigmas(ms, scheduler, STEPS)
    pts = [1.0 - float(ms.timestep(s.reshape(1))) / 999.0 for s in sig[:-1]]
    assert pts[0] == pytest.approx(0.0) and pts == sorted(pts)
    return pts


@pytest.fixture(scope="module")
def base():
    return tiny_model()


@pytest.fixture(scope="module")
def guide_runs(base):
    """Every shipped case sampled with the guide-predicting denoiser and the default schedule."""
    out = {}
    for name in L.list_cases(CASES):
        r = Run(name)
        model, latent = r.masked(predicting(base, r.g))
        r.model, r.latent = model, latent
        r.calls = record_progress(model)
        r.out = sample(model, latent)
        r.report = r.evaluate(r.out)
        out[name] = r
    return out


# ---------------------------------------------------------------------------------------------- the claims

def test_guide_denoiser_output_follows_the_boxes(guide_runs):
    ious, lines = [], []
    for name, r in guide_runs.items():
        rep = r.report
        for o in rep["objects"]:
            ious += [i for i in o["ious"] if i is not None]
        lines.append(f"{name:15s} objects {rep['objects_count']}  vIoU@0.5 {rep['viou50']:.3f}  mIoU {rep['miou']:.3f}  "
                     f"PSNR outside masks {rep['psnr_outside_masks']:.1f} dB  afterimage {rep['afterimage']:.3f}  "
                     f"object SSIM {rep['object_ssim']:.3f}")
        assert rep["viou50"] >= 0.9, name
        assert rep["psnr_outside_masks"] >= 40.0, name
        if not math.isnan(rep["afterimage"]):
            assert rep["afterimage"] <= 0.05, name  # plate level (the plate itself scores 0)
    viou = sum(i >= 0.5 for i in ious) / len(ious)
    print("\n" + "\n".join(lines) + f"\nall: vIoU@0.5 {viou:.3f} over {len(ious)} object-frames, "
          f"mIoU {sum(ious) / len(ious):.3f}")
    assert viou >= 0.95
    kinds = {n: r.layout for n, r in guide_runs.items()}
    assert any(len(lay.objects) > 1 for lay in kinds.values())                       # multi-object
    assert any(float(L.visibility(lay.boxes()).min()) == 0 for lay in kinds.values())  # leaves the frame


def test_schedule_is_applied_by_the_sampler(guide_runs):
    r = guide_runs["ball_roll"]
    fn = r.model.model_options["denoise_mask_function"]
    assert isinstance(fn.inner, L.LayoutDenoiseMask)
    calls = r.calls[-STEPS:]
    assert calls == pytest.approx(_run_points(r.model, "normal"))
    assert r.latent["noise_mask"].shape == (16, 1, 40, 64)
    assert (r.out - r.g).abs().max() < 1e-4  # everything ends at the guide with this denoiser


def test_schedule_per_step_and_region(base):
    r = Run("two_boats")
    model, latent = r.masked(base, ends=(0.4, 0.8, 0.9))
    fn = model.model_options["denoise_mask_function"]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", STEPS)
    pts = _run_points(model, "normal")
    reg = fn.regions  # object, vacated, background
    core = {k: (reg[i] > 0.999) for i, k in enumerate(("object", "vacated", "background"))}
    shape = (16, 4, 40, 64)
    for i in range(STEPS):
        m = fn(sigmas[i:i + 1], torch.ones(shape), {"sigmas": sigmas})
        assert m.shape == shape
        for k, end in (("object", 0.4), ("vacated", 0.8), ("background", 0.9)):
            held = pts[i] < end  # the run's point of step i (with this scheduler: step i < round(end · STEPS))
            assert held == (i < round(end * STEPS))
            vals = m[:, 0][core[k]]
            want = 0.0 if held else 1.0
            assert float((vals - want).abs().max()) < 2e-3, (i, k)
    # a second-order sampler's intermediate sigma lies between the two steps on the run's noise scale
    mid = (sigmas[7] * sigmas[8]).sqrt()
    assert fn.progress(sigmas[7], {}) < fn.progress(mid, {}) < fn.progress(sigmas[8], {})
    # frames-as-batch multiples (two videos) and 5-D video latents
    assert fn(sigmas[:1], torch.ones(32, 4, 40, 64), {"sigmas": sigmas}).shape == (32, 4, 40, 64)
    m5 = fn(sigmas[:1], torch.ones(1, 4, 16, 40, 64), {"sigmas": sigmas})
    assert torch.equal(m5[0, 0], fn(sigmas[:1], torch.ones(shape), {"sigmas": sigmas})[:, 0])
    with pytest.raises(ValueError, match="not a multiple of the layout's 16 frames"):
        fn(sigmas[:1], torch.ones(12, 4, 40, 64), {"sigmas": sigmas})
    # the fallback noise mask for models without the function: background held, the rest free
    assert torch.equal(latent["noise_mask"][:, 0], 1 - reg[2])


def test_masks_decide_with_a_no_motion_denoiser(base):
    """A denoiser that always predicts the static source: the result is what our masks hold."""
    r = Run("kite_exit")
    static = r.src[None].expand_as(r.g).contiguous()
    m, lat = r.masked(predicting(base, static), ends=(1.0, 1.0, 1.0))
    assert (sample(m, lat) - r.g).abs().max() < 1e-4
    m, lat = r.masked(predicting(base, static), ends=(0.0, 0.0, 0.0))
    assert (sample(m, lat) - static).abs().max() < 1e-4


def test_motion_afterimage_suppression(base):
    """A denoiser that leaves a ghost of the object at its source box: MAS keeps the plate there."""
    for name in ("ball_roll", "two_boats"):
        r = Run(name)
        vac = L.metrics.vacated_mask(r.layout, 40, 64, 0.0)[:, None] > 0
        ghost = torch.where(vac, r.src[None].expand_as(r.g), r.g)
        on = sample(*r.masked(predicting(base, ghost), ends=(0.4, 1.0, 0.9)))
        off = sample(*r.masked(predicting(base, ghost), ends=(0.4, 0.0, 0.9)))
        a_on = L.afterimage_score(on, r.src, r.plate_lat, r.layout, margin=2.0)["score"]
        a_off = L.afterimage_score(off, r.src, r.plate_lat, r.layout, margin=2.0)["score"]
        print(f"{name}: afterimage with MAS {a_on:.3f}, without {a_off:.3f}")
        assert a_on <= 0.05 and a_off >= 0.9
        core = (L.region_masks(r.layout, 40, 64, 1.0, 1.0)["vacated"] > 0.999)[:, None].expand_as(on)
        assert (on - r.g)[core].abs().max() < 1e-4  # where the region is fully vacated: exactly the plate


def test_layout_commits_an_ideal_two_video_denoiser(base):
    """The ideal denoiser of a data set {layout video, static video}: without the layout it picks per frame
    at random; holding the object region for the first 40% of the steps commits it to the layout."""
    with_l, without = [], []
    for name in ("ball_roll", "two_boats", "kite_exit"):
        r = Run(name)
        den = posterior(base, torch.stack([r.g, r.src[None].expand_as(r.g)]))
        with_l.append(r.evaluate(sample(*r.masked(den)))["viou50"])
        without.append(r.evaluate(sample(den, {"samples": torch.zeros_like(r.g)}))["viou50"])
    print(f"two-video denoiser vIoU@0.5: with layout {with_l}, without {without}")
    assert sum(with_l) / 3 >= 0.9 and sum(without) / 3 <= 0.75


def test_sampler_custom_advanced(base):
    from comfy_extras import nodes_custom_sampler as cs

    r = Run("three_balloons")
    model, latent = r.masked(predicting(base, r.g))
    calls = record_progress(model)
    noise = cs.RandomNoise.execute(0).result[0]
    guider = cs.BasicGuider.execute(model, COND).result[0]
    sampler = cs.KSamplerSelect.execute("euler").result[0]
    sigmas = cs.BasicScheduler.execute(model, "normal", STEPS, 1.0).result[0]
    out = cs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]
    assert (out - r.g).abs().max() < 1e-4  # the same result as KSampler (scored in the test above)
    assert calls[-STEPS:] == pytest.approx(_run_points(model, "normal"))


def test_input_model_is_not_mutated(base):
    r = Run("ball_roll")
    before = dict(base.model_options)
    model, _ = r.masked(base)
    assert base.model_options == before and "denoise_mask_function" not in base.model_options
    assert "denoise_mask_function" in model.model_options and model is not base
    assert "noise_mask" not in r.glat


# ---------------------------------------------------------------------------------------------- nodes

def test_node_schemas():
    ids = set()
    for node in N.NODES:
        s = node.define_schema()
        assert s.node_id.startswith("I2VMotion_Layout") and s.category == "i2v_motion/layout"
        assert s.node_id not in ids
        ids.add(s.node_id)
        for i in s.inputs:
            assert i.tooltip, f"{s.node_id}.{i.id} has no tooltip"
        node.GET_NODE_INFO_V1()
    assert len(ids) == 9


def test_node_errors(base):
    r = Run("ball_roll")
    with pytest.raises(ValueError, match="malformed"):
        N.LayoutFromJSON.execute("{nope", 16, "linear", "log")
    short = L.with_frames(r.layout, 16)
    bad = {"samples": r.g[:12]}
    with pytest.raises(ValueError, match="guide latent has 12 frames but the layout has 16"):
        N.LayoutMaskedDenoise.execute(base, bad, short, 0.4, 0.8, 0.9, 1.0, 1.0)
    ref = {"samples": torch.zeros(16, 4, 32, 32)}
    with pytest.raises(ValueError, match="image/latent size mismatch: the guide latent is .*40, 64.* but the "
                                         "reference .*32, 32"):
        N.LayoutMaskedDenoise.execute(base, r.glat, r.layout, 0.4, 0.8, 0.9, 1.0, 1.0, reference=ref)
    with pytest.raises(ValueError, match="plate is 64x64 but the image is 512x320"):
        N.LayoutGuide.execute(r.image, r.layout, r.vae, 8.0, 4.0, "diffuse", plate=torch.zeros(1, 64, 64, 3))
    with pytest.raises(ValueError, match="frames-as-batch"):
        N.LayoutGuide.execute(r.image, r.layout, VideoVAE(), 8.0, 4.0, "diffuse")
    with pytest.raises(ValueError, match="images has 3 frames but the layout has 16"):
        N.LayoutPreview.execute(r.image.repeat(3, 1, 1, 1), r.layout, 2, True, True)
    with pytest.raises(ValueError, match=r"schedule object_end=1.5"):
        L.RegionSchedule(1.5)


def test_layout_nodes_round_trip():
    lay, text = N.LayoutFromJSON.execute(N.EXAMPLE_JSON, 16, "ease_in_out", "log").result
    assert isinstance(lay, L.Layout) and json.loads(text)["objects"][0]["interpolation"] == "ease_in_out"
    masks = N.LayoutToMask.execute(lay, 64, 40, "objects", -1, 0.0, 0.0).result[0]
    assert masks.shape == (16, 40, 64)
    # masks -> layout again (two key masks, spread over the video), appended as a second object
    two = torch.stack([masks[0], masks[15]])
    lay2 = N.LayoutFromMask.execute(two, "copy", 16, "", "linear", 0.5, layout=lay).result[0]
    assert [o.phrase for o in lay2.objects] == ["object", "copy"]
    assert torch.allclose(lay2.boxes()[1, [0, 15]], lay.boxes()[0, [0, 15]], atol=1 / 40)
    lay3 = N.LayoutFromMask.execute(two, "copy", 16, "0, 9", "linear", 0.5).result[0]
    assert [k.frame for k in lay3.objects[0].keys] == [0, 9]
    with pytest.raises(ValueError, match="key_frames 'a, b'"):
        N.LayoutFromMask.execute(two, "copy", 16, "a, b", "linear", 0.5)
    for region in ("vacated", "background", "source"):
        m = N.LayoutToMask.execute(lay, 64, 40, region, -1, 1.0, 0.0).result[0]
        assert m.shape == (16, 40, 64) and 0 <= float(m.min()) and float(m.max()) <= 1
    text2 = N.LayoutToJSON.execute(lay2).result[0]
    assert len(L.parse_layout(text2).objects) == 2


def test_case_loader_preview_and_metrics_nodes():
    img, lay, caption, name = N.LayoutCaseLoader.execute("", 0, "two_boats").result
    assert name == "two_boats" and "boats" in caption and img.shape == (1, 320, 512, 3)
    assert N.LayoutCaseLoader.execute(str(CASES), 0, "").result[3] == "ball_roll"
    prev = N.LayoutPreview.execute(img, lay, 2, True, True).result[0]
    assert prev.shape == (16, 320, 512, 3)
    guide, _ = L.composite_guide(img[0].permute(2, 0, 1), lay)
    video = guide.permute(0, 2, 3, 1)
    report, preview, viou, miou = N.LayoutMetrics.execute(img, video, lay, 128).result
    rep = json.loads(report)
    print(f"pixel-space guide video, two_boats: vIoU@0.5 {viou:.3f} mIoU {miou:.3f} "
          f"background PSNR {rep['background_psnr']:.1f} afterimage {rep['afterimage']:.3f} "
          f"object SSIM {rep['object_ssim']:.3f}")
    assert viou >= 0.95 and rep["viou50"] == viou and rep["afterimage"] <= 0.05
    assert rep["background_psnr"] >= 40 and rep["object_ssim"] > 0.8
    assert preview.shape == video.shape
