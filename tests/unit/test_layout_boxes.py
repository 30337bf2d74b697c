"""Layout data: JSON parsing and its errors, interpolation properties, masks."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from i2v_motion.layout import (INTERPOLATIONS, Layout, box_iou, box_masks, interpolate_keys, layout_from_masks,
                               layout_mask, make_object, parse_layout, region_masks, visibility, with_frames)


def one(boxes, frames=16, **kw) -> Layout:
    return parse_layout({"objects": [{"phrase": "ball", "boxes": boxes}]}, frames=frames, **kw)


# ---------------------------------------------------------------------------------------------- parsing

def test_parse_forms_and_round_trip():
    text = json.dumps({"frames": 12, "caption": "a ball rolls", "objects": [
        {"phrase": "ball", "boxes": [[0, 0.1, 0.2, 0.3, 0.4], {"frame": 11, "box": [0.5, 0.2, 0.7, 0.4]}]},
        {"label": "dog", "interpolation": "catmull_rom",
         "boxes": [{"frame": 3, "x0": 0.6, "y0": 0.6, "x1": 0.9, "y1": 0.9}]}]})
    lay = parse_layout(text)
    assert lay.frames == 12 and len(lay.objects) == 2 and lay.caption == "a ball rolls"
    assert lay.objects[1].phrase == "dog" and lay.objects[1].interpolation == "catmull_rom"
    assert lay.boxes().shape == (2, 12, 4)
    again = parse_layout(lay.to_json())
    assert torch.allclose(again.boxes(), lay.boxes())
    # a bare list of objects, and the frames override
    assert parse_layout(json.dumps([{"boxes": [[0, 0, 0, 1, 1]]}]), frames=5).frames == 5


@pytest.mark.parametrize("text, needle", [
    ('{"objects": [', "malformed at line 1"),
    ("", "empty"),
    ('{"objects": []}', "zero objects"),
    ('{"frames": 16}', "no 'objects'"),
    ('{"objects": [{"phrase": "cat", "boxes": []}]}', "layout object 0 ('cat') has no key boxes"),
    ('{"objects": [{"phrase": "cat", "boxes": [[0, 0.5, 0.1, 0.4, 0.3]]}]}',
     "layout object 0 ('cat'), key frame 0: x1=0.4 must be greater than x0=0.5"),
    ('{"objects": [{"phrase": "cat", "boxes": [[0, 0.1, 0.1, 0.4, 0.3]]}, {"phrase": "dog", "boxes": '
     '[[0, 0.1, 0.1, 0.4, 0.3], [7, 0.1, 0.5, 0.4, 0.5]]}]}',
     "layout object 1 ('dog'), key frame 7: y1=0.5 must be greater than y0=0.5"),
    ('{"objects": [{"phrase": "cat", "boxes": [[3, 120, 40, 300, 200]]}]}',
     "layout object 0 ('cat'), key frame 3: x0=120 is far outside [0, 1]"),
    ('{"objects": [{"phrase": "cat", "boxes": [[20, 0.1, 0.1, 0.4, 0.3]]}]}',
     "layout object 0 ('cat'), key frame 20: frame index is beyond the layout length (16 frames"),
    ('{"objects": [{"phrase": "cat", "boxes": [[-1, 0.1, 0.1, 0.4, 0.3]]}]}', "key frame -1"),
    ('{"objects": [{"phrase": "cat", "boxes": [[2, 0.1, 0.1, 0.4]]}]}', "must be [frame, x0, y0, x1, y1]"),
    ('{"objects": [{"phrase": "cat", "boxes": [[2, 0.1, "a", 0.4, 0.5]]}]}', "must be a number"),
    ('{"objects": [{"phrase": "cat", "boxes": [[1.5, 0.1, 0.1, 0.4, 0.5]]}]}', "whole number"),
    ('{"objects": [{"phrase": "cat", "interpolation": "cubic", "boxes": [[1, 0.1, 0.1, 0.4, 0.5]]}]}',
     "interpolation 'cubic'"),
])
def test_bad_input_errors_name_object_and_frame(text, needle):
    with pytest.raises(ValueError) as e:
        parse_layout(text, frames=16)
    assert needle in str(e.value)


def test_unsorted_and_duplicate_keys_sorted_last_wins(caplog):
    keys = [[15, 0.6, 0.4, 0.8, 0.6], [0, 0.1, 0.4, 0.3, 0.6], [8, 0.0, 0.0, 0.1, 0.1], [8, 0.3, 0.4, 0.5, 0.6]]
    with caplog.at_level(logging.WARNING, logger="i2v_motion.layout"):
        lay = one(keys)
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "key frame 8 given more than once; the last one wins" in msgs and "not in order" in msgs
    assert [k.frame for k in lay.objects[0].keys] == [0, 8, 15]
    assert lay.objects[0].keys[1].box == (0.3, 0.4, 0.5, 0.6)
    ref = one([[0, 0.1, 0.4, 0.3, 0.6], [8, 0.3, 0.4, 0.5, 0.6], [15, 0.6, 0.4, 0.8, 0.6]])
    assert torch.equal(lay.boxes(), ref.boxes())


def test_with_frames_checks_keys():
    lay = one([[0, 0.1, 0.1, 0.2, 0.2], [15, 0.5, 0.5, 0.6, 0.6]])
    assert with_frames(lay, 20).frames == 20
    with pytest.raises(ValueError, match="key frame 15"):
        with_frames(lay, 10)


# ---------------------------------------------------------------------------------------------- interpolation

KEYS = [[2, 0.05, 0.10, 0.15, 0.25], [7, 0.40, 0.50, 0.80, 0.95], [9, 0.45, 0.40, 0.60, 0.55],
        [15, 0.95, 0.05, 1.35, 0.30]]


@pytest.mark.parametrize("interp", INTERPOLATIONS)
@pytest.mark.parametrize("space", ["log", "linear"])
def test_passes_through_every_key_and_holds_outside(interp, space):
    lay = one(KEYS, frames=20, interpolation=interp, size_space=space)
    b = lay.boxes()[0]
    for f, *box in KEYS:
        assert torch.allclose(b[f], torch.tensor(box), atol=1e-6), (f, b[f], box)
    assert torch.equal(b[0], b[2]) and torch.equal(b[1], b[2])          # before the first key: still
    assert torch.equal(b[19], b[15]) and torch.equal(b[16], b[15])      # after the last key: still
    assert torch.isfinite(b).all() and ((b[:, 2:] - b[:, :2]) > 0).all()


@pytest.mark.parametrize("interp", INTERPOLATIONS)
def test_sizes_monotone_between_keys_in_log_mode(interp):
    b = one(KEYS, frames=20, interpolation=interp, size_space="log").boxes()[0].double()
    size = b[:, 2:] - b[:, :2]
    frames = [k[0] for k in KEYS]
    for f0, f1 in zip(frames, frames[1:]):
        seg = size[f0:f1 + 1]
        d = seg[1:] - seg[:-1]
        for c in range(2):
            assert (d[:, c] >= -1e-7).all() or (d[:, c] <= 1e-7).all(), (interp, f0, f1, seg[:, c])
            lo, hi = sorted((float(size[f0, c]), float(size[f1, c])))
            assert (seg[:, c] >= lo - 1e-7).all() and (seg[:, c] <= hi + 1e-7).all()  # no overshoot


def test_log_sizes_are_geometric_and_linear_is_arithmetic():
    keys = [[0, 0.4, 0.4, 0.5, 0.5], [10, 0.1, 0.1, 0.9, 0.9]]  # 8x zoom
    wl = one(keys, frames=11, size_space="log").boxes()[0, 5]
    wa = one(keys, frames=11, size_space="linear").boxes()[0, 5]
    assert abs(float(wl[2] - wl[0]) - (0.1 * 0.8) ** 0.5) < 1e-6
    assert abs(float(wa[2] - wa[0]) - 0.45) < 1e-6


def test_ease_and_catmull_rom_shapes():
    keys = [[0, 0.0, 0.4, 0.1, 0.5], [10, 0.5, 0.4, 0.6, 0.5], [20, 0.5, 0.9, 0.6, 1.0]]
    lin = one(keys, frames=21, interpolation="linear").boxes()[0]
    ease = one(keys, frames=21, interpolation="ease_in_out").boxes()[0]
    cr = one(keys, frames=21, interpolation="catmull_rom").boxes()[0]
    # ease-in-out starts slower than linear and stops at the key
    assert float(ease[1, 0]) < float(lin[1, 0])
    assert abs(float(ease[10, 0] - ease[9, 0])) < 0.5 * abs(float(lin[10, 0] - lin[9, 0]))
    # Catmull-Rom: the corner at frame 10 is rounded (velocity continuous), unlike linear
    v_in, v_out = cr[10] - cr[9], cr[11] - cr[10]
    assert torch.allclose(v_in, v_out, atol=0.01)
    assert not torch.allclose(lin[10] - lin[9], lin[11] - lin[10], atol=0.01)


def test_boxes_may_leave_the_frame():
    lay = one([[0, 0.7, 0.3, 0.9, 0.5], [10, 1.2, 0.3, 1.4, 0.5]], frames=11)
    vis = visibility(lay.boxes()[0])
    assert float(vis[0]) == pytest.approx(1.0) and float(vis[10]) == 0.0
    assert (vis[1:] <= vis[:-1] + 1e-6).all()
    m = layout_mask(lay, 20, 40)
    assert float(m[10].sum()) == 0.0 and float(m[0].sum()) > 0


def test_interpolate_keys_direct():
    obj = make_object("x", [(5, (0.2, 0.2, 0.4, 0.4))], frames=8)
    b = interpolate_keys(obj.keys, 8)
    assert b.shape == (8, 4) and torch.allclose(b, torch.tensor([[0.2, 0.2, 0.4, 0.4]]).expand(8, 4))


# ---------------------------------------------------------------------------------------------- masks

def test_box_masks_exact_area_and_feather():
    b = torch.tensor([[0.1, 0.25, 0.55, 0.8]])
    m = box_masks(b, 40, 60)
    assert float(m.sum()) == pytest.approx(0.45 * 60 * 0.55 * 40, rel=1e-5)
    mf = box_masks(b, 40, 60, feather=4.0)
    assert float(mf.min()) == 0.0 and float(mf.max()) == 1.0
    assert float(mf.sum()) > float(m.sum())  # outward feather
    inside = box_masks(b, 40, 60, grow=-1.0)
    assert (mf[inside > 0.999] == 1).all()


def test_region_masks_partition():
    lay = parse_layout({"objects": [
        {"boxes": [[0, 0.1, 0.1, 0.3, 0.4], [15, 0.6, 0.5, 0.9, 0.9]]},
        {"boxes": [[0, 0.5, 0.1, 0.7, 0.3]]}]}, frames=16)
    r = region_masks(lay, 32, 48, feather=1.5, margin=1.0)
    total = r["objects"] + r["vacated"] + r["background"]
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    assert float(r["vacated"][0].max()) < 1e-6          # nothing left yet at frame 0
    assert float(r["vacated"][15].sum()) > 20           # the first object's source box is vacated
    assert float(r["objects"][15, 25, 36]) == 1.0        # inside the moved box


def test_layout_from_masks():
    masks = torch.zeros(2, 20, 40)
    masks[0, 2:6, 4:10] = 1
    masks[1, 10:18, 20:36] = 1
    lay = layout_from_masks(masks, "thing", frames=16)
    keys = lay.objects[0].keys
    assert [k.frame for k in keys] == [0, 15]
    assert keys[0].box == pytest.approx((4 / 40, 2 / 20, 10 / 40, 6 / 20))
    assert keys[1].box == pytest.approx((20 / 40, 10 / 20, 36 / 40, 18 / 20))
    with pytest.raises(ValueError, match="every mask is empty"):
        layout_from_masks(torch.zeros(1, 8, 8), "none", 4)
    with pytest.raises(ValueError, match="2 masks but 3 key frames"):
        layout_from_masks(masks, "thing", 16, [0, 5, 9])


def test_box_iou():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2]])
    b = torch.tensor([[0.25, 0.0, 0.75, 0.5], [0.5, 0.5, 0.7, 0.7]])
    assert box_iou(a, b).tolist() == pytest.approx([1 / 3, 0.0])
