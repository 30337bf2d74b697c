"""Motion extrapolation by model merging: task vectors, task arithmetic, DARE, TIES, EDG experts.

Pure per-tensor maths in ``ops``, merge methods declared as data in ``methods``, key filters (the families'
presets) in ``filters``, lazy ComfyUI weight patches in ``patches``, streaming bake to .safetensors in ``bake``.
No node code here; the sampling-time expert schedule is ``experts``.
"""
from __future__ import annotations

from .bake import StreamingSafetensorsWriter, bake_model, patched_tensor, saved_key_names
from .filters import PRESETS, KeyFilter, detect_architecture, select_keys
from .methods import METHODS, MergeMethod
from .ops import dare, dare_keep_mask, key_seed, ties_merge, trim_top_k
from .patches import (MergeAdapter, MergeSpec, TaskVector, Term, apply_spec, apply_task_vectors, edg_experts,
                      make_task_vector, merge_recipes)

__all__ = [
    "PRESETS", "METHODS", "MergeMethod", "KeyFilter", "detect_architecture", "select_keys",
    "dare", "dare_keep_mask", "key_seed", "ties_merge", "trim_top_k",
    "MergeAdapter", "MergeSpec", "TaskVector", "Term", "apply_spec", "apply_task_vectors", "edg_experts",
    "make_task_vector", "merge_recipes",
    "StreamingSafetensorsWriter", "bake_model", "patched_tensor", "saved_key_names",
]
