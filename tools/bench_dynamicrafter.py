#!/usr/bin/env python3
"""Full-size DynamiCrafter-512 sampling speed and memory, random weights, on ComfyUI's machinery.

Builds the real 512 UNet + Resampler shapes (≈1.49 B parameters) with random weights, conditions a
clip of ``--frames`` at ``--height``×``--width`` and runs stock KSampler sampling (CFG on, so two
UNet passes per step). Prints seconds per step (first step excluded when there are several), peak
VRAM (CUDA) or peak RSS (CPU), the attention backend ComfyUI picked, and the dtype.

Image-token cache: the same sampling with the per-run cache of the Resampler's output (the pack's default:
image tokens once per video and run) and without it (the cache's wrapper removed from a clone), ``--repeats``
interleaved pairs in one process after a warm-up of each; medians, and whether the results are identical.
Goals: identical results; with the cache no slower than without (≤ 1.00×).

``--quick``: a 64-channel stand-in, 4 frames of 64×64, 2 steps, one repeat, for CI smoke runs. On a CPU, a
real-size run at a small clip: ``--cpu --frames 8 --height 128 --width 128 --steps 4``.

Run with the host python: ``python3 tools/test.py`` builds it; then
``.host/0.33/venv/bin/python tools/bench_dynamicrafter.py --steps 3`` (GPU: add nothing, ComfyUI picks it;
CPU: ``--cpu``).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUICK = {"channels": 64, "frames": 4, "height": 64, "width": 64, "steps": 2, "repeats": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=320, help="UNet model_channels (320 = real DynamiCrafter-512)")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved pairs (with / without the token cache)")
    ap.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default="auto")
    ap.add_argument("--cpu", action="store_true", help="force CPU (default: ComfyUI picks the device)")
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke run: " + ", ".join(f"--{k} {v}" for k, v in QUICK.items()))
    args = ap.parse_args()
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)

    import comfy_inproc

    comfy_inproc.bootstrap("cpu" if args.cpu else "auto", dynamic_vram=None)
    import torch

    import comfy.model_management as mm
    import comfy.sample
    import comfy.ldm.modules.attention as attention
    from i2v_motion.backbones.dynamicrafter_unet import ResamplerConfig, UNetConfig
    from i2v_motion.comfy_bridge.hooks import WrappersMP
    from i2v_motion.runcache import RUN_CACHE_KEY
    from support.fixtures import unet_state_dict
    from i2v_motion.backbones.loader import build_model

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "auto": None}
    full = args.channels == 320
    small = ResamplerConfig(dim=256, depth=2, dim_head=32, heads=4, embedding_dim=256, output_dim=256)
    cfg = UNetConfig() if full else UNetConfig(model_channels=args.channels, context_dim=256, resampler=small,
                                               num_head_channels=max(8, args.channels // 4))
    ctx, vis = cfg.context_dim, cfg.resampler.embedding_dim
    t0 = time.perf_counter()
    sd = {k.replace("model.diffusion_model.", "", 1): v for k, v in
          unet_state_dict(cfg, seed=0, dtype=torch.float16).items()}
    n_params = sum(v.numel() for v in sd.values())
    model = build_model(sd, "512", "dynamicrafter_512_random.safetensors", dtype=dtypes[args.dtype])
    del sd
    build_s = time.perf_counter() - t0
    uncached = model.clone()
    uncached.remove_wrappers_with_key(WrappersMP.OUTER_SAMPLE, RUN_CACHE_KEY)

    t, h, w = args.frames, args.height // 8, args.width // 8
    g = torch.Generator().manual_seed(0)
    latent = torch.zeros(t, 4, h, w)
    cond = {"concat_latent_image": torch.randn(1, 4, h, w, generator=g) * 5,
            "clip_vision_tokens": torch.randn(1, 257, vis, generator=g), "fs": 24}
    pos = [[torch.randn(1, 77, ctx, generator=g), dict(cond)]]
    neg = [[torch.randn(1, 77, ctx, generator=g), dict(cond, clip_vision_tokens=torch.randn(1, 257, vis, generator=g))]]
    cuda = torch.cuda.is_available() and not args.cpu
    noise = comfy.sample.prepare_noise(latent, 0)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def run(m):
        stamps: list[float] = []
        sync()
        t1 = time.perf_counter()
        out = comfy.sample.sample(m, noise, args.steps, args.cfg, "euler", "simple", pos, neg, latent,
                                  callback=lambda *a: (sync(), stamps.append(time.perf_counter())), disable_pbar=True)
        sync()
        return out, time.perf_counter() - t1, [b - a for a, b in zip([t1] + stamps[:-1], stamps)]

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    load0 = os.getloadavg()
    out, total, steps = run(model)  # warm-up of each: loads the model, picks kernels
    run(uncached)
    times: dict[str, list[float]] = {"cache": [], "no cache": []}
    outs = {}
    for _ in range(args.repeats):
        for name, m in (("cache", model), ("no cache", uncached)):
            outs[name], sec, _ = run(m)
            times[name].append(sec)
            print(f"  {name}: {sec:.2f} s", flush=True)
    load1 = os.getloadavg()
    per_step = sum(steps[1:]) / max(1, len(steps) - 1) if len(steps) > 1 else steps[0]
    dev = mm.get_torch_device()
    print(f"device: {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}), "
          f"weights dtype: {model.model.get_dtype()}, attention: {attention.optimized_attention.__name__}")
    print(f"model: DynamiCrafter-512 UNet+Resampler, {n_params / 1e9:.3f} B parameters (built in {build_s:.1f} s)"
          + (" [--quick stand-in]" if args.quick else "" if full else f" [{args.channels} channels]"))
    print(f"clip: {args.frames} frames × {args.height}×{args.width}, CFG {args.cfg} (2 UNet passes/step), euler")
    print(f"seconds per step: {per_step:.3f} (first step {steps[0]:.3f}, total {total:.2f} s for {args.steps} steps)")
    if dev.type == "cuda":
        print(f"peak VRAM: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    tc, tn = statistics.median(times["cache"]), statistics.median(times["no cache"])
    same = bool(torch.equal(outs["cache"], outs["no cache"]))
    print(f"image-token cache, {args.repeats} interleaved pairs (median): with {tc:.2f} s, without {tn:.2f} s, "
          f"ratio {tc / tn:.3f}; results identical: {same}; load average {load0[0]:.2f} → {load1[0]:.2f}")
    ok = same and tc <= tn
    print(f"goal (identical results, with the cache ≤ 1.00× without): {'met' if ok else 'NOT met'}"
          + (" [--quick stand-in]" if args.quick else ""))


if __name__ == "__main__":
    main()
