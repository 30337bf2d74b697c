"""Pure layout maths for box-trajectory animation (IVA0-style): boxes and interpolation, region masks,
guide compositing and model-free fill, the masked-denoising schedule, tracking and metrics, drawing,
benchmark cases. Imports torch/numpy/PIL only (no comfy), so it is testable without a server."""
from __future__ import annotations

from .boxes import (INTERPOLATIONS, SIZE_SPACES, KeyBox, Layout, LayoutObject, box_area, box_iou, clip_boxes,
                    format_layout, interpolate_keys, layout_from_masks, layout_to_dict, make_object, mask_bbox,
                    merge_layouts, parse_layout, visibility, with_frames)
from .cases import Case, PathRefused, confine, input_case_names, list_cases, load_case, load_image
from .draw import draw_layout
from .interop import (BBOX_FORMATS, BBOX_MODES, BOX_MATCHES, bounding_box_frames, layout_from_bboxes,
                      layout_from_bounding_boxes, layout_from_points, layout_to_bounding_boxes, layout_to_tracks,
                      parse_bboxes, parse_frame_list, parse_points, split_phrases, tracks_to_layout)
from .guide import FILLS, compose_latents, composite_guide, fill_region, latent_grow, make_plate, warp_box
from .masks import box_masks, layout_mask, object_masks, region_masks, soft_union
from .metrics import (afterimage_score, background_consistency, evaluate_layout, json_safe, masked_ssim,
                      object_consistency, psnr, ssim, trajectory_adherence)
from .frames import check_frame_count, combine_regions, latent_frames, latent_groups
from .schedule import LayoutDenoiseMask, RegionSchedule, region_stack, static_mask
from .track import TrackResult, crop_box, objectness, track_template, work_size_for

__all__ = [
    "INTERPOLATIONS", "SIZE_SPACES", "FILLS", "KeyBox", "Layout", "LayoutObject", "Case", "TrackResult",
    "LayoutDenoiseMask", "RegionSchedule",
    "parse_layout", "format_layout", "make_object", "layout_to_dict", "layout_from_masks", "merge_layouts", "with_frames",
    "interpolate_keys", "box_area", "box_iou", "clip_boxes", "visibility", "mask_bbox",
    "box_masks", "soft_union", "object_masks", "layout_mask", "region_masks",
    "fill_region", "make_plate", "warp_box", "composite_guide", "compose_latents", "latent_grow",
    "region_stack", "static_mask", "check_frame_count", "combine_regions", "latent_frames", "latent_groups",
    "crop_box", "objectness", "track_template", "work_size_for",
    "ssim", "masked_ssim", "psnr", "background_consistency", "afterimage_score", "object_consistency",
    "trajectory_adherence", "evaluate_layout", "json_safe",
    "BBOX_FORMATS", "BBOX_MODES", "layout_to_tracks", "tracks_to_layout", "parse_points", "layout_from_points",
    "parse_bboxes", "layout_from_bboxes", "split_phrases",
    "BOX_MATCHES", "bounding_box_frames", "parse_frame_list", "layout_from_bounding_boxes", "layout_to_bounding_boxes",
    "draw_layout", "list_cases", "input_case_names", "load_case", "load_image", "PathRefused", "confine",
]
