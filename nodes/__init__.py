"""Thin V3 node classes, grouped by what users do. Each module exports ``NODES``."""
from __future__ import annotations

import importlib

from ..comfy_bridge.schema import HAS_SEARCH_ALIASES, with_combo_checks, with_search_aliases

__all__ = ["HAS_SEARCH_ALIASES", "SEARCH_ALIASES", "all_nodes"]

_MODULES = ("backbone", "sampling", "merging", "schedule", "layout", "trajectory")


# Words users search for (the node search of ComfyUI 0.33+ matches them; hosts whose Schema has no
# ``search_aliases`` field, like 0.3.75, get none). One table, so every node is covered (tests/unit/test_registry.py).
_VIDEO = ["image to video", "i2v", "video", "animate"]
_LAYOUT = ["trajectory", "box", "bbox", "IVA", "motion", "layout", "path"]
_MERGE = ["merge", "model merge", "EDG", "extrapolate", "expert"]
SEARCH_ALIASES: dict[str, list[str]] = {
    "I2VMotion_LoadDynamiCrafter": ["DynamiCrafter", "checkpoint loader", "load model", *_VIDEO],
    "I2VMotion_DynamiCrafterImageToVideo": ["DynamiCrafter", "conditioning", "start image", *_VIDEO],
    "I2VMotion_ResizeImage": ["resize", "center crop", "centre crop", "pad", "preprocess", "DynamiCrafter", *_VIDEO],
    "I2VMotion_DynamiCrafterKeyframes": ["keyframes", "interpolation", "interp", "first last frame", "loop",
                                         "DynamiCrafter", *_VIDEO],
    "I2VMotion_JoinSegments": ["join", "concatenate", "keyframes", "segments", "interpolation", *_VIDEO],
    "I2VMotion_DynamiCrafterSampler": ["DDIM", "official sampler", "DynamiCrafter", "guidance rescale"],
    "I2VMotion_TrailingSchedule": ["sigmas", "scheduler", "uniform trailing", "uniform", "official schedule", "DynamiCrafter"],
    "I2VMotion_VideoRescaleCFG": ["rescale cfg", "guidance rescale", "video", "DynamiCrafter"],
    "I2VMotion_TaskVector": ["task vector", "difference", "fine-tune", "delta", *_MERGE],
    "I2VMotion_LoraTaskVector": ["LoRA", "lora task vector", "extrapolate LoRA", "DARE LoRA", "TIES LoRA", "Wan",
                                 *_MERGE],
    "I2VMotion_ApplyTaskVectors": ["task arithmetic", "DARE", "TIES", "dare_ties", "add difference", *_MERGE],
    "I2VMotion_EDGExperts": ["DARE", "dynamics expert", "control expert", "motion", *_MERGE],
    "I2VMotion_BakeMerged": ["save merge", "bake", "safetensors", "checkpoint save", *_MERGE],
    "I2VMotion_ExpertSchedule": ["expert schedule", "switch model", "timestep", "high noise", "low noise", *_MERGE],
    "I2VMotion_ExpertScheduleMulti": ["expert schedule", "switch model", "timestep", "several experts", *_MERGE],
    "I2VMotion_LayoutFromJSON": ["json", "key boxes", *_LAYOUT],
    "I2VMotion_LayoutFromMask": ["mask to box", "bounding box", "key boxes", *_LAYOUT],
    "I2VMotion_LayoutToJSON": ["json", "export", *_LAYOUT],
    "I2VMotion_LayoutToMask": ["box mask", "region mask", *_LAYOUT],
    "I2VMotion_LayoutPreview": ["draw boxes", "visualize", "preview", *_LAYOUT],
    "I2VMotion_LayoutCaseLoader": ["benchmark", "example", "case", *_LAYOUT],
    "I2VMotion_LayoutGuide": ["guide video", "out-of-place", "afterimage", "MAS", *_LAYOUT],
    "I2VMotion_LayoutMaskedDenoise": ["masked denoise", "noise mask", "afterimage", "MAS", *_LAYOUT],
    "I2VMotion_LayoutMetrics": ["vIoU", "metrics", "evaluate", "SSIM", "PSNR", *_LAYOUT],
    "I2VMotion_LayoutEditor": ["editor", "draw", "canvas", "key frame", "animate", *_LAYOUT],
    "I2VMotion_LayoutFromSpline": ["spline", "KJNodes", "coordinates", "points", *_LAYOUT],
    "I2VMotion_LayoutFromBBOX": ["KJNodes", "bounding box", "points editor", *_LAYOUT],
    "I2VMotion_LayoutToTracks": ["tracks", "WanMove", "points", *_LAYOUT],
    "I2VMotion_TracksToLayout": ["tracks", "WanMove", "points", *_LAYOUT],
    "I2VMotion_LayoutFromBoundingBoxes": ["bounding box", "create bounding boxes", "BOUNDING_BOX", "key frames",
                                          "SAM3", "detection", *_LAYOUT],
    "I2VMotion_LayoutToBoundingBoxes": ["bounding box", "BOUNDING_BOX", "draw bboxes", "SAM3", "export", *_LAYOUT],
}


def all_nodes() -> list:
    """Collect ``NODES`` from every node module that exists (in a stable order)."""
    out = []
    for name in _MODULES:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue
            raise
        out.extend(with_search_aliases(with_combo_checks(n), lambda node_id: SEARCH_ALIASES.get(node_id, []))
                   for n in mod.NODES)
    return out
