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
