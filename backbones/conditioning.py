"""DynamiCrafter image-to-video conditioning: concat latent, CLIP-vision tokens, fps."""
from __future__ import annotations

import torch

import comfy.model_management
import comfy.utils

from ..limits import MAX_FRAMES, check_alloc, nbytes, vae_encode_need



def check_size(width: int, height: int, length: int, interp: bool = False) -> None:
    """Sizes the UNet can take: three 2× downsamplings of a ×8 latent → multiples of 64 pixels."""
    bad = [f"{n}={v}" for n, v in (("width", width), ("height", height)) if v % 64 or v <= 0]
    if bad:
        def near(v):
            return max(64, round(v / 64) * 64)
        raise ValueError(f"DynamiCrafter needs width and height in multiples of 64 (the VAE divides by 8, the UNet "
                         f"by 8 more); got {', '.join(bad)}. Nearest valid: {near(width)}×{near(height)}.")
    if length < 1 or length > MAX_FRAMES:
        raise ValueError(f"length must be 1..{MAX_FRAMES} frames; got {length}")
    if interp and length < 2:
        raise ValueError(f"an end image (interpolation) needs length ≥ 2; got {length}")


def _resize(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE [B,H,W,C] → [1,H',W',3] at the target size without keeping aspect (official preprocessing)."""
    if image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"expected an IMAGE [batch, height, width, 3]; got shape {tuple(image.shape)}")
    img = image[:1, :, :, :3]
    return comfy.utils.common_upscale(img.movedim(-1, 1), width, height, "bilinear", "disabled").movedim(1, -1)


def clip_tokens(clip_vision, image: torch.Tensor) -> torch.Tensor:
    """All 257 last-layer tokens (no post-layernorm, no projection), image squashed to 224² (no crop)."""
    return clip_vision.encode_image(image, crop=False)["last_hidden_state"]


def i2v_conditioning(vae, clip_vision, start_image: torch.Tensor, width: int, height: int, length: int, fps: int,
                     end_image: torch.Tensor | None = None) -> tuple[dict, dict, torch.Tensor]:
    """Values for positive / negative conds, and the empty frames-as-batch latent ``[T, 4, H/8, W/8]``.

    Concat latent: the first frame's latent on every frame (interp: first and last set, others zero).
    Negative image tokens are those of an all-zero image in the model's [-1, 1] space (mid-grey here).
    """
    if vae is None:
        raise ValueError("no VAE: this checkpoint holds none; connect a stock Load VAE (SD VAE) node")
    if clip_vision is None:
        raise ValueError("no CLIP_VISION: this checkpoint holds none; connect a stock Load CLIP Vision node "
                         "with the OpenCLIP ViT-H/14 vision model")
    check_size(width, height, length, end_image is not None)
    # concat latent + empty latent (frames × 4 × H/8 × W/8) and two resized copies of the image
    check_alloc(2 * nbytes((length, 4, height // 8, width // 8)) + 2 * nbytes((height, width, 3))
                + vae_encode_need(vae, height, width), f"DynamiCrafter Image to Video at {width}x{height} x {length} frames",
                hint="use a smaller size (the models were trained at 512x320 / 1024x576)")
    start = _resize(start_image, width, height)
    first = vae.encode(start)
    if first.ndim != 4 or first.shape[1] != 4:
        raise ValueError(f"the VAE gave a latent of shape {tuple(first.shape)}; DynamiCrafter needs the 4-channel SD VAE")
    if end_image is not None:
        last = vae.encode(_resize(end_image, width, height))
        concat = torch.zeros((length,) + tuple(first.shape[1:]), dtype=first.dtype)
        concat[0], concat[-1] = first[0], last[0]
    else:
        concat = first.repeat(length, 1, 1, 1)
    tokens = clip_tokens(clip_vision, start)
    uc_tokens = clip_tokens(clip_vision, torch.full_like(start, 0.5))
    latent = torch.zeros((length, 4, height // 8, width // 8), device=comfy.model_management.intermediate_device())
    pos = {"concat_latent_image": concat, "clip_vision_tokens": tokens, "fs": int(fps)}
    neg = {"concat_latent_image": concat, "clip_vision_tokens": uc_tokens, "fs": int(fps)}
    return pos, neg, latent
