"""Draw and exchange box trajectories: the Layout Editor (a canvas editor on the node, ``web/js/layout_editor.js``)
and conversions from and to the formats of other nodes (core ``TRACKS`` and ``BOUNDING_BOX`` where the host has
them, KJNodes spline coordinates and BBOX lists). Thin wrappers over :mod:`..layout`."""
from __future__ import annotations

import json
import logging
import os

import torch
from comfy_api.latest import io

from ..layout import (BBOX_FORMATS, BBOX_MODES, BOX_MATCHES, INTERPOLATIONS, Layout, SIZE_SPACES, confine,
                      layout_from_bboxes, layout_from_bounding_boxes, layout_from_points, layout_to_bounding_boxes,
                      layout_to_tracks, load_image, parse_frame_list, parse_layout, split_phrases, tracks_to_layout)
from ..comfy_bridge.probes import io_type
from ..limits import MAX_FRAMES
from .layout import CATEGORY, LayoutType

log = logging.getLogger("i2v_motion.layout")

EditorType = io.Custom("I2V_LAYOUT_EDITOR")
BBoxType = io.Custom("BBOX")
HAS_TRACKS = io_type("Tracks") is not None  # ComfyUI 0.33+ (WanMove); the Tracks nodes are registered only there
# ComfyUI 0.33+ (core's box canvas, Create Bounding Boxes): the bounding-box nodes are registered only there
HAS_BOUNDING_BOX = io_type("BoundingBox") is not None and io_type("Autogrow") is not None
MAX_BOX_INPUTS = 16
EMPTY_EDITOR = json.dumps({"objects": []})
PLACEHOLDER_SIZE = (320, 512)  # H, W of the grey image output when the editor has no image


def _editor_data(text: str, frames: int, start: dict | None = None) -> dict:
    """The editor's value (Layout from JSON's format plus editor-only keys: ``image``, object ``color``, ``start``);
    with nothing drawn yet, the ``start`` layout's objects (see :func:`_start_data`)."""
    try:
        data = json.loads(text) if text.strip() else {"objects": []}
    except json.JSONDecodeError as e:
        raise ValueError(f"Layout Editor value is not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        raise ValueError('Layout Editor value must be {"objects": [...]} (the editor writes it)')
    drawn = any(isinstance(o, dict) and o.get("boxes") for o in data["objects"])
    if start is not None and not drawn:
        last = max(k[0] for o in start["objects"] for k in o["boxes"])
        if last >= frames:
            raise ValueError(f"the start layout has key boxes up to frame {last} but the Layout Editor's frames is "
                             f"{frames}: raise frames to {last + 1} or more")
        return dict(data, objects=start["objects"])
    if not data["objects"]:
        raise ValueError("the Layout Editor has no objects yet: drag on the image to draw a box")
    for i, o in enumerate(data["objects"]):
        if isinstance(o, dict) and not o.get("boxes"):
            raise ValueError(f"Layout Editor object {i} ({o.get('phrase', '')!r}) has no box: select it and drag on "
                             f"the image to draw one, or delete it")
    return data


def _editor_image(name: str) -> torch.Tensor:
    """The editor's own uploaded image, a file of ComfyUI's input folder (confined to it)."""
    import folder_paths

    root = folder_paths.get_input_directory()
    path = confine(os.path.join(root, name), [root], f"Layout Editor image {name!r}", "ComfyUI's input folder")
    if not path.is_file():
        raise ValueError(f"Layout Editor image {name!r} not found in ComfyUI's input folder: upload it again")
    try:
        return load_image(path)
    except (OSError, ValueError):
        raise ValueError(f"Layout Editor image {name!r} is not a readable image (PNG, JPEG, WebP)") from None


def _start_data(layout: Layout, interpolation: str) -> dict:
    """A start layout in the editor's format: what an empty editor imports and, until then, the node outputs. An
    object's interpolation is kept where it differs from the editor's default."""
    objs = []
    for o in layout.to_dict()["objects"]:
        if o.get("interpolation") == interpolation:
            o.pop("interpolation")
        objs.append(o)
    return {"frames": layout.frames, "objects": objs}


def _save_temp(image: torch.Tensor) -> list:
    """The first frame as a temp PNG for the editor's background (``{"filename", "subfolder", "type"}``)."""
    from comfy_api.latest import ui

    return list(ui.ImageSaveHelper.save_images(image[:1], filename_prefix="i2v_layout_editor",
                                               folder_type=io.FolderType.temp, cls=None, compress_level=1))


class LayoutEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutEditor",
            display_name="Layout Editor",
            category=CATEGORY,
            description="Draw box trajectories on the image: add objects, drag a box per object at any key frame "
                        "(boxes may leave the image), scrub or play the interpolated boxes. Outputs the same layout "
                        "as Layout from JSON on the same data; the drawing is saved in the workflow. Can start from "
                        "a connected layout (e.g. core's Create Bounding Boxes through Layout from Bounding Boxes).",
            inputs=[
                io.Int.Input("frames", default=16, min=1, max=MAX_FRAMES,
                             tooltip="Video length in frames (the editor's timeline; key frames must be below it)."),
                io.Combo.Input("interpolation", options=list(INTERPOLATIONS), default="linear",
                               tooltip="Box-centre path between key boxes for objects that do not pick their own: "
                                       "linear, ease_in_out (stops at keys), catmull_rom (smooth curve)."),
                io.Combo.Input("size_space", options=list(SIZE_SPACES), default="log",
                               tooltip="Interpolate box sizes geometrically (log: even zooms) or linearly."),
                EditorType.Input("editor", tooltip="The drawn layout (JSON as Layout from JSON reads it, plus the "
                                                   "editor's image and colours); edited on the canvas.",
                                 extra_dict={"default": EMPTY_EDITOR}),
                io.Image.Input("image", optional=True,
                               tooltip="The image to draw on (its first frame); without it, the editor's own upload."),
                LayoutType.Input("start_layout", optional=True,
                                 tooltip="A layout to start from (e.g. Layout from Bounding Boxes on core's Create "
                                         "Bounding Boxes). While nothing is drawn the node outputs it and, after the "
                                         "run, the editor takes its boxes as key boxes; a drawing is never replaced "
                                         "unless you press ⤓ start (⟲ undoes it)."),
            ],
            outputs=[LayoutType.Output(display_name="layout"),
                     io.String.Output(display_name="json", tooltip="The layout as JSON text, one key box per line."),
                     io.Image.Output(display_name="image",
                                     tooltip="The image drawn on (the connected image, else the uploaded one, else "
                                             "a grey 512x320 frame).")],
        )

    @classmethod
    def execute(cls, frames: int, interpolation: str, size_space: str, editor: str,
                image: torch.Tensor | None = None, start_layout: Layout | None = None) -> io.NodeOutput:
        start = _start_data(start_layout, interpolation) if start_layout is not None else None
        data = _editor_data(editor, frames, start)
        lay = parse_layout(data, frames=frames, interpolation=interpolation, size_space=size_space)
        if image is None and isinstance(data.get("image"), str) and data["image"]:
            image = _editor_image(data["image"])
        shown = image
        if image is None:
            log.info("Layout Editor: no image connected or uploaded; the image output is a grey frame")
            image = torch.full((1, *PLACEHOLDER_SIZE, 3), 0.5)
        text = lay.to_text()
        ui_out = {"i2v_layout": [text]}
        if shown is not None:
            ui_out["i2v_editor_image"] = _save_temp(shown)
        if start is not None:  # the editor imports it when empty, else offers ⤓ start
            ui_out["i2v_start"] = [json.dumps(start)]
        return io.NodeOutput(lay, text, image, ui=ui_out)


def _phrases_input(default: str) -> io.String.Input:
    return io.String.Input("phrases", default=default,
                           tooltip="Object phrases, comma-separated, in order (missing ones are numbered).")


def _size_inputs() -> list:
    return [io.Int.Input("width", default=512, min=1, max=16384,
                         tooltip="Width in pixels of the image the coordinates refer to."),
            io.Int.Input("height", default=320, min=1, max=16384,
                         tooltip="Height in pixels of the image the coordinates refer to.")]


def _box_inputs() -> list:
    return [io.Float.Input("box_width", default=96.0, min=1.0, max=16384.0, step=1.0,
                           tooltip="Width in pixels of the box that follows each point."),
            io.Float.Input("box_height", default=96.0, min=1.0, max=16384.0, step=1.0,
                           tooltip="Height in pixels of the box that follows each point.")]


def _interp_input() -> io.Combo.Input:
    return io.Combo.Input("interpolation", options=list(INTERPOLATIONS), default="linear",
                          tooltip="Box-centre path between the key boxes.")


class LayoutFromSpline(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutFromSpline",
            display_name="Layout from Spline Coordinates",
            category=CATEGORY,
            description="A layout from point paths in pixels, e.g. the KJNodes Spline Editor's coord_str (a JSON list "
                        "of {x, y}, or a list of such lists): one object per path, a box of the given size centred on "
                        "each point, the points spread over the frames.",
            inputs=[
                io.String.Input("coordinates", multiline=True, default='[{"x": 100, "y": 200}, {"x": 400, "y": 150}]',
                                tooltip='[{"x": px, "y": px}, ...] (one path) or [[...], [...]] (several); what the '
                                        "KJNodes Spline Editor's coord_str and core's TracksFromCoords use."),
                *_size_inputs(), *_box_inputs(),
                io.Int.Input("frames", default=0, min=0, max=MAX_FRAMES,
                             tooltip="Video length; 0 = one frame per point of the longest path."),
                _phrases_input("object"), _interp_input(),
            ],
            outputs=[LayoutType.Output(display_name="layout")],
        )

    @classmethod
    def execute(cls, coordinates: str, width: int, height: int, box_width: float, box_height: float, frames: int,
                phrases: str, interpolation: str) -> io.NodeOutput:
        return io.NodeOutput(layout_from_points(coordinates, width, height, box_width, box_height, frames,
                                                  split_phrases(phrases), interpolation))


class LayoutFromBBOX(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LayoutFromBBOX",
            display_name="Layout from BBOX",
            category=CATEGORY,
            description="A layout from pixel boxes: a BBOX list (KJNodes BatchCropFromMask, Points Editor) or the "
                        "same as JSON text. One object with a box per frame, or one object per box.",
            inputs=[
                io.String.Input("bbox_json", multiline=True, default="[[40, 160, 96, 96], [360, 120, 96, 96]]",
                                tooltip="Boxes as JSON, [[x, y, w, h], ...] (or [x0, y0, x1, y1] with xyxy); "
                                        "ignored when bbox is connected."),
                *_size_inputs(),
                io.Combo.Input("bbox_format", options=list(BBOX_FORMATS), default="xywh",
                               tooltip="xywh: x, y, width, height (BatchCropFromMask, Points Editor default); "
                                       "xyxy: corners."),
                io.Combo.Input("mode", options=list(BBOX_MODES), default=BBOX_MODES[0],
                               tooltip="A box per frame of one object (spread over frames), or each box its own "
                                       "object held still (add key boxes later in the Layout Editor)."),
                io.Int.Input("frames", default=0, min=0, max=MAX_FRAMES,
                             tooltip="Video length; 0 = one frame per box (per-frame mode) or 16."),
                _phrases_input("object"), _interp_input(),
                BBoxType.Input("bbox", optional=True, tooltip="A BBOX value from another node (list of 4-number boxes)."),
            ],
            outputs=[LayoutType.Output(display_name="layout")],
        )

    @classmethod
    def execute(cls, bbox_json: str, width: int, height: int, bbox_format: str, mode: str, frames: int,
                phrases: str, interpolation: str, bbox=None) -> io.NodeOutput:
        value = bbox if bbox is not None else bbox_json
        return io.NodeOutput(layout_from_bboxes(value, width, height, bbox_format, mode, frames,
                                                  split_phrases(phrases), interpolation))


NODES = [LayoutEditor, LayoutFromSpline, LayoutFromBBOX]

if HAS_TRACKS:
    class LayoutToTracks(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="I2VMotion_LayoutToTracks",
                display_name="Layout to Tracks",
                category=CATEGORY,
                description="Core TRACKS from a layout: each object's box centre at every frame, in pixels "
                            "(for WanMove and the core track nodes); visible while the box overlaps the image.",
                inputs=[LayoutType.Input("layout", tooltip="A layout."), *_size_inputs()],
                outputs=[io.Tracks.Output(display_name="tracks"),
                         io.Int.Output(display_name="track_length", tooltip="Frames.")],
            )

        @classmethod
        def execute(cls, layout: Layout, width: int, height: int) -> io.NodeOutput:
            return io.NodeOutput(layout_to_tracks(layout, width, height), layout.frames)

    class TracksToLayout(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="I2VMotion_TracksToLayout",
                display_name="Tracks to Layout",
                category=CATEGORY,
                description="A layout from core TRACKS (TracksFromCoords, Generate Video Tracks): one object per "
                            "track, a box of the given size centred on it at every frame.",
                inputs=[io.Tracks.Input("tracks", tooltip="Tracks: pixel points per frame."), *_size_inputs(),
                        *_box_inputs(), _phrases_input("track"), _interp_input(),
                        io.Float.Input("simplify", default=0.0, min=0.0, max=1000.0, step=0.5,
                                       tooltip="Drop key boxes the straight path between their neighbours passes "
                                               "within this many pixels of (0 = a key box every frame).")],
                outputs=[LayoutType.Output(display_name="layout")],
            )

        @classmethod
        def execute(cls, tracks: dict, width: int, height: int, box_width: float, box_height: float, phrases: str,
                    interpolation: str, simplify: float) -> io.NodeOutput:
            return io.NodeOutput(tracks_to_layout(tracks, width, height, box_width, box_height,
                                                    split_phrases(phrases), interpolation, simplify=simplify))

    NODES += [LayoutToTracks, TracksToLayout]

if HAS_BOUNDING_BOX:
    def _grid_size(width: int, height: int, image: torch.Tensor | None) -> tuple[int, int]:
        """The pixel grid of the boxes: the image's size when one is connected, else width x height."""
        return (int(image.shape[2]), int(image.shape[1])) if image is not None else (width, height)

    def _image_size_input(what: str) -> io.Image.Input:
        return io.Image.Input("image", optional=True,
                              tooltip=f"An image whose width and height replace width/height ({what}).")

    class LayoutFromBoundingBoxes(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            box = io.BoundingBox.Input(
                "bboxes", force_input=True,
                tooltip="Bounding boxes for one key frame (Create Bounding Boxes), or a list of frames (a detector "
                        "on a video: one key frame each).")
            return io.Schema(
                node_id="I2VMotion_LayoutFromBoundingBoxes",
                display_name="Layout from Bounding Boxes",
                category=CATEGORY,
                description="A layout from core bounding boxes: connect one Create Bounding Boxes per key frame "
                            "(another input appears), or a node that outputs a box list per frame (RT-DETR, SAM3). "
                            "Each box frame is a key frame, spread over the frames or placed at key_frames; the i-th "
                            "box of every frame is the i-th object (or boxes are paired by their label).",
                inputs=[
                    io.Autogrow.Input("bboxes", template=io.Autogrow.TemplatePrefix(
                        box, prefix="bboxes_", min=1, max=MAX_BOX_INPUTS),
                        tooltip="BOUNDING_BOX inputs, in key-frame order: each one's frames follow the previous "
                                "one's (a single box or one list of boxes is one frame)."),
                    *_size_inputs(),
                    io.Int.Input("frames", default=16, min=0, max=MAX_FRAMES,
                                 tooltip="Video length; 0 = one frame per box frame."),
                    io.String.Input("key_frames", default="",
                                    tooltip="The frame of each box frame, e.g. 0, 8, 15 (one per box frame, in input "
                                            "order); empty = spread evenly from frame 0 to the last."),
                    io.Combo.Input("match", options=list(BOX_MATCHES), default=BOX_MATCHES[0],
                                   tooltip="Which boxes are the same object across key frames: box order (the i-th "
                                           "box of each frame: draw the objects in the same order on every Create "
                                           "Bounding Boxes, whose boxes carry no description), or description (a "
                                           "detector's label, the description Layout to Bounding Boxes writes; a "
                                           "repeated one pairs by its order). A box of zero size leaves its object "
                                           "without a key box at that frame."),
                    io.String.Input("phrases", default="",
                                    tooltip="Object phrases, comma-separated, in object order; missing ones are the "
                                            "boxes' labels or descriptions where they carry one, else numbered."),
                    _interp_input(),
                    _image_size_input("the image the boxes were drawn on or detected in"),
                ],
                outputs=[LayoutType.Output(display_name="layout")],
            )

        @classmethod
        def execute(cls, bboxes: dict, width: int, height: int, frames: int, key_frames: str, match: str,
                    phrases: str, interpolation: str, image: torch.Tensor | None = None) -> io.NodeOutput:
            def index(name: str) -> int:
                tail = name.rsplit("_", 1)[-1]
                return int(tail) if tail.isdigit() else 0

            values = [bboxes[k] for k in sorted(bboxes or {}, key=index) if bboxes[k] is not None]
            w, h = _grid_size(width, height, image)
            return io.NodeOutput(layout_from_bounding_boxes(values, w, h, frames, parse_frame_list(key_frames),
                                                              match, split_phrases(phrases), interpolation))

    class LayoutToBoundingBoxes(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="I2VMotion_LayoutToBoundingBoxes",
                display_name="Layout to Bounding Boxes",
                category=CATEGORY,
                description="Core bounding boxes from a layout: for every frame, every object's box in pixels (the "
                            "BOUNDING_BOX list per frame that Draw BBoxes, SAM3 and Create Bounding Boxes take), in "
                            "object order, the phrase as each box's description and label.",
                inputs=[LayoutType.Input("layout", tooltip="A layout."), *_size_inputs(),
                        io.Boolean.Input("clip_to_image", default=False,
                                         tooltip="Cut boxes to the image (a box wholly outside it is 0 wide there); "
                                                 "off: boxes may leave the image, as in the layout."),
                        _image_size_input("the image the boxes will be used on")],
                outputs=[io.BoundingBox.Output(display_name="bboxes",
                                               tooltip="A list of frames, each a list of {x, y, width, height} pixel "
                                                       "boxes (whole pixels), one per object.")],
            )

        @classmethod
        def execute(cls, layout: Layout, width: int, height: int, clip_to_image: bool,
                    image: torch.Tensor | None = None) -> io.NodeOutput:
            w, h = _grid_size(width, height, image)
            return io.NodeOutput(layout_to_bounding_boxes(layout, w, h, clip_to_image))

    NODES += [LayoutFromBoundingBoxes, LayoutToBoundingBoxes]
