"""Time-decoupled expert injection (EDG stage 3): several experts over one base, switched by noise level.

One MODEL that samples the high-noise part of the schedule with expert 1 and the low-noise part with
expert 2 (… expert n), with one copy of the backbone's weights resident.

How it works on ComfyUI's machinery:

- The experts are ModelPatchers over the *same* underlying model (``a.is_clone(b)``) that differ only in
  their weight patches (the two outputs of EDG Experts, a model and the same model + a LoRA, …). The
  returned MODEL is a clone of expert 1: ComfyUI loads it exactly as it loads expert 1.
- An ``OUTER_SAMPLE`` wrapper (once per sampling run, around model loading and sampling) puts a
  :class:`ScheduleRun` into the run's ``transformer_options`` and, in ``finally``, puts phase 1 back, so an
  interrupt or an error never leaves weights of another phase behind.
- Hard mode: an ``APPLY_MODEL`` wrapper maps each model evaluation's sigma to its phase. The first time a
  phase is needed, every weight that differs between the phases is switched where ComfyUI keeps it:
  weights patched at load are rewritten in place from the base weight (ComfyUI's backup) with that
  phase's patches — ComfyUI's own ``patch_weight_to_device`` arithmetic, in the dtype it computes
  patches in on that device (``lora_compute_dtype``: fp16 on many GPUs since 0.33); weights computed on
  the fly by ``LowVramPatch`` objects (low-VRAM partial loads: ``<attr>_function``; dynamic VRAM:
  ``<attr>_lowvram_function``) switch by handing ComfyUI a patch object for that phase, and dynamic-VRAM
  modules are marked for re-cast. The promise: in every phase each weight the model runs with is
  bit-identical to what ComfyUI computes for that weight when it loads that expert alone, on the same
  device in the same loading mode. Cost: one weight computation per boundary and one to restore, per
  run; no extra weight memory. Every write is in place (each parameter keeps its storage, ``data_ptr``).
- Switches at memory speed: where a key's phase value is elementwise (this pack's sum merges over dense task
  vectors — EDG experts, task arithmetic, DARE — or no patch at all) it is computed range by range (L2-sized on
  the CPU) straight into the live parameter (:func:`~..comfy_bridge.weights.write_patched_`): the same float
  operations in the same order as ComfyUI's load, so the same bits, with no whole-tensor temporaries. The DARE
  masks are kept packed, 1 bit per element per DARE term, in CPU RAM on their merge (``MergeSpec.masks``) for
  as long as the experts live, so a switch reads the base and fine-tune weights and writes the phase's weights
  once. Other keys (TIES, LoRA task vectors, several patches on one key, fp8 storage, convert/set functions)
  take ComfyUI's whole-tensor path, as before.
- Soft mode (the release's unused variant): a ``CALC_COND_BATCH`` wrapper evaluates both experts at every
  step and blends cond and uncond with λ = t/1000 for the dynamics expert, which equals the release's
  CFG weights w_dyn = cfg·t/1000, w_con = cfg − w_dyn. 2× the UNet cost per step and one in-place switch per
  step (the experts alternate, current one first); no second copy of the weights.
- Caches of the run that depend on the weights (the DynamiCrafter image tokens, :mod:`...runcache`) are
  invalidated at every switch.

Patches added downstream of the schedule (a LoRA loader after it) apply in every phase.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .. import families
from ..comfy_bridge.hooks import WrappersMP
from ..comfy_bridge.patchers import (ModelPatcher, ensure_skipped_params_patched, is_dynamic, is_model_patcher,
                                     lowvram_slot, mark_module_dirty)
from ..comfy_bridge.probes import string_to_seed
from ..comfy_bridge.sampling import DDPM_STEPS, ddpm_timestep, model_timestep
from ..comfy_bridge.weights import (LowVramPatch, backup_record, cast_to_device, copy_to_param, get_attr, key_weight,
                                    patched_weight, write_patched_many_)
from ..guards import add_merge_note, ensure_guards, merge_notes
from ..runcache import weights_changed

log = logging.getLogger("i2v_motion.schedule")

SCHEDULE_KEY = "i2v_motion.expert_schedule"
UNITS: tuple[str, ...] = ("timestep", "fraction")
MODES: tuple[str, ...] = ("hard", "soft")
CLOCKS: dict[str, str] = {
    "ddpm": "DDPM timesteps, 999 = pure noise",
    "model": "the model's own timestep, 1000 = pure noise (flow models such as Wan: σ·1000; Wan 2.2's official "
             "boundary is 900)",
}


# --------------------------------------------------------------------------------------------------
# the schedule (immutable; an attachment of the returned MODEL)

@dataclass(frozen=True)
class ExpertSchedule:
    """Per-phase weight patches of the experts and where the phases change.

    ``phases[i]`` maps each key on which the experts differ to expert i's own patch tuples. ``points``
    are the switch points from high noise to low noise: DDPM timesteps, descending (``unit='timestep'``,
    expert i runs while t > points[i] ≥ …), or fractions of the run's steps, ascending
    (``unit='fraction'``, expert i runs for steps < round(points[i]·steps)).
    """

    phases: tuple[dict, ...]
    keys: tuple[str, ...]
    points: tuple[float, ...]
    unit: str = "timestep"
    mode: str = "hard"
    names: tuple[str, ...] = ()
    clock: str = "ddpm"  # the timestep a "timestep" point is given in: CLOCKS (the family's switch_on)
    info: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_phases(self) -> int:
        return len(self.phases)

    def describe(self) -> str:
        if self.mode == "soft":
            return f"soft blend of {self.num_phases} experts (λ = t/1000), {len(self.keys)} differing weights"
        pts = ", ".join(f"{p:g}" for p in self.points)
        return f"{self.num_phases} experts, switch at {self.unit} {pts}, {len(self.keys)} differing weights"

    def timestep(self, model_sampling: Any, sigma: torch.Tensor) -> float:
        """Where ``sigma`` lies on this schedule's clock (see :data:`CLOCKS`)."""
        if self.clock == "model":
            return model_timestep(model_sampling, sigma)
        return ddpm_timestep(model_sampling, sigma)


def get_schedule(model: ModelPatcher) -> ExpertSchedule | None:
    """The expert schedule a MODEL carries (None for an ordinary MODEL)."""
    return model.get_attachment(SCHEDULE_KEY) if hasattr(model, "get_attachment") else None


def parse_points(text: str | float | Sequence[float]) -> tuple[float, ...]:
    """Switch points from a number, a sequence or a comma/space separated string ("750, 500, 250")."""
    if isinstance(text, (int, float)):
        return (float(text),)
    if isinstance(text, str):
        parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
        try:
            return tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(f"switch points must be numbers separated by commas (e.g. '750, 500, 250'); "
                             f"got {text!r}") from None
    return tuple(float(p) for p in text)


def check_points(points: Sequence[float], unit: str, num_models: int, clock: str = "ddpm") -> tuple[float, ...]:
    """Validate switch points for ``num_models`` experts; returns them as a tuple of floats."""
    if unit not in UNITS:
        raise ValueError(f"unknown switch unit {unit!r}; expected one of {', '.join(UNITS)}")
    pts = tuple(float(p) for p in points)
    if len(pts) != num_models - 1:
        raise ValueError(f"{num_models} experts need {num_models - 1} switch point(s); got {len(pts)} "
                         f"({', '.join(f'{p:g}' for p in pts) or 'none'})")
    for p in pts:
        if not math.isfinite(p):
            raise ValueError(f"switch points must be finite; got {p}")
        if unit == "timestep" and not 0.0 <= p <= DDPM_STEPS:
            raise ValueError(f"a timestep switch point must be in [0, {DDPM_STEPS}] ({CLOCKS.get(clock, clock)}); "
                             f"got {p:g}")
        if unit == "fraction" and not 0.0 <= p <= 1.0:
            raise ValueError(f"a fraction switch point must be in [0, 1] (share of the steps); got {p:g}")
    pairs = list(zip(pts, pts[1:]))
    if unit == "timestep" and any(a <= b for a, b in pairs):
        raise ValueError(f"timestep switch points go from high noise to low noise and must strictly decrease "
                         f"(e.g. 750, 500, 250); got {', '.join(f'{p:g}' for p in pts)}")
    if unit == "fraction" and any(a >= b for a, b in pairs):
        raise ValueError(f"fraction switch points go from the first steps to the last and must strictly "
                         f"increase (e.g. 0.25, 0.5, 0.75); got {', '.join(f'{p:g}' for p in pts)}")
    return pts


def _same_patches(a: Sequence, b: Sequence) -> bool:
    """Patch lists are equal when they hold the very same patch tuples (clones share them)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _non_weight_differences(ref: ModelPatcher, other: ModelPatcher) -> list[str]:
    out = []
    if {k: id(v) for k, v in ref.object_patches.items()} != {k: id(v) for k, v in other.object_patches.items()}:
        out.append("object patches")
    ro = {k for k in ref.model_options if k != "transformer_options"}
    oo = {k for k in other.model_options if k != "transformer_options"}
    if ro != oo:
        out.append("model options (" + ", ".join(sorted(ro ^ oo)) + ")")
    if any(other.hook_patches.values()):
        out.append("hook patches")
    return out


def expert_schedule(models: Sequence[ModelPatcher], points: Sequence[float] = (500.0,),
                    unit: str = "timestep", mode: str = "hard",
                    names: Sequence[str] | None = None) -> ModelPatcher:
    """One MODEL running ``models[0]`` at the highest noise, then ``models[1]``, … (see module doc).

    ``models`` must share their base (``models[0].is_clone(m)``) and differ only in weight patches.
    ``mode='soft'`` takes exactly two experts and ignores ``points``. The inputs are not modified.
    """
    models = list(models)
    if mode not in MODES:
        raise ValueError(f"unknown schedule mode {mode!r}; expected one of {', '.join(MODES)}")
    if len(models) < 2:
        raise ValueError("an expert schedule needs at least two MODELs")
    names = list(names) if names else [f"expert {i + 1}" for i in range(len(models))]
    for n, m in zip(names, models):
        if not is_model_patcher(m):
            raise TypeError(f"{n} must be a ComfyUI MODEL (ModelPatcher), got {type(m).__name__}")
        if get_schedule(m) is not None:
            raise ValueError(f"{n} is already an expert schedule; give the experts themselves (for more than two "
                             f"phases use the multi-expert node with several switch points)")
    ref = models[0]
    for n, m in zip(names[1:], models[1:]):
        if not ref.is_clone(m):
            raise ValueError(
                f"{n} is not the same base model as {names[0]}: the experts must be weight patches over one "
                f"loaded model (e.g. the two outputs of EDG Experts, or a model and the same model with a LoRA), "
                f"so that only one copy of the weights is resident. Two checkpoint loaders give two separate "
                f"models ({type(ref.model).__name__} at {id(ref.model):#x} vs {type(m.model).__name__} at "
                f"{id(m.model):#x}); build the experts from one base with Task Vector / Apply Task Vectors / "
                f"EDG Experts instead.")
        diff = _non_weight_differences(ref, m)
        if diff:
            log.warning("expert schedule: only weight patches switch between phases; %s differs from %s in %s, "
                        "which are taken from %s for the whole run", n, names[0], ", ".join(diff), names[0])
    if mode == "soft":
        if len(models) != 2:
            raise ValueError(f"soft mode blends exactly two experts (dynamics, control); got {len(models)}")
        pts: tuple[float, ...] = ()
    else:
        pts = check_points(points, unit, len(models), families.of_model(ref).switch_on)

    all_keys: list[str] = []
    seen = set()
    for m in models:
        for k in m.patches:
            if k not in seen:
                seen.add(k)
                all_keys.append(k)
    keys = tuple(k for k in all_keys
                 if any(not _same_patches(ref.patches.get(k, ()), m.patches.get(k, ())) for m in models[1:]))
    phases = tuple({k: tuple(m.patches.get(k, ())) for k in keys} for m in models)
    if not keys:
        log.warning("expert schedule: the experts have identical weight patches; every phase is %s", names[0])
    sched = ExpertSchedule(phases, keys, pts, unit, mode, tuple(names), families.of_model(ref).switch_on,
                           info={"differing_weights": len(keys)})

    out = ref.clone()
    out.set_attachments(SCHEDULE_KEY, sched)
    out.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, SCHEDULE_KEY, _outer_sample_wrapper)
    if mode == "soft":
        out.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, SCHEDULE_KEY, _soft_calc_cond_batch_wrapper)
    else:
        out.add_wrapper_with_key(WrappersMP.APPLY_MODEL, SCHEDULE_KEY, _apply_model_wrapper)
    ensure_skipped_params_patched(out)  # non-leaf parameters (the Resampler's latents) in every phase
    ensure_guards(out)
    for m in models[1:]:  # the sampling guard names every expert's merge when a result is non-finite
        for note in merge_notes(m):
            if note not in merge_notes(out):
                add_merge_note(out, note)
    log.info("expert schedule: %s", sched.describe())
    return out


# --------------------------------------------------------------------------------------------------
# one sampling run: where each differing weight lives and how to put a phase's value there

class _Slot:
    """One differing key in the loaded model: its kind and what is needed to switch and restore it.

    kinds: ``inplace`` (patched in place at load; base in ComfyUI's backup), ``own`` (live weight is the
    base: we add the backup record), ``lowvram`` (``LowVramPatch`` objects in ``<attr>_function`` compute it
    on every forward: low-VRAM partial loads), ``lowvram_add`` (a low-VRAM module without a patch for this
    key: we add a ``LowVramPatch``), ``dynamic`` (dynamic VRAM: the module's ``<attr>_lowvram_function``
    slot, a ``LowVramPatch`` or None, is replaced per phase and the module re-cast).
    """

    __slots__ = ("key", "kind", "module", "attr", "entry", "lvps", "lvp_orig", "added", "phase",
                 "set_func", "convert_func", "slot_orig")

    def __init__(self, key: str, kind: str, module: torch.nn.Module, attr: str):
        self.key, self.kind, self.module, self.attr = key, kind, module, attr
        self.entry = None
        self.lvps: list = []
        self.lvp_orig: list = []
        self.added = None
        self.phase = 0
        self.set_func = None
        self.convert_func = None
        self.slot_orig = None     # dynamic: the slot's object at load (a LowVramPatch or None)


_PHASE_LVPS = "_i2v_motion_phase_lvps"


def _phase_lowvram_patch(module: torch.nn.Module, key: str, patches: list, like: Any):
    """A ``LowVramPatch`` computing ``key`` with ``patches``, cached on the module per patch list: ComfyUI may
    pin a patch object's prepared tensors, so one object must always stand for the same patches."""
    cache = module.__dict__.setdefault(_PHASE_LVPS, {})
    sig = (key, tuple(id(p) for p in patches))
    hit = cache.get(sig)
    if hit is not None and len(hit[1]) == len(patches) and all(x is y for x, y in zip(hit[1], patches)):
        return hit[0]
    lvp = LowVramPatch(key, {key: list(patches)})
    pin_state = getattr(like, "_pin_state", None) or getattr(module, "_pin_state", None)
    if pin_state is not None:
        lvp._pin_state = pin_state
    cache[sig] = (lvp, tuple(patches))  # holds the patch tuples, so their ids stay unique
    return lvp


class ScheduleRun:
    """Per-run state of a scheduled MODEL: which phase is materialized, and how to switch back."""

    def __init__(self, patcher: ModelPatcher, schedule: ExpertSchedule):
        self.patcher = patcher
        self.schedule = schedule
        self.phase = 0
        self.slots: dict[str, _Slot] = {}
        self._fraction_sigmas: tuple[int, list[float]] | None = None
        self.lists = self._phase_lists(patcher, schedule)
        self._check_hooks()
        self.stats = {"fast": 0, "generic": 0}  # weights written range by range / by ComfyUI's whole-tensor path
        for lists in self.lists:  # every differing key is evaluated again at each switch: keep DARE masks packed
            for plist in lists.values():
                for patch in plist:
                    retain = getattr(patch[1], "retain_masks", None)
                    if callable(retain):
                        retain()

    # ---- plan

    @staticmethod
    def _phase_lists(patcher: ModelPatcher, sched: ExpertSchedule) -> list[dict[str, list]]:
        """Patch lists per phase for the run patcher: phase 0 is what ComfyUI loads (the run patcher's own
        list); phase i is expert i's list plus whatever was appended downstream of the schedule."""
        lists: list[dict[str, list]] = [dict() for _ in sched.phases]
        odd = []
        for k in sched.keys:
            run = list(patcher.patches.get(k, ()))
            own = sched.phases[0].get(k, ())
            if _same_patches(run[:len(own)], own):
                suffix = run[len(own):]
            else:
                suffix = []
                odd.append(k)
            lists[0][k] = run
            for i in range(1, len(sched.phases)):
                lists[i][k] = list(sched.phases[i].get(k, ())) + suffix
        if odd:
            log.warning("expert schedule: %d weight(s) had their first expert's patches replaced downstream "
                        "(e.g. %s); the later phases use their experts' own patches there", len(odd), odd[0])
        return lists

    def _check_hooks(self) -> None:
        hooked = set()
        for hp in self.patcher.hook_patches.values():
            hooked.update(hp)
        clash = hooked.intersection(self.schedule.keys)
        if clash:
            raise ValueError(f"expert schedule: weight hooks (conditioning-scheduled LoRAs) patch {len(clash)} of the "
                             f"weights the experts switch (e.g. {sorted(clash)[0]}); that combination is not "
                             f"supported — apply those LoRAs as ordinary model patches instead")

    # ---- phase of a model evaluation

    def phase_for(self, sigma: torch.Tensor, model_sampling: Any, sample_sigmas: torch.Tensor | None) -> int:
        """Phase of an evaluation at ``sigma`` (first element of a batch)."""
        sched = self.schedule
        if not sched.points:
            return 0
        if sched.unit == "timestep":
            t = sched.timestep(model_sampling, sigma)
            return sum(1 for p in sched.points if t <= p)
        thr = self._fraction_thresholds(sample_sigmas)
        if thr is None:
            return 0
        s = float(sigma.detach().reshape(-1)[0])
        return sum(1 for th in thr if s <= th * (1 + 1e-5) + 1e-12)

    def _fraction_thresholds(self, sample_sigmas: torch.Tensor | None) -> list[float] | None:
        if sample_sigmas is None:
            log.warning("expert schedule: no sample_sigmas in this run; fraction switch points cannot be placed "
                        "and the first expert runs throughout")
            return None
        if self._fraction_sigmas is not None and self._fraction_sigmas[0] == id(sample_sigmas):
            return self._fraction_sigmas[1]
        sig = [float(s) for s in sample_sigmas.detach().reshape(-1).cpu()]
        n = len(sig) - 1
        thr = []
        for f in self.schedule.points:
            k = int(math.floor(f * n + 0.5))
            thr.append(sig[k] if k < n else -1.0)  # k == n: never switch (no evaluation at the last sigma)
        self._fraction_sigmas = (id(sample_sigmas), thr)
        return thr

    # ---- materialization

    def _slot(self, key: str) -> _Slot:
        slot = self.slots.get(key)
        if slot is not None:
            return slot
        p = self.patcher
        path, _, attr = key.rpartition(".")
        module = get_attr(p.model, path) if path else p.model
        fns = getattr(module, f"{attr}_function", None)
        dyn = getattr(module, lowvram_slot(attr), None)
        _, set_func, convert_func = key_weight(p.model, key)
        if key in p.backup:
            slot = _Slot(key, "inplace", module, attr)
            slot.entry = p.backup[key]
        elif dyn is not None and getattr(dyn, "key", None) == key or \
                dyn is None and is_dynamic(p) and hasattr(module, lowvram_slot(attr)):
            slot = _Slot(key, "dynamic", module, attr)
            slot.slot_orig = dyn
        elif [f for f in (fns or []) if isinstance(f, LowVramPatch) and f.key == key]:
            slot = _Slot(key, "lowvram", module, attr)
            slot.lvps = [f for f in fns if isinstance(f, LowVramPatch) and f.key == key]
            slot.lvp_orig = [f.patches for f in slot.lvps]
        elif fns is not None and getattr(module, "comfy_cast_weights", False) \
                and not getattr(module, "comfy_patched_weights", False):
            slot = _Slot(key, "lowvram_add", module, attr)
        else:
            slot = _Slot(key, "own", module, attr)
            live = get_attr(p.model, key)
            slot.entry = backup_record(live.data.to(device=p.offload_device, copy=True), True)
            p.backup[key] = slot.entry
        slot.set_func, slot.convert_func = set_func, convert_func
        self.slots[key] = slot
        return slot

    def _value(self, slot: _Slot, patches: list, like: torch.Tensor) -> torch.Tensor:
        """ComfyUI's ``patch_weight_to_device`` arithmetic: base → compute dtype of ``like``'s device
        (``lora_compute_dtype``) → patches → dtype of ``like`` (stochastic rounding seeded by the key)."""
        base = slot.entry.weight
        if not patches and slot.set_func is None and slot.convert_func is None:
            return cast_to_device(base, like.device, like.dtype, copy=True)  # as stored
        return patched_weight(base, patches, slot.key, like.device, convert_func=slot.convert_func,
                              round_to=like.dtype if slot.set_func is None else None)

    def _put(self, slot: _Slot, phase: int) -> None:
        if slot.phase == phase:
            return
        key, model = slot.key, self.patcher.model
        patches = self.lists[phase][key]
        if slot.kind == "dynamic":
            if phase == 0:
                new = slot.slot_orig
            else:
                new = _phase_lowvram_patch(slot.module, key, patches, slot.slot_orig) if patches else None
            setattr(slot.module, lowvram_slot(slot.attr), new)
            mark_module_dirty(slot.module)
        elif slot.kind == "lowvram":
            for f, orig in zip(slot.lvps, slot.lvp_orig):
                f.patches = orig if phase == 0 else {key: patches}
                if getattr(f, "prepared_patches", None) is not None:
                    f.prepared_patches = None
        elif slot.kind == "lowvram_add":
            fns = getattr(slot.module, f"{slot.attr}_function")
            if phase == 0 or not patches:
                if slot.added is not None and slot.added in fns:
                    fns.remove(slot.added)
                slot.added = None
            else:
                if slot.added is None:
                    slot.added = LowVramPatch(key, {key: patches}, slot.convert_func, slot.set_func)
                    fns.insert(0, slot.added)
                slot.added.patches = {key: patches}
        else:  # a loaded weight with a set/convert function (the others are written by ranges in _put_all)
            self._put_whole(slot, patches, get_attr(model, key))
        slot.phase = phase

    def _put_whole(self, slot: _Slot, patches: list, live: torch.Tensor) -> None:
        """A loaded weight written through ComfyUI's whole-tensor path."""
        self.stats["generic"] += 1
        out = self._value(slot, patches, live)
        if slot.set_func is None:
            copy_to_param(self.patcher.model, slot.key, out)
        else:
            slot.set_func(out, inplace_update=True, seed=string_to_seed(slot.key))

    def _put_all(self, slots: Sequence[_Slot], phase: int) -> list[tuple[str, Exception]]:
        """:meth:`_put` for many slots: the loaded weights that can be written range by range are written together
        (shared out over the CPU's threads); the rest one by one. Returns the (key, error) of slots that failed."""
        model, errors, ranged = self.patcher.model, [], []
        for slot in slots:
            if slot.phase == phase:
                continue
            if slot.kind in ("inplace", "own") and slot.set_func is None and slot.convert_func is None:
                ranged.append(slot)
                continue
            try:
                self._put(slot, phase)
            except Exception as e:  # noqa: BLE001 - the caller reports
                errors.append((slot.key, e))
        lives = [get_attr(model, slot.key) for slot in ranged]
        done = write_patched_many_([(live.data, slot.entry.weight, self.lists[phase][slot.key], slot.key)
                                    for slot, live in zip(ranged, lives)])
        for slot, live, ok in zip(ranged, lives, done):
            try:
                if isinstance(ok, Exception):
                    raise ok
                if ok:
                    self.stats["fast"] += 1
                else:
                    self._put_whole(slot, self.lists[phase][slot.key], live)
                slot.phase = phase
            except Exception as e:  # noqa: BLE001 - the caller reports
                errors.append((slot.key, e))
        return errors

    def activate(self, phase: int, t: float | None = None, transformer_options: dict | None = None) -> None:
        """Materialize ``phase``'s weights (no-op when already there); the run's weight-dependent caches in
        ``transformer_options`` are invalidated."""
        if phase == self.phase:
            return
        soft = self.schedule.mode == "soft"
        start = time.perf_counter()
        weights_changed(transformer_options)
        with torch.no_grad():
            errors = self._put_all([self._slot(key) for key in self.schedule.keys], phase)
        if errors:
            raise errors[0][1]  # as raised (the schedule's restore at the end of the run puts phase 0 back)
        dt = time.perf_counter() - start
        if not soft:
            names = self.schedule.names
            log.info("expert schedule: %s → %s at t=%s, %d weights in %.2f s",
                     names[self.phase] if self.phase < len(names) else self.phase,
                     names[phase] if phase < len(names) else phase,
                     "?" if t is None else f"{t:g}", len(self.schedule.keys), dt)
        self.phase = phase

    def restore(self) -> None:
        """Put phase 0 back everywhere this run touched and drop this run's backup records and caches.

        Keys whose ComfyUI backup record changed meanwhile (the model was unloaded or reloaded during the
        run) are left to ComfyUI, which already restored them."""
        p = self.patcher
        errors = []
        put = []
        with torch.no_grad():
            for key, slot in self.slots.items():
                try:
                    if slot.kind in ("lowvram", "lowvram_add", "dynamic"):
                        put.append(slot)
                        continue
                    if p.backup.get(key) is not slot.entry:
                        continue  # ComfyUI unpatched (and possibly repatched) it: not ours any more
                    if slot.kind == "own":
                        param = get_attr(p.model, key)
                        if slot.phase != 0:
                            param.data.copy_(slot.entry.weight.to(param.device))
                        p.backup.pop(key, None)
                        slot.phase = 0
                    else:
                        put.append(slot)
                except Exception as e:  # keep restoring the others; report below
                    errors.append((key, e))
            errors += self._put_all(put, 0)  # (keeps going past a failed weight too)
        self.slots.clear()
        self.phase = 0
        if errors:
            # ComfyUI must not trust the loaded weights: a fresh uuid makes the next load unpatch and repatch
            import uuid
            p.model.current_weight_patches_uuid = uuid.uuid4()
            key, e = errors[0]
            raise RuntimeError(f"expert schedule: could not restore {len(errors)} weight(s) (first {key}: {e}); "
                               f"the model will be reloaded on next use") from e


# --------------------------------------------------------------------------------------------------
# wrappers (module-level functions: they survive clones and are shared by them)

def _outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    patcher = getattr(guider, "model_patcher", None)
    sched = get_schedule(patcher) if patcher is not None else None
    if sched is None:
        return executor(*args, **kwargs)
    run = ScheduleRun(patcher, sched)
    topts = guider.model_options.setdefault("transformer_options", {})
    prev = topts.get(SCHEDULE_KEY)
    topts[SCHEDULE_KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        try:
            run.restore()
        finally:
            if prev is None:
                topts.pop(SCHEDULE_KEY, None)
            else:
                topts[SCHEDULE_KEY] = prev


def _video_phases(run: ScheduleRun, x: torch.Tensor, t: torch.Tensor, ms: Any, sample_sigmas, frames: int) -> list[int]:
    """Phase of every video of a frames-as-batch evaluation (``frames`` per video): the noisiest frame of a
    video decides, so a video never runs with two experts."""
    sig = t.detach().reshape(-1)
    if sig.numel() != x.shape[0] or frames < 1 or x.shape[0] % frames:
        return [run.phase_for(t, ms, sample_sigmas)]
    per_video = sig.reshape(-1, frames).max(dim=1).values
    if bool((per_video == per_video[0]).all()):
        return [run.phase_for(per_video[:1], ms, sample_sigmas)] * per_video.numel()
    return [run.phase_for(v.reshape(1), ms, sample_sigmas) for v in per_video]


def _rows(v: Any, rows: torch.Tensor, n: int) -> Any:
    """``v`` restricted to the batch rows ``rows`` where it has one row per frame (``n``); else unchanged."""
    if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == n:
        return v.index_select(0, rows.to(v.device))
    return v


def _apply_model_wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                         **kwargs):
    run = transformer_options.get(SCHEDULE_KEY) if transformer_options else None
    if not isinstance(run, ScheduleRun):
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    ms = executor.class_obj.model_sampling
    sample_sigmas = transformer_options.get("sample_sigmas")
    frames = kwargs.get("num_video_frames")
    frames = int(frames) if isinstance(frames, int) and frames > 0 else 1
    phases = _video_phases(run, x, t, ms, sample_sigmas, frames)
    if len(set(phases)) == 1:
        if phases[0] != run.phase:
            run.activate(phases[0], run.schedule.timestep(ms, t), transformer_options)
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    # videos at different noise levels: each group of videos with its own expert, never a video split
    if control is not None:
        raise NotImplementedError("expert schedule: the videos of this batch are at noise levels of different "
                                  "experts, which cannot be combined with a ControlNet; sample them separately")
    n = x.shape[0]
    out = None
    order = sorted(set(phases), key=lambda p: (p != run.phase, p))  # current weights first
    for p in order:
        rows = torch.tensor([v * frames + f for v, q in enumerate(phases) if q == p for f in range(frames)],
                            device=x.device)
        run.activate(p, run.schedule.timestep(ms, t.reshape(-1)[rows[:1]]), transformer_options)
        part = executor(x.index_select(0, rows), _rows(t, rows, n), _rows(c_concat, rows, n),
                        _rows(c_crossattn, rows, n), None, transformer_options,
                        **{k: _rows(v, rows, n) for k, v in kwargs.items()})
        if out is None:
            out = part.new_empty((n,) + tuple(part.shape[1:]))
        out.index_copy_(0, rows, part)
    return out


def _blend(a, b, lam: float):
    if a is None or b is None:
        return a if b is None else b
    return a * lam + b * (1.0 - lam)


def _soft_calc_cond_batch_wrapper(executor, model, conds, x_in, timestep, model_options):
    topts = model_options.get("transformer_options", {})
    run = topts.get(SCHEDULE_KEY)
    if not isinstance(run, ScheduleRun):
        return executor(model, conds, x_in, timestep, model_options)
    t = run.schedule.timestep(model.model_sampling, timestep)
    lam = min(max(t / DDPM_STEPS, 0.0), 1.0)  # dynamics weight: w_dyn / cfg
    if lam >= 1.0:
        run.activate(0, t, topts)
        return executor(model, conds, x_in, timestep, model_options)
    if lam <= 0.0:
        run.activate(1, t, topts)
        return executor(model, conds, x_in, timestep, model_options)
    outs: dict[int, list] = {}
    for phase in ((run.phase, 1 - run.phase) if run.phase in (0, 1) else (0, 1)):  # current weights first
        run.activate(phase, t, topts)
        outs[phase] = executor(model, conds, x_in, timestep, model_options)
    return [_blend(d, c, lam) for d, c in zip(outs[0], outs[1])]


__all__ = ["SCHEDULE_KEY", "UNITS", "MODES", "ExpertSchedule", "ScheduleRun", "expert_schedule", "get_schedule",
           "parse_points", "check_points", "CLOCKS"]
