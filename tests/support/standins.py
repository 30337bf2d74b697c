"""One maker for every tiny random-weight stand-in model file: sidecars, integration tests and the demo share it.

A spec names the file by its path under ComfyUI's ``models/`` and says what to write::

    {"diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors": {"kind": "wan21_i2v"},
     "vae/wan_2.1_vae.safetensors": {"kind": "wan21_vae", "dim": 32},
     "checkpoints/dynamicrafter_512.ckpt": {"variant": "512"}}          # no kind: DynamiCrafter (or "arch")

Kinds (:data:`KINDS`): ``dynamicrafter`` and ``svd`` (``fixtures.make_tiny_checkpoint``; the old ``arch`` key still
picks them), ``wan21_i2v`` / ``wan22_a14b`` / ``wan22_ti2v`` (tiny Wan DiTs; ``seed``, ``dim``, ``layers``,
``ffn``), ``wan21_vae`` (``dim``: 96 = the real width, narrower loads the same way) / ``wan22_vae``,
``clip_vision_h``, ``wan_lora`` (``model``: the tiny DiT kind it patches, ``rank``, ``seed``), ``dynamicrafter_lora``
and ``svd_lora`` (kohya-format LoRAs over a few attention layers of the tiny DynamiCrafter / SVD UNets). See
``support.wan`` for the Wan files. :func:`guess` gives the spec of the official Wan file names, for workflows without
a sidecar.

Files are cached: each (kind, arguments, extension, source of the makers) is written once to
``I2V_STANDIN_CACHE`` (default ``~/.cache/comfyui-i2v-motion/standins``; ``off`` disables) and hard-linked (else
symlinked) into the models folder, so test sessions, both hosts and the demo reuse one file. Making a file needs
ComfyUI importable in this process (shapes come from core's own modules): ``comfy_inproc.bootstrap`` first.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and ComfyUI are imported only when a file is made (workflow.py reads guess() stdlib-only)
    import torch

SUPPORT = Path(__file__).resolve().parent
REPO = SUPPORT.parent.parent
#: the code a stand-in's content depends on besides its spec (a change there invalidates the cached files)
SOURCES = {"dynamicrafter": [SUPPORT / "fixtures.py", REPO / "backbones" / "dynamicrafter_unet.py"],
           "svd": [SUPPORT / "fixtures.py"], "wan": [SUPPORT / "wan.py", SUPPORT / "fixtures.py"]}
STALE_DAYS = 3  # cached files of a kind unused this long are deleted when that kind is next written
FOLDERS = {  # the models sub-folder each kind belongs in (a spec elsewhere still works; the demo warns)
    "dynamicrafter": "checkpoints", "svd": "checkpoints", "wan21_i2v": "diffusion_models",
    "wan22_a14b": "diffusion_models", "wan22_ti2v": "diffusion_models", "wan21_vae": "vae", "wan22_vae": "vae",
    "clip_vision_h": "clip_vision", "wan_lora": "loras", "dynamicrafter_lora": "loras", "svd_lora": "loras",
}


def _dc(path: str, **kw) -> None:
    from support.fixtures import make_tiny_checkpoint

    make_tiny_checkpoint(path, arch="dynamicrafter", **kw)


def _svd(path: str, **kw) -> None:
    from support.fixtures import make_tiny_svd_checkpoint

    make_tiny_svd_checkpoint(path, **kw)


def _dit(kind: str) -> Callable[..., None]:
    def make_dit(path: str, seed: int = 0, **kw) -> None:
        from support import wan

        wan.save(wan.dit_state_dict(kind, seed, **kw), path, f"tiny {kind}")
    return make_dit


def _vae(kind: str) -> Callable[..., None]:
    def make_vae(path: str, seed: int = 0, dim: int | None = None) -> None:
        from support import wan

        wan.save(wan.vae_state_dict(kind, seed, dim), path, kind)
    return make_vae


def _clip_vision_h(path: str, seed: int = 2) -> None:
    from support import wan

    wan.save(wan.clip_vision_h_state_dict(seed), path, "OpenCLIP ViT-H/14 vision tower")


def _wan_lora(path: str, model: str = "wan21_i2v", rank: int = 4, seed: int = 5, **kw) -> None:
    from support import wan

    wan.save(wan.wan_lora_state_dict(model, rank, seed, **kw), path, f"rank-{rank} LoRA for tiny {model}")


def dc_lora_targets(count: int = 6) -> tuple[dict[str, torch.Size], list[str]]:
    """Shapes of the tiny DynamiCrafter UNet (MODEL keys without ``diffusion_model.``) and the first ``count``
    attention projections a LoRA patches."""
    import comfy.ops
    from support.fixtures import TINY_UNET
    from support.wan import _meta_shapes

    from i2v_motion.backbones.dynamicrafter_unet import DynamiCrafterUNet

    shapes = _meta_shapes(lambda: DynamiCrafterUNet(TINY_UNET, operations=comfy.ops.disable_weight_init))
    return shapes, _attention_targets(shapes, count)


def svd_lora_targets(count: int = 6) -> tuple[dict[str, torch.Size], list[str]]:
    """The same for the tiny SVD UNet of ``fixtures.make_tiny_svd_checkpoint`` (core's own SVD model code)."""
    import comfy.supported_models
    import torch
    from support.fixtures import svd_unet_config
    from support.wan import _meta_shapes

    mc = comfy.supported_models.SVD_img2vid(svd_unet_config())
    mc.set_inference_dtype(torch.float32, None)
    shapes = _meta_shapes(lambda: mc.get_model({}).diffusion_model)
    return shapes, _attention_targets(shapes, count)


def _attention_targets(shapes: dict[str, torch.Size], count: int) -> list[str]:
    ends = (".attn1.to_q.weight", ".attn1.to_v.weight", ".attn2.to_k.weight", ".ff.net.2.weight")
    return [k[:-len(".weight")] for k in shapes if k.endswith(ends) and len(shapes[k]) == 2][:count]


def _unet_lora(targets: Callable[[int], tuple[dict, list[str]]], what: str) -> Callable[..., None]:
    def make_lora(path: str, rank: int = 4, seed: int = 5, count: int = 6) -> None:
        from support import wan

        shapes, keys = targets(count)
        wan.save(wan.lora_state_dict(shapes, keys, rank, seed, fmt="kohya"), path, f"rank-{rank} LoRA for tiny {what}")
    return make_lora


KINDS: dict[str, Callable[..., None]] = {
    "dynamicrafter": _dc, "svd": _svd,
    "wan21_i2v": _dit("wan21_i2v"), "wan22_a14b": _dit("wan22_a14b"), "wan22_ti2v": _dit("wan22_ti2v"),
    "wan21_vae": _vae("wan21_vae"), "wan22_vae": _vae("wan22_vae"), "clip_vision_h": _clip_vision_h,
    "wan_lora": _wan_lora, "dynamicrafter_lora": _unet_lora(dc_lora_targets, "DynamiCrafter"),
    "svd_lora": _unet_lora(svd_lora_targets, "SVD"),
}

#: the official file names users have (Comfy-Org's repackaged files) → the stand-in spec; see :func:`guess`
OFFICIAL = {
    "wan2.1_i2v_480p_14B": {"kind": "wan21_i2v"}, "wan2.1_i2v_720p_14B": {"kind": "wan21_i2v"},
    "wan2.2_i2v_high_noise_14B": {"kind": "wan22_a14b", "seed": 0},
    "wan2.2_i2v_low_noise_14B": {"kind": "wan22_a14b", "seed": 1},
    "wan2.2_ti2v_5B": {"kind": "wan22_ti2v"},
    "wan_2.1_vae": {"kind": "wan21_vae"}, "wan2.2_vae": {"kind": "wan22_vae"},
    "clip_vision_h": {"kind": "clip_vision_h"},
}


def split(spec: dict | None) -> tuple[str, dict]:
    """``(kind, maker kwargs)`` of a spec; without ``kind``: ``arch`` (``dynamicrafter`` / ``svd``), else
    DynamiCrafter."""
    kw = dict(spec or {})
    kind = kw.pop("kind", None) or kw.pop("arch", None) or "dynamicrafter"
    kw.pop("arch", None)
    if kind not in KINDS:
        raise ValueError(f"unknown stand-in kind {kind!r}; expected one of {sorted(KINDS)}")
    return kind, kw


def guess(rel: str) -> dict | None:
    """The spec of an official Wan file name (``diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors`` →
    ``{"kind": "wan21_i2v"}``), or None."""
    stem = Path(rel).name.lower()
    for name, spec in OFFICIAL.items():
        if stem.startswith(name.lower()):
            return dict(spec)
    return None


def _digest(kind: str, kw: dict, ext: str) -> str:
    h = hashlib.sha256(json.dumps([kind, kw, ext], sort_keys=True, default=str).encode())
    family = "dynamicrafter" if kind.startswith("dynamicrafter") else "svd" if kind.startswith("svd") else "wan"
    for src in [SUPPORT / "standins.py", *SOURCES[family]]:
        if src.is_file():
            h.update(src.read_bytes())
    return h.hexdigest()[:16]


def _prune(cache: Path, kind: str, keep: Path) -> None:
    old = time.time() - STALE_DAYS * 86400
    for f in cache.glob(f"{kind}-*"):
        try:
            if f != keep and f.stat().st_mtime < old:
                f.unlink()
        except OSError:
            pass


def cache_dir() -> Path | None:
    """Where stand-ins are kept between runs (None when ``I2V_STANDIN_CACHE=off``)."""
    val = os.environ.get("I2V_STANDIN_CACHE", "")
    if val.lower() in ("off", "0", "none"):
        return None
    return Path(val or Path.home() / ".cache" / "comfyui-i2v-motion" / "standins")


def _write(kind: str, kw: dict, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp{dest.suffix}")
    try:
        KINDS[kind](str(tmp), **kw)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def _link(src: Path, dest: Path) -> None:
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        dest.symlink_to(src)


class NotCached(LookupError):
    """:func:`make` with ``generate=False`` found no cached file (making one needs torch and ComfyUI)."""


def make(models_dir: str | os.PathLike, rel: str, spec: dict | None = None,
         generate: bool = True) -> tuple[Path, float]:
    """Write the stand-in ``spec`` at ``<models_dir>/<rel>`` (from the cache when there); ``(path, seconds spent
    generating)`` — 0.0 when the cache had it. ``generate=False`` only links a cached file (stdlib only: any python
    can do it) and raises :class:`NotCached` otherwise."""
    kind, kw = split(spec)
    dest = Path(models_dir) / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    ext = "".join(Path(rel).suffixes[-1:]) or ".safetensors"
    cache = cache_dir()
    t0 = time.perf_counter()
    if cache is None:
        if not generate:
            raise NotCached(f"{rel}: the stand-in cache is off")
        _write(kind, kw, dest)
        return dest, time.perf_counter() - t0
    cached = cache / f"{kind}-{_digest(kind, kw, ext)}{ext}"
    made = 0.0
    if not generate and not cached.is_file():
        raise NotCached(f"{rel}: no cached {kind} stand-in")
    if cached.is_file():
        os.utime(cached)  # in use: not stale
    else:
        cache.mkdir(parents=True, exist_ok=True)
        _write(kind, kw, cached)
        made = time.perf_counter() - t0
        _prune(cache, kind, cached)
    if not (dest.exists() and os.path.samefile(dest, cached)):
        _link(cached, dest)
    return dest, made


def make_all(models_dir: str | os.PathLike, models: dict[str, dict | None]) -> dict[str, float]:
    """:func:`make` for every ``{"<models sub-path>": spec}``; returns the generation seconds per sub-path."""
    return {rel: make(models_dir, rel, spec)[1] for rel, spec in models.items()}


@contextmanager
def models_root(root: str | os.PathLike) -> Iterator[Path]:
    """Let core's loaders (UNETLoader, VAELoader, CLIPVisionLoader, LoraLoader*, checkpoint loaders) find the files
    under ``root/<folder>`` in this process, first; the previous folder lists come back on exit."""
    import folder_paths

    root = Path(root)
    saved = {}
    for name in ("checkpoints", "diffusion_models", "vae", "clip_vision", "loras", "text_encoders"):
        if name in folder_paths.folder_names_and_paths:
            paths, exts = folder_paths.folder_names_and_paths[name]
            saved[name] = (paths, exts)
            folder_paths.folder_names_and_paths[name] = ([str(root / name), *paths], exts)
    try:
        yield root
    finally:
        folder_paths.folder_names_and_paths.update(saved)
        getattr(folder_paths, "filename_list_cache", {}).clear()
