"""Lazy, per-key ComfyUI integration of task vectors, DARE, TIES and the EDG experts.

Nothing is computed when a node runs: a merged MODEL is ``base.clone()`` plus one weight patch per key
(``MergeAdapter``, a ``comfy.weight_adapter.WeightAdapterBase``). The patch holds *references* to the
source models' weight tensors (and their own patches), and ``comfy.lora.calculate_weight`` calls it
when ComfyUI loads that key, fully or through a low-VRAM ``LowVramPatch``. So merges stack with LoRAs
and core merge nodes, and the same inputs give bit-identical weights whatever the load order or mode:
the merged value is computed in float32 and rounded once to the key's storage dtype.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..comfy_bridge.finite import nonfinite
from ..comfy_bridge.patchers import ModelPatcher, ensure_skipped_params_patched, is_model_patcher
from ..comfy_bridge.probes import rounds_elementwise
from ..comfy_bridge.weights import (WeightAdapterBase, backed_up_weight, cast_to_device, patched_weight,
                                    round_to_storage, stored_weight)
from ..guards import MergeNote, add_merge_note, ensure_guards

from .filters import DIFFUSION_PREFIX, KeyFilter, detect_architecture
from .methods import PARAMS, get_method
from .ops import (check_drop_rate, dare_apply_, dare_keep_mask, edg_dynamics_delta_coeff, pack_mask, ties_merge,
                  unpack_mask)

log = logging.getLogger("i2v_motion.merging")

_MAX_LISTED = 8


def _listing(keys: Sequence[str], limit: int = _MAX_LISTED) -> str:
    keys = list(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# --------------------------------------------------------------------------------------------------
# references to weights (no copies)

_MATH_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # fp8 storage has no arithmetic
_SPAN_BASE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

@dataclass(frozen=True)
class WeightRef:
    """One key of one model as ComfyUI sees it: the stored tensor, its convert_func and the model's own patches on
    that key. Evaluated lazily; never copied at creation.

    Backup-aware when evaluated: while the model (``source``, or a clone: they share backup records) is loaded with
    patched values in the live tensor — an expert schedule writes a phase in place into the very tensor a merge
    reads its base from — the stored weight is read from the backup record."""

    weight: torch.Tensor
    convert_func: Any
    patches: tuple
    source: Any = field(default=None, compare=False, repr=False)
    key: str = ""

    def stored(self) -> torch.Tensor:
        """The stored weight now: the source model's backup record where there is one, else :attr:`weight`."""
        if self.source is not None:
            bk = backed_up_weight(self.source, self.key)
            if bk is not None:
                return bk
        return self.weight

    def evaluate(self, key: str, device: torch.device, *, exact_dtype: bool = True) -> tuple[torch.Tensor, bool]:
        """The effective weight on ``device``: (tensor, owned). float32 and owned when ``exact_dtype``, when
        there is anything to apply or when the stored dtype has no arithmetic (fp8); otherwise the stored
        tensor moved (not converted) to ``device``."""
        w = self.stored()
        if not exact_dtype and self.convert_func is None and not self.patches and w.dtype in _MATH_DTYPES:
            t = cast_to_device(w, device, None)
            return t, t is not w
        return patched_weight(w, self.patches, key, device, compute_dtype=torch.float32,
                              convert_func=self.convert_func), True

    @property
    def plain(self) -> bool:
        """True when the effective weight is the stored tensor itself (no patches, no convert_func), contiguous:
        then :meth:`evaluate_span` gives elements of :meth:`evaluate` one range at a time."""
        return self.convert_func is None and not self.patches and self.stored().is_contiguous()

    def evaluate_span(self, device: torch.device, start: int, stop: int, *, exact_dtype: bool = True) -> torch.Tensor:
        """Flat elements ``[start, stop)`` of :meth:`evaluate` (a :attr:`plain` ref only), the same cast per element;
        not a copy where :meth:`evaluate` would not copy either, or with ``exact_dtype`` where the weight is float32
        on ``device`` already (the caller must not write into it then)."""
        w = self.stored()
        flat = w.detach().reshape(-1)[start:stop]
        if not exact_dtype and w.dtype in _MATH_DTYPES:
            return cast_to_device(flat, device, None)
        return cast_to_device(flat, device, torch.float32, copy=False)


def weight_refs(model: ModelPatcher, keys: Sequence[str]) -> dict[str, WeightRef]:
    """References to ``keys`` of ``model`` (as ``ModelPatcher.get_key_patches`` sees them), no copies."""
    out = {}
    for k in keys:
        weight, _set_func, convert_func = stored_weight(model, k)
        out[k] = WeightRef(weight, convert_func, tuple(model.patches.get(k, ())), model, k)
    return out


def diffusion_param_keys(model: ModelPatcher) -> dict[str, torch.Size]:
    """Floating-point *parameters* under ``diffusion_model.`` (buffers never take part) → shape."""
    out = {}
    for name, p in model.model.named_parameters():
        if name.startswith(DIFFUSION_PREFIX) and (p.is_floating_point() or p.is_complex()):
            out[name] = p.shape
    # parameters replaced while a model is loaded keep their names; backups hold the stored shapes
    return out


def model_fingerprint(model: ModelPatcher, keys: Sequence[str]) -> str:
    """Cheap identity of a model's stored weights: BLAKE2b over the first bytes of up to 16 keys."""
    h = hashlib.blake2b(digest_size=12)
    refs = weight_refs(model, list(keys)[:: max(1, len(keys) // 16)][:16])
    for k, r in refs.items():
        t = r.weight.detach().reshape(-1)[:2048].to("cpu", copy=True).contiguous()
        h.update(k.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())
        h.update(str(len(r.patches)).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# task vectors

class KeyedVector:
    """What every task vector shares (fine-tune − base, a LoRA): the keys a filter selected, their shapes and the
    ``describe()`` a node shows. Subclasses give ``delta``/``scaled_delta`` and may give ranges (``spans``)."""

    folds_scale = False  # True: scaled_delta folds a term's coefficient into its own arithmetic

    def __init__(self, keys: Sequence[str], shapes: dict[str, torch.Size], key_filter: KeyFilter, info: dict):
        self.keys = tuple(keys)
        self._key_set = frozenset(self.keys)
        self.shapes = shapes
        self.key_filter = key_filter
        self.info = info

    def __contains__(self, key: str) -> bool:
        return key in self._key_set

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def num_params(self) -> int:
        return sum(torch.Size(self.shapes[k]).numel() for k in self.keys)

    def describe(self) -> dict:
        info = {k: v for k, v in self.info.items() if k != "skipped_keys"}
        return {"filter": self.key_filter.describe(), "keys": len(self.keys), "params": self.num_params, **info}

    def spans(self, key: str) -> bool:
        """Whether ``delta_span`` gives this key's delta range by range (none by default)."""
        return False

    def delta(self, key: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """The delta for one key: a new float32 tensor on ``device``."""
        return self.scaled_delta(key, device, 1.0)

    def scaled_delta(self, key: str, device: torch.device | str, scale: float) -> torch.Tensor:
        raise NotImplementedError


class TaskVector(KeyedVector):
    """τ = θ_finetune − θ_base over the keys a filter selects (the value on I2V_TASK_VECTOR sockets).

    Holds references to both ModelPatchers and to their weights as they were when it was made (later
    changes to those patchers do not leak in); computes τ per key on demand, in float32.
    """

    def __init__(self, base: ModelPatcher, finetune: ModelPatcher,
                 key_filter: KeyFilter, keys: Sequence[str], base_refs: dict[str, WeightRef],
                 ft_refs: dict[str, WeightRef], shapes: dict[str, torch.Size], info: dict):
        super().__init__(keys, shapes, key_filter, info)
        self.base = base
        self.finetune = finetune
        self.base_refs = base_refs
        self.ft_refs = ft_refs

    def delta(self, key: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """τ for one key: a new float32 tensor on ``device`` (owned by the caller)."""
        device = torch.device(device)
        ft, _ = self.ft_refs[key].evaluate(key, device, exact_dtype=True)
        base, _ = self.base_refs[key].evaluate(key, device, exact_dtype=False)
        return ft.sub_(base)

    def spans(self, key: str) -> bool:
        """Whether :meth:`delta_span` gives this key's τ range by range: both weights stored as they are used, the
        base in a dtype ``ft − base`` promotes to float32 (float32, float16, bfloat16)."""
        base = self.base_refs[key]
        return self.ft_refs[key].plain and base.plain and base.stored().dtype in _SPAN_BASE_DTYPES

    def delta_span(self, key: str, device: torch.device | str, start: int, stop: int) -> torch.Tensor:
        """Flat elements ``[start, stop)`` of :meth:`delta`, a new float32 tensor: ``ft − base`` per element with the
        base promoted to float32 (float32, float16 or bfloat16: :meth:`spans`), as :meth:`delta` computes it."""
        device = torch.device(device)
        ft = self.ft_refs[key].evaluate_span(device, start, stop, exact_dtype=True)  # float32, maybe not a copy
        return torch.sub(ft, self.base_refs[key].evaluate_span(device, start, stop, exact_dtype=False))

    def scaled_delta(self, key: str, device: torch.device | str, scale: float) -> torch.Tensor:
        """``scale``·τ for one key (a new float32 tensor)."""
        v = self.delta(key, device)
        return v.mul_(scale) if scale != 1.0 else v


def describe_model(m: ModelPatcher) -> str:
    """A short name of what a MODEL is, for messages naming both sides of a mismatch."""
    variant = getattr(m.model, "variant", None)
    if variant is not None:
        return f"DynamiCrafter {variant.name}"
    return type(m.model).__name__


def make_task_vector(base: ModelPatcher, finetune: ModelPatcher,
                     preset: str = "all", regex: str = "", *, check_finite: bool = True,
                     allow_partial: bool = False) -> TaskVector:
    """Validate two models and build the task vector over the keys selected by ``preset``/``regex``.

    Errors (ValueError, naming keys and both models): different model classes or variants, mostly disjoint
    keys, a filter that selects nothing, different shapes for a key, non-finite weights, and keys present in
    only one model — unless ``allow_partial``, which merges the shared keys and records the skipped ones in
    ``info["skipped_keys"]``.
    """
    for name, m in (("base", base), ("finetune", finetune)):
        if not is_model_patcher(m):
            raise TypeError(f"{name} must be a ComfyUI MODEL (ModelPatcher), got {type(m).__name__}")
    cb, cf = type(base.model), type(finetune.model)
    if cb is not cf:
        raise ValueError(f"models of different architectures: base is {cb.__module__}.{cb.__name__}, "
                         f"fine-tune is {cf.__module__}.{cf.__name__}")
    vb, vf = getattr(base.model, "variant", None), getattr(finetune.model, "variant", None)
    if vb is not None and vf is not None and vb.v_prediction != vf.v_prediction and not allow_partial:
        raise ValueError(f"base is {describe_model(base)} ({'v' if vb.v_prediction else 'eps'}-prediction) but the "
                         f"fine-tune is {describe_model(finetune)} ({'v' if vf.v_prediction else 'eps'}-prediction): "
                         f"a task vector needs two variants of one model (e.g. DynamiCrafter 512 and its CIL fine-tune)")
    key_filter = KeyFilter(preset, regex or "")
    bshapes = diffusion_param_keys(base)
    fshapes = diffusion_param_keys(finetune)
    common = [k for k in bshapes if k in fshapes]
    if len(common) < 0.5 * min(len(bshapes), len(fshapes)) or not common:
        only_b = [k for k in bshapes if k not in fshapes]
        raise ValueError(
            f"models of different architectures: only {len(common)} of {len(bshapes)} base / {len(fshapes)} "
            f"fine-tune diffusion-model keys are shared (base-only e.g.: {_listing(only_b, 5)})")
    pred = key_filter.predicate(list(bshapes) + [k for k in fshapes if k not in bshapes])
    only_b = [k for k in bshapes if k not in fshapes and pred(k)]
    only_f = [k for k in fshapes if k not in bshapes and pred(k)]
    absent = only_b + only_f
    if absent and not allow_partial:
        sides = "; ".join(f"only the {side} ({describe_model(m)}) has {len(ks)}, e.g. {_listing(ks, 3)}"
                          for side, m, ks in (("base", base, only_b), ("fine-tune", finetune, only_f)) if ks)
        raise ValueError(f"the models differ in {len(absent)} selected weight(s): {sides}. They are different "
                         f"variants or architectures; turn on allow_partial to merge only the shared weights")
    if absent:
        log.warning("task vector: %d selected key(s) exist in only one model and are skipped: %s",
                    len(absent), _listing(absent))
    keys = [k for k in common if pred(k)]
    if not keys:
        arch = detect_architecture(bshapes)
        raise ValueError(f"filter {key_filter.describe()} selects no weight of this {arch} model "
                         f"(its keys look like: {_listing(common, 4)})")
    mismatched = [f"{k} {tuple(bshapes[k])} vs {tuple(fshapes[k])}" for k in keys if bshapes[k] != fshapes[k]]
    if mismatched:
        raise ValueError(f"shape mismatch between base and fine-tune for {len(mismatched)} key(s): "
                         f"{_listing(mismatched)}")
    base_refs = weight_refs(base, keys)
    ft_refs = weight_refs(finetune, keys)
    if check_finite:
        for name, refs in (("fine-tune", ft_refs), ("base", base_refs)):
            bad = nonfinite((k, r.weight) for k, r in refs.items())
            if bad:
                raise ValueError(f"non-finite values (NaN/Inf) in the {name} weights at {len(bad)} key(s): "
                                 f"{_listing(bad)}")
    info = {
        "architecture": detect_architecture(bshapes),
        "model_class": f"{cb.__module__}.{cb.__name__}",
        "base_fingerprint": model_fingerprint(base, keys),
        "finetune_fingerprint": model_fingerprint(finetune, keys),
        "skipped_absent_keys": len(absent),
        "skipped_keys": absent,
    }
    return TaskVector(base, finetune, key_filter, keys, base_refs, ft_refs, {k: bshapes[k] for k in keys}, info)


# --------------------------------------------------------------------------------------------------
# merge specification and the weight adapter

@dataclass(frozen=True)
class Term:
    """One summand: ``coeff · [DARE](τ_source)`` (``source``: index into the spec's task vectors); ``tag``
    separates the DARE masks of different terms."""

    source: int
    coeff: float
    dare: bool = False
    tag: str = ""


class MaskStore:
    """The DARE keep masks of one :class:`MergeSpec`, packed 1 bit per element (CPU RAM), so that evaluating a key
    again (an expert switch, a low-VRAM or dynamic-VRAM forward, a reload) unpacks its mask instead of drawing it
    from the generator again. A mask is kept from its second use on, or from its first once :meth:`retain` was
    called (the expert schedule does: it re-evaluates every differing key at each switch). Cost: 1 bit per element
    of each DARE'd tensor per DARE term (≈ 0.19 GB for the 1.49 B parameters of DynamiCrafter-512, per term)."""

    def __init__(self):
        self._packed: dict[tuple, torch.Tensor] = {}
        self._seen: set[tuple] = set()
        self.retain_all = False

    def retain(self) -> None:
        self.retain_all = True

    @property
    def nbytes(self) -> int:
        return sum(t.numel() for t in self._packed.values())

    def __len__(self) -> int:
        return len(self._packed)

    def keep(self, key: str, tag: str, shape: torch.Size, p: float, seed: int, device: torch.device,
             span: tuple[int, int] | None = None, dtype: torch.dtype = torch.bool) -> torch.Tensor:
        """The keep mask of ``(seed, tag, key)``: of ``shape`` on ``device``, or flat elements ``span``; bool, or
        0/1 of ``dtype``."""
        ident = (key, tag, tuple(shape), float(p), int(seed))
        packed = self._packed.get(ident)
        if packed is None:
            mask = dare_keep_mask(shape, p, seed, key, tag)
            if self.retain_all or ident in self._seen or span is not None:
                packed = self._packed[ident] = pack_mask(mask)
                self._seen.discard(ident)
            else:
                self._seen.add(ident)
            if span is None:
                return mask.to(device, non_blocking=True).to(dtype)
        if span is None:
            return unpack_mask(packed, 0, math.prod(shape), device, dtype).reshape(tuple(shape))
        return unpack_mask(packed, span[0], span[1], device, dtype)


@dataclass(frozen=True)
class MergeSpec:
    """θ = weight_scale·θ + combine_k(terms); combine is a sum or TIES (trim/elect/disjoint mean)."""

    task_vectors: tuple
    terms: tuple
    method: str = "sum"          # the consensus: "sum" | "ties"
    p: float = 0.0               # DARE drop rate for terms with dare=True
    seed: int = 0
    keep_1d: bool = True
    density: float | None = None  # TIES top-k fraction (None: no trim)
    weight_scale: float = 1.0
    recipe: dict = field(default_factory=dict, compare=False, hash=False)
    masks: MaskStore = field(default_factory=MaskStore, init=False, compare=False, hash=False, repr=False)

    def spans(self, key: str) -> bool:
        """Whether :meth:`merged_delta` can be evaluated range by range for ``key`` with the bits of the whole: a
        sum (TIES needs every element of a term: top-k, sign election) over dense task vectors whose weights are
        stored as used (a LoRA's delta is a matrix product, not elementwise)."""
        if self.method != "sum":
            return False
        used = [self.task_vectors[t.source] for t in self.terms if key in self.task_vectors[t.source]]
        return bool(used) and all(tv.spans(key) for tv in used)

    def merged_delta(self, key: str, device: torch.device | str = "cpu",
                     span: tuple[int, int] | None = None) -> torch.Tensor:
        """Σ (or TIES of) the terms for one key: a float32 tensor on ``device``; with ``span`` = (start, stop) only
        those flat elements (start a multiple of 8; only where :meth:`spans`), bit for bit the same values."""
        device = torch.device(device)
        uses: dict[int, int] = {}
        for t in self.terms:
            if key in self.task_vectors[t.source]:
                uses[t.source] = uses.get(t.source, 0) + 1
        taus: dict[int, torch.Tensor] = {}
        parts: list[torch.Tensor] = []
        for t in self.terms:
            if t.source not in uses:
                continue
            tv = self.task_vectors[t.source]
            if tv.folds_scale and not (t.dare and self.p > 0.0):
                # a LoRA: coefficient folded into its own scale, as core applies a LoRA at that strength (bit for bit)
                if span is not None:
                    raise ValueError(f"merged_delta: {key} cannot be evaluated by ranges (a LoRA task vector)")
                uses[t.source] -= 1
                parts.append(tv.scaled_delta(key, device, t.coeff))
                continue
            if t.source not in taus:
                taus[t.source] = tv.delta(key, device) if span is None else tv.delta_span(key, device, *span)
            uses[t.source] -= 1
            v = taus[t.source] if uses[t.source] == 0 else taus[t.source].clone()
            if t.dare and self.p > 0.0:
                shape = tv.shapes[key]
                if not (self.keep_1d and len(shape) <= 1):  # what ops.dare leaves untouched
                    keep = self.masks.keep(key, t.tag, shape, self.p, self.seed, device, span, v.dtype)
                    v = dare_apply_(v, keep, self.p)
            if t.coeff != 1.0:
                v.mul_(t.coeff)
            parts.append(v)
        if not parts:
            raise KeyError(key)
        if self.method == "ties":
            if span is not None:
                raise ValueError(f"merged_delta: a TIES merge of {key} cannot be evaluated by ranges")
            return ties_merge(parts, self.density)
        out = parts[0]
        for v in parts[1:]:
            out.add_(v)
        return out

    def merged_weight(self, key: str, weight: torch.Tensor) -> torch.Tensor:
        """The merged float32 weight for one key given the base weight (not modified)."""
        w = weight.to(torch.float32, copy=True)
        if self.weight_scale != 1.0:
            w.mul_(self.weight_scale)
        return w.add_(self.merged_delta(key, w.device))


_FLOAT_STORE = (torch.float16, torch.bfloat16)


@dataclass(frozen=True, eq=False)
class MergePayload:
    """What a MergeAdapter evaluates: the spec and each key's storage dtype. Holds no tensors, so ComfyUI's
    prefetch (``prefetch_prepared_value``: copies the tensors among an adapter's ``weights`` into a staging
    buffer) passes it through unchanged."""

    spec: MergeSpec
    store_dtypes: dict


class MergeAdapter(WeightAdapterBase):
    """A ComfyUI weight patch evaluating a MergeSpec for the key being patched.

    Constructed like every core adapter, ``MergeAdapter(loaded_keys, weights)``, with ``weights`` =
    ``(MergePayload,)``: ComfyUI 0.33 rebuilds adapters as ``type(v)(v.loaded_keys, prepared_weights)``
    when it prefetches low-VRAM / dynamic-VRAM patches, and the rebuilt adapter must compute the same.
    The float32 result is rounded once to the key's storage dtype (``store_dtypes``) the way ComfyUI rounds any
    patched weight (stochastic rounding seeded by the key: fp16 to nearest, bf16 stochastically), so full loads,
    low-VRAM partial loads, prefetched patches and bakes give bit-identical weights, and a LoRA task vector at
    weight w equals core's LoRA at strength w.
    """

    name = "i2v_motion_merge"

    def __init__(self, loaded_keys, weights):
        weights = tuple(weights)
        if len(weights) != 1 or not isinstance(weights[0], MergePayload):
            raise TypeError("MergeAdapter(loaded_keys, weights) takes weights = (MergePayload,); "
                            "use MergeAdapter.create(spec, store_dtypes)")
        self.loaded_keys = set(loaded_keys)
        self.weights = weights

    @classmethod
    def create(cls, spec: MergeSpec, store_dtypes: dict[str, torch.dtype]) -> "MergeAdapter":
        return cls(set(), (MergePayload(spec, dict(store_dtypes)),))

    @property
    def spec(self) -> MergeSpec:
        return self.weights[0].spec

    @property
    def store_dtypes(self) -> dict[str, torch.dtype]:
        return self.weights[0].store_dtypes

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        spec = self.spec
        delta = spec.merged_delta(key, weight.device)
        if offset is not None:
            delta = delta.narrow(offset[0], offset[1], offset[2])
        if delta.shape != weight.shape:
            raise ValueError(f"i2v_motion merge: shape mismatch at {key}: weight {tuple(weight.shape)} "
                             f"vs task vector {tuple(delta.shape)}")
        return self._add(weight, delta, key, strength, function)

    def _add(self, weight: torch.Tensor, delta: torch.Tensor, key: str, strength: float, function=None) -> torch.Tensor:
        """``weight`` (ComfyUI's temporary copy, updated in place) + the key's delta: float32 maths, then one
        rounding to the storage dtype. Element by element, so a range of elements gives the bits of the whole."""
        spec = self.spec
        if strength != 1.0:
            delta.mul_(strength)
        if function is not None:
            delta = function(delta)
        # float32 maths; comfy owns ``weight`` (a temporary copy) and expects it updated in place
        res = weight if weight.dtype == torch.float32 else weight.to(torch.float32)
        if spec.weight_scale != 1.0:
            res.mul_(spec.weight_scale)
        res.add_(delta)
        store = self.store_dtypes.get(key)
        if store in _FLOAT_STORE and store != weight.dtype:
            weight.copy_(round_to_storage(res, store, key))  # round once, as ComfyUI rounds any patched weight
        elif res is not weight:
            weight.copy_(res)
        return weight

    def span_patch(self, key: str, strength: float, offset,
                   function) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
        """This patch applied to a range of flat elements, for writing a weight piece by piece: a function
        ``(weight_range, start) -> weight_range`` doing exactly what :meth:`calculate_weight` does to those elements
        (``weight_range``: ComfyUI's compute-dtype copy of them, updated in place; ``start`` a multiple of 8), or
        None where only the whole tensor gives the same bits (an offset or a function on the patch, a TIES merge,
        a LoRA task vector, weights with patches of their own, stochastic rounding to the storage dtype)."""
        spec = self.spec
        store = self.store_dtypes.get(key)
        if offset is not None or function is not None or not spec.spans(key):
            return None
        if store in _FLOAT_STORE and not rounds_elementwise(store):
            return None

        def apply(weight: torch.Tensor, start: int) -> torch.Tensor:
            delta = spec.merged_delta(key, weight.device, span=(start, start + weight.numel()))
            return self._add(weight, delta, key, strength)

        return apply

    def retain_masks(self) -> None:
        """Keep this merge's DARE masks packed from now on (see :class:`MaskStore`)."""
        self.spec.masks.retain()


def apply_spec(model: ModelPatcher, spec: MergeSpec, note: MergeNote | None = None) -> ModelPatcher:
    """A clone of ``model`` with one MergeAdapter patch per key of the spec's task vectors (``note``: what the
    merge did, recorded on the clone for the sampling guard's messages)."""
    keys: list[str] = []
    seen = set()
    for tv in spec.task_vectors:
        for k in tv.keys:
            if k not in seen:
                seen.add(k)
                keys.append(k)
    target = diffusion_param_keys(model)
    missing = [k for k in keys if k not in target]
    if missing:
        log.warning("merge: %d task-vector key(s) do not exist in the target model and are skipped: %s",
                    len(missing), _listing(missing))
    keys = [k for k in keys if k in target]
    if not keys:
        raise ValueError("none of the task vectors' keys exist in the target model (different architecture?)")
    mismatched = []
    for k in keys:
        for tv in spec.task_vectors:
            if k in tv and tv.shapes[k] != target[k]:
                mismatched.append(f"{k} {tuple(target[k])} vs {tuple(tv.shapes[k])}")
                break
    if mismatched:
        raise ValueError(f"shape mismatch between the target model and the task vector for "
                         f"{len(mismatched)} key(s): {_listing(mismatched)}")
    refs = weight_refs(model, keys)
    adapter = MergeAdapter.create(spec, {k: refs[k].weight.dtype for k in keys})
    out = model.clone()
    added = out.add_patches({k: adapter for k in keys}, 1.0, 1.0)
    if len(added) != len(keys):
        raise RuntimeError(f"ComfyUI accepted {len(added)} of {len(keys)} merge patches")
    ensure_skipped_params_patched(out)
    ensure_guards(out)
    if note is not None:
        add_merge_note(out, note)
    return out


# --------------------------------------------------------------------------------------------------
# public builders

def apply_task_vectors(model: ModelPatcher, task_vectors: Sequence[TaskVector],
                       weights: Sequence[float], *, method: str = "sum", p: float = 0.0, seed: int = 0,
                       keep_1d: bool = True, density: float = 0.2) -> ModelPatcher:
    """θ = θ_model + combine_i(w_i·τ_i), lazily.

    ``method``: "sum" (task arithmetic), "dare" (each τ_i through DARE(p), independent masks), "ties"
    (trim to the top ``density`` fraction by magnitude, elect sign, disjoint mean of w_i·τ_i) or
    "dare_ties" (DARE instead of the trim, then sign election and disjoint mean).
    """
    m = get_method(method)
    if len(task_vectors) == 0:
        raise ValueError("no task vector given")
    if len(weights) != len(task_vectors):
        raise ValueError(f"{len(task_vectors)} task vectors but {len(weights)} weights")
    for w in weights:
        if not torch.isfinite(torch.tensor(float(w))):
            raise ValueError(f"task-vector weight must be finite, got {w}")
    p = check_drop_rate(p) if m.uses_dare else 0.0
    trim = PARAMS["density"].check(density) if m.trim_density else None
    terms = tuple(Term(i, float(w), dare=m.uses_dare, tag=f"tv{i}") for i, w in enumerate(weights))
    recipe = {
        "node": "I2VMotion_ApplyTaskVectors", "method": method, "weights": [float(w) for w in weights],
        "p": p, "seed": int(seed), "keep_1d": bool(keep_1d), "density": trim,
        "formula": "theta = theta_base + combine_i(w_i * op(tau_i)), tau_i = theta_ft_i - theta_base_i",
        "task_vectors": [tv.describe() for tv in task_vectors],
    }
    spec = MergeSpec(tuple(task_vectors), terms, method=m.consensus, p=p, seed=int(seed), keep_1d=bool(keep_1d),
                     density=trim, recipe=recipe)
    note = MergeNote("I2VMotion_ApplyTaskVectors", weights=tuple(float(w) for w in weights), p=p)
    return apply_spec(model, spec, note)


def edg_experts(base: ModelPatcher, finetune: ModelPatcher, *,
                alpha_d: float = 0.25, beta_d: float = 0.75, alpha_c: float = 1.0, beta_c: float = 0.25,
                p: float = 0.7, seed: int = 0, keep_1d: bool = True, preset: str = "all", regex: str = "",
                allow_partial: bool = False,
                ) -> tuple[ModelPatcher, ModelPatcher, TaskVector]:
    """EDG dynamics and control experts from a base and a fine-tune (lazily), plus their task vector.

    dynamics: θ_base + β_d·DARE_p(α_d·(θ_base − θ_ft)) = θ_base − α_d·β_d·DARE_p(τ)
    control:  α_c·θ_ft + β_c·DARE_p(θ_ft − θ_base) = α_c·θ_base + α_c·τ + β_c·DARE_p(τ)
    with τ = θ_ft − θ_base and independent masks for the two experts (seed tags "edg.dynamics" and
    "edg.control"). Only the selected diffusion-model weights change; everything else is the base.
    """
    p = check_drop_rate(p)
    for n, v in (("alpha_d", alpha_d), ("beta_d", beta_d), ("alpha_c", alpha_c), ("beta_c", beta_c)):
        if not torch.isfinite(torch.tensor(float(v))):
            raise ValueError(f"{n} must be finite, got {v}")
    tv = make_task_vector(base, finetune, preset, regex, allow_partial=allow_partial)
    common = {"p": p, "seed": int(seed), "keep_1d": bool(keep_1d), "task_vector": tv.describe()}
    dyn_recipe = {"node": "I2VMotion_EDGExperts", "expert": "dynamics", "alpha_d": float(alpha_d),
                  "beta_d": float(beta_d), **common,
                  "formula": "theta_base + beta_d * DARE_p(alpha_d * (theta_base - theta_ft))"}
    con_recipe = {"node": "I2VMotion_EDGExperts", "expert": "control", "alpha_c": float(alpha_c),
                  "beta_c": float(beta_c), **common,
                  "formula": "alpha_c * theta_ft + beta_c * DARE_p(theta_ft - theta_base)"}
    dyn_spec = MergeSpec((tv,), (Term(0, edg_dynamics_delta_coeff(alpha_d, beta_d), dare=True, tag="edg.dynamics"),),
                         p=p, seed=int(seed), keep_1d=bool(keep_1d), recipe=dyn_recipe)
    con_terms = (Term(0, float(alpha_c), dare=False, tag=""), Term(0, float(beta_c), dare=True, tag="edg.control"))
    con_spec = MergeSpec((tv,), con_terms, p=p, seed=int(seed), keep_1d=bool(keep_1d),
                         weight_scale=float(alpha_c), recipe=con_recipe)
    dyn_note = MergeNote("I2VMotion_EDGExperts", (("alpha_d", float(alpha_d)), ("beta_d", float(beta_d))), p=p)
    con_note = MergeNote("I2VMotion_EDGExperts", (("alpha_c", float(alpha_c)), ("beta_c", float(beta_c))), p=p)
    return apply_spec(base, dyn_spec, dyn_note), apply_spec(base, con_spec, con_note), tv


def merge_recipes(model: ModelPatcher) -> tuple[list[dict], dict[str, int]]:
    """The recipes of this pack's merge patches on ``model`` and a count of other patches by kind."""
    recipes, seen, others = [], set(), {}
    for key, plist in model.patches.items():
        for p in plist:
            v = p[1]
            if isinstance(v, MergeAdapter):
                if id(v.spec) not in seen:
                    seen.add(id(v.spec))
                    recipes.append({**v.spec.recipe, "strength": p[0], "strength_model": p[2]})
            else:
                if isinstance(v, WeightAdapterBase):
                    kind = type(v).__name__
                elif isinstance(v, list):
                    kind = "model_weights"  # a core merge: another model's weights
                else:
                    kind = v[0] if len(v) == 2 and isinstance(v[0], str) else "diff"
                others[kind] = others.get(kind, 0) + 1
    return recipes, others
