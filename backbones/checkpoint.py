"""Reading DynamiCrafter checkpoints safely, splitting them into parts, and detecting their shape.

Formats: official Lightning ``.ckpt`` (``state_dict``; DeepSpeed ``module`` with a 16-character
prefix), ``.safetensors`` (pruned fp16 community files, our bakes, ComfyUI ``CheckpointSave``), EDG
``{'state_dict': ...}`` ``.pt``. Pickles are only ever read with weights-only unpickling; harmless
bookkeeping classes (Lightning, OmegaConf, argparse) are replaced by inert stand-ins, anything else
is refused with a message naming it.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field

import torch

from .dynamicrafter_unet import QUERIES_PER_FRAME, ResamplerConfig, UNetConfig


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message naming what was expected and found."""


UNET_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.model.diffusion_model.")
RESAMPLER_PREFIXES = ("image_proj_model.", "model.diffusion_model.image_proj_model.",
                      "diffusion_model.image_proj_model.")
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."
VISION_PREFIX = "embedder."
LEGACY_RENAMES = {"framestride_embed.": "fps_embedding."}
EDG_ADAPTER_PATTERN = re.compile(r"(^|\.)(qformer\.|queries$|cc_projection\.)")

# Globals that Lightning/OmegaConf checkpoints carry next to the weights; they become inert stand-ins.
_BENIGN_MODULES = ("omegaconf", "pytorch_lightning", "lightning", "lightning_fabric", "argparse",
                   "pathlib", "typing", "numpy", "collections", "_codecs", "deepspeed", "__main__.Namespace")
_MAX_STUBS = 64


class _Inert:
    """Stand-in for a pickled bookkeeping object: accepts any state, does nothing."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self._state = state

    def __call__(self, *args, **kwargs):
        return _Inert()


def _make_stub(module: str, name: str):
    return type(name, (_Inert,), {"__module__": module, "__qualname__": name})


def _torch_load_weights_only(path: str) -> object:
    """``torch.load(weights_only=True)``, allowing inert stand-ins for known bookkeeping classes."""
    stubs: list = []
    for _ in range(_MAX_STUBS):
        try:
            with torch.serialization.safe_globals(stubs):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
        except pickle.UnpicklingError as e:
            m = re.search(r"GLOBAL ([\w\.]+)\.(\w+)", str(e))
            if not m:
                detail = "" if "weights_only" in str(e) else f" ({_first_line(e)})"
                raise CheckpointError(f"{os.path.basename(path)}: not a readable weights file: its pickle holds "
                                      f"something other than tensors and plain data{detail}") from None
            module, name = m.group(1), m.group(2)
            if not (module.split(".")[0] in _BENIGN_MODULES or f"{module}.{name}" in _BENIGN_MODULES):
                raise CheckpointError(
                    f"{os.path.basename(path)}: refusing to load: its pickle references {module}.{name}, which is "
                    "not a tensor or plain data (a pickle that calls it could run code). Weights-only loading "
                    "never executes it. Convert the file to .safetensors from a trusted source.") from None
            stubs.append(_make_stub(module, name))
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{os.path.basename(path)}: cannot read it as a PyTorch checkpoint — "
                                  f"truncated or corrupt? ({_first_line(e)})") from None
        except Exception as e:  # torch's unpickler on text or other non-pickle data (IndexError, ValueError, ...)
            raise CheckpointError(f"{os.path.basename(path)}: not a PyTorch checkpoint (its content is not a pickle "
                                  f"torch can read: {type(e).__name__})") from None
    raise CheckpointError(f"{os.path.basename(path)}: too many non-tensor objects in its pickle")


def _is_zip(path: str) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


def read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read any supported checkpoint into a flat ``{key: tensor}`` dict plus safetensors metadata."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    name = os.path.basename(path)
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{name}: file is empty")
    meta: dict = {}
    if path.lower().endswith((".safetensors", ".sft")):
        import safetensors
        from safetensors.torch import load_file
        try:
            with safetensors.safe_open(path, framework="pt") as f:
                meta = dict(f.metadata() or {})
            sd = load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error types for truncated headers/data
            raise CheckpointError(f"{name}: cannot read it as .safetensors — truncated or corrupt? ({_first_line(e)})") from None
    elif path.lower().endswith((".ckpt", ".pt", ".pth", ".bin")):
        obj = _torch_load_weights_only(path)
        sd = _unwrap(obj, name)
    else:
        raise CheckpointError(f"{name}: unsupported file type; expected .safetensors, .ckpt, .pt, .pth or .bin")
    sd = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    if not sd:
        raise CheckpointError(f"{name}: holds no tensors")
    return sd, meta


def _unwrap(obj: object, name: str) -> dict:
    """Find the weights in a Lightning / DeepSpeed / EDG container."""
    if isinstance(obj, dict):
        for key in ("state_dict", "module", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(torch.is_tensor(v) for v in inner.values()):
                return _strip_deepspeed(inner)
        if any(torch.is_tensor(v) for v in obj.values()):
            return _strip_deepspeed(obj)
    raise CheckpointError(f"{name}: no state dict inside (looked for 'state_dict', 'module' or plain tensors)")


def _strip_deepspeed(sd: dict) -> dict:
    """DeepSpeed saves prefix every key (``_forward_module.``); drop a prefix shared by all keys."""
    keys = [k for k in sd if torch.is_tensor(sd[k])]
    for p in ("_forward_module.", "module."):
        if keys and all(k.startswith(p) for k in keys):
            return {k[len(p):]: v for k, v in sd.items()}
    return sd


@dataclass
class Parts:
    """A checkpoint split into the parts ComfyUI loads separately (keys relative to each part)."""

    unet: dict[str, torch.Tensor] = field(default_factory=dict)  # includes image_proj_model.*
    vae: dict[str, torch.Tensor] = field(default_factory=dict)
    text: dict[str, torch.Tensor] = field(default_factory=dict)  # OpenCLIP keys under cond_stage_model.
    vision: dict[str, torch.Tensor] = field(default_factory=dict)  # OpenCLIP keys under embedder.
    ignored: list[str] = field(default_factory=list)


def split_parts(sd: dict[str, torch.Tensor], name: str = "checkpoint") -> Parts:
    """Split a DynamiCrafter state dict by prefix; rename legacy keys; refuse unsupported adapters."""
    parts = Parts()
    for k, v in sd.items():
        rp = next((p for p in RESAMPLER_PREFIXES if k.startswith(p)), None)
        up = next((p for p in UNET_PREFIXES if k.startswith(p)), None)
        if rp is not None:
            parts.unet["image_proj_model." + k[len(rp):]] = v
        elif up is not None:
            rel = k[len(up):]
            for old, new in LEGACY_RENAMES.items():
                if rel.startswith(old):
                    rel = new + rel[len(old):]
            parts.unet[rel] = v
        elif k.startswith(VAE_PREFIX):
            parts.vae[k[len(VAE_PREFIX):]] = v
        elif k.startswith(TEXT_PREFIX):
            parts.text[k] = v
        elif k.startswith(VISION_PREFIX):
            parts.vision[k] = v
        else:
            parts.ignored.append(k)
    if not parts.unet or any("time_stack" in k or "time_mixer" in k for k in parts.unet):
        raise CheckpointError(_not_dynamicrafter(name, sd))
    adapters = sorted(k for k in parts.unet if EDG_ADAPTER_PATTERN.search(k))
    if adapters:
        raise CheckpointError(
            f"{name}: holds an EDG stage-1 motion-control adapter ({len(adapters)} keys such as {adapters[0]!r}: "
            "text tokens injected into temporal attention). This loader supports the base DynamiCrafter "
            "architecture only; use the released DynamiCrafter / CIL fine-tunes or EDG merges.")
    return parts


def _not_dynamicrafter(name: str, sd: dict) -> str:
    keys = list(sd)
    hint = ""
    if any("time_stack" in k or "time_mixer" in k for k in keys):
        hint = " It looks like Stable Video Diffusion: load it with ComfyUI's Image Only Checkpoint Loader."
    elif any(k.startswith(("model.diffusion_model.", "diffusion_model.")) for k in keys):
        hint = " It has a diffusion model but not DynamiCrafter's layout."
    return (f"{name}: not a DynamiCrafter checkpoint — expected UNet keys under 'model.diffusion_model.' "
            f"(input_blocks.*, temopral_conv, init_attn) and the Resampler under 'image_proj_model.'; found "
            f"{len(keys)} keys such as {keys[:3]}.{hint}")


def detect_unet_config(unet: dict[str, torch.Tensor], name: str = "checkpoint",
                       meta: dict | None = None) -> UNetConfig:
    """Read the UNet / Resampler shape from keys and tensor shapes (variant aside)."""
    meta = meta or {}
    need = ("input_blocks.0.0.weight", "out.2.weight", "time_embed.0.weight")
    missing = [k for k in need if k not in unet]
    if missing:
        raise CheckpointError(f"{name}: UNet keys missing: {missing}; not a DynamiCrafter UNet")
    w_in = unet["input_blocks.0.0.weight"]
    mc, in_ch = int(w_in.shape[0]), int(w_in.shape[1])
    if in_ch != 8:
        raise CheckpointError(f"{name}: UNet takes {in_ch} input channels; DynamiCrafter takes 8 "
                              "(4 noise + 4 image latent)")
    if not any(".temopral_conv." in k for k in unet) and "init_attn.0.norm.weight" not in unet:
        raise CheckpointError(f"{name}: UNet has no temporal layers (temopral_conv / init_attn): an image model, "
                              "not DynamiCrafter")
    blocks = sorted({int(m.group(1)) for k in unet if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    downs = [i for i in blocks if f"input_blocks.{i}.0.op.weight" in unet]
    levels = len(downs) + 1
    n_res = (len(blocks) - 1 - len(downs)) // levels
    mult, attn_levels, i = [], [], 1
    for level in range(levels):
        out_w = unet[f"input_blocks.{i}.0.in_layers.2.weight"]
        mult.append(int(out_w.shape[0]) // mc)
        if f"input_blocks.{i}.1.norm.weight" in unet:
            attn_levels.append(level)
        i += n_res + (1 if level < levels - 1 else 0)
    ctx_key = next((k for k in unet if k.endswith("attn2.to_k.weight") and ".1.transformer_blocks" in k), None)
    context_dim = int(unet[ctx_key].shape[1]) if ctx_key else 1024
    head = meta.get("i2v.num_head_channels")
    if head is None and "init_attn.0.proj_in.weight" in unet:
        head = int(unet["init_attn.0.proj_in.weight"].shape[0]) // 8  # init_attn: 8 heads of the head width
    head = int(head or 64)
    res = None
    if "image_proj_model.latents" in unet:
        lat = unet["image_proj_model.latents"]
        dim, n_tokens = int(lat.shape[2]), int(lat.shape[1])
        depth = len({m.group(1) for k in unet if (m := re.match(r"image_proj_model\.layers\.(\d+)\.", k))})
        inner = int(unet["image_proj_model.layers.0.0.to_q.weight"].shape[0])
        dim_head = int(meta.get("i2v.resampler_dim_head", 64 if inner % 64 == 0 and inner >= 256 else 16))
        res = ResamplerConfig(
            dim=dim, depth=depth, dim_head=dim_head, heads=inner // dim_head, num_queries=QUERIES_PER_FRAME,
            video_length=max(1, n_tokens // QUERIES_PER_FRAME),
            embedding_dim=int(unet["image_proj_model.proj_in.weight"].shape[1]),
            output_dim=int(unet["image_proj_model.proj_out.weight"].shape[0]),
            ff_mult=int(unet["image_proj_model.layers.0.1.1.weight"].shape[0]) // dim)
        if res.num_queries * res.video_length != n_tokens:
            raise CheckpointError(f"{name}: Resampler has {n_tokens} queries, not a multiple of {QUERIES_PER_FRAME}")
    return UNetConfig(
        in_channels=in_ch, out_channels=int(unet["out.2.weight"].shape[0]), model_channels=mc,
        channel_mult=tuple(mult), num_res_blocks=n_res, attention_levels=tuple(attn_levels),
        num_head_channels=head, context_dim=context_dim,
        temporal_conv=any(".temopral_conv." in k for k in unet),
        addition_attention="init_attn.0.norm.weight" in unet,
        image_cross_attention=any(k.endswith("attn2.to_k_ip.weight") for k in unet),
        image_cross_attention_scale_learnable=any(k.endswith("attn2.alpha") for k in unet),
        fs_condition="fps_embedding.0.weight" in unet,
        resampler=res)


def guess_variant(cfg: UNetConfig, filename: str) -> str:
    """Weights tell 256 apart (learnable image-attention scale); 512/1024/interp come from the name."""
    if cfg.image_cross_attention_scale_learnable:
        return "256"
    low = os.path.basename(filename).lower()
    if "interp" in low:
        return "512_interp"
    if "1024" in low:
        return "1024"
    return "512"
