#!/usr/bin/env python3
"""Cost of layout conditioning: sampling time and peak memory with vs without it, in the same run.

A small SD1-style comfy UNet (random weights; ``--attention`` adds attention blocks) samples a frames-as-
batch video latent of a shipped layout case with stock ``common_ksampler`` (the KSampler node's code):

* ``plain``: the guide latent, no noise mask, the model as is;
* ``layout``: the same after ``I2VMotion_LayoutMaskedDenoise`` (latent noise mask + per-step
  denoise-mask function).

Same sampler, steps and seed; runs are interleaved after one warm-up each; the median time is
reported, with the ratio (goal <= 1.10x), peak RSS while each variant ran (polled), and peak CUDA
memory on GPU. Run with the host python: ``.host/venv/bin/python tools/bench_layout.py``
(``--device cuda`` on a GPU machine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="two_boats", help="shipped case (example_workflows/layout_cases)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--channels", type=int, default=32, help="UNet base channels")
    ap.add_argument("--attention", action="store_true",
                    help="add cross-attention blocks at the lower resolution (slow on CPU)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = ap.parse_args()

    import comfy_inproc

    comfy_inproc.bootstrap(args.device, dynamic_vram=None)
    import torch

    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import nodes as comfy_nodes
    from i2v_motion import layout as L
    from i2v_motion.nodes import layout as N

    device = mm.get_torch_device()
    ch = args.channels
    uc = {"context_dim": 64, "model_channels": ch, "use_linear_in_transformer": False, "adm_in_channels": None,
          "use_temporal_attention": False, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1],
          "channel_mult": [1, 2], "transformer_depth": [0, int(args.attention)],
          "transformer_depth_output": [0, 0, int(args.attention), int(args.attention)],
          "num_heads": 4, "num_head_channels": -1, "image_size": 32, "use_spatial_transformer": True,
          "transformer_depth_middle": int(args.attention), "legacy": False}
    cfg = comfy.supported_models.SD15(uc)
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))
    n_params = sum(p.numel() for p in model.parameters())

    class PoolVAE:  # 8x pooling stand-in: the bench measures sampling, not the VAE
        def encode(self, pixels):
            x = torch.nn.functional.avg_pool2d(pixels[..., :3].movedim(-1, 1).float(), 8)
            return torch.cat([x * 4 - 2, x.mean(1, keepdim=True) * 4 - 2], 1)

    case = L.load_case(REPO / "example_workflows" / "layout_cases", args.case)
    guide, glat, plate = N.LayoutGuide.execute(case.image, case.layout, PoolVAE(), 8.0, 4.0, "diffuse").result
    lmodel, llat = N.LayoutMaskedDenoise.execute(patcher, glat, case.layout, 0.4, 0.8, 0.9, 1.0, 1.0).result
    cond = [[torch.zeros(1, 8, 64), {}]]
    variants = {"plain": (patcher, {"samples": glat["samples"]}), "layout": (lmodel, llat)}

    def run(name: str) -> tuple[float, int, int]:
        m, lat = variants[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as rss:
            t = time.perf_counter()
            out = comfy_nodes.common_ksampler(m, 0, args.steps, 1.0, args.sampler, "normal", cond, cond, lat,
                                              denoise=1.0)[0]["samples"]
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
        cuda_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
        assert torch.isfinite(out).all()
        return dt, rss.peak, cuda_peak

    for name in variants:  # warm-up (model load, allocator)
        run(name)
    res: dict[str, list] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name in variants:
            res[name].append(run(name))
    summary = {"case": args.case, "latent": list(glat["samples"].shape), "steps": args.steps, "sampler": args.sampler,
               "device": str(device), "unet_params": n_params, "repeats": args.repeats}
    for name, rs in res.items():
        summary[name] = {"median_s": statistics.median(r[0] for r in rs), "times_s": [round(r[0], 4) for r in rs],
                         "peak_rss_mib": max(r[1] for r in rs) / 2 ** 20,
                         "peak_cuda_mib": max(r[2] for r in rs) / 2 ** 20}
    summary["time_ratio"] = summary["layout"]["median_s"] / summary["plain"]["median_s"]
    summary["time_ratio_min"] = min(r[0] for r in res["layout"]) / min(r[0] for r in res["plain"])
    summary["goal_met"] = summary["time_ratio"] <= 1.10
    # the mechanism's own cost, free of machine noise: the mask function and the sampler's mask blend
    fn = lmodel.model_options["denoise_mask_function"]
    sig = torch.linspace(14.6, 0.03, args.steps + 1).to(device)
    x = torch.randn(glat["samples"].shape, device=device)
    ref = torch.randn_like(x)
    mask = llat["noise_mask"].to(device).expand_as(x)
    n = 200
    t = time.perf_counter()
    for i in range(n):
        m = fn(sig[i % args.steps:i % args.steps + 1], mask, {"sigmas": sig})
        y = x * m + (ref + x * sig[0]) * (1 - m)  # what KSamplerX0Inpaint adds per step (twice, in and out)
        y = y * m + ref * (1 - m)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / n
    plain_step = summary["plain"]["median_s"] / args.steps
    summary["mask_overhead_ms_per_step"] = per_step * 1e3
    summary["mask_overhead_fraction"] = per_step / plain_step
    if not args.json:
        print(f"case {args.case}, latent {summary['latent']}, {args.steps} {args.sampler} steps on {device}, "
              f"UNet {n_params / 1e6:.2f} M params, {args.repeats} interleaved repeats")
        for name in variants:
            s = summary[name]
            print(f"  {name:6s}: median {s['median_s']:.3f} s  (runs {s['times_s']})  peak RSS {s['peak_rss_mib']:.0f} MiB"
                  + (f"  peak CUDA {s['peak_cuda_mib']:.0f} MiB" if device.type == "cuda" else ""))
        print(f"  layout / plain time: {summary['time_ratio']:.3f}x median, {summary['time_ratio_min']:.3f}x best-of "
              f"(goal <= 1.10x: {'met' if summary['goal_met'] else 'NOT met'})")
        print(f"  mask function + blend alone: {summary['mask_overhead_ms_per_step']:.2f} ms per step = "
              f"{100 * summary['mask_overhead_fraction']:.2f}% of a plain step")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
