"""Tiny random-weight Wan 2.1 / 2.2 stand-ins in the layouts core ComfyUI loads, and umT5-shaped text conditioning.

No weights can be downloaded here, so these write files under the names and key layouts of Comfy-Org's repackaged
single files, and core's own loaders build core's own models from them:

- DiTs (``models/diffusion_models``, bare keys ``patch_embedding.*``, ``blocks.N.*``, ``head.*`` as in
  ``wan2.1_i2v_480p_14B_fp16.safetensors``): the real topology at dim 128 (one head: core derives
  ``num_heads = dim // 128``), 2 layers, ffn 256 and ``text_dim`` 4096 (core's WanModel default; not read from the
  file, so the text conditioning must be umT5-XXL wide). Kinds (:data:`DITS`): ``wan21_i2v`` (in_dim 36, ``img_emb``
  and ``k_img``/``v_img`` for CLIP-H features: core's ``WAN21_I2V``), ``wan22_a14b`` (in_dim 36, no image
  embedding: core detects ``WAN21_T2V``, i.e. ``model_base.WAN21``; a high- and a low-noise file are two seeds) and
  ``wan22_ti2v`` (in/out 48 channels: ``WAN22_T2V`` → ``model_base.WAN22``).
- VAEs (``models/vae``): the real Wan 2.1 VAE (``dim`` 96, 127 M parameters; core reads ``dim`` from
  ``decoder.head.0.gamma``, so ``dim`` can be narrowed) and the real Wan 2.2 VAE (core hard-codes dim 160: 705 M
  parameters, no narrower file loads).
- CLIP vision ViT-H/14 (``models/clip_vision/clip_vision_h.safetensors``): the SVD fixture's full-size OpenCLIP
  tower (core detects ViT-H by depth), under ``visual.``.
- LoRAs (``models/loras``): rank-4 ``diffusion_model.<key>.lora_A/lora_B.weight`` + ``.alpha`` over a few
  attention / FFN layers of a tiny Wan model (what core's ``LoraLoaderModelOnly`` maps for Wan).

Shapes come from core's own modules built on the meta device (nothing allocated); every tensor is drawn from a
generator seeded by ``(seed, key)``, so a file does not depend on key order. Norm gains ``1 + 0.1·n``, biases and
modulations ``0.1·n``, other weights ``n / sqrt(fan_in)``: activations stay finite through the random networks.

Text: umT5-XXL has 5.7 B parameters (core's CLIPLoader only detects it at full size), so :func:`text_conditioning`
makes what ``CLIPTextEncode`` returns for a Wan text encoder, ``[[cond [1, 512, 4096], {"pooled_output": None}]]``,
from the text alone (one seeded row per word plus the end token, zero padding to the tokenizer's 512, as umT5's
``zero_out_masked``). Headless runs get it through the test node ``I2VTest_WanTextEncode``
(``tests/support/comfy_nodes/``).
"""
from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch

TEXT_DIM = 4096     # umT5-XXL width = core WanModel's default text_dim (not read from the checkpoint)
TEXT_TOKENS = 512   # the umT5 tokenizer's min_length: CLIPTextEncode pads every Wan prompt to 512 tokens
TEXT_STD = 0.1
TINY_DIM, TINY_LAYERS, TINY_FFN = 128, 2, 256
CLIP_VISION_H = dict(width=1280, layers=32, proj=1024)


@dataclass(frozen=True)
class DiT:
    """What tells the Wan DiT kinds apart in a checkpoint."""

    in_dim: int
    out_dim: int
    image_embedding: bool  # img_emb + cross_attn.k_img/v_img (CLIP-H features): Wan 2.1 I2V only
    config: str            # the comfy.supported_models class core detects
    model: str             # the comfy.model_base class it builds


DITS = {
    "wan21_i2v": DiT(36, 16, True, "WAN21_I2V", "WAN21"),
    "wan22_a14b": DiT(36, 16, False, "WAN21_T2V", "WAN21"),
    "wan22_ti2v": DiT(48, 48, False, "WAN22_T2V", "WAN22"),
}
VAES = {"wan21_vae": dict(z_dim=16, dim=96, stride=(4, 8, 8)), "wan22_vae": dict(z_dim=48, dim=160, stride=(4, 16, 16))}
#: layers a tiny Wan LoRA patches (per block): self-attention, cross-attention and both FFN projections
LORA_TARGETS = ("self_attn.q", "self_attn.v", "cross_attn.k", "ffn.0", "ffn.2")


# -- random tensors --------------------------------------------------------------------------------------
def _generator(seed: int, key: str) -> torch.Generator:
    # torch's CPU generator (mt19937) keeps only 32 bits of its seed: hash seed and key together into them
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{key}".encode()))


def draw(key: str, shape: Iterable[int], seed: int, dtype: torch.dtype = torch.float16,
         gain: float = 1.0) -> torch.Tensor:
    """One random tensor for ``key`` (seeded by ``seed`` and the key): 1-D weights and ``gamma`` are norm gains
    (``1 + 0.1·n``), biases and ``modulation`` ``0.1·n``, other weights ``gain · n / sqrt(fan_in)``."""
    shape = tuple(shape)
    leaf = key.rsplit(".", 1)[-1]
    g = _generator(seed, key)
    if leaf == "gamma" or (leaf == "weight" and len(shape) == 1):
        return torch.empty(shape, dtype=dtype).normal_(0.0, 0.1, generator=g).add_(1.0)
    if leaf in ("bias", "modulation") or len(shape) <= 1:
        return torch.empty(shape, dtype=dtype).normal_(0.0, 0.1, generator=g)
    fan_in = max(1, math.prod(shape[1:]))
    return torch.empty(shape, dtype=dtype).normal_(0.0, gain / math.sqrt(fan_in), generator=g)


def random_state_dict(shapes: dict[str, torch.Size], seed: int, dtype: torch.dtype = torch.float16,
                      gains: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """:func:`draw` for every key; ``gains``: ``{key prefix: gain}`` for weights under that prefix."""
    out = {}
    for k, shape in shapes.items():
        gain = next((v for p, v in (gains or {}).items() if k.startswith(p)), 1.0)
        out[k] = draw(k, shape, seed, dtype, gain)
    return out


def _meta_shapes(build) -> dict[str, torch.Size]:
    with torch.device("meta"):
        module = build()
    return {k: v.shape for k, v in module.state_dict().items()}


# -- DiT -------------------------------------------------------------------------------------------------
def dit_shapes(kind: str, dim: int = TINY_DIM, layers: int = TINY_LAYERS, ffn: int = TINY_FFN) -> dict[str, torch.Size]:
    """Key → shape of a Wan DiT of ``kind`` (:data:`DITS`), from core's own WanModel (bare keys, as in the
    repackaged files)."""
    import comfy.ldm.wan.model
    import comfy.ops

    if kind not in DITS:
        raise ValueError(f"unknown Wan DiT kind {kind!r}; expected one of {sorted(DITS)}")
    if dim % 128:
        raise ValueError(f"dim {dim}: core derives num_heads = dim // 128, so dim must be a multiple of 128")
    spec = DITS[kind]
    return _meta_shapes(lambda: comfy.ldm.wan.model.WanModel(
        model_type="i2v" if spec.image_embedding else "t2v", in_dim=spec.in_dim, out_dim=spec.out_dim, dim=dim,
        ffn_dim=ffn, num_heads=dim // 128, num_layers=layers, text_dim=TEXT_DIM, qk_norm=True, cross_attn_norm=True,
        eps=1e-6, operations=comfy.ops.disable_weight_init))


def dit_state_dict(kind: str, seed: int = 0, dim: int = TINY_DIM, layers: int = TINY_LAYERS, ffn: int = TINY_FFN,
                   dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Random weights of a tiny Wan DiT under the repackaged files' bare keys."""
    return random_state_dict(dit_shapes(kind, dim, layers, ffn), seed, dtype)


# -- VAE -------------------------------------------------------------------------------------------------
def vae_shapes(kind: str, dim: int | None = None) -> dict[str, torch.Size]:
    """Key → shape of core's Wan 2.1 (``wan21_vae``; ``dim`` default 96, the real one) or Wan 2.2
    (``wan22_vae``; dim 160, the only one core builds) VAE."""
    if kind not in VAES:
        raise ValueError(f"unknown Wan VAE kind {kind!r}; expected one of {sorted(VAES)}")
    spec = VAES[kind]
    common = dict(z_dim=spec["z_dim"], dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                  temperal_downsample=[False, True, True], dropout=0.0)
    if kind == "wan22_vae":
        if dim not in (None, spec["dim"]):
            raise ValueError("core builds the Wan 2.2 VAE at dim 160 whatever the file holds; dim cannot change")
        import comfy.ldm.wan.vae2_2

        return _meta_shapes(lambda: comfy.ldm.wan.vae2_2.WanVAE(dim=spec["dim"], **common))
    import comfy.ldm.wan.vae

    return _meta_shapes(lambda: comfy.ldm.wan.vae.WanVAE(dim=dim or spec["dim"], **common))


def vae_state_dict(kind: str, seed: int = 0, dim: int | None = None,
                   dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Random weights of a Wan VAE in the official single-file layout (``encoder.*``, ``conv1``, ``conv2``,
    ``decoder.*``)."""
    return random_state_dict(vae_shapes(kind, dim), seed, dtype)


# -- CLIP vision -----------------------------------------------------------------------------------------
def clip_vision_h_state_dict(seed: int = 2, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """A full-size OpenCLIP ViT-H/14 vision tower under ``visual.`` (core's CLIPVisionLoader converts it and
    detects ViT-H by its 32 blocks): the SVD fixture's tower (``fixtures.vision_state_dict``), 632 M parameters."""
    from support.fixtures import _randn, vision_state_dict

    w, n, proj = CLIP_VISION_H["width"], CLIP_VISION_H["layers"], CLIP_VISION_H["proj"]
    vis = vision_state_dict(w, n, seed=seed, dtype=dtype)
    vis["embedder.model.visual.proj"] = _randn(torch.Generator().manual_seed(seed + 7), w, proj, dtype=dtype)
    return {"visual." + k[len("embedder.model.visual."):]: v for k, v in vis.items()}


# -- LoRA ------------------------------------------------------------------------------------------------
def lora_state_dict(shapes: dict[str, torch.Size], targets: Iterable[str], rank: int = 4, seed: int = 5,
                    alpha: float | None = None, fmt: str = "peft", prefix: str = "diffusion_model.",
                    dtype: torch.dtype = torch.float16, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """Rank-``rank`` LoRA over the 2-D weights ``<target>.weight`` of ``shapes``.

    ``fmt="peft"``: ``<prefix><target>.lora_A.weight`` [rank, in] / ``lora_B.weight`` [out, rank] (+ ``.alpha``),
    the common Wan format; ``fmt="kohya"``: ``lora_unet_<target with _>.lora_down/lora_up.weight`` (+ ``.alpha``).
    The update ``B·A·alpha/rank`` has entries of about ``scale / sqrt(in)``: visible, never dominant.
    """
    out: dict[str, torch.Tensor] = {}
    alpha = float(rank if alpha is None else alpha)
    for t in targets:
        shape = shapes.get(t + ".weight")
        if shape is None or len(shape) != 2:
            raise KeyError(f"LoRA target {t!r} is not a linear weight of the model (no 2-D {t}.weight)")
        n_out, n_in = shape
        a = torch.randn(rank, n_in, generator=_generator(seed, t + ".A")) / math.sqrt(n_in)
        b = torch.randn(n_out, rank, generator=_generator(seed, t + ".B")) * (scale * rank / alpha / math.sqrt(rank))
        if fmt == "peft":
            base = prefix + t
            out.update({base + ".lora_A.weight": a, base + ".lora_B.weight": b})
        elif fmt == "kohya":
            base = "lora_unet_" + t.replace(".", "_")
            out.update({base + ".lora_down.weight": a, base + ".lora_up.weight": b})
        else:
            raise ValueError(f"unknown LoRA format {fmt!r}; expected peft or kohya")
        out[base + ".alpha"] = torch.tensor(alpha)
    return {k: v.to(dtype) if k.endswith(".weight") else v for k, v in out.items()}


def wan_lora_targets(model: str = "wan21_i2v", layers: int = TINY_LAYERS) -> list[str]:
    """The layers a tiny Wan LoRA patches: :data:`LORA_TARGETS` in every block, plus ``cross_attn.k_img`` for
    Wan 2.1 I2V (only that model has it)."""
    per_block = list(LORA_TARGETS) + (["cross_attn.k_img"] if DITS[model].image_embedding else [])
    return [f"blocks.{i}.{t}" for i in range(layers) for t in per_block]


def wan_lora_state_dict(model: str = "wan21_i2v", rank: int = 4, seed: int = 5, dim: int = TINY_DIM,
                        layers: int = TINY_LAYERS, ffn: int = TINY_FFN) -> dict[str, torch.Tensor]:
    """A rank-``rank`` LoRA for the tiny Wan DiT ``model`` (``diffusion_model.blocks.N.<layer>.lora_A/B``)."""
    return lora_state_dict(dit_shapes(model, dim, layers, ffn), wan_lora_targets(model, layers), rank, seed)


# -- text ------------------------------------------------------------------------------------------------
def text_tokens(text: str, tokens: int = TEXT_TOKENS) -> list[str]:
    """The stand-in tokenizer: whitespace-separated words (at most ``tokens - 1``) and the end token."""
    return text.split()[:tokens - 1] + ["</s>"]


def text_embedding(text: str, tokens: int = TEXT_TOKENS, seed: int = 0) -> torch.Tensor:
    """``[1, tokens, 4096]`` float32: one row per :func:`text_tokens` entry drawn from a generator seeded by that
    word (the same word gives the same row anywhere), ``TEXT_STD`` wide; zeros after, as umT5 zeroes padding."""
    words = text_tokens(text, tokens)
    out = torch.zeros(1, tokens, TEXT_DIM)
    for i, w in enumerate(words):
        out[0, i] = torch.randn(TEXT_DIM, generator=_generator(seed, "token:" + w)) * TEXT_STD
    return out


def text_conditioning(text: str, tokens: int = TEXT_TOKENS, seed: int = 0) -> list:
    """CONDITIONING as ``CLIPTextEncode`` returns it for core's Wan (umT5-XXL) text encoder:
    ``[[text_embedding, {"pooled_output": None}]]`` (umT5 has no pooled output)."""
    return [[text_embedding(text, tokens, seed), {"pooled_output": None}]]


# -- files -----------------------------------------------------------------------------------------------
def save(sd: dict[str, torch.Tensor], path: str | os.PathLike, what: str) -> str:
    """Write a safetensors file (parent folders made) with a metadata note that the weights are random."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, path, metadata={"i2v.fixture": f"random weights ({what})"})
    return path


# -- tiny runs through core's nodes (under torch.inference_mode, as ComfyUI's executor runs every node) ----
def start_image(width: int = 64, height: int = 64) -> torch.Tensor:
    """A deterministic ``[1, H, W, 3]`` picture (gradients and a box) to start a video from."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    img = torch.stack([x, y, 1 - x * y], -1)
    img[height // 4: height // 2, width // 4: width // 2] = torch.tensor([0.8, 0.2, 0.1])
    return img[None]


def _result(out):
    return out.result if hasattr(out, "result") else out


def _cond(text: str, negative: str) -> tuple[list, list]:
    return text_conditioning(text), text_conditioning(negative)


@torch.inference_mode()
def run_i2v(model, vae, clip_vision=None, *, clip_vision_output=None, width: int = 64, height: int = 64,
            length: int = 9, steps: int = 2, cfg: float = 3.0, seed: int = 0, text: str = "a red box drifts right",
            negative: str = "") -> torch.Tensor:
    """Wan 2.1 I2V as core's workflow runs it: (CLIPVisionEncode of ``clip_vision``, or a given
    ``clip_vision_output``) → WanImageToVideo → KSampler → VAEDecode; the decoded frames ``[length, H, W, 3]``."""
    import nodes as comfy_nodes
    from comfy_extras.nodes_wan import WanImageToVideo

    image = start_image(width, height)
    pos, neg = _cond(text, negative)
    cvo = clip_vision_output
    if clip_vision is not None:
        cvo = comfy_nodes.CLIPVisionEncode().encode(clip_vision, image, "none")[0]
    pos, neg, latent = _result(WanImageToVideo.execute(pos, neg, vae, width, height, length, 1, start_image=image,
                                                       clip_vision_output=cvo))
    samples = comfy_nodes.common_ksampler(model, seed, steps, cfg, "euler", "simple", pos, neg, latent)[0]
    return comfy_nodes.VAEDecode().decode(vae, samples)[0]


@torch.inference_mode()
def run_a14b(high, low, vae, *, split: int = 1, width: int = 64, height: int = 64, length: int = 9, steps: int = 2,
             cfg: float = 3.5, seed: int = 0, text: str = "a red box drifts right", negative: str = "") -> torch.Tensor:
    """Wan 2.2 A14B I2V as core's template: WanImageToVideo, then two KSamplerAdvanced — the high-noise model for
    steps ``[0, split)`` returning its leftover noise, the low-noise model from ``split`` — and VAEDecode."""
    import nodes as comfy_nodes
    from comfy_extras.nodes_wan import WanImageToVideo

    image = start_image(width, height)
    pos, neg = _cond(text, negative)
    pos, neg, latent = _result(WanImageToVideo.execute(pos, neg, vae, width, height, length, 1, start_image=image))
    ks = comfy_nodes.KSamplerAdvanced()
    mid = ks.sample(high, "enable", seed, steps, cfg, "euler", "simple", pos, neg, latent, 0, split, "enable")[0]
    out = ks.sample(low, "disable", seed, steps, cfg, "euler", "simple", pos, neg, mid, split, 10000, "disable")[0]
    return comfy_nodes.VAEDecode().decode(vae, out)[0]


@torch.inference_mode()
def run_ti2v(model, vae, *, width: int = 32, height: int = 32, length: int = 5, steps: int = 2, cfg: float = 3.0,
             seed: int = 0, text: str = "a red box drifts right", negative: str = "") -> torch.Tensor:
    """Wan 2.2 TI2V-5B: Wan22ImageToVideoLatent (start frame in the latent, ``noise_mask``) → KSampler →
    VAEDecode."""
    import nodes as comfy_nodes
    from comfy_extras.nodes_wan import Wan22ImageToVideoLatent

    pos, neg = _cond(text, negative)
    latent = _result(Wan22ImageToVideoLatent.execute(vae, width, height, length, 1, start_image(width, height)))[0]
    samples = comfy_nodes.common_ksampler(model, seed, steps, cfg, "euler", "simple", pos, neg, latent)[0]
    return comfy_nodes.VAEDecode().decode(vae, samples)[0]
