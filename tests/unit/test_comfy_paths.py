"""The ComfyUI paths users run on 0.33+ NVIDIA GPUs, driven on the CPU, asserting the weights a model runs with.

Dynamic VRAM engages only on CUDA with comfy-aimdo, so CI cannot take it end to end; these tests drive the
objects that path uses (weight adapters rebuilt by prefetch, ``LowVramPatch.prepare``, ``<attr>_lowvram_function``
slots laid out as ``ModelPatcherDynamic.load`` does — see ``dynamic_vram.py`` —, fp16 patch compute) for merges,
expert schedules (every phase, full / low-VRAM / dynamic loading) and bakes. Rows of the table in
``../shared/comfyui/README.md`` and the tests that prove them (the converter, row 1, is in
``test_workflow_converter.py``):

| row | change | tests |
|---|---|---|
| 2 | ``string_to_seed`` moved | test_no_moved_name_warnings |
| 3 | adapters rebuilt as ``type(v)(loaded_keys, weights)``, prepared patches | test_merge_adapter_rebuilt_like_core, test_prepared_patches_equal_direct_path |
| 4 | patches in ``<attr>_lowvram_function`` | test_schedule_every_phase_every_loading_mode[dynamic-*] |
| 5 | patch compute in ``lora_compute_dtype`` | test_fp16_patch_compute_switch_and_bake |
| 6 | dynamic load backs up leaf params without cast support unpatched | test_dynamic_load_patches_skipped_params |
| 7 | ``LowVramPatch.__call__`` computes in the weight's dtype, prefers prepared patches | test_prepared_patches_equal_direct_path |
| 8 | loaders build ``CoreModelPatcher`` | test_loader_builds_core_model_patcher |

Tests of features a host lacks (0.3.75 has no dynamic VRAM, no prepared patches, no fp16 patch compute) skip
with that reason; the others run on both hosts.
"""
from __future__ import annotations

import contextlib
import logging

import pytest
import torch
from safetensors.torch import load_file

import comfy.float
import comfy.lora
import comfy.model_management as mm
import comfy.model_patcher
from support.dynamic_vram import dynamic_load, dynamic_unload, effective_weights, require_dynamic_host
from support import fixtures
from i2v_motion.backbones.loader import load_dynamicrafter
from i2v_motion.comfy_bridge.patchers import _patch_skipped_params, lowvram_slot
from i2v_motion.comfy_bridge.probes import patch_compute_dtype, string_to_seed
from i2v_motion.merging import bake_model, edg_experts
from i2v_motion.merging.patches import MergeAdapter
from i2v_motion.experts.schedule import ScheduleRun, expert_schedule, get_schedule
from support.models import tiny_svd

CPU = torch.device("cpu")
NO_ENCODERS = dict(with_vae=False, with_clip=False, with_clip_vision=False)
MODES = ("full", "lowvram", "dynamic")


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def dc_ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("dc_paths")
    return (fixtures.make_tiny_checkpoint(str(d / "base.safetensors"), seed=0, **NO_ENCODERS),
            fixtures.make_tiny_checkpoint(str(d / "ft.safetensors"), seed=1, **NO_ENCODERS))


def _dc(path: str, dtype=torch.float32):
    m = load_dynamicrafter(path, dtype=dtype).model
    m.model.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def pairs(dc_ckpts):
    """(base, fine-tune) for a tiny DynamiCrafter (pack loader) and a tiny SVD (core model code)."""
    return {"dc": (_dc(dc_ckpts[0]), _dc(dc_ckpts[1])), "svd": (tiny_svd(0), tiny_svd(1, perturb_of=0))}


@pytest.fixture
def fp16_patch_compute():
    """ComfyUI computing weight patches in fp16 on this device, as on GPUs where ``should_use_fp16`` (0.33+)."""
    if not hasattr(mm, "lora_compute_dtype") or not hasattr(mm, "LORA_COMPUTE_DTYPES"):
        pytest.skip("this ComfyUI computes weight patches in float32 on every device (no lora_compute_dtype; "
                    "0.33+ only)")
    old = mm.LORA_COMPUTE_DTYPES.get(CPU)
    mm.LORA_COMPUTE_DTYPES[CPU] = torch.float16
    assert patch_compute_dtype(CPU) == torch.float16
    try:
        yield
    finally:
        if old is None:
            mm.LORA_COMPUTE_DTYPES.pop(CPU, None)
        else:
            mm.LORA_COMPUTE_DTYPES[CPU] = old


def _diff_patches(model, keys, seed: int, scale: float = 0.1) -> dict:
    """LoRA-like ("diff") patches: random tensors that prefetch must copy into its staging buffer."""
    params = dict(model.model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    return {k: (scale * torch.randn(params[k].shape, generator=g).to(params[k].dtype),) for k in keys}


def _keys(model, pred) -> list[str]:
    return [k for k, _ in model.model.named_parameters() if k.startswith("diffusion_model.") and pred(k)]


# ------------------------------------------------------------------------------------------ loading modes

def _effective_partial(m) -> dict[str, torch.Tensor]:
    """Weights as ``comfy.ops`` computes them after a low-VRAM partial load (``<attr>_function`` applied)."""
    out = {}
    for name, mod in m.model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            t = p.detach().clone()
            for f in getattr(mod, f"{pname}_function", None) or []:
                t = f(t)
            out[f"{name}.{pname}" if name else pname] = t.clone()
    return out


@contextlib.contextmanager
def loaded(m, mode: str):
    """Load ``m`` on the CPU the way ``mode`` does; yields a function returning the weights it runs with."""
    mm.unload_all_models()
    if mode == "full":
        mm.load_models_gpu([m])
        try:
            yield lambda: {k: v.detach().clone() for k, v in m.model.state_dict().items()}
        finally:
            mm.unload_all_models()
    elif mode == "lowvram":
        m.patch_model(CPU, lowvram_model_memory=m.model_size() // 3)
        try:
            assert m.model.model_lowvram
            yield lambda: _effective_partial(m)
        finally:
            m.unpatch_model(CPU)
    else:
        require_dynamic_host()
        dynamic_load(m)
        try:
            yield lambda: effective_weights(m)
        finally:
            dynamic_unload(m)


def _weights_as_loaded(m, mode: str) -> dict[str, torch.Tensor]:
    with loaded(m, mode) as eff:
        return eff()


def _assert_same(got: dict, want: dict, keys, what: str) -> None:
    bad = [k for k in keys if not torch.equal(got[k], want[k])]
    assert not bad, f"{what}: {len(bad)} weight(s) differ, e.g. {bad[:3]}"


# ------------------------------------------------------------------------------------------ row 3 / 7

def test_merge_adapter_rebuilt_like_core(pairs):
    """0.33's prefetch rebuilds adapters as ``type(v)(v.loaded_keys, weights)``: ours survives and computes the same."""
    base, ft = pairs["svd"]
    dyn, con, tv = edg_experts(base, ft, p=0.5, seed=3)
    params = dict(base.model.named_parameters())
    for expert in (dyn, con):
        for key in tv.keys[:: max(1, len(tv.keys) // 12)]:
            v = expert.patches[key][0][1]
            assert isinstance(v, MergeAdapter)
            rebuilt = [type(v)(v.loaded_keys, v.weights)]
            if hasattr(comfy.lora, "prefetch_prepared_value"):  # the core function itself (0.33+)
                rebuilt.append(comfy.lora.prefetch_prepared_value(v, [0], None, None, False))
            for w in rebuilt:
                assert isinstance(w, MergeAdapter) and w is not v and w.spec is v.spec
                one = comfy.lora.calculate_weight([(1.0, v, 1.0, None, None)], params[key].detach().float().clone(), key)
                two = comfy.lora.calculate_weight([(1.0, w, 1.0, None, None)], params[key].detach().float().clone(), key)
                assert torch.equal(one, two), key
    with pytest.raises(TypeError, match="MergeAdapter.create"):
        MergeAdapter(set(), [torch.zeros(1)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("compute", ["native", "fp16"])
def test_prepared_patches_equal_direct_path(pairs, dtype, compute, request):
    """A ``LowVramPatch`` prepared into a staging buffer (prefetch: adapters rebuilt, diff tensors copied) and
    applied in the compute dtype gives exactly what a full load (``patch_weight_to_device``) computes, for a
    merge with a LoRA-like patch stacked on the same keys."""
    require_dynamic_host()
    if compute == "fp16":
        request.getfixturevalue("fp16_patch_compute")
    base, ft = tiny_svd(0, dtype), tiny_svd(1, dtype, perturb_of=0)
    dyn, _, tv = edg_experts(base, ft, p=0.5, seed=4)
    stacked = dyn.clone()
    shared = list(tv.keys[::3])
    stacked.add_patches(_diff_patches(base, shared, seed=5), 1.0)
    cdt = patch_compute_dtype(CPU)
    assert cdt == (torch.float16 if compute == "fp16" else torch.float32)
    params = dict(base.model.named_parameters())
    rebuilt = 0
    for key in tv.keys:
        direct = stacked.patch_weight_to_device(key, device_to=CPU, return_weight=True)
        lvp = comfy.model_patcher.LowVramPatch(key, stacked.patches)
        staging = torch.empty(max(1, lvp.memory_required()), dtype=torch.uint8)
        prepared = lvp.prepare(staging, None, copy=True, commit=True)
        assert lvp.prepared_patches is prepared
        for orig, new in zip(stacked.patches[key], prepared):
            if isinstance(orig[1], MergeAdapter):
                assert isinstance(new[1], MergeAdapter) and new[1] is not orig[1]
                rebuilt += 1
        x = lvp(params[key].detach().to(cdt, copy=True))
        lvp.clear_prepared()
        x = comfy.float.stochastic_rounding(x, params[key].dtype, seed=string_to_seed(key))
        assert x.dtype == direct.dtype and torch.equal(x, direct), key
    assert rebuilt == len(tv.keys)
    assert stacked.patches[shared[0]][1][1][0].dtype == dtype  # the staged diff really was a tensor


# ------------------------------------------------------------------------------------------ row 4 (and full / low VRAM)

def _three_experts(base, ft):
    """Three phases over one base: EDG dynamics and control experts on the temporal weights, then the base
    with LoRA-like patches on spatial weights (unpatched in the first two phases: weights that are the
    stored base at load, or modules without a low-VRAM patch / with an empty dynamic slot)."""
    dyn, con, tv = edg_experts(base, ft, p=0.5, seed=6, preset="temporal")
    spatial = _keys(base, lambda k: k not in tv and ("attn1" in k or "proj_in" in k))[:24]
    third = base.clone()
    third.add_patches(_diff_patches(base, spatial, seed=7), 1.0)
    return [dyn, con, third], tv, spatial


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ["dc", "svd"])
def test_schedule_every_phase_every_loading_mode(pairs, arch, mode):
    """In every phase, each weight the scheduled model runs with is bit-identical to loading that expert alone in
    the same mode; switching back and forth never patches twice; restoring gives phase 1 back; dynamic-VRAM
    modules whose slot changed are marked for re-cast."""
    base, ft = pairs[arch]
    experts, tv, spatial = _three_experts(base, ft)
    want = [_weights_as_loaded(e, mode) for e in experts]
    sched = expert_schedule(experts, [750, 250])
    keys = list(get_schedule(sched).keys)
    assert set(tv.keys) <= set(keys) and set(spatial) <= set(keys)
    with loaded(sched, mode) as eff:
        run = ScheduleRun(sched, get_schedule(sched))
        modules = dict(sched.model.named_modules())
        if mode == "dynamic":
            for m in modules.values():
                m._v_signature = "resident"
        seen = {0: eff()}
        for phase in (1, 2, 1, 0, 2):
            run.activate(phase)
            seen[phase] = eff()
            _assert_same(seen[phase], want[phase], keys, f"{mode}: phase {phase + 1} after switching")
        kinds = {s.kind for s in run.slots.values()}
        if mode == "dynamic":
            assert "dynamic" in kinds, kinds
            dirty = {s.module for s in run.slots.values() if s.kind == "dynamic"}
            assert all(m._v_signature is None for m in dirty)
            untouched = [m for m in modules.values() if m not in dirty and "_v_signature" in m.__dict__]
            assert any(m._v_signature == "resident" for m in untouched)
        elif mode == "lowvram":
            assert kinds & {"lowvram", "lowvram_add"}, kinds
        else:
            assert kinds <= {"inplace", "own"}, kinds
        run.restore()
        _assert_same(eff(), want[0], keys, f"{mode}: phase 1 after restore")
        if mode == "dynamic":
            for key in keys:  # the load's own slot objects are back
                path, _, attr = key.rpartition(".")
                slot = getattr(modules[path], lowvram_slot(attr), None)
                assert slot is None or slot.patches is sched.patches
    _assert_same(seen[0], want[0], keys, f"{mode}: phase 1 as loaded")
    assert any(not torch.equal(want[0][k], want[1][k]) for k in tv.keys)  # the phases really differ
    assert any(not torch.equal(want[0][k], want[2][k]) for k in spatial)


# ------------------------------------------------------------------------------------------ row 5

def test_fp16_patch_compute_switch_and_bake(pairs, fp16_patch_compute, tmp_path):
    """With ComfyUI computing patches in fp16 (0.33 on GPUs that prefer it), switched and baked weights equal
    what ComfyUI itself loads for that expert — also where a LoRA-like patch shares keys with the merge, where
    float32 maths would give other bits."""
    base, ft = pairs["svd"]
    dyn, con, tv = edg_experts(base, ft, p=0.5, seed=8)
    shared = list(tv.keys[::2])
    lora = _diff_patches(base, shared, seed=9)
    a, b = dyn.clone(), con.clone()
    a.add_patches(lora, 1.0)
    b.add_patches(lora, 1.0)
    want_a, want_b = _weights_as_loaded(a, "full"), _weights_as_loaded(b, "full")
    sched = expert_schedule([a, b], [500])
    with loaded(sched, "full") as eff:
        run = ScheduleRun(sched, get_schedule(sched))
        run.activate(1)
        _assert_same(eff(), want_b, tv.keys, "fp16 compute: switched to control")
        run.restore()
        _assert_same(eff(), want_a, tv.keys, "fp16 compute: restored")
    path = tmp_path / "con_fp16_compute.safetensors"
    bake_model(b, str(path), device=CPU)
    baked = load_file(str(path))
    bad = [k for k in tv.keys if not torch.equal(baked["model." + k], want_b[k])]
    assert not bad, f"baked weights differ from the fp16-compute load at {bad[:3]}"
    # the test can fail: float32 patch maths gives other bits for these fp32-stored weights
    mm.LORA_COMPUTE_DTYPES[CPU] = torch.float32
    fp32_b = _weights_as_loaded(b, "full")
    assert sum(not torch.equal(fp32_b[k], want_b[k]) for k in shared) > len(shared) // 2


# ------------------------------------------------------------------------------------------ row 6 (and non-leaf params)

@pytest.mark.parametrize("arch", ["dc", "svd"])
def test_dynamic_load_patches_skipped_params(pairs, arch):
    """Under dynamic loading, merges reach parameters ComfyUI's loader leaves unpatched — non-leaf ones
    (DynamiCrafter's Resampler latents) and leaf ones without cast support that the dynamic load only backs up
    (SVD's AlphaBlender mix_factor) — exactly once, however often the callback runs."""
    require_dynamic_host()
    base, ft = pairs[arch]
    dyn, _, tv = edg_experts(base, ft, p=0.0)
    skipped = [k for k in tv.keys if k.endswith(("image_proj_model.latents", "mix_factor"))]
    assert skipped, "the model has no parameter of the kind the loaders skip"
    want = _weights_as_loaded(dyn, "full")
    stored = {k: v.detach().clone() for k, v in base.model.named_parameters()}
    dynamic_load(dyn)
    try:
        _patch_skipped_params(dyn, CPU, 0, False, False)  # a second call must not patch twice
        got = effective_weights(dyn, skipped)
    finally:
        dynamic_unload(dyn)
    _assert_same(got, want, skipped, "dynamic load")
    assert all(not torch.equal(got[k], stored[k]) for k in skipped)
    # without the pack's callback the dynamic load leaves them at the stored base (what the callback fixes)
    bare = dyn.clone()
    bare.callbacks = {}
    dynamic_load(bare)
    try:
        raw = effective_weights(bare, skipped)
    finally:
        dynamic_unload(bare)
    _assert_same(raw, stored, skipped, "dynamic load without the callback")


# ------------------------------------------------------------------------------------------ row 8

def test_loader_builds_core_model_patcher(dc_ckpts, monkeypatch):
    """Load DynamiCrafter builds whatever ``comfy.model_patcher.CoreModelPatcher`` is when it runs (main.py makes
    it the dynamic-VRAM patcher on NVIDIA), and a plain ModelPatcher where a ComfyUI has no such name."""
    class Marker(comfy.model_patcher.ModelPatcher):
        pass

    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", Marker, raising=False)
    assert isinstance(load_dynamicrafter(dc_ckpts[0]).model, Marker)
    monkeypatch.delattr(comfy.model_patcher, "CoreModelPatcher", raising=False)
    assert type(load_dynamicrafter(dc_ckpts[0]).model) is comfy.model_patcher.ModelPatcher


# ------------------------------------------------------------------------------------------ row 2

def test_no_moved_name_warnings(pairs, tmp_path, caplog):
    """Merges, a schedule switch and a bake use ComfyUI names from where they live now: no 'has moved' warning."""
    base, ft = pairs["svd"]
    dyn, con, _ = edg_experts(base, ft, p=0.5)
    with caplog.at_level(logging.WARNING):
        sched = expert_schedule([dyn, con], [500])
        with loaded(sched, "full"):
            run = ScheduleRun(sched, get_schedule(sched))
            run.activate(1)
            run.restore()
        bake_model(con, str(tmp_path / "b.safetensors"), device=CPU)
    moved = [r.getMessage() for r in caplog.records if "has moved" in r.getMessage()]
    assert not moved, moved[:2]


# ------------------------------------------------------------------------------------------ fp8 storage

@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e5m2"])
def test_fp8_storage_merges_and_schedule(dc_ckpts, weight_dtype):
    """fp8-stored DynamiCrafter: merged weights are the float32 formula rounded to fp8 by ComfyUI's stochastic
    rounding (seeded per key); the schedule switches to exactly the other expert's fp8 weights; sampling runs."""
    from i2v_motion.nodes.backbone import DTYPES
    from support.models import sample_dc as _sample_dc

    dtype, _ = DTYPES[weight_dtype]
    base, ft = _dc(dc_ckpts[0], dtype), _dc(dc_ckpts[1], dtype)
    w = dict(base.model.named_parameters())
    fp8_keys = [k for k, v in w.items() if v.dtype == dtype]
    assert len(fp8_keys) > 0.9 * len(w), "weights are not stored in fp8"
    dyn, con, tv = edg_experts(base, ft, p=0.0, alpha_d=0.5, beta_d=1.0)
    got = _weights_as_loaded(dyn, "full")
    fw = dict(ft.model.named_parameters())
    cdt = patch_compute_dtype(CPU)
    checked = 0
    for k in tv.keys:
        if w[k].dtype != dtype:
            continue
        b, f = w[k].detach().float(), fw[k].detach().float()
        exact = (b.to(cdt).float() + (-0.5) * (f - b)).to(cdt)  # θ_base − α_d·β_d·τ, in the patch compute dtype
        expect = comfy.float.stochastic_rounding(exact, dtype, seed=string_to_seed(k))
        assert got[k].dtype == dtype and torch.equal(got[k], expect), k
        checked += 1
    assert checked > 0.9 * len(tv.keys)
    want_con = _weights_as_loaded(con, "full")
    sched = expert_schedule([dyn, con], [500])
    with loaded(sched, "full") as eff:
        run = ScheduleRun(sched, get_schedule(sched))
        run.activate(1)
        _assert_same(eff(), want_con, tv.keys, f"{weight_dtype}: switched to control")
        run.restore()
    out = _sample_dc(sched)
    assert torch.isfinite(out).all()
