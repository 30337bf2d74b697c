#!/usr/bin/env python3
"""README command 2: ``python3 tools/test.py [pytest args]``.

Builds (or reuses) the ComfyUI host with ``tools/host.py``, then runs pytest with the host's python from
the repository root with ``I2V_COMFY_DIR`` set. Exits with pytest's code; "no tests collected" (5)
counts as a failure. ``-m "not integration"`` skips the headless-server tests.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import host  # noqa: E402


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    comfy, py = host.ensure_host()
    print(f"[test] host ready in {time.perf_counter() - t0:.1f} s: {comfy} ({py})", file=sys.stderr, flush=True)
    for mod in ("torch", "pytest"):
        if subprocess.run([str(py), "-c", f"import {mod}"], capture_output=True).returncode != 0:
            hint = " (with COMFYUI_PATH, set COMFYUI_PYTHON to the python that runs that ComfyUI)" \
                if mod == "torch" else f" (install it: {py} -m pip install pytest)"
            print(f"[test] {py} cannot import {mod}{hint}", file=sys.stderr)
            return 2
    env = dict(os.environ, I2V_COMFY_DIR=str(comfy))
    rc = subprocess.run([str(py), "-m", "pytest", *argv], cwd=REPO, env=env).returncode
    if rc == 5:
        print("[test] pytest collected no tests: failing", file=sys.stderr)
        rc = 1
    print(f"[test] finished in {time.perf_counter() - t0:.1f} s with exit code {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
