"""Box-trajectory animation (IVA0-style) nodes: layouts, masks, preview, benchmark cases, guide video,
spatio-temporal masked denoising for any I2V MODEL, and weight-free metrics. Thin wrappers over
:mod:`..layout`."""
from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import torch
from comfy_api.latest import io, ui

from ..layout import (FILLS, INTERPOLATIONS, Layout, LayoutDenoiseMask, PathRefused, RegionSchedule, SIZE_SPACES,
                      compose_latents, composite_guide, confine, draw_layout, evaluate_layout, format_layout,
                      input_case_names, json_safe, latent_grow, layout_from_masks, layout_mask, list_cases, load_case,
                      merge_layouts, parse_layout, region_masks, region_stack, static_mask)
from ..comfy_bridge.sampling import model_sampling_of, noise_percent
from ..families import temporal_ratio
from ..guards import ensure_guards
from ..layout.frames import check_frame_count, combine_regions, latent_frames
from ..limits import (MAX_FRAMES, MAX_SIDE, check_alloc, check_path_text, nbytes, vae_encode_need,
                      vae_frames_at_once)

log = logging.getLogger("i2v_motion.layout")

CATEGORY = "i2v_motion/layout"
LayoutType = io.Custom("I2V_LAYOUT")
PACK_DIR = Path(__file__).resolve().parent.parent
CASES_DIR = PACK_DIR / "example_workflows" / "layout_cases"

EXAMPLE_JSON = format_layout({"objects": [
    {"phrase": "object", "boxes": [[0, 0.10, 0.40, 0.35, 0.80], [15, 0.60, 0.35, 0.90, 0.85]]}]})
LAYOUT_FORMAT = ('{"objects": [\n {"phrase": "a dog", "interpolation": "linear", "boxes": [\n'
                 '  [frame, x0, y0, x1, y1],\n  [frame, x0, y0, x1, y1]]}]}\n'
                 "x, y: fractions of the image (0..1, origin top-left); boxes may leave the image (-1..2)")


def _progress(total: int):
    """ProgressBar-backed ``(done, total)`` callback that also honours ComfyUI's interrupt button."""
    import comfy.model_management
    import comfy.utils

    bar = comfy.utils.ProgressBar(max(1, total))

    def cb(done: int, n: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, n)

    return cb


def _source_chw(image: torch.Tensor, what: str = "image") -> torch.Tensor:
    """First frame of an IMAGE as ``[3, H, W]`` (warns when a batch is given)."""
    if image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"{what} must be an IMAGE [B, H, W, 3], got {tuple(image.shape)}")
    if image.shape[0] > 1:
        log.warning("%s has %d frames; using the first as the source image", what, image.shape[0])
    return image[0, ..., :3].permute(2, 0, 1).float()


def _frames_chw(images: torch.Tensor) -> torch.Tensor:
    return images[..., :3].permute(0, 3, 1, 2).float()


def _to_image(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).clamp(0, 1).contiguous()


class LayoutFromJSON(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutFromJSON",
            display_name="Layout from JSON",
            category=CATEGORY,
            description="A box layout from JSON: objects with a phrase and key boxes [frame, x0, y0, x1, y1] "
                        "in normalised image coordinates, interpolated to every frame.",
            inputs=[
                io.String.Input("layout_json", multiline=True, default=EXAMPLE_JSON, placeholder=LAYOUT_FORMAT,
                                tooltip='{"objects": [{"phrase": "a dog", "boxes": [[frame, x0, y0, x1, y1], ...]}]} '
                                        "with coordinates as fractions of the image (0..1, origin top-left); "
                                        "boxes may leave the image. One key box per line reads best (as the json "
                                        "output prints it); the Layout Editor node draws the same data."),
                io.Int.Input("frames", default=16, min=1, max=MAX_FRAMES,
                             tooltip="Video length in frames (key frame indices must be below it; overrides a "
                                     "\"frames\" key in the JSON)."),
                io.Combo.Input("interpolation", options=list(INTERPOLATIONS), default="linear",
                               tooltip="Box-centre path between key boxes (an object's own \"interpolation\" "
                                       "field wins): linear, ease_in_out (stops at keys), catmull_rom (smooth curve)."),
                io.Combo.Input("size_space", options=list(SIZE_SPACES), default="log",
                               tooltip="Interpolate box sizes geometrically (log: even zooms, monotone) or linearly."),
            ],
            outputs=[LayoutType.Output(display_name="layout"),
                     io.String.Output(display_name="json", tooltip="The layout as normalised JSON text, one key box "
                                                                   "per line.")],
        )

    @classmethod
    def execute(cls, layout_json: str, frames: int, interpolation: str, size_space: str) -> io.NodeOutput:
        lay = parse_layout(layout_json, frames=frames, interpolation=interpolation, size_space=size_space)
        return io.NodeOutput(lay, lay.to_text())


class LayoutFromMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutFromMask",
            display_name="Layout from Mask",
            category=CATEGORY,
            description="One object's key boxes from the bounding boxes of masks (e.g. drawn in the mask "
                        "editor): each non-empty mask of the batch is a key box. Chain to add objects.",
            inputs=[
                io.Mask.Input("mask", tooltip="MASK batch [N, H, W]; mask i gives the key box at key_frames[i]."),
                io.String.Input("phrase", default="object", tooltip="What the object is (label, caption)."),
                io.Int.Input("frames", default=16, min=1, max=MAX_FRAMES,
                             tooltip="Video length in frames (ignored when appending: the input layout's length is used)."),
                io.String.Input("key_frames", default="",
                                tooltip="Comma-separated frame of each mask, e.g. \"0, 15\". Empty: mask i is frame i "
                                        "if there is one mask per frame, else the masks are spread evenly."),
                io.Combo.Input("interpolation", options=list(INTERPOLATIONS), default="linear",
                               tooltip="Box-centre path between this object's key boxes."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Mask values above this belong to the object."),
                LayoutType.Input("layout", optional=True,
                                 tooltip="Optional layout to append this object to (multi-object layouts)."),
            ],
            outputs=[LayoutType.Output(display_name="layout")],
        )

    @classmethod
    def execute(cls, mask: torch.Tensor, phrase: str, frames: int, key_frames: str, interpolation: str,
                threshold: float, layout: Layout | None = None) -> io.NodeOutput:
        if layout is not None:
            frames = layout.frames
        keys = None
        if key_frames.strip():
            try:
                keys = [int(s) for s in key_frames.replace(";", ",").split(",") if s.strip()]
            except ValueError:
                raise ValueError(f"key_frames {key_frames!r} must be comma-separated whole numbers") from None
        size_space = layout.size_space if layout is not None else "log"
        new = layout_from_masks(mask, phrase, frames, keys, interpolation, size_space, threshold)
        return io.NodeOutput(merge_layouts(layout, new) if layout is not None else new)


class LayoutToJSON(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutToJSON",
            display_name="Layout to JSON",
            category=CATEGORY,
            description="The layout as JSON text (key boxes only, one per line), to save or paste into Layout from "
                        "JSON or the Layout Editor.",
            inputs=[LayoutType.Input("layout", tooltip="A layout.")],
            outputs=[io.String.Output(display_name="json")],
        )

    @classmethod
    def execute(cls, layout: Layout) -> io.NodeOutput:
        return io.NodeOutput(layout.to_text())


class LayoutToMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutToMask",
            display_name="Layout to Mask",
            category=CATEGORY,
            description="Per-frame MASK [T, H, W] of the layout: object boxes, vacated or background region.",
            inputs=[
                LayoutType.Input("layout", tooltip="A layout."),
                io.Int.Input("width", default=512, min=1, max=MAX_SIDE, tooltip="Mask width in pixels."),
                io.Int.Input("height", default=320, min=1, max=MAX_SIDE, tooltip="Mask height in pixels."),
                io.Combo.Input("region", options=["objects", "vacated", "background", "source"], default="objects",
                               tooltip="objects: boxes at each frame; vacated: source boxes the objects have left; "
                                       "background: everything else; source: frame-0 boxes on every frame."),
                io.Int.Input("object_index", default=-1, min=-1, max=1024,
                             tooltip="Only this object (0-based; objects region only); -1 = all objects."),
                io.Float.Input("feather", default=0.0, min=0.0, max=512.0, step=0.5,
                               tooltip="Soft outward edge in pixels (0 = hard, anti-aliased)."),
                io.Float.Input("grow", default=0.0, min=-512.0, max=512.0, step=0.5,
                               tooltip="Grow (or shrink, negative) every box by this many pixels."),
            ],
            outputs=[io.Mask.Output(display_name="mask")],
        )

    @classmethod
    def execute(cls, layout: Layout, width: int, height: int, region: str, object_index: int, feather: float,
                grow: float) -> io.NodeOutput:
        # per-object masks, their union and the region split: (objects + 5) float planes per frame
        check_alloc(nbytes((len(layout.objects) + 5, layout.frames, height, width)),
                    f"Layout to Mask at {width}x{height} x {layout.frames} frames", hint="lower width/height")
        if region == "objects":
            objs = None if object_index < 0 else [object_index]
            return io.NodeOutput(layout_mask(layout, height, width, feather, grow, objs))
        r = region_masks(layout, height, width, feather, grow)
        m = r[region] if region != "source" else r["source"][None].repeat(layout.frames, 1, 1)
        return io.NodeOutput(m.contiguous())


class LayoutPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutPreview",
            display_name="Layout Preview",
            category=CATEGORY,
            description="Draws every object's box, path, key boxes and phrase on the image or on generated "
                        "frames; connect to Preview Image / Save Animated WEBP.",
            inputs=[
                io.Image.Input("images", tooltip="One image (repeated for every frame) or the layout's T frames."),
                LayoutType.Input("layout", tooltip="The layout to draw."),
                io.Int.Input("line_width", default=2, min=1, max=32, tooltip="Box outline width in pixels."),
                io.Boolean.Input("show_path", default=True, tooltip="Draw each object's centre path and key boxes."),
                io.Boolean.Input("show_labels", default=True, tooltip="Write each object's phrase at its box."),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, images: torch.Tensor, layout: Layout, line_width: int, show_path: bool,
                show_labels: bool) -> io.NodeOutput:
        T = layout.frames
        # the frames (repeated), their uint8 copies for drawing and the result
        check_alloc(4 * nbytes((T,) + tuple(images.shape[1:])), f"Layout Preview of {T} frames at "
                    f"{images.shape[2]}x{images.shape[1]}", hint="preview a smaller image")
        if images.shape[0] == 1:
            images = images.repeat(T, 1, 1, 1)
        elif images.shape[0] != T:
            raise ValueError(f"images has {images.shape[0]} frames but the layout has {T}; give 1 image or {T} frames")
        return io.NodeOutput(draw_layout(images, layout, line_width, show_path, show_labels))


def _case_roots() -> list[Path]:
    """Where Load Layout Case may read: ComfyUI's input folder and the shipped cases."""
    import folder_paths

    return [Path(folder_paths.get_input_directory()), CASES_DIR]


def _resolve_folder(folder: str) -> Path:
    """The case folder: empty = shipped cases; relative = inside the input folder (then the pack); confined to
    :func:`_case_roots` (absolute paths and ``..`` that leave them are refused)."""
    text = check_path_text(folder.strip(), "layout case folder")
    if not text:
        return CASES_DIR
    roots = _case_roots()
    p = Path(text).expanduser()
    cands = [p] if p.is_absolute() else [roots[0] / p, PACK_DIR / p]
    what = f"layout case folder {text!r}"
    for cand in cands:
        try:
            real = confine(cand, roots, what)
        except PathRefused:
            continue
        if real.is_dir():
            return real
    if all(_refused(c, roots, what) for c in cands):
        raise PathRefused(f"{what} must be inside ComfyUI's input folder or the pack's shipped layout cases "
                            f"(give a folder relative to input/, or leave it empty for the shipped cases)")
    raise ValueError(f"{what} not found in ComfyUI's input folder")


def _refused(path: Path, roots: list[Path], what: str) -> bool:
    try:
        confine(path, roots, what)
        return False
    except PathRefused:
        return True


BY_INDEX = "(index)"


def case_choices() -> list[str]:
    """Load Layout Case's ``name`` options: by index, the shipped cases, then ``sub/folder/case`` in ComfyUI's
    input folder (listed inside it only)."""
    import folder_paths

    shipped = list_cases(CASES_DIR) if CASES_DIR.is_dir() else []
    return [BY_INDEX] + shipped + input_case_names(folder_paths.get_input_directory())


def _resolve_case(folder: str, name: str) -> tuple[Path, str | None]:
    """(case folder, case stem or None for by-index). ``sub/case`` names live in the input folder (confined);
    plain names are looked up in ``folder`` (empty: the shipped cases)."""
    name = check_path_text(name.strip(), "layout case name")
    if not name or name == BY_INDEX:
        return _resolve_folder(folder), None
    if "/" in name or "\\" in name:
        sub, stem = name.replace("\\", "/").rsplit("/", 1)
        root = _case_roots()[0]
        real = confine(root / sub, [root], f"layout case {name!r}", "ComfyUI's input folder")
        if not real.is_dir():
            raise ValueError(f"layout case {name!r}: folder {sub!r} not found in ComfyUI's input folder")
        return real, stem
    return _resolve_folder(folder), name


class LayoutCaseLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutCaseLoader",
            display_name="Load Layout Case",
            category=CATEGORY,
            description="Loads a benchmark case (image + key boxes + motion caption, one JSON per case): a shipped "
                        "example case, or one in a sub-folder of ComfyUI's input folder. Shows the case image.",
            inputs=[
                io.String.Input("folder", default="",
                                tooltip="Case folder for index (and plain names): inside ComfyUI's input folder "
                                        "(relative to it; or the pack's example_workflows/layout_cases); empty = the "
                                        "shipped example cases. Folders elsewhere are refused."),
                io.Int.Input("index", default=0, min=0, max=100000,
                             tooltip="Which case of folder, in sorted name order (used when name is (index))."),
                io.Combo.Input("name", options=case_choices(), default="car_approach",
                               tooltip="The case: a shipped example, or sub/folder/case for a case JSON in a "
                                       "sub-folder of ComfyUI's input folder (refresh the page to list new ones); "
                                       "(index) = the index-th case of folder."),
            ],
            outputs=[io.Image.Output(display_name="image"), LayoutType.Output(display_name="layout"),
                     io.String.Output(display_name="caption"), io.String.Output(display_name="name")],
        )

    @classmethod
    def fingerprint_inputs(cls, folder: str, index: int, name: str) -> str:
        try:
            p, _ = _resolve_case(folder, name)
            return ";".join(f"{f.name}:{f.stat().st_mtime_ns}" for f in sorted(p.iterdir()))
        except (OSError, ValueError):
            return ""

    @classmethod
    def execute(cls, folder: str, index: int, name: str) -> io.NodeOutput:
        path, stem = _resolve_case(folder, name)
        case = load_case(path, index if stem is None else stem, _case_roots())
        preview = list(ui.ImageSaveHelper.save_images(case.image, filename_prefix="i2v_layout_case",
                                                      folder_type=io.FolderType.temp, cls=None, compress_level=1))
        return io.NodeOutput(case.image, case.layout, case.caption, case.name, ui={"i2v_case_image": preview})


class LayoutGuide(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutGuide",
            display_name="Layout Guide Video",
            category=CATEGORY,
            description="Out-of-place guide: each object's source-box content moved and scaled into its box "
                        "at every frame (feathered) over a background plate whose vacated region is filled; "
                        "returns the frames and their latents (source latent outside the changed boxes).",
            inputs=[
                io.Image.Input("image", tooltip="The source image (first frame is used)."),
                LayoutType.Input("layout", tooltip="Key boxes; each object's frame-0 box is its place in the image."),
                io.Vae.Input("vae", tooltip="The I2V model's own VAE: frames-as-batch image VAEs (DynamiCrafter, SVD) or "
                                            "video VAEs that pack 4 frames into a latent frame (Wan 2.1 / 2.2; the "
                                            "layout then needs 1 + 4k frames)."),
                io.Float.Input("feather", default=8.0, min=0.0, max=256.0, step=0.5,
                               tooltip="Outward soft edge of each pasted box, in pixels."),
                io.Float.Input("margin", default=4.0, min=0.0, max=256.0, step=0.5,
                               tooltip="Grow boxes by this many pixels (the fill and the paste cover the object's edges)."),
                io.Combo.Input("fill", options=list(FILLS), default="diffuse",
                               tooltip="Built-in fill of the vacated source boxes when no plate is given: diffuse "
                                       "(smooth push-pull from the surroundings), mean (ring colour), none (keep the "
                                       "object: no afterimage suppression)."),
                io.Image.Input("plate", optional=True,
                               tooltip="Optional background plate (the image without the objects, e.g. from an "
                                       "inpainting workflow): 1 frame or the layout's T frames, same size as image."),
            ],
            outputs=[io.Image.Output(display_name="guide", tooltip="Guide frames [T, H, W, 3]."),
                     io.Latent.Output(display_name="guide_latent",
                                      tooltip="Guide latents for Layout Masked Denoise: [T, C, h, w] (image VAEs) or "
                                              "[1, C, T', h, w] (video VAEs, T' = (T − 1) / 4 + 1)."),
                     io.Image.Output(display_name="plate", tooltip="The background plate used.")],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, layout: Layout, vae, feather: float, margin: float, fill: str,
                plate: torch.Tensor | None = None) -> io.NodeOutput:
        src = _source_chw(image)
        H, W = src.shape[-2:]
        T = layout.frames
        # guide frames, per-object warped colour and alpha, the plate, the IMAGE copy: ~17 planes per frame, plus
        # one VAE encode at this size when the VAE runs on the CPU (ComfyUI's own estimate)
        check_alloc(nbytes((17, T, H, W)) + vae_encode_need(vae, H, W), f"Layout Guide Video of {T} frames at {W}x{H}",
                    hint="use a smaller image (the I2V size, e.g. 512x320)")
        plate_chw = None
        if plate is not None:
            if tuple(plate.shape[1:3]) != (H, W):
                raise ValueError(f"plate is {plate.shape[2]}x{plate.shape[1]} but the image is {W}x{H}; "
                                 f"resize the plate to the image size")
            if plate.shape[0] not in (1, T):
                raise ValueError(f"plate has {plate.shape[0]} frames; give 1 or the layout's {T}")
            plate_chw = _frames_chw(plate)
            plate_chw = plate_chw[0] if plate_chw.shape[0] == 1 else plate_chw
        n_obj = len(layout.objects)
        ratio = temporal_ratio(vae)
        check_frame_count(T, ratio, "the layout")
        # an image VAE: as many frames at once as the memory reader holds (≤ 8); a video VAE encodes the whole video
        # at once (it is causal in time)
        chunk = vae_frames_at_once(vae, H, W) if ratio == 1 else T
        n_chunks = math.ceil(T / chunk)
        total = n_obj + 1 + n_chunks
        prog = _progress(total)
        frames, used_plate = composite_guide(src, layout, plate_chw, feather, margin, fill,
                                             progress=lambda i, n: prog(i, total))
        guide = _to_image(frames)
        if ratio == 1:
            src_lat = vae.encode(image[:1, ..., :3])
        else:  # the static source video's latents: what the guide must equal outside the changed boxes
            src_lat = vae.encode(image[:1, ..., :3].expand(T, -1, -1, -1))
        if src_lat.ndim == 5 and ratio == 1:
            raise ValueError(f"the VAE makes video latents {tuple(src_lat.shape)} but says nothing of how it packs frames "
                             f"(no downscale_index_formula): the layout guide needs a frames-as-batch image VAE "
                             f"(DynamiCrafter, SVD) or a video VAE that says how many frames make a latent frame (Wan)")
        prog(n_obj + 1, total)
        lats = []
        for i in range(n_chunks):
            lats.append(vae.encode(guide[i * chunk:(i + 1) * chunk]).to(src_lat))
            prog(n_obj + 2 + i, total)
        lat = torch.cat(lats, 0 if ratio == 1 else 2)
        scale = max(1, round(H / lat.shape[-2]))
        samples = compose_latents(src_lat, lat, layout, latent_grow(feather, margin, scale), ratio)
        plate_img = _to_image(used_plate if used_plate.ndim == 4 else used_plate[None])
        return io.NodeOutput(guide, {"samples": samples, RATIO_KEY: ratio}, plate_img)


class LayoutMaskedDenoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutMaskedDenoise",
            display_name="Layout Masked Denoise",
            category=CATEGORY,
            description="Spatio-temporal masked denoising for any I2V MODEL: region masks per latent frame and a "
                        "schedule over the whole run's noise level (ComfyUI noise mask + denoise-mask function). Sample "
                        "the returned MODEL and LATENT with a stock KSampler, SamplerCustomAdvanced, or two "
                        "KSamplerAdvanced (Wan 2.2's two experts: apply this node to both models with the same "
                        "settings) at denoise 1.0.",
            inputs=[
                io.Model.Input("model", tooltip="The I2V model (DynamiCrafter from this pack; SVD, Wan 2.1 / 2.2 from core); "
                                                "not modified."),
                io.Latent.Input("guide_latent", tooltip="Guide latents from Layout Guide Video."),
                LayoutType.Input("layout", tooltip="The same layout the guide was made from."),
                io.Float.Input("object_end", default=0.4, min=0.0, max=1.0, step=0.01,
                               tooltip="Point of the whole run (0 = pure noise … 1 = clean, ComfyUI's start/end percent; "
                                       "with the usual schedulers the share of the steps) until which the object region "
                                       "follows the guide (position, size); afterwards the model is free (in-place "
                                       "motion, blending). The same point whether one sampler or two split the run."),
                io.Float.Input("vacated_end", default=0.8, min=0.0, max=1.0, step=0.01,
                               tooltip="Point of the run until which the vacated region is held to the plate (motion "
                                       "afterimage suppression). The three ends are independent: each region is held "
                                       "until its own end, in any order."),
                io.Float.Input("background_end", default=0.9, min=0.0, max=1.0, step=0.01,
                               tooltip="Point of the run until which the background is held to the source "
                                       "(1.0 = keep it exactly)."),
                io.Float.Input("feather", default=1.0, min=0.0, max=64.0, step=0.25,
                               tooltip="Soft edge of the region masks, in latent pixels."),
                io.Float.Input("margin", default=1.0, min=0.0, max=64.0, step=0.25,
                               tooltip="Grow the boxes of the region masks by this many latent pixels."),
                io.Latent.Input("reference", optional=True,
                                tooltip="Optional latent from the I2V conditioning node (SVD_img2vid_Conditioning, "
                                        "DynamiCrafter Image to Video, WanImageToVideo, Wan22ImageToVideoLatent) to "
                                        "check that frames and size match the guide. A batch of videos there gives a "
                                        "latent with the guide for every video; its own noise mask (Wan 2.2 TI2V's start "
                                        "frame) is kept, multiplied with the layout's."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="A clone of the model with the layout schedule."),
                     io.Latent.Output(display_name="latent", tooltip="Guide latents with the region noise mask.")],
        )

    @classmethod
    def execute(cls, model, guide_latent: dict, layout: Layout, object_end: float, vacated_end: float,
                background_end: float, feather: float, margin: float, reference: dict | None = None) -> io.NodeOutput:
        samples = guide_latent["samples"]
        T = layout.frames
        if samples.ndim not in (4, 5):
            raise ValueError(f"guide latent must be [T, C, h, w] (frames as batch) or [1, C, T', h, w] (video VAE); "
                             f"got {tuple(samples.shape)}")
        h, w = samples.shape[-2:]
        ratio = _temporal_ratio(model, guide_latent, T)
        check_frame_count(T, ratio, "the layout")
        lat_frames = latent_frames(T, ratio)
        frames = samples.shape[0] if samples.ndim == 4 else samples.shape[2]
        if frames != lat_frames:
            if ratio == 1:
                raise ValueError(f"guide latent has {frames} frames but the layout has {T}; make the guide from this "
                                 f"layout with Layout Guide Video")
            raise ValueError(f"guide latent has {frames} latent frames but the layout's {T} frames make {lat_frames} "
                             f"({ratio} frames per latent frame after the first); make the guide from this layout with "
                             f"Layout Guide Video")
        videos, base_mask = 1, None
        if reference is not None:
            videos, base_mask = _check_reference(reference, samples, T, ratio)
        if "noise_mask" in guide_latent:
            log.warning("guide latent already has a noise_mask; it is replaced by the layout regions")
        r = region_masks(layout, h, w, feather, margin)
        regions = combine_regions(region_stack(r["objects"], r["vacated"], r["background"]), ratio)
        fallback = model.get_model_object("model_sampling")
        fn = LayoutDenoiseMask(regions, RegionSchedule(object_end, vacated_end, background_end),
                               functools.partial(_noise_progress, fallback), base_mask)
        m = model.clone()
        if "denoise_mask_function" in m.model_options:
            log.warning("the model already has a denoise-mask function (e.g. Differential Diffusion); the layout "
                        "schedule replaces it")
        m.set_model_denoise_mask_function(fn)
        ensure_guards(m)
        out = {k: v for k, v in guide_latent.items() if k != "noise_mask"}
        mask = static_mask(regions)  # [T', 1, h, w]
        if samples.ndim == 4:
            out["noise_mask"] = mask
            if videos > 1:
                out["samples"] = samples.repeat(videos, 1, 1, 1)
                out["noise_mask"] = mask.repeat(videos, 1, 1, 1)
        else:
            mask = mask[:, 0][None, None]  # [1, 1, T', h, w]
            if base_mask is not None:
                mask = mask * base_mask.to(mask)
            out["samples"] = samples.expand(max(videos, samples.shape[0]), -1, -1, -1, -1).contiguous()
            out["noise_mask"] = mask.expand(out["samples"].shape[0], -1, -1, -1, -1).contiguous()
        return io.NodeOutput(m, out)


RATIO_KEY = "i2v_temporal_ratio"  # frames per latent frame of the VAE a guide latent came from (Layout Guide Video)


def _temporal_ratio(model, guide_latent: dict, frames: int) -> int:
    """Frames per latent frame, as ComfyUI says it: the guide's VAE (recorded by Layout Guide Video), else the model's
    latent format (``temporal_downscale_ratio``, 0.33+), else what the guide's shape implies."""
    if isinstance(guide_latent.get(RATIO_KEY), int):
        return guide_latent[RATIO_KEY]
    samples = guide_latent["samples"]
    fmt = getattr(getattr(model, "model", None), "latent_format", None)
    if samples.ndim == 4:
        return 1
    ratio = temporal_ratio(None, fmt)
    if ratio == 1 and samples.shape[2] > 1 and frames > samples.shape[2]:
        ratio = max(1, (frames - 1) // (samples.shape[2] - 1))
    return ratio


def _check_reference(reference: dict, samples: torch.Tensor, frames: int, ratio: int) -> tuple[int, torch.Tensor | None]:
    """(videos in the reference, its own noise mask or None); ValueError naming both sides of a mismatch."""
    ref = reference["samples"]
    if ref.ndim != samples.ndim:
        raise ValueError(f"the reference latent {tuple(ref.shape)} is not the guide's kind {tuple(samples.shape)}: "
                         f"{'video' if ref.ndim == 5 else 'frames-as-batch'} vs "
                         f"{'video' if samples.ndim == 5 else 'frames-as-batch'} latents; use the same model's VAE")
    if ref.ndim == 4:
        ref_frames, lat = ref.shape[0], samples.shape[0]
        if ref_frames != lat and ref_frames % lat:
            raise ValueError(f"frame-count mismatch: the layout and its guide latent have {lat} frames but the "
                             f"reference (conditioning) latent has {ref_frames}; set the layout's frames (Layout from "
                             f"JSON) or the I2V node's length so they agree")
        if tuple(ref.shape[1:]) != tuple(samples.shape[1:]):
            raise ValueError(
                f"image/latent size mismatch: the guide latent is {tuple(samples.shape)} but the reference "
                f"(conditioning) latent is {tuple(ref.shape)}; resize the source image to the conditioning "
                f"size ({ref.shape[-1] * 8}x{ref.shape[-2] * 8} px for an 8x VAE) before Layout Guide Video")
        return ref_frames // lat, None
    ref_lat = ref.shape[2]
    if ref_lat != samples.shape[2]:
        raise ValueError(f"frame-count mismatch: the layout has {frames} frames = {samples.shape[2]} latent frames, but "
                         f"the reference (conditioning) latent has {ref_lat} latent frames ({1 + ratio * (ref_lat - 1)} "
                         f"frames); set the layout's frames or the I2V node's length (1 + {ratio}k) so they agree")
    if tuple(ref.shape[1:]) != tuple(samples.shape[1:]):
        raise ValueError(f"image/latent size mismatch: the guide latent is {tuple(samples.shape)} but the reference "
                         f"(conditioning) latent is {tuple(ref.shape)}; resize the source image to the conditioning "
                         f"node's width x height before Layout Guide Video")
    base = reference.get("noise_mask")
    if base is not None:
        base = base.float().reshape(base.shape[0], 1, *base.shape[-3:]) if base.ndim == 5 else None
    return int(ref.shape[0]), base


def _noise_progress(fallback, sigma, extra_options) -> float:
    """The run's progress at ``sigma`` on ComfyUI's noise scale, with the sampler's own model sampling (a shift set
    after this node counts)."""
    ms = model_sampling_of((extra_options or {}).get("model")) or fallback
    return noise_percent(ms, sigma)


class LayoutMetrics(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutMetrics",
            display_name="Layout Metrics",
            category=CATEGORY,
            description="Weight-free evaluation: tracks each source object through the video (NCC over "
                        "scales) -> vIoU@0.5 and mean IoU vs the layout; object SSIM vs the source crop; "
                        "background PSNR/SSIM outside all boxes; afterimage score of the vacated region.",
            inputs=[
                io.Image.Input("source", tooltip="The source image (resized to the video size if different)."),
                io.Image.Input("video", tooltip="Generated frames [T, H, W, 3], T = layout frames."),
                LayoutType.Input("layout", tooltip="The target layout."),
                io.Image.Input("plate", optional=True,
                               tooltip="Background plate for the afterimage score (default: the built-in diffuse fill)."),
                io.Int.Input("work_size", default=128, min=32, max=1024,
                             tooltip="Tracking resolution (longer side, pixels); larger is slower and finer."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="All metrics as JSON."),
                     io.Image.Output(display_name="preview", tooltip="Video with target (solid) and tracked (dashed) boxes."),
                     io.Float.Output(display_name="viou50"), io.Float.Output(display_name="miou")],
        )

    @classmethod
    def execute(cls, source: torch.Tensor, video: torch.Tensor, layout: Layout, work_size: int,
                plate: torch.Tensor | None = None) -> io.NodeOutput:
        T, H, W = video.shape[:3]
        if T != layout.frames:
            raise ValueError(f"video has {T} frames but the layout has {layout.frames}")
        src = _source_chw(source, "source")
        resized = tuple(src.shape[-2:]) != (H, W)

        def fit(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear", antialias=True,
                                                   align_corners=False)
        if resized:
            src = fit(src[None])[0]
        pl = None
        if plate is not None:
            pl = _frames_chw(plate)
            if tuple(pl.shape[-2:]) != (H, W):
                pl = fit(pl)
            pl = pl[0] if pl.shape[0] == 1 else pl
        rep = evaluate_layout(_frames_chw(video), src, layout, plate=pl, data_range=1.0, work_size=work_size,
                                progress=_progress(T * len(layout.objects)))
        rep["source_resized"] = resized
        tracked = torch.tensor([o["tracked_boxes"] for o in rep["objects"]])
        preview = draw_layout(video, layout, 2, False, True, tracked=tracked)

        rep = json_safe(rep)
        return io.NodeOutput(json.dumps(rep, indent=1), preview, float(rep["viou50"] or 0.0),
                             float(rep["miou"] or 0.0))


NODES = [LayoutFromJSON, LayoutFromMask, LayoutToJSON, LayoutToMask, LayoutPreview, LayoutCaseLoader, LayoutGuide,
         LayoutMaskedDenoise, LayoutMetrics]
