#!/usr/bin/env python3
"""Run a real ComfyUI headless for tests and the demo (stdlib only; runs under any python3).

The launcher and HTTP/websocket client are the pack's own ``sweep/comfy.py`` (what the sweep runner's workers
use); this module adds the developer defaults (the host of ``tools/host.py``, peak RSS, UI-format workflows) and
keeps the names the tests import.

Library::

    from comfy_server import ComfyServer
    with ComfyServer() as srv:                    # host from tools/host.py (or COMFYUI_PATH)
        result = srv.run(api_prompt, timeout=600)  # raises PromptRejected / ExecutionFailed
        print(result.files, result.seconds)

``--cpu`` is passed unless the python's torch sees CUDA (``cpu=`` forces it). Each server gets an
isolated ``--base-directory`` (models/, input/, output/, temp/, user/,
custom_nodes/ holding only a link to this pack), loads no other custom node pack
(``--disable-all-custom-nodes --whitelist-custom-nodes comfyui-i2v-motion``; ``isolate=False`` drops those
flags and loads whatever is in its ``custom_nodes/``, as a user's ComfyUI does), listens on a free
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
import sys
import time
from collections.abc import Iterable
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
#: test-only node pack for runs on stand-in weights (``I2VTest_WanTextEncode``, in place of the umT5 text encoder;
#: never part of the pack): tests and the demo pass it as ``extra_packs``
TEST_NODES = REPO / "tests" / "support" / "comfy_nodes" / "i2v_test_standins"

import paths  # noqa: E402  (tools/ is on the path of every importer)

paths.use_pack_root()  # the pack's ``sweep`` package

import procmem  # noqa: E402
from sweep import comfy as _comfy  # noqa: E402  (the pack's one ComfyUI launcher + HTTP client)
from sweep.comfy import (FILE_OUTPUT_KEYS, PACK_NAME, ComfyError, ExecutionFailed, PackImportError,  # noqa: E402,F401
                         PromptRejected, PromptTimeout, RunResult, ServerDied, ServerStartError,
                         _cuda_available, format_node_errors, free_port)
from sweep.comfy import extra_model_paths_yaml as _extra_model_paths_yaml  # noqa: E402,F401


class ComfyServer(_comfy.ComfyServer):
    """``sweep.comfy.ComfyServer`` with the developer defaults: the host from ``tools/host.py`` when no ComfyUI is
    given, peak RSS recorded on stop, UI-format workflows run through ``tools/workflow.py``."""

    def __init__(self, comfy_dir: Path | str | None = None, python: Path | str | None = None, *,
                 extra_model_dirs: Iterable[Path | str] = (), **kw):
        if comfy_dir is None or python is None:
            import host  # tools/host.py

            c, p = host.ensure_host()
            comfy_dir, python = comfy_dir or c, python or p
        super().__init__(comfy_dir, python, extra_model_dirs=extra_model_dirs, **kw)
        self.peak_rss_kb: int | None = None

    def stop(self) -> int | None:
        """Record peak RSS (VmHWM), then stop the server (see ``sweep.comfy.ComfyServer.stop``)."""
        if self.proc is not None:
            self.peak_rss_kb = self.read_peak_rss_kb() or self.peak_rss_kb
        return super().stop()

    def read_peak_rss_kb(self) -> int | None:
        """``VmHWM`` (peak resident set, KiB) of the running server from /proc, or None."""
        if self.proc is None:
            return None
        try:
            peak = procmem.status(self.proc.pid).get("VmHWM")
        except OSError:
            return None
        return None if peak is None else peak // 1024

    def run_workflow(self, workflow: dict, timeout: float = 600) -> RunResult:
        """Run a UI- or API-format workflow (converted against this server's ``/object_info``)."""
        import workflow as wf

        return self.run(wf.to_api(workflow, self.object_info()), timeout=timeout)


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
