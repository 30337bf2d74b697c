"""Merges, expert schedule, layout, official sampler and bake on the device ComfyUI picks (``-m gpu``).

In CI that device is the CPU; ``tools/gpu_check.py`` runs these same tests on CUDA with dynamic VRAM on
(``ModelPatcherDynamic``, the real thing: the pack's loader builds ``CoreModelPatcher``) and off. Every
model goes through ComfyUI's model management, so on a GPU they take the path users' runs take.
Tolerances depend on the dtype ComfyUI picks for the device (fp32 on CPU: exact or float noise; fp16 on
GPUs). Measured values go to ``I2V_METRICS`` (a JSON file) when set, for the GPU check's report.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

import comfy.model_management as mm
import comfy.samplers
import nodes as comfy_nodes
from support import fixtures
from i2v_motion.backbones.loader import load_dynamicrafter
from i2v_motion.backbones.sampling import sample_dynamicrafter_ddim, trailing_sigmas
from i2v_motion.comfy_bridge.patchers import is_dynamic
from i2v_motion.merging import bake_model, edg_experts
from i2v_motion.experts.schedule import expert_schedule

pytestmark = pytest.mark.gpu
NO_ENCODERS = dict(with_vae=False, with_clip=False, with_clip_vision=False)
from support.models import CFG, SEED, STEPS, dc_cond, ksample  # noqa: E402


def record(name: str, value) -> None:
    path = os.environ.get("I2V_METRICS")
    print(f"[metric] {name}: {value}")
    if not path:
        return
    data = json.loads(open(path).read()) if os.path.exists(path) else {}
    data[name] = value
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / max(1e-6, float(b.float().abs().max())))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("device_runs")
    return (fixtures.make_tiny_checkpoint(str(d / "base.safetensors"), seed=0, **NO_ENCODERS),
            fixtures.make_tiny_checkpoint(str(d / "ft.safetensors"), seed=1, **NO_ENCODERS), d)


@pytest.fixture(scope="module")
def models(ckpts):
    """Base and fine-tune through the pack's loader with ComfyUI's own choice of dtype and patcher."""
    base, ft = load_dynamicrafter(ckpts[0]).model, load_dynamicrafter(ckpts[1]).model
    import comfy_inproc

    record("setup", {k: comfy_inproc.STATE.get(k) for k in ("comfy_version", "device", "dynamic_vram")})
    record("device", str(mm.get_torch_device()))
    record("weight_dtype", str(base.model.get_dtype()))
    record("patcher", type(base).__name__ + (" (dynamic VRAM)" if is_dynamic(base) else ""))
    return base, ft


_cond, _ksampler = dc_cond, ksample  # tests/support/models.py: the same small conditioning and KSampler run


def _split(a, b, k: int, cond) -> torch.Tensor:
    pos, neg, latent = cond
    lat = comfy_nodes.KSamplerAdvanced().sample(a, "enable", SEED, STEPS, CFG, "euler", "simple", pos, neg, latent,
                                                0, k, "enable")[0]
    return comfy_nodes.KSamplerAdvanced().sample(b, "disable", SEED, STEPS, CFG, "euler", "simple", pos, neg, lat,
                                                 k, 10000, "disable")[0]["samples"]


def _tol(model) -> float:
    return 1e-4 if model.model.get_dtype() == torch.float32 else 2e-2


def test_merged_model_samples_like_its_bake(models, ckpts):
    """A lazily merged EDG expert samples like its baked file loaded fresh (merge patches applied the way this
    device loads them: full load, or dynamic VRAM's per-module patch slots)."""
    base, ft = models
    dyn, _, tv = edg_experts(base, ft, p=0.5, seed=2)
    cond = _cond()
    lazy = _ksampler(dyn, cond)
    path = str(ckpts[2] / "dyn_baked.safetensors")
    dev = mm.get_torch_device()
    bake_model(dyn, path, device=dyn.load_device if dev.type != "cpu" else "cpu")
    baked = load_dynamicrafter(path, dtype=base.model.get_dtype()).model
    out = _ksampler(baked, cond)
    plain = _ksampler(base, cond)
    d, d_base = _rel(lazy, out), _rel(plain, out)
    record("merge_vs_bake_sampling_rel_diff", d)
    assert torch.isfinite(lazy).all()
    assert d <= _tol(base), d
    assert d_base > 10 * max(d, 1e-6)  # the merge changed the result


def test_merge_weights_device_vs_cpu(models):
    """Merged weights computed on the device equal the CPU's (DARE masks are drawn on the CPU per key)."""
    base, ft = models
    dyn, _, tv = edg_experts(base, ft, p=0.7, seed=3)
    spec = dyn.patches[tv.keys[0]][0][1].spec
    dev = mm.get_torch_device()
    worst = 0.0
    for key in tv.keys[:: max(1, len(tv.keys) // 40)]:
        a = spec.merged_delta(key, dev).cpu()
        b = spec.merged_delta(key, "cpu")
        worst = max(worst, float((a - b).abs().max()))
    record("merge_delta_device_vs_cpu_max_abs", worst)
    assert worst <= 1e-5


def test_schedule_matches_split_sampling(models):
    """The scheduled MODEL equals sampling the first steps with the dynamics expert and the rest with the
    control expert; a second run is identical (nothing patched twice); the experts are unchanged after it."""
    base, ft = models
    dyn, con, _ = edg_experts(base, ft, p=0.5, seed=4)
    cond = _cond(1)
    before = _ksampler(dyn, cond)
    sched = expert_schedule([dyn, con], [500])
    ms = sched.get_model_object("model_sampling")
    sig = comfy.samplers.calculate_sigmas(ms, "simple", STEPS)
    k = sum(int(ms.timestep(s.reshape(1))) > 500 for s in sig[:-1])
    one = _ksampler(sched, cond)
    two = _ksampler(sched, cond)
    ref = _split(dyn, con, k, cond)
    through = _split(sched, sched, k, cond)  # the same split, both halves through the scheduled MODEL
    after = _ksampler(dyn, cond)
    d, d_split = _rel(one, ref), _rel(through, ref)
    record("schedule_vs_split_rel_diff", d)
    record("schedule_split_vs_expert_split_rel_diff", d_split)
    record("schedule_rerun_max_abs", float((one - two).abs().max()))
    assert torch.isfinite(one).all()
    # split the same way, the scheduled MODEL runs exactly the experts' weights: equal up to kernel noise
    assert d_split <= (0.0 if base.model.get_dtype() == torch.float32 and one.device.type == "cpu" else 1e-3), d_split
    # one run vs two samplers: the latent's re-entry round-off between the samplers, amplified by the random
    # tiny UNet (1e-4…1e-3 relative on the CPU), is the only difference
    assert d <= 10 * _tol(base), d
    assert torch.equal(one, two)
    assert torch.equal(before, after)
    assert _rel(before, one) > 10 * max(d, 1e-6)  # the schedule changed the result


def test_official_sampler_device_matches_cpu(ckpts):
    """The official DDIM-trailing sampler (guidance rescale + dynamic rescale) on the device agrees with the CPU,
    where it matches the official implementation (test_dynamicrafter_parity)."""
    pos, neg, latent = _cond(2)
    noise = torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(5))
    outs = {}
    for where in ("device", "cpu"):
        m = load_dynamicrafter(ckpts[0], dtype=torch.float32).model
        if where == "cpu":
            m.load_device = torch.device("cpu")
        guider = comfy.samplers.CFGGuider(m)
        guider.set_conds(pos, neg)
        guider.set_cfg(CFG)
        sampler = comfy.samplers.KSAMPLER(sample_dynamicrafter_ddim,
                                          extra_options={"eta": 0.0, "guidance_rescale": 0.7, "base_scale": 0.7})
        sigmas = trailing_sigmas(m.get_model_object("model_sampling"), 10)
        outs[where] = guider.sample(noise, torch.zeros_like(noise), sampler, sigmas, seed=0).cpu()
        mm.unload_all_models()
    err = float((outs["device"] - outs["cpu"]).abs().max())
    record("official_sampler_device_vs_cpu_max_abs", err)
    assert torch.isfinite(outs["device"]).all()
    assert err <= 1e-3


def test_layout_masked_denoise_on_device():
    """Layout masked denoising with the guide as the prediction follows the boxes on this device (oracle vIoU)."""
    import support.oracle as P

    base = P.tiny_model()
    base.load_device = mm.get_torch_device()
    r = P.Run("two_boats")
    model, latent = r.masked(P.predicting(base, r.g))
    out = P.sample(model, latent).cpu()
    rep = r.evaluate(out)
    record("layout_two_boats_viou50", rep["viou50"])
    record("layout_two_boats_psnr_outside", rep["psnr_outside_masks"])
    assert rep["viou50"] >= 0.9
    assert rep["psnr_outside_masks"] >= 40.0


def test_bake_on_device_equals_cpu_bake(models, ckpts):
    """A bake computed on the device holds what a full load there computes; it equals the CPU bake wherever the
    device computes patches in float32 (where it uses fp16, the difference is reported)."""
    base, ft = models
    _, con, tv = edg_experts(base, ft, p=0.5, seed=6)
    dev = mm.get_torch_device()
    pa, pb = str(ckpts[2] / "con_dev.safetensors"), str(ckpts[2] / "con_cpu.safetensors")
    bake_model(con, pa, device=dev)
    bake_model(con, pb, device="cpu")
    a, b = load_file(pa), load_file(pb)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    record("bake_device_vs_cpu_max_abs", worst)
    from i2v_motion.comfy_bridge.probes import patch_compute_dtype

    if patch_compute_dtype(dev) == torch.float32:
        assert worst == 0.0
    else:
        assert worst <= 1e-2
