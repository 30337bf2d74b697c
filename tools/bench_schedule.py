#!/usr/bin/env python3
"""Expert schedule cost: one sampling run with the scheduled MODEL (dynamics → control at t = 500) vs the
same run with a single expert, same steps, same conditioning, on ComfyUI's machinery.

Models: a DynamiCrafter-512-topology UNet + Resampler with random weights (``--channels`` wide; 320, the
default, is the real size: 1.49 B parameters), a "fine-tune" = base + 1 % noise, and the EDG experts built lazily
by ``merging.edg_experts`` (release coefficients, DARE p 0.7) — or, with ``--experts random``, two base clones
with random additive ("diff") patches on every diffusion-model weight. Sampler: the official DDIM-trailing (eta 0).
``--quick``: a 64-channel stand-in, 4 frames of 64×64, 3 steps, one repeat, for CI smoke runs (its ratios say
little: the switch is a small share of a small model's run).

Time: one process, warm-up run of each, then ``--repeats`` interleaved pairs (single, scheduled); medians.
The scheduled run includes its weight switch at t = 500 and the restore at the end (reported apart; the
warm-up's switch is reported too: it also packs the DARE masks, once per model). Next to them: the time of
copying the differing weights once on the same device (``copy_`` from ComfyUI's backup into the live
weights, the memory-bound floor of writing them), and how many weights took the range-by-range path.
Memory: each variant in its own child process: build and load everything, reset the peak mark
(``/proc/self/clear_refs`` on CPU, ``reset_peak_memory_stats`` on CUDA), run one sampling run; peak RSS
(CPU) or peak allocated VRAM (CUDA) over the run.
Goals: scheduled ≤ 1.05× single time, ≤ 1.10× single peak memory; switch + restore ≤ 2× one copy of the
differing weights.

Full size on a CPU takes minutes and ≈ 20 GB of RAM per process (base, fine-tune, ComfyUI's backup of the
patched weights); run one at a time. Usage (host python): ``.host/0.33/venv/bin/python tools/bench_schedule.py
[--channels 320] [--frames 8] [--size 128] [--steps 4] [--repeats 2] [--experts edg|random] [--cpu] [--quick]``.
"""
from __future__ import annotations


import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import procmem  # noqa: E402 (tools/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 ** 2


def _bootstrap(cpu: bool, threads: int | None):
    """Import ComfyUI and this pack (as ``i2v_motion``) in this process (ComfyUI's own dynamic-VRAM default)."""
    import comfy_inproc

    comfy_inproc.bootstrap("cpu" if cpu else "auto", dynamic_vram=None, threads=threads)
    import torch
    return torch


class Setup:
    """Models, conditioning and one sampling run, built deterministically from the arguments."""

    def __init__(self, args):
        torch = self.torch = _bootstrap(args.cpu, args.threads)
        import comfy.model_management as mm
        import comfy.samplers
        from i2v_motion.backbones.dynamicrafter_unet import ResamplerConfig, UNetConfig
        from support.fixtures import unet_state_dict
        from i2v_motion.backbones.loader import build_model
        from i2v_motion.backbones.sampling import sample_dynamicrafter_ddim, trailing_sigmas
        from i2v_motion.merging.patches import edg_experts
        from i2v_motion.experts.schedule import expert_schedule

        self.mm = mm
        self.cuda = torch.cuda.is_available() and not args.cpu
        ch = args.channels
        full = ch == 320
        cfg = UNetConfig(model_channels=ch, num_head_channels=64 if full else max(8, ch // 4),
                         context_dim=1024 if full else 256,
                         resampler=ResamplerConfig() if full else ResamplerConfig(
                             dim=256, depth=2, dim_head=32, heads=4, embedding_dim=256, output_dim=256))
        self.ctx_dim, self.vis_dim = cfg.context_dim, cfg.resampler.embedding_dim
        dtype = torch.float16 if self.cuda else torch.float32
        sd = {k.replace("model.diffusion_model.", "", 1): v for k, v in unet_state_dict(cfg, 0, dtype).items()}
        self.params = sum(v.numel() for v in sd.values())
        base = build_model(sd, "512", "bench_base.safetensors", dtype=dtype)
        del sd  # (at full size every fp32 copy is 6 GB: never more than two while building)
        if args.experts == "edg":
            ft = build_model(base.model.diffusion_model.state_dict(), "512", "bench_ft.safetensors", dtype=dtype)
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():  # the stand-in fine-tune: base + 1 % noise, in place
                for v in ft.model.diffusion_model.parameters():
                    if v.is_floating_point():
                        f = v.float()
                        v.copy_(f + 0.01 * f.std().clamp(min=1e-3) * torch.randn(v.shape, generator=g))
            dyn, con, _ = edg_experts(base, ft, p=0.7, seed=0)
            self.keep = [ft]
        else:
            params = dict(base.model.named_parameters())
            keys = [k for k in params if k.startswith("diffusion_model.")]
            dyn, con = base.clone(), base.clone()
            for m, s in ((dyn, 2), (con, 3)):
                gg = torch.Generator().manual_seed(s)
                m.add_patches({k: ((0.01 * torch.randn(params[k].shape, generator=gg)).to(params[k].dtype),)
                               for k in keys}, 1.0)
            self.keep = []
        self.single = dyn
        self.scheduled = expert_schedule([dyn, con], [500.0])
        self.sampler = comfy.samplers.KSAMPLER(sample_dynamicrafter_ddim,
                                               extra_options={"eta": 0.0, "guidance_rescale": 0.7, "base_scale": 0.7})
        self.sigmas = trailing_sigmas(base.get_model_object("model_sampling"), args.steps)
        t, h, w = args.frames, args.size // 8, args.size // 8
        g = torch.Generator().manual_seed(0)
        self.latent = torch.zeros(t, 4, h, w)
        c = {"concat_latent_image": torch.randn(1, 4, h, w, generator=g) * 5,
             "clip_vision_tokens": torch.randn(1, 257, self.vis_dim, generator=g), "fs": 24}
        self.pos = [[torch.randn(1, 77, self.ctx_dim, generator=g), dict(c)]]
        self.neg = [[torch.zeros(1, 77, self.ctx_dim), dict(c, clip_vision_tokens=torch.zeros(1, 257, self.vis_dim))]]
        self.noise = torch.randn(self.latent.shape, generator=torch.Generator().manual_seed(42))
        self.cfg = args.cfg

    def run(self, model):
        import comfy.sample
        return comfy.sample.sample_custom(model, self.noise, self.cfg, self.sampler, self.sigmas, self.pos, self.neg,
                                          self.latent, disable_pbar=True, seed=42)

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()


def _instrument_switches() -> dict:
    """Accumulate the time of weight switches and restores (the schedule's whole overhead on weights)."""
    from i2v_motion.experts import schedule
    acc = {"switch_s": 0.0, "restore_s": 0.0, "runs": 0, "stats": {}}
    act, res = schedule.ScheduleRun.activate, schedule.ScheduleRun.restore

    def activate(self, phase, t=None, transformer_options=None):
        t0 = time.perf_counter()
        try:  # (the pack before issue 20 took no transformer_options: the bench measures both)
            return act(self, phase, t) if transformer_options is None else act(self, phase, t, transformer_options)
        finally:
            acc["switch_s"] += time.perf_counter() - t0

    def restore(self):
        t0 = time.perf_counter()
        try:
            return res(self)
        finally:
            acc["restore_s"] += time.perf_counter() - t0
            acc["runs"] += 1
            acc["stats"] = dict(getattr(self, "stats", {}))

    schedule.ScheduleRun.activate, schedule.ScheduleRun.restore = activate, restore
    return acc


def child_memory(args, which: str) -> dict:
    s = Setup(args)
    model = s.single if which == "single" else s.scheduled
    s.mm.load_models_gpu([model])  # load outside the measured window, as a warm graph would have it
    import gc
    gc.collect()
    if s.cuda:
        s.torch.cuda.synchronize()
        s.torch.cuda.reset_peak_memory_stats()
        before = s.torch.cuda.memory_allocated()
    before_rss = procmem.status()["VmRSS"]
    reset = procmem.reset_peak()
    t0 = time.perf_counter()
    out = s.run(model)
    s.sync()
    sec = time.perf_counter() - t0
    st = procmem.status()
    res = {"which": which, "seconds": sec, "rss_before": before_rss, "peak_rss": st["VmHWM"], "peak_reset": reset,
           "out_abs_mean": float(out.abs().mean())}
    if s.cuda:
        res.update(vram_before=before, peak_vram=s.torch.cuda.max_memory_allocated())
    return res


def copy_time(s, repeats: int = 2) -> dict:
    """Seconds to copy the differing weights once on their device: ``live.copy_(base)`` per key, ComfyUI's backup
    (the stored base) into the loaded weights — what writing a phase's weights costs at memory speed (the best of
    torch's threads and one thread). The model is unloaded afterwards (ComfyUI puts the stored weights back)."""
    from i2v_motion.experts.schedule import get_schedule
    from i2v_motion.comfy_bridge.weights import get_attr

    m = s.scheduled
    s.mm.load_models_gpu([m])
    keys = [k for k in get_schedule(m).keys if k in m.backup]
    pairs = [(get_attr(m.model, k).data, m.backup[k].weight) for k in keys]
    nbytes = sum(live.numel() * live.element_size() for live, _ in pairs)
    best = float("inf")
    threads = s.torch.get_num_threads()
    with s.torch.no_grad():
        for n in dict.fromkeys([threads, 1]):  # torch's threads, and one (what the switch uses on the CPU): the faster
            s.torch.set_num_threads(n)
            for _ in range(repeats):
                s.sync()
                t0 = time.perf_counter()
                for live, base in pairs:
                    live.copy_(base)
                s.sync()
                best = min(best, time.perf_counter() - t0)
    s.torch.set_num_threads(threads)
    del pairs
    s.mm.unload_all_models()
    return {"copy_s": best, "copy_bytes": nbytes, "copy_keys": len(keys)}


def timing(args) -> dict:
    s = Setup(args)
    acc = _instrument_switches()
    times = {"single": [], "scheduled": []}
    print("timing: warm-up runs", flush=True)
    s.run(s.single)  # warm-up: loads (computes expert A's weights) and caches kernels
    acc.update(switch_s=0.0, restore_s=0.0, runs=0)
    s.run(s.scheduled)
    first = {"first_switch_s": acc["switch_s"], "first_restore_s": acc["restore_s"]}
    acc.update(switch_s=0.0, restore_s=0.0, runs=0)
    for _ in range(args.repeats):
        for name in ("single", "scheduled"):
            model = s.single if name == "single" else s.scheduled
            s.sync()
            t0 = time.perf_counter()
            s.run(model)
            s.sync()
            times[name].append(time.perf_counter() - t0)
            print(f"  {name}: {times[name][-1]:.2f} s", flush=True)
    res = {"params": s.params, "device": "cuda" if s.cuda else "cpu", "times": times,
           "switch_s_per_run": acc["switch_s"] / max(1, acc["runs"]),
           "restore_s_per_run": acc["restore_s"] / max(1, acc["runs"]), "stats": acc["stats"], **first}
    print("timing: copy of the differing weights", flush=True)
    res.update(copy_time(s))
    return res


QUICK = {"channels": 64, "frames": 4, "size": 64, "steps": 3, "repeats": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=320, help="UNet model_channels (320 = real DynamiCrafter-512)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="square frame size in pixels (multiple of 64)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke run: " + ", ".join(f"--{k} {v}" for k, v in QUICK.items()))
    ap.add_argument("--experts", choices=["edg", "random"], default="edg")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cpu", action="store_true", help="force CPU (default: ComfyUI picks the device)")
    ap.add_argument("--child", choices=["single", "scheduled"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if args.child:
        print("RESULT " + json.dumps(child_memory(args, args.child)), flush=True)
        return

    mem = {}
    if not args.skip_memory:
        base_cmd = [sys.executable, __file__, "--channels", str(args.channels), "--frames", str(args.frames),
                    "--size", str(args.size), "--steps", str(args.steps), "--cfg", str(args.cfg),
                    "--experts", args.experts] + (["--cpu"] if args.cpu else []) + \
                   (["--threads", str(args.threads)] if args.threads else [])
        for which in ("single", "scheduled"):
            print(f"memory: child process for the {which} model", flush=True)
            p = subprocess.run(base_cmd + ["--child", which], capture_output=True, text=True)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                sys.exit(f"child {which} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
            mem[which] = json.loads(line[-1][7:])
    load0 = os.getloadavg()
    t = timing(args)
    load1 = os.getloadavg()
    ts, tc = statistics.median(t["times"]["single"]), statistics.median(t["times"]["scheduled"])
    print(f"\nexpert schedule bench — {t['params'] / 1e6:.1f} M UNet+Resampler params, {args.experts} experts, "
          f"{args.frames} frames {args.size}×{args.size}, {args.steps} DDIM-trailing steps, cfg {args.cfg}, "
          f"device {t['device']}, {args.repeats} interleaved repeats (median)"
          + (" [--quick stand-in]" if args.quick else ""))
    print(f"load average (1 min) {load0[0]:.2f} at the start of the timing, {load1[0]:.2f} at its end; "
          f"{os.cpu_count()} CPUs")
    print(f"{'':24}{'single expert':>16}{'scheduled':>16}{'ratio':>10}")
    print(f"{'time per run (s)':24}{ts:16.2f}{tc:16.2f}{tc / ts:10.3f}")
    print(f"{'  all runs (s)':24}{' '.join(f'{x:.2f}' for x in t['times']['single']):>16}"
          f"{' '.join(f'{x:.2f}' for x in t['times']['scheduled']):>16}")
    sr = t['switch_s_per_run'] + t['restore_s_per_run']
    print(f"{'  switch + restore (s)':24}{'':>16}{sr:16.2f}"
          f"   (switch {t['switch_s_per_run']:.2f}, restore {t['restore_s_per_run']:.2f})")
    print(f"{'  first run (s)':24}{'':>16}{t['first_switch_s'] + t['first_restore_s']:16.2f}"
          f"   (switch {t['first_switch_s']:.2f}, restore {t['first_restore_s']:.2f}; packs the DARE masks once)")
    print(f"{'  one copy (s)':24}{'':>16}{t['copy_s']:16.2f}   ({t['copy_bytes'] / 2 ** 30:.2f} GiB, "
          f"{t['copy_keys']} weights: live.copy_(base); "
          f"{t['copy_bytes'] / 2 ** 30 / max(t['copy_s'], 1e-9):.1f} GiB/s)")
    st = t.get("stats") or {}
    print(f"{'  switch+restore / copy':24}{'':>16}{sr / max(t['copy_s'], 1e-9):16.2f}   "
          f"(weights written per run: {st.get('fast', 0)} by ranges, {st.get('generic', 0)} whole-tensor)")
    ok_time, ok_copy = tc / ts <= 1.05, sr <= 2.0 * t["copy_s"]
    ok = ok_time and ok_copy
    if mem:
        key = "peak_vram" if "peak_vram" in mem["single"] else "peak_rss"
        ps, pc = mem["single"][key], mem["scheduled"][key]
        print(f"{'peak ' + ('VRAM' if key == 'peak_vram' else 'RSS') + ' (MiB)':24}{ps / MIB:16.1f}{pc / MIB:16.1f}"
              f"{pc / ps:10.3f}")
        bs = mem["single"]["vram_before" if key == "peak_vram" else "rss_before"]
        bc = mem["scheduled"]["vram_before" if key == "peak_vram" else "rss_before"]
        print(f"{'  before the run (MiB)':24}{bs / MIB:16.1f}{bc / MIB:16.1f}")
        print(f"{'  growth in run (MiB)':24}{(ps - bs) / MIB:16.1f}{(pc - bc) / MIB:16.1f}")
        if not mem["single"].get("peak_reset", True):
            print("  (peak-RSS reset unavailable: peaks include model building)")
        ok = ok and pc / ps <= 1.10
        print(f"goal ≤ 1.10× peak memory: {'met' if pc / ps <= 1.10 else 'NOT met'} ({pc / ps:.3f}×)")
    print(f"goal ≤ 1.05× time: {'met' if ok_time else 'NOT met'} ({tc / ts:.3f}×)")
    print(f"goal switch + restore ≤ 2× one copy: {'met' if ok_copy else 'NOT met'} "
          f"({sr / max(t['copy_s'], 1e-9):.2f}×)")
    print(f"goals (≤ 1.05× time, ≤ 1.10× peak memory, switch + restore ≤ 2× copy): "
          f"{'met' if ok else 'NOT met'}"
          + (" [--quick stand-in: not the real-size figures]" if args.quick else ""))


if __name__ == "__main__":
    main()
