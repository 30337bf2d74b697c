"""The layout and schedule nodes on core's Stable Video Diffusion (ComfyUI's own SVD model code).

Oracle layout test on SVD: a tiny SVD (``comfy.model_base.SVD_img2vid``, random weights) whose prediction is
replaced by the guide latents, sampled by stock KSampler through SVD's own conds, noise schedule (continuous
EDM, σ_max 700) and frames-as-batch latents; only Layout Masked Denoise's masks and schedule decide where
things end up, and the tracker reads vIoU off the result. (The SVD example workflows, EDG experts + expert
schedule and layout masked denoise, run headless in tests/integration on a tiny SVD checkpoint that core's
Image Only Checkpoint Loader loads.)
"""
from __future__ import annotations

from pathlib import Path

import pytest

from i2v_motion import layout as L
from support.oracle import Run, predicting, record_progress, sample  # the SD-UNet oracle test's helpers
from support.models import tiny_svd

CASES = tuple(L.list_cases(Path(__file__).resolve().parents[2] / "example_workflows" / "layout_cases"))


@pytest.fixture(scope="module")
def svd():
    m = tiny_svd(0)
    assert type(m.model).__name__ == "SVD_img2vid"
    return m


def test_guide_as_prediction_follows_the_boxes_on_svd(svd):
    ious, lines = [], []
    for name in CASES:
        r = Run(name)
        model, latent = r.masked(predicting(svd, r.g))
        calls = record_progress(model)
        out = sample(model, latent)
        rep = r.evaluate(out)
        for o in rep["objects"]:
            ious += [i for i in o["ious"] if i is not None]
        lines.append(f"SVD {name:13s} vIoU@0.5 {rep['viou50']:.3f}  mIoU {rep['miou']:.3f}  "
                     f"PSNR outside masks {rep['psnr_outside_masks']:.1f} dB  afterimage {rep['afterimage']:.3f}")
        assert rep["viou50"] >= 0.9, name
        assert rep["psnr_outside_masks"] >= 40.0, name
        fn = model.model_options["denoise_mask_function"]
        assert isinstance(fn.inner, L.LayoutDenoiseMask) and len(calls) > 0  # the schedule ran on SVD's sampler
    viou = sum(i >= 0.5 for i in ious) / len(ious)
    print("\n" + "\n".join(lines) + f"\nSVD all: vIoU@0.5 {viou:.3f} over {len(ious)} object-frames, "
          f"mIoU {sum(ious) / len(ious):.3f}")
    assert viou >= 0.95
