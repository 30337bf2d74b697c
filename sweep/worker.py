"""The Ray worker: one actor per ComfyUI server (one actor per resource-owning process).

The actor either starts its own server from a ComfyUI folder (isolated base directory, free local port, the GPU
Ray assigned it through ``CUDA_VISIBLE_DEVICES``; the server is killed with the actor even when the actor is
killed) or attaches to a server URL. A job goes through the HTTP API only: input pictures to ``/upload/image``,
the prompt to ``/prompt``, progress and completion from the websocket, the result from ``/history``, the files
from ``/view``; the files' bytes go back to the driver with the metrics computed here.

A job ends one of three ways: ``ok``; ``failed`` by its own error (ComfyUI rejected a value, a node raised, e.g.
the pack's NaN guard: recorded with ComfyUI's message, never retried); or ``retry`` when the server died or hung
past the job's timeout (the actor restarts a server it owns, and the driver runs the job again elsewhere).

This module never imports Ray at import time (the driver wraps :class:`ComfyWorker` with ``ray.remote``).
"""
from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from . import comfy, metrics


def _ray_context() -> tuple[str, str, list]:
    """(node address, Ray node id, GPU ids Ray assigned to this actor)."""
    try:
        import ray

        return (ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id(),
                [str(g) for g in ray.get_gpu_ids()])
    except Exception:  # noqa: BLE001 - outside Ray (tests of the class itself)
        return socket.gethostname(), "", []


class ComfyWorker:
    """Owns (or attaches to) one ComfyUI server and runs jobs on it, one at a time."""

    def __init__(self, index: int, comfyui: str | None = None, python: str | None = None, url: str | None = None,
                 model_dirs: list[str] | tuple = (), all_custom_nodes: bool = False, start_timeout: float = 300,
                 env: dict | None = None, pack_dir: str | None = None):
        if (comfyui is None) == (url is None):
            raise ValueError("a worker needs either a ComfyUI folder to start a server from or a server URL")
        self.index = index
        self.comfyui, self.python, self.url = comfyui, python, url
        self.model_dirs = list(model_dirs)
        self.all_custom_nodes = all_custom_nodes
        self.start_timeout = start_timeout
        self.env = dict(env or {})
        self.pack_dir = pack_dir
        self.node, self.node_id, self.gpus = _ray_context()
        self.server: comfy.ComfyClient | None = None
        self.restarts = 0
        self.starts = 0
        self.uploaded: set[str] = set()
        self.current: dict[str, Any] = {}
        self.logs: list[str] = []  # the ends of the logs of the servers this worker stopped
        self._lock = threading.Lock()
        self._stopping = False

    # -- the server -----------------------------------------------------------------------------------
    def _start(self) -> comfy.ComfyClient:
        if self.url:
            client = comfy.ComfyClient(self.url)
            if not client.alive():
                raise comfy.ServerStartError(f"no ComfyUI answers at {self.url}")
            return client
        env = dict(os.environ, **self.env)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        comfy_dir = Path(self.comfyui)
        models = list(self.model_dirs)
        if (comfy_dir / "models").is_dir():
            models.insert(0, str(comfy_dir / "models"))
        srv = comfy.ComfyServer(comfy_dir, self.python, extra_model_dirs=models, env=env,
                                isolate=not self.all_custom_nodes, orphan_guard=True,
                                **({"pack_dir": self.pack_dir} if self.pack_dir else {}))
        base = srv.base_dir  # a fresh temporary folder, deleted with the server
        if self.all_custom_nodes:  # the user's other packs too (linked into the isolated base directory)
            (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
            for entry in (comfy_dir / "custom_nodes").iterdir():
                link = base / "custom_nodes" / entry.name
                if entry.name != comfy.PACK_NAME and not link.exists() and not entry.name.startswith((".", "__")):
                    link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        srv.start(timeout=self.start_timeout)
        self.starts += 1
        return srv

    def _ensure(self) -> comfy.ComfyClient:
        with self._lock:
            if self.server is not None and isinstance(self.server, comfy.ComfyServer) and not self.server.alive():
                self._drop_server()
                self.restarts += 1
            if self.server is None:
                self.server = self._start()
                self.uploaded.clear()
            return self.server

    def _drop_server(self) -> None:
        """Forget the current server (stopping it if this worker started it)."""
        if isinstance(self.server, comfy.ComfyServer):
            pid = self.server.pid
            self.server.stop()
            self.logs.append(f"--- server pid {pid} at {self.server.url} ---\n"
                             + self.server.log_tail(400))
            self.server.cleanup()
        self.server = None
        self.uploaded.clear()

    def info(self) -> dict:
        """Where this worker runs and its server: index, node, gpus, url, pid, starts, restarts."""
        srv = self._ensure()
        return {"index": self.index, "node": self.node, "node_id": self.node_id, "gpus": self.gpus, "url": srv.url,
                "pid": getattr(srv, "pid", None), "starts": self.starts, "restarts": self.restarts,
                "worker_pid": os.getpid(), "owned": isinstance(srv, comfy.ComfyServer)}

    def object_info(self) -> dict:
        return self._ensure().object_info()

    def status(self) -> dict:
        """The running job (key, step progress) and the server's pid; answers while a job runs."""
        srv = self.server
        return {"index": self.index, "pid": getattr(srv, "pid", None), "restarts": self.restarts,
                **dict(self.current)}

    def interrupt(self) -> None:
        """Interrupt the running prompt (Ctrl-C in the driver)."""
        self._stopping = True
        srv, pid = self.server, self.current.get("prompt_id")
        if srv is not None and pid:
            srv.forget(pid)
            srv.interrupt(pid)

    def shutdown(self) -> dict:
        """Interrupt what runs and stop the server this worker started; returns ``info``-like facts."""
        self.interrupt()
        pid = getattr(self.server, "pid", None)
        with self._lock:
            owned = isinstance(self.server, comfy.ComfyServer)
            self._drop_server()
        return {"index": self.index, "pid": pid, "owned": owned, "node": self.node, "starts": self.starts,
                "restarts": self.restarts, "logs": "\n".join(self.logs)}

    # -- jobs -----------------------------------------------------------------------------------------
    def _progress(self, event: str, data: dict) -> None:
        if event == "progress":
            self.current.update(value=data.get("value"), max=data.get("max"), node=data.get("node"))
        elif event == "executing" and data.get("node") is not None:
            self.current.update(node=data.get("node"))

    def run_job(self, job: dict, *blobs: bytes) -> dict:
        """Run one job: ``job`` = {key, prompt, uploads: [names, in the order of ``blobs``], collect: node ids or
        None, metrics: [...], timeout}. Returns {status, key, files: [(name, bytes)], metrics, seconds, worker,
        error, error_kind}."""
        t0 = time.perf_counter()
        self.current = {"key": job["key"], "started": time.time(), "value": 0, "max": None}
        base = {"key": job["key"], "worker": f"{self.index}@{self.node}", "files": [], "metrics": {},
                "outputs": {}}
        try:
            try:
                srv = self._ensure()
            except comfy.ComfyError as e:
                return {**base, "status": "retry", "error": f"server start failed: {e}", "error_kind": "infra",
                        "seconds": time.perf_counter() - t0}
            for name, data in zip(job["uploads"], blobs):
                if name not in self.uploaded:
                    srv.upload_image(name, data)
                    self.uploaded.add(name)
            res = srv.run(job["prompt"], timeout=job["timeout"], progress=self._progress,
                          on_queued=lambda pid: self.current.update(prompt_id=pid))
            refs = comfy.output_refs(res.outputs, job.get("collect"))
            files = [(f"{r['node']}_{r['filename']}", srv.view(r)) for r in refs]
            seconds = time.perf_counter() - t0
            try:
                m = metrics.compute(files, res.outputs, job.get("metrics") or [])
                merr = None
            except Exception as e:  # noqa: BLE001 - a metric must not lose a finished job
                m, merr = {}, f"metrics failed: {type(e).__name__}: {e}"
            return {**base, "status": "ok", "files": files, "metrics": m, "seconds": seconds,
                    "metrics_seconds": time.perf_counter() - t0 - seconds, "error": merr, "error_kind": None,
                    "server_seconds": comfy.execution_seconds(res.history),
                    "prompt_id": res.prompt_id}
        except comfy.PromptRejected as e:
            return {**base, "status": "failed", "error": str(e), "error_kind": "job", "seconds": time.perf_counter() - t0}
        except comfy.ExecutionFailed as e:
            if e.details.get("event") == "execution_interrupted":
                kind = "interrupted" if self._stopping else "infra"
                return {**base, "status": "retry", "error": str(e), "error_kind": kind,
                        "seconds": time.perf_counter() - t0}
            msg = e.details.get("exception_message") or str(e)
            where = f"node {e.details.get('node_id')} ({e.details.get('node_type')}): " if e.details.get("node_id") else ""
            return {**base, "status": "failed", "error": f"{where}{e.details.get('exception_type', 'error')}: {msg}".strip(),
                    "error_kind": "job", "seconds": time.perf_counter() - t0}
        except (comfy.PromptTimeout, comfy.ServerDied, comfy.ComfyError, OSError) as e:
            hung = isinstance(e, comfy.PromptTimeout)
            with self._lock:  # a hung or dead server: a fresh one for the next job (an owned one)
                if isinstance(self.server, comfy.ComfyServer):
                    self._drop_server()
                    self.restarts += 1
            what = "hung past the job timeout" if hung else "died or stopped answering"
            return {**base, "status": "retry", "error": f"ComfyUI {what}: {type(e).__name__}: {str(e)[:500]}",
                    "error_kind": "interrupted" if self._stopping else "infra", "seconds": time.perf_counter() - t0}
        except Exception as e:  # noqa: BLE001 - anything else is reported, the worker stays up
            return {**base, "status": "retry", "error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}",
                    "error_kind": "infra", "seconds": time.perf_counter() - t0}
        finally:
            self.current = {}
