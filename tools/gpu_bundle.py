#!/usr/bin/env python3
"""Prepare what the GPU check carries to the device machine (no network there; ≤ 64 MiB in all).

The device image has Python 3.12, torch (CUDA), torchaudio, transformers, safetensors, einops, aiohttp,
pytest… but not every package ComfyUI 0.33 imports in-process. ``BUNDLE`` lists the ones it lacks (found by
running the GPU-marked tests here with every other package hidden: ``--check``). This script downloads
their cp312 manylinux wheels, unpacks them into one folder without comfy-kitchen's HIP (AMD) library, and
packs that as ``.whl/site-cp312.tar.xz``; it copies ComfyUI 0.33's tarball beside it (``.whl/`` is
gitignored). Then it prints the device command. Versions are those of ``tools/host-constraints-0.33.txt``.

Usage: ``python3 tools/gpu_bundle.py`` (build) · ``python3 tools/gpu_bundle.py --check`` (run the GPU-marked
tests on the 0.33 host with only the device's packages + the bundle importable).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
import host  # noqa: E402

OUT = REPO / ".whl"
BUNDLE = ["av", "comfy-kitchen", "comfy-aimdo", "torchsde", "trampoline"]
DROP = ("comfy_kitchen/backends/hip/",)  # AMD kernels: 59 MB, useless on NVIDIA
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
# Python packages of the device image ('cuda'), as listed in the device tool's KINDS.md (read 2026-11-17)
DEVICE_PACKAGES = (
    "absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi "
    "charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core "
    "cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock "
    "flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx "
    "huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jaxlib jaxtyping jinja2 joblib "
    "kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown "
    "markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch "
    "mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir "
    "onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint "
    "packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil "
    "pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark "
    "pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests "
    "rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece "
    "sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate "
    "tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch "
    "torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer "
    "typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"
).split()


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "tools" / "host-constraints-0.33.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            n, v = line.split("==", 1)
            pins[_norm(n)] = v.strip()
    return pins


def build() -> int:
    pins = _pins()
    cache = host.WHEELS_DIR.parent / "gpu-wheels-cp312"
    cache.mkdir(parents=True, exist_ok=True)
    specs = [f"{n}=={pins[_norm(n)]}" for n in BUNDLE]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(cache), *specs]
    host.log(" ".join(cmd))
    subprocess.run(cmd, check=True)
    shutil.rmtree(OUT, ignore_errors=True)  # only what the device needs travels
    OUT.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        for spec in specs:
            name, ver = spec.split("==")
            whl = [w for w in cache.glob("*.whl") if _norm(w.name.split("-")[0]) == _norm(name) and f"-{ver}-" in w.name]
            if not whl:
                raise SystemExit(f"no wheel for {spec} in {cache}")
            with zipfile.ZipFile(whl[0]) as z:
                for info in z.infolist():
                    if info.is_dir() or info.filename.startswith(DROP):
                        continue
                    z.extract(info, site)
        archive = OUT / "site-cp312.tar.xz"
        host.log(f"packing {archive} (xz; a minute or two)")
        with tarfile.open(archive, "w:xz", preset=6) as t:
            for p in sorted(site.iterdir()):
                t.add(p, arcname=p.name)
    shutil.copy(host.TARBALL_033, OUT / host.TARBALL_033.name)
    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    tracked = int(subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True).stdout.count(b"\0"))
    print(f"{OUT}: {total / 2**20:.1f} MiB ({', '.join(p.name for p in sorted(OUT.iterdir()))}); "
          f"plus the working tree ({tracked} tracked files) must stay under 64 MiB")
    print("device run (carry ['.whl'], timeout_s 600):")
    print(DEVICE_COMMAND)
    return 0


DEVICE_COMMAND = ("mkdir -p /tmp/site && tar xJf .whl/site-cp312.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site "
                  "PYTHONUNBUFFERED=1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv && "
                  "python3 tools/gpu_check.py --tarball .whl/ComfyUI-0.33.0.tar.gz --out $OUT 2>&1 | "
                  "tee $OUT/gpu_check.log")


def check(pytest_args: list[str]) -> int:
    """Run the GPU-marked tests on the 0.33 host with only the device's packages and the bundle importable."""
    comfy, py = host.ensure_host("0.33")
    # the host's huggingface_hub 2.x imports httpx2/httpcore2/truststore; the device's 1.x uses httpx (present)
    allowed = {_norm(p) for p in DEVICE_PACKAGES + BUNDLE + ["httpx2", "httpcore2", "truststore"]}
    code = (
        "import sys, importlib.abc, importlib.metadata, runpy\n"
        f"allowed = {sorted(allowed)!r}\n"
        "pd = importlib.metadata.packages_distributions()\n"
        "blocked = {m for m, ds in pd.items() if not any(d.lower().replace('_', '-') in allowed for d in ds)}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ImportError(f'[device check] {name} is not on the device and not in the bundle')\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['pytest'] + sys.argv[1:]\n"
        "runpy.run_module('pytest', run_name='__main__', alter_sys=True)\n")
    env = dict(os.environ, I2V_COMFY_DIR=str(comfy))
    args = pytest_args or ["-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/unit"]
    return subprocess.run([str(py), "-c", code, *args], cwd=REPO, env=env).returncode


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="run the GPU-marked tests with only device packages + bundle")
    a, rest = ap.parse_known_args(argv)
    return check(rest) if a.check else build()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
