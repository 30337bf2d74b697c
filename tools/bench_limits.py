#!/usr/bin/env python3
"""Peak memory of the largest legal request of each node that allocates in proportion to its inputs.

Each request runs in its own process (peak RSS is per process): the schema maxima (256 frames, the largest
side each input allows), which the node either refuses with its estimate before allocating or runs, and a
16-frame request at the same size, which runs — its measured peak next to the node's own estimate (goal: within 2×)
shows the estimate is of the right size. Rows marked ``ulimit`` run under an address-space limit that leaves the
given MiB (``ulimit -v``): the memory reader (``limits.ram_available``: free RAM, ulimits, cgroup) makes the node refuse
with its estimate instead of dying in torch's allocator. Prints what the reader sees, a table and one JSON line.

Usage: ``.host/0.33/venv/bin/python tools/bench_limits.py`` (or the 0.3.75 venv).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import paths

TOOLS = Path(__file__).resolve().parent

CASES = [
    # (node, frames, width, height[, MiB an address-space limit leaves])
    ("LayoutToMask", 256, 8192, 8192), ("LayoutToMask", 256, 2048, 2048), ("LayoutToMask", 16, 2048, 2048),
    ("LayoutGuide", 256, 2048, 2048), ("LayoutGuide", 16, 2048, 2048), ("LayoutGuide", 16, 1024, 576),
    ("LayoutPreview", 256, 2048, 2048), ("LayoutPreview", 16, 2048, 2048),
    ("DynamiCrafterImageToVideo", 256, 2048, 2048), ("DynamiCrafterImageToVideo", 256, 512, 320),
    ("LayoutMaskedDenoise", 256, 2048, 2048),
    ("LayoutToMask", 64, 2048, 2048, 1024), ("LayoutToMask", 16, 1024, 1024, 1024),
]


def child(node: str, frames: int, width: int, height: int, limit_mib: int = 0) -> dict:
    import comfy_inproc
    import procmem

    comfy_inproc.bootstrap("cpu", dynamic_vram=False)
    import torch
    from i2v_motion import limits

    if limit_mib:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limits._status_kb("VmSize") + (limit_mib << 20), resource.RLIM_INFINITY))
    from i2v_motion import layout as L
    from i2v_motion.limits import nbytes
    from i2v_motion.nodes import backbone as NB
    from i2v_motion.nodes import layout as NL

    lay = L.parse_layout('{"objects": [{"phrase": "a", "boxes": [[0, 0.1, 0.1, 0.3, 0.3], [%d, 0.6, 0.5, 0.9, 0.9]]},'
                         ' {"phrase": "b", "boxes": [[0, 0.5, 0.1, 0.7, 0.3]]}]}' % (frames - 1), frames=frames)
    image = torch.rand(1, height, width, 3) if node != "LayoutToMask" else None
    estimate = {"LayoutToMask": nbytes((len(lay.objects) + 5, frames, height, width)),
                "LayoutGuide": nbytes((17, frames, height, width)),
                "LayoutPreview": 4 * nbytes((frames, height, width, 3))}.get(node)
    base = procmem.status()["VmHWM"]
    procmem.reset_peak()
    t0 = time.perf_counter()
    outcome, message = "ran", ""
    try:
        if node == "LayoutToMask":
            NL.LayoutToMask.execute(lay, width, height, "objects", -1, 8.0, 0.0)
        elif node == "LayoutGuide":
            from support.fixtures import make_tiny_checkpoint
            from i2v_motion.backbones.loader import load_dynamicrafter
            import tempfile

            with tempfile.TemporaryDirectory() as d:
                vae = load_dynamicrafter(make_tiny_checkpoint(d + "/t.safetensors", with_clip=False,
                                                              with_clip_vision=False)).vae
            # the node's plan: its buffers and the frames it hands ComfyUI's VAE at once
            estimate += limits.vae_frames_at_once(vae, height, width) * limits.vae_encode_need(vae, height, width)
            NL.LayoutGuide.execute(image, lay, vae, 8.0, 4.0, "diffuse")
        elif node == "LayoutPreview":
            NL.LayoutPreview.execute(image, lay, 2, True, True)
        elif node == "DynamiCrafterImageToVideo":
            from support.fixtures import make_tiny_checkpoint
            from i2v_motion.backbones.loader import load_dynamicrafter
            import tempfile

            with tempfile.TemporaryDirectory() as d:
                loaded = load_dynamicrafter(make_tiny_checkpoint(d + "/t.safetensors"))
            cond = [[torch.zeros(1, 77, 64), {}]]
            NB.DynamiCrafterImageToVideo.execute(cond, cond, loaded.vae, loaded.clip_vision, image, width, height,
                                                 frames, 24)
        elif node == "LayoutMaskedDenoise":
            import support.oracle as P  # noqa: F401

            guide = {"samples": torch.zeros(frames, 4, height // 8, width // 8)}
            NL.LayoutMaskedDenoise.execute(P.tiny_model(), guide, lay, 0.4, 0.8, 0.9, 1.0, 1.0)
    except ValueError as e:
        outcome, message = "refused", str(e)
    secs = time.perf_counter() - t0
    peak = procmem.status()["VmHWM"]
    return {"node": node, "request": f"{frames} x {width}x{height}" + (f" ulimit {limit_mib}" if limit_mib else ""),
            "outcome": outcome, "seconds": round(secs, 2),
            "peak_rss_mib": round(peak / 2 ** 20), "peak_over_start_mib": round(max(0, peak - base) / 2 ** 20),
            "estimate_mib": None if estimate is None else round(estimate / 2 ** 20), "message": message[:160]}


def main() -> int:
    if len(sys.argv) >= 6 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], *map(int, sys.argv[3:]))))
        return 0
    if len(sys.argv) == 2 and sys.argv[1] == "--reader":
        import comfy_inproc

        comfy_inproc.bootstrap("cpu", dynamic_vram=False)
        from i2v_motion import limits

        gib = 2 ** 30
        show = lambda v: "no limit" if v is None else f"{v / gib:.1f} GiB"  # noqa: E731
        print(f"memory reader: available {show(limits.ram_available())} = min(free RAM as ComfyUI sees it, ulimits "
              f"{show(limits.rlimit_available())}, cgroup {show(limits.cgroup_available())})")
        return 0
    rows = []
    import os

    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=paths.pythonpath())
    print(subprocess.run([sys.executable, __file__, "--reader"], capture_output=True, text=True, env=env,
                         timeout=600).stdout.strip())
    for case in CASES:
        node, f, w, h = case[:4]
        p = subprocess.run([sys.executable, __file__, "--child", *map(str, case)], capture_output=True,
                           text=True, env=env, timeout=1800)
        line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("{")), None)
        rows.append(json.loads(line) if line else {"node": node, "request": f"{f} x {w}x{h}", "outcome": "crashed",
                                                   "message": p.stderr[-300:]})
    print(f"{'node':26s} {'request':28s} {'outcome':8s} {'s':>6s} {'peak-start':>10s} {'estimate':>9s} {'ratio':>6s}"
          f"  message")
    for r in rows:
        est = f"{r['estimate_mib']} MiB" if r.get("estimate_mib") is not None else "-"
        ratio = ""
        if r.get("outcome") == "ran" and r.get("estimate_mib") and r.get("peak_over_start_mib"):
            ratio = f"{r['peak_over_start_mib'] / r['estimate_mib']:.2f}"
            r["peak_over_estimate"] = float(ratio)
        print(f"{r['node']:26s} {r['request']:28s} {r['outcome']:8s} {r.get('seconds', 0):6.2f} "
              f"{r.get('peak_over_start_mib', 0):6d} MiB {est:>9s} {ratio:>6s}  {r.get('message', '')[:80]}")
    ran = [r["peak_over_estimate"] for r in rows if "peak_over_estimate" in r]
    if ran:
        ok = all(0.5 <= x <= 2.0 for x in ran)
        print(f"measured peak / estimate over the requests that ran: {min(ran):.2f}–{max(ran):.2f} "
              f"(goal: within 2x: {'met' if ok else 'NOT met'})")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
