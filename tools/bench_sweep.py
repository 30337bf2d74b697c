#!/usr/bin/env python3
"""Sweep benchmark: jobs per hour with 1 and 2 Ray workers, and the orchestration overhead per job.

One run, side by side, on the same two warm ComfyUI servers (tiny DynamiCrafter checkpoints, the EDG example
workflow at 128x64x8 with ``--steps`` sampler steps, so a job takes about 10 s on this CPU):

1. **direct**: the same kind of prompt posted to one server by a plain client (``/prompt`` + websocket until
   done), one after another: the baseline seconds per job;
2. **sweep, 1 worker** attached to that server: jobs per hour (first job queued to last result in) and the
   overhead per job against the baseline (Ray dispatch, uploads, websocket, ``/view`` downloads, metrics,
   manifest writes); goal <= 5 % on jobs of >= 10 s;
3. **sweep, 2 workers** on both servers: jobs per hour and the scaling efficiency ``jobs/h(2) / (2 * jobs/h(1))``.

Every phase runs different seeds (ComfyUI would answer a repeated prompt from its cache), after one warm-up job
per server. Ray and server start-up are outside the timed loops (printed apart). Each server runs with
``OMP_NUM_THREADS=1``: on a 2-core machine two servers fill it, and the driver and Ray share the same cores, which
caps the 2-worker efficiency here; on one GPU per worker the servers do not contend.

    python3 tools/bench_sweep.py [--jobs 6] [--steps 12] [--host 0.3.75]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import paths  # noqa: E402

paths.use_pack_root()  # the pack's ``sweep`` package

import host  # noqa: E402

WORKFLOW = REPO / "example_workflows" / "edg_expert_schedule.json"
TINY = {"checkpoints/dynamicrafter_512.ckpt": {"variant": "512"},
        "checkpoints/dynamicrafter_cil_512.ckpt": {"variant": "512", "seed": 1}}


def spec_file(folder: Path, seeds: list[int], steps: int) -> Path:
    import json

    data = {"workflow": str(WORKFLOW), "tiny": False, "outputs": ["SaveAnimatedWEBP"],
            "metrics": ["flow", "dynamic_degree", "flicker"], "timeout": 900,
            "overrides": {"5": {"width": 128, "height": 64, "length": 8}, "6": {"steps": steps}},
            "axes": [{"node": "KSampler", "input": "seed", "values": seeds}]}
    path = folder / f"bench_{seeds[0]}.yaml"
    path.write_text(json.dumps(data))
    return path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=6, help="jobs per phase (default 6)")
    ap.add_argument("--steps", type=int, default=12, help="sampler steps per job (default 12: ~10 s on this CPU)")
    ap.add_argument("--host", default=None, help="ComfyUI host (tools/host.py); default 0.3.75")
    a = ap.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:  # the system python: the host's, with the sweep's requirements installed
        host.ensure_sweep(a.host)
        host.reexec_in_host(__file__, argv, a.host, needs="ray")
    comfy_dir = Path(os.environ.get("I2V_COMFY_DIR") or host.ensure_host(a.host)[0])

    import ray

    import comfy_server
    from sweep.comfy import execution_seconds
    from sweep.engine import Options, run_sweep
    from sweep.jobs import build_jobs
    from sweep.spec import load, resolve
    from sweep.tiny import make_tiny_checkpoints
    from sweep.workflow import to_api

    tmp = Path(tempfile.mkdtemp(prefix="i2v-bench-sweep-"))
    t0 = time.perf_counter()
    make_tiny_checkpoints(tmp / "models", TINY, comfy_dir, sys.executable)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    srvs = [comfy_server.ComfyServer(comfy_dir, sys.executable, base_dir=tmp / f"srv{i}",
                                     extra_model_dirs=[tmp / "models"], env=env) for i in range(2)]
    threads = [threading.Thread(target=s.start, kwargs={"timeout": 300}) for s in srvs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not all(s.alive() for s in srvs):
        print("a server did not start; see", [str(s.log_path) for s in srvs], file=sys.stderr)
        return 1
    startup = time.perf_counter() - t0
    n, seed = a.jobs, 1000
    try:
        # one prompt per seed, built exactly as the sweep builds them
        def prompts(seeds: list[int]) -> list:
            spec = load(spec_file(tmp, seeds, a.steps))
            info = srvs[0].object_info()
            base = to_api(spec.workflow, info)
            resolve(spec, base, info)
            return build_jobs(spec, base)

        for s, job in zip(srvs, prompts([1, 2])):  # warm-up: models loaded, caches of the loaders filled
            for name, path in job.uploads.items():
                s.upload_image(name, Path(path).read_bytes())
            s.run(job.prompt, timeout=900)
        direct, direct_exec = [], []
        for job in prompts(list(range(seed, seed + n))):
            t = time.perf_counter()
            res = srvs[0].run(job.prompt, timeout=900)
            direct.append(time.perf_counter() - t)
            direct_exec.append(execution_seconds(res.history) or float("nan"))
        t = time.perf_counter()
        os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
        ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
                 log_to_driver=False, _node_ip_address="127.0.0.1",
                 runtime_env={"py_modules": [str(REPO / "sweep")]})
        ray_start = time.perf_counter() - t
        results = {}
        for workers, first in ((1, seed + 100), (2, seed + 200)):
            spec = load(spec_file(tmp, list(range(first, first + n)), a.steps))
            summ = run_sweep(spec, Options(out=tmp / f"out{workers}", servers=[s.url for s in srvs[:workers]],
                                           progress=False))
            if summ.ok != n:
                print(f"{workers} worker(s): only {summ.ok} of {n} jobs ok; see {tmp / f'out{workers}'}",
                      file=sys.stderr)
                return 1
            from sweep.jobs import Manifest

            recs = Manifest(tmp / f"out{workers}").records()
            results[workers] = (summ.loop_seconds, [r.get("server_seconds") or float("nan") for r in recs],
                                [r.get("metrics_seconds", 0.0) for r in recs])
        ray.shutdown()
    finally:
        for s in srvs:
            s.stop()
    base, base_exec = statistics.mean(direct), statistics.mean(direct_exec)
    loop1, exec1, met1 = results[1]
    loop2, _exec2, _ = results[2]
    per1, per2 = loop1 / n, loop2 / n
    jph1, jph2 = 3600 / per1, 3600 / per2
    raw = per1 - base
    # what each way adds around ComfyUI's own execution (its /history timestamps): independent of how busy the
    # machine's cores are while the prompts execute
    add_direct, add_sweep = base - base_exec, per1 - statistics.mean(exec1)
    print(f"bench_sweep: {n} jobs per phase, EDG example at 128x64x8, {a.steps} steps, tiny checkpoints, "
          f"ComfyUI {comfy_dir.parent.name}, CPU ({os.cpu_count()} cores), OMP_NUM_THREADS=1 per server")
    print(f"  start-up (not timed below): 2 servers {startup:.1f} s, ray.init {ray_start:.1f} s")
    print(f"  direct  (1 server, serial):  {base:6.2f} s per job (min {min(direct):.2f}, max {max(direct):.2f}); "
          f"ComfyUI executing {base_exec:.2f} s of it")
    print(f"  sweep, 1 worker:             {per1:6.2f} s per job = {jph1:6.0f} jobs/h; ComfyUI executing "
          f"{statistics.mean(exec1):.2f} s of it, metrics {statistics.mean(met1):.2f} s")
    print(f"  sweep, 2 workers:            {per2:6.2f} s per job = {jph2:6.0f} jobs/h")
    print(f"  overhead per job vs direct:  {raw:+.2f} s = {raw / base:+.1%} of a {base:.1f} s job, wall clock "
          "(goal <= 5 % on jobs of >= 10 s)")
    print(f"  ... around execution:        direct adds {add_direct:.2f} s, the sweep {add_sweep:.2f} s: "
          f"{add_sweep - add_direct:+.2f} s = {(add_sweep - add_direct) / base_exec:+.1%} of the execution time")
    print(f"  scaling 1 -> 2 workers:      x{jph2 / jph1:.2f}, efficiency {jph2 / (2 * jph1):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
