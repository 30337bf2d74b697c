"""Guide video compositing, model-free fill, latent composition, benchmark cases, drawing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2v_motion.layout import (box_masks, compose_latents, composite_guide, crop_box, draw_layout, fill_region,
                               list_cases, load_case, make_plate, parse_layout, ssim)
from support.synth import make_example_cases
from i2v_motion.layout.guide import change_mask

CASES = Path(__file__).resolve().parents[2] / "example_workflows" / "layout_cases"


def case(name: str):
    c = load_case(CASES, name)
    return c, c.image[0].permute(2, 0, 1)


def test_shipped_cases_load_and_regenerate(tmp_path):
    names = list_cases(CASES)
    assert names == ["ball_roll", "bird_curve", "car_approach", "kite_exit", "three_balloons", "two_boats"]
    multi = [n for n in names if len(load_case(CASES, n).layout.objects) > 1]
    assert multi == ["three_balloons", "two_boats"]
    made = make_example_cases(tmp_path)
    assert sorted(made) == names
    for n in names:
        a = np.asarray(Image.open(CASES / f"{n}.png").convert("RGB"))
        b = np.asarray(Image.open(tmp_path / f"{n}.png").convert("RGB"))
        assert a.shape == (320, 512, 3) and np.array_equal(a, b), n
        assert json.loads((CASES / f"{n}.json").read_text()) == json.loads((tmp_path / f"{n}.json").read_text())
    c = load_case(CASES, 0)
    assert c.name == "ball_roll" and c.caption and c.image.shape == (1, 320, 512, 3)


def test_case_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_case(tmp_path / "nope", 0)
    with pytest.raises(ValueError, match="has no .json cases"):
        load_case(tmp_path, 0)
    (tmp_path / "a.json").write_text('{"image": "a.png", "objects": [{"phrase": "x", "boxes": [[0, 0.5, 0, 0.2, 1]]}]}')
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"case 'a': layout object 0 \('x'\), key frame 0: x1=0.2"):
        load_case(tmp_path, "a")
    (tmp_path / "b.json").write_text('{"image": "missing.png", "objects": []}')
    with pytest.raises(ValueError, match="image .* not found"):
        load_case(tmp_path, "b")
    (tmp_path / "c.json").write_text('{"image": ')
    with pytest.raises(ValueError, match="malformed"):
        load_case(tmp_path, "c")
    with pytest.raises(ValueError, match="out of range"):
        load_case(tmp_path, 7)
    with pytest.raises(ValueError, match="'zzz' not found"):
        load_case(tmp_path, "zzz")


def test_fill_removes_object_and_keeps_the_rest():
    c, img = case("ball_roll")
    src_box = c.layout.source_boxes()
    region = box_masks(src_box, 320, 512, 0.0, 4.0)[0]
    for method in ("diffuse", "mean"):
        plate = fill_region(img, region, method)
        assert torch.isfinite(plate).all()
        assert torch.equal(plate[:, region == 0], img[:, region == 0])
        # the red ball is gone: the filled box is much less red than the source box, and smooth
        inside = region == 1
        red = lambda x: float((x[0] - x[1:].mean(0))[inside].mean())  # noqa: E731
        assert red(img) > 0.15 and red(plate) < 0.02, (method, red(img), red(plate))
    assert torch.equal(fill_region(img, region, "none"), img)
    with pytest.raises(ValueError, match="fill 'blur'"):
        fill_region(img, region, "blur")
    everything = fill_region(img, torch.ones(320, 512))
    assert torch.isfinite(everything).all()


@pytest.mark.parametrize("name", ["ball_roll", "car_approach", "two_boats", "kite_exit"])
def test_guide_moves_and_scales_objects(name):
    c, img = case(name)
    lay = c.layout
    guide, plate = composite_guide(img, lay, feather=8.0, margin=4.0)
    T, C, H, W = guide.shape
    assert (T, C, H, W) == (16, 3, 320, 512)
    assert (guide[0] - img).abs().max() < 1e-5                   # nothing has moved yet: the source
    boxes = lay.boxes()
    for k in range(boxes.shape[0]):
        sb = boxes[k, 0]
        src_crop, _ = crop_box(img, sb, 48, 48)
        for t in (5, 10, 15):
            b = boxes[k, t]
            if float(b[0]) < 0 or float(b[2]) > 1 or float(b[1]) < 0 or float(b[3]) > 1:
                continue
            crop, _ = crop_box(guide[t], b, 48, 48)
            assert ssim(crop, src_crop) > 0.85, (name, k, t)
    # far from every box the guide is exactly the source
    far = change_mask(lay, H, W, 8.0 + 4.0 + 2.0) == 0
    assert torch.equal(guide.permute(1, 0, 2, 3)[:, far], img[:, None].expand(C, T, H, W)[:, far])


def test_guide_uses_given_plate():
    c, img = case("ball_roll")
    plate = torch.zeros_like(img)
    plate[1] = 1.0  # pure green plate
    guide, used = composite_guide(img, c.layout, plate=plate, feather=4.0, margin=2.0)
    assert used is not None and torch.equal(used, plate)
    vac = box_masks(c.layout.source_boxes(), 320, 512, 0.0, -2.0)[0] > 0.999
    moved = box_masks(c.layout.boxes()[:, 15], 320, 512, 0.0, 8.0)[0] > 0
    sel = vac & ~moved
    assert torch.allclose(guide[15][:, sel], plate[:, sel])
    with pytest.raises(ValueError, match="plate is 10x10 but the image is 512x320"):
        composite_guide(img, c.layout, plate=torch.zeros(3, 10, 10))


def test_plate_fills_every_source_box():
    c, img = case("three_balloons")
    plate = make_plate(img, c.layout, "diffuse", margin=4.0)
    for b in c.layout.source_boxes():
        a, _ = crop_box(img, b, 32, 32)
        p, _ = crop_box(plate, b, 32, 32)
        assert float((a - p).abs().mean()) > 0.05


def test_compose_latents_keeps_source_outside():
    lay = parse_layout({"objects": [{"boxes": [[0, 0.1, 0.1, 0.3, 0.3], [7, 0.6, 0.6, 0.8, 0.8]]}]}, frames=8)
    src = torch.randn(1, 4, 20, 30)
    frames = torch.randn(8, 4, 20, 30)
    out = compose_latents(src, frames, lay, grow=2.0)
    m = change_mask(lay, 20, 30, 2.0)
    assert torch.equal(out.permute(1, 0, 2, 3)[:, m == 0], src[0][:, None].expand(4, 8, 20, 30)[:, m == 0])
    assert torch.equal(out.permute(1, 0, 2, 3)[:, m == 1], frames.permute(1, 0, 2, 3)[:, m == 1])


def test_draw_layout_marks_boxes_and_paths():
    c, img = case("two_boats")
    frames = c.image.repeat(16, 1, 1, 1)
    out = draw_layout(frames, c.layout, line_width=3)
    assert out.shape == frames.shape and out.dtype == torch.float32
    assert not torch.equal(out, frames)
    b = c.layout.boxes()[0, 15]
    x0, y0 = int(float(b[0]) * 512), int(float(b[1]) * 320)
    assert torch.allclose(out[15, y0 + 1, x0 + 10], torch.tensor([255, 64, 64]) / 255.0, atol=0.01)
    tracked = c.layout.boxes() + 0.01
    out2 = draw_layout(frames, c.layout, tracked=tracked, show_path=False, show_labels=False)
    assert out2.shape == frames.shape and not torch.equal(out2, out)
