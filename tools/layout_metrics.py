#!/usr/bin/env python3
"""Layout metrics without downloaded weights (script form of the ``I2VMotion_LayoutMetrics`` node).

Scores a generated video against a layout: vIoU@0.5 and mean IoU of the tracked source object
(normalised cross-correlation over scales), object SSIM against the source crop, background PSNR/SSIM
outside all boxes, afterimage score of the vacated region (0 = plate level, 1 = the object lingers).

    python tools/layout_metrics.py --case example_workflows/layout_cases/ball_roll.json --video out.webp
    python tools/layout_metrics.py --image src.png --layout layout.json --video frames_dir/ [--plate plate.png]
    python tools/layout_metrics.py --demo        # the built-in guide videos of every shipped case

Videos: a folder of frames (sorted by name), an animated WEBP/GIF/PNG, or any file PyAV reads.
Needs torch, numpy and PIL only (the host venv has them); no ComfyUI.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageSequence  # noqa: E402

import paths  # noqa: E402

L = paths.layout_package()  # the pack's pure layout maths, without ComfyUI

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def load_video(path: Path) -> torch.Tensor:
    """Frames ``[T, 3, H, W]`` in 0..1."""
    frames = []
    if path.is_dir():
        for f in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXT):
            with Image.open(f) as im:
                frames.append(np.asarray(im.convert("RGB")))
    elif path.suffix.lower() in {".webp", ".gif", ".png", ".apng"}:
        with Image.open(path) as im:
            frames = [np.asarray(fr.convert("RGB")) for fr in ImageSequence.Iterator(im)]
    else:
        try:
            import av
        except ImportError:
            raise SystemExit(f"cannot read {path}: install PyAV or give a folder of frames / animated WEBP") from None
        with av.open(str(path)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if not frames:
        raise SystemExit(f"no frames found in {path}")
    return torch.from_numpy(np.stack(frames)).float().permute(0, 3, 1, 2) / 255.0


def _fit(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)


def summary_line(name: str, rep: dict) -> str:
    f = lambda v: "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"  # noqa: E731
    return (f"{name:16s} objects {rep['objects_count']}  vIoU@0.5 {f(rep['viou50'])}  mIoU {f(rep['miou'])}  "
            f"object SSIM {f(rep['object_ssim'])}  background PSNR {f(rep['background_psnr'])} dB "
            f"SSIM {f(rep['background_ssim'])}  afterimage {f(rep['afterimage'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", type=Path, help="a benchmark case JSON (image + key boxes + caption)")
    ap.add_argument("--image", type=Path, help="source image (with --layout)")
    ap.add_argument("--layout", type=Path, help="layout JSON (with --image)")
    ap.add_argument("--frames", type=int, help="override the layout length (default: the video's)")
    ap.add_argument("--video", type=Path, help="generated video: frames folder, animated image or video file")
    ap.add_argument("--plate", type=Path, help="background plate image for the afterimage score")
    ap.add_argument("--work-size", type=int, default=128, help="tracking resolution (longer side)")
    ap.add_argument("--out", type=Path, help="write the full JSON report here")
    ap.add_argument("--preview", type=Path, help="write an animated WEBP with target and tracked boxes")
    ap.add_argument("--demo", action="store_true", help="score the built-in guide video of every shipped case")
    a = ap.parse_args()

    if a.demo:
        folder = REPO / "example_workflows" / "layout_cases"
        reports = {}
        for name in L.list_cases(folder):
            c = L.load_case(folder, name)
            src = c.image[0].permute(2, 0, 1)
            guide, plate = L.composite_guide(src, c.layout)
            rep = L.evaluate_layout(guide, src, c.layout, plate=plate, data_range=1.0, work_size=a.work_size)
            reports[name] = rep
            print(summary_line(name, rep), flush=True)
            static = L.evaluate_layout(src[None].repeat(c.layout.frames, 1, 1, 1), src, c.layout, plate=plate,
                                       data_range=1.0, work_size=a.work_size)
            print(summary_line("  (static video)", static), flush=True)
        if a.out:
            a.out.write_text(json.dumps(L.json_safe(reports), indent=1))
        return

    if a.video is None:
        ap.error("--video is required (or --demo)")
    video = load_video(a.video)
    T, _, H, W = video.shape
    if a.case:
        c = L.load_case(a.case.parent, a.case.stem)
        src_img, lay = c.image, c.layout
    elif a.image and a.layout:
        src_img = L.load_image(a.image)
        lay = L.parse_layout(a.layout.read_text(encoding="utf-8"))
    else:
        ap.error("give --case, or --image and --layout")
    lay = L.with_frames(lay, a.frames or T) if (a.frames or T) != lay.frames else lay
    if lay.frames != T:
        raise SystemExit(f"the video has {T} frames but the layout has {lay.frames}")
    src = _fit(src_img[0].permute(2, 0, 1)[None], H, W)[0]
    plate = None
    if a.plate:
        plate = _fit(L.load_image(a.plate)[0].permute(2, 0, 1)[None], H, W)[0]
    rep = L.evaluate_layout(video, src, lay, plate=plate, data_range=1.0, work_size=a.work_size)
    print(summary_line(a.video.name, rep))
    for o in rep["objects"]:
        print(f"  {o['phrase'] or '(object)':20s} vIoU@0.5 {o['viou50']:.3f}  mIoU {o['miou']:.3f}  "
              f"object SSIM {o['object_ssim']:.3f}  scored frames {o['frames']}")
    if a.out:
        a.out.write_text(json.dumps(L.json_safe(rep), indent=1))
    if a.preview:
        tracked = torch.tensor([o["tracked_boxes"] for o in rep["objects"]])
        prev = L.draw_layout(video.permute(0, 2, 3, 1), lay, 2, False, True, tracked=tracked)
        ims = [Image.fromarray((f.numpy() * 255 + 0.5).astype(np.uint8)) for f in prev]
        ims[0].save(a.preview, save_all=True, append_images=ims[1:], duration=125, loop=0, lossless=False, quality=85)


if __name__ == "__main__":
    main()
