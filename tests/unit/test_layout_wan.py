"""Box trajectories on temporally compressed video latents (Wan 2.1 / 2.2): issue 19 items 1, 2 and 6.

- frames ↔ latent frames from what ComfyUI says (``downscale_index_formula``), identity for ratio 1;
- region masks per latent frame from the 4 pixel frames it holds (objects: any frame; vacated: any frame and no
  object; background: background in all of them), a partition of unity;
- Layout Guide Video / Layout Masked Denoise on 5-D latents, ``reference`` from core's WanImageToVideo and
  Wan22ImageToVideoLatent (whose noise mask is merged, not lost), and 1 + 4k frame counts checked;
- phase ends defined on the run's noise level: a run split over two KSamplerAdvanced and two models (Wan 2.2 A14B's
  experts) gets, step by step, the very masks one KSampler gets; every order of the three ends has its meaning;
- the oracle: core's own (tiny) Wan models whose prediction is the guide follow the boxes (vIoU@0.5 = 1.0) on every
  shipped case stretched to 1 + 4k frames.
"""
from __future__ import annotations

import pytest
import torch

import nodes as comfy_nodes
from comfy_extras import nodes_wan
from i2v_motion import layout as L
from i2v_motion.layout import frames as FR
from i2v_motion.nodes import layout as N
from support.models import tiny_wan, wan_text
from support.oracle import CASES, PackingVAE, layout_at, predicting, record_progress, stretch

STEPS = 8
FRAMES = 17  # 1 + 4·4: 5 latent frames


def _out(node_output):
    return node_output.result if hasattr(node_output, "result") else node_output


# -- frames and latent frames --------------------------------------------------------------------------------------

def test_frame_map_and_regions():
    assert FR.latent_frames(81, 4) == 21 and FR.latent_frames(17, 4) == 5 and FR.latent_frames(16, 1) == 16
    assert FR.latent_groups(9, 4) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert FR.latent_groups(3, 1) == [[0], [1], [2]] and FR.pixel_frames_of(9, 4) == [0, 4, 8]
    with pytest.raises(ValueError, match=r"has 16 frames, but this VAE packs 4 frames .* 1 \+ 4k frames \(e.g. 13 or 17"):
        FR.check_frame_count(16, 4)
    FR.check_frame_count(16, 1)
    lay = L.parse_layout('{"objects": [{"phrase": "x", "boxes": [[0, 0.0, 0.2, 0.2, 0.6], [8, 0.7, 0.2, 0.9, 0.6]]}]}',
                         frames=9)
    r = L.region_masks(lay, 16, 32)
    per_frame = L.region_stack(r["objects"], r["vacated"], r["background"])
    assert FR.combine_regions(per_frame, 1) is per_frame  # ratio 1: bit for bit what DynamiCrafter / SVD had
    packed = FR.combine_regions(per_frame, 4)
    assert packed.shape == (3, 3, 16, 32)
    torch.testing.assert_close(packed.sum(0), torch.ones(3, 16, 32))
    assert torch.equal(packed[:, 0], per_frame[:, 0])  # latent frame 0 is frame 0 alone
    torch.testing.assert_close(packed[0, 1], per_frame[0, 1:5].amax(0))  # object: where it is in any of its frames
    # background: never more than in any of its frames, all of it where every frame is background
    assert (packed[2, 1] <= per_frame[2, 1:5].amin(0) + 1e-6).all()
    bg_all = (per_frame[2, 1:5] > 0.999).all(0)
    assert bg_all.any() and (packed[2, 1][bg_all] > 0.999).all()


# -- guide and masked denoise on 5-D latents ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def case():
    image, layout, _, _ = _out(N.LayoutCaseLoader.execute("", 0, "ball_roll"))
    return image, stretch(layout, FRAMES)


def test_guide_and_masks_on_wan_latents(case):
    image, layout = case
    vae = PackingVAE(4, 16)
    guide, glat, _ = _out(N.LayoutGuide.execute(image, layout, vae, 8.0, 4.0, "diffuse"))
    assert guide.shape[0] == FRAMES and glat["samples"].shape == (1, 16, 5, 40, 64)
    assert glat[N.RATIO_KEY] == 4
    # the causal first latent frame is frame 0 alone: the start image's own latent (what WanImageToVideo conditions on)
    assert torch.allclose(glat["samples"][:, :, 0], vae.encode(image[:1])[:, :, 0], atol=1e-5)
    pos, neg, ref = _out(nodes_wan.WanImageToVideo.execute(wan_text(), wan_text(negative=True), vae, 512, 320, FRAMES, 1,
                                                           image))
    model, latent = _out(N.LayoutMaskedDenoise.execute(tiny_wan("wan22_a14b"), glat, layout, 0.4, 0.8, 0.9, 1.0, 1.0,
                                                       ref))
    assert latent["samples"].shape == (1, 16, 5, 40, 64) and latent["noise_mask"].shape == (1, 1, 5, 40, 64)
    fn = model.model_options["denoise_mask_function"]
    assert fn.regions.shape == (3, 5, 40, 64)
    # a layout of another length than the conditioning: named, with 1 + 4k
    short = _out(nodes_wan.WanImageToVideo.execute(wan_text(), wan_text(negative=True), vae, 512, 320, 13, 1, image))[2]
    with pytest.raises(ValueError, match=r"frame-count mismatch: the layout has 17 frames = 5 latent frames, but the "
                                         r"reference .* has 4 latent frames \(13 frames\)"):
        N.LayoutMaskedDenoise.execute(tiny_wan("wan22_a14b"), glat, layout, 0.4, 0.8, 0.9, 1.0, 1.0, short)
    with pytest.raises(ValueError, match=r"the layout has 16 frames, but this VAE packs 4 frames"):
        N.LayoutGuide.execute(image, stretch(layout, 16), vae, 8.0, 4.0, "diffuse")


def test_ti2v_noise_mask_is_merged(case):
    image, layout = case
    vae = PackingVAE(4, 48, 16)  # Wan 2.2's VAE: 48 channels, 16x16 pixels per latent pixel
    _, glat, _ = _out(N.LayoutGuide.execute(image, layout, vae, 8.0, 4.0, "diffuse"))
    ref = _out(nodes_wan.Wan22ImageToVideoLatent.execute(vae, 512, 320, FRAMES, 1, image))[0]
    assert ref["noise_mask"].shape == (1, 1, 5, 20, 32) and float(ref["noise_mask"][:, :, 0].max()) == 0.0
    model, latent = _out(N.LayoutMaskedDenoise.execute(tiny_wan("wan22_ti2v"), glat, layout, 0.4, 0.8, 0.9, 1.0, 1.0,
                                                       ref))
    nm = latent["noise_mask"]
    assert float(nm[:, :, 0].max()) == 0.0  # the start frame stays the start image (core's mask kept)
    assert float(nm[:, :, 1:].max()) == 1.0  # the layout frees object pixels of later frames
    fn = model.model_options["denoise_mask_function"]
    for p in (0.0, 0.5, 0.95):
        m = fn.mask_for(p, (1, 48, 5, 20, 32))
        assert float(m[:, :, 0].max()) == 0.0  # at every step


# -- the same point of the run, one sampler or two ---------------------------------------------------------------------

def _recording(model) -> tuple:
    """A clone of ``model`` that records (sigma, mask) of every call of its layout function, and the list."""
    model = model.clone()
    fn = model.model_options["denoise_mask_function"]
    seen: list[tuple[float, torch.Tensor]] = []

    def recording(sigma, denoise_mask, extra_options):
        out = fn(sigma, denoise_mask, extra_options)
        seen.append((float(sigma.max()), out[0, 0].clone()))
        return out

    recording.inner = fn
    model.set_model_denoise_mask_function(recording)
    return model, seen


def test_split_run_masks_equal_unsplit(case):
    image, layout = case
    vae = PackingVAE(4, 16)
    _, glat, _ = _out(N.LayoutGuide.execute(image, layout, vae, 8.0, 4.0, "diffuse"))
    pos, neg, ref = _out(nodes_wan.WanImageToVideo.execute(wan_text(), wan_text(negative=True), vae, 512, 320, FRAMES, 1,
                                                           image))
    high, low = tiny_wan("wan22_a14b", seed=0), tiny_wan("wan22_a14b", seed=1)
    mh, latent = _out(N.LayoutMaskedDenoise.execute(high, glat, layout, 0.4, 0.8, 0.9, 1.0, 1.0, ref))
    ml, _ = _out(N.LayoutMaskedDenoise.execute(low, glat, layout, 0.4, 0.8, 0.9, 1.0, 1.0, ref))
    adv = comfy_nodes.KSamplerAdvanced()
    one, unsplit = _recording(mh)
    comfy_nodes.common_ksampler(one, 0, STEPS, 3.5, "euler", "simple", pos, neg, latent)
    split_at = 3
    first, a = _recording(mh)
    second, b = _recording(ml)
    lat = adv.sample(first, "enable", 0, STEPS, 3.5, "euler", "simple", pos, neg, latent, 0, split_at, "enable")[0]
    adv.sample(second, "disable", 0, STEPS, 3.5, "euler", "simple", pos, neg, lat, split_at, 10000, "disable")
    split = a + b
    assert len(a) == split_at and len(split) == len(unsplit) == STEPS
    for (s_a, m_a), (s_b, m_b) in zip(unsplit, split):
        assert s_a == pytest.approx(s_b, rel=1e-6) and torch.equal(m_a, m_b)
    # and the masks do change along the run (the objects are released at 0.4 of it)
    assert not torch.equal(unsplit[0][1], unsplit[-1][1])


def test_every_order_of_phase_ends_holds_each_region_until_its_own_end():
    lay = L.parse_layout('{"objects": [{"phrase": "x", "boxes": [[0, 0.1, 0.2, 0.3, 0.6], [4, 0.6, 0.2, 0.8, 0.6]]}]}',
                         frames=5)
    r = L.region_masks(lay, 16, 32)
    regions = L.region_stack(r["objects"], r["vacated"], r["background"])
    core = [(regions[i] > 0.999) for i in range(3)]
    for ends in ((0.4, 0.8, 0.9), (0.9, 0.1, 0.5), (0.2, 0.2, 0.2), (1.0, 0.0, 0.6)):
        fn = L.LayoutDenoiseMask(regions, L.RegionSchedule(*ends), lambda s, e: 0.0)
        for p in (0.0, 0.15, 0.3, 0.55, 0.85, 0.95):
            m = fn.mask_for(p, (5, 4, 16, 32))[:, 0]
            for i, end in enumerate(ends):
                want = 0.0 if p < end else 1.0
                assert float((m[core[i]] - want).abs().max()) < 1e-6, (ends, p, i)


# -- the oracle on Wan ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["wan21_i2v", "wan22_ti2v"])
def test_oracle_follows_the_boxes_on_wan(kind):
    """Core's Wan model class (flow sampling, 5-D latents, Wan latent formats) with the guide as its prediction, through
    WanImageToVideo / Wan22ImageToVideoLatent, Layout Masked Denoise and KSampler: every object of every shipped case,
    stretched to 17 frames, is where its box says at every latent frame (scored at the last frame it holds)."""
    ti2v = kind == "wan22_ti2v"
    vae = PackingVAE(4, 48, 16) if ti2v else PackingVAE(4, 16, 8)
    base = tiny_wan(kind)
    ious, lines = [], []
    for name in L.list_cases(CASES):
        image, layout16, _, _ = _out(N.LayoutCaseLoader.execute("", 0, name))
        if ti2v:  # the same 40x64 latent grid at 16 px per latent pixel
            image = torch.nn.functional.interpolate(image.movedim(-1, 1), scale_factor=2, mode="bilinear").movedim(1, -1)
        H, W = image.shape[1:3]
        layout = stretch(layout16, FRAMES)
        _, glat, plate = _out(N.LayoutGuide.execute(image, layout, vae, 8.0, 4.0, "diffuse"))
        if kind == "wan22_ti2v":
            ref = _out(nodes_wan.Wan22ImageToVideoLatent.execute(vae, W, H, FRAMES, 1, image))[0]
            pos, neg = wan_text(name), wan_text(negative=True)
        else:
            pos, neg, ref = _out(nodes_wan.WanImageToVideo.execute(wan_text(name), wan_text(negative=True), vae, W, H,
                                                                   FRAMES, 1, image))
        model, latent = _out(N.LayoutMaskedDenoise.execute(predicting(base, glat["samples"]), glat, layout, 0.4, 0.8,
                                                           0.9, 1.0, 1.0, ref))
        calls = record_progress(model)
        out = comfy_nodes.common_ksampler(model, 0, STEPS, 1.0, "euler", "simple", pos, neg, latent)[0]["samples"]
        assert calls and calls == sorted(calls)  # progress along the run, on the noise level
        at = FR.pixel_frames_of(FRAMES, 4)
        lat = out[0, :4].movedim(1, 0)  # [T', 4, h, w]
        src = vae.encode(image[:1])[0, :4, 0]
        rep = L.evaluate_layout(lat, src, layout_at(layout, at), data_range=float(src.max() - src.min()))
        for o in rep["objects"]:
            ious += [i for i in o["ious"] if i is not None]
        lines.append(f"{kind} {name:15s} vIoU@0.5 {rep['viou50']:.3f}  mIoU {rep['miou']:.3f}")
        assert rep["viou50"] == 1.0, (name, rep["viou50"])
        if name != "ball_roll":
            continue
        # the decoded 1 + 4k frame video goes through the pack's layout nodes (metrics, preview, masks)
        video = vae.decode(out)
        assert video.shape[0] == FRAMES
        report, preview, viou, _ = _out(N.LayoutMetrics.execute(image, video, layout, 64))
        assert preview.shape[0] == FRAMES and 0.0 <= viou <= 1.0
        assert _out(N.LayoutToMask.execute(layout, 64, 40, "objects", -1, 0.0, 0.0))[0].shape[0] == FRAMES
    viou = sum(i >= 0.5 for i in ious) / len(ious)
    print("\n" + "\n".join(lines) + f"\n{kind} all: vIoU@0.5 {viou:.3f} over {len(ious)} object-latent-frames, "
          f"mIoU {sum(ious) / len(ious):.3f}")
    assert viou == 1.0
