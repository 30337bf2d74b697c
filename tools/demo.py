#!/usr/bin/env python3
"""README command 1: ``python3 tools/demo.py`` — image to video with DynamiCrafter in a real ComfyUI.

1. builds (or reuses) the ComfyUI host (``tools/host.py``; ``COMFYUI_PATH`` to use your own ComfyUI);
2. finds a real DynamiCrafter checkpoint in that ComfyUI's ``models/checkpoints`` or
   ``models/diffusion_models`` — or, failing that, generates a tiny random-weight one (the pipeline runs
   end to end, but the video is noise: say so, don't pretend);
3. puts a sample picture in the server's input folder (or ``--image``);
4. starts a headless server and runs ``example_workflows/dynamicrafter_i2v.json`` over its HTTP API;
5. prints the animated WEBP's path (also copied to ``output/``) and the timings.

``--workflow JSON`` runs any example (or other) workflow the same way: when every model file its loaders name is
in the host's ``models/`` it runs on them; otherwise it runs on stand-ins — exactly the files of the workflow's
sidecar ``tiny_models`` (``workflow.tiny_models``, made by ``support.standins``, cached between runs) in a separate
base folder (``.host/demo-tiny``), at the sidecar's tiny settings and with its node swaps (the Wan text encoder
becomes the test-only ``I2VTest_WanTextEncode``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

import comfy_server  # noqa: E402
import paths  # noqa: E402
import host  # noqa: E402
import workflow  # noqa: E402

WORKFLOW = REPO / "example_workflows" / "dynamicrafter_i2v.json"
LOADER = "I2VMotion_LoadDynamiCrafter"
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "unet")
EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")

_STANDIN_SCRIPT = ("import sys, json, comfy_inproc; comfy_inproc.bootstrap('cpu', dynamic_vram=False); "
                   "from support import standins; "
                   "print(json.dumps(standins.make_all(sys.argv[1], json.loads(sys.argv[2]))))")
FOLDER_ALIASES = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip")}


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _safetensors_keys(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > 100 << 20:
                return []
            return list(json.loads(f.read(n)))
    except (OSError, ValueError, struct.error):
        return []


def _pickle_mentions(path: Path, needle: bytes) -> bool:
    """Whether a zip-format torch file's pickle (read as bytes, never unpickled) contains ``needle``."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
            return pkl is not None and z.getinfo(pkl).file_size < (256 << 20) and needle in z.read(pkl)
    except (OSError, zipfile.BadZipFile):
        return False


def looks_like_dynamicrafter(path: Path) -> bool:
    """By name (``*dynamicrafter*``), or by the official image projector's keys (``image_proj_model.``)
    in a safetensors header or a zip-format ``.ckpt``/``.pt`` pickle (so the official ``model.ckpt`` counts)."""
    if "dynamicrafter" in path.name.lower():
        return True
    if path.suffix.lower() in (".safetensors", ".sft"):
        return any(k.startswith(("image_proj_model.", "model.image_proj_model.")) for k in _safetensors_keys(path))
    return _pickle_mentions(path, b"image_proj_model.")


def find_real_checkpoints(models_roots: list[Path]) -> list[tuple[Path, str]]:
    """``(file, name relative to its model folder)`` of every DynamiCrafter-looking checkpoint found."""
    found = []
    for root in models_roots:
        for folder in MODEL_FOLDERS:
            d = root / folder
            if not d.is_dir():
                continue
            for f in sorted(d.rglob("*")):
                big = f.suffix.lower() in EXTS and f.is_file() and f.stat().st_size > 100 << 20
                if big and looks_like_dynamicrafter(f):
                    found.append((f, f.relative_to(d).as_posix()))
    return found


def find_file(rel: str, roots: list[Path]) -> Path | None:
    """``<folder>/<name>`` in one of the ComfyUI models roots (with core's folder aliases: unet, clip)."""
    folder, _, name = rel.partition("/")
    for root in roots:
        for alias in FOLDER_ALIASES.get(folder, (folder,)):
            if (root / alias / name).is_file():
                return root / alias / name
    return None


def make_standins(comfy: Path, python: Path, models_dir: Path, models: dict[str, dict]) -> float:
    """Write the stand-ins (``support.standins``, cached) under the host python; returns the seconds spent."""
    if not (paths.SUPPORT / "standins.py").is_file():
        raise SystemExit(f"[demo] model files are missing and {paths.SUPPORT / 'standins.py'} (the stand-in maker) "
                         "is not there; put the workflow's models in the host's models folder")
    t0 = time.perf_counter()
    paths.use_support()
    from support import standins

    made, todo = {}, {}
    for rel, spec in models.items():
        try:  # a cached file is only linked: no need to start torch and ComfyUI for it
            made[rel] = standins.make(models_dir, rel, spec, generate=False)[1]
        except standins.NotCached:
            todo[rel] = spec
    if todo:
        env = dict(os.environ, I2V_COMFY_DIR=str(comfy), PYTHONPATH=paths.pythonpath())
        out = subprocess.run([str(python), "-c", _STANDIN_SCRIPT, str(models_dir), json.dumps(todo)], check=True,
                             env=env, stdout=subprocess.PIPE, text=True).stdout
        made.update(json.loads(out.strip().splitlines()[-1]))
    for rel, secs in made.items():
        say(f"stand-in {rel}: " + (f"generated in {secs:.1f} s" if secs else "from the cache"))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", help="checkpoint file (path) or name inside models/checkpoints to use")
    ap.add_argument("--tiny", action="store_true",
                    help="run on tiny random-weight stand-ins even if the real model files exist")
    ap.add_argument("--image", type=Path, help="input picture (default: a generated sample)")
    ap.add_argument("--steps", type=int, help="override the sampler's steps (a real model on CPU is slow)")
    ap.add_argument("--full", action="store_true",
                    help="with stand-ins, keep the workflow's own size/steps (slow on CPU) instead of "
                         "the CI settings from its .expect.json")
    ap.add_argument("--workflow", type=Path, default=WORKFLOW, help="UI- or API-format workflow to run")
    ap.add_argument("--timeout", type=float, default=6 * 3600, help="seconds allowed for the run")
    ap.add_argument("--host", default=None,
                    help="ComfyUI host: 0.3.75 (default, from PyPI), 0.33 (needs ../shared), or a ComfyUI tree / "
                         ".tar.gz; COMFYUI_PATH uses your own ComfyUI")
    a = ap.parse_args(argv)
    wf_path = a.workflow.resolve()
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    if not wf_path.is_file():
        say(f"{wf_path} is missing: nothing to run")
        return 2
    t0 = time.perf_counter()
    comfy, python = host.ensure_host(a.host)
    times["host"] = time.perf_counter() - t0
    say(f"ComfyUI host: {comfy} (python {python})")

    wf = workflow.load(wf_path)
    expect = workflow.load_expect(wf_path)
    needed = workflow.model_files_ui(wf)
    has_dc = (bool(workflow.find_nodes(wf.get("prompt", wf), LOADER)) if workflow.is_api_format(wf)
              else any(n.get("type") == LOADER for n in wf.get("nodes", [])))
    roots = [r for r in [comfy / "models"] if r.is_dir()]
    ckpt_name, tiny = None, bool(a.tiny)
    if a.ckpt and not has_dc:
        say(f"--ckpt names a DynamiCrafter checkpoint, but {wf_path.name} has no {LOADER}: ignored")
    if has_dc and a.ckpt:
        p = Path(a.ckpt).expanduser()
        if p.is_file():
            dest = host.HOST_DIR / "demo" / "models" / "checkpoints" / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                dest.symlink_to(p.resolve())
            ckpt_name = p.name
        else:
            ckpt_name = a.ckpt
    elif has_dc and not a.tiny:
        real = find_real_checkpoints(roots)
        for f, name in real:
            say(f"found DynamiCrafter checkpoint {f}")
        if real:  # the example workflow is 512x320: prefer a 512 model, not an interpolation one
            real.sort(key=lambda fn: ("512" not in fn[1], "interp" in fn[1].lower(), fn[1]))
            ckpt_name = real[0][1]
        else:
            say("no real DynamiCrafter checkpoint found in " + ", ".join(
                str(r / f) for r in roots for f in ("checkpoints", "diffusion_models")))
            tiny = True
    elif not a.tiny:
        missing = [rel for rel in needed if find_file(rel, roots) is None]
        if missing:
            say(f"{wf_path.name} needs model files missing from {', '.join(map(str, roots)) or 'the host'}: "
                + ", ".join(missing))
            tiny = True
    if tiny:
        say("using tiny random-weight stand-ins: the run exercises the whole pipeline, the video is noise")
    # stand-ins live in their own base folder, without the real models roots, so neither can shadow the other
    base = host.HOST_DIR / ("demo-tiny" if tiny else "demo")
    srv = comfy_server.ComfyServer(comfy, python, base_dir=base, extra_model_dirs=[] if tiny else roots,
                                   extra_packs=[comfy_server.TEST_NODES] if tiny else [])
    try:
        srv.start(timeout=300)
        times["server_start"] = srv.start_seconds or 0.0
        say(f"server up at {srv.url} in {srv.start_seconds:.1f} s (log {srv.log_path})")
        info = srv.object_info()
        try:
            prompt = workflow.to_api(wf, info)
        except workflow.WorkflowError as e:
            say(f"{wf_path.name} cannot be converted: {e}")
            return 1
        if ckpt_name is not None:
            options = info[LOADER]["input"]["required"]["ckpt_name"]
            options = options[0] if isinstance(options[0], list) else options[1].get("options", [])
            if ckpt_name not in options:
                say(f"{ckpt_name!r} is not among the loader's checkpoints {options}")
                return 1
            workflow.set_input(prompt, LOADER, "ckpt_name", ckpt_name)
        if tiny:
            if not a.full and expect.get("tiny_overrides"):
                workflow.apply_overrides(prompt, expect["tiny_overrides"])
                say(f"stand-ins: running at the small CI settings of {wf_path.stem}.expect.json "
                    "(--full: the workflow's own size and steps; slow on CPU)")
            swaps = workflow.tiny_replacements(prompt, expect)
            dropped = workflow.apply_replacements(prompt, swaps)
            if swaps:
                say(f"stand-in run: node(s) {', '.join(swaps)} swapped for "
                    f"{', '.join(sorted({s['class_type'] for s in swaps.values()}))}"
                    + (f"; unused node(s) {', '.join(dropped)} dropped" if dropped else ""))
            models = workflow.tiny_models(prompt, expect)
            lacking = sorted(set(workflow.model_files(prompt)) - set(models))
            if lacking:
                say(f"no stand-in is known for {', '.join(lacking)}: name it in the sidecar's tiny_models "
                    f"({wf_path.stem}.expect.json, see tests/integration/test_server.py)")
                return 1
            times["stand-ins"] = make_standins(comfy, python, srv.models_dir, models)
        if a.image:
            shutil.copy(a.image, srv.input_dir / a.image.name)
            workflow.set_input(prompt, "LoadImage", "image", a.image.name)
        for name, src in workflow.input_files(wf_path, prompt, expect).items():
            if src is not None:
                shutil.copy(src, srv.input_dir / name)
            elif not (srv.input_dir / name).is_file():
                comfy_server.write_sample_png(srv.input_dir / name)
        if a.steps:
            for cls in ("KSampler", "KSamplerAdvanced"):
                workflow.set_input(prompt, cls, "steps", a.steps)
        elif not tiny and (srv.get_json("/system_stats").get("devices") or [{}])[0].get("type", "cpu") == "cpu":
            say("note: a full-size model on CPU takes a long time; --steps N shortens the run")
        using = "stand-ins" if tiny else ckpt_name or ", ".join(needed)
        say(f"running {wf_path.name} on {using} ...")
        try:
            res = srv.run(prompt, timeout=a.timeout)
        except comfy_server.ComfyError as e:
            say(f"run failed: {e}\n(server log: {srv.log_path})")
            return 1
        times["run"] = res.seconds
        webps = [f for f in res.files if f.suffix.lower() == ".webp"] or res.files
        if not webps:
            say(f"the run finished but saved no file; outputs: {res.outputs}")
            return 1
        out_dir = REPO / "output"
        out_dir.mkdir(exist_ok=True)
        for i, f in enumerate(webps):
            copy = out_dir / (wf_path.stem + (f"_{i}" if i else "") + f.suffix)
            shutil.copy(f, copy)
            say(f"output: {copy}  (server copy: {f})")
    finally:
        srv.stop()
    times["total"] = time.perf_counter() - t_all
    say("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
        + (f", server peak RSS {srv.peak_rss_kb / 1024:.0f} MiB" if srv.peak_rss_kb else ""))
    if tiny:
        say("(tiny random weights: the animation is noise by design; add the real model files for a real video)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
