"""The sweep's driver on Ray: a pool of :class:`~sweep.worker.ComfyWorker` actors fed one job each at a time.

Ray does the distributed part: ``ray.init()`` starts a local instance (``num_cpus`` and a small object store
capped) or joins a cluster when ``RAY_ADDRESS`` is set (``ray start`` / ``ray up`` / KubeRay); actors ask for
``num_gpus=1`` where the cluster has GPUs (else one CPU each), Ray places them and sets ``CUDA_VISIBLE_DEVICES``;
an actor process that dies is restarted by Ray (``max_restarts``). The driver keeps the grid: it queues a job on
a free worker, writes each result (files first, then one manifest line) as it comes back, re-queues a job whose
server died or hung on another worker (bounded by ``retries``), and records a job's own failure once. Ctrl-C
interrupts the running prompts, stops the servers the workers started, and leaves every finished result on disk.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import jobs as J
from .spec import Spec, output_ids, resolve

OBJECT_STORE_BYTES = 200 * 1024 * 1024  # jobs carry videos of a few MB at most


@dataclass
class Options:
    """How to run a sweep (the CLI's flags)."""

    out: Path
    workers: int | None = None            # None: one per GPU of the cluster, else 1
    comfyui: str | None = None            # start servers from this ComfyUI folder
    servers: list[str] = field(default_factory=list)  # or attach to these URLs (one worker each)
    python: str | None = None             # the python that runs ComfyUI (default: this one)
    model_dirs: list[str] = field(default_factory=list)  # extra ComfyUI model roots for started servers
    all_custom_nodes: bool = False        # started servers load every pack of the ComfyUI, not only this one
    retry_failed: bool = False            # run again the jobs that failed by their own error
    start_timeout: float = 300.0
    env: dict = field(default_factory=dict)  # extra environment for started servers
    progress: bool = True
    ray_address: str | None = None        # default: RAY_ADDRESS, else a local Ray
    num_cpus: int | None = None           # local Ray only
    node_ip: str | None = None            # this machine's address in the cluster (when it has several)


@dataclass
class Summary:
    """What a run did."""

    total: int
    skipped: int
    ok: int = 0
    failed: int = 0
    retried: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    loop_seconds: float = 0.0  # first job queued to last result in (no Ray or server start-up)
    workers: list[dict] = field(default_factory=list)
    out: Path | None = None


class Progress:
    """One status line: done / running / failed of the total, and an ETA from the finished jobs' pace."""

    def __init__(self, total: int, skipped: int, enabled: bool = True, stream=sys.stderr):
        self.total, self.skipped, self.enabled, self.stream = total, skipped, enabled, stream
        self.t0 = time.monotonic()
        self.last = 0.0
        self.tty = getattr(stream, "isatty", lambda: False)()

    def show(self, done: int, running: int, failed: int, steps: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.5 if self.tty else 10.0):
            return
        self.last = now
        finished = done + failed - self.skipped
        left = self.total - done - failed
        eta = (now - self.t0) / finished * left if finished > 0 else None
        width = 30
        fill = int(width * (done + failed) / max(1, self.total))
        bar = "#" * fill + "-" * (width - fill)
        line = (f"[sweep] [{bar}] {done + failed}/{self.total} done {done}, running {running}, failed {failed}"
                + (f", ETA {_fmt_s(eta)}" if eta is not None and left else "") + (f"  {steps}" if steps else ""))
        self.stream.write(("\r" + line.ljust(110)) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def log(msg: str) -> None:
    print(f"[sweep] {msg}", file=sys.stderr, flush=True)


def init_ray(opts: Options) -> tuple[Any, bool]:
    """``ray`` connected to a cluster (``RAY_ADDRESS``) or a capped local instance; (module, started here)."""
    try:
        import ray
    except ImportError:
        raise SystemExit("the sweep needs Ray: python -m pip install -r sweep/requirements.txt") from None
    if ray.is_initialized():
        return ray, False
    address = opts.ray_address or os.environ.get("RAY_ADDRESS")
    pkg = str(Path(__file__).resolve().parent)
    runtime_env = {"py_modules": [pkg], "env_vars": {"PYTHONUNBUFFERED": "1"}}
    # ComfyUI manages its own memory: Ray's OOM killer would kill the workers (and with them their servers) when
    # the machine is short of RAM for any reason, so it is off for the instance the sweep starts
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    if address:
        log(f"joining the Ray cluster at {address}")
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False,
                 **({"_node_ip_address": opts.node_ip} if opts.node_ip else {}))
    else:
        n = opts.num_cpus or max(1, len(opts.servers) or opts.workers or 1)
        # a new local instance (never a cluster `ray start` left on this machine), on the loopback interface
        ray.init(address="local", num_cpus=n, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=False, _node_ip_address="127.0.0.1")
    return ray, True


def _write_json(path: Path, data: Any, durable: bool = True) -> None:
    J.write_atomic(path, json.dumps(data, indent=1, default=str).encode(), durable=durable)


def run_sweep(spec: Spec, opts: Options, prepare: Callable[[Spec, Options], dict] | None = None,
              on_status: Callable[[dict], None] | None = None) -> Summary:
    """Run every unfinished job of ``spec`` on Ray; write results as they finish, then the table and report.

    ``prepare(spec, opts)`` may return ``{"model_dirs": [...], "overrides": {...}}`` (the tiny stand-ins);
    ``on_status`` sees the live status dict (also written to ``<out>/status.json``)."""
    from .worker import ComfyWorker

    t_start = time.perf_counter()
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    servers = list(opts.servers or spec.servers)
    if not servers and not opts.comfyui:
        raise SystemExit("give --comfyui PATH (workers start their own ComfyUI servers) or --server URL")
    extra = prepare(spec, opts) if prepare else {}
    model_dirs = list(opts.model_dirs) + list(extra.get("model_dirs", []))

    opts.servers = servers
    ray, started_ray = init_ray(opts)
    actors: list = []
    summary = Summary(total=0, skipped=0, out=out)
    progress: Progress | None = None
    manifest = J.Manifest(out)
    interrupted = False
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n_workers = len(servers) if servers else (opts.workers or max(1, gpus))
        res = {"num_gpus": 1, "num_cpus": 0} if (gpus and not servers) else {"num_cpus": 1}
        Remote = ray.remote(max_restarts=2, max_task_retries=0, max_concurrency=4, **res)(ComfyWorker)
        for i in range(n_workers):
            kw = dict(url=servers[i]) if servers else dict(comfyui=opts.comfyui, python=opts.python,
                                                          model_dirs=model_dirs,
                                                          all_custom_nodes=opts.all_custom_nodes,
                                                          start_timeout=opts.start_timeout, env=opts.env)
            actors.append(Remote.remote(i, **kw))
        log(f"{n_workers} worker(s) on Ray ({'a local instance' if started_ray else ray.get_runtime_context().gcs_address}"
            f", {'GPU each' if res.get('num_gpus') else 'CPU'}); "
            + (f"attached to {', '.join(servers)}" if servers else f"starting ComfyUI from {opts.comfyui}"))
        pending_info = [a.info.remote() for a in actors]
        ready, _ = ray.wait(pending_info, num_returns=len(pending_info), timeout=opts.start_timeout + 120)
        if len(ready) < len(pending_info):
            raise SystemExit(f"only {len(ready)} of {n_workers} worker(s) came up within "
                             f"{opts.start_timeout + 120:.0f} s; the Ray cluster has {ray.cluster_resources()} "
                             f"and each worker needs {res}")
        infos = ray.get(pending_info)
        for inf in infos:
            log(f"worker {inf['index']} on {inf['node']}: ComfyUI at {inf['url']}"
                + (f" (pid {inf['pid']}, GPUs {inf['gpus'] or 'none'})" if inf["owned"] else ""))
        _write_json(out / "workers.json", infos)

        object_info = ray.get(actors[0].object_info.remote())
        from .workflow import to_api

        warnings: list[str] = []
        base_prompt = to_api(spec.workflow, object_info, warnings)
        resolve(spec, base_prompt, object_info)
        input_dirs = [Path(opts.comfyui) / "input"] if opts.comfyui else []
        all_jobs = J.build_jobs(spec, base_prompt, input_dirs, extra.get("overrides"))
        collect = output_ids(spec, base_prompt)
        video_node = (collect or [None])[0]
        if video_node is None:
            video_node = next((nid for nid, n in base_prompt.items()
                               if n.get("class_type") in ("SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveVideo",
                                                          "SaveWEBM")), None)
        finished = manifest.finished()
        if opts.retry_failed:
            finished = {k: r for k, r in finished.items() if r.get("status") == "ok"}
        todo = deque(j for j in all_jobs if j.key not in finished)
        summary.total, summary.skipped = len(all_jobs), len(all_jobs) - len(todo)
        _write_json(out / "jobs.json", {"spec": str(spec.path), "workflow": str(spec.workflow_path),
                                        "axes": [a.name for a in spec.axes], "mode": spec.mode,
                                        "jobs": [{"index": j.index, "key": j.key, "values": j.values} for j in all_jobs]})
        if summary.skipped:
            log(f"{summary.skipped} of {len(all_jobs)} job(s) already finished in {manifest.path} (skipped)")
        log(f"{len(todo)} job(s) to run; results in {out}")
        if todo and not finished:  # what a job of this sweep looks like on the wire
            _write_json(out / "prompt_example.json", todo[0].prompt)

        blobs: dict[str, Any] = {}
        free = deque(range(n_workers))
        inflight: dict[Any, tuple[J.Job, int]] = {}
        reviving: dict[Any, int] = {}  # info() probes of actors Ray is restarting: free again once they answer
        done_n = sum(1 for r in finished.values() if r.get("status") == "ok")
        failed_n = len(finished) - done_n
        progress = Progress(summary.total, summary.skipped, opts.progress)
        last_status = 0.0
        statuses: dict[int, dict] = {}

        def payload(job: J.Job) -> tuple[dict, list]:
            prompt = job.prompt
            if "layout" in spec.metrics:
                import copy

                from .metrics import add_layout_metrics

                prompt = copy.deepcopy(prompt)
                add_layout_metrics(prompt, video_node)
            for name, path in job.uploads.items():
                if name not in blobs:
                    blobs[name] = ray.put(Path(path).read_bytes())
            return ({"key": job.key, "prompt": prompt, "uploads": list(job.uploads), "collect": collect,
                     "metrics": spec.metrics, "timeout": spec.timeout},
                    [blobs[n] for n in job.uploads])

        def record(job: J.Job, r: dict, status: str, error_kind: str | None) -> None:
            files = []
            for name, data in r.get("files", []):
                rel = Path("outputs") / job.key[:16] / name
                J.write_atomic(out / rel, data)
                files.append(rel.as_posix())
            rec = {"key": job.key, "index": job.index, "values": job.values, "status": status,
                   "error": r.get("error"), "error_kind": error_kind, "files": files,
                   "metrics": r.get("metrics", {}), "seconds": round(float(r.get("seconds", 0.0)), 3),
                   "metrics_seconds": round(float(r.get("metrics_seconds") or 0.0), 3),
                   "server_seconds": r.get("server_seconds"),
                   "worker": r.get("worker"), "attempts": job.attempts, "retry_errors": job.errors,
                   "finished": time.time()}
            manifest.append(rec)

        def dispatch() -> None:
            while free and todo:
                # a job goes to a free worker it has not failed on (a retry runs elsewhere); only when every
                # queued job has failed on every free worker does the first one run on one of them again
                job, pick = next(((j, w) for j in todo for w in free if w not in j.avoid), (todo[0], free[0]))
                todo.remove(job)
                free.remove(pick)
                job.attempts += 1
                body, refs = payload(job)
                inflight[actors[pick].run_job.remote(body, *refs)] = (job, pick)

        t_loop = time.perf_counter()
        while todo or inflight:
            if todo and not free and not inflight and not reviving:
                raise SystemExit(f"every worker is gone (Ray could not restart them); {len(todo)} job(s) not run; "
                                 f"run the same command again to finish them")
            dispatch()
            ready, _ = ray.wait(list(inflight) + list(reviving), num_returns=1, timeout=0.5)
            to_record: list[tuple[J.Job, dict, str, str | None]] = []
            for ref in ready:
                if ref in reviving:
                    w = reviving.pop(ref)
                    try:
                        ray.get(ref)
                        free.append(w)
                        log(f"worker {w} is back")
                    except ray.exceptions.RayError as e:
                        log(f"worker {w} is gone for good: {str(e)[:200]}")
                    continue
                job, w = inflight.pop(ref)
                try:
                    r = ray.get(ref)
                    free.append(w)
                except ray.exceptions.RayActorError as e:  # the actor process died; Ray restarts it (max_restarts)
                    r = {"status": "retry", "error": f"worker {w} process died: {str(e)[:300]}", "error_kind": "infra"}
                    reviving[actors[w].info.remote()] = w  # no job for it until it answers again
                except ray.exceptions.RayError as e:
                    free.append(w)
                    r = {"status": "retry", "error": f"worker {w}: {type(e).__name__}: {str(e)[:300]}",
                         "error_kind": "infra"}
                if r["status"] == "ok":
                    to_record.append((job, r, "ok", None))
                    done_n += 1
                    summary.ok += 1
                elif r["status"] == "failed":
                    to_record.append((job, r, "failed", "job"))
                    failed_n += 1
                    summary.failed += 1
                elif r.get("error_kind") == "interrupted":
                    todo.appendleft(job)
                else:
                    job.errors.append(r.get("error") or "?")
                    job.avoid.add(w)
                    summary.retried += 1
                    if job.attempts > spec.retries:
                        to_record.append((job, r, "failed", "infra"))
                        failed_n += 1
                        summary.failed += 1
                    else:
                        log(f"job {job.index} ({_values_text(job.values)}) will run again elsewhere "
                            f"(attempt {job.attempts + 1} of {spec.retries + 1}): {(r.get('error') or '')[:200]}")
                        todo.appendleft(job)
            dispatch()  # freed workers get their next prompt before this one's files are written
            for rec in to_record:
                record(*rec)
            now = time.monotonic()
            if now - last_status > 1.0 or ready:
                last_status = now
                busy = sorted({w for _, w in inflight.values()})
                try:
                    got = ray.get([actors[w].status.remote() for w in busy], timeout=2)
                    statuses.update({w: s for w, s in zip(busy, got)})
                except ray.exceptions.RayError:
                    pass
                status = {"total": summary.total, "done": done_n, "failed": failed_n, "running": len(inflight),
                          "workers": [dict(statuses.get(w, {}), busy=w in busy, index=w) for w in range(n_workers)],
                          "time": time.time()}
                _write_json(out / "status.json", status, durable=False)
                if on_status:
                    on_status(status)
                steps = " ".join(f"w{w}:{s.get('value')}/{s.get('max')}" for w, s in statuses.items()
                                 if w in busy and s.get("max"))
                progress.show(done_n, len(inflight), failed_n, steps)
        summary.loop_seconds = time.perf_counter() - t_loop
        progress.show(done_n, 0, failed_n, force=True)
    except KeyboardInterrupt:
        interrupted = True
        summary.interrupted = True
        if progress:
            progress.close()
        log("interrupted: stopping the running prompts and the servers this sweep started; finished results are kept")
    finally:
        if actors:
            try:
                if interrupted:
                    ray.get([a.interrupt.remote() for a in actors], timeout=15)
                summary.workers = ray.get([a.shutdown.remote() for a in actors], timeout=60)
                for w in summary.workers:  # the servers' logs, for failures worth a look
                    text = w.pop("logs", "")
                    if text:
                        J.write_atomic(out / "logs" / f"worker{w['index']}.log", text.encode())
                _write_json(out / "shutdown.json", summary.workers)
            except Exception as e:  # noqa: BLE001 - best effort: the actors' servers die with them anyway
                log(f"stopping the workers: {type(e).__name__}: {e}")
            for a in actors:
                try:
                    ray.kill(a)
                except Exception:  # noqa: BLE001
                    pass
        if started_ray:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t_start
    from .report import write_results

    write_results(out, spec, manifest)
    return summary


def _values_text(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())
