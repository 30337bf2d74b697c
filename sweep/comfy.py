"""ComfyUI over its HTTP API (stdlib only): start a headless server, or talk to one at a URL.

:class:`ComfyClient` speaks to any ComfyUI at a URL: ``/system_stats``, ``/object_info``, ``/upload/image``,
``/prompt``, the ``/ws`` websocket for progress and completion, ``/history``, ``/view``, ``/interrupt``.
:class:`ComfyServer` is a client that owns the server: it launches ``main.py`` from a ComfyUI folder with an
isolated ``--base-directory`` (models/, input/, output/, temp/, user/, custom_nodes/ holding only a link to this
pack), ``--cpu`` unless the python's torch sees CUDA, a free 127.0.0.1 port, only this pack loaded
(``isolate=False`` loads whatever its ``custom_nodes/`` holds) and a log at ``<base>/comfyui.log``;
``extra_model_dirs`` adds ComfyUI-style model roots through a generated ``extra_model_paths.yaml``.

The sweep's Ray workers use it (one server per worker), and so do the developer tools and tests
(``tools/comfy_server.py`` builds on it), so there is one ComfyUI client in the project.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .websocket import WebSocket, WebSocketClosed

PACK_DIR = Path(__file__).resolve().parent.parent
PACK_NAME = "comfyui-i2v-motion"
#: output keys of ``/history`` entries that list files ({filename, subfolder, type})
FILE_OUTPUT_KEYS = ("images", "gifs", "videos", "video", "audio", "files", "3d")

#: ``progress(event, data)`` callback for websocket events of the prompt being followed
ProgressFn = Callable[[str, dict], None]


class ComfyError(RuntimeError):
    """Base class for every failure reported by this module."""


class ServerStartError(ComfyError):
    """The server exited or never answered; ``log_tail`` holds the end of its log."""


class ServerDied(ServerStartError):
    """The server went away (killed, crashed, unreachable) while a prompt was running."""


class PackImportError(ComfyError):
    """The server started but logged ``IMPORT FAILED`` for this pack."""


class PromptRejected(ComfyError):
    """``POST /prompt`` refused the graph (HTTP 400): ``error`` and ``node_errors`` as the API sent them."""

    def __init__(self, message: str, error: Any, node_errors: dict):
        super().__init__(message)
        self.error = error
        self.node_errors = node_errors

    def error_types(self) -> set[str]:
        """All ``type`` values among the node errors (e.g. ``value_not_in_list``)."""
        out = set()
        for ne in (self.node_errors or {}).values():
            for err in ne.get("errors", []):
                out.add(err.get("type", ""))
        return out


class PromptTimeout(ComfyError, TimeoutError):
    """The prompt did not finish in time (it was interrupted)."""


class ExecutionFailed(ComfyError):
    """The graph was queued but a node raised: ``details`` is the ``execution_error`` message."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


@dataclass
class RunResult:
    """A finished prompt: its id, ``/history`` outputs, the output files on disk (a server this process
    started; empty for a remote one) and the wall time."""

    prompt_id: str
    outputs: dict
    files: list[Path]
    seconds: float
    history: dict = field(repr=False, default_factory=dict)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def format_node_errors(error: Any, node_errors: dict, prompt: dict | None = None) -> str:
    """Human-readable lines for a ``POST /prompt`` 400 answer."""
    lines = []
    if isinstance(error, dict):
        lines.append(f"{error.get('type', 'error')}: {error.get('message', '')} {error.get('details', '')}".strip())
    elif error:
        lines.append(str(error))
    for nid, ne in (node_errors or {}).items():
        ctype = ne.get("class_type") or (prompt or {}).get(nid, {}).get("class_type", "?")
        for err in ne.get("errors", []):
            extra = err.get("extra_info") or {}
            where = f" [input {extra['input_name']}]" if extra.get("input_name") else ""
            lines.append(f"  node {nid} ({ctype}){where}: {err.get('type')}: {err.get('message')}"
                         + (f" - {err.get('details')}" if err.get("details") else ""))
    return "\n".join(lines)


def history_failure(prompt_id: str, entry: dict) -> ExecutionFailed | None:
    """The :class:`ExecutionFailed` a ``/history`` entry reports (node error or interruption), else None."""
    status = entry.get("status", {})
    if status.get("status_str") != "error" and status.get("completed", True):
        return None
    details: dict = {}
    for kind, msg in status.get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            details = dict(msg, event=kind)
    text = (f"node {details.get('node_id')} ({details.get('node_type')}): "
            f"{details.get('exception_type', details.get('event', 'error'))}: "
            f"{details.get('exception_message', '')}".rstrip())
    return ExecutionFailed(f"prompt {prompt_id} failed: {text}", details)


def execution_seconds(entry: dict) -> float | None:
    """Seconds the server spent executing a prompt, from its ``/history`` entry's status timestamps."""
    stamps = {kind: (msg or {}).get("timestamp") for kind, msg in (entry.get("status") or {}).get("messages", [])}
    start, end = stamps.get("execution_start"), stamps.get("execution_success") or stamps.get("execution_error")
    return (end - start) / 1000.0 if isinstance(start, (int, float)) and isinstance(end, (int, float)) else None


def output_refs(outputs: dict, node_ids: Iterable[str] | None = None) -> list[dict]:
    """Every file a history entry's ``outputs`` lists (``{filename, subfolder, type, node}``), in node order;
    only those of ``node_ids`` when given."""
    want = None if node_ids is None else {str(n) for n in node_ids}
    refs = []
    for nid, node_out in outputs.items():
        if want is not None and str(nid) not in want:
            continue
        for key in FILE_OUTPUT_KEYS:
            for item in node_out.get(key, []) or []:
                if isinstance(item, dict) and "filename" in item:
                    refs.append({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                 "type": item.get("type", "output"), "node": str(nid)})
    return refs


def extra_model_paths_yaml(roots: list[Path]) -> str:
    """An ``extra_model_paths.yaml`` mapping each ComfyUI-style models root's usual sub-folders."""
    kinds = {"checkpoints": "checkpoints", "diffusion_models": "diffusion_models\nunet", "vae": "vae",
             "clip_vision": "clip_vision", "text_encoders": "text_encoders\nclip", "loras": "loras"}
    out = []
    for i, root in enumerate(roots):
        out.append(f"extra_{i}:")
        out.append(f"    base_path: {json.dumps(str(root))}")
        for key, sub in kinds.items():
            if "\n" in sub:
                out.append(f"    {key}: |")
                out += [f"        {s}" for s in sub.split("\n")]
            else:
                out.append(f"    {key}: {sub}")
    return "\n".join(out) + "\n"


def _multipart(fields: dict[str, str], name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class ComfyClient:
    """A ComfyUI server at ``url`` (``http://host:port``), driven through its HTTP API and websocket."""

    def __init__(self, url: str | None = None):
        self._url = url.rstrip("/") if url else None
        self._object_info: dict | None = None

    @property
    def url(self) -> str:
        return self._url or ""

    def alive(self) -> bool:
        """Whether the server answers ``/system_stats``."""
        try:
            self.get_json("/system_stats", timeout=5)
            return True
        except (ComfyError, OSError, ValueError):
            return False

    # -- HTTP -----------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 60,
                 raw: bytes | None = None, content_type: str | None = None) -> tuple[int, bytes]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": content_type or "application/json"} if data is not None else {}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str, timeout: float = 60) -> Any:
        status, raw = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise ComfyError(f"GET {path}: HTTP {status}: {raw[:500]!r}")
        return json.loads(raw)

    def post_json(self, path: str, body: Any, timeout: float = 60) -> tuple[int, Any]:
        status, raw = self._request("POST", path, body, timeout=timeout)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def object_info(self, refresh: bool = False) -> dict:
        """``GET /object_info`` (cached)."""
        if self._object_info is None or refresh:
            self._object_info = self.get_json("/object_info", timeout=120)
        return self._object_info

    def upload_image(self, name: str, data: bytes, subfolder: str = "", overwrite: bool = True) -> str:
        """``POST /upload/image`` into the input folder; returns the name to put in ``LoadImage.image``."""
        body, ctype = _multipart({"overwrite": "true" if overwrite else "false", "subfolder": subfolder,
                                  "type": "input"}, "image", name, data)
        status, raw = self._request("POST", "/upload/image", raw=body, content_type=ctype, timeout=120)
        if status != 200:
            raise ComfyError(f"POST /upload/image {name}: HTTP {status}: {raw[:300]!r}")
        resp = json.loads(raw)
        return f"{resp['subfolder']}/{resp['name']}" if resp.get("subfolder") else resp["name"]

    def view(self, ref: dict, timeout: float = 120) -> bytes:
        """The bytes of an output file (a ``{filename, subfolder, type}`` ref) through ``GET /view``."""
        q = urllib.parse.urlencode({"filename": ref["filename"], "subfolder": ref.get("subfolder", ""),
                                    "type": ref.get("type", "output")})
        status, raw = self._request("GET", f"/view?{q}", timeout=timeout)
        if status != 200:
            raise ComfyError(f"GET /view {ref['filename']}: HTTP {status}")
        return raw

    def interrupt(self, prompt_id: str | None = None) -> None:
        """``POST /interrupt`` (the given prompt only where the server supports targeting); never raises."""
        try:
            self.post_json("/interrupt", {"prompt_id": prompt_id} if prompt_id else {}, timeout=10)
        except OSError:
            pass

    def forget(self, prompt_id: str) -> None:
        """Drop a queued prompt that has not started (``POST /queue`` delete); never raises."""
        try:
            self.post_json("/queue", {"delete": [prompt_id]}, timeout=10)
        except OSError:
            pass

    # -- prompts --------------------------------------------------------------------------------------
    def queue(self, prompt: dict, client_id: str | None = None, prompt_id: str | None = None) -> str:
        """``POST /prompt``; returns the prompt id or raises :class:`PromptRejected` with readable errors."""
        body: dict = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if prompt_id:
            body["prompt_id"] = prompt_id
        status, resp = self.post_json("/prompt", body)
        if status != 200 or not isinstance(resp, dict) or "prompt_id" not in resp:
            error = resp.get("error") if isinstance(resp, dict) else resp
            node_errors = resp.get("node_errors", {}) if isinstance(resp, dict) else {}
            raise PromptRejected(f"POST /prompt rejected the graph (HTTP {status}):\n"
                                 + format_node_errors(error, node_errors, prompt), error, node_errors)
        return resp["prompt_id"]

    def _history_entry(self, prompt_id: str) -> dict | None:
        hist = self.get_json(f"/history/{prompt_id}")
        return hist.get(prompt_id)

    def _check_alive(self, prompt_id: str) -> None:
        """Raise :class:`ServerDied` if the server is gone (a remote one: no answer for a few seconds)."""
        for _ in range(3):
            if self.alive():
                return
            time.sleep(1)
        raise ServerDied(f"ComfyUI at {self.url} stopped answering while running prompt {prompt_id}")

    def wait(self, prompt_id: str, timeout: float = 600, poll: float = 0.25) -> dict:
        """Poll ``/history/{id}`` until done; raise :class:`ExecutionFailed`, :class:`PromptTimeout` or
        :class:`ServerDied`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                entry = self._history_entry(prompt_id)
            except (urllib.error.URLError, ConnectionError, OSError):
                self._check_alive(prompt_id)
                entry = None
            if entry is not None:
                failed = history_failure(prompt_id, entry)
                if failed:
                    raise failed
                return entry
            self._check_alive(prompt_id)
            if time.monotonic() > deadline:
                self.interrupt(prompt_id)
                raise PromptTimeout(f"prompt {prompt_id} not finished after {timeout:.0f} s (interrupted)")
            time.sleep(poll)

    def follow(self, ws: WebSocket, prompt_id: str, timeout: float = 600,
               progress: ProgressFn | None = None) -> dict:
        """Follow a queued prompt on the websocket it was queued with (``client_id``) until it finishes, then
        return its ``/history`` entry; ``progress(event, data)`` sees every event of this prompt. ``/history``
        is also read every few seconds, so a missed message only delays the answer."""
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + 2.0
        while True:
            now = time.monotonic()
            if now > deadline:
                self.interrupt(prompt_id)
                raise PromptTimeout(f"prompt {prompt_id} not finished after {timeout:.0f} s (interrupted)")
            done = False
            try:
                msg = ws.recv(timeout=min(1.0, max(0.05, deadline - now)))
            except WebSocketClosed:
                self._check_alive(prompt_id)  # raises ServerDied when it is gone
                return self.wait(prompt_id, timeout=max(1.0, deadline - time.monotonic()))
            if isinstance(msg, str):
                try:
                    event = json.loads(msg)
                except ValueError:
                    event = {}
                kind, data = event.get("type", ""), event.get("data") or {}
                if isinstance(data, dict) and data.get("prompt_id") == prompt_id:
                    if progress is not None:
                        progress(kind, data)
                    done = kind in ("execution_success", "execution_error", "execution_interrupted") or (
                        kind == "executing" and data.get("node") is None)
            if done or time.monotonic() > next_check:
                next_check = time.monotonic() + 2.0
                try:
                    entry = self._history_entry(prompt_id)
                except (urllib.error.URLError, ConnectionError, OSError):
                    self._check_alive(prompt_id)
                    continue
                if entry is not None:  # ComfyUI writes the entry once the prompt is over
                    failed = history_failure(prompt_id, entry)
                    if failed:
                        raise failed
                    return entry
                if done:  # finished but /history not written yet: look again shortly
                    next_check = time.monotonic() + 0.1
                self._check_alive(prompt_id)

    def open_ws(self, client_id: str) -> WebSocket | None:
        """The ``/ws`` websocket for ``client_id`` (None if the server refuses one: polling is used then)."""
        u = urllib.parse.urlsplit(self.url)
        try:
            return WebSocket(f"ws://{u.hostname}:{u.port or 80}/ws?clientId={client_id}", timeout=10)
        except (OSError, ValueError):
            return None

    def run(self, prompt: dict, timeout: float = 600, progress: ProgressFn | None = None,
            on_queued: Callable[[str], None] | None = None) -> RunResult:
        """Queue an API-format prompt, follow it on the websocket (``/history`` polling without one) and
        collect its outputs; ``on_queued(prompt_id)`` is called once it is queued."""
        t0 = time.perf_counter()
        client_id = uuid.uuid4().hex
        ws = self.open_ws(client_id)
        try:
            pid = self.queue(prompt, client_id=client_id)
            if on_queued is not None:
                on_queued(pid)
            entry = self.follow(ws, pid, timeout, progress) if ws else self.wait(pid, timeout=timeout)
        finally:
            if ws:
                ws.close()
        outputs = entry.get("outputs", {})
        return RunResult(pid, outputs, self.output_files(outputs), time.perf_counter() - t0, entry)

    def output_files(self, outputs: dict) -> list[Path]:
        """Paths on this machine of a history entry's files: none for a server this object did not start."""
        return []


def _cuda_available(python: Path) -> bool:
    """Whether ``python``'s torch sees a CUDA device (only asked when an NVIDIA driver is present)."""
    if not Path("/dev/nvidiactl").exists():
        return False
    r = subprocess.run([str(python), "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                       capture_output=True)
    return r.returncode == 0


# Kills a server's process group once the process that started it is gone (a Ray worker killed with SIGKILL
# never runs its clean-up, and Ray only reaps its workers' direct children on a graceful exit).
_ORPHAN_GUARD = r"""
import os, signal, sys, time
owner, pgid = int(sys.argv[1]), int(sys.argv[2])
def gone(pid):
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
while True:
    time.sleep(1.0)
    if gone(pgid):
        sys.exit(0)
    if gone(owner) or os.getppid() == 1:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sys.exit(0)
"""


class ComfyServer(ComfyClient):
    """A headless ComfyUI subprocess with an isolated base directory; use as a context manager."""

    def __init__(self, comfy_dir: Path | str, python: Path | str | None = None, *,
                 base_dir: Path | str | None = None, port: int | None = None,
                 extra_model_dirs: Iterable[Path | str] = (), extra_args: Iterable[str] = (),
                 load_pack: bool = True, pack_dir: Path | str = PACK_DIR, env: dict | None = None,
                 cpu: bool | None = None, isolate: bool = True, orphan_guard: bool = False,
                 extra_packs: Iterable[Path | str] = ()):
        super().__init__()
        self.comfy_dir = Path(comfy_dir).resolve()
        self.python = Path(python or sys.executable)
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="i2v-comfy-")).resolve()
        self.port = port
        self.extra_model_dirs = [Path(p).resolve() for p in extra_model_dirs]
        self.extra_args = list(extra_args)
        self.load_pack = load_pack
        self.pack_dir = Path(pack_dir).resolve()
        self.env = env
        self.cpu = cpu
        self.isolate = isolate
        self.extra_packs = [Path(p).resolve() for p in extra_packs]  # node packs linked and whitelisted beside this one
        self.orphan_guard = orphan_guard
        self.proc: subprocess.Popen | None = None
        self._guard: subprocess.Popen | None = None
        self.log_path = self.base_dir / "comfyui.log"
        self.start_seconds: float | None = None
        self._log_file = None

    # -- folders --------------------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def temp_dir(self) -> Path:
        return self.base_dir / "temp"  # ComfyUI appends "temp" to --temp-directory

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.proc.pid if self.proc is not None else None

    def _prepare(self) -> list[str]:
        for d in ("models/checkpoints", "models/diffusion_models", "models/clip_vision", "models/vae", "models/loras",
                  "models/text_encoders", "input", "output", "user", "custom_nodes"):
            (self.base_dir / d).mkdir(parents=True, exist_ok=True)
        links = ([(PACK_NAME, self.pack_dir)] if self.load_pack else []) + [(p.name, p) for p in self.extra_packs]
        for name, target in links:
            link = self.base_dir / "custom_nodes" / name
            if not (link.is_symlink() and link.resolve() == target):
                if link.is_symlink():
                    link.unlink()
                link.symlink_to(target, target_is_directory=True)
        if self.cpu is None:
            self.cpu = not _cuda_available(self.python)
        args = (["--cpu"] if self.cpu else []) + ["--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", str(self.base_dir), "--output-directory", str(self.output_dir),
                "--input-directory", str(self.input_dir), "--temp-directory", str(self.base_dir),
                "--disable-auto-launch", "--preview-method", "none"]
        if self.isolate:
            args += ["--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_NAME,
                     *(p.name for p in self.extra_packs)]
        cli = (self.comfy_dir / "comfy" / "cli_args.py").read_text(errors="replace")
        if "--disable-api-nodes" in cli:
            args.append("--disable-api-nodes")
        if "--database-url" in cli:
            args += ["--database-url", f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}"]
        if self.extra_model_dirs:
            yaml = self.base_dir / "extra_model_paths.yaml"
            yaml.write_text(extra_model_paths_yaml(self.extra_model_dirs))
            args += ["--extra-model-paths-config", str(yaml)]
        return args + self.extra_args

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> ComfyServer:
        """Launch ``main.py``, wait for ``/system_stats``, then fail loudly if the pack did not import."""
        if self.proc is not None:
            return self
        self.port = self.port or free_port()
        cmd = [str(self.python), "main.py"] + self._prepare()
        env = dict(os.environ if self.env is None else self.env)
        env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
        self._log_file = open(self.log_path, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        if self.orphan_guard:
            self._guard = subprocess.Popen([sys.executable, "-c", _ORPHAN_GUARD, str(os.getpid()), str(self.proc.pid)],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self._close_log()
                self.proc = None
                raise ServerStartError(f"ComfyUI exited with code {rc} during start-up; log {self.log_path}:\n"
                                       + self.log_tail())
            try:
                self.get_json("/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError, ValueError, ComfyError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s; log "
                                       f"{self.log_path}:\n" + self.log_tail())
            time.sleep(0.25)
        self.start_seconds = time.perf_counter() - t0
        for name in ([PACK_NAME] if self.load_pack else []) + [p.name for p in self.extra_packs]:
            failed = self.pack_import_failures(name)
            if failed:
                msg = "\n".join(failed)
                self.stop()
                raise PackImportError(f"{name} failed to import in ComfyUI:\n{msg}")
        return self

    def stop(self) -> int | None:
        """SIGTERM the server's process group (SIGKILL after 15 s). Returns its exit code."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                rc = self.proc.wait(15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                rc = self.proc.wait(15)
        self.proc = None
        if self._guard is not None:
            self._guard.kill()
            self._guard.wait()
            self._guard = None
        self._close_log()
        return rc

    def _close_log(self) -> None:
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self, prompt_id: str) -> None:
        if not self.alive():
            raise ServerDied(f"ComfyUI died while running prompt {prompt_id}; log tail:\n" + self.log_tail())

    def cleanup(self) -> None:
        """Stop, and delete the base directory if this object created it."""
        self.stop()
        if self._own_base:
            import shutil

            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- log ------------------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def pack_import_failures(self, name: str = PACK_NAME) -> list[str]:
        """Log lines saying pack ``name`` (default: this one) failed to import, with the traceback before them."""
        lines = self.log_text().splitlines()
        bad = [ln for ln in lines if "IMPORT FAILED" in ln and name in ln]
        if not bad:
            return []
        stop = next((i for i, ln in enumerate(lines) if ("Cannot import" in ln or "Error while calling" in ln)
                     and name in ln), None)
        if stop is not None:
            start = next((i for i in range(stop, -1, -1) if lines[i].startswith("Traceback")), stop)
            bad = lines[start:stop + 1] + bad
        return bad

    # -- outputs --------------------------------------------------------------------------------------
    def output_files(self, outputs: dict) -> list[Path]:
        """Paths on disk of every file listed in a history entry's ``outputs``."""
        roots = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}
        return [roots.get(r["type"], self.output_dir) / r["subfolder"] / r["filename"] for r in output_refs(outputs)]
