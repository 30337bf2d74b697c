"""Motion extrapolation by model merging: task vectors, task arithmetic, DARE, TIES, EDG experts.

Pure per-tensor maths in ``ops``, key filters in ``filters``, lazy ComfyUI weight patches in
``patches``, streaming bake to .safetensors in ``bake``. No node code here.
"""
from __future__ import annotations

from .bake import StreamingSafetensorsWriter, bake_model, patched_tensor, saved_key_names
from .filters import PRESETS, KeyFilter, detect_architecture, select_keys
from .ops import dare, dare_keep_mask, edg_control, edg_dynamics, key_seed, task_vector, ties_merge, trim_top_k
from .patches import (METHODS, MergeAdapter, MergeSpec, TaskVector, Term, apply_spec, apply_task_vectors,
                      edg_experts, make_task_vector, merge_recipes)

__all__ = [
    "PRESETS", "METHODS", "KeyFilter", "detect_architecture", "select_keys",
    "dare", "dare_keep_mask", "edg_control", "edg_dynamics", "key_seed", "task_vector", "ties_merge", "trim_top_k",
    "MergeAdapter", "MergeSpec", "TaskVector", "Term", "apply_spec", "apply_task_vectors", "edg_experts",
    "make_task_vector", "merge_recipes",
    "StreamingSafetensorsWriter", "bake_model", "patched_tensor", "saved_key_names",
]
