#!/usr/bin/env python3
"""EDG merge cost: this pack's lazy per-key patches vs a straightforward full-state-dict merge.

Random weights in the real DynamiCrafter-512 UNet + Resampler shapes (≈1.49 B parameters, fp16 files,
written by the backbone's fixture maker). Two phases, each measured in its own child process:

  (a) build the EDG experts (dynamics + control, release coefficients, p 0.7) and load one (dynamics);
  (b) bake the dynamics expert and save it to .safetensors.

``lazy``: ``merging.edg_experts`` (ComfyUI weight patches) then ComfyUI's own load
(``load_models_gpu``), or ``merging.bake_model`` (per-tensor streaming write).
``naive``: the reference release's approach — whole state dicts in float32, dict-wide arithmetic,
``torch.bernoulli`` masks; (a) builds both experts and loads one as a model, (b) builds the one
expert, casts it to fp16 and ``safetensors.save_file``s it.

Memory: each child loads its inputs (two models / two state dicts, fp16), then resets the kernel's
peak-RSS mark (``/proc/self/clear_refs``) and runs the phase. "extra" = peak RSS − RSS with the
inputs loaded − the result kept in RAM (the loaded expert in (a); nothing in (b), it is on disk).
Goal: lazy extra ≤ 10 % of naive extra, lazy time ≤ 0.5 × naive time.

A full-size naive run needs ≈ 2×3 GB inputs + 4×6 GB float32 dicts + 3 GB model. When it does not fit in
the available RAM, the side-by-side comparison runs at the largest narrower UNet (model_channels 256 /
192 / 128, same topology) that fits, and the lazy path is also measured at full size.

``--quick``: model_channels 64 for both runs (a stand-in for CI smoke runs; its ratios are not the real-size ones).

Usage (host python): ``.host/0.33/venv/bin/python tools/bench_merge.py [--channels 320] [--threads N] [--quick]``.
"""
from __future__ import annotations


import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import procmem  # noqa: E402 (tools/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
GIB = 1024 ** 3
EDG = dict(alpha_d=0.25, beta_d=0.75, alpha_c=1.0, beta_c=0.25, p=0.7)


# ------------------------------------------------------------------------------------------ process utils

def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _bootstrap(threads: int | None):
    """Import ComfyUI (CPU) and this pack as ``i2v_motion`` in this process."""
    import comfy_inproc

    comfy_inproc.bootstrap("cpu", dynamic_vram=False, threads=threads)
    import torch
    return torch


# ------------------------------------------------------------------------------------------ child phases

def _param_bytes(m) -> int:
    return sum(p.numel() * p.element_size() for p in m.model.diffusion_model.parameters())


def _mean_abs_delta(pairs) -> float:
    tot, n = 0.0, 0
    for a, b in pairs:
        tot += float((a.float() - b.float()).abs().sum())
        n += a.numel()
    return tot / max(1, n)


def _naive_dare(x, p: float, torch):
    """The release's DARE: torch.bernoulli mask, rescale by 1/(1-p), 1-D tensors untouched."""
    if x.ndim <= 1:
        return x
    drop = torch.bernoulli(torch.full_like(x, p))
    return x.masked_fill(drop.bool(), 0.0) / (1.0 - p)


def child(phase: str, impl: str, base_path: str, ft_path: str, out_path: str, threads: int | None) -> dict:
    torch = _bootstrap(threads)
    import comfy.model_management as mm
    from i2v_motion.backbones.checkpoint import read_state_dict, split_parts
    from i2v_motion.backbones.loader import build_model, load_dynamicrafter

    torch.manual_seed(0)
    # inputs, loaded the natural way for each implementation (not measured)
    if impl == "lazy":
        base = load_dynamicrafter(base_path, dtype=torch.float16).model
        ft = load_dynamicrafter(ft_path, dtype=torch.float16).model
        n_params = sum(p.numel() for p in base.model.diffusion_model.parameters())
    else:
        # resident copies (safetensors maps the file; pages would otherwise be counted in the phase)
        sb = {k: v.clone() for k, v in split_parts(read_state_dict(base_path)[0]).unet.items()}
        sf = {k: v.clone() for k, v in split_parts(read_state_dict(ft_path)[0]).unet.items()}
        n_params = sum(v.numel() for v in sb.values())
    import gc
    gc.collect()
    rss_inputs = procmem.status()["VmRSS"]
    peak_reset = procmem.reset_peak()
    t0 = time.perf_counter()
    result_bytes = 0
    check = None
    if impl == "lazy":
        from i2v_motion.merging import bake_model, edg_experts
        dyn, con, tv = edg_experts(base, ft, seed=0, **EDG)
        if phase == "load":
            mm.load_models_gpu([dyn])
            result_bytes = _param_bytes(dyn)
            cur = dict(dyn.model.diffusion_model.named_parameters())
            ks = [k for k in list(cur)[:: max(1, len(cur) // 64)]]
            check = _mean_abs_delta((cur[k], dyn.backup["diffusion_model." + k].weight) for k in ks
                                    if "diffusion_model." + k in dyn.backup)
        else:
            bake_model(dyn, out_path)
    else:
        a_d, b_d, a_c, b_c, p = EDG["alpha_d"], EDG["beta_d"], EDG["alpha_c"], EDG["beta_c"], EDG["p"]
        base32 = {k: v.float() for k, v in sb.items()}
        ft32 = {k: v.float() for k, v in sf.items()}
        dyn = {k: base32[k] + b_d * _naive_dare(a_d * (base32[k] - ft32[k]), p, torch) for k in base32}
        if phase == "load":
            con = {k: a_c * ft32[k] + b_c * _naive_dare(ft32[k] - base32[k], p, torch) for k in base32}
            model = build_model({k: v.half() for k, v in dyn.items()}, "512", "naive_dyn", dtype=torch.float16)
            mm.load_models_gpu([model])
            result_bytes = _param_bytes(model)
            ks = list(dyn)[:: max(1, len(dyn) // 64)]
            check = _mean_abs_delta((dyn[k].half(), sb[k]) for k in ks)
            del con
        else:
            from safetensors.torch import save_file
            names = {k: (k if k.startswith("image_proj_model.") else "model.diffusion_model." + k) for k in dyn}
            save_file({names[k]: v.half().contiguous() for k, v in dyn.items()}, out_path)
    elapsed = time.perf_counter() - t0
    st = procmem.status()
    return {"phase": phase, "impl": impl, "params": n_params, "seconds": elapsed, "rss_inputs": rss_inputs,
            "peak": st["VmHWM"], "peak_reset": peak_reset, "result_bytes": result_bytes,
            "extra": st["VmHWM"] - rss_inputs - result_bytes, "mean_abs_delta": check}


def make_ckpts(workdir: str, channels: int, threads: int | None) -> tuple[str, str]:
    """Random fp16 base and fine-tune (base + 1% noise) in the official DynamiCrafter-512 key layout, shapes
    from the backbone's own UNet (built on the meta device), streamed to disk tensor by tensor."""
    torch = _bootstrap(threads)
    import comfy.ops
    from i2v_motion.backbones.dynamicrafter_unet import DynamiCrafterUNet, UNetConfig
    from i2v_motion.merging.bake import StreamingSafetensorsWriter
    from i2v_motion.merging.ops import key_seed
    with torch.device("meta"):
        net = DynamiCrafterUNet(UNetConfig(model_channels=channels), dtype=torch.float16,
                                operations=comfy.ops.disable_weight_init)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    names = {k: (k if k.startswith("image_proj_model.") else "model.diffusion_model." + k) for k in shapes}
    entries = [(names[k], torch.float16, s) for k, s in shapes.items()]
    out = []
    for name, noise in (("base", 0.0), ("finetune", 0.01)):
        path = os.path.join(workdir, f"dc512_{channels}_{name}.safetensors")
        with StreamingSafetensorsWriter(path, entries, {"i2v.fixture": "random weights (bench_merge)"}) as w:
            for k, s in shapes.items():
                g = torch.Generator().manual_seed(key_seed(0, k) % (2 ** 63))
                scale = 1.0 / max(1, int(torch.Size(s[1:]).numel())) ** 0.5 if len(s) > 1 else 0.1
                t = torch.randn(s, generator=g).mul_(scale)
                if noise:
                    g.manual_seed(key_seed(1, k) % (2 ** 63))
                    t.add_(torch.randn(s, generator=g), alpha=noise * scale)
                w.write(names[k], t.half())
        out.append(path)
    return out[0], out[1]


# ------------------------------------------------------------------------------------------ driver

def _run_child(args: list[str], threads: int | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1], "returncode": res.returncode}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _params_for(channels: int) -> float:
    # UNet parameters scale with channels²; the Resampler (48.8 M) does not (measured: 320 → 1.488 B)
    return (1.488e9 - 48.8e6) * (channels / 320) ** 2 + 48.8e6


def _naive_need(channels: int) -> float:
    n = _params_for(channels)
    return n * (2 * 2 + 4 * 4 + 2 * 2) + 1.0 * GIB  # inputs + 4 fp32 dicts + model & fp16 copy + runtime


def fmt_row(r: dict) -> str:
    if "error" in r:
        return f"  {r.get('label', ''):<34} FAILED: {r['error']}"
    return (f"  {r['label']:<34} {r['params'] / 1e9:6.3f} B  {r['seconds']:8.1f} s   peak {r['peak'] / GIB:6.2f} GiB"
            f"   inputs {r['rss_inputs'] / GIB:5.2f}   result {r['result_bytes'] / GIB:5.2f}"
            f"   extra {r['extra'] / GIB:6.2f} GiB"
            + (f"   mean|Δ| {r['mean_abs_delta']:.2e}" if r.get("mean_abs_delta") else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=320, help="UNet model_channels (320 = real DynamiCrafter-512)")
    ap.add_argument("--compare-channels", type=int, default=0,
                    help="model_channels for the side-by-side run (0: full size if naive fits in RAM, else the "
                         "largest of 256/192/128 that does)")
    ap.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads (0: default)")
    ap.add_argument("--workdir", default="", help="where checkpoints and bakes go (default: a temp dir, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--quick", action="store_true", help="CI smoke run: --channels 64 --compare-channels 64")
    ap.add_argument("--child", nargs=5, metavar=("PHASE", "IMPL", "BASE", "FT", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs=2, metavar=("WORKDIR", "CHANNELS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = args.threads or None
    if args.quick:
        args.channels = args.compare_channels = 64
    if args.child:
        print(json.dumps(child(*args.child, threads=threads)))
        return
    if args.make:
        print(json.dumps(make_ckpts(args.make[0], int(args.make[1]), threads)))
        return

    workdir = args.workdir or tempfile.mkdtemp(prefix="i2v_bench_merge_")
    os.makedirs(workdir, exist_ok=True)
    avail = _mem_available()
    full = args.channels
    if args.compare_channels:
        cmp_ch = args.compare_channels
    else:
        cmp_ch = next((c for c in (full, 256, 192, 128) if c <= full and _naive_need(c) < 0.8 * avail), 128)
    print(f"bench_merge: RAM available {avail / GIB:.1f} GiB; naive at {full} channels needs ≈ "
          f"{_naive_need(full) / GIB:.1f} GiB → side-by-side at model_channels {cmp_ch}; threads "
          f"{threads or 'default'}; work dir {workdir}", flush=True)
    rows: list[dict] = []
    t_start = time.perf_counter()
    try:
        sizes = [cmp_ch] + ([full] if full != cmp_ch else [])
        for ch in sizes:
            t = time.perf_counter()
            made = subprocess.run([sys.executable, os.path.abspath(__file__), "--make", workdir, str(ch)]
                                  + (["--threads", str(threads)] if threads else []), capture_output=True, text=True)
            if made.returncode != 0:
                raise SystemExit(f"checkpoint maker failed: {made.stderr.strip()[-2000:]}")
            base, ft = json.loads(made.stdout.strip().splitlines()[-1])
            print(f"  made random fp16 checkpoints, model_channels {ch}, in {time.perf_counter() - t:.0f} s",
                  flush=True)
            impls = ("naive", "lazy") if ch == cmp_ch else ("lazy",)
            for phase, label in (("load", "(a) build experts + load one"), ("bake", "(b) bake + save")):
                for impl in impls:
                    out = os.path.join(workdir, f"{impl}_{phase}_{ch}.safetensors")
                    r = _run_child(["--child", phase, impl, base, ft, out], threads)
                    r.update(label=f"{label} {impl}", channels=ch)
                    rows.append(r)
                    print(fmt_row(r), flush=True)
                    if os.path.exists(out):
                        os.remove(out)
            for p in (base, ft):
                if not args.keep:
                    os.remove(p)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nside-by-side at model_channels {cmp_ch} (lazy / naive):")
    ok = True
    for phase, name in (("load", "(a) build experts + load one"), ("bake", "(b) bake + save")):
        n = next((r for r in rows if r.get("channels") == cmp_ch and r.get("label") == f"{name} naive"), None)
        lz = next((r for r in rows if r.get("channels") == cmp_ch and r.get("label") == f"{name} lazy"), None)
        if not n or not lz or "error" in n or "error" in lz:
            print(f"  {name}: incomplete")
            ok = False
            continue
        mem = max(lz["extra"], 0) / max(n["extra"], 1)
        tim = lz["seconds"] / n["seconds"]
        ok &= mem <= 0.10 and tim <= 0.5
        print(f"  {name}: extra memory {lz['extra'] / GIB:.2f} / {n['extra'] / GIB:.2f} GiB = {mem:.1%} "
              f"(goal ≤ 10%)   time {lz['seconds']:.1f} / {n['seconds']:.1f} s = {tim:.2f}× (goal ≤ 0.5×)")
    if full != cmp_ch:
        print(f"  (naive at model_channels {full} would need ≈ {_naive_need(full) / GIB:.0f} GiB of RAM; the lazy "
              f"path at full size is in the table above)")
    print(f"goals (lazy extra memory ≤ 10% and time ≤ 0.5× of naive): {'met' if ok else 'NOT met'}"
          f"{' [--quick stand-in]' if args.quick else ''}; total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
