"""Trajectory interop on text samples of the formats users make with other nodes: KJNodes Spline Editor
``coord_str`` and BBOX lists, core TRACKS (ComfyUI 0.33: LAYOUT -> Tracks -> LAYOUT on centres, and against core's
own TracksFromCoords / Generate Video Tracks)."""
from __future__ import annotations

import json

import pytest
import torch

import i2v_motion.layout as L
from i2v_motion.nodes import trajectory as TR

W, H = 512, 320
# KJNodes Spline Editor coord_str: one spline (16 points sampled), and two splines (nested lists), in pixels
SPLINE_ONE = json.dumps([{"x": 40 + 25 * i, "y": 200 - 6 * i} for i in range(16)])
SPLINE_TWO = ('[[{"x": 100, "y": 100}, {"x": 200, "y": 120}, {"x": 300, "y": 160}], '
              "[{'x': 450, 'y': 250}, {'x': 380, 'y': 240}, {'x': 300, 'y': 200}]]")  # single quotes: KJNodes accepts
# KJNodes BBOX: BatchCropFromMask (x, y, w, h) per frame; Points Editor xyxy boxes
BBOX_PER_FRAME = [(10, 150, 80, 60), (60, 140, 90, 68), (110, 130, 100, 75), (170, 120, 110, 82)]
BBOX_XYXY_TEXT = "[[10, 20, 110, 90], [300, 40, 380, 200]]"


def _centres(lay: L.Layout) -> torch.Tensor:
    b = lay.boxes().double()
    return torch.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2], -1)


def _case_layout() -> L.Layout:
    """A two-object layout with a box leaving the image and a Catmull-Rom path."""
    return L.parse_layout({"objects": [
        {"phrase": "car", "boxes": [[0, 0.1, 0.5, 0.3, 0.8], [15, 0.95, 0.4, 1.25, 0.75]]},
        {"phrase": "kite", "interpolation": "catmull_rom",
         "boxes": [[0, 0.5, 0.1, 0.6, 0.3], [8, 0.3, 0.2, 0.45, 0.35], [15, 0.7, 0.05, 0.8, 0.2]]}]}, frames=16)


def test_layout_tracks_layout_round_trip_keeps_centres():
    lay = _case_layout()
    tracks = L.layout_to_tracks(lay, W, H)
    assert tuple(tracks["track_path"].shape) == (16, 2, 2) and tracks["track_path"].dtype == torch.float32
    vis = tracks["track_visibility"]
    assert vis.dtype == torch.bool and vis[:, 1].all() and vis[0, 0]
    back = L.tracks_to_layout(tracks, W, H, 64, 48, ["car", "kite"])
    err = (_centres(back) - _centres(lay)).abs().max().item()
    assert err < 2e-7, err  # float32 pixels: exact to float32 precision
    assert torch.equal(torch.tensor(back.to_dict()["objects"][0]["boxes"])[:, 0], torch.arange(16.0))
    # at the layout JSON's precision (6 decimals) the centres are identical
    c0, c1 = _centres(lay).numpy().round(6), _centres(back).numpy().round(6)
    assert (c0 == c1).all()
    assert [o.phrase for o in back.objects] == ["car", "kite"]
    b = back.boxes()
    assert torch.allclose(b[..., 2] - b[..., 0], torch.full((2, 16), 64 / W), atol=1e-6)


def test_tracks_simplify_keeps_straight_segments_short():
    lay = L.parse_layout({"objects": [{"phrase": "ball", "boxes": [[0, 0.1, 0.5, 0.2, 0.6], [15, 0.8, 0.5, 0.9, 0.6]]}]})
    tracks = L.layout_to_tracks(lay, W, H)
    back = L.tracks_to_layout(tracks, W, H, 51.2, 32, simplify=0.5)
    assert [k.frame for k in back.objects[0].keys] == [0, 15]
    assert (_centres(back) - _centres(lay)).abs().max() < 1e-6
    curve = L.tracks_to_layout(L.layout_to_tracks(_case_layout(), W, H), W, H, 40, 40, simplify=0.5)
    assert 2 < len(curve.objects[1].keys) < 16  # the curve keeps some keys, not all
    assert (_centres(curve)[1] - _centres(_case_layout())[1]).abs().max() * W < 1.5


def test_spline_editor_coordinates():
    lay = TR.LayoutFromSpline.execute(SPLINE_ONE, W, H, 64.0, 32.0, 0, "ball", "linear").result[0]
    assert lay.frames == 16 and lay.objects[0].phrase == "ball"
    c = _centres(lay)[0]
    pts = torch.tensor([[p["x"] / W, p["y"] / H] for p in json.loads(SPLINE_ONE)], dtype=torch.float64)
    assert (c - pts).abs().max() < 1e-6
    two = TR.LayoutFromSpline.execute(SPLINE_TWO, W, H, 40.0, 40.0, 16, "boat, bird", "catmull_rom").result[0]
    assert [o.phrase for o in two.objects] == ["boat", "bird"]
    assert [k.frame for k in two.objects[0].keys] == [0, 8, 15]  # 3 points spread over 16 frames
    assert two.objects[1].keys[0].box == pytest.approx((430 / W, 230 / H, 470 / W, 270 / H))


@pytest.mark.parametrize("text,match", [("", "empty"), ("{nope", "not JSON"), ('[{"x": 1}]', "point 0"),
                                        ('[{"x": "a", "y": 2}]', "non-number"), ("[]", "list of"),
                                        ('[{"x": 5000, "y": 10}]', "far outside")])
def test_spline_errors_name_the_problem(text, match):
    with pytest.raises(ValueError, match=match):
        L.layout_from_points(text, W, H, 40, 40)


def test_bbox_lists():
    per_frame = TR.LayoutFromBBOX.execute("", W, H, "xywh", L.BBOX_MODES[0], 16, "dog", "linear",
                                          bbox=BBOX_PER_FRAME).result[0]
    keys = per_frame.objects[0].keys
    assert [k.frame for k in keys] == [0, 5, 10, 15]
    assert keys[1].box == pytest.approx((60 / W, 140 / H, 150 / W, 208 / H))
    objs = TR.LayoutFromBBOX.execute(BBOX_XYXY_TEXT, W, H, "xyxy", L.BBOX_MODES[1], 0, "a, b", "linear").result[0]
    assert objs.frames == 16 and [o.phrase for o in objs.objects] == ["a", "b"]
    assert objs.objects[1].keys[0].box == pytest.approx((300 / W, 40 / H, 380 / W, 200 / H))
    assert torch.equal(objs.boxes()[1, 0], objs.boxes()[1, -1])  # held still
    one = L.layout_from_bboxes(json.dumps([5, 5, 50, 50]), W, H)  # a single box, as JSON text
    assert one.frames == 1 and len(one.objects) == 1
    with pytest.raises(ValueError, match="bbox 1"):
        L.layout_from_bboxes([[1, 2, 3, 4], [1, 2, 3]], W, H)
    with pytest.raises(ValueError, match="x1=.* must be greater"):
        L.layout_from_bboxes([[50, 50, 10, 60]], W, H, "xyxy")


# -- core TRACKS (ComfyUI 0.33+) -------------------------------------------------------------------------
needs_tracks = pytest.mark.skipif(not TR.HAS_TRACKS, reason="this ComfyUI has no io.Tracks (added in 0.33 with "
                                                             "WanMove); the Tracks nodes are not registered here")


@needs_tracks
def test_tracks_nodes_round_trip():
    lay = _case_layout()
    tracks, length = TR.LayoutToTracks.execute(lay, W, H).result
    assert length == 16
    back = TR.TracksToLayout.execute(tracks, W, H, 64.0, 48.0, "car, kite", "linear", 0.0).result[0]
    assert (_centres(back) - _centres(lay)).abs().max() < 2e-7


@needs_tracks
def test_spline_text_gives_the_tracks_core_gives():
    """The same KJNodes coord_str through our nodes and through core's TracksFromCoords: identical tracks."""
    from comfy_extras.nodes_wanmove import WanMoveTracksFromCoords

    core, n = WanMoveTracksFromCoords.execute(SPLINE_ONE).result
    lay = TR.LayoutFromSpline.execute(SPLINE_ONE, W, H, 64.0, 32.0, 0, "ball", "linear").result[0]
    ours = TR.LayoutToTracks.execute(lay, W, H).result[0]
    assert n == 16 and ours["track_path"].shape == core["track_path"].shape
    assert (ours["track_path"] - core["track_path"].cpu()).abs().max() < 1e-4  # pixels


@needs_tracks
def test_core_generated_tracks_become_a_layout():
    from comfy_extras.nodes_wanmove import GenerateTracks

    core, n = GenerateTracks.execute(W, H, 0.1, 0.5, 0.5, 0.2, 0.9, 0.6, 16, 3, 0.05, bezier=True).result
    lay = TR.TracksToLayout.execute(core, W, H, 40.0, 40.0, "", "linear", 0.0).result[0]
    assert lay.frames == 16 and [o.phrase for o in lay.objects] == ["track 0", "track 1", "track 2"]
    again = TR.LayoutToTracks.execute(lay, W, H).result[0]
    assert (again["track_path"] - core["track_path"].cpu()).abs().max() < 1e-3


# -- core bounding boxes (BOUNDING_BOX: pure conversions here on both hosts, the nodes on ComfyUI 0.33+) -----------
def _on_grid() -> L.Layout:
    """Key boxes on whole pixels of a 512 x 320 image (one leaving it), so pixel boxes hold them exactly."""
    return L.parse_layout({"objects": [
        {"phrase": "car", "boxes": [[0, 64 / W, 160 / H, 160 / W, 256 / H], [15, 448 / W, 144 / H, 576 / W, 256 / H]]},
        {"phrase": "kite", "boxes": [[0, 320 / W, 32 / H, 368 / W, 96 / H], [15, 160 / W, 48 / H, 208 / W, 112 / H]]}]},
        frames=16)


@pytest.mark.parametrize("match", L.BOX_MATCHES)
def test_layout_bounding_boxes_layout_round_trip(match):
    lay = _case_layout()
    frames = L.layout_to_bounding_boxes(lay, W, H)
    assert len(frames) == 16 and all(len(f) == 2 for f in frames)
    car = frames[0][0]
    assert set(car) == {"x", "y", "width", "height", "label", "metadata"} and car["metadata"]["desc"] == "car"
    assert all(isinstance(car[k], int) for k in ("x", "y", "width", "height"))
    back = L.layout_from_bounding_boxes([frames], W, H, frames=16, match=match)
    assert [o.phrase for o in back.objects] == ["car", "kite"]
    assert [[k.frame for k in o.keys] for o in back.objects] == [list(range(16))] * 2
    err = (back.boxes().double() - lay.boxes().double()) * torch.tensor([W, H, W, H], dtype=torch.float64)
    assert err.abs().max() <= 0.5 + 1e-6, err.abs().max()  # corners rounded to whole pixels
    # key boxes on whole pixels come back exactly, through two key frames as well
    grid = _on_grid()
    two = L.layout_to_bounding_boxes(grid, W, H)
    again = L.layout_from_bounding_boxes([two[0], two[15]], W, H, frames=16, match=match)
    assert again.to_dict() == grid.to_dict()


def test_bounding_box_values_as_core_writes_them():
    box = {"x": 10, "y": 20, "width": 30, "height": 40}
    assert L.bounding_box_frames(box) == [[box]]  # Bounding Box (PrimitiveBoundingBox): one box
    assert L.bounding_box_frames([box, box]) == [[box, box]]  # one frame
    assert L.bounding_box_frames([[box], [], [box]]) == [[box], [], [box]]  # RT-DETR / SAM3: a frame per image
    assert L.bounding_box_frames(json.dumps([box])) == [[box]] and L.bounding_box_frames([]) == []
    # two one-frame inputs spread over 16 frames; explicit key frames; frames 0 = one per box frame
    a = [{"x": 0, "y": 0, "width": 64, "height": 32}]
    b = [{"x": 256, "y": 160, "width": 128, "height": 64}]
    lay = L.layout_from_bounding_boxes([a, b], W, H)
    assert lay.frames == 16 and [k.frame for k in lay.objects[0].keys] == [0, 15]
    assert lay.objects[0].keys[1].box == (0.5, 0.5, 0.75, 0.7) and lay.objects[0].phrase == "object 0"
    lay = L.layout_from_bounding_boxes([a, b], W, H, frames=24, key_frames=[4, 20], phrases=["ball"])
    assert lay.frames == 24 and [k.frame for k in lay.objects[0].keys] == [4, 20] and lay.objects[0].phrase == "ball"
    assert L.layout_from_bounding_boxes([[a, b]], W, H, frames=0).frames == 2
    assert L.parse_frame_list("0, 8\n15") == [0, 8, 15] and L.parse_frame_list(" ") == []


def test_bounding_boxes_pair_by_label_or_by_order():
    """RT-DETR-like detections: the order changes between frames, the labels do not; a label seen twice pairs by its
    order; a zero-size box leaves its object without a key box there."""
    def det(label, x, w=40):
        return {"x": x, "y": 100, "width": w, "height": 40, "label": label, "score": 0.9}

    frames = [[det("dog", 10), det("car", 200), det("car", 300)],
              [det("car", 220), det("dog", 50), det("car", 330)],
              [det("car", 240), det("car", 360), det("dog", 90, w=0)]]
    lay = L.layout_from_bounding_boxes([frames], W, H, frames=3, match="description")
    assert [o.phrase for o in lay.objects] == ["dog", "car", "car"]
    xs = [[round(k.x0 * W) for k in o.keys] for o in lay.objects]
    assert xs == [[10, 50], [200, 220, 240], [300, 330, 360]]
    by_order = L.layout_from_bounding_boxes([frames], W, H, frames=3)
    assert [[round(k.x0 * W) for k in o.keys] for o in by_order.objects] == [[10, 220, 240], [200, 50, 360],
                                                                            [300, 330]]
    assert [o.phrase for o in by_order.objects] == ["dog", "car", "car"]  # the first label each object shows


def test_layout_to_bounding_boxes_clips_on_request():
    lay = _case_layout()  # the car leaves the image on the right by frame 15
    raw = L.layout_to_bounding_boxes(lay, W, H)[15][0]
    assert raw["x"] + raw["width"] > W
    cut = L.layout_to_bounding_boxes(lay, W, H, clip=True)[15][0]
    assert cut["x"] + cut["width"] == W and cut["x"] == raw["x"]
    outside = L.parse_layout({"objects": [{"phrase": "gone", "boxes": [[0, 1.2, 0.2, 1.4, 0.4]]}]}, frames=2)
    assert L.layout_to_bounding_boxes(outside, W, H, clip=True)[0][0]["width"] == 0


@pytest.mark.parametrize("values,kw,match", [
    ([[{"x": 1, "y": 2, "width": 3}]], {}, "has no height"),
    ([[{"x": 1, "y": 2, "width": "3", "height": 4}]], {}, "width = '3' is not a finite number"),
    ([[{"x": 1, "y": 2, "width": float("nan"), "height": 4}]], {}, "not a finite number"),
    ([[{"x": 1, "y": 2, "width": -3, "height": 4}]], {}, "must not be negative"),
    ([[[1, 2, 3, 4]]], {}, "is not a bounding box"),
    ([[{"x": 1, "y": 2, "width": 3, "height": 4}, [1]]], {}, "not a mix"),
    ([7], {}, "got int"),
    ([[{"x": 2000, "y": 2, "width": 3, "height": 4}]], {}, "far outside a 512 x 320 image"),
    ([[]], {}, "no bounding boxes"),
    ([[{"x": 1, "y": 2, "width": 0, "height": 4}]], {}, "zero width or height"),
    ([[{"x": 1, "y": 2, "width": 3, "height": 4}]] * 2, {"key_frames": [0]}, "names 1 frames but the bounding boxes have 2"),
    ([[{"x": 1, "y": 2, "width": 3, "height": 4}]] * 2, {"key_frames": [3, 3]}, "names a frame twice"),
    ([[{"x": 1, "y": 2, "width": 3, "height": 4}]] * 2, {"key_frames": [0, 20]}, "raise frames"),
    ([[{"x": 1, "y": 2, "width": 3, "height": 4}]], {"match": "colour"}, "match 'colour' is not one of"),
    ("{", {}, "not JSON"),
])
def test_malformed_bounding_boxes_say_what_is_wrong(values, kw, match):
    with pytest.raises(ValueError, match=match):
        L.layout_from_bounding_boxes(values if isinstance(values, list) else [values], W, H, **kw)


def test_key_frames_text_must_be_frame_numbers():
    with pytest.raises(ValueError, match="'a' is not a whole number"):
        L.parse_frame_list("0, a")
    with pytest.raises(ValueError, match="negative"):
        L.parse_frame_list("-1")


def test_bounding_box_nodes_exist_where_the_host_has_the_type():
    """Registered by capability (``io.BoundingBox``), never by version: present on 0.33, absent on 0.3.75."""
    from comfy_api.latest import io

    import i2v_motion.nodes as NODES

    ids = {n.GET_SCHEMA().node_id for n in NODES.all_nodes()}
    have = hasattr(io, "BoundingBox") and hasattr(io, "Autogrow")
    assert TR.HAS_BOUNDING_BOX == have
    assert {"I2VMotion_LayoutFromBoundingBoxes", "I2VMotion_LayoutToBoundingBoxes"} <= ids if have else \
        not {"I2VMotion_LayoutFromBoundingBoxes", "I2VMotion_LayoutToBoundingBoxes"} & ids


needs_bounding_box = pytest.mark.skipif(not TR.HAS_BOUNDING_BOX, reason="this ComfyUI has no io.BoundingBox (core's "
                                        "box canvas, Create Bounding Boxes, came after 0.3.75); the bounding-box "
                                        "nodes are not registered here")


@needs_bounding_box
def test_bounding_box_nodes_round_trip_and_image_size():
    lay = _on_grid()
    (frames,) = TR.LayoutToBoundingBoxes.execute(lay, W, H, False).result
    inputs = {"bboxes_1": frames[15], "bboxes_0": frames[0]}  # the autogrow dict; order is by the input's number
    back = TR.LayoutFromBoundingBoxes.execute(inputs, W, H, 16, "", "box order", "car, kite", "linear").result[0]
    assert back.to_dict() == lay.to_dict()
    # a connected image's size replaces width/height on both nodes
    img = torch.zeros(1, H, W, 3)
    (same,) = TR.LayoutToBoundingBoxes.execute(lay, 64, 64, False, img).result
    assert same == frames
    again = TR.LayoutFromBoundingBoxes.execute({"bboxes_0": frames}, 64, 64, 0, "", "description", "", "linear",
                                               img).result[0]
    assert again.frames == 16 and (again.boxes() - lay.boxes()).abs().max() <= 0.5 / H + 1e-6  # whole pixels
    with pytest.raises(ValueError, match="key_frames"):
        TR.LayoutFromBoundingBoxes.execute(inputs, W, H, 16, "0", "box order", "", "linear")


@needs_bounding_box
def test_core_create_bounding_boxes_into_a_layout_and_back():
    """Core's own Create Bounding Boxes (as the canvas saves it: pixel boxes with metadata) for two key frames ->
    our layout; our boxes -> core's Create Bounding Boxes (its bboxes input shows the first frame) and Draw BBoxes."""
    from comfy_extras.nodes_bounding_boxes import CreateBoundingBoxes

    state0 = [{"x": 64, "y": 160, "width": 96, "height": 96, "metadata": {"type": "obj", "desc": "car"}},
              {"x": 320, "y": 32, "width": 48, "height": 64, "metadata": {"type": "obj", "desc": "kite"}}]
    state1 = [{"x": 400, "y": 144, "width": 128, "height": 112, "metadata": {"type": "obj", "desc": "car"}},
              {"x": 160, "y": 48, "width": 48, "height": 64, "metadata": {"type": "obj", "desc": "kite"}}]
    outs = [CreateBoundingBoxes.execute(W, H, editor_state=s).result[1] for s in (state0, state1)]
    assert outs[0] == [[{k: b[k] for k in ("x", "y", "width", "height")} for b in state0]]  # no description kept
    lay = TR.LayoutFromBoundingBoxes.execute({"bboxes_0": outs[0], "bboxes_1": outs[1]}, W, H, 16, "", "box order",
                                             "car, kite", "linear").result[0]
    assert [o.phrase for o in lay.objects] == ["car", "kite"]
    assert [k.frame for k in lay.objects[0].keys] == [0, 15]
    assert lay.objects[0].keys[1].box == (400 / W, 144 / H, 528 / W, 256 / H)  # leaves the image on the right
    (ours,) = TR.LayoutToBoundingBoxes.execute(lay, W, H, False).result
    seeded = CreateBoundingBoxes.execute(W, H, editor_state=[], last_incoming=[], bboxes=ours)
    assert seeded.result[1] == [[{k: b[k] for k in ("x", "y", "width", "height")} for b in ours[0]]]
    assert [e["desc"] for e in seeded.result[2]] == ["car", "kite"]  # our phrases as the canvas's descriptions
    try:
        from comfy_extras.nodes_rtdetr import DrawBBoxes
    except ImportError as e:  # pragma: no cover - DrawBBoxes ships with 0.33
        pytest.skip(f"no DrawBBoxes: {e}")
    video = torch.zeros(16, H, W, 3)
    drawn = DrawBBoxes.execute(ours, video).result[0]
    assert tuple(drawn.shape) == (16, H, W, 3)
    for t in (0, 15):  # each frame's boxes drawn on its own image
        x0 = min(ours[t][0]["x"], W - 1)
        assert drawn[t, :, x0].abs().sum() > 0 and drawn[t].abs().sum() > 0
    assert (drawn[0] != drawn[15]).any()
