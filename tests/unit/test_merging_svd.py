"""Lazy merges on an SVD-architecture model built by ComfyUI's own model code (comfy.model_base.SVD_img2vid).

What is checked: merged weights equal the formulas (p = 0) when ComfyUI loads the model; DARE masks are
the pure-maths ones (so independent of load order), bit-identical across loads and across full vs
low-VRAM partial loading; a graph with base and merged models side by side leaves the base untouched;
merges stack with other patches; inputs are never mutated; bad inputs fail clearly; bakes equal the
lazy merge and carry their recipe.
"""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import comfy.model_management as mm
import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import nodes as comfy_nodes
from comfy_extras.nodes_model_merging import ModelMergeSimple
from support import reference
from i2v_motion.merging import (apply_task_vectors, bake_model, edg_experts, make_task_vector, ops,
                                select_keys)
from i2v_motion.merging.bake import StreamingSafetensorsWriter

from support.models import CPU, diffusion_keys, loaded_weights, stored, svd_config, tiny_svd  # noqa: F401


@pytest.fixture(scope="module")
def models():
    base = tiny_svd(0)
    return base, tiny_svd(1, perturb_of=0), tiny_svd(2, perturb_of=0)


# ------------------------------------------------------------------------------------------ exactness

@pytest.mark.parametrize("weights", [[-0.25], [1.0], [1.7], [0.6, -1.3]])
def test_task_arithmetic_equals_formula(models, weights):
    base, ft1, ft2 = models
    tvs = [make_task_vector(base, ft) for ft in (ft1, ft2)[: len(weights)]]
    b, f1, f2 = stored(base), stored(ft1), stored(ft2)
    merged = loaded_weights(apply_task_vectors(base, tvs, weights))
    fts = (f1, f2)
    for k in diffusion_keys(base):
        expect = b[k] + sum(w * (fts[i][k] - b[k]) for i, w in enumerate(weights))
        torch.testing.assert_close(merged[k], expect, rtol=0, atol=2e-6)
    assert torch.equal(merged["model_sampling.sigmas"], b["model_sampling.sigmas"])


def test_edg_experts_equal_formulas_p0_and_dare(models):
    base, ft, _ = models
    b, f = stored(base), stored(ft)
    dyn, con, tv = edg_experts(base, ft, p=0.0)
    wd, wc = loaded_weights(dyn), loaded_weights(con)
    assert len(tv) == len(diffusion_keys(base))
    for k in tv.keys:
        torch.testing.assert_close(wd[k], b[k] + 0.75 * 0.25 * (b[k] - f[k]), rtol=0, atol=2e-6)
        torch.testing.assert_close(wc[k], 1.0 * f[k] + 0.25 * (f[k] - b[k]), rtol=0, atol=2e-6)
    # with DARE (release defaults): per key exactly the pure-maths formula with the (seed, tag, key) mask
    dyn, con, tv = edg_experts(base, ft, seed=123, alpha_c=0.9)
    wd, wc = loaded_weights(dyn), loaded_weights(con)
    dropped = 0
    for k in tv.keys:
        torch.testing.assert_close(wd[k], reference.edg_dynamics(b[k], f[k], seed=123, key=k), rtol=0, atol=2e-6)
        torch.testing.assert_close(wc[k], reference.edg_control(b[k], f[k], alpha_c=0.9, seed=123, key=k), rtol=0, atol=5e-6)
        if b[k].ndim > 1:
            dropped += int((wd[k] == b[k]).sum())
        else:  # keep_1d: biases / norm gains get the full scaled delta
            torch.testing.assert_close(wd[k], b[k] + 0.75 * 0.25 * (b[k] - f[k]), rtol=0, atol=2e-6)
    n2d = sum(b[k].numel() for k in tv.keys if b[k].ndim > 1)
    assert abs(dropped / n2d - 0.7) < 0.01
    # the two experts' masks are independent
    k = next(k for k in tv.keys if b[k].numel() > 5000)
    m_dyn = wd[k] == b[k]
    m_con = (wc[k] - (0.9 * f[k])).abs() < 1e-7
    assert not torch.equal(m_dyn, m_con)


def test_filter_presets_restrict_the_merge(models):
    base, ft, _ = models
    b = stored(base)
    keys = diffusion_keys(base)
    temporal = set(select_keys(keys, "temporal"))
    assert temporal and all(("time_" in k) for k in temporal)
    assert any(".time_stack." in k for k in temporal) and any("time_mixer" in k for k in temporal)
    for preset, sel in (("temporal", temporal), ("spatial", set(keys) - temporal)):
        tv = make_task_vector(base, ft, preset)
        assert set(tv.keys) == sel
        w = loaded_weights(apply_task_vectors(base, [tv], [1.0]))
        for k in keys:
            if k in sel:
                assert not torch.equal(w[k], b[k]), k
            else:
                assert torch.equal(w[k], b[k]), k
    xattn = make_task_vector(base, ft, "image_cross_attention")
    assert xattn.keys and all(".attn2." in k for k in xattn.keys)
    custom = make_task_vector(base, ft, "custom", r"input_blocks\.1\.")
    assert custom.keys and all(k.startswith("diffusion_model.input_blocks.1.") for k in custom.keys)


def test_ties_equals_pure_maths(models):
    base, ft1, ft2 = models
    b, f1, f2 = stored(base), stored(ft1), stored(ft2)
    tvs = [make_task_vector(base, ft1), make_task_vector(base, ft2)]
    w = loaded_weights(apply_task_vectors(base, tvs, [0.8, 1.2], method="ties", density=0.3))
    for k in tvs[0].keys:
        expect = b[k] + ops.ties_merge([0.8 * (f1[k] - b[k]), 1.2 * (f2[k] - b[k])], 0.3)
        torch.testing.assert_close(w[k], expect, rtol=0, atol=2e-6)
    w = loaded_weights(apply_task_vectors(base, tvs, [0.8, 1.2], method="dare_ties", p=0.5, seed=4))
    for k in tvs[0].keys:
        v = [c * ops.dare(f[k] - b[k], 0.5, seed=4, key=k, tag=f"tv{i}")
             for i, (c, f) in enumerate(((0.8, f1), (1.2, f2)))]
        torch.testing.assert_close(w[k], b[k] + ops.ties_merge(v), rtol=0, atol=5e-6)


# ------------------------------------------------------------------------------------------ determinism

def _effective_partial(m: comfy.model_patcher.ModelPatcher, budget: int,
                       compute_dtype: torch.dtype | None = None) -> tuple[dict, set, set]:
    """Load partially (low VRAM) on the CPU; return effective weights (as comfy.ops casts them to
    ``compute_dtype``, default the storage dtype), keys behind LowVramPatch, and keys patched in place."""
    m.patch_model(CPU, lowvram_model_memory=budget)
    try:
        out, lowvram = {}, set()
        for name, mod in m.model.named_modules():
            for pname, p in mod.named_parameters(recurse=False):
                key = f"{name}.{pname}" if name else pname
                fns = getattr(mod, f"{pname}_function", None) or []
                lv = [f for f in fns if isinstance(f, comfy.model_patcher.LowVramPatch)]
                t = p.detach().to(compute_dtype if (lv and compute_dtype) else p.dtype, copy=True)
                for f in fns:
                    t = f(t)
                if lv:
                    lowvram.add(key)
                out[key] = t.clone()
        in_place = set(m.backup)
        return out, lowvram, in_place
    finally:
        m.unpatch_model(CPU)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_dare_bit_identical_across_loads_and_partial_loading(dtype):
    base, ft = tiny_svd(0, dtype), tiny_svd(1, dtype, perturb_of=0)
    dyn, _, tv = edg_experts(base, ft, seed=7)
    first = loaded_weights(dyn)
    second = loaded_weights(dyn.clone())
    # a fresh graph (new task vector, new patcher) with the same inputs
    dyn2, _, _ = edg_experts(base, ft, seed=7)
    third = loaded_weights(dyn2)
    store = {k: v.dtype for k, v in stored(base).items()}
    assert sum(store[k] == dtype for k in tv.keys) > 0.9 * len(tv.keys)
    for k in tv.keys:
        assert first[k].dtype == store[k]
        assert torch.equal(first[k], second[k]) and torch.equal(first[k], third[k]), k
    for compute in (None, torch.float32):  # fp16 storage computed in fp16 (GPU-like) or fp32 (CPU-like)
        partial, lowvram, in_place = _effective_partial(dyn, dyn.model_size() // 3, compute)
        assert len(lowvram) > 10 and len(in_place) > 10, (len(lowvram), len(in_place))
        assert set(tv.keys) <= lowvram | in_place
        for k in tv.keys:
            assert torch.equal(partial[k], first[k].to(partial[k].dtype)), k
    # a different seed gives different weights
    other = loaded_weights(edg_experts(base, ft, seed=8)[0])
    assert any(not torch.equal(other[k], first[k]) for k in tv.keys)


def _sample(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    context = torch.randn(1, 1, 64, generator=g)
    concat = torch.randn(1, 4, 8, 8, generator=g)
    cond = {"concat_latent_image": concat, "motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0}
    pos = [[context, dict(cond)]]
    neg = [[torch.zeros_like(context), {**cond, "concat_latent_image": torch.zeros_like(concat)}]]
    latent = {"samples": torch.zeros(3, 4, 8, 8)}
    out = comfy_nodes.common_ksampler(model, seed, 2, 2.5, "euler", "karras", pos, neg, latent, denoise=1.0)
    return out[0]["samples"]


def test_side_by_side_graph_leaves_base_output_unchanged(models):
    base, ft, _ = models
    before = stored(base)
    dyn, con, _ = edg_experts(base, ft)
    a1 = _sample(base)
    b = _sample(dyn)
    c = _sample(con)
    a2 = _sample(base)
    assert torch.isfinite(a1).all() and torch.isfinite(b).all()
    assert torch.equal(a1, a2)
    assert not torch.allclose(a1, b) and not torch.allclose(b, c)
    after = stored(base)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # a low-VRAM partial load runs the merged model too (weights bit-identical: see the test above;
    # comfy's cast-weights compute path may differ from the direct one in the last float bits)
    dyn_partial = dyn.clone()
    dyn_partial.patch_model(CPU, lowvram_model_memory=dyn.model_size() // 3)
    try:
        assert dyn_partial.model.model_lowvram
        x = torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(3))
        t = torch.full((3,), 0.5)
        kw = dict(c_crossattn=torch.randn(3, 1, 64, generator=torch.Generator().manual_seed(4)),
                  y=torch.zeros(3, 768), num_video_frames=3)
        with torch.no_grad():
            out_partial = dyn_partial.model.diffusion_model(x, t, context=kw["c_crossattn"], y=kw["y"],
                                                            num_video_frames=3, image_only_indicator=torch.zeros(1, 3))
    finally:
        dyn_partial.unpatch_model(CPU)
    dyn.patch_model(CPU)
    try:
        with torch.no_grad():
            out_full = dyn.model.diffusion_model(x, t, context=kw["c_crossattn"], y=kw["y"], num_video_frames=3,
                                                 image_only_indicator=torch.zeros(1, 3))
    finally:
        dyn.unpatch_model(CPU)
    torch.testing.assert_close(out_partial, out_full, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ composition

def test_inputs_are_not_mutated_and_weights_are_referenced(models):
    base, ft, _ = models
    b, f = stored(base), stored(ft)
    bp, fp = dict(base.patches), dict(ft.patches)
    uuid_b = base.patches_uuid
    tv = make_task_vector(base, ft)
    dyn, con, _ = edg_experts(base, ft)
    merged = apply_task_vectors(base, [tv], [2.0], method="dare", p=0.5)
    for m in (dyn, con, merged):
        loaded_weights(m)
    assert base.patches == bp == {} and ft.patches == fp and base.patches_uuid == uuid_b
    assert all(torch.equal(b[k], v) for k, v in stored(base).items())
    assert all(torch.equal(f[k], v) for k, v in stored(ft).items())
    # references, not copies
    k = tv.keys[0]
    assert tv.ft_refs[k].weight.data_ptr() == comfy.utils.get_attr(ft.model, k).data_ptr()
    assert tv.base_refs[k].weight.data_ptr() == comfy.utils.get_attr(base.model, k).data_ptr()
    assert dyn.model is base.model and len(dyn.patches) == len(tv.keys)


def test_stacks_with_lora_style_patches_and_core_merges(models):
    base, ft, other = models
    b, f, o = stored(base), stored(ft), stored(other)
    keys = diffusion_keys(base)
    # the fine-tune itself carries a patch: τ must see it
    ft_patched = ft.clone()
    k0 = "diffusion_model.input_blocks.0.0.weight"
    bump = torch.full_like(f[k0], 0.01)
    ft_patched.add_patches({k0: (bump,)})
    dyn, _, _ = edg_experts(base, ft_patched, p=0.0)
    # then a LoRA-style diff on the expert and a core ModelMergeSimple with another model on top
    diff_key = "diffusion_model.out.2.weight"
    diff = torch.full_like(b[diff_key], 0.5)
    stacked = dyn.clone()
    stacked.add_patches({diff_key: (diff,)}, 1.0)
    merged = ModelMergeSimple().merge(stacked, other, 0.75)[0]
    w = loaded_weights(merged)
    for k in keys:
        fk = f[k] + (bump if k == k0 else 0)
        dk = b[k] + 0.1875 * (b[k] - fk) + (diff if k == diff_key else 0)
        torch.testing.assert_close(w[k], 0.75 * dk + 0.25 * o[k], rtol=0, atol=3e-6)


# ------------------------------------------------------------------------------------------ bad input

def test_bad_inputs_fail_clearly(models, caplog):
    base, ft, _ = models
    wide = tiny_svd(5, channels=64)
    with pytest.raises(ValueError, match=r"shape mismatch .*for 579 key\(s\): diffusion_model\.time_embed\.0\.weight"):
        make_task_vector(base, wide)
    one_off = tiny_svd(1, perturb_of=0)
    comfy.utils.set_attr_param(one_off.model, "diffusion_model.out.2.weight", torch.zeros(4, 32, 3, 1))
    with pytest.raises(ValueError, match=r"for 1 key\(s\): diffusion_model\.out\.2\.weight \(4, 32, 3, 3\) vs "
                                         r"\(4, 32, 3, 1\)$"):
        make_task_vector(base, one_off)
    with pytest.raises(ValueError, match="selects no weight"):
        make_task_vector(base, ft, "resampler")
    with pytest.raises(ValueError, match="selects no weight"):
        make_task_vector(base, ft, "custom", "no_such_layer")
    for p in (-0.01, 1.0, 2.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            edg_experts(base, ft, p=p)
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            apply_task_vectors(base, [make_task_vector(base, ft)], [1.0], method="dare", p=p)
    with pytest.raises(ValueError, match="unknown merge method"):
        apply_task_vectors(base, [make_task_vector(base, ft)], [1.0], method="average")
    # non-finite weights in the fine-tune, named by key; nothing mutated
    bad = tiny_svd(1, perturb_of=0)
    key = "diffusion_model.middle_block.1.proj_in.weight"
    with torch.no_grad():
        comfy.utils.get_attr(bad.model, key)[0, 0] = float("nan")
        comfy.utils.get_attr(bad.model, "diffusion_model.out.2.bias")[1] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite .*fine-tune.*middle_block\.1\.proj_in\.weight") as e:
        edg_experts(base, bad)
    assert "out.2.bias" in str(e.value)
    assert base.patches == {}
    # keys in only one model: an error naming them, or (allow_partial) skipped with a warning naming them
    extra = tiny_svd(1, perturb_of=0)
    extra.model.diffusion_model.out.register_parameter("extra_scale", torch.nn.Parameter(torch.ones(3)))
    with pytest.raises(ValueError, match=r"only the fine-tune \(SVD_img2vid\) has 1, e\.g\. diffusion_model\.out\.extra_scale"):
        make_task_vector(base, extra)
    with caplog.at_level(logging.WARNING, logger="i2v_motion.merging"):
        tv = make_task_vector(base, extra, allow_partial=True)
    assert "diffusion_model.out.extra_scale" in caplog.text and "diffusion_model.out.extra_scale" not in tv.keys
    # a model of another architecture
    sd15 = comfy.supported_models.SD15({"model_channels": 32, "in_channels": 4, "out_channels": 4,
                                        "use_linear_in_transformer": False,
                                        "transformer_depth": [1, 1], "channel_mult": [1, 2], "num_res_blocks": [1, 1],
                                        "context_dim": 64, "num_head_channels": 16, "num_heads": -1,
                                        "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
                                        "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None,
                                        "image_size": 32})
    img = comfy.model_patcher.ModelPatcher(sd15.get_model({}), CPU, CPU)
    with pytest.raises(ValueError, match="different architectures"):
        make_task_vector(base, img)


# ------------------------------------------------------------------------------------------ bake

def test_streaming_writer_roundtrip(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b.bf16": torch.randn(7).to(torch.bfloat16), "c": torch.tensor(3.5),
               "d": torch.arange(6, dtype=torch.int64).reshape(2, 3), "e": torch.tensor([True, False, True]),
               "f": torch.zeros(0, 4), "g": torch.randn(4, 4).half().t()}
    path = str(tmp_path / "w.safetensors")
    with StreamingSafetensorsWriter(path, [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()],
                                    {"note": "x"}) as w:
        for k, v in tensors.items():
            w.write(k, v)
    back = load_file(path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    with safe_open(path, "pt") as f:
        assert f.metadata()["note"] == "x"
    with pytest.raises(ValueError, match="order/shape mismatch"):
        with StreamingSafetensorsWriter(str(tmp_path / "x.safetensors"), [("a", torch.float32, (2,))]) as w:
            w.write("a", torch.zeros(3))
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.safetensors.partial").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bake_equals_lazy_merge_and_records_recipe(tmp_path, dtype):
    base, ft = tiny_svd(0, dtype), tiny_svd(1, dtype, perturb_of=0)
    dyn, _, tv = edg_experts(base, ft, seed=99, preset="temporal")
    lazy = loaded_weights(dyn)
    path = str(tmp_path / "dyn.safetensors")
    summary = bake_model(dyn, path)
    baked = load_file(path)
    assert summary["tensors"] == len(baked)
    assert all(k.startswith("model.diffusion_model.") for k in baked)
    for k, v in lazy.items():
        if k.startswith("diffusion_model."):
            assert torch.equal(baked["model." + k], v), k
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    recipe = json.loads(meta["i2v_motion.recipe"])
    assert len(recipe) == 1
    r = recipe[0]
    assert (r["expert"], r["alpha_d"], r["beta_d"], r["p"], r["seed"]) == ("dynamics", 0.25, 0.75, 0.7, 99)
    assert r["task_vector"]["filter"] == {"preset": "temporal", "regex": ""}
    assert r["task_vector"]["keys"] == len(tv.keys)
    assert meta["i2v_motion.architecture"] == "svd"
    # bake converts dtype on request, and baking a merged model while it is loaded gives the same file
    mm.load_models_gpu([dyn])
    try:
        bake_model(dyn, str(tmp_path / "loaded.safetensors"))
    finally:
        mm.unload_all_models()
    again = load_file(str(tmp_path / "loaded.safetensors"))
    assert all(torch.equal(again[k], baked[k]) for k in baked)
    bake_model(dyn, str(tmp_path / "bf16.safetensors"), out_dtype="bf16")
    assert all(v.dtype == torch.bfloat16 for v in load_file(str(tmp_path / "bf16.safetensors")).values())


def test_bake_is_interruptible_and_leaves_no_file(tmp_path):
    base, ft = tiny_svd(0), tiny_svd(1, perturb_of=0)
    dyn, _, _ = edg_experts(base, ft)
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 20:
            raise mm.InterruptProcessingException()

    path = tmp_path / "x.safetensors"
    with pytest.raises(mm.InterruptProcessingException):
        bake_model(dyn, str(path), check_interrupt=interrupt)
    assert not path.exists() and not list(tmp_path.iterdir())
    progress = []
    bake_model(dyn, str(path), progress=lambda i, n: progress.append((i, n)))
    assert progress[-1][0] == progress[-1][1] == len(load_file(str(path)))
