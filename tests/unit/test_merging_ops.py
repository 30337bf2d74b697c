"""Pure merge maths: seeds, DARE statistics and determinism, TIES, EDG formulas, key filters."""
from __future__ import annotations

import pytest
import torch

from i2v_motion.merging import filters, ops
from support import reference


# ------------------------------------------------------------------------------------------ seeds / DARE

def test_key_seed_is_stable_and_separates_inputs():
    # a fixed value: BLAKE2b, not Python's per-process hash()
    assert ops.key_seed(0, "diffusion_model.out.2.weight", "edg.dynamics") == ops.key_seed(
        0, "diffusion_model.out.2.weight", "edg.dynamics")
    s = {ops.key_seed(0, "a"), ops.key_seed(1, "a"), ops.key_seed(0, "b"), ops.key_seed(0, "a", "t")}
    assert len(s) == 4
    import hashlib
    expect = int.from_bytes(hashlib.blake2b(b"7\x1fx\x1fk", digest_size=8).digest(), "little")
    assert ops.key_seed(7, "k", "x") == expect


@pytest.mark.parametrize("p", [0.1, 0.5, 0.7, 0.9])
def test_dare_keep_fraction_within_1_percent(p):
    m = ops.dare_keep_mask((2048, 2048), p, seed=3, key="diffusion_model.big.weight")
    keep = m.float().mean().item()
    assert abs(keep - (1 - p)) <= 0.01 * (1 - p), keep


def test_dare_is_unbiased():
    torch.manual_seed(0)
    delta = torch.randn(64, 128)
    p = 0.7
    acc = torch.zeros_like(delta)
    n = 1000
    for s in range(n):
        acc += ops.dare(delta, p, seed=s, key="k", keep_1d=False)
    mean = acc / n
    # per-element std of the estimator: |d|·sqrt(p/(1-p))/sqrt(n); check the bulk and the global sum
    rel = (mean - delta).abs() / (delta.abs() * (p / (1 - p)) ** 0.5 / n ** 0.5 + 1e-12)
    assert rel.median().item() < 1.0
    assert abs(mean.sum().item() - delta.sum().item()) < 0.01 * delta.abs().sum().item()
    # a single large draw: mean of the rescaled delta ≈ mean of the delta
    big = torch.full((2048, 1024), 0.5)
    out = ops.dare(big, p, seed=1, key="big", keep_1d=False)
    assert abs(out.mean().item() - 0.5) < 0.005
    assert set(torch.unique(out).tolist()) <= {0.0, torch.tensor(0.5 / (1 - p)).item()}


def test_dare_mask_depends_only_on_seed_tag_key_shape():
    a = ops.dare_keep_mask((64, 64), 0.5, 11, "x.weight", "tv0")
    # other keys drawn in between do not change it (no shared generator state)
    ops.dare_keep_mask((999,), 0.5, 11, "y.weight", "tv0")
    b = ops.dare_keep_mask((64, 64), 0.5, 11, "x.weight", "tv0")
    assert torch.equal(a, b)
    assert not torch.equal(a, ops.dare_keep_mask((64, 64), 0.5, 12, "x.weight", "tv0"))
    assert not torch.equal(a, ops.dare_keep_mask((64, 64), 0.5, 11, "z.weight", "tv0"))
    assert not torch.equal(a, ops.dare_keep_mask((64, 64), 0.5, 11, "x.weight", "tv1"))


def test_dare_inplace_matches_out_of_place_and_keep_1d():
    d = torch.randn(33, 17)
    a = ops.dare(d, 0.6, seed=5, key="k")
    b = ops.dare(d.clone(), 0.6, seed=5, key="k", inplace=True)
    assert torch.equal(a, b)
    bias = torch.randn(40)
    assert torch.equal(ops.dare(bias, 0.9, seed=1, key="b"), bias)  # keep_1d default: untouched
    dropped = ops.dare(bias, 0.9, seed=1, key="b", keep_1d=False)
    assert (dropped == 0).sum() > 20
    assert torch.equal(ops.dare(d, 0.0, seed=1, key="k"), d)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_drop_rate_outside_range_is_an_error(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ops.dare(torch.ones(4, 4), p, seed=0, key="k")


# ------------------------------------------------------------------------------------------ TIES

def test_trim_top_k():
    d = torch.tensor([[0.1, -5.0, 0.3], [2.0, -0.2, 0.0]])
    t = ops.trim_top_k(d, 2 / 6)
    assert torch.equal(t, torch.tensor([[0.0, -5.0, 0.0], [2.0, 0.0, 0.0]]))
    assert torch.equal(ops.trim_top_k(d, 1.0), d)
    with pytest.raises(ValueError):
        ops.trim_top_k(d, 0.0)


def test_ties_merge_elects_sign_and_takes_disjoint_mean():
    v1 = torch.tensor([1.0, -2.0, 3.0, 0.0])
    v2 = torch.tensor([3.0, 1.0, -1.0, 0.0])
    v3 = torch.tensor([-1.0, -4.0, 1.0, 2.0])
    out = ops.ties_merge([v1, v2, v3])
    # elem0: sum 3>0 → mean(1,3)=2; elem1: sum -5 → mean(-2,-4)=-3; elem2: sum 3 → mean(3,1)=2; elem3: 2
    assert torch.allclose(out, torch.tensor([2.0, -3.0, 2.0, 2.0]))
    # one task vector: TIES without trim is the identity
    assert torch.equal(ops.ties_merge([v1]), v1)


# ------------------------------------------------------------------------------------------ EDG formulas

def test_edg_formulas_literal_and_delta_forms_agree():
    torch.manual_seed(1)
    base, ft = torch.randn(64, 32), torch.randn(64, 32)
    tau = ft - base
    dyn = reference.edg_dynamics(base, ft, p=0.0)
    assert torch.allclose(dyn, base + 0.75 * 0.25 * (base - ft), atol=1e-6)
    assert torch.allclose(dyn, base + ops.edg_dynamics_delta_coeff(0.25, 0.75) * tau, atol=1e-6)
    con = reference.edg_control(base, ft, p=0.0)
    assert torch.allclose(con, ft + 0.25 * tau, atol=1e-6)
    # with DARE: the mask is the one of dare_keep_mask(seed, tag, key)
    m = ops.dare_keep_mask(base.shape, 0.7, 9, "k", "edg.dynamics")
    dyn = reference.edg_dynamics(base, ft, p=0.7, seed=9, key="k")
    assert torch.allclose(dyn, base + 0.75 * torch.where(m, 0.25 * (base - ft) / 0.3, 0.0), atol=1e-5)


# ------------------------------------------------------------------------------------------ filters

DC_KEYS = [
    "diffusion_model.input_blocks.0.0.weight",
    "diffusion_model.input_blocks.1.0.temopral_conv.conv1.1.weight",
    "diffusion_model.input_blocks.1.0.in_layers.2.weight",
    "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k_ip.weight",
    "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
    "diffusion_model.input_blocks.1.2.transformer_blocks.0.attn1.to_q.weight",
    "diffusion_model.init_attn.0.proj_in.weight",
    "diffusion_model.middle_block.1.proj_in.weight",
    "diffusion_model.middle_block.2.proj_in.weight",
    "diffusion_model.output_blocks.5.2.proj_out.weight",
    "diffusion_model.output_blocks.5.3.conv.weight",
    "diffusion_model.fps_embedding.0.weight",
    "diffusion_model.image_proj_model.latents",
    "diffusion_model.image_proj_model.layers.0.0.to_q.weight",
    "model_sampling.sigmas",
    "diffusion_model.betas",
]


def test_presets_on_dynamicrafter_keys():
    sel = lambda preset, rx="": set(filters.select_keys(DC_KEYS, preset, rx))  # noqa: E731
    assert filters.detect_architecture(DC_KEYS) == "dynamicrafter"
    assert "model_sampling.sigmas" not in sel("all") and "diffusion_model.betas" not in sel("all")
    assert len(sel("all")) == len(DC_KEYS) - 2
    assert sel("temporal") == {
        "diffusion_model.input_blocks.1.0.temopral_conv.conv1.1.weight",
        "diffusion_model.input_blocks.1.2.transformer_blocks.0.attn1.to_q.weight",
        "diffusion_model.init_attn.0.proj_in.weight",
        "diffusion_model.middle_block.2.proj_in.weight",
        "diffusion_model.output_blocks.5.2.proj_out.weight"}
    assert sel("spatial") == sel("all") - sel("temporal") - sel("resampler")
    assert sel("image_cross_attention") == {
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k_ip.weight"}
    assert sel("resampler") == {"diffusion_model.image_proj_model.latents",
                                "diffusion_model.image_proj_model.layers.0.0.to_q.weight"}
    assert sel("custom", r"middle_block\.\d+\.proj_in") == {"diffusion_model.middle_block.1.proj_in.weight",
                                                          "diffusion_model.middle_block.2.proj_in.weight"}
    assert sel("temporal", "middle") == {"diffusion_model.middle_block.2.proj_in.weight"}  # AND


def test_filter_errors():
    with pytest.raises(ValueError, match="unknown filter preset"):
        filters.select_keys(DC_KEYS, "motion")
    with pytest.raises(ValueError, match="needs a regular expression"):
        filters.select_keys(DC_KEYS, "custom", "")
    with pytest.raises(ValueError, match="invalid custom regular expression"):
        filters.select_keys(DC_KEYS, "custom", "attn2[")
