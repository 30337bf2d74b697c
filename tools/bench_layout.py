#!/usr/bin/env python3
"""Cost of layout conditioning on real-size networks: sampling time and peak memory with vs without it, same run.

Networks (random weights, real widths):

* ``dc512``: the full-size DynamiCrafter-512 UNet + Resampler (1.4 B parameters, this pack's model code through its
  loader), a frames-as-batch latent of a shipped case, 16 frames at ``--size`` (default 256x192);
* ``wan``: a full-width Wan 2.1 14B block stack (dim 5120, 40 heads, FFN 13824; ``--layers`` of the 40) in core's own
  WanModel, 5-D latents of the case stretched to 1 + 4k frames (default 17 = 5 latent frames) at ``--size``;
* ``--quick``: a toy SD1 UNet (the former bench), for CI smoke runs.

Variants: ``plain`` = the guide latent, no noise mask, the model as is; ``layout`` = the same after
``I2VMotion_LayoutMaskedDenoise`` (latent noise mask + per-step denoise-mask function). Same sampler, steps, seed;
runs interleaved after one warm-up each; the median time is reported with the ratio (goal <= 1.05x), the peak RSS
while each ran (polled), and peak CUDA memory on GPU. Run with a host python:
``.host/0.33/venv/bin/python tools/bench_layout.py --model wan`` (``--device cuda`` on a GPU machine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL = 1.05


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Polls the resident set size in a thread while the ``with`` block runs."""

    def __init__(self, every: float = 0.002):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.every)

    def __enter__(self) -> "PeakRSS":
        self.start = _rss_bytes()
        self.peak = self.start
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_bytes())


def _toy(torch, device):
    """The oracle tests' toy SD1 UNet (``--quick``) and their frames-as-batch 8x pooling VAE."""
    from support.oracle import COND, FakeVAE, tiny_model

    patcher = tiny_model()
    patcher.load_device = device
    return patcher, FakeVAE(), COND, {}


def _dc512(torch, device):
    """The full-size DynamiCrafter-512 UNet + Resampler through the pack's loader, random weights."""
    from i2v_motion.backbones.dynamicrafter_unet import UNetConfig
    from i2v_motion.backbones.loader import build_model
    from support.fixtures import unet_state_dict
    from support.oracle import FakeVAE

    sd = {k.replace("model.diffusion_model.", ""): v for k, v in unet_state_dict(UNetConfig(), seed=0).items()}
    patcher = build_model(sd, "512", "dc512-random", dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    extra = {"clip_vision_tokens": torch.randn(1, 257, 1280, generator=g), "fs": 24}
    return patcher, FakeVAE(), [[torch.randn(1, 77, 1024, generator=g) * 0.1, dict(extra)]], extra


def _wan(torch, device, layers: int):
    """Core's WanModel at Wan 2.1 I2V 14B width with ``layers`` blocks, random weights; a packing stand-in VAE."""
    import comfy.model_detection
    import comfy.model_patcher
    from support.fixtures import init_random_perturbed_
    from support.models import wan_config, wan_text
    from support.oracle import PackingVAE

    cfg = dict(wan_config("wan21_i2v"), dim=5120, num_heads=40, ffn_dim=13824, num_layers=layers)
    mc = comfy.model_detection.model_config_from_unet_config(cfg)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model({})
    model.requires_grad_(False)
    init_random_perturbed_(model.diffusion_model, 0, None, 0.0)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))
    return patcher, PackingVAE(4, 16), wan_text("a boat", tokens=64), {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--model", choices=["dc512", "wan"], default="dc512", help="the real-size network (default dc512)")
    ap.add_argument("--quick", action="store_true", help="a toy SD1 UNet instead (CI smoke run)")
    ap.add_argument("--case", default="two_boats", help="shipped case (example_workflows/layout_cases)")
    ap.add_argument("--size", default="", help="video size WxH (reduced: the networks are full size; default 256x192 "
                                             "for DynamiCrafter, whose UNet needs multiples of 64, 256x160 otherwise)")
    ap.add_argument("--frames", type=int, default=0, help="frames (default 16; Wan: 17 = 1 + 4k)")
    ap.add_argument("--layers", type=int, default=2, help="Wan blocks (the 14B model has 40)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = ap.parse_args()

    import comfy_inproc

    comfy_inproc.bootstrap(args.device, dynamic_vram=None)
    import torch

    import comfy.model_management as mm
    import nodes as comfy_nodes
    from i2v_motion import layout as L
    from i2v_motion.nodes import layout as N
    from support.oracle import stretch

    device = mm.get_torch_device()
    name = "toy" if args.quick else args.model
    if args.quick:
        patcher, vae, cond, extra = _toy(torch, device)
    elif args.model == "dc512":
        patcher, vae, cond, extra = _dc512(torch, device)
    else:
        patcher, vae, cond, extra = _wan(torch, device, args.layers)
    n_params = sum(p.numel() for p in patcher.model.diffusion_model.parameters())
    w, h = (int(v) for v in (args.size or ("256x192" if name == "dc512" else "256x160")).lower().split("x"))
    case = L.load_case(REPO / "example_workflows" / "layout_cases", args.case)
    frames = args.frames or (17 if name == "wan" else 16)
    layout = stretch(case.layout, frames)
    image = torch.nn.functional.interpolate(case.image.movedim(-1, 1), size=(h, w), mode="bilinear",
                                            antialias=True).movedim(1, -1)
    guide, glat, plate = N.LayoutGuide.execute(image, layout, vae, 8.0, 4.0, "diffuse").result
    lmodel, llat = N.LayoutMaskedDenoise.execute(patcher, glat, layout, 0.4, 0.8, 0.9, 1.0, 1.0).result
    samples = glat["samples"]
    if name == "dc512":  # the concat latent of the DynamiCrafter conditioning: the first frame on every frame
        for c in cond:
            c[1].update(concat_latent_image=samples[:1].repeat(frames, 1, 1, 1), num_video_frames=frames)
    if name == "wan":
        mask = torch.ones(1, 1, samples.shape[2], *samples.shape[-2:])
        mask[:, :, :1] = 0
        for c in cond:
            c[1].update(concat_latent_image=samples[:, :, :1].expand_as(samples).clone(), concat_mask=mask)
    variants = {"plain": (patcher, {"samples": samples}), "layout": (lmodel, llat)}

    def run(which: str) -> tuple[float, int, int]:
        m, lat = variants[which]
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as rss:
            t = time.perf_counter()
            out = comfy_nodes.common_ksampler(m, 0, args.steps, 1.0, args.sampler, "simple", cond, cond, lat,
                                              denoise=1.0)[0]["samples"]
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
        cuda_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
        assert torch.isfinite(out).all()
        return dt, rss.peak, cuda_peak

    for which in variants:  # warm-up (model load, allocator)
        run(which)
    res: dict[str, list] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for which in variants:
            res[which].append(run(which))
    summary = {"model": name, "case": args.case, "latent": list(samples.shape), "frames": frames, "steps": args.steps,
               "sampler": args.sampler, "device": str(device), "params": n_params, "repeats": args.repeats,
               "load_average": os.getloadavg()[0]}
    for which, rs in res.items():
        summary[which] = {"median_s": statistics.median(r[0] for r in rs), "times_s": [round(r[0], 3) for r in rs],
                          "peak_rss_mib": max(r[1] for r in rs) / 2 ** 20,
                          "peak_cuda_mib": max(r[2] for r in rs) / 2 ** 20}
    summary["time_ratio"] = summary["layout"]["median_s"] / summary["plain"]["median_s"]
    summary["time_ratio_min"] = min(r[0] for r in res["layout"]) / min(r[0] for r in res["plain"])
    summary["goal"] = GOAL
    summary["goal_met"] = summary["time_ratio"] <= GOAL
    # the mechanism's own cost, free of machine noise: the mask function and the sampler's mask blend
    fn = lmodel.model_options["denoise_mask_function"]
    ms = lmodel.get_model_object("model_sampling")
    sig = torch.stack([ms.percent_to_sigma(p) if torch.is_tensor(ms.percent_to_sigma(p))
                       else torch.tensor(ms.percent_to_sigma(p)) for p in torch.linspace(0, 0.99, args.steps).tolist()])
    x = torch.randn(samples.shape, device=device)
    ref = torch.randn_like(x)
    mask = llat["noise_mask"].to(device).expand_as(x)
    n = 100
    t = time.perf_counter()
    for i in range(n):
        m = fn(sig[i % args.steps].reshape(1), mask, {})
        y = x * m + (ref + x * sig[0]) * (1 - m)  # what KSamplerX0Inpaint adds per step (twice, in and out)
        y = y * m + ref * (1 - m)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / n
    plain_step = summary["plain"]["median_s"] / args.steps
    summary["mask_overhead_ms_per_step"] = per_step * 1e3
    summary["mask_overhead_fraction"] = per_step / plain_step
    if not args.json:
        print(f"{name}: {n_params / 1e6:.0f} M parameters, case {args.case} at {w}x{h}, {frames} frames, latent "
              f"{summary['latent']}, {args.steps} {args.sampler} steps on {device}, {args.repeats} interleaved repeats, "
              f"load average {summary['load_average']:.1f}")
        for which in variants:
            s = summary[which]
            print(f"  {which:6s}: median {s['median_s']:.2f} s  (runs {s['times_s']})  peak RSS {s['peak_rss_mib']:.0f} MiB"
                  + (f"  peak CUDA {s['peak_cuda_mib']:.0f} MiB" if device.type == "cuda" else ""))
        verdict = ("a smoke run: the goal is for real-size networks, where a step costs seconds" if args.quick
                   else "met" if summary["goal_met"] else "NOT met")
        print(f"  layout / plain time: {summary['time_ratio']:.3f}x median, {summary['time_ratio_min']:.3f}x best-of "
              f"(goal <= {GOAL:.2f}x: {verdict})")
        print(f"  mask function + blend alone: {summary['mask_overhead_ms_per_step']:.2f} ms per step = "
              f"{100 * summary['mask_overhead_fraction']:.3f}% of a plain step")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
