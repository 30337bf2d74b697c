"""Expert switches at memory speed and image tokens once per run.

- A weight written range by range (``comfy_bridge.weights.write_patched_``) has exactly the bits of ComfyUI's
  whole-tensor computation (``patched_weight``: what a load computes) for this pack's sum merges — EDG experts,
  DARE, task arithmetic with several task vectors, ``weight_scale``, ``strength`` / ``strength_model`` — in float32,
  float16 and bfloat16 storage, with float32 or float16 patch compute, ranges of any length (ragged last range);
  and it refuses (writing nothing) what only the whole tensor gives: TIES, LoRA task vectors, several patches on a
  key, offsets, functions, fp8 storage.
- DARE masks kept packed (1 bit per element) on their merge unpack to the generator's masks, whole or by ranges;
  kept from the second use, or from the first once retained.
- The schedule takes the range path for every EDG key, in place (same storage), hard and soft; experts over a base
  that is itself a phase (``[base, dyn, con]``) switch to exactly the experts' weights.
- The DynamiCrafter Resampler runs once per video and sampling run (not at each step and CFG pass) with the same
  result as without the cache; a switch invalidates it; nothing is kept past the run; weight hooks turn it off.
"""
from __future__ import annotations

import pytest
import torch

import comfy.model_management as mm
import comfy.model_patcher
from i2v_motion.comfy_bridge.hooks import WrappersMP
from i2v_motion.comfy_bridge.probes import patch_compute_dtype, rounds_elementwise
from i2v_motion.comfy_bridge.weights import patched_weight, write_patched_
from i2v_motion.experts.schedule import ScheduleRun, expert_schedule, get_schedule
from i2v_motion.merging import apply_task_vectors, edg_experts, make_task_vector
from i2v_motion.merging.ops import dare_keep_mask, pack_mask, unpack_mask
from i2v_motion.merging.patches import MaskStore
from i2v_motion.runcache import RUN_CACHE_KEY, RowMemo, RunCache
from support.models import CPU, dc_cond, diffusion_keys, ksample, loaded_weights, noisy_clone, tiny_svd

SPAN = 1000  # elements per range in these tests: several ranges per weight, a ragged last one


def _pairs(dtype=torch.float32):
    return tiny_svd(0, dtype), tiny_svd(1, dtype, perturb_of=0)


def _assert_range_path_equals_load(model, keys, span=SPAN) -> int:
    """For each key: write_patched_ into a copy of the stored weight == patched_weight (what a load computes)."""
    params = dict(model.model.named_parameters())
    taken = 0
    for k in keys:
        base = params[k].detach()
        want = patched_weight(base, model.patches[k], k, CPU, round_to=base.dtype)
        live = torch.full_like(base, float("nan"))
        ptr = live.data_ptr()
        assert write_patched_(live, base, model.patches[k], k, span=span), k
        assert live.data_ptr() == ptr
        assert live.dtype == want.dtype and torch.equal(live.view(torch.uint8), want.view(torch.uint8)), k
        taken += 1
    return taken


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_range_path_has_the_bits_of_a_load(dtype):
    base, ft = _pairs(dtype)
    dyn, con, tv = edg_experts(base, ft, p=0.6, seed=2, alpha_c=0.9)  # alpha_c ≠ 1: weight_scale on the base
    assert _assert_range_path_equals_load(dyn, tv.keys) == len(tv.keys)
    small = [k for k in tv.keys if tv.shapes[k].numel() <= 4096][::3]
    assert _assert_range_path_equals_load(con, small, span=8) == len(small) > 0
    # several task vectors, DARE, strength and strength_model (a patch added at other strengths)
    tv2 = make_task_vector(base, tiny_svd(2, dtype, perturb_of=0))
    multi = apply_task_vectors(base, [tv, tv2], [0.7, -0.4], method="dare", p=0.5, seed=5)
    scaled = base.clone()
    scaled.add_patches({k: multi.patches[k][0][1] for k in tv.keys[::5]}, 0.8, 0.9)
    assert _assert_range_path_equals_load(multi, tv.keys[::3]) > 0
    assert _assert_range_path_equals_load(scaled, tv.keys[::5], span=1 << 16) > 0


def test_range_path_with_fp16_patch_compute():
    """ComfyUI 0.33 computes patches in fp16 on GPUs that prefer it: the ranges take that path too."""
    if not hasattr(mm, "LORA_COMPUTE_DTYPES"):
        pytest.skip("this ComfyUI computes weight patches in float32 on every device (0.33+ only)")
    old = mm.LORA_COMPUTE_DTYPES.get(CPU)
    mm.LORA_COMPUTE_DTYPES[CPU] = torch.float16
    try:
        assert patch_compute_dtype(CPU) == torch.float16
        base, ft = _pairs(torch.float32)
        dyn, con, tv = edg_experts(base, ft, p=0.5, seed=7)
        _assert_range_path_equals_load(con, tv.keys)
    finally:
        if old is None:
            mm.LORA_COMPUTE_DTYPES.pop(CPU, None)
        else:
            mm.LORA_COMPUTE_DTYPES[CPU] = old


def test_range_path_refuses_what_needs_the_whole_tensor(tmp_path):
    base, ft = _pairs()
    tv = make_task_vector(base, ft)
    k = max(tv.keys, key=lambda x: tv.shapes[x].numel())
    w = dict(base.model.named_parameters())[k].detach()
    ties = apply_task_vectors(base, [tv], [1.0], method="ties", density=0.5)
    dare_ties = apply_task_vectors(base, [tv], [1.0], method="dare_ties", p=0.5)
    summed = apply_task_vectors(base, [tv], [1.0])
    adapter = summed.patches[k][0]
    refused = {
        "ties": ties.patches[k],
        "dare_ties": dare_ties.patches[k],
        "two patches": [adapter, (1.0, (torch.ones_like(w),), 1.0, None, None)],
        "offset": [(1.0, adapter[1], 1.0, (0, 0, 1), None)],
        "function": [(1.0, adapter[1], 1.0, None, lambda a: a * 2)],
        "a diff patch": [(1.0, (torch.ones_like(w),), 1.0, None, None)],
    }
    assert write_patched_(w.clone(), w, summed.patches[k], k, span=SPAN)  # the same key and sum alone: taken
    for name, patches in refused.items():
        live = w.clone()
        assert not write_patched_(live, w, patches, k, span=SPAN), name
        assert torch.equal(live, w), name
    # a LoRA task vector: core's matrix product, not elementwise
    from safetensors.torch import save_file
    from i2v_motion.merging.lora import make_lora_task_vector

    lk = max((x for x in tv.keys if len(tv.shapes[x]) == 2), key=lambda x: tv.shapes[x].numel())
    lw = dict(base.model.named_parameters())[lk].detach()
    stem = "lora_unet_" + lk[len("diffusion_model."):-len(".weight")].replace(".", "_")
    save_file({f"{stem}.lora_up.weight": torch.randn(lw.shape[0], 2),
               f"{stem}.lora_down.weight": torch.randn(2, lw.shape[1])}, str(tmp_path / "l.safetensors"))
    lora = apply_task_vectors(base, [make_lora_task_vector(base, str(tmp_path / "l.safetensors"))], [0.5])
    assert lk in lora.patches
    assert not write_patched_(lw.clone(), lw, lora.patches[lk], lk, span=SPAN)
    # fp8 storage: stochastic rounding over the whole tensor
    if hasattr(torch, "float8_e4m3fn"):
        assert not rounds_elementwise(torch.float8_e4m3fn)
        live8 = w.to(torch.float8_e4m3fn)
        assert not write_patched_(live8, live8.clone(), summed.patches[k], k, span=SPAN)
    assert rounds_elementwise(torch.float32) and rounds_elementwise(torch.float16)
    # no patches: a plain copy of the base into the live storage
    live = torch.zeros_like(w)
    assert write_patched_(live, w, [], k) and torch.equal(live, w)


def test_packed_masks_unpack_to_the_generator_masks():
    shape, p = (37, 29), 0.7
    want = dare_keep_mask(shape, p, 3, "k.weight", "edg.dynamics")
    packed = pack_mask(want)
    assert packed.dtype == torch.uint8 and packed.numel() == (37 * 29 + 7) // 8
    assert torch.equal(unpack_mask(packed, 0, 37 * 29).reshape(shape), want)
    flat = want.reshape(-1)
    for a, b in ((0, 8), (8, 40), (1000, 37 * 29), (512, 513)):
        assert torch.equal(unpack_mask(packed, a, b), flat[a:b]), (a, b)
    with pytest.raises(ValueError, match="multiple of 8"):
        unpack_mask(packed, 3, 10)

    store = MaskStore()
    assert torch.equal(store.keep("k.weight", "edg.dynamics", torch.Size(shape), p, 3, CPU), want)
    assert len(store) == 0  # first use: drawn, not kept
    assert torch.equal(store.keep("k.weight", "edg.dynamics", torch.Size(shape), p, 3, CPU), want)
    assert len(store) == 1 and store.nbytes == packed.numel()  # second use: kept
    assert torch.equal(store.keep("k.weight", "edg.dynamics", torch.Size(shape), p, 3, CPU, (8, 48)), flat[8:48])
    other = MaskStore()
    other.retain()
    other.keep("k.weight", "tv0", torch.Size(shape), p, 3, CPU)
    assert len(other) == 1  # retained: kept from the first use


def test_schedule_switches_by_ranges_in_place(tiny_dc):
    """Every EDG key of a scheduled tiny DynamiCrafter takes the range path, storage unchanged, and the phases are
    exactly the experts loaded alone; the DARE masks are kept on the merges, 1 bit per element."""
    base = tiny_dc.model
    ft = base.clone()
    g = torch.Generator().manual_seed(3)
    params = dict(base.model.named_parameters())
    ft_model = comfy.model_patcher.ModelPatcher(type(base.model)(base.model.model_config), CPU, CPU)
    ft_model.model.load_state_dict(base.model.state_dict())
    ft_model.model.requires_grad_(False)
    for k, p in ft_model.model.named_parameters():
        if k.startswith("diffusion_model."):
            p.data += 0.05 * torch.randn(p.shape, generator=g)
    dyn, con, tv = edg_experts(base, ft_model, p=0.7, seed=1)
    want_dyn, want_con = loaded_weights(dyn), loaded_weights(con)
    sched = expert_schedule([dyn, con], [500])
    mm.load_models_gpu([sched])
    try:
        ptrs = {k: p.data_ptr() for k, p in sched.model.named_parameters()}
        run = ScheduleRun(sched, get_schedule(sched))
        run.activate(1)
        now = dict(sched.model.named_parameters())
        assert all(torch.equal(now[k], want_con[k]) for k in tv.keys)
        assert run.stats == {"fast": len(tv.keys), "generic": 0}
        run.restore()
        now = dict(sched.model.named_parameters())
        assert all(torch.equal(now[k], want_dyn[k]) for k in tv.keys)
        assert {k: p.data_ptr() for k, p in sched.model.named_parameters()} == ptrs
    finally:
        mm.unload_all_models()
    spec = con.patches[tv.keys[0]][0][1].spec
    dared = sum(params[k].numel() for k in tv.keys if params[k].ndim > 1)
    assert spec.masks.retain_all and abs(spec.masks.nbytes - dared / 8) < len(tv.keys)
    del ft


def test_soft_mode_switches_in_place(tiny_dc):
    base = tiny_dc.model
    other = noisy_clone(base, 5)
    soft = expert_schedule([base, other], mode="soft")
    mm.load_models_gpu([soft])
    before = {k: p.data_ptr() for k, p in soft.model.named_parameters()}
    seen = []

    def probe(executor, *args, **kwargs):
        seen.append({k: p.data_ptr() for k, p in soft.model.named_parameters()})
        return executor(*args, **kwargs)

    probed = soft.clone()
    probed.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "test.probe", probe)
    ksample(probed, dc_cond())
    mm.unload_all_models()
    assert len(seen) >= 4 and all(s == before for s in seen)


def test_experts_over_a_base_phase(tiny_dc):
    """[base, dyn, con]: the base's live weights are phase 1 and the merges' own base; switching writes them in
    place, and phases 2 and 3 must still be computed from the stored base, not from phase 2's values."""
    base = tiny_dc.model
    ft = noisy_clone(base, 8)
    dyn, con, tv = edg_experts(base, ft, p=0.5, seed=4)
    plain = base.clone()
    want = [loaded_weights(m) for m in (plain, dyn, con)]
    sched = expert_schedule([plain, dyn, con], [750, 250])
    mm.load_models_gpu([sched])
    try:
        run = ScheduleRun(sched, get_schedule(sched))
        for phase in (1, 2, 1, 0, 2):
            run.activate(phase)
            now = dict(sched.model.named_parameters())
            bad = [k for k in tv.keys if not torch.equal(now[k], want[phase][k])]
            assert not bad, f"phase {phase + 1}: {len(bad)} weights differ, e.g. {bad[:2]}"
        run.restore()
        now = dict(sched.model.named_parameters())
        assert all(torch.equal(now[k], want[0][k]) for k in tv.keys)
    finally:
        mm.unload_all_models()


# ------------------------------------------------------------------------------------------ image tokens

def test_row_memo_computes_each_row_once():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return x * 2 + 1

    memo = RowMemo(max_rows=4)
    a, b, c = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    x = torch.stack([a, b])
    assert torch.equal(memo(fn, x), fn(x)) and calls == [2, 2]
    calls.clear()
    assert torch.equal(memo(fn, torch.stack([b, a, b])), torch.stack([b, a, b]) * 2 + 1) and calls == []
    assert torch.equal(memo(fn, torch.stack([c, a])), torch.stack([c, a]) * 2 + 1) and calls == [1]
    assert memo.hits == 4 and memo.misses == 3
    assert torch.equal(memo(fn, torch.stack([a.double(), b.double()])), torch.stack([a, b]).double() * 2 + 1)
    assert calls == [1, 2]  # another dtype is another row (and the memo is full now: not kept)


class _Counter:
    def __init__(self, module):
        self.rows = 0
        self.calls = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, args, out):
        self.calls += 1
        self.rows += out.shape[0]


def test_image_tokens_once_per_run_same_result(tiny_dc):
    model = tiny_dc.model
    resampler = model.model.diffusion_model.image_proj_model
    cond = dc_cond()
    uncached = model.clone()
    uncached.remove_wrappers_with_key(WrappersMP.OUTER_SAMPLE, RUN_CACHE_KEY)
    count = _Counter(resampler)
    try:
        want = ksample(uncached, cond)
        calls_without = count.calls
        count.calls = count.rows = 0
        got = ksample(model, cond)
    finally:
        count.handle.remove()
    assert torch.equal(got, want)
    assert calls_without >= 4 and count.calls == 1 and count.rows == 2  # cond and uncond video, once
    assert RUN_CACHE_KEY not in model.model_options.get("transformer_options", {})


def test_image_tokens_recomputed_after_a_switch_and_dropped_after_the_run(tiny_dc):
    base = tiny_dc.model
    other = noisy_clone(base, 6, keep=lambda k, p: "image_proj_model" in k)
    sched = expert_schedule([base, other], [500])
    caches: list[RunCache] = []

    def grab(executor, *args, **kwargs):
        topts = kwargs.get("transformer_options") or (args[5] if len(args) > 5 else None) or {}
        c = topts.get(RUN_CACHE_KEY)
        if c is not None and all(c is not x for x in caches):
            caches.append(c)
        return executor(*args, **kwargs)

    probed = sched.clone()
    probed.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "test.grab", grab)
    count = _Counter(base.model.diffusion_model.image_proj_model)
    try:
        ksample(probed, dc_cond())
    finally:
        count.handle.remove()
    assert len(caches) == 1 and caches[0].invalidations == 1  # one switch
    assert count.calls == 2  # once per phase
    assert caches[0].stores == {}  # dropped at the end of the run
    assert RUN_CACHE_KEY not in sched.model_options.get("transformer_options", {})


def test_weight_hooks_turn_the_token_cache_off(tiny_dc):
    import comfy.hooks

    model = tiny_dc.model
    key = next(k for k in diffusion_keys(model) if "image_proj_model.proj_in.weight" in k)
    w = dict(model.model.named_parameters())[key]
    group = comfy.hooks.HookGroup()
    wh = comfy.hooks.WeightHook()  # a conditioning-scheduled weight patch on the Resampler ("diff" patch)
    wh.weights = {key: (0.1 * torch.ones_like(w),)}
    wh.need_weight_init = False
    group.add(wh)
    pos, neg, latent = dc_cond()
    pos = comfy.hooks.set_hooks_for_conditioning(pos, group)
    count = _Counter(model.model.diffusion_model.image_proj_model)
    try:
        ksample(model, (pos, neg, latent))
    finally:
        count.handle.remove()
    assert count.calls >= 4  # every evaluation computes its tokens: the weights differ per conditioning


def test_weights_written_by_threads_keep_the_callers_inference_mode():
    """ComfyUI's executor runs nodes (and loads weights) under ``torch.inference_mode``; the threads a switch shares
    its weights out to run in the caller's mode, so they may update those inference tensors range by range, and
    write the bits one thread would."""
    from i2v_motion.comfy_bridge.weights import write_patched_many_

    base, ft = _pairs()
    dyn, _, tv = edg_experts(base, ft, p=0.6, seed=2)
    params = dict(dyn.model.named_parameters())
    keys = list(tv.keys)
    n = torch.get_num_threads()
    torch.set_num_threads(2)  # the threaded path, whatever OMP_NUM_THREADS says
    try:
        with torch.inference_mode():
            lives = [torch.full_like(params[k], float("nan")) for k in keys]
            done = write_patched_many_([(live, params[k].detach(), dyn.patches[k], k) for live, k in zip(lives, keys)])
    finally:
        torch.set_num_threads(n)
    assert done == [True] * len(keys), [d for d in done if d is not True][:1]
    for live, k in zip(lives, keys):
        want = patched_weight(params[k].detach(), dyn.patches[k], k, CPU, round_to=live.dtype)
        assert torch.equal(live, want), k
