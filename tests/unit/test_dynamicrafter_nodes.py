"""The backbone and sampling nodes in-process, with stock ComfyUI sampling and decoding."""
from __future__ import annotations

import pytest
import torch

import folder_paths
import nodes as comfy_nodes
from i2v_motion.backbones.conditioning import check_size
from i2v_motion.nodes import all_nodes
from i2v_motion.nodes.backbone import DynamiCrafterImageToVideo, LoadDynamiCrafter
from i2v_motion.nodes.sampling import DynamiCrafterSampler, TrailingSchedule, VideoRescaleCFG

W, H, T = 128, 64, 4


def _out(node_output):
    return node_output.result if hasattr(node_output, "result") else node_output


def test_every_node_has_prefixed_id_and_tooltips():
    ids = set()
    for cls in all_nodes():
        schema = cls.define_schema()
        assert schema.node_id.startswith("I2VMotion_"), schema.node_id
        assert schema.node_id not in ids
        ids.add(schema.node_id)
        for inp in schema.inputs:
            assert inp.tooltip, f"{schema.node_id}.{inp.id} has no tooltip"
    assert {"I2VMotion_LoadDynamiCrafter", "I2VMotion_DynamiCrafterImageToVideo",
            "I2VMotion_DynamiCrafterSampler"} <= ids


@pytest.fixture(scope="module")
def loaded_nodes(tiny_dc_path):
    folder_paths.add_model_folder_path("checkpoints", str(tiny_dc_path.parent))
    assert tiny_dc_path.name in LoadDynamiCrafter.define_schema().inputs[0].options
    return _out(LoadDynamiCrafter.execute(tiny_dc_path.name, "auto", "fp32"))


@pytest.fixture(scope="module")
def conditioned(loaded_nodes):
    model, clip, vae, cv = loaded_nodes
    pos = comfy_nodes.CLIPTextEncode().encode(clip, "a boat on a lake")[0]
    neg = comfy_nodes.CLIPTextEncode().encode(clip, "")[0]
    image = torch.rand(1, 50, 70, 3)
    return _out(DynamiCrafterImageToVideo.execute(pos, neg, vae, cv, image, W, H, T, 24))


def test_conditioning_outputs(conditioned):
    pos, neg, latent = conditioned
    assert latent["samples"].shape == (T, 4, H // 8, W // 8)
    p, n = pos[0][1], neg[0][1]
    assert p["concat_latent_image"].shape == (T, 4, H // 8, W // 8)
    assert torch.equal(p["concat_latent_image"][0], p["concat_latent_image"][-1])
    assert p["clip_vision_tokens"].shape[1] == 257
    assert not torch.equal(p["clip_vision_tokens"], n["clip_vision_tokens"])  # uncond = tokens of a zero image
    assert p["fs"] == 24


def test_interp_end_frame(loaded_nodes):
    model, clip, vae, cv = loaded_nodes
    pos = comfy_nodes.CLIPTextEncode().encode(clip, "x")[0]
    a, b = torch.zeros(1, 64, 128, 3), torch.ones(1, 64, 128, 3)
    p, _, _ = _out(DynamiCrafterImageToVideo.execute(pos, pos, vae, cv, a, W, H, T, 24, end_image=b))
    c = p[0][1]["concat_latent_image"]
    assert not torch.equal(c[0], c[-1]) and c[1:-1].abs().max() == 0


@pytest.mark.parametrize("w,h,n,msg", [(100, 64, 4, "multiples of 64"), (128, 60, 4, "multiples of 64"),
                                       (128, 64, 0, "length"), (128, 64, 1000, "length")])
def test_bad_sizes_are_clear(w, h, n, msg):
    with pytest.raises(ValueError, match=msg):
        check_size(w, h, n)


def test_missing_vae_or_clip_vision_is_clear(loaded_nodes):
    model, clip, vae, cv = loaded_nodes
    pos = comfy_nodes.CLIPTextEncode().encode(clip, "x")[0]
    with pytest.raises(ValueError, match="no CLIP_VISION"):
        DynamiCrafterImageToVideo.execute(pos, pos, vae, None, torch.rand(1, 64, 64, 3), W, H, T, 24)


def _decode_ok(vae, latent) -> torch.Tensor:
    frames = comfy_nodes.VAEDecode().decode(vae, latent)[0]
    assert frames.shape == (T, H, W, 3)
    assert torch.isfinite(frames).all() and frames.std() > 0
    return frames


@pytest.mark.parametrize("sampler_name", ["euler", "ddim", "dpmpp_2m"])
def test_stock_ksampler_to_frames(loaded_nodes, conditioned, sampler_name):
    model, clip, vae, cv = loaded_nodes
    pos, neg, latent = conditioned
    out = comfy_nodes.common_ksampler(model, 1, 2, 7.5, sampler_name, "simple", pos, neg, latent)[0]
    assert out["samples"].shape == latent["samples"].shape and torch.isfinite(out["samples"]).all()
    _decode_ok(vae, out)


def test_official_sampler_nodes_with_sampler_custom_advanced(loaded_nodes, conditioned):
    from comfy_extras.nodes_custom_sampler import CFGGuider, Noise_RandomNoise, SamplerCustomAdvanced

    model, clip, vae, cv = loaded_nodes
    pos, neg, latent = conditioned
    sampler = _out(DynamiCrafterSampler.execute(1.0, 0.7, True, 0.7))[0]
    sigmas = _out(TrailingSchedule.execute(model, 3))[0]
    ms = model.get_model_object("model_sampling")
    assert [round(float(ms.timestep(s.reshape(1)))) for s in sigmas[:-1]] == [999, 666, 332]  # official: round(1000 − k·1000/3) − 1
    guider = _out(CFGGuider.execute(model, pos, neg, 7.5))[0]
    runs = [_out(SamplerCustomAdvanced.execute(Noise_RandomNoise(7), guider, sampler, sigmas, latent))[0] for _ in range(2)]
    assert torch.equal(runs[0]["samples"], runs[1]["samples"])  # seeded eta noise: reproducible
    _decode_ok(vae, runs[0])


def test_rescale_cfg_patch_does_not_touch_input(loaded_nodes, conditioned):
    model, *_ = loaded_nodes
    before = dict(model.model_options)
    patched = _out(VideoRescaleCFG.execute(model, 0.7))[0]
    assert "sampler_cfg_function" in patched.model_options
    assert model.model_options == before and "sampler_cfg_function" not in model.model_options
    pos, neg, latent = conditioned
    a = comfy_nodes.common_ksampler(model, 3, 2, 7.5, "euler", "simple", pos, neg, latent)[0]["samples"]
    b = comfy_nodes.common_ksampler(patched, 3, 2, 7.5, "euler", "simple", pos, neg, latent)[0]["samples"]
    assert not torch.allclose(a, b)


def test_loader_error_names_folder():
    with pytest.raises(ValueError, match="not found in"):
        LoadDynamiCrafter.execute("does_not_exist.ckpt", "auto", "default")

