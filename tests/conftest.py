"""Test setup: a real ComfyUI in-process (CPU), the pack importable as ``i2v_motion``.

``tools/test.py`` runs pytest with the host's python and sets ``I2V_COMFY_DIR``; run directly, the
host is found (or built) by ``tools/host.py``.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
VECTORS = SHARED / "vectors"


def _comfy_dir() -> Path:
    if os.environ.get("I2V_COMFY_DIR"):
        return Path(os.environ["I2V_COMFY_DIR"])
    sys.path.insert(0, str(REPO / "tools"))
    import host  # noqa: E402

    return host.ensure_host()[0]


COMFY_DIR = _comfy_dir()
if str(COMFY_DIR) not in sys.path:
    sys.path.insert(0, str(COMFY_DIR))

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing(False)
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True
import comfy.model_management  # noqa: E402,F401
import folder_paths  # noqa: E402,F401


def _import_pack():
    if "i2v_motion" in sys.modules:
        return sys.modules["i2v_motion"]
    spec = importlib.util.spec_from_file_location(
        "i2v_motion", REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["i2v_motion"] = mod
    spec.loader.exec_module(mod)
    return mod


_import_pack()


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The official parity vectors in ../shared/vectors (skip with a clear message where absent)."""
    if not (VECTORS / "dc_tiny_a.safetensors").is_file():
        pytest.skip(f"parity vectors not found at {VECTORS} (../shared is only beside developer/CI checkouts)")
    return VECTORS


@pytest.fixture(scope="session")
def tiny_dc_path(tmp_path_factory) -> Path:
    """A tiny random-weight DynamiCrafter-512 checkpoint with UNet, Resampler, VAE, CLIP and CLIP vision."""
    from i2v_motion.backbones.fixtures import make_tiny_checkpoint

    return Path(make_tiny_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "dc_tiny_512.safetensors")))


@pytest.fixture(scope="session")
def tiny_dc(tiny_dc_path):
    """The tiny checkpoint loaded through the pack's loader (shared; tests must not mutate it)."""
    from i2v_motion.backbones.loader import load_dynamicrafter

    return load_dynamicrafter(str(tiny_dc_path))
