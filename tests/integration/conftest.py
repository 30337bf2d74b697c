"""Integration fixtures: one headless ComfyUI server for the integration package (see ``tools/comfy_server.py``).

The server runs the same ComfyUI as the in-process unit tests (``I2V_COMFY_DIR``, set by
``tools/test.py``) with the interpreter running pytest, an isolated base directory under pytest's tmp
dir, and only this pack loaded (plus the test-only stand-in nodes, ``comfy_server.TEST_NODES``). Start time,
peak RSS, stand-in files and per-workflow run times are printed in the terminal summary.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"

import comfy_server  # noqa: E402  (tools/ and tests/ are on pytest's pythonpath)
import workflow  # noqa: E402

STATS: dict = {"runs": {}}


def comfy_dir() -> Path:
    """The ComfyUI folder the root conftest put on ``sys.path``."""
    return Path(sys.modules["folder_paths"].__file__).resolve().parent


@pytest.fixture(scope="package")
def comfy(tmp_path_factory) -> comfy_server.ComfyServer:
    """A started :class:`comfy_server.ComfyServer` shared by the integration tests (stopped after them)."""
    base = tmp_path_factory.mktemp("comfy-server")
    srv = comfy_server.ComfyServer(comfy_dir(), sys.executable, base_dir=base, extra_packs=[comfy_server.TEST_NODES])
    try:
        srv.start(timeout=240)
    except comfy_server.ComfyError as e:
        pytest.fail(f"ComfyUI server did not start: {e}", pytrace=False)
    STATS["start_s"] = srv.start_seconds
    STATS["log"] = str(srv.log_path)
    yield srv
    srv.stop()
    STATS["peak_rss_mib"] = (srv.peak_rss_kb or 0) / 1024


@pytest.fixture(scope="package")
def object_info(comfy) -> dict:
    return comfy.object_info()


def place_input_images(srv: comfy_server.ComfyServer, prompt: dict, wf_path: Path, expect: dict) -> None:
    """Put every picture a ``LoadImage`` node names into the server's input folder: the shipped file
    (``workflow.input_files``) or a synthetic picture of ``expect["input_size"]`` (default 512x320)."""
    w, h = expect.get("input_size", [512, 320])
    for name, src in workflow.input_files(wf_path, prompt, expect).items():
        dest = srv.input_dir / name
        if dest.is_file():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src is not None:
            shutil.copy(src, dest)
        else:
            comfy_server.write_sample_png(dest, w, h)


def make_tiny_models(srv: comfy_server.ComfyServer, models: dict) -> None:
    """Write the stand-ins ``{"<models sub-path>": spec}`` (``support.standins``; cached between runs)."""
    if not models:
        return
    from support import standins

    made = STATS.setdefault("tiny_kwargs", {})
    for rel, spec in models.items():
        if rel in made:
            assert made[rel] == (spec or {}), \
                f"two workflows want different stand-ins under one name {rel}: {made[rel]} vs {spec}"
            continue
        made[rel] = spec or {}
        t0 = time.perf_counter()
        _, generated = standins.make(srv.models_dir, rel, spec)
        STATS.setdefault("tiny_ckpt_s", {})[rel] = (generated, time.perf_counter() - t0)


def pytest_terminal_summary(terminalreporter) -> None:
    tr = terminalreporter
    if STATS.get("sweep"):  # test_sweep.py's timings (its own servers, Ray)
        tr.section("sweep")
        for k, v in STATS["sweep"].items():
            tr.write_line(f"{k}: {v:.1f} s")
    if "start_s" not in STATS:
        return
    tr.section("comfyui server")
    tr.write_line(f"start-up {STATS['start_s']:.1f} s, peak RSS {STATS.get('peak_rss_mib', 0):.0f} MiB, "
                  f"log {STATS['log']}")
    for rel, (gen, s) in STATS.get("tiny_ckpt_s", {}).items():
        tr.write_line(f"stand-in {rel}: " + (f"generated in {gen:.1f} s" if gen else f"from the cache in {s:.1f} s"))
    for name, s in STATS["runs"].items():
        tr.write_line(f"workflow {name}: {s:.1f} s")
