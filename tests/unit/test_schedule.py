"""Expert schedule (EDG stage 3): one MODEL switching experts by noise level, on the tiny DynamiCrafter.

What is checked: the scheduled model equals sampling the first steps with expert A and the rest with
expert B through two KSamplerAdvanced nodes (euler) and through SamplerCustomAdvanced with split sigmas
(the official DDIM-trailing sampler); fraction switch points; three phases; a generic pair (base vs
base + LoRA-style patches) and LoRAs added after the schedule; the switched weights are bit-identical to
loading the other expert, fully and under low-VRAM partial loading (LowVramPatch); an interrupted run
leaves nothing in the wrong phase; the inputs are never mutated; the soft variant's formula; clear errors.
"""
from __future__ import annotations

import pytest
import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import nodes as comfy_nodes
from comfy_extras.nodes_custom_sampler import (CFGGuider, Noise_EmptyNoise, Noise_RandomNoise,
                                               SamplerCustomAdvanced)
from i2v_motion.backbones.loader import build_model
from i2v_motion.backbones.sampling import sample_dynamicrafter_ddim, trailing_sigmas
from i2v_motion.comfy_bridge.patchers import ensure_skipped_params_patched
from i2v_motion.merging.patches import apply_task_vectors, edg_experts
from i2v_motion.comfy_bridge.sampling import ddpm_timestep
from i2v_motion.experts.schedule import (SCHEDULE_KEY, ScheduleRun, check_points, expert_schedule, get_schedule,
                                         parse_points)
from i2v_motion.nodes.backbone import DynamiCrafterImageToVideo
from i2v_motion.nodes.schedule import ExpertSchedule, ExpertScheduleMulti
from support.models import loaded_weights

CPU = torch.device("cpu")
W, H, T = 64, 64, 2
STEPS = 6
CFG = 7.5
SEED = 3
MAX_DIFF: dict[str, float] = {}


def _out(node_output):
    return node_output.result if hasattr(node_output, "result") else node_output


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def experts(tiny_dc):
    """base, a perturbed fine-tune (separately loaded), EDG dynamics / control experts over the base."""
    base = tiny_dc.model
    sd = base.model.diffusion_model.state_dict()
    g = torch.Generator().manual_seed(5)
    ft = build_model({k: v + 0.05 * torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v
                      for k, v in sd.items()}, "512")
    dyn, con, tv = edg_experts(base, ft, p=0.5, seed=1)
    return base, ft, dyn, con, tv


@pytest.fixture(scope="module")
def cond(tiny_dc):
    pos = comfy_nodes.CLIPTextEncode().encode(tiny_dc.clip, "a boat on a lake, camera zooms in")[0]
    neg = comfy_nodes.CLIPTextEncode().encode(tiny_dc.clip, "")[0]
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 64, 64, 3, generator=g)
    return _out(DynamiCrafterImageToVideo.execute(pos, neg, tiny_dc.vae, tiny_dc.clip_vision, image, W, H, T, 24))


def _k_for(model, steps: int, switch: float) -> int:
    """Steps of ComfyUI's 'simple' schedule (what the KSampler runs here use) whose DDPM timestep is above ``switch``."""
    ms = model.get_model_object("model_sampling")
    sig = comfy.samplers.calculate_sigmas(ms, "simple", steps)
    return sum(int(ms.timestep(s.reshape(1))) > switch for s in sig[:-1])


def _ksampler(model, cond, steps=STEPS, sampler="euler"):
    pos, neg, latent = cond
    return comfy_nodes.KSampler().sample(model, SEED, steps, CFG, sampler, "simple", pos, neg, latent)[0]["samples"]


def _split(models, ks, cond, steps=STEPS, sampler="euler"):
    """KSamplerAdvanced chain: models[i] runs steps ks[i-1]..ks[i] (leftover noise kept in between)."""
    pos, neg, latent = cond
    bounds = [0, *ks, 10000]
    for i, m in enumerate(models):
        last = i == len(models) - 1
        latent = comfy_nodes.KSamplerAdvanced().sample(
            m, "enable" if i == 0 else "disable", SEED, steps, CFG, sampler, "simple", pos, neg, latent,
            bounds[i], bounds[i + 1], "disable" if last else "enable")[0]
    return latent["samples"]


def _record(name: str, a: torch.Tensor, b: torch.Tensor) -> float:
    d = float((a - b).abs().max())
    MAX_DIFF[name] = d
    print(f"[max abs diff] {name}: {d:.3g} (|x| max {float(a.abs().max()):.3g})")
    return d


def _tol(a: torch.Tensor) -> float:
    """Float tolerance: a split re-enters the latent through process_latent_out/in (÷/× 0.18215), whose
    float32 round-off the random tiny UNet amplifies (the same split of one model differs from its full
    run by the same order, see test_euler_equals_two_ksampler_advanced)."""
    return 1e-4 * max(1.0, float(a.abs().max()))


def _state(m) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.model.diffusion_model.state_dict().items()}


def _patch_snapshot(m) -> dict:
    return {"patches": {k: [id(p) for p in v] for k, v in m.patches.items()}, "uuid": m.patches_uuid,
            "options": repr(m.model_options), "wrappers": repr(m.wrappers), "attachments": dict(m.attachments),
            "callbacks": repr(m.callbacks)}


# ------------------------------------------------------------------------------------------ phases

def test_phase_boundaries(experts):
    """Timestep unit: the first expert while t > switch (the release's ``t > T``): with 50 trailing steps,
    steps 1–25 (t 999…519) and 26–50 (t 499…19). Fraction unit: round(f·steps) first steps."""
    base, ft, dyn, con, tv = experts
    ms = base.get_model_object("model_sampling")
    sched = expert_schedule([dyn, con], [500])
    run = ScheduleRun(sched, get_schedule(sched))

    def sig(t: float) -> torch.Tensor:
        return ms.sigma(torch.tensor([float(t)]))

    assert ddpm_timestep(ms, sig(500)) == 500.0
    assert [run.phase_for(sig(t), ms, None) for t in (999, 519, 501, 500, 499, 0)] == [0, 0, 0, 1, 1, 1]
    sigmas = trailing_sigmas(ms, 50)
    assert [run.phase_for(s.reshape(1), ms, sigmas) for s in sigmas[:-1]] == [0] * 25 + [1] * 25
    frac = expert_schedule([dyn, con], [0.3], unit="fraction")
    rf = ScheduleRun(frac, get_schedule(frac))
    s10 = trailing_sigmas(ms, 10)
    assert [rf.phase_for(s.reshape(1), ms, s10) for s in s10[:-1]] == [0] * 3 + [1] * 7
    three = expert_schedule([dyn, con, base], [750, 250])
    r3 = ScheduleRun(three, get_schedule(three))
    assert [r3.phase_for(sig(t), ms, None) for t in (999, 751, 750, 251, 250, 0)] == [0, 0, 1, 1, 2, 2]
    # continuous schedules (EDM-style models): DDPM-equivalent t from percent_to_sigma, monotone, in [0, 999]
    edm = comfy.model_sampling.ModelSamplingContinuousEDM()
    ts = [ddpm_timestep(edm, torch.tensor([s])) for s in (float(edm.sigma_max), 10.0, 1.0, 0.1, float(edm.sigma_min))]
    assert ts == sorted(ts, reverse=True) and abs(ts[0] - 999) < 0.01 and abs(ts[-1]) < 0.01


# ------------------------------------------------------------------------------------------ equivalence

def test_euler_equals_two_ksampler_advanced(experts, cond):
    base, ft, dyn, con, tv = experts
    k = _k_for(base, STEPS, 500)
    assert 0 < k < STEPS
    sched = _out(ExpertSchedule.execute(dyn, con, "timestep", 500.0, 0.5, "hard"))[0]
    full = _ksampler(sched, cond)
    split = _split([dyn, con], [k], cond)
    assert _record("euler, KSampler(schedule) vs KSamplerAdvanced A→B", full, split) <= _tol(full)
    # same split through the scheduled model: the weights after the switch are exactly expert B's
    sched_split = _split([sched, sched], [k], cond)
    assert _record("euler, KSamplerAdvanced(schedule)×2 vs KSamplerAdvanced A→B", sched_split, split) == 0.0
    # the float noise of a split alone: one model, full run vs two KSamplerAdvanced
    only_a = _ksampler(dyn, cond)
    _record("euler, baseline: KSampler(A) vs KSamplerAdvanced A→A", only_a, _split([dyn, dyn], [k], cond))
    # and the schedule does change something
    assert float((full - only_a).abs().max()) > 100 * _tol(full)


def test_official_ddim_trailing_equals_split_sigmas(experts, cond):
    base, ft, dyn, con, tv = experts
    pos, neg, latent = cond
    sampler = comfy.samplers.KSAMPLER(sample_dynamicrafter_ddim,
                                      extra_options={"eta": 0.0, "guidance_rescale": 0.7, "base_scale": 0.7})
    sigmas = trailing_sigmas(base.get_model_object("model_sampling"), STEPS)
    k = _k_for(base, STEPS, 500)
    sched = expert_schedule([dyn, con], [500])

    def run(model, sig, noise, lat):
        guider = _out(CFGGuider.execute(model, pos, neg, CFG))[0]
        return _out(SamplerCustomAdvanced.execute(noise, guider, sampler, sig, lat))[0]

    full = run(sched, sigmas, Noise_RandomNoise(SEED), latent)["samples"]
    first = run(dyn, sigmas[:k + 1], Noise_RandomNoise(SEED), latent)
    split = run(con, sigmas[k:], Noise_EmptyNoise(), first)["samples"]
    assert _record("DDIM-trailing (official), SamplerCustomAdvanced(schedule) vs split sigmas A→B", full, split) \
        <= _tol(full)


def test_fraction_unit_and_three_phases(experts, cond):
    base, ft, dyn, con, tv = experts
    sched = _out(ExpertSchedule.execute(dyn, con, "fraction", 500.0, 0.34, "hard"))[0]
    k = int(0.34 * STEPS + 0.5)
    full = _ksampler(sched, cond)
    assert _record("euler, fraction 0.34", full, _split([dyn, con], [k], cond)) <= _tol(full)

    mid = apply_task_vectors(base, [tv], [0.5])  # a third expert over the same base
    sched3 = _out(ExpertScheduleMulti.execute(dyn, mid, "timestep", "700, 300", expert_3=con))[0]
    ks = [_k_for(base, STEPS, 700), _k_for(base, STEPS, 300)]
    assert ks[0] < ks[1]
    full3 = _ksampler(sched3, cond)
    assert _record("euler, three experts at t 700 / 300", full3, _split([dyn, mid, con], ks, cond)) <= _tol(full3)


def test_generic_pair_and_lora_after_schedule(experts, cond):
    """Base vs base + diff patches (keys unpatched in phase 1, incl. the Resampler); a LoRA-style patch added
    downstream of the schedule applies in both phases."""
    base, *_ = experts
    params = dict(base.model.named_parameters())
    keys = [k for k in params if k.startswith("diffusion_model.") and
            ("image_proj_model" in k or "attn2" in k or "temopral_conv" in k)]
    assert any("image_proj_model.latents" in k for k in keys)
    g = torch.Generator().manual_seed(9)
    a = base.clone()
    b = base.clone()
    b.add_patches({k: (0.2 * torch.randn(params[k].shape, generator=g),) for k in keys}, 1.0)
    # ComfyUI's loader skips parameters of non-leaf modules (the Resampler's latents); the pack's ON_LOAD
    # callback patches them, so the reference loads B completely too
    ensure_skipped_params_patched(b)
    lora_key = next(k for k in params if k.endswith("out.2.weight"))
    lora = {lora_key: (0.1 * torch.randn(params[lora_key].shape, generator=g),)}
    sched = expert_schedule([a, b], [500])
    sched_lora = sched.clone()
    sched_lora.add_patches(lora, 1.0)
    a_lora, b_lora = a.clone(), b.clone()
    a_lora.add_patches(lora, 1.0)
    b_lora.add_patches(lora, 1.0)
    k = _k_for(base, STEPS, 500)
    full = _ksampler(sched_lora, cond)
    assert not any(k_ in base.backup for k_ in keys)  # this run's own backup records are gone again
    assert _record("euler, base vs base+patches, LoRA after the schedule", full,
                   _split([a_lora, b_lora], [k], cond)) <= _tol(full)


# ------------------------------------------------------------------------------------------ weights

def _effective(m) -> tuple[dict[str, torch.Tensor], set, set]:
    """Weights as forward passes see them (LowVramPatch applied), keys behind LowVramPatch, keys in backup."""
    out, lowvram = {}, set()
    for name, mod in m.model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            key = f"{name}.{pname}" if name else pname
            fns = getattr(mod, f"{pname}_function", None) or []
            t = p.detach().clone()
            for f in fns:
                t = f(t)
            if any(isinstance(f, comfy.model_patcher.LowVramPatch) for f in fns):
                lowvram.add(key)
            out[key] = t.clone()
    return out, lowvram, set(m.backup)


_loaded = loaded_weights  # tests/support/models.py


@pytest.mark.parametrize("pair", ["edg", "base_vs_patched"])
@pytest.mark.parametrize("budget", [None, 3])
def test_switched_weights_equal_the_other_expert(experts, pair, budget):
    """Switching phase rewrites exactly the other expert's weights, fully loaded or partially (low VRAM:
    LowVramPatch lists swapped or added); restoring gives phase 1 back bit for bit."""
    base, ft, dyn, con, tv = experts
    if pair == "edg":
        a, b = dyn, con
    else:
        params = dict(base.model.named_parameters())
        keys = [k for k in params if k.startswith("diffusion_model.") and "attn" in k]
        a, b = base.clone(), base.clone()
        b.add_patches({k: (0.1 * torch.ones_like(params[k]),) for k in keys}, 1.0)
    want_a, want_b = _loaded(a), _loaded(b)
    sched = expert_schedule([a, b], [500])
    mm.unload_all_models()
    sched.patch_model(CPU, lowvram_model_memory=0 if budget is None else sched.model_size() // budget)
    try:
        run = ScheduleRun(sched, get_schedule(sched))
        before, lowvram, _ = _effective(sched)
        assert (len(lowvram) > 10) == (budget is not None and pair == "edg")
        run.activate(1)
        during, _, _ = _effective(sched)
        kinds = {s.kind for s in run.slots.values()}
        # edg: patched in place / behind LowVramPatch at load; base_vs_patched: phase 1 has no patch there
        expect = {"edg": ["inplace", "lowvram"], "base_vs_patched": ["own", "lowvram_add"]}[pair]
        if budget is None:
            assert kinds == {expect[0]}, kinds
        else:
            assert expect[1] in kinds and kinds <= set(expect), kinds
        run.restore()
        after, _, _ = _effective(sched)
    finally:
        sched.unpatch_model(CPU)
    for k in get_schedule(sched).keys:
        assert torch.equal(before[k], want_a[k]), k
        assert torch.equal(during[k], want_b[k]), k
        assert torch.equal(after[k], want_a[k]), k
    assert not run.slots


# ------------------------------------------------------------------------------------------ robustness

def _sample(model, cond, callback=None):
    pos, neg, latent = cond
    lat = latent["samples"]
    noise = comfy.sample.prepare_noise(lat, SEED)
    return comfy.sample.sample(model, noise, STEPS, CFG, "euler", "simple", pos, neg, lat, callback=callback,
                               disable_pbar=True, seed=SEED)


def test_interrupt_mid_schedule_then_rerun(experts, cond):
    base, ft, dyn, con, tv = experts
    sched = expert_schedule([dyn, con], [500])
    k = _k_for(base, STEPS, 500)
    reference = _sample(sched, cond)
    phase1 = _state(sched)

    def interrupt(step, x0, x, total):
        if step == k + 1:  # past the switch: the model holds expert B's weights now
            raise mm.InterruptProcessingException()

    with pytest.raises(mm.InterruptProcessingException):
        _sample(sched, cond, callback=interrupt)
    after = _state(sched)
    assert all(torch.equal(after[k_], phase1[k_]) for k_ in phase1), "weights left in the wrong phase"
    again = _sample(sched, cond)
    assert _record("interrupted then rerun vs uninterrupted", again, reference) == 0.0
    # expert A alone is unaffected by the scheduled runs that shared its weights
    assert torch.equal(_sample(dyn, cond), _sample(dyn.clone(), cond))


def test_inputs_not_mutated(experts, cond):
    base, ft, dyn, con, tv = experts
    snaps = {n: _patch_snapshot(m) for n, m in (("base", base), ("dyn", dyn), ("con", con))}
    a_before = _sample(dyn, cond)
    sched = _out(ExpertSchedule.execute(dyn, con, "timestep", 500.0, 0.5, "hard"))[0]
    _sample(sched, cond)
    for n, m in (("base", base), ("dyn", dyn), ("con", con)):
        assert _patch_snapshot(m) == snaps[n], n
        assert get_schedule(m) is None and SCHEDULE_KEY not in repr(m.wrappers)
    assert torch.equal(_sample(dyn, cond), a_before)
    assert SCHEDULE_KEY not in sched.model_options.get("transformer_options", {})


# ------------------------------------------------------------------------------------------ soft variant

def test_soft_blend_formula(experts, cond):
    """One euler step from σ(t=600) to 0 returns the CFG'd prediction: soft = λ·A + (1−λ)·B with λ = t/1000
    (the release: w_dyn = cfg·t/1000, w_con = cfg − w_dyn, uncond and cond blended alike)."""
    base, ft, dyn, con, tv = experts
    pos, neg, latent = cond
    ms = base.get_model_object("model_sampling")
    sigmas = torch.tensor([float(ms.sigma(torch.tensor(600.0))), 0.0])
    t = int(ms.timestep(sigmas[:1]))
    sampler = comfy.samplers.sampler_object("euler")
    soft = _out(ExpertSchedule.execute(dyn, con, "timestep", 500.0, 0.5, "soft"))[0]

    def run(model):
        guider = _out(CFGGuider.execute(model, pos, neg, CFG))[0]
        return _out(SamplerCustomAdvanced.execute(Noise_RandomNoise(SEED), guider, sampler, sigmas, latent))[0]["samples"]

    a, b, s = run(dyn), run(con), run(soft)
    lam = t / 1000.0
    assert _record("soft one step vs λ·A + (1−λ)·B", s, lam * a + (1 - lam) * b) <= 1e-4 * max(1.0, float(s.abs().max()))
    # a full soft run is reproducible and leaves the weights in phase 1
    phase1 = _state(dyn)
    r1, r2 = _sample(soft, cond), _sample(soft, cond)
    assert torch.equal(r1, r2)
    assert not torch.equal(r1, _sample(expert_schedule([dyn, con], [500]), cond))
    mm.load_models_gpu([soft])
    now = _state(soft)
    assert all(torch.equal(now[k], phase1[k]) for k in phase1)


# ------------------------------------------------------------------------------------------ errors

def test_errors_are_clear(experts, tiny_dc):
    base, ft, dyn, con, tv = experts
    with pytest.raises(ValueError, match="not the same base model"):
        expert_schedule([base, ft], [500])
    with pytest.raises(ValueError, match="need 1 switch point"):
        expert_schedule([dyn, con], [700, 300])
    with pytest.raises(ValueError, match="strictly decrease"):
        _out(ExpertScheduleMulti.execute(dyn, con, "timestep", "300, 700", expert_3=base))
    with pytest.raises(ValueError, match="strictly increase"):
        check_points([0.7, 0.3], "fraction", 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_points([1.5], "fraction", 2)
    with pytest.raises(ValueError, match="exactly two"):
        expert_schedule([dyn, con, base], [], mode="soft")
    with pytest.raises(ValueError, match="already an expert schedule"):
        expert_schedule([expert_schedule([dyn, con], [500]), con], [500])
    with pytest.raises(ValueError, match="numbers separated by commas"):
        parse_points("500, abc")
    with pytest.raises(ValueError, match="expert_3 is not"):
        _out(ExpertScheduleMulti.execute(dyn, con, "timestep", "700, 300", expert_4=con))
    with pytest.raises(TypeError, match="ModelPatcher"):
        expert_schedule([dyn, "nope"], [500])
    assert parse_points("750, 500 ,250") == (750.0, 500.0, 250.0)
