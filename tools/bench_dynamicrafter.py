#!/usr/bin/env python3
"""Full-size DynamiCrafter-512 sampling speed and memory, random weights, on ComfyUI's machinery.

Builds the real 512 UNet + Resampler shapes (≈1.4 B parameters) with random weights, conditions a
clip of ``--frames`` at ``--height``×``--width`` and runs stock KSampler sampling (CFG on, so two
UNet passes per step). Prints seconds per step (first step excluded when there are several), peak
VRAM (CUDA) or peak RSS (CPU), the attention backend ComfyUI picked, and the dtype.

Run with the host python: ``python3 tools/test.py`` builds it; then
``.host/venv/bin/python tools/bench_dynamicrafter.py --steps 3`` (GPU: add nothing, ComfyUI picks it;
CPU: ``--cpu``).
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default="auto")
    ap.add_argument("--cpu", action="store_true", help="force CPU (default: ComfyUI picks the device)")
    args = ap.parse_args()

    import comfy_inproc

    comfy_inproc.bootstrap("cpu" if args.cpu else "auto", dynamic_vram=None)
    import torch

    import comfy.model_management as mm
    import comfy.sample
    import comfy.ldm.modules.attention as attention
    from i2v_motion.backbones.dynamicrafter_unet import UNetConfig
    from support.fixtures import unet_state_dict
    from i2v_motion.backbones.loader import build_model

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "auto": None}
    t0 = time.perf_counter()
    sd = {k.replace("model.diffusion_model.", "", 1): v for k, v in
          unet_state_dict(UNetConfig(), seed=0, dtype=torch.float16).items()}
    n_params = sum(v.numel() for v in sd.values())
    model = build_model(sd, "512", "dynamicrafter_512_random.safetensors", dtype=dtypes[args.dtype])
    del sd
    build_s = time.perf_counter() - t0

    t, h, w = args.frames, args.height // 8, args.width // 8
    g = torch.Generator().manual_seed(0)
    latent = torch.zeros(t, 4, h, w)
    cond = {"concat_latent_image": torch.randn(1, 4, h, w, generator=g) * 5,
            "clip_vision_tokens": torch.randn(1, 257, 1280, generator=g), "fs": 24}
    pos = [[torch.randn(1, 77, 1024, generator=g), dict(cond)]]
    neg = [[torch.randn(1, 77, 1024, generator=g), dict(cond, clip_vision_tokens=torch.randn(1, 257, 1280, generator=g))]]
    stamps: list[float] = []
    if torch.cuda.is_available() and not args.cpu:
        torch.cuda.reset_peak_memory_stats()
    noise = comfy.sample.prepare_noise(latent, 0)
    t1 = time.perf_counter()
    comfy.sample.sample(model, noise, args.steps, args.cfg, "euler", "simple", pos, neg, latent,
                        callback=lambda *a: (torch.cuda.synchronize() if torch.cuda.is_available() and not args.cpu else None,
                                             stamps.append(time.perf_counter())), disable_pbar=True)
    total = time.perf_counter() - t1
    steps = [b - a for a, b in zip([t1] + stamps[:-1], stamps)]
    per_step = sum(steps[1:]) / max(1, len(steps) - 1) if len(steps) > 1 else steps[0]
    dev = mm.get_torch_device()
    print(f"device: {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}), "
          f"weights dtype: {model.model.get_dtype()}, attention: {attention.optimized_attention.__name__}")
    print(f"model: DynamiCrafter-512 UNet+Resampler, {n_params / 1e9:.3f} B parameters (built in {build_s:.1f} s)")
    print(f"clip: {args.frames} frames × {args.height}×{args.width}, CFG {args.cfg} (2 UNet passes/step), euler")
    print(f"seconds per step: {per_step:.3f} (first step {steps[0]:.3f}, total {total:.2f} s for {args.steps} steps)")
    if dev.type == "cuda":
        print(f"peak VRAM: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
