"""Thin V3 node classes, grouped by what users do. Each module exports ``NODES``."""
from __future__ import annotations

import functools
import importlib
import inspect

from comfy_api.latest import io

_MODULES = ("backbone", "sampling", "merging", "schedule", "layout", "trajectory")
_LISTED = 12


def _combo_choices(node_cls) -> dict[str, list]:
    """Combo inputs of a node and their current options (file lists are re-read each call)."""
    schema = node_cls.define_schema()
    return {i.id: list(i.options) for i in schema.inputs if isinstance(i, io.Combo.Input) and i.options}


def check_combos(node_cls, kwargs: dict) -> None:
    """ValueError naming an input whose value is not one of its choices (ComfyUI 0.3.75 does not check V3 combos)."""
    for name, options in _combo_choices(node_cls).items():
        if name in kwargs and isinstance(kwargs[name], str) and kwargs[name] not in options:
            shown = ", ".join(map(str, options[:_LISTED])) + (f", … ({len(options)} in all)" if len(options) > _LISTED else "")
            raise ValueError(f"{node_cls.__name__}: {name} = {kwargs[name]!r} is not one of its choices: {shown}")


def _with_combo_checks(node_cls):
    """Wrap ``execute`` so unknown combo values are refused by name before the node runs."""
    if getattr(node_cls, "_i2v_checked", False):
        return node_cls
    run = node_cls.execute.__func__
    if inspect.iscoroutinefunction(run):  # pragma: no cover - the pack's nodes are synchronous
        return node_cls

    @functools.wraps(run)
    def execute(cls, *args, **kwargs):
        check_combos(cls, kwargs)
        return run(cls, *args, **kwargs)

    node_cls.execute = classmethod(execute)
    node_cls._i2v_checked = True
    return node_cls


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
HAS_SEARCH_ALIASES = "search_aliases" in getattr(io.Schema, "__dataclass_fields__", {})


def _with_aliases(node_cls):
    """Add the node's :data:`SEARCH_ALIASES` to its schema where the host's Schema has the field."""
    if not HAS_SEARCH_ALIASES or getattr(node_cls, "_i2v_aliased", False):
        return node_cls
    define = node_cls.define_schema.__func__

    @functools.wraps(define)
    def define_schema(cls):
        schema = define(cls)
        if not schema.search_aliases:
            schema.search_aliases = list(SEARCH_ALIASES.get(schema.node_id, []))
        return schema

    node_cls.define_schema = classmethod(define_schema)
    node_cls._i2v_aliased = True
    return node_cls


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
        out.extend(_with_aliases(_with_combo_checks(n)) for n in mod.NODES)
    return out
