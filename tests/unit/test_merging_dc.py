"""Lazy merges on DynamiCrafter (tiny random checkpoints in the official layout, loaded by the pack's loader).

Exactness against the formulas (p = 0) over UNet *and* Resampler, DARE bit-identical across full and
low-VRAM partial loads, presets that name DynamiCrafter's parts, and bakes that the loader reads back
equal to the lazy merge.
"""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import comfy.model_patcher

from support import fixtures  # noqa: E402
from support.models import loaded_weights, sample_dc, stored  # noqa: E402
loader = pytest.importorskip("i2v_motion.backbones.loader")

from i2v_motion.merging import apply_task_vectors, bake_model, edg_experts, make_task_vector, ops  # noqa: E402

CPU = torch.device("cpu")
NO_ENCODERS = dict(with_vae=False, with_clip=False, with_clip_vision=False)


def load(path: str, dtype=torch.float32) -> comfy.model_patcher.ModelPatcher:
    m = loader.load_dynamicrafter(path, dtype=dtype).model
    # ComfyUI's patch/unpatch round trip re-wraps weights as requires_grad=False Parameters, and PyTorch
    # picks a different Conv1d kernel for weights that require grad (last-bit differences). Start from
    # the state every later load has, so "unchanged" can be checked bit for bit.
    m.model.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("dc_merge")
    return {
        "base": fixtures.make_tiny_checkpoint(str(d / "base.safetensors"), seed=0, **NO_ENCODERS),
        "ft": fixtures.make_tiny_checkpoint(str(d / "ft.safetensors"), seed=1, **NO_ENCODERS),
        "base256": fixtures.make_tiny_checkpoint(str(d / "b256.safetensors"), variant="256", seed=0, **NO_ENCODERS),
        "ft256": fixtures.make_tiny_checkpoint(str(d / "f256.safetensors"), variant="256", seed=1, **NO_ENCODERS),
        "dir": d,
    }


@pytest.fixture(scope="module")
def dc(ckpts):
    return load(ckpts["base"]), load(ckpts["ft"])


def test_edg_experts_exact_on_unet_and_resampler(dc):
    base, ft = dc
    b, f = stored(base), stored(ft)
    dyn, con, tv = edg_experts(base, ft, p=0.0)
    assert "diffusion_model.image_proj_model.latents" in tv.keys
    assert any(k.startswith("diffusion_model.input_blocks.") for k in tv.keys)
    wd, wc = loaded_weights(dyn), loaded_weights(con)
    for k in tv.keys:
        torch.testing.assert_close(wd[k], b[k] + 0.1875 * (b[k] - f[k]), rtol=0, atol=3e-6)
        torch.testing.assert_close(wc[k], f[k] + 0.25 * (f[k] - b[k]), rtol=0, atol=3e-6)
    # the Resampler's latents are a parameter of a non-leaf module, which ComfyUI's loader skips:
    # the merge applies it anyway, and unloading restores the base
    k = "diffusion_model.image_proj_model.latents"
    assert not torch.equal(wd[k], b[k])
    assert all(torch.equal(v, b[n]) for n, v in stored(base).items())


def test_task_arithmetic_and_dare_on_dc(dc):
    base, ft = dc
    b, f = stored(base), stored(ft)
    tv = make_task_vector(base, ft)
    w = loaded_weights(apply_task_vectors(base, [tv], [-0.25]))
    for k in tv.keys:
        torch.testing.assert_close(w[k], b[k] - 0.25 * (f[k] - b[k]), rtol=0, atol=3e-6)
    w = loaded_weights(apply_task_vectors(base, [tv], [1.5], method="dare", p=0.6, seed=3, keep_1d=False))
    kept = total = 0
    for k in tv.keys:
        expect = b[k] + 1.5 * ops.dare(f[k] - b[k], 0.6, seed=3, key=k, tag="tv0", keep_1d=False)
        torch.testing.assert_close(w[k], expect, rtol=0, atol=5e-6)
        kept += int((w[k] != b[k]).sum())
        total += b[k].numel()
    assert abs(kept / total - 0.4) < 0.01


def test_presets_name_dynamicrafter_parts(dc):
    base, ft = dc
    keys = {p: set(make_task_vector(base, ft, p).keys) for p in
            ("all", "temporal", "spatial", "image_cross_attention", "resampler")}
    assert keys["temporal"] and all(("temopral_conv" in k) or k.startswith("diffusion_model.init_attn.")
                                    or ".2." in k for k in keys["temporal"])
    assert any("temopral_conv" in k for k in keys["temporal"])
    assert any(k.startswith("diffusion_model.init_attn.") for k in keys["temporal"])
    assert any(k.startswith("diffusion_model.middle_block.2.") for k in keys["temporal"])
    assert not any(k.startswith("diffusion_model.middle_block.1.") for k in keys["temporal"])
    assert keys["resampler"] == {k for k in keys["all"] if k.startswith("diffusion_model.image_proj_model.")}
    assert keys["spatial"] == keys["all"] - keys["temporal"] - keys["resampler"]
    assert keys["image_cross_attention"] and all(".attn2.to_k_ip." in k or ".attn2.to_v_ip." in k
                                                 for k in keys["image_cross_attention"])
    # only the selected part changes
    b = stored(base)
    w = loaded_weights(apply_task_vectors(base, [make_task_vector(base, ft, "resampler")], [1.0]))
    for k in keys["all"]:
        assert torch.equal(w[k], b[k]) != (k in keys["resampler"]), k


def test_dare_bit_identical_full_vs_partial_fp16(ckpts):
    base, ft = load(ckpts["base"], torch.float16), load(ckpts["ft"], torch.float16)
    dyn, _, tv = edg_experts(base, ft, seed=11)
    full = loaded_weights(dyn)
    assert full["diffusion_model.input_blocks.1.1.proj_in.weight"].dtype == torch.float16
    dyn.patch_model(CPU, lowvram_model_memory=dyn.model_size() // 3)
    try:
        assert dyn.model.model_lowvram
        n_lowvram = 0
        for name, mod in dyn.model.named_modules():
            for pname, p in mod.named_parameters(recurse=False):
                key = f"{name}.{pname}"
                if key not in tv:
                    continue
                fns = getattr(mod, f"{pname}_function", None) or []
                if fns:
                    n_lowvram += 1
                    for compute in (torch.float16, torch.float32):
                        t = p.detach().to(compute, copy=True)
                        for fn in fns:
                            t = fn(t)
                        assert torch.equal(t, full[key].to(compute)), key
                else:
                    assert torch.equal(p.detach(), full[key]), key
        assert n_lowvram > 10
    finally:
        dyn.unpatch_model(CPU)


def test_bake_loads_back_with_pack_loader_and_equals_lazy(dc, ckpts):
    base, ft = dc
    dyn, con, tv = edg_experts(base, ft, seed=5, beta_c=0.4)
    for name, expert in (("dyn", dyn), ("con", con)):
        lazy = loaded_weights(expert)
        path = str(ckpts["dir"] / f"{name}.safetensors")
        bake_model(expert, path)
        names = set(load_file(path))
        assert "image_proj_model.latents" in names and "model.diffusion_model.out.2.weight" in names
        assert not any(n.startswith("model.diffusion_model.image_proj_model.") for n in names)
        back = loader.load_dynamicrafter(path, dtype=torch.float32).model
        got = stored(back)
        for k, v in lazy.items():
            if k.startswith("diffusion_model."):
                assert torch.equal(got[k], v), k
        with safe_open(path, "pt") as f:
            recipe = json.loads(f.metadata()["i2v_motion.recipe"])
        assert recipe[0]["expert"] == ("dynamics" if name == "dyn" else "control")
        assert recipe[0]["seed"] == 5 and recipe[0]["p"] == 0.7


def test_256_alpha_and_cross_variant_keys(ckpts, caplog):
    b256, f256 = load(ckpts["base256"]), load(ckpts["ft256"])
    b, f = stored(b256), stored(f256)
    dyn, _, tv = edg_experts(b256, f256, p=0.0)
    alpha = [k for k in tv.keys if k.endswith("attn2.alpha")]
    assert alpha
    w = loaded_weights(dyn)
    for k in alpha:  # a 0-d parameter on a non-leaf module
        torch.testing.assert_close(w[k], b[k] + 0.1875 * (b[k] - f[k]), rtol=0, atol=1e-6)
        assert not torch.equal(w[k], b[k])
    b512 = load(ckpts["base"])
    # another variant is an error naming both sides, unless allow_partial (then the skipped keys are reported)
    with pytest.raises(ValueError, match=r"DynamiCrafter 512 .*DynamiCrafter 256|v-prediction.*eps-prediction"):
        make_task_vector(b512, f256)
    with caplog.at_level(logging.WARNING, logger="i2v_motion.merging"):
        tv = make_task_vector(b512, f256, allow_partial=True)
    assert "attn2.alpha" in caplog.text and not any(k.endswith("attn2.alpha") for k in tv.keys)
    assert len(tv.info["skipped_keys"]) == 16 and all(k.endswith("attn2.alpha") for k in tv.info["skipped_keys"])


def test_dynamicrafter_vs_svd_is_an_error(dc):
    from support.models import tiny_svd  # noqa: E402  (same folder)

    base, _ = dc
    with pytest.raises(ValueError, match="different architectures"):
        make_task_vector(base, tiny_svd(0))
    assert base.patches == {}


def test_side_by_side_dc_graph_leaves_base_output_unchanged(dc):
    base, ft = dc
    dyn, con, _ = edg_experts(base, ft)
    a1 = sample_dc(base)
    d = sample_dc(dyn)
    c = sample_dc(con)
    a2 = sample_dc(base)
    assert torch.isfinite(a1).all() and torch.isfinite(d).all() and torch.isfinite(c).all()
    assert torch.equal(a1, a2)
    assert not torch.allclose(a1, d) and not torch.allclose(d, c)
    assert base.patches == {}
