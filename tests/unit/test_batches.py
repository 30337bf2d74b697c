"""Batches of videos (frames-as-batch ``[B·T, 4, h, w]``) on the tiny DynamiCrafter, and the official crop.

What is checked: a batch of two videos sampled together equals each video sampled alone with the same noise
(model, CFG, guidance rescale, dynamic rescale all per video); one start image for every video; stock VAE
Decode + RebatchImages / ImageFromBatch give each video's frames; Layout Masked Denoise tiles its guide and
masks per video; the expert schedule runs each video with the expert of its own noise level; the crop /
stretch / pad preprocessing.
"""
from __future__ import annotations

import pytest
import torch

import comfy.model_management as mm
import comfy.samplers
import nodes as comfy_nodes
from comfy_extras.nodes_custom_sampler import CFGGuider, SamplerCustomAdvanced
from comfy_extras.nodes_rebatch import ImageRebatch
from i2v_motion.backbones.conditioning import fit_image
from i2v_motion.merging.patches import edg_experts
from i2v_motion.experts.schedule import expert_schedule
from i2v_motion.nodes.backbone import DynamiCrafterImageToVideo, ResizeImageForVideo
from i2v_motion.nodes.sampling import DynamiCrafterSampler, TrailingSchedule

W, H, T = 64, 64, 3


def _out(o):
    return o.result if hasattr(o, "result") else o


class FixedNoise:
    def __init__(self, x: torch.Tensor):
        self.x, self.seed = x, 0

    def generate_noise(self, input_latent):
        return self.x.clone()


@pytest.fixture(scope="module")
def text(tiny_dc):
    pos = comfy_nodes.CLIPTextEncode().encode(tiny_dc.clip, "a red kite over the sea")[0]
    neg = comfy_nodes.CLIPTextEncode().encode(tiny_dc.clip, "")[0]
    return pos, neg


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(4)
    return torch.rand(2, 48, 80, 3, generator=g)


def _i2v(dc, text, image, batch_size=1, **kw):
    pos, neg = text
    return _out(DynamiCrafterImageToVideo.execute(pos, neg, dc.vae, dc.clip_vision, image, W, H, T, 24,
                                                  batch_size=batch_size, **kw))


def _official(model, pos, neg, latent, noise, steps=2):
    sampler = _out(DynamiCrafterSampler.execute(0.0, 0.7, True, 0.7))[0]
    sigmas = _out(TrailingSchedule.execute(model, steps))[0]
    guider = _out(CFGGuider.execute(model, pos, neg, 7.5))[0]
    return _out(SamplerCustomAdvanced.execute(FixedNoise(noise), guider, sampler, sigmas, latent))[0]["samples"]


def test_batch_of_two_equals_each_video_alone(tiny_dc, text, images):
    """Video A sampled next to video B equals video A sampled next to itself (same batch size, so the same
    float kernels): nothing of one video reaches another — not the model, CFG, guidance rescale or dynamic
    rescale. Against a single-video run the batch differs only by float32 batch-size numerics."""
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2 * T, 4, H // 8, W // 8, generator=g)
    pos2, neg2, lat2 = _i2v(tiny_dc, text, images, batch_size=2)
    assert lat2["samples"].shape == (2 * T, 4, H // 8, W // 8)
    assert pos2[0][1]["num_video_frames"] == T and pos2[0][1]["clip_vision_tokens"].shape[0] == 2
    singles = [_i2v(tiny_dc, text, images[i:i + 1]) for i in range(2)]
    for key in ("concat_latent_image", "clip_vision_tokens"):  # the node's batch = its singles (VAE/CLIP batch numerics)
        cat = torch.cat([s[0][0][1][key] for s in singles])
        assert float((pos2[0][1][key] - cat).abs().max().detach()) <= 1e-5, key

    def batch_of(i: int, j: int):
        """Conditioning of the two-video batch [video i, video j] built from the singles' exact values."""
        out = []
        for k in (0, 1):
            v = [singles[i][k][0][1], singles[j][k][0][1]]
            vals = {"concat_latent_image": torch.cat([x["concat_latent_image"] for x in v])}
            if k == 0:
                vals["clip_vision_tokens"] = torch.cat([x["clip_vision_tokens"] for x in v])
            out.append([[pos2[0][0] if k == 0 else neg2[0][0], {**(pos2 if k == 0 else neg2)[0][1], **vals}]])
        return out

    ab = _official(tiny_dc.model, *batch_of(0, 1), lat2, noise)
    aa = _official(tiny_dc.model, *batch_of(0, 0), lat2, noise)
    bb = _official(tiny_dc.model, *batch_of(1, 1), lat2, noise)
    scale = max(1.0, float(ab.abs().max()))
    err = max(float((ab[:T] - aa[:T]).abs().max()), float((ab[T:] - bb[T:]).abs().max()))
    alone = torch.cat([_official(tiny_dc.model, p, n, lat, noise[i * T:(i + 1) * T])
                       for i, (p, n, lat) in enumerate(singles)])
    err_alone = float((ab - alone).abs().max())
    print(f"batch of 2 (official DDIM, CFG 7.5, rescale 0.7, dynamic rescale): each video vs the same video in a batch "
          f"with itself {err:.2e}, vs sampled alone {err_alone:.2e} (|x| max {scale:.3g})")
    assert err <= 1e-5 * scale
    assert err_alone <= 2e-3 * scale  # batch-size float numerics, amplified by the random tiny UNet
    assert float((ab[:T] - ab[T:]).abs().max()) > 0.1  # two different videos
    # the same frames read as one video of 2·T frames are something else (the boundary matters)
    p, n = batch_of(0, 1)
    one = _official(tiny_dc.model, [[p[0][0], {**p[0][1], "num_video_frames": 2 * T,
                                               "clip_vision_tokens": p[0][1]["clip_vision_tokens"][:1]}]],
                    [[n[0][0], {**n[0][1], "num_video_frames": 2 * T}]], lat2, noise)
    assert float((one - ab).abs().max()) > 100 * max(err, 1e-6)


def test_one_start_image_for_every_video(tiny_dc, text, images):
    pos, neg, lat = _i2v(tiny_dc, text, images[:1], batch_size=3)
    c = pos[0][1]["concat_latent_image"]
    assert lat["samples"].shape[0] == 3 * T and c.shape[0] == 3 * T
    assert torch.equal(c[:T], c[T:2 * T]) and torch.equal(c[:T], c[2 * T:])
    assert pos[0][1]["clip_vision_tokens"].shape[0] == 1  # shared: ComfyUI repeats it
    with pytest.raises(ValueError, match="give 1 image"):
        _i2v(tiny_dc, text, images, batch_size=3)
    # interp: one end image per video
    _, _, _ = _i2v(tiny_dc, text, images, batch_size=2, end_image=images.flip(0))


def test_decode_and_split_each_video(tiny_dc, text, images):
    pos, neg, lat = _i2v(tiny_dc, text, images, batch_size=2)
    out = comfy_nodes.common_ksampler(tiny_dc.model, 0, 2, 7.5, "euler", "simple", pos, neg, lat)[0]
    frames = comfy_nodes.VAEDecode().decode(tiny_dc.vae, out)[0]
    assert frames.shape == (2 * T, H, W, 3)
    videos = _out(ImageRebatch.execute([frames], [T]))[0]
    assert len(videos) == 2 and all(v.shape[0] == T for v in videos)
    assert torch.equal(videos[1], frames[T:])
    single = comfy_nodes.VAEDecode().decode(tiny_dc.vae, {"samples": out["samples"][T:]})[0]
    assert float((videos[1] - single).abs().max().detach()) < 1e-5  # decoding is per frame: the split is that video


def test_layout_masked_denoise_tiles_per_video(tiny_dc, text, images):
    from i2v_motion import layout as L
    from i2v_motion.nodes.layout import LayoutMaskedDenoise

    lay = L.parse_layout({"objects": [{"phrase": "a", "boxes": [[0, 0.1, 0.1, 0.4, 0.4], [T - 1, 0.5, 0.5, 0.9, 0.9]]}]},
                         frames=T)
    guide = {"samples": torch.randn(T, 4, H // 8, W // 8)}
    _, _, lat = _i2v(tiny_dc, text, images, batch_size=2)
    m, out = _out(LayoutMaskedDenoise.execute(tiny_dc.model, guide, lay, 0.4, 0.8, 0.9, 1.0, 1.0, reference=lat))
    assert out["samples"].shape == lat["samples"].shape and out["noise_mask"].shape[0] == 2 * T
    assert torch.equal(out["samples"][:T], out["samples"][T:]) and torch.equal(out["noise_mask"][:T], out["noise_mask"][T:])
    fn = m.model_options["denoise_mask_function"]
    mask = fn(torch.tensor([1.0]), out["noise_mask"], {"sigmas": torch.tensor([2.0, 1.0, 0.0])})
    assert torch.equal(mask[:T], mask[T:]) and not torch.equal(mask[0], mask[T - 1])  # per frame, per video
    with pytest.raises(ValueError, match="frame-count mismatch"):
        LayoutMaskedDenoise.execute(tiny_dc.model, guide, lay, 0.4, 0.8, 0.9, 1.0, 1.0,
                                    reference={"samples": torch.zeros(T + 1, 4, H // 8, W // 8)})


def test_expert_schedule_runs_each_video_with_its_own_expert(tiny_dc, text, images):
    """Two videos at noise levels on both sides of the switch in one evaluation: each video gets the output
    of the expert its own timestep selects, never a mix."""
    base = tiny_dc.model
    g = torch.Generator().manual_seed(5)
    sd = base.model.diffusion_model.state_dict()
    from i2v_motion.backbones.loader import build_model
    ft = build_model({k: v + 0.05 * torch.randn(v.shape, generator=g).to(v.dtype) for k, v in sd.items()}, "512")
    dyn, con, _ = edg_experts(base, ft, p=0.0)
    sched = expert_schedule([dyn, con], [500])
    pos, neg, lat = _i2v(tiny_dc, text, images, batch_size=2)
    ms = base.get_model_object("model_sampling")
    x = torch.randn(2 * T, 4, H // 8, W // 8, generator=g)
    sig = torch.cat([ms.sigma(torch.tensor([800.0])).expand(T), ms.sigma(torch.tensor([200.0])).expand(T)])

    def evaluate(model, x, sig, p):
        """x0 of one model evaluation at per-frame sigmas ``sig``, through CFGGuider's own machinery."""
        m = model.clone()
        outs = {}

        def capture(apply_model, args):
            outs["x0"] = apply_model(args["input"], args["timestep"], **args["c"])
            return outs["x0"]

        m.set_model_unet_function_wrapper(capture)
        guider = comfy.samplers.CFGGuider(m)
        guider.set_conds(p, p)
        guider.set_cfg(1.0)

        def one_step(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
            return model_k(x, sig.to(x), **(extra_args or {}))

        guider.sample(torch.zeros_like(x), x, comfy.samplers.KSAMPLER(one_step), torch.stack([sig.max(), sig.new_zeros(())]),
                      seed=0)
        return outs["x0"]

    def video(i):
        v = pos[0][1]
        return [[pos[0][0], {**v, "concat_latent_image": v["concat_latent_image"][i * T:(i + 1) * T],
                             "clip_vision_tokens": v["clip_vision_tokens"][i:i + 1]}]]

    both = evaluate(sched, x, sig, pos)
    ref_hi = evaluate(dyn, x[:T], sig[:T], video(0))
    ref_lo = evaluate(con, x[T:], sig[T:], video(1))
    mm.unload_all_models()
    err = max(float((both[:T] - ref_hi).abs().max()), float((both[T:] - ref_lo).abs().max()))
    print(f"expert schedule, two videos at t 800 / 200 in one evaluation vs each expert alone: {err:.2e}")
    assert err <= 1e-4 * max(1.0, float(ref_hi.abs().max()))
    wrong = evaluate(con, x[:T], sig[:T], video(0))
    assert float((wrong - ref_hi).abs().max()) > 100 * max(err, 1e-6)  # the experts do differ there


# ------------------------------------------------------------------------------------------ preprocessing

def test_resize_modes_keep_aspect_as_documented():
    # a 4:3 picture with a border of 1s and a 0-interior: what survives tells the framing
    img = torch.zeros(1, 300, 400, 3)
    img[:, :, :20] = 1.0   # left band
    img[:, :20] = 0.5      # top band
    crop = fit_image(img, 512, 320, "crop")
    pad = fit_image(img, 512, 320, "pad")
    stretch = fit_image(img, 512, 320, "stretch")
    assert crop.shape == pad.shape == stretch.shape == (1, 320, 512, 3)
    # crop: width covers exactly (scale 1.28 → 512×384, 32 rows cut at top and bottom): the top band (26 rows)
    # is cut off, the left band kept
    assert float(crop[0, 0, 256].mean()) < 0.05 and float(crop[0, 160, 5].mean()) > 0.9
    # pad: the whole image at height 320 (426 px wide) between black bars of 43 px
    assert float(pad[0, 160, :40].abs().max()) == 0.0 and float(pad[0, 160, 44:60].mean()) > 0.9
    assert float(pad[0, 2, 256].mean()) > 0.4  # top band present
    # stretch: both bands, distorted
    assert float(stretch[0, 2, 256].mean()) > 0.4 and float(stretch[0, 160, 5].mean()) > 0.9
    # the official transform at 256x256 (Resize(256) + CenterCrop) equals crop for any aspect
    sq = fit_image(img, 256, 256, "crop")
    assert sq.shape == (1, 256, 256, 3)
    node = _out(ResizeImageForVideo.execute(img, 512, 320, "crop"))[0]
    assert torch.equal(node, crop)
    with pytest.raises(ValueError, match="resize_mode"):
        fit_image(img, 512, 320, "zoom")


@pytest.mark.parametrize("target", [(512, 320), (256, 256), (1024, 576)])
def test_official_mode_is_the_scripts_transform(target):
    """``official`` = torchvision ``Resize(min(h, w))`` + ``CenterCrop((h, w))`` (the official scripts), for
    landscape, 4:3, portrait, square and odd sizes; ``crop`` agrees wherever that transform does not pad."""
    tv = pytest.importorskip("torchvision.transforms", reason="torchvision (comes with ComfyUI's torch) is absent")
    width, height = target
    official = tv.Compose([tv.Resize(min(height, width), interpolation=tv.InterpolationMode.BILINEAR, antialias=True),
                           tv.CenterCrop((height, width))])
    g = torch.Generator().manual_seed(0)
    for h, w in ((300, 400), (480, 640), (400, 300), (180, 320), (333, 333), (577, 1031), (64, 90)):
        img = torch.rand(1, h, w, 3, generator=g)
        ref = official(img.movedim(-1, 1)).movedim(1, -1)
        ours = fit_image(img, width, height, "official")
        assert ours.shape == ref.shape == (1, height, width, 3)
        assert torch.equal(ours, ref), ((h, w), target, float((ours - ref).abs().max()))
        if w * height >= width * h or width == height:  # not narrower than the target: the scripts crop
            assert torch.equal(fit_image(img, width, height, "crop"), ref), ((h, w), target)
    # the must-show case: a 4:3 image at 512×320 gets the scripts' 43 px black bars (= pad there)
    img = torch.rand(1, 300, 400, 3, generator=g)
    o = fit_image(img, 512, 320, "official")
    assert float(o[:, :, :43].abs().max()) == 0.0 and float(o[:, :, -43:].abs().max()) == 0.0
    assert torch.equal(o, fit_image(img, 512, 320, "pad"))
