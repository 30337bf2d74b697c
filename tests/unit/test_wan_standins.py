"""The tiny Wan stand-ins (``support.wan``, ``support.standins``) load through core's own loaders as core's own models,
run core's Wan workflows end to end, and the harness pieces around them (text stand-in, LoRAs, node swaps, the file
cache) do what the sidecars and the demo rely on.

Runs: 1 + 4k frames at 32 px (Wan 2.1: 9 frames through the Wan 2.1 VAE narrowed to dim 32 — same class, same key
layout, core reads dim from the file; Wan 2.2 TI2V: 5 frames through the full-size Wan 2.2 VAE, the only one core
builds). Every video must be finite with no flat frame.
"""
from __future__ import annotations

import gc
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import comfy.model_management as mm
import nodes as comfy_nodes
import workflow
from support import standins, wan
from support.models import loaded_weights

REPO = Path(__file__).resolve().parents[2]
I2V = "wan2.1_i2v_480p_14B_fp16.safetensors"
HIGH, LOW = "wan2.2_i2v_high_noise_14B_fp16.safetensors", "wan2.2_i2v_low_noise_14B_fp16.safetensors"
TI2V = "wan2.2_ti2v_5B_fp16.safetensors"
VAE21, VAE21_NARROW, VAE22 = "wan_2.1_vae.safetensors", "wan_2.1_vae_dim32.safetensors", "wan2.2_vae.safetensors"
CLIP_H, UMT5 = "clip_vision_h.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
MODELS = {
    f"diffusion_models/{I2V}": {"kind": "wan21_i2v"},
    f"diffusion_models/{HIGH}": {"kind": "wan22_a14b", "seed": 0},
    f"diffusion_models/{LOW}": {"kind": "wan22_a14b", "seed": 1},
    f"diffusion_models/{TI2V}": {"kind": "wan22_ti2v"},
    f"vae/{VAE21}": {"kind": "wan21_vae"},
    f"vae/{VAE21_NARROW}": {"kind": "wan21_vae", "dim": 32},
    f"vae/{VAE22}": {"kind": "wan22_vae"},
    f"clip_vision/{CLIP_H}": {"kind": "clip_vision_h"},
    "loras/wan21_i2v_tiny_lora.safetensors": {"kind": "wan_lora", "model": "wan21_i2v"},
    "loras/wan22_ti2v_tiny_lora.safetensors": {"kind": "wan_lora", "model": "wan22_ti2v"},
    "loras/dynamicrafter_tiny_lora.safetensors": {"kind": "dynamicrafter_lora"},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models root holding every stand-in above (from the stand-in cache), visible to core's loaders."""
    root = tmp_path_factory.mktemp("wan-models")
    standins.make_all(root, MODELS)
    with standins.models_root(root):
        yield root
    mm.unload_all_models()


@pytest.fixture(autouse=True)
def _inference_mode():
    """Core's nodes run under ``torch.inference_mode`` in ComfyUI's executor; outside it, their outputs would keep
    autograd graphs alive (the CLIP-H encode alone: 3 GB)."""
    with torch.inference_mode():
        yield


def _unet(name: str):
    return comfy_nodes.UNETLoader().load_unet(name, "default")[0]


def _vae(name: str):
    return comfy_nodes.VAELoader().load_vae(name)[0]


def _free() -> None:
    mm.unload_all_models()
    gc.collect()


def _check_video(frames: torch.Tensor, length: int, width: int, height: int) -> None:
    assert (length - 1) % 4 == 0
    assert tuple(frames.shape) == (length, height, width, 3), tuple(frames.shape)
    assert torch.isfinite(frames).all()
    flat = frames.flatten(1).amax(1) - frames.flatten(1).amin(1)
    assert (flat > 0).all(), f"flat frames: {flat.tolist()}"
    assert length == 1 or (frames[1:] - frames[:-1]).abs().amax() > 0, "every frame is the same picture"


# -- loaders ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kind", [(I2V, "wan21_i2v"), (HIGH, "wan22_a14b"), (TI2V, "wan22_ti2v")])
def test_dit_standin_loads_as_core_wan_model(models, name, kind):
    spec = wan.DITS[kind]
    m = _unet(name)
    assert type(m.model).__name__ == spec.model
    assert type(m.model.model_config).__name__ == spec.config
    dm = m.model.diffusion_model
    assert (dm.in_dim, dm.out_dim, dm.dim, dm.num_heads, dm.text_dim) == (spec.in_dim, spec.out_dim, 128, 1, 4096)
    assert len(dm.blocks) == wan.TINY_LAYERS
    assert (dm.img_emb is not None) == spec.image_embedding
    assert hasattr(dm.blocks[0].cross_attn, "k_img") == spec.image_embedding
    assert m.model.latent_format.latent_channels == spec.out_dim
    if kind == "wan21_i2v":
        assert m.model.image_to_video


def test_a14b_high_and_low_noise_files_are_two_seeds_of_one_model(models):
    high, low = _unet(HIGH).model.diffusion_model.state_dict(), _unet(LOW).model.diffusion_model.state_dict()
    assert {k: v.shape for k, v in high.items()} == {k: v.shape for k, v in low.items()}
    assert not torch.equal(high["blocks.0.self_attn.q.weight"], low["blocks.0.self_attn.q.weight"])


@pytest.mark.parametrize("name, dim, frames", [(VAE21, 96, 1), (VAE21_NARROW, 32, 5)])
def test_wan21_vae_standin_is_core_wan21_vae(models, name, dim, frames):
    vae = _vae(name)
    assert type(vae.first_stage_model).__module__ == "comfy.ldm.wan.vae"
    assert vae.first_stage_model.decoder.head[0].gamma.shape[0] == dim
    assert tuple(vae.downscale_index_formula) == (4, 8, 8) and vae.latent_channels == 16
    video = wan.start_image(32, 32).expand(frames, -1, -1, -1).clone()
    video[1:] *= torch.linspace(0.2, 0.9, frames - 1)[:, None, None, None]
    z = vae.encode(video)
    assert tuple(z.shape) == (1, 16, 1 + (frames - 1) // 4, 4, 4) and torch.isfinite(z).all()
    _check_video(vae.decode(z).reshape(-1, 32, 32, 3), frames, 32, 32)


@pytest.fixture(scope="module")
def clip_vision_h(models):
    """What core's CLIPVisionLoader builds from the stand-in (its config) and CLIPVisionEncode's output for the start
    image; the 632 M-parameter tower is freed again (never in memory together with the Wan 2.2 VAE)."""
    with torch.inference_mode():
        cv = comfy_nodes.CLIPVisionLoader().load_clip(CLIP_H)[0]
        sd = cv.get_sd()
        info = {"class": type(cv.model).__name__, "image_size": cv.image_size,
                "width": sd["vision_model.embeddings.class_embedding"].shape[0],
                "layers": len({k.split(".")[3] for k in sd if k.startswith("vision_model.encoder.layers.")})}
        out = comfy_nodes.CLIPVisionEncode().encode(cv, wan.start_image(), "none")[0]
    del cv, sd
    _free()
    return info, out


def test_clip_vision_h_standin_is_core_vit_h(clip_vision_h):
    info, out = clip_vision_h
    assert info["class"] == "CLIPVisionModelProjection"
    assert (info["image_size"], info["width"], info["layers"]) == (224, 1280, 32)
    feats = out.penultimate_hidden_states
    assert tuple(feats.shape) == (1, 257, 1280) and torch.isfinite(feats).all() and feats.std() > 0


# -- tiny runs -------------------------------------------------------------------------------------------
def test_wan21_i2v_run_with_clip_vision(models, clip_vision_h):
    out = wan.run_i2v(_unet(I2V), _vae(VAE21_NARROW), clip_vision_output=clip_vision_h[1], width=32, height=32,
                      length=9)
    _check_video(out, 9, 32, 32)


def test_wan21_i2v_runs_without_clip_vision(models):
    """WanImageToVideo's clip_vision_output is optional: the I2V model then cross-attends the text in place of
    image tokens (core slices context[:, :None]) and still samples."""
    _check_video(wan.run_i2v(_unet(I2V), _vae(VAE21_NARROW), width=32, height=32, length=5), 5, 32, 32)


def test_wan22_a14b_two_expert_run(models):
    high, low, vae = _unet(HIGH), _unet(LOW), _vae(VAE21_NARROW)
    out = wan.run_a14b(high, low, vae, split=1, steps=2, width=32, height=32, length=9)
    _check_video(out, 9, 32, 32)
    high_only = wan.run_a14b(high, high, vae, split=1, steps=2, width=32, height=32, length=9)
    assert not torch.equal(out, high_only), "the low-noise model did not take over at the split"


# -- LoRAs -----------------------------------------------------------------------------------------------
def _changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("kind, name", [("wan21_i2v", I2V), ("wan22_ti2v", TI2V)])
def test_wan_lora_patches_exactly_its_layers(models, kind, name):
    m = _unet(name)
    lora = f"{kind}_tiny_lora.safetensors"
    patched = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(m, lora, 0.5)[0]
    before, after = loaded_weights(m), loaded_weights(patched)
    targets = wan.wan_lora_targets(kind)
    assert _changed(before, after) == {f"diffusion_model.{t}.weight" for t in targets}
    sd = wan.wan_lora_state_dict(kind)
    t = targets[0]
    a, b = sd[f"diffusion_model.{t}.lora_A.weight"].float(), sd[f"diffusion_model.{t}.lora_B.weight"].float()
    delta = after[f"diffusion_model.{t}.weight"] - before[f"diffusion_model.{t}.weight"]
    assert torch.allclose(delta, 0.5 * b @ a, atol=1e-5), "the update is not strength * B @ A * alpha / rank"


def test_dynamicrafter_lora_patches_exactly_its_layers(models, tiny_dc):
    _, targets = standins.dc_lora_targets()
    lora = "dynamicrafter_tiny_lora.safetensors"
    patched = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(tiny_dc.model, lora, 1.0)[0]
    assert _changed(loaded_weights(tiny_dc.model), loaded_weights(patched)) == \
        {f"diffusion_model.{t}.weight" for t in targets}


def test_svd_lora_maps_onto_exactly_its_layers(tmp_path):
    """The kohya-format LoRA for the tiny SVD checkpoints (``make_tiny_svd_checkpoint``'s 320-channel UNet, built by
    core's SVD model code on the meta device: key maps only, no weights) patches exactly its layers."""
    import comfy.model_patcher
    import comfy.supported_models
    from support.fixtures import svd_unet_config

    standins.make_all(tmp_path, {"loras/svd_lora.safetensors": {"kind": "svd_lora"}})
    mc = comfy.supported_models.SVD_img2vid(svd_unet_config())
    mc.set_inference_dtype(torch.float16, None)
    with torch.device("meta"):
        model = mc.get_model({})
    m = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    with standins.models_root(tmp_path):
        patched = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(m, "svd_lora.safetensors", 1.0)[0]
    _, targets = standins.svd_lora_targets()
    assert len(targets) == 6 and set(patched.patches) == {f"diffusion_model.{t}.weight" for t in targets}


# -- text ------------------------------------------------------------------------------------------------
def test_text_standin_has_umt5_shape_and_follows_the_text():
    cond = wan.text_conditioning("a red box drifts right")
    assert len(cond) == 1 and cond[0][1] == {"pooled_output": None}
    emb = cond[0][0]
    assert tuple(emb.shape) == (1, 512, 4096) and emb.dtype == torch.float32
    rows = emb[0].abs().sum(1) > 0
    assert rows[:6].all() and not rows[6:].any()  # 5 words + the end token, zero padding
    assert torch.equal(emb, wan.text_conditioning("a red box drifts right")[0][0])
    other = wan.text_embedding("a blue box drifts left")
    assert torch.equal(other[0, 0], emb[0, 0]) and not torch.equal(other[0, 1], emb[0, 1])
    assert (wan.text_embedding("")[0].abs().sum(1) > 0).sum() == 1  # the end token alone, as umT5 for ""
    assert tuple(wan.text_embedding("x", tokens=77).shape) == (1, 77, 4096)


def test_text_standin_node_returns_the_same_conditioning():
    import comfy_server

    spec = importlib.util.spec_from_file_location("i2v_test_standins", comfy_server.TEST_NODES / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    node = mod.NODE_CLASS_MAPPINGS["I2VTest_WanTextEncode"]()
    (cond,) = node.encode("a red box drifts right")
    assert torch.equal(cond[0][0], wan.text_embedding("a red box drifts right"))
    assert cond[0][1] == {"pooled_output": None}
    assert set(mod.NODE_CLASS_MAPPINGS["I2VTest_WanTextEncode"].INPUT_TYPES()["required"]) == {"text"}


# -- harness: node swaps, models a workflow needs, the cache --------------------------------------------
def _wan_prompt() -> dict:
    return {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": UMT5, "type": "wan"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a boat", "clip": ["1", 0]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 0]}},
        "4": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "other", "clip": ["4", 0]}},
        "6": {"class_type": "UNETLoader", "inputs": {"unet_name": I2V, "weight_dtype": "default"}},
        "7": {"class_type": "VAELoader", "inputs": {"vae_name": VAE21}},
        "8": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_H}},
        "9": {"class_type": "WanImageToVideo", "inputs": {"positive": ["2", 0], "negative": ["3", 0], "vae": ["7", 0]}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }


def test_wan_text_encoders_are_swapped_and_their_loader_dropped():
    prompt = _wan_prompt()
    swaps = workflow.tiny_replacements(prompt, {})
    assert set(swaps) == {"2", "3"}
    removed = workflow.apply_replacements(prompt, swaps)
    assert removed == ["1"] and "4" in prompt and prompt["5"]["class_type"] == "CLIPTextEncode"
    assert prompt["2"] == {"class_type": "I2VTest_WanTextEncode", "inputs": {"text": "a boat"}}
    assert prompt["9"]["inputs"]["positive"] == ["2", 0]

    prompt = _wan_prompt()
    swaps = workflow.tiny_replacements(prompt, {"tiny_replace": {"3": None, "5": {"class_type": "X", "drop": ["clip"],
                                                                                   "inputs": {"n": 1}}}})
    assert set(swaps) == {"2", "5"}
    assert workflow.apply_replacements(prompt, swaps) == ["4"]  # "1" still feeds node 3
    assert prompt["5"] == {"class_type": "X", "inputs": {"text": "other", "n": 1}}
    with pytest.raises(KeyError, match="NoSuchNode"):
        workflow.tiny_replacements(prompt, {"tiny_replace": {"NoSuchNode": None}})


def test_official_wan_file_names_get_their_standins_without_a_sidecar():
    assert workflow.tiny_models(_wan_prompt(), {}) == {
        f"diffusion_models/{I2V}": {"kind": "wan21_i2v"}, f"vae/{VAE21}": {"kind": "wan21_vae"},
        f"clip_vision/{CLIP_H}": {"kind": "clip_vision_h"}}
    assert standins.guess(f"diffusion_models/{LOW}") == {"kind": "wan22_a14b", "seed": 1}
    assert standins.guess("vae/sdxl_vae.safetensors") is None


@pytest.mark.parametrize("wf_path", sorted((REPO / "example_workflows").glob("*.json")), ids=lambda p: p.stem)
def test_demo_makes_exactly_the_standins_an_example_needs(wf_path):
    """``tools/demo.py --workflow`` decides from the loaders' widget values which files must exist; on stand-ins it
    makes the sidecar's ``tiny_models`` (or one DynamiCrafter per pack-loader name): the same files."""
    expect = workflow.load_expect(wf_path)
    wf = workflow.load(wf_path)
    files = workflow.model_files_ui(wf)
    assert files, f"{wf_path.name} names no model file"
    for node in wf["nodes"]:  # the Wan text encoder is swapped for I2VTest_WanTextEncode, never made
        if node["type"] == "CLIPLoader" and "wan" in (node.get("widgets_values") or []):
            files = {rel: ids for rel, ids in files.items() if str(node["id"]) not in ids}
    if "tiny_models" in expect:  # the official file names the stand-in maker knows, and the sidecar's entries
        guessed = {rel for rel in files if standins.guess(rel) is not None}
        assert set(files) == set(expect["tiny_models"]) | guessed
        for rel, spec in expect["tiny_models"].items():
            kind, _ = standins.split(spec)
            assert rel.split("/")[0] == standins.FOLDERS[kind], f"{rel}: a {kind} stand-in belongs elsewhere"
    else:
        assert all(rel.startswith("checkpoints/") for rel in files), files


def test_standin_cache_writes_each_file_once(tmp_path, monkeypatch):
    monkeypatch.setenv("I2V_STANDIN_CACHE", str(tmp_path / "cache"))
    spec = {"kind": "wan_lora", "model": "wan22_a14b", "rank": 2}
    a, made_a = standins.make(tmp_path / "a", "loras/l.safetensors", spec)
    b, made_b = standins.make(tmp_path / "b", "loras/l.safetensors", spec)
    assert made_a > 0 and made_b == 0.0 and a.samefile(b)
    c, made_c = standins.make(tmp_path / "c", "loras/l.safetensors", {**spec, "seed": 9})
    assert made_c > 0 and not c.samefile(a)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    monkeypatch.setenv("I2V_STANDIN_CACHE", "off")
    d, made_d = standins.make(tmp_path / "d", "loras/l.safetensors", spec)
    assert made_d > 0 and not d.is_symlink() and d.stat().st_nlink == 1
    with pytest.raises(ValueError, match="unknown stand-in kind"):
        standins.make(tmp_path / "e", "x/y.safetensors", {"kind": "nope"})
    assert json.loads(json.dumps(standins.OFFICIAL))  # sidecar-friendly specs


# -- Wan 2.2 VAE: 705 M parameters, 2.8 GB in fp32 on the CPU; loaded once, after CLIP-H is freed ----------
@pytest.fixture(scope="module")
def wan22_vae(models):
    with torch.inference_mode():
        vae = _vae(VAE22)
    yield vae
    del vae
    _free()


def test_wan22_vae_standin_is_core_wan22_vae(wan22_vae):
    assert type(wan22_vae.first_stage_model).__module__ == "comfy.ldm.wan.vae2_2"
    assert tuple(wan22_vae.downscale_index_formula) == (4, 16, 16) and wan22_vae.latent_channels == 48
    z = wan22_vae.encode(wan.start_image(64, 32))
    assert tuple(z.shape) == (1, 48, 1, 2, 4) and torch.isfinite(z).all() and z.std() > 0


def test_wan22_ti2v_run(models, wan22_vae):
    _check_video(wan.run_ti2v(_unet(TI2V), wan22_vae, width=64, height=32, length=5), 5, 64, 32)


# -- EDG merging on Wan ------------------------------------------------------------------------------------
def test_edg_merging_schedule_and_bake_on_wan(models, tmp_path):
    """Task Vector (Wan's ``temporal`` preset = its self-attention), Apply Task Vectors (×1.5), EDG Experts, the
    Expert Schedule on Wan's own clock (t = σ·1000: the dynamics expert exactly while t > 900) and Bake, on two
    core Wan 2.2 MODELs of one architecture (the A14B stand-ins, two seeds: a base and its "fine-tune")."""
    from i2v_motion.comfy_bridge.hooks import WrappersMP
    from i2v_motion.experts import expert_schedule
    from i2v_motion.merging import apply_task_vectors, bake_model, edg_experts, make_task_vector

    base, ft = _unet(HIGH), _unet(LOW)
    b, f = loaded_weights(base), loaded_weights(ft)
    tv = make_task_vector(base, ft, "temporal")
    assert tv.keys and all(".self_attn." in k for k in tv.keys), tv.keys[:4]
    merged = apply_task_vectors(base, [tv], [1.5])
    m = loaded_weights(merged)
    for k, v in m.items():
        if k in tv:  # θ_base + 1.5·τ, rounded to the stored fp16
            want = (b[k].float() + 1.5 * (f[k].float() - b[k].float())).to(v.dtype)
            assert torch.allclose(v.float(), want.float(), rtol=2e-3, atol=2e-3), k
        else:
            assert torch.equal(v, b[k]), k
    assert base.patches == {} and ft.patches == {}  # inputs untouched

    # bake: core's own UNETLoader reads the file back as the merged model, bit for bit
    out = models / "diffusion_models" / "wan_merged_test.safetensors"
    try:
        bake_model(merged, str(out))
        assert _changed(loaded_weights(_unet(out.name)), m) == set()
    finally:
        out.unlink(missing_ok=True)

    # the schedule: which expert's weight the DiT runs with at each evaluation, against its timestep
    dyn, con, _ = edg_experts(base, ft, p=0.3)
    key = next(k for k in tv.keys if k.endswith(".weight"))
    w_dyn, w_con = loaded_weights(dyn)[key], loaded_weights(con)[key]
    assert not torch.equal(w_dyn, w_con)
    sched = expert_schedule([dyn, con], [900])
    seen = []

    def probe(executor, x, timesteps, *args, **kwargs):
        live = sched.model.get_parameter(key).detach()
        seen.append((float(timesteps.max()), "dyn" if torch.equal(live, w_dyn) else
                     "con" if torch.equal(live, w_con) else "?"))
        return executor(x, timesteps, *args, **kwargs)

    sched.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test.probe", probe)
    video = wan.run_i2v(sched, _vae(VAE21_NARROW), width=32, height=32, length=5, steps=6)
    _check_video(video, 5, 32, 32)
    assert {p for _, p in seen} == {"dyn", "con"}, seen  # both experts ran (shift 8, 6 steps: t 1000 … 615)
    assert all((p == "dyn") == (t > 900) for t, p in seen), seen
    _free()
