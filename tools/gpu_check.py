#!/usr/bin/env python3
"""The prepared GPU check: ComfyUI 0.33 on CUDA with dynamic VRAM on and off — one command, one device call.

What it runs (each part in its own process, so CUDA state and peak-memory marks start clean):

1. ``pytest -m gpu`` (tests/unit/test_device_runs.py: merges, expert schedule, layout, official sampler, bake)
   with dynamic VRAM on and with it off;
2. full-size DynamiCrafter-512 (random weights, ≈1.4 B parameters) at 320×512×16, CFG on, fp16: seconds per
   step, peak VRAM, the attention backend ComfyUI picked — dynamic VRAM on and off;
3. EDG experts + expert schedule at full size: time per sampling run and peak VRAM, scheduled vs one expert;
4. merged weights computed on the GPU vs on the CPU: max abs difference over sampled keys.

Without CUDA it runs the same parts at CPU sizes (dynamic VRAM cannot engage on a CPU) so the script itself is
tested here before device time is spent. Results: one JSON document on stdout's last line and in
``OUT/gpu_check.json`` (``--out`` or ``$OUT``).

The parts share ``--budget`` by weight, sized by the device found (:func:`plan`): on CUDA the full-size model and
about equal shares; on a CPU the tests part (dozens of tiny-model samplings) takes most of the budget and the model
parts run at ``small`` size, or ``tiny`` where the CPU is small or busy (load average per CPU ≥ 1, or ≤ 2 CPUs),
so a loaded 2-core machine finishes every part within its share. The plan and the load it saw are in the report.

On the device machine (no network; Python 3.12, torch CUDA): ``python3 tools/gpu_bundle.py`` here first
prepares ``.whl/`` (the missing wheels, extracted, as one tar.xz, and the 0.33 tarball), then the device
command it prints unpacks them and runs ``python3 tools/gpu_check.py --tarball .whl/ComfyUI-0.33.0.tar.gz``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SIZES = {
    # name: (model_channels or None for the real 512 UNet, frames, height, width, steps)
    "full": (None, 16, 320, 512, 4),
    "small": (64, 4, 128, 128, 3),
    "tiny": (32, 2, 64, 64, 2),
}


def say(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# children: one measurement each, in a fresh process

def _setup(dynamic: bool, device: str):
    import comfy_inproc

    return comfy_inproc.bootstrap(device, dynamic_vram=dynamic)


def _unet_cfg(channels):
    from i2v_motion.backbones.dynamicrafter_unet import ResamplerConfig, UNetConfig

    if channels is None:
        return UNetConfig()
    return UNetConfig(model_channels=channels, channel_mult=(1, 2, 4, 4), num_head_channels=64 if channels >= 64 else 8,
                      context_dim=1024, resampler=ResamplerConfig())


def _random_model(cfg, seed: int, dtype, noise_of: dict | None = None):
    """A DynamiCrafter-512-topology MODEL with random weights (or ``noise_of`` + 1 % noise: a stand-in fine-tune)."""
    import torch
    from support.fixtures import unet_state_dict
    from i2v_motion.backbones.loader import build_model

    sd = {k.replace("model.diffusion_model.", "", 1): v for k, v in unet_state_dict(cfg, seed=seed, dtype=dtype).items()}
    if noise_of is not None:
        g = torch.Generator().manual_seed(seed)
        sd = {k: (noise_of[k].float() + 0.01 * torch.randn(v.shape, generator=g)).to(v.dtype) for k, v in sd.items()}
    return build_model(sd, "512", "dynamicrafter_512_random.safetensors", dtype=dtype), sd


class _VramPeak:
    """Peak device memory in use (whole device: covers allocations outside torch's allocator, e.g. aimdo's)."""

    def __init__(self, torch):
        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.base_used = self.used() if self.cuda else 0
        self.peak_used = self.base_used
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def used(self) -> int:
        free, total = self.torch.cuda.mem_get_info()
        return total - free

    def poll(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.peak_used = max(self.peak_used, self.used())

    def report(self) -> dict:
        if not self.cuda:
            import resource
            return {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3)}
        return {"peak_torch_allocated_gib": round(self.torch.cuda.max_memory_allocated() / 2 ** 30, 3),
                "peak_device_used_gib": round(self.peak_used / 2 ** 30, 3),
                "device_used_before_gib": round(self.base_used / 2 ** 30, 3)}


def _conds(torch, frames, h, w, ctx=1024, vis=1280):
    g = torch.Generator().manual_seed(0)
    cond = {"concat_latent_image": torch.randn(1, 4, h // 8, w // 8, generator=g) * 5,
            "clip_vision_tokens": torch.randn(1, 257, vis, generator=g), "fs": 24}
    pos = [[torch.randn(1, 77, ctx, generator=g), dict(cond)]]
    neg = [[torch.randn(1, 77, ctx, generator=g), dict(cond, clip_vision_tokens=torch.zeros(1, 257, vis))]]
    return pos, neg, torch.zeros(frames, 4, h // 8, w // 8)


def _sample(torch, model, pos, neg, latent, steps, peak: _VramPeak | None = None):
    import comfy.sample

    stamps: list[float] = []

    def cb(*_):
        if peak is not None:
            peak.poll()
        elif torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    noise = comfy.sample.prepare_noise(latent, 0)
    t0 = time.perf_counter()
    out = comfy.sample.sample(model, noise, steps, 7.5, "euler", "simple", pos, neg, latent, callback=cb,
                              disable_pbar=True, seed=0)
    total = time.perf_counter() - t0
    steps_s = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    return out, total, steps_s


def child_sampling(a) -> dict:
    """Full-size (or --size) DynamiCrafter sampling: s/step, peak VRAM, attention backend."""
    info = _setup(a.dynamic, a.device)
    import torch
    import comfy.ldm.modules.attention as attention
    import comfy.model_management as mm
    from i2v_motion.comfy_bridge.patchers import is_dynamic

    channels, frames, h, w, steps = SIZES[a.size]
    dtype = torch.float16 if mm.get_torch_device().type == "cuda" else torch.float32
    t0 = time.perf_counter()
    model, sd = _random_model(_unet_cfg(channels), 0, dtype)
    n_params = sum(v.numel() for v in sd.values())
    del sd
    build_s = time.perf_counter() - t0
    pos, neg, latent = _conds(torch, frames, h, w)
    peak = _VramPeak(torch)
    out, total, st = _sample(torch, model, pos, neg, latent, steps, peak)
    per_step = sum(st[1:]) / max(1, len(st) - 1) if len(st) > 1 else st[0]
    return {"part": "sampling", "dynamic_vram": info["dynamic_vram"], "patcher": type(model).__name__,
            "dynamic_patcher": is_dynamic(model), "device": str(mm.get_torch_device()),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "attention": attention.optimized_attention.__name__, "weight_dtype": str(model.model.get_dtype()),
            "params_b": round(n_params / 1e9, 3), "build_s": round(build_s, 1),
            "clip": f"{frames}x{h}x{w}", "cfg": 7.5, "steps": steps, "s_per_step": round(per_step, 3),
            "first_step_s": round(st[0], 3), "finite": bool(torch.isfinite(out).all()), **peak.report()}


def child_edg(a) -> dict:
    """EDG experts + expert schedule vs one expert at --size: time per run, peak VRAM; GPU vs CPU merge."""
    info = _setup(a.dynamic, a.device)
    import torch
    import comfy.model_management as mm
    from i2v_motion.merging.patches import edg_experts
    from i2v_motion.experts.schedule import expert_schedule, get_schedule

    channels, frames, h, w, steps = SIZES[a.size]
    dev = mm.get_torch_device()
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    cfg = _unet_cfg(channels)
    t0 = time.perf_counter()
    base, sd = _random_model(cfg, 0, dtype)
    ft, _ = _random_model(cfg, 1, dtype, noise_of=sd)
    del sd
    dyn, con, tv = edg_experts(base, ft, p=0.7, seed=0)
    sched = expert_schedule([dyn, con], [500])
    build_s = time.perf_counter() - t0
    pos, neg, latent = _conds(torch, frames, h, w)
    res = {"part": "edg", "dynamic_vram": info["dynamic_vram"], "device": str(dev), "clip": f"{frames}x{h}x{w}",
           "steps": steps, "keys": len(tv.keys), "build_s": round(build_s, 1)}
    # merged weights on the device vs the CPU, sampled keys of every shape class
    spec = dyn.patches[tv.keys[0]][0][1].spec
    keys = sorted(tv.keys, key=lambda k: -tv.shapes[k].numel())[:8] + list(tv.keys[:: max(1, len(tv.keys) // 24)])
    worst, checked = 0.0, 0
    for k in dict.fromkeys(keys):
        d_dev = spec.merged_delta(k, dev).cpu()
        d_cpu = spec.merged_delta(k, "cpu")
        worst = max(worst, float((d_dev - d_cpu).abs().max()))
        checked += 1
    res["merge_delta_gpu_vs_cpu_max_abs"] = worst
    res["merge_delta_keys_checked"] = checked
    # warm-up each (first load computes the merge), then timed runs, interleaved
    runs = {"one_expert": dyn, "scheduled": sched}
    times: dict[str, list[float]] = {n: [] for n in runs}
    peaks: dict[str, dict] = {}
    for name, m in runs.items():  # each variant: a warm-up run (load + merge), then timed runs
        mm.unload_all_models()
        mm.soft_empty_cache()
        for rep in range(a.repeats + 1):
            peak = _VramPeak(torch)
            out, total, _ = _sample(torch, m, pos, neg, latent, steps, peak)
            if rep == 0:
                peaks[name] = peak.report()
                res[f"{name}_finite"] = bool(torch.isfinite(out).all())
            else:
                times[name].append(total)
    import statistics

    for name in runs:
        res[f"{name}_run_s"] = round(statistics.median(times[name]), 3)
        res[f"{name}_memory"] = peaks[name]
    res["time_ratio_scheduled_vs_one"] = round(res["scheduled_run_s"] / res["one_expert_run_s"], 3)
    key = "peak_device_used_gib" if "peak_device_used_gib" in peaks["one_expert"] else "peak_rss_gib"
    res["memory_ratio_scheduled_vs_one"] = round(peaks["scheduled"][key] / max(1e-9, peaks["one_expert"][key]), 3)
    res["switch_note"] = "each scheduled run includes its load with the merge, its switch at t=500 and the restore"
    _ = get_schedule(sched)
    return res


CHILDREN = {"sampling": child_sampling, "edg": child_edg}


# --------------------------------------------------------------------------------------------------
# parent

def _comfy_tree(a) -> Path:
    if a.comfy:
        return Path(a.comfy).resolve()
    if os.environ.get("I2V_COMFY_DIR"):
        return Path(os.environ["I2V_COMFY_DIR"]).resolve()
    if a.tarball:
        import host

        dest = Path(tempfile.gettempdir()) / "i2v-gpu-check-comfy"
        if not (dest / "ComfyUI" / "main.py").is_file():
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            with tarfile.open(a.tarball) as t:
                t.extractall(dest / "unpack", filter=host._tar_filter)
            (dest / "unpack" / next(iter(os.listdir(dest / "unpack")))).rename(dest / "ComfyUI")
        return dest / "ComfyUI"
    import host

    return host.ensure_host("0.33")[0]


def _child(part: str, a, dynamic: bool, comfy: Path, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", part, "--size", a.size, "--device", a.device,
           "--repeats", str(a.repeats)] + (["--dynamic"] if dynamic else [])
    env = dict(os.environ, I2V_COMFY_DIR=str(comfy), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"part": part, "dynamic_asked": dynamic, "error": f"timed out after {timeout:.0f} s"}
    tail = (p.stderr or "")[-1500:]
    for line in reversed((p.stdout or "").splitlines()):
        if line.startswith("{"):
            out = json.loads(line)
            out["wall_s"] = round(time.perf_counter() - t0, 1)
            out["dynamic_asked"] = dynamic
            return out
    return {"part": part, "dynamic_asked": dynamic, "error": f"exit {p.returncode}", "stderr_tail": tail}


def _test_runner():
    """tools/test.py as a module (its name would shadow the standard library's ``test`` package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("i2v_test_runner", REPO / "tools" / "test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tests(a, dynamic: bool, comfy: Path, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        junit, metrics = Path(tmp) / "j.xml", Path(tmp) / "m.json"
        env = dict(os.environ, I2V_COMFY_DIR=str(comfy), I2V_DEVICE=a.device, I2V_DYNAMIC_VRAM="1" if dynamic else "0",
                   I2V_METRICS=str(metrics), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/unit",
               f"--junit-xml={junit}"]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
            rc, out = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            rc, out = 124, f"timed out after {timeout:.0f} s"
        res = {"part": "tests", "dynamic_asked": dynamic, "exit": rc, **_test_runner()._counts(junit),
               "wall_s": round(time.perf_counter() - t0, 1)}
        if metrics.is_file():
            res["metrics"] = json.loads(metrics.read_text())
        if rc != 0:
            res["output_tail"] = out[-2500:]
        return res


# relative time each part needs on each kind of device (the tests part is many small runs: on a CPU it dominates)
WEIGHTS = {"cuda": {"tests": 1.0, "sampling": 1.0, "edg": 2.0}, "cpu": {"tests": 4.0, "sampling": 1.0, "edg": 1.5}}


def plan(parts: list[str], cuda: bool, size: str | None, cpus: int,
         load: float) -> tuple[str, list[tuple[str, bool, float]]]:
    """The size of the model parts and (part, dynamic VRAM, weight) for each run, for the device found: CUDA runs
    full size with dynamic VRAM on and off; a CPU runs ``small``, or ``tiny`` when it is small or busy."""
    if size is None:
        size = "full" if cuda else ("tiny" if cpus <= 2 or load / max(1, cpus) >= 1.0 else "small")
    modes = [True, False] if cuda else [False]
    w = WEIGHTS["cuda" if cuda else "cpu"]
    return size, [(p, m, w.get(p, 1.0)) for p in parts for m in (modes if p != "edg" else modes[:1])]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfy", help="a ComfyUI 0.33+ tree (default: I2V_COMFY_DIR, --tarball, or the 0.33 host)")
    ap.add_argument("--tarball", help="ComfyUI source tarball to unpack (the device has no ../shared)")
    ap.add_argument("--size", choices=list(SIZES), default=None,
                    help="full on CUDA; on a CPU small, or tiny where it is small or busy (default: by the device)")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per variant in the EDG part (after a warm-up)")
    ap.add_argument("--parts", default="tests,sampling,edg", help="comma list of tests, sampling, edg")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_check.json (default $OUT)")
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole check (parts share it)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dynamic", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:  # ComfyUI (and aimdo) set up before anything touches CUDA in this process
        print(json.dumps(CHILDREN[a.child](a)), flush=True)
        return 0
    import torch

    cuda = torch.cuda.is_available() and a.device != "cpu"
    t0 = time.perf_counter()
    cpus, load = os.cpu_count() or 1, os.getloadavg()[0]
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    a.size, runs = plan(parts, cuda, a.size, cpus, load)
    comfy = _comfy_tree(a)
    say(f"ComfyUI tree {comfy}; CUDA {'yes: ' + torch.cuda.get_device_name() if cuda else 'no (CPU sizes)'}; "
        f"size {a.size}; {cpus} CPUs, load average {load:.2f}; runs {[(p, d) for p, d, _ in runs]}")
    report = {"torch": torch.__version__, "cuda": cuda, "gpu": torch.cuda.get_device_name() if cuda else None,
              "size": a.size, "cpus": cpus, "load_average": round(load, 2), "budget_s": a.budget, "parts": []}
    for i, (part, dyn, weight) in enumerate(runs):
        left = a.budget - (time.perf_counter() - t0)
        share = max(30.0, left * weight / sum(w for _, _, w in runs[i:]))
        say(f"{part} (dynamic VRAM {'on' if dyn else 'off'}), up to {share:.0f} s")
        res = _tests(a, dyn, comfy, share) if part == "tests" else _child(part, a, dyn, comfy, share)
        res["share_s"] = round(share)
        report["parts"].append(res)
        say(json.dumps(res)[:2000])
    report["total_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(text)
    ok = all("error" not in r and r.get("exit", 0) == 0 for r in report["parts"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
