"""DynamiCrafter image-to-video conditioning: image preprocessing, concat latent, CLIP-vision tokens, fps.

A batch of B videos of T frames is one frames-as-batch latent ``[B·T, 4, H/8, W/8]``; T travels in the
conditioning as ``num_video_frames`` (see ``model.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import comfy.model_management

from ..limits import check_alloc, check_frames, nbytes, vae_encode_need

RESIZE_MODES: tuple[str, ...] = ("crop", "official", "stretch", "pad")
MAX_BATCH = 64


def check_size(width: int, height: int, length: int, interp: bool = False) -> None:
    """Sizes the UNet can take: three 2× downsamplings of a ×8 latent → multiples of 64 pixels."""
    bad = [f"{n}={v}" for n, v in (("width", width), ("height", height)) if v % 64 or v <= 0]
    if bad:
        def near(v):
            return max(64, round(v / 64) * 64)
        raise ValueError(f"DynamiCrafter needs width and height in multiples of 64 (the VAE divides by 8, the UNet "
                         f"by 8 more); got {', '.join(bad)}. Nearest valid: {near(width)}×{near(height)}.")
    check_frames(length, "length")
    if interp and length < 2:
        raise ValueError(f"an end image (interpolation) needs length ≥ 2; got {length}")


def _check_image(image: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.is_tensor(image) or image.ndim != 4 or image.shape[-1] < 3 or image.shape[0] < 1:
        shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise ValueError(f"{what}: expected an IMAGE [batch, height, width, 3]; got {shape}")
    return image[..., :3]


def _scaled(image: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """``[N, H, W, 3]`` → ``[N, h, w, 3]``, bilinear with antialiasing (as PIL's resize in the official scripts)."""
    if tuple(image.shape[1:3]) == (h, w):
        return image
    x = F.interpolate(image.movedim(-1, 1).float(), size=(h, w), mode="bilinear", align_corners=False,
                      antialias=True)
    return x.clamp(0, 1).movedim(1, -1).to(image.dtype)


def fit_image(image: torch.Tensor, width: int, height: int, mode: str = "crop") -> torch.Tensor:
    """IMAGE ``[N, H, W, C]`` → ``[N, height, width, 3]``.

    ``crop`` (default): scale to cover width×height keeping the aspect, centre-crop — the official scripts'
    ``Resize(min(height, width))`` + ``CenterCrop`` whenever that already covers the target (images at least
    as wide as the target's aspect, e.g. 16:9 at 512×320; every image at 256×256); for narrower images the
    official transform pads black bars, this crops instead. ``stretch``: resize to width×height, aspect lost.
    ``pad``: fit inside width×height keeping the aspect, black bars around. ``official``: exactly the scripts'
    transform (``scripts/evaluation/inference.py``): ``Resize(min(height, width))`` + ``CenterCrop((height,
    width))``, which pads black where the resized image is smaller than the target (a 4:3 image at 512×320 gets
    43 px bars left and right, a portrait one is cropped in height and padded in width).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize_mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")
    image = _check_image(image, "image")
    n, h, w = image.shape[:3]
    if mode == "official":
        return _official_transform(image, width, height)
    if mode == "stretch" or (h, w) == (height, width):
        return _scaled(image, width, height)
    wider = w * height >= width * h  # image aspect ≥ target aspect
    if (mode == "crop") == wider:  # height is the limiting side
        nh, nw = height, max(1, int(height * w / h))
    else:
        nw, nh = width, max(1, int(width * h / w))
    if mode == "crop":
        nh, nw = max(nh, height), max(nw, width)
        top, left = int(round((nh - height) / 2.0)), int(round((nw - width) / 2.0))
        return _scaled(image, nw, nh)[:, top:top + height, left:left + width]
    nh, nw = min(nh, height), min(nw, width)
    out = torch.zeros((n, height, width, 3), dtype=image.dtype, device=image.device)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[:, top:top + nh, left:left + nw] = _scaled(image, nw, nh)
    return out


def _official_transform(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """torchvision's ``Resize(min(height, width))`` (short side to that size, long side truncated) then
    ``CenterCrop((height, width))`` (zero padding where the image is smaller, then a centred crop), on ``[N, H, W, 3]``."""
    h, w = image.shape[1:3]
    size = min(height, width)
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = _scaled(image, nw, nh)
    if nw < width or nh < height:
        pl, pt = max(0, (width - nw) // 2), max(0, (height - nh) // 2)
        pr, pb = max(0, (width - nw + 1) // 2), max(0, (height - nh + 1) // 2)
        x = F.pad(x, (0, 0, pl, pr, pt, pb))  # last dims first: channels, width, height
        nh, nw = nh + pt + pb, nw + pl + pr
    top, left = int(round((nh - height) / 2.0)), int(round((nw - width) / 2.0))
    return x[:, top:top + height, left:left + width]


def per_video_images(image: torch.Tensor, videos: int, what: str) -> torch.Tensor:
    """One image per video: a single image is shared by every video, a batch of ``videos`` gives one each."""
    image = _check_image(image, what)
    if image.shape[0] == videos:
        return image
    if image.shape[0] == 1:
        return image.expand(videos, -1, -1, -1)
    if videos == 1:
        raise ValueError(f"{what} holds {image.shape[0]} images for batch_size 1: give 1 image (or set batch_size to "
                         f"{image.shape[0]} for one video per image)")
    raise ValueError(f"{what} holds {image.shape[0]} images for batch_size {videos}: give 1 image (shared by every "
                     f"video) or {videos} (one per video)")


def clip_tokens(clip_vision, image: torch.Tensor) -> torch.Tensor:
    """All 257 last-layer tokens (no post-layernorm, no projection), image squashed to 224² (no crop)."""
    with torch.no_grad():
        return clip_vision.encode_image(image, crop=False)["last_hidden_state"]


def concat_latent(first: torch.Tensor, length: int, last: torch.Tensor | None = None) -> torch.Tensor:
    """Concat latent of B videos ``[B·T, C, h, w]`` from their first-frame latents ``[B, C, h, w]``: the first
    latent on every frame, or (interp/loop models, ``last`` given) first and last frame set, the others zero."""
    if last is None:
        return first.repeat_interleave(length, dim=0)
    if last.shape != first.shape:
        raise ValueError(f"first and last latents differ in shape: {tuple(first.shape)} vs {tuple(last.shape)}")
    out = torch.zeros((first.shape[0], length) + tuple(first.shape[1:]), dtype=first.dtype, device=first.device)
    out[:, 0], out[:, -1] = first, last
    return out.flatten(0, 1)


def conditioning_values(first: torch.Tensor, tokens: torch.Tensor, uc_tokens: torch.Tensor, length: int, fps: int,
                        last: torch.Tensor | None = None) -> tuple[dict, dict]:
    """Positive / negative cond values from encoded images: first(/last)-frame VAE latents ``[B, 4, h, w]``,
    CLIP-vision tokens (``[B, 257, D]`` per video or ``[1, 257, D]`` shared) and the negative's tokens."""
    concat = concat_latent(first, length, last)
    common = {"concat_latent_image": concat, "fs": int(fps), "num_video_frames": int(length)}
    return {**common, "clip_vision_tokens": tokens}, {**common, "clip_vision_tokens": uc_tokens}


def check_request(vae, clip_vision, width: int, height: int, length: int, videos: int = 1,
                  interp: bool = False) -> None:
    """The checks every I2V conditioning makes before allocating: encoders present, sizes, batch, memory."""
    if vae is None:
        raise ValueError("no VAE: this checkpoint holds none; connect a stock Load VAE (SD VAE) node")
    if clip_vision is None:
        raise ValueError("no CLIP_VISION: this checkpoint holds none; connect a stock Load CLIP Vision node "
                         "with the OpenCLIP ViT-H/14 vision model")
    if not 1 <= int(videos) <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH}; got {videos}")
    b = int(videos)
    check_size(width, height, length, interp)
    # concat latent + empty latent (B·T × 4 × H/8 × W/8) and the resized images
    check_alloc(2 * nbytes((b * length, 4, height // 8, width // 8)) + 4 * b * nbytes((height, width, 3))
                + vae_encode_need(vae, height, width),
                f"DynamiCrafter Image to Video at {width}x{height} x {length} frames x {b} videos",
                hint="use a smaller size (the models were trained at 512x320 / 1024x576)")


def encode(vae, images: torch.Tensor) -> torch.Tensor:
    """VAE latents ``[N, 4, h, w]`` of images at the video size (an error for a VAE that is not the SD one)."""
    lat = vae.encode(images)
    if lat.ndim != 4 or lat.shape[1] != 4:
        raise ValueError(f"the VAE gave a latent of shape {tuple(lat.shape)}; DynamiCrafter needs the 4-channel SD VAE")
    return lat


def video_conds(clip_vision, start: torch.Tensor, first: torch.Tensor, last: torch.Tensor | None, length: int,
                fps: int) -> tuple[dict, dict, torch.Tensor]:
    """Cond values and the empty latent of ``first.shape[0]`` videos from their start images (at the video size;
    one shared or one per video), first(/last)-frame latents ``[B, 4, h, w]``."""
    tokens = clip_tokens(clip_vision, start)  # [1, …] when one image is shared: ComfyUI repeats it
    uc_tokens = clip_tokens(clip_vision, torch.full_like(start[:1], 0.5))
    pos, neg = conditioning_values(first, tokens, uc_tokens, length, fps, last)
    b, _, h, w = first.shape
    latent = torch.zeros((b * length, 4, h, w), device=comfy.model_management.intermediate_device())
    return pos, neg, latent


def i2v_conditioning(vae, clip_vision, start_image: torch.Tensor, width: int, height: int, length: int, fps: int,
                     end_image: torch.Tensor | None = None, batch_size: int = 1,
                     resize_mode: str = "crop") -> tuple[dict, dict, torch.Tensor]:
    """Values for positive / negative conds, and the empty frames-as-batch latent ``[B·T, 4, H/8, W/8]``.

    ``start_image`` (and ``end_image``) hold one image for every video or one per video. Concat latent: each
    video's first-frame latent on every frame (interp: first and last set, others zero). Image tokens come
    from each video's start image; the negative's from an all-zero image in the model's [-1, 1] space
    (mid-grey here), as the official code.
    """
    check_request(vae, clip_vision, width, height, length, batch_size, end_image is not None)
    b = int(batch_size)
    starts = per_video_images(start_image, b, "start_image")
    shared = starts.shape[0] > 1 and start_image.shape[0] == 1
    start = fit_image(starts[:1] if shared else starts, width, height, resize_mode)
    first = encode(vae, start)
    if shared:
        first = first.expand(b, -1, -1, -1)
    last = None
    if end_image is not None:
        ends = per_video_images(end_image, b, "end_image")
        if end_image.shape[0] == 1 and b > 1:
            last = encode(vae, fit_image(ends[:1], width, height, resize_mode)).expand(b, -1, -1, -1)
        else:
            last = encode(vae, fit_image(ends, width, height, resize_mode))
    return video_conds(clip_vision, start, first, last, length, fps)
