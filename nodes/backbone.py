"""Nodes: load DynamiCrafter as a native MODEL (+ CLIP, VAE, CLIP_VISION), image-to-video conditioning."""
from __future__ import annotations

import logging

import torch

import folder_paths
from comfy_api.latest import io

from ..comfy_bridge.sampling import set_cond_values
from ..backbones.checkpoint import CheckpointError
from ..backbones.conditioning import MAX_BATCH, RESIZE_MODES, fit_image, i2v_conditioning
from ..backbones.keyframes import SEAMS, gather_keyframes, join_segments, keyframe_conditioning
from ..backbones.loader import load_dynamicrafter
from ..backbones.model import VARIANTS
from ..limits import MAX_FRAMES

log = logging.getLogger("i2v_motion")
FOLDERS = ("checkpoints", "diffusion_models")
# weight_dtype → (storage dtype, fp8 optimizations); the fp8 choices are those of ComfyUI's own
# diffusion-model loader (UNETLoader): stored in fp8, computed in the device's dtype
DTYPES: dict[str, tuple[torch.dtype | None, bool]] = {
    "default": (None, False), "fp16": (torch.float16, False), "bf16": (torch.bfloat16, False),
    "fp32": (torch.float32, False), "fp8_e4m3fn": (torch.float8_e4m3fn, False),
    "fp8_e4m3fn_fast": (torch.float8_e4m3fn, True), "fp8_e5m2": (torch.float8_e5m2, False)}


def checkpoint_names() -> list[str]:
    """Files in models/checkpoints and models/diffusion_models (checkpoints first, de-duplicated)."""
    names: list[str] = []
    for folder in FOLDERS:
        for n in folder_paths.get_filename_list(folder):
            if n not in names:
                names.append(n)
    return names


def resolve_checkpoint(name: str) -> str:
    for folder in FOLDERS:
        path = folder_paths.get_full_path(folder, name)
        if path:
            return path
    dirs = [d for f in FOLDERS for d in folder_paths.get_folder_paths(f)]
    raise CheckpointError(f"checkpoint {name!r} not found in {dirs}; expected a DynamiCrafter .ckpt, "
                          ".safetensors or .pt file there")


class LoadDynamiCrafter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LoadDynamiCrafter",
            display_name="Load DynamiCrafter",
            category="i2v_motion/backbone",
            description="Loads an official DynamiCrafter checkpoint (256/512/1024/interp, EDG merges) as a native "
                        "MODEL. CLIP, VAE and CLIP_VISION come out when the file holds them (None otherwise: "
                        "use the stock loaders).",
            inputs=[
                io.Combo.Input("ckpt_name", options=checkpoint_names(),
                               tooltip="A DynamiCrafter checkpoint from models/checkpoints or models/diffusion_models "
                                       "(.ckpt read weights-only, .safetensors, EDG .pt)."),
                io.Combo.Input("variant", options=["auto", *VARIANTS], default="auto",
                               tooltip="auto: 256 is told by its weights; 512 vs 1024 vs interp (identical weight "
                                       "layouts) by the file name, else 512. Sets prediction type, noise schedule "
                                       "and default fps."),
                io.Combo.Input("weight_dtype", options=list(DTYPES), default="default",
                               tooltip="Storage dtype of the UNet + Resampler weights. default: ComfyUI chooses "
                                       "for your device. fp8_*: half the memory of fp16, computed in the device's "
                                       "dtype (fp8_e4m3fn_fast also uses fp8 matmuls on GPUs that have them); "
                                       "merges of an fp8 model are rounded to fp8 per key."),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.Vae.Output(display_name="VAE"), io.ClipVision.Output(display_name="CLIP_VISION")],
        )

    @classmethod
    def execute(cls, ckpt_name: str, variant: str = "auto", weight_dtype: str = "default") -> io.NodeOutput:
        path = resolve_checkpoint(ckpt_name)
        if weight_dtype not in DTYPES:
            raise ValueError(f"weight_dtype {weight_dtype!r} is not one of {', '.join(DTYPES)}")
        dtype, fp8_fast = DTYPES[weight_dtype]
        loaded = load_dynamicrafter(path, variant, dtype, fp8_optimizations=fp8_fast)
        missing = [n for n, v in (("CLIP", loaded.clip), ("VAE", loaded.vae), ("CLIP_VISION", loaded.clip_vision)) if v is None]
        if missing:
            log.info("%s holds no %s; use the stock loaders for those", ckpt_name, ", ".join(missing))
        return io.NodeOutput(loaded.model, loaded.clip, loaded.vae, loaded.clip_vision)


_RESIZE_TIP = ("How images are brought to width×height. crop (default): keep the aspect, scale to cover and "
               "centre-crop — the official scripts' result whenever the image is at least as wide as the target "
               "(16:9 at 512×320, any image at 256×256). official: exactly the scripts' Resize(short side) + "
               "CenterCrop, which pads black where the image is narrower (a 4:3 image at 512×320 gets side bars). "
               "stretch: resize to width×height (aspect lost). pad: keep the aspect, fit inside, black bars.")


def _cond_output(positive, negative, values_pos: dict, values_neg: dict, latent) -> io.NodeOutput:
    """The I2V nodes' outputs: the conds with their image/fps values set, and the empty video latent."""
    return io.NodeOutput(set_cond_values(positive, values_pos),
                         set_cond_values(negative, values_neg), {"samples": latent})


class DynamiCrafterImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_DynamiCrafterImageToVideo",
            display_name="DynamiCrafter Image to Video",
            category="i2v_motion/backbone",
            description="Image-to-video conditioning for DynamiCrafter: first-frame latent concat, CLIP-vision "
                        "image tokens (negative: tokens of an all-zero image, as the official code), fps. "
                        "batch_size > 1 makes several videos in one latent (frames-as-batch, video after video); "
                        "split the decoded frames with RebatchImages (batch_size = length) to save each video.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Text conditioning (CLIPTextEncode with the OpenCLIP-H CLIP)."),
                io.Conditioning.Input("negative", tooltip="Negative text conditioning; the official code uses an empty prompt."),
                io.Vae.Input("vae", tooltip="The SD VAE (from the checkpoint or a stock VAE loader)."),
                io.ClipVision.Input("clip_vision", tooltip="OpenCLIP ViT-H/14 vision tower (from the checkpoint or CLIP Vision Loader)."),
                io.Image.Input("start_image", tooltip="The still image to animate: one image for every video, or a "
                                                      "batch of batch_size images (one per video). Brought to "
                                                      "width×height by resize_mode."),
                io.Int.Input("width", default=512, min=64, max=2048, step=64,
                             tooltip="Video width in pixels, a multiple of 64. Paper defaults: 512 (512 model), 1024, 256."),
                io.Int.Input("height", default=320, min=64, max=2048, step=64,
                             tooltip="Video height in pixels, a multiple of 64. Paper defaults: 320, 576, 256."),
                io.Int.Input("length", default=16, min=1, max=MAX_FRAMES,
                             tooltip="Frames per video. The released models were trained on 16; with 16 each frame gets "
                                     "its own image tokens, other lengths share all tokens (official fallback). For "
                                     "longer videos put core Context Windows (Manual) on the MODEL (context_length 16, dim 0)."),
                io.Int.Input("fps", default=24, min=1, max=100,
                             tooltip="fps conditioning (frame stride for the 256 model). Paper: 24 (512), 10 (1024), 3 (256)."),
                io.Image.Input("end_image", optional=True,
                               tooltip="Interp/loop models only: the last frame (first and last latents are set, the "
                                       "rest zero); one image, or one per video."),
                io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH, optional=True,
                             tooltip="Videos sampled together in one latent of batch_size × length frames (each video "
                                     "its own noise, guidance rescale and context). Stock VAE Decode gives all frames "
                                     "video after video; RebatchImages (batch_size = length) splits them per video."),
                io.Combo.Input("resize_mode", options=list(RESIZE_MODES), default="crop", optional=True,
                               tooltip=_RESIZE_TIP),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, positive, negative, vae, clip_vision, start_image, width: int, height: int, length: int,
                fps: int, end_image=None, batch_size: int = 1, resize_mode: str = "crop") -> io.NodeOutput:
        values_pos, values_neg, latent = i2v_conditioning(vae, clip_vision, start_image, width, height, length,
                                                          fps, end_image, batch_size, resize_mode)
        return _cond_output(positive, negative, values_pos, values_neg, latent)


class ResizeImageForVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_ResizeImage",
            display_name="Resize Image for I2V (crop / official / stretch / pad)",
            category="i2v_motion/backbone",
            description="Brings images to the video size exactly as DynamiCrafter Image to Video does (crop: scale "
                        "to cover + centre crop; official: the scripts' resize-short-side + CenterCrop, bars where the "
                        "image is narrower). Use it to preview what the model sees, or to give Layout Guide Video / "
                        "keyframe nodes the same framing.",
            inputs=[
                io.Image.Input("image", tooltip="Image(s) to resize; every image of a batch the same way."),
                io.Int.Input("width", default=512, min=64, max=2048, step=64, tooltip="Target width in pixels."),
                io.Int.Input("height", default=320, min=64, max=2048, step=64, tooltip="Target height in pixels."),
                io.Combo.Input("resize_mode", options=list(RESIZE_MODES), default="crop", tooltip=_RESIZE_TIP),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, image, width: int, height: int, resize_mode: str = "crop") -> io.NodeOutput:
        return io.NodeOutput(fit_image(image, width, height, resize_mode))


MAX_KEYFRAME_INPUTS = 8


class DynamiCrafterKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        keys = [io.Image.Input(f"keyframe_{i}", optional=i > 2,
                               tooltip=f"Keyframe {i} (a batch counts as several keyframes in order)."
                                       + (" Optional." if i > 2 else "")) for i in range(1, MAX_KEYFRAME_INPUTS + 1)]
        return io.Schema(
            node_id="I2VMotion_DynamiCrafterKeyframes",
            display_name="DynamiCrafter Keyframes to Segments (interp)",
            category="i2v_motion/backbone",
            description="For DynamiCrafter interp/loop models: N keyframes → N−1 interpolation segments (keyframe k "
                        "first, keyframe k+1 last), conditioned as one batch of N−1 videos. Sample the latent with "
                        "any sampler, VAE Decode, then Join Keyframe Segments (same length) for one video without "
                        "repeated frames. Loop: repeat the first keyframe at the end.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Text conditioning, the same for every segment."),
                io.Conditioning.Input("negative", tooltip="Negative text conditioning (official: empty prompt)."),
                io.Vae.Input("vae", tooltip="The SD VAE."),
                io.ClipVision.Input("clip_vision", tooltip="OpenCLIP ViT-H/14 vision tower; each segment gets the "
                                                           "image tokens of its first keyframe (official interp)."),
                keys[0], keys[1],
                io.Int.Input("width", default=512, min=64, max=2048, step=64, tooltip="Video width, a multiple of 64."),
                io.Int.Input("height", default=320, min=64, max=2048, step=64, tooltip="Video height, a multiple of 64."),
                io.Int.Input("length", default=16, min=2, max=MAX_FRAMES,
                             tooltip="Frames per segment, both keyframes included (trained: 16). The joined video "
                                     "has (N−1)·(length−1)+1 frames."),
                io.Int.Input("fps", default=24, min=1, max=100, tooltip="fps conditioning (512 interp: 24; lower = "
                                                                        "more motion)."),
                io.Combo.Input("resize_mode", options=list(RESIZE_MODES), default="crop", tooltip=_RESIZE_TIP),
                *keys[2:],
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent", tooltip="N−1 segments of length frames, segment after "
                                                                     "segment.")],
        )

    @classmethod
    def execute(cls, positive, negative, vae, clip_vision, keyframe_1, keyframe_2, width: int, height: int,
                length: int, fps: int, resize_mode: str = "crop", **more) -> io.NodeOutput:
        imgs = [keyframe_1, keyframe_2] + [more.get(f"keyframe_{i}") for i in range(3, MAX_KEYFRAME_INPUTS + 1)]
        keys = gather_keyframes(imgs, width, height, resize_mode)
        values_pos, values_neg, latent = keyframe_conditioning(vae, clip_vision, keys, width, height, length, fps)
        return _cond_output(positive, negative, values_pos, values_neg, latent)


class JoinKeyframeSegments(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_JoinSegments",
            display_name="Join Keyframe Segments",
            category="i2v_motion/backbone",
            description="Decoded frames of consecutive segments (DynamiCrafter Keyframes to Segments) → one video: "
                        "where two segments meet (the same keyframe) one frame is kept, so nothing repeats.",
            inputs=[
                io.Image.Input("images", tooltip="All frames from VAE Decode, segment after segment."),
                io.Int.Input("segment_length", default=16, min=2, max=MAX_FRAMES,
                             tooltip="Frames per segment: the length of the keyframe node."),
                io.Combo.Input("seam", options=list(SEAMS), default="next_segment",
                               tooltip="Which frame stands for a keyframe where segments meet: the next segment's "
                                       "first, the previous segment's last, or their average."),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, images, segment_length: int, seam: str = "next_segment") -> io.NodeOutput:
        return io.NodeOutput(join_segments(images, segment_length, seam))


NODES = [LoadDynamiCrafter, DynamiCrafterImageToVideo, ResizeImageForVideo, DynamiCrafterKeyframes,
         JoinKeyframeSegments]
