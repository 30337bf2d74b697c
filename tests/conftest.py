"""Test setup: a real ComfyUI in-process (``tools/comfy_inproc.py``; CPU unless ``I2V_DEVICE`` says
otherwise), the pack importable as ``i2v_motion``.

``tools/test.py`` runs pytest with the host's python and sets ``I2V_COMFY_DIR``; run directly, the
host is found (or built) by ``tools/host.py``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
VECTORS = SHARED / "vectors"


import comfy_inproc  # noqa: E402  (tools/ and tests/ are on pytest's pythonpath: pyproject.toml)

# I2V_DEVICE: cpu (default) | cuda | auto; I2V_DYNAMIC_VRAM=1 turns dynamic VRAM on as main.py does (the GPU check)
SETUP = comfy_inproc.bootstrap(os.environ.get("I2V_DEVICE", "cpu"),
                               dynamic_vram=os.environ.get("I2V_DYNAMIC_VRAM", "0") == "1")
COMFY_DIR = Path(SETUP["comfy_dir"])


class _OurWarnings(logging.Handler):
    """Counts WARNING+ records from the pack's loggers and ComfyUI's moved-name warnings, for the summary."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.name.startswith("i2v_motion") or "has moved" in msg:
            self.records.append(f"{record.name}: {msg[:160]}")


OUR_WARNINGS = _OurWarnings()
logging.getLogger().addHandler(OUR_WARNINGS)


def pytest_terminal_summary(terminalreporter) -> None:
    recs = OUR_WARNINGS.records
    tr = terminalreporter
    tr.section("warnings logged by the pack (or about moved ComfyUI names)")
    moved = sum("has moved" in r for r in recs)
    tr.write_line(f"{len(recs)} record(s); {moved} about moved ComfyUI names"
                  + ("" if not recs else " — most are bad-input tests checking their warning:"))
    seen: dict[str, int] = {}
    for r in recs:
        seen[r] = seen.get(r, 0) + 1
    for r, n in sorted(seen.items(), key=lambda x: -x[1])[:15]:
        tr.write_line(f"  {n}× {r}")


def pytest_report_header(config) -> str:
    return (f"ComfyUI {SETUP['comfy_version']} at {SETUP['comfy_dir']}; device {SETUP['device']}, "
            f"dynamic VRAM {'on' if SETUP['dynamic_vram'] else 'off'}")


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The official parity vectors in ../shared/vectors (skip with a clear message where absent)."""
    if not (VECTORS / "dc_tiny_a.safetensors").is_file():
        pytest.skip(f"parity vectors not found at {VECTORS} (../shared is only beside developer/CI checkouts)")
    return VECTORS


@pytest.fixture(scope="session")
def tiny_dc_path(tmp_path_factory) -> Path:
    """A tiny random-weight DynamiCrafter-512 checkpoint with UNet, Resampler, VAE, CLIP and CLIP vision."""
    from support.fixtures import make_tiny_checkpoint

    return Path(make_tiny_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "dc_tiny_512.safetensors")))


@pytest.fixture(scope="session")
def tiny_dc(tiny_dc_path):
    """The tiny checkpoint loaded through the pack's loader (shared; tests must not mutate it)."""
    from i2v_motion.backbones.loader import load_dynamicrafter

    return load_dynamicrafter(str(tiny_dc_path))
