#!/usr/bin/env python3
"""README command 2: ``python3 tools/test.py [--host H] [pytest args]`` — the whole suite on every host.

Hosts (``tools/host.py``): ComfyUI **0.3.75** (the floor, from PyPI) and **0.33** (what users run, from
``../shared/comfyui``; that leg is skipped with a message where ``../shared`` is absent). ``--host 0.3.75``,
``--host 0.33`` or ``I2V_HOSTS=0.33`` pick one; ``COMFYUI_PATH`` runs on that ComfyUI only. Each host's
pytest runs with the host's python from the repository root with ``I2V_COMFY_DIR`` set; the summary lists
passed/skipped/failed per host. Exits non-zero when any host fails; "no tests collected" counts as a failure.
Test-only tools are bootstrapped first (``tools/host.py``): comfy-cli in its own venv, and each host's pinned
extras (0.33: ComfyUI-Manager), from the wheelhouse after the first run, and the browser tests' tools (Debian's
chromium via apt when missing; playwright in the host venv), and the sweep runner's ``sweep/requirements.txt``
(Ray, pandas, pyarrow, OpenCV) in each host venv.
``-m "not integration"`` skips the headless-server tests.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import host  # noqa: E402


def _hosts(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pop ``--host H`` from argv; the hosts to run (names) and the remaining pytest args."""
    args, chosen = [], None
    it = iter(argv)
    for a in it:
        if a == "--host":
            chosen = next(it, None)
        elif a.startswith("--host="):
            chosen = a.split("=", 1)[1]
        else:
            args.append(a)
    chosen = chosen or os.environ.get("I2V_HOSTS")
    if os.environ.get("COMFYUI_PATH"):
        return ["COMFYUI_PATH"], args
    if chosen in (None, "", "all"):
        return list(host.DEFAULT_HOSTS), args
    return [h.strip() for h in chosen.split(",") if h.strip()], args


def _counts(junit: Path) -> dict[str, int]:
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root)
    c = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in c:
            c[k] += int(s.get(k, 0))
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    return c


def _slowest_files(junit: Path, n: int = 6) -> str:
    """The ``n`` test files that took longest (seconds, from the junit report): where CI time goes."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return ""
    per: dict[str, float] = {}
    for case in root.iter("testcase"):
        mod = (case.get("classname") or "?").rsplit(".", 1)[-1] if "." in (case.get("classname") or "") else "?"
        per[mod] = per.get(mod, 0.0) + float(case.get("time") or 0.0)
    top = sorted(per.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:.0f} s" for k, v in top)


def run_on(name: str, pytest_args: list[str], junit: Path) -> tuple[int, float, str]:
    """Build/reuse host ``name`` and run pytest on it; (exit code, seconds, summary)."""
    t0 = time.perf_counter()
    if name != "COMFYUI_PATH":
        ok, why = host.available(name)
        if not ok:
            return 0, 0.0, f"skipped: {why}"
    comfy, py = host.ensure_host(None if name == "COMFYUI_PATH" else name)
    if name != "COMFYUI_PATH" and host.spec_for(name).extras is not None:
        try:  # test-only tools (the 0.33 host: ComfyUI-Manager); the tests that need them report a failure
            host.ensure_extras(name)
        except (SystemExit, subprocess.CalledProcessError) as e:
            print(f"[test] host {name}: installing its extras failed: {e}", file=sys.stderr, flush=True)
    try:  # the sweep runner's optional requirements (Ray, ...); tests/sweep reports a failure without them
        host.ensure_sweep(None if name == "COMFYUI_PATH" else name)
    except (SystemExit, subprocess.CalledProcessError) as e:
        print(f"[test] host {name}: installing sweep/requirements.txt failed: {e}", file=sys.stderr, flush=True)
    os.environ.pop("I2V_BROWSER_UNAVAILABLE", None)
    try:  # browser tests: system chromium + playwright in the host venv; tests/browser skips, saying why, without
        _py, chromium = host.ensure_browser(None if name == "COMFYUI_PATH" else name)
        os.environ["I2V_CHROMIUM"] = chromium
    except (SystemExit, subprocess.CalledProcessError) as e:
        os.environ["I2V_BROWSER_UNAVAILABLE"] = str(e) or type(e).__name__
        print(f"[test] host {name}: browser tests unavailable: {e}", file=sys.stderr, flush=True)
    print(f"[test] host {name} ready in {time.perf_counter() - t0:.1f} s: {comfy} ({py})", file=sys.stderr, flush=True)
    for mod in ("torch", "pytest"):
        if subprocess.run([str(py), "-c", f"import {mod}"], capture_output=True).returncode != 0:
            hint = " (with COMFYUI_PATH, set COMFYUI_PYTHON to the python that runs that ComfyUI)" \
                if mod == "torch" else f" (install it: {py} -m pip install pytest)"
            return 2, time.perf_counter() - t0, f"{py} cannot import {mod}{hint}"
    env = dict(os.environ, I2V_COMFY_DIR=str(comfy), I2V_HOST_NAME=name)
    rc = subprocess.run([str(py), "-m", "pytest", f"--junit-xml={junit}", *pytest_args], cwd=REPO, env=env).returncode
    if rc == 5:
        print(f"[test] {name}: pytest collected no tests: failing", file=sys.stderr)
        rc = 1
    c = _counts(junit)
    if slow := _slowest_files(junit):
        print(f"[test] host {name}: slowest files: {slow}", file=sys.stderr, flush=True)
    summary = (f"{c['passed']} passed, {c['skipped']} skipped, {c['failures'] + c['errors']} failed"
               if c else f"exit code {rc}")
    return rc, time.perf_counter() - t0, summary


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    names, pytest_args = _hosts(argv)
    try:  # comfy-cli (the Registry's validator) in its own venv; tests/unit/test_registry.py reports a failure
        host.ensure_comfy_cli()
    except (SystemExit, subprocess.CalledProcessError) as e:
        print(f"[test] building comfy-cli failed: {e}", file=sys.stderr, flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="i2v-test-") as tmp:
        for name in names:
            print(f"[test] ===== ComfyUI host {name} =====", file=sys.stderr, flush=True)
            rc, secs, summary = run_on(name, pytest_args, Path(tmp) / f"{name.replace('/', '_')}.xml")
            results.append((name, rc, secs, summary))
            if summary.startswith("skipped:"):
                print(f"[test] host {name} {summary}", file=sys.stderr, flush=True)
    rc = max((r[1] for r in results), default=0)
    print("[test] ----- summary -----", file=sys.stderr)
    for name, code, secs, summary in results:
        print(f"[test] host {name:<8} {summary} ({secs:.0f} s){'' if code == 0 else f'  FAILED (exit {code})'}",
              file=sys.stderr)
    print(f"[test] finished in {time.perf_counter() - t0:.1f} s with exit code {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
