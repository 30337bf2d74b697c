#!/usr/bin/env python3
"""Run a real ComfyUI headless for tests and the demo (stdlib only; runs under any python3).

Library::

    from comfy_server import ComfyServer
    with ComfyServer() as srv:                    # host from tools/host.py (or COMFYUI_PATH)
        result = srv.run(api_prompt, timeout=600)  # raises PromptRejected / ExecutionFailed
        print(result.files, result.seconds)

``--cpu`` is passed unless the python's torch sees CUDA (``cpu=`` forces it). Each server gets an
isolated ``--base-directory`` (models/, input/, output/, temp/, user/,
custom_nodes/ holding only a link to this pack), loads no other custom node pack
(``--disable-all-custom-nodes --whitelist-custom-nodes comfyui-i2v-motion``; ``isolate=False`` drops those
flags and loads whatever is in its ``custom_nodes/``, as a user's ComfyUI does) except the ``extra_packs`` it is
given — linked and whitelisted beside this one, e.g. :data:`TEST_NODES` (the test-only stand-in nodes that tiny runs
of Wan workflows use in place of the umT5 text encoder; never part of the pack) — listens on a free
127.0.0.1 port and logs to ``<base>/comfyui.log``. ``extra_model_dirs`` adds ComfyUI-style model roots
(e.g. the host's own ``ComfyUI/models``) through a generated ``extra_model_paths.yaml``.

CLI::

    python3 tools/comfy_server.py serve [--base-dir D] [--port P]      # run until Ctrl-C
    python3 tools/comfy_server.py run WORKFLOW.json [--base-dir D]     # UI or API format; LoadImage
                                                                       # files: shipped or synthetic
    python3 tools/comfy_server.py convert WORKFLOW.json                # print the API-format prompt
"""
from __future__ import annotations

import argparse
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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
PACK_NAME = "comfyui-i2v-motion"
#: test-only node pack for runs on stand-in weights (``I2VTest_WanTextEncode``); tests and the demo load it
TEST_NODES = REPO / "tests" / "support" / "comfy_nodes" / "i2v_test_standins"
import procmem  # noqa: E402  (tools/ is on the path of every importer: paths.py)

#: output keys of ``/history`` entries that list files ({filename, subfolder, type})
FILE_OUTPUT_KEYS = ("images", "gifs", "videos", "video", "audio", "files", "3d")


class ComfyError(RuntimeError):
    """Base class for every failure reported by this module."""


class ServerStartError(ComfyError):
    """The server exited or never answered; ``log_tail`` holds the end of its log."""


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
    """A finished prompt: its id, ``/history`` outputs, the output files on disk and the wall time."""

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


class ComfyServer:
    """A headless ComfyUI subprocess with an isolated base directory; use as a context manager."""

    def __init__(self, comfy_dir: Path | str | None = None, python: Path | str | None = None, *,
                 base_dir: Path | str | None = None, port: int | None = None,
                 extra_model_dirs: Iterable[Path | str] = (), extra_args: Iterable[str] = (),
                 load_pack: bool = True, pack_dir: Path | str = REPO, env: dict | None = None,
                 cpu: bool | None = None, isolate: bool = True, extra_packs: Iterable[Path | str] = ()):
        if comfy_dir is None or python is None:
            import host  # tools/host.py

            c, p = host.ensure_host()
            comfy_dir, python = comfy_dir or c, python or p
        self.comfy_dir = Path(comfy_dir).resolve()
        self.python = Path(python)
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
        self.extra_packs = [Path(p).resolve() for p in extra_packs]
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base_dir / "comfyui.log"
        self.start_seconds: float | None = None
        self.peak_rss_kb: int | None = None
        self._object_info: dict | None = None
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
            yaml.write_text(_extra_model_paths_yaml(self.extra_model_dirs))
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
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
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
        """Record peak RSS (VmHWM), then SIGTERM the server (SIGKILL after 15 s). Returns its exit code."""
        if self.proc is None:
            return None
        self.peak_rss_kb = self.read_peak_rss_kb() or self.peak_rss_kb
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

    def read_peak_rss_kb(self) -> int | None:
        """``VmHWM`` (peak resident set, KiB) of the running server from /proc, or None."""
        if self.proc is None:
            return None
        try:
            peak = procmem.status(self.proc.pid).get("VmHWM")
        except OSError:
            return None
        return None if peak is None else peak // 1024

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
        text = self.log_text()
        lines = text.splitlines()
        bad = [ln for ln in lines if "IMPORT FAILED" in ln and name in ln]
        if not bad:
            return []
        stop = next((i for i, ln in enumerate(lines) if ("Cannot import" in ln or "Error while calling" in ln)
                     and name in ln), None)
        if stop is not None:
            start = next((i for i in range(stop, -1, -1) if lines[i].startswith("Traceback")), stop)
            bad = lines[start:stop + 1] + bad
        return bad

    # -- HTTP -----------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
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

    # -- prompts --------------------------------------------------------------------------------------
    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        """``POST /prompt``; returns the prompt id or raises :class:`PromptRejected` with readable errors."""
        status, resp = self.post_json("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
        if status != 200 or not isinstance(resp, dict) or "prompt_id" not in resp:
            error = resp.get("error") if isinstance(resp, dict) else resp
            node_errors = resp.get("node_errors", {}) if isinstance(resp, dict) else {}
            raise PromptRejected(f"POST /prompt rejected the graph (HTTP {status}):\n"
                                 + format_node_errors(error, node_errors, prompt), error, node_errors)
        return resp["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600, poll: float = 0.25) -> dict:
        """Poll ``/history/{id}`` until done; raise :class:`ExecutionFailed` or :class:`PromptTimeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                hist = self.get_json(f"/history/{prompt_id}")
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.alive():
                    raise
                hist = {}
            if prompt_id in hist:
                entry = hist[prompt_id]
                status = entry.get("status", {})
                if status.get("status_str") == "error" or not status.get("completed", True):
                    details = {}
                    for kind, msg in status.get("messages", []):
                        if kind in ("execution_error", "execution_interrupted"):
                            details = dict(msg, event=kind)
                    text = (f"node {details.get('node_id')} ({details.get('node_type')}): "
                            f"{details.get('exception_type', details.get('event', 'error'))}: "
                            f"{details.get('exception_message', '')}".rstrip())
                    raise ExecutionFailed(f"prompt {prompt_id} failed: {text}", details)
                return entry
            if not self.alive():
                raise ServerStartError(f"ComfyUI died while running prompt {prompt_id}; log tail:\n"
                                       + self.log_tail())
            if time.monotonic() > deadline:
                self.post_json("/interrupt", {})
                raise PromptTimeout(f"prompt {prompt_id} not finished after {timeout:.0f} s (interrupted)")
            time.sleep(poll)

    def output_files(self, outputs: dict) -> list[Path]:
        """Paths on disk of every file listed in a history entry's ``outputs``."""
        roots = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}
        files = []
        for node_out in outputs.values():
            for key in FILE_OUTPUT_KEYS:
                for item in node_out.get(key, []) or []:
                    if isinstance(item, dict) and "filename" in item:
                        root = roots.get(item.get("type", "output"), self.output_dir)
                        files.append(root / item.get("subfolder", "") / item["filename"])
        return files

    def run(self, prompt: dict, timeout: float = 600) -> RunResult:
        """Queue an API-format prompt, wait for it and collect its output files."""
        t0 = time.perf_counter()
        pid = self.queue(prompt)
        entry = self.wait(pid, timeout=timeout)
        outputs = entry.get("outputs", {})
        return RunResult(pid, outputs, self.output_files(outputs), time.perf_counter() - t0, entry)

    def run_workflow(self, workflow: dict, timeout: float = 600) -> RunResult:
        """Run a UI- or API-format workflow (converted against this server's ``/object_info``)."""
        import workflow as wf

        return self.run(wf.to_api(workflow, self.object_info()), timeout=timeout)

    def cleanup(self) -> None:
        """Stop, and delete the base directory if this object created it."""
        self.stop()
        if self._own_base:
            import shutil

            shutil.rmtree(self.base_dir, ignore_errors=True)


def _cuda_available(python: Path) -> bool:
    """Whether ``python``'s torch sees a CUDA device (only asked when an NVIDIA driver is present)."""
    if not Path("/dev/nvidiactl").exists():
        return False
    r = subprocess.run([str(python), "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                       capture_output=True)
    return r.returncode == 0


def write_sample_png(path: Path | str, width: int = 512, height: int = 320) -> Path:
    """Write a deterministic RGB test picture (sky gradient, ground, a sun, a box) as PNG, stdlib only."""
    import struct
    import zlib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = bytearray()
    cx, cy, r2 = width * 0.7, height * 0.3, (min(width, height) * 0.12) ** 2
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            if (x - cx) ** 2 + (y - cy) ** 2 < r2:
                px = (250, 210, 60)
            elif 0.25 * width < x < 0.42 * width and 0.45 * height < y < 0.8 * height:
                px = (170, 40, 40)
            elif y > 0.65 * height:
                g = int(90 + 60 * (y - 0.65 * height) / (0.35 * height))
                px = (40, g, 50 + (x * 30) // width)
            else:
                t = y / (0.65 * height)
                px = (int(70 + 100 * t), int(120 + 90 * t), 235)
            rows += bytes(px)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b""))
    path.write_bytes(png)
    return path


def _extra_model_paths_yaml(roots: list[Path]) -> str:
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


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "run", "convert"):
        p = sub.add_parser(name)
        p.add_argument("--base-dir", type=Path)
        p.add_argument("--port", type=int)
        p.add_argument("--models", type=Path, action="append", default=[], help="extra ComfyUI models root")
        if name != "serve":
            p.add_argument("workflow", type=Path)
            p.add_argument("--timeout", type=float, default=1800)
    a = ap.parse_args(argv)
    import workflow as wf

    srv = ComfyServer(base_dir=a.base_dir, port=a.port, extra_model_dirs=a.models)
    try:
        srv.start()
        print(f"ComfyUI up at {srv.url} in {srv.start_seconds:.1f} s (base {srv.base_dir}, log {srv.log_path})",
              file=sys.stderr)
        if a.cmd == "serve":
            try:
                while srv.alive():
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
            return 0
        prompt = wf.to_api(wf.load(a.workflow), srv.object_info())
        if a.cmd == "convert":
            print(json.dumps(prompt, indent=2))
            return 0
        for name, src in wf.input_files(a.workflow, prompt, wf.load_expect(a.workflow)).items():
            dest = srv.input_dir / name
            if not dest.is_file():
                import shutil

                shutil.copy(src, dest) if src else write_sample_png(dest)
        try:
            res = srv.run(prompt, timeout=a.timeout)
        except ComfyError as e:
            print(e, file=sys.stderr)
            return 1
        for f in res.files:
            print(f)
        print(f"done in {res.seconds:.1f} s", file=sys.stderr)
        return 0
    finally:
        srv.stop()
        if srv.peak_rss_kb:
            print(f"server peak RSS {srv.peak_rss_kb / 1024:.0f} MiB", file=sys.stderr)
        if a.base_dir is None and a.cmd != "run":  # keep a run's outputs
            srv.cleanup()


if __name__ == "__main__":
    sys.exit(_main())
