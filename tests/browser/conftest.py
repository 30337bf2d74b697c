"""Browser fixtures: one headless ComfyUI server and one headless Chromium page for the whole package.

Chromium is Debian's ``chromium`` (``tools/host.py --browser`` installs it with apt when missing), driven by the
pinned ``playwright`` in the host venv, which never downloads a browser. Where either is missing the tests skip,
saying why. Screenshots go to ``tests/artifacts/browser-<host>/`` (gitignored); their paths, the console lines the
pack's extension logged and the times are printed in the terminal summary.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"

import comfy_server  # noqa: E402  (tools/ and tests/ are on pytest's pythonpath)

ARTIFACTS = REPO / "tests" / "artifacts" / f"browser-{os.environ.get('I2V_HOST_NAME', 'host')}"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
STATS: dict = {"artifacts": [], "times": {}}


def _chromium() -> str:
    why = os.environ.get("I2V_BROWSER_UNAVAILABLE")
    if why:
        pytest.skip(f"browser tests skipped: {why}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("browser tests skipped: playwright is not installed in this python "
                    "(python3 tools/host.py --host H --browser installs it into the host venv)")
    import host

    path = host.find_chromium()
    if not path:
        pytest.skip("browser tests skipped: no chromium executable (apt-get install -y chromium, or set I2V_CHROMIUM)")
    return path


class Page:
    """A Playwright page on the ComfyUI frontend plus the console lines collected since it opened."""

    def __init__(self, page, srv: comfy_server.ComfyServer):
        self.page = page
        self.srv = srv
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text} @ {(m.location or {}).get('url', '')}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e} @ {getattr(e, 'stack', '')}"))

    def ours(self, kinds: tuple[str, ...] = ("error", "pageerror")) -> list[str]:
        """Console lines of ``kinds`` that come from this pack's extension: logged by its modules, a page error whose
        stack passes through them, or the frontend failing to load them. (The frontend's own errors, such as its
        blocked look-ups of custom node ids on the online registry, are not the extension's.)"""
        ext = f"/extensions/{comfy_server.PACK_NAME}/"
        return [c for c in self.console if c.split(":", 1)[0] in kinds
                and (ext in c.rsplit(" @ ", 1)[-1] or (c.startswith("pageerror") and ext in c)
                     or ("Error loading extension" in c and ext in c))]

    def shot(self, locator_or_page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        locator_or_page.screenshot(path=str(path))
        STATS["artifacts"].append(str(path))
        return path


@pytest.fixture(scope="package")
def chromium_path() -> str:
    return _chromium()


@pytest.fixture(scope="package")
def server(chromium_path, tmp_path_factory):
    """A headless ComfyUI with only this pack (the same interpreter and ComfyUI as the unit tests)."""
    t0 = time.perf_counter()
    srv = comfy_server.ComfyServer(Path(sys.modules["folder_paths"].__file__).resolve().parent, sys.executable,
                                   base_dir=tmp_path_factory.mktemp("comfy-browser"))
    try:
        srv.start(timeout=240)
    except comfy_server.ComfyError as e:
        pytest.fail(f"ComfyUI server did not start: {e}", pytrace=False)
    STATS["times"]["server start"] = time.perf_counter() - t0
    yield srv
    srv.stop()


# a returning user: no first-run template; model files are never present here, so no missing-models dialog
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False}


@pytest.fixture(scope="package")
def ui(server, chromium_path):
    """One Chromium page with the ComfyUI frontend loaded (fresh profile)."""
    from playwright.sync_api import sync_playwright

    t0 = time.perf_counter()
    status, _ = server.post_json("/settings", SETTINGS)
    assert status == 200, f"POST /settings: HTTP {status}"
    profile = tempfile.mkdtemp(prefix="i2v-chromium-")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=chromium_path, headless=True,
                                                    args=CHROMIUM_FLAGS, viewport={"width": 1500, "height": 1000})
        page = Page(ctx.pages[0] if ctx.pages else ctx.new_page(), server)
        page.page.set_default_timeout(30000)
        page.page.goto(server.url)
        page.page.wait_for_function("() => window.app?.graph && window.LiteGraph && app.canvas", timeout=90000)
        page.page.wait_for_function("() => !!LiteGraph.registered_node_types['I2VMotion_LayoutEditor']")
        STATS["times"]["browser + frontend load"] = time.perf_counter() - t0
        yield page
        STATS["ours"] = page.ours(("error", "pageerror", "warning"))
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


def pytest_terminal_summary(terminalreporter) -> None:
    if not STATS["times"]:
        return
    tr = terminalreporter
    tr.section("browser")
    for k, v in STATS["times"].items():
        tr.write_line(f"{k}: {v:.1f} s")
    for line in STATS.get("lines", []):
        tr.write_line(line)
    for a in STATS["artifacts"]:
        tr.write_line(f"screenshot: {a}")
    tr.write_line(f"console errors/warnings from the pack's extension: {len(STATS.get('ours', []))}")
    for line in STATS.get("ours", [])[:10]:
        tr.write_line(f"  {line[:300]}")
