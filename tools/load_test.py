#!/usr/bin/env python3
"""Server reliability under load and faults: 100 queued prompts, an interrupt, a kill -9 — over HTTP.

On a real headless ComfyUI (``tools/comfy_server.py``) with the pack and a tiny random-weight DynamiCrafter:

1. load: one warm-up run, then ``--prompts`` image-to-video prompts (different seeds) queued at once; the
   server's RSS after the warm-up vs after the last one (growth %), every prompt must succeed;
2. interrupt: a longer run is interrupted mid-sampling (``POST /interrupt``); the same prompt run again must
   give frames bit-identical to an uninterrupted reference run;
3. kill -9: the server is killed mid-run, restarted on the same folders, and the prompt run again must give
   the reference frames; nothing half-written is left in the output folder.

Prints one JSON summary. Usage: ``python3 tools/load_test.py [--host 0.33] [--prompts 100]``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent

import comfy_server  # noqa: E402
import paths  # noqa: E402
import procmem  # noqa: E402
import host  # noqa: E402
import workflow  # noqa: E402

WF = REPO / "example_workflows" / "dynamicrafter_i2v.json"
TINY = "dynamicrafter_512.ckpt"


def rss_kb(pid: int) -> int:
    return procmem.status(pid).get("VmRSS", 0) // 1024


def fresh(srv: comfy_server.ComfyServer) -> None:
    """Drop ComfyUI's node cache and loaded models, so the next identical prompt really runs again."""
    srv.post_json("/free", {"free_memory": True, "unload_models": True})
    time.sleep(2.0)


def frames_of(paths: list[Path]) -> list[bytes]:
    from PIL import Image, ImageSequence

    out = []
    for p in sorted(paths):
        with Image.open(p) as im:
            out += [f.convert("RGB").tobytes() for f in ImageSequence.Iterator(im)]
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default=None, help="0.3.75 (default) or 0.33")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--steps", type=int, default=300, help="steps of the interrupted / killed run (long enough to be caught mid-way)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's SIGTERM still stops the server below
    host.reexec_in_host(__file__, argv, a.host, needs="PIL")  # frames are compared decoded (Pillow)
    comfy, py = host.ensure_host(a.host)
    base = Path(tempfile.mkdtemp(prefix="i2v-load-"))
    ckpt = base / "models" / "checkpoints" / TINY
    ckpt.parent.mkdir(parents=True)
    import subprocess

    subprocess.run([str(py), "-c", "import comfy_inproc; comfy_inproc.bootstrap('cpu'); "
                    "from support.fixtures import make_tiny_checkpoint; make_tiny_checkpoint(%r)" % str(ckpt)],
                   check=True, env=dict(os.environ, I2V_COMFY_DIR=str(comfy), PYTHONPATH=paths.pythonpath()),
                   capture_output=True)
    report: dict = {"host": str(comfy), "prompts": a.prompts}
    srv = comfy_server.ComfyServer(comfy, py, base_dir=base)
    srv.start(timeout=300)
    try:
        info = srv.object_info()
        expect = workflow.load_expect(WF)
        prompt = workflow.to_api(workflow.load(WF), info)
        workflow.apply_overrides(prompt, expect.get("tiny_overrides"))
        workflow.set_input(prompt, "I2VMotion_LoadDynamiCrafter", "ckpt_name", TINY)
        for name, src in workflow.input_files(WF, prompt, expect).items():
            dest = srv.input_dir / name
            if src is not None:
                dest.write_bytes(Path(src).read_bytes())
            else:
                comfy_server.write_sample_png(dest, *expect.get("input_size", [512, 320]))
        sampler = workflow.find_nodes(prompt, "KSampler")[0]

        # 1. load
        srv.run(prompt, timeout=600)
        before = rss_kb(srv.proc.pid)
        t0 = time.perf_counter()
        ids = []
        for i in range(a.prompts):
            p = json.loads(json.dumps(prompt))
            p[sampler]["inputs"]["seed"] = 1000 + i
            ids.append(srv.queue(p))
        ok, trend = 0, []
        for i, pid in enumerate(ids):
            srv.wait(pid, timeout=900)
            ok += 1
            if (i + 1) % max(1, a.prompts // 4) == 0:
                trend.append(round(rss_kb(srv.proc.pid) / 1024, 1))  # RSS after each quarter: plateau or leak
        after = rss_kb(srv.proc.pid)
        report["load"] = {"succeeded": ok, "seconds": round(time.perf_counter() - t0, 1),
                          "rss_before_mib": round(before / 1024, 1), "rss_after_mib": round(after / 1024, 1),
                          "rss_growth_pct": round(100 * (after - before) / before, 2), "rss_by_quarter_mib": trend}

        # reference run of the long prompt
        long = json.loads(json.dumps(prompt))
        long[sampler]["inputs"]["steps"] = a.steps
        long[sampler]["inputs"]["seed"] = 7
        fresh(srv)
        ref = frames_of(srv.run(long, timeout=900).files)

        # 2. interrupt mid-sampling, then the same prompt again
        fresh(srv)
        pid = srv.queue(long)
        time.sleep(3.0)
        srv.post_json("/interrupt", {})
        try:
            srv.wait(pid, timeout=300)
            interrupted = False
        except comfy_server.ExecutionFailed:
            interrupted = True
        fresh(srv)
        again = frames_of(srv.run(long, timeout=900).files)
        report["interrupt"] = {"interrupted": interrupted, "rerun_bit_identical": again == ref}

        # 3. kill -9 mid-run, restart, run again
        fresh(srv)
        pid = srv.queue(long)
        time.sleep(3.0)
        report["kill9_while_running"] = srv.get_json("/queue").get("queue_running") != []
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(timeout=60)
        srv.proc = None
        srv.start(timeout=300)
        again = frames_of(srv.run(long, timeout=900).files)
        partial = [str(p) for p in srv.output_dir.rglob("*") if p.name.endswith((".partial", ".i2v-partial"))]
        report["kill9"] = {"restarted": srv.alive(), "rerun_bit_identical": again == ref, "leftover_partials": partial}
    finally:
        srv.stop()
    print(json.dumps(report, indent=1))
    good = (report["load"]["succeeded"] == a.prompts and report["interrupt"]["rerun_bit_identical"]
            and report["kill9"]["rerun_bit_identical"] and not report["kill9"]["leftover_partials"])
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
