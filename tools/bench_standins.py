#!/usr/bin/env python3
"""What the Wan stand-ins cost on this machine: per file its generation time and size (written fresh to a temporary
cache), its load time through core's own loader node, and one tiny run per Wan kind through core's nodes
(``support.wan.run_i2v`` / ``run_a14b`` / ``run_ti2v``), with the process's peak RSS so far after each step. Everything
runs under ``torch.inference_mode`` as in ComfyUI's executor.

Usage (host python, or any python3: it re-runs itself with the host's): ``python3 tools/bench_standins.py
[--host 0.33] [--size 64] [--length 9] [--steps 2] [--vae21-dim 96] [--skip-clip-vision]``. One JSON line per
measurement on stdout.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _rss_mib() -> float:
    """Peak resident set of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _emit(**kw) -> None:
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in kw.items()}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", help="ComfyUI host to run on (tools/host.py); default: this python's ComfyUI")
    ap.add_argument("--size", type=int, default=64, help="video width and height (Wan 2.2 TI2V: multiple of 32)")
    ap.add_argument("--length", type=int, default=9, help="frames (1 + 4k)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--vae21-dim", type=int, default=96, help="Wan 2.1 VAE width for the runs (96: the real one)")
    ap.add_argument("--skip-clip-vision", action="store_true", help="no CLIP-H file, the I2V run without it")
    a = ap.parse_args(argv)
    if a.host or not os.environ.get("I2V_COMFY_DIR"):  # re-run under the host's python, on its ComfyUI
        import host

        comfy, py = host.ensure_host(a.host)
        env = dict(os.environ, I2V_COMFY_DIR=str(comfy), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        args = list(argv if argv is not None else sys.argv[1:])
        for i, x in enumerate(args):
            if x.startswith("--host"):
                del args[i:i + (1 if "=" in x else 2)]
                break
        return subprocess.run([str(py), __file__, *args], env=env).returncode

    import comfy_inproc

    comfy_inproc.bootstrap("cpu", dynamic_vram=False)
    import comfy.model_management as mm
    import nodes as comfy_nodes
    import torch
    from support import standins, wan

    files = {
        "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors": {"kind": "wan21_i2v"},
        "diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors": {"kind": "wan22_a14b", "seed": 0},
        "diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors": {"kind": "wan22_a14b", "seed": 1},
        "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors": {"kind": "wan22_ti2v"},
        "vae/wan_2.1_vae.safetensors": {"kind": "wan21_vae", "dim": a.vae21_dim},
        "vae/wan2.2_vae.safetensors": {"kind": "wan22_vae"},
        "loras/wan21_i2v_lora.safetensors": {"kind": "wan_lora", "model": "wan21_i2v"},
    }
    if not a.skip_clip_vision:
        files["clip_vision/clip_vision_h.safetensors"] = {"kind": "clip_vision_h"}
    with tempfile.TemporaryDirectory(prefix="bench-standins-") as tmp, torch.inference_mode():
        os.environ["I2V_STANDIN_CACHE"] = str(Path(tmp) / "cache")
        root = Path(tmp) / "models"
        for rel, spec in files.items():
            path, secs = standins.make(root, rel, spec)
            _emit(step="generate", file=rel, kind=spec["kind"], seconds=secs, mib=path.stat().st_size / 2 ** 20,
                  rss_mib=_rss_mib())
        gc.collect()

        def timed(step: str, fn, **kw):
            t0 = time.perf_counter()
            out = fn()
            _emit(step=step, seconds=time.perf_counter() - t0, rss_mib=_rss_mib(), **kw)
            return out

        def check(frames: torch.Tensor) -> dict:
            flat = frames.flatten(1).amax(1) - frames.flatten(1).amin(1)
            return {"frames": frames.shape[0], "finite": bool(torch.isfinite(frames).all()),
                    "flat_frames": int((flat == 0).sum())}

        with standins.models_root(root):
            unet = lambda n: comfy_nodes.UNETLoader().load_unet(n, "default")[0]  # noqa: E731
            vae = lambda n: comfy_nodes.VAELoader().load_vae(n)[0]  # noqa: E731
            i2v = timed("load", lambda: unet("wan2.1_i2v_480p_14B_fp16.safetensors"), file="wan21_i2v")
            v21 = timed("load", lambda: vae("wan_2.1_vae.safetensors"), file=f"wan21_vae dim {a.vae21_dim}")
            x = wan.start_image(a.size, a.size).expand(a.length, -1, -1, -1).contiguous()
            z = timed("vae encode", lambda: v21.encode(x), file="wan21_vae", shape=f"{a.length}x{a.size}x{a.size}")
            timed("vae decode", lambda: v21.decode(z), file="wan21_vae", latent=list(z.shape))
            cvo = None
            if not a.skip_clip_vision:
                cv = timed("load", lambda: comfy_nodes.CLIPVisionLoader().load_clip("clip_vision_h.safetensors")[0],
                           file="clip_vision_h")
                cvo = timed("clip vision encode", lambda: comfy_nodes.CLIPVisionEncode().encode(
                    cv, wan.start_image(a.size, a.size), "none")[0], file="clip_vision_h")
                del cv
                mm.unload_all_models()
                gc.collect()
            out = timed("run wan21_i2v", lambda: wan.run_i2v(i2v, v21, clip_vision_output=cvo, width=a.size,
                                                            height=a.size, length=a.length, steps=a.steps),
                        clip_vision=cvo is not None)
            _emit(step="check wan21_i2v", **check(out))
            hi = timed("load", lambda: unet("wan2.2_i2v_high_noise_14B_fp16.safetensors"), file="wan22_a14b high")
            lo = unet("wan2.2_i2v_low_noise_14B_fp16.safetensors")
            out = timed("run wan22_a14b", lambda: wan.run_a14b(hi, lo, v21, split=max(1, a.steps // 2), width=a.size,
                                                              height=a.size, length=a.length, steps=a.steps))
            _emit(step="check wan22_a14b", **check(out))
            del i2v, hi, lo, v21
            mm.unload_all_models()
            gc.collect()
            ti = timed("load", lambda: unet("wan2.2_ti2v_5B_fp16.safetensors"), file="wan22_ti2v")
            v22 = timed("load", lambda: vae("wan2.2_vae.safetensors"), file="wan22_vae")
            z = timed("vae encode", lambda: v22.encode(x), file="wan22_vae", shape=f"{a.length}x{a.size}x{a.size}")
            timed("vae decode", lambda: v22.decode(z), file="wan22_vae", latent=list(z.shape))
            out = timed("run wan22_ti2v", lambda: wan.run_ti2v(ti, v22, width=a.size, height=a.size, length=a.length,
                                                              steps=a.steps))
            _emit(step="check wan22_ti2v", **check(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
