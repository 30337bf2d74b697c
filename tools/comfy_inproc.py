"""Start a real ComfyUI in this process (as ``main.py`` does for what the pack touches) and import the pack.

Used by the tests (``tests/conftest.py``), the benchmarks and the GPU check, so every in-process use of
ComfyUI is set up one way:

- the ComfyUI tree: ``I2V_COMFY_DIR``, else the default host of ``tools/host.py``;
- the device: ``cpu`` (``--cpu``), ``cuda`` or ``auto`` (CUDA when torch sees it);
- dynamic VRAM (ComfyUI 0.33+, NVIDIA, comfy-aimdo): ``True`` turns it on exactly as ``main.py`` does
  (``comfy_aimdo.control.init`` before ComfyUI touches CUDA, ``init_devices`` after, then
  ``CoreModelPatcher = ModelPatcherDynamic`` and ``memory_management.aimdo_enabled``); ``False`` passes
  ``--disable-dynamic-vram``; ``None`` follows ComfyUI's own default (on where main.py would turn it on);
- the pack is imported from this checkout as the package ``i2v_motion`` (and ``tests/support`` as ``support``).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE: dict = {}


def comfy_dir() -> Path:
    if os.environ.get("I2V_COMFY_DIR"):
        return Path(os.environ["I2V_COMFY_DIR"]).resolve()
    import host

    return host.ensure_host()[0]


def import_pack():
    """The pack, importable as ``i2v_motion`` (once), and the test support package ``support`` beside it."""
    import paths

    paths.use_support()
    if "i2v_motion" in sys.modules:
        return sys.modules["i2v_motion"]
    spec = importlib.util.spec_from_file_location("i2v_motion", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["i2v_motion"] = mod
    spec.loader.exec_module(mod)
    return mod


def _init_aimdo_control(args) -> bool:
    try:
        import comfy_aimdo.control
    except ImportError:
        return False
    headroom = None if getattr(args, "reserve_vram", None) is None else int(args.reserve_vram * 1024 ** 3)
    for kw in ({"simple_vram_headroom": headroom, "nvml_pressure": not getattr(args, "disable_nvml_pressure", False)},
               {"simple_vram_headroom": headroom}, {}):
        try:
            comfy_aimdo.control.init(**kw)
            return True
        except TypeError:  # older aimdo protocols take fewer arguments
            continue
        except Exception as e:  # no usable GPU / driver: ComfyUI falls back to the legacy patcher too
            logging.warning("comfy-aimdo did not initialise: %s", e)
            return False
    return False


def _init_aimdo_devices(args, mm) -> bool:
    import comfy_aimdo.control

    devices = mm.get_all_torch_devices()
    try:
        ok = comfy_aimdo.control.init_devices((d.index, int(getattr(args, "vram_headroom", 0) * 1024 ** 3))
                                              for d in devices)
    except TypeError:
        ok = comfy_aimdo.control.init_devices(d.index for d in devices)
    return bool(ok)


def bootstrap(device: str = "cpu", dynamic_vram: bool | None = False, threads: int | None = None) -> dict:
    """Import ComfyUI (+ the pack) in this process; returns what was set up (idempotent)."""
    if STATE:
        return STATE
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    cdir = comfy_dir()
    if str(cdir) not in sys.path:
        sys.path.insert(0, str(cdir))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    args = comfy.cli_args.args
    args.cpu = device == "cpu"
    has_dynamic = hasattr(comfy.cli_args, "enables_dynamic_vram")
    if dynamic_vram is False and hasattr(args, "disable_dynamic_vram"):
        args.disable_dynamic_vram = True
    want_dynamic = has_dynamic and device != "cpu" and (dynamic_vram or (dynamic_vram is None and
                                                                         comfy.cli_args.enables_dynamic_vram()))
    # as main.py: aimdo's control is initialised before torch touches CUDA
    control = _init_aimdo_control(args) if want_dynamic else False
    import torch

    if threads:
        torch.set_num_threads(threads)
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    args.cpu = cpu
    want_dynamic = want_dynamic and not cpu
    import comfy.model_management as mm
    import comfy.model_patcher

    enabled = False
    if want_dynamic and control and hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        if _init_aimdo_devices(args, mm):
            comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
            import comfy.memory_management

            comfy.memory_management.aimdo_enabled = True
            enabled = True
    if want_dynamic and not enabled:
        logging.warning("dynamic VRAM was asked for but comfy-aimdo did not initialise; legacy ModelPatcher in use")
    import folder_paths  # noqa: F401
    import nodes  # noqa: F401  (ComfyUI's own top-level ``nodes``, bound before anything on the path could shadow it)

    import_pack()
    STATE.update(comfy_dir=str(cdir), device=str(mm.get_torch_device()), dynamic_vram=enabled,
                 comfy_version=_version(cdir))
    return STATE


def _version(cdir: Path) -> str:
    try:
        text = (cdir / "comfyui_version.py").read_text()
        return text.split("=", 1)[1].strip().strip("\"'")
    except (OSError, IndexError):
        return "unknown"
