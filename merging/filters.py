"""Key filters: which weights of an I2V diffusion model take part in a merge.

Keys are ComfyUI ModelPatcher keys (``diffusion_model.input_blocks.1.2.proj_in.weight``). Presets name
the parts of an I2V UNet for DynamiCrafter (this pack's backbone) and SVD (ComfyUI's own model); a
custom regular expression selects anything else. Only parameters under ``diffusion_model.`` are ever
candidates, so schedule buffers (``model_sampling.*``, ``betas``, ``alphas_cumprod`` ...) never take part.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

DIFFUSION_PREFIX = "diffusion_model."
RESAMPLER_PREFIX = "diffusion_model.image_proj_model."

PRESETS: tuple[str, ...] = ("all", "temporal", "spatial", "image_cross_attention", "resampler", "custom")
PRESET_HELP: dict[str, str] = {
    "all": "every diffusion-model weight (UNet and, for DynamiCrafter, the Resampler)",
    "temporal": "temporal layers only (DynamiCrafter: temopral_conv, init_attn, temporal transformers at "
                "index 2 of attention blocks; SVD: time_stack, time_mixer, time_pos_embed, time_mix*)",
    "spatial": "UNet weights that are not temporal and not the Resampler",
    "image_cross_attention": "image cross-attention (DynamiCrafter: attn2.to_k_ip / to_v_ip (+ attn2.alpha "
                             "on 256); SVD: every attn2, whose only context is the CLIP image embedding)",
    "resampler": "the DynamiCrafter Resampler (diffusion_model.image_proj_model.*)",
    "custom": "keys matching the custom regular expression (re.search on the ModelPatcher key)",
}

# Names of schedule buffers; never merged even if a backbone registers them inside the diffusion model.
_SCHEDULE_NAMES = re.compile(
    r"(^|\.)(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|"
    r"log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|"
    r"posterior_\w+|scale_arr|sigmas|log_sigmas|logvar)$")

# name-based temporal parts (any architecture)
_TEMPORAL_NAMES = re.compile(
    r"temopral_conv|temporal_conv"                                 # DynamiCrafter ResBlock temporal convs
    r"|^diffusion_model\.init_attn\."                               # DynamiCrafter first temporal attention
    r"|(^|\.)time_(stack|mixer|pos_embed|mix\w*)(\.|$)")            # SVD / comfy video blocks
# DynamiCrafter only: the TemporalTransformer is module 2 of every attention block (spatial is 1)
_DC_TEMPORAL_BLOCKS = re.compile(r"^diffusion_model\.((input_blocks|output_blocks)\.\d+|middle_block)\.2\.")
_DC_IMAGE_XATTN = re.compile(r"\.attn2\.(to_k_ip|to_v_ip)\.|\.attn2\.alpha$")
_ATTN2 = re.compile(r"\.attn2\.")


@dataclass(frozen=True)
class KeyFilter:
    """A preset plus an optional regular expression (ANDed with the preset unless the preset is custom)."""

    preset: str = "all"
    regex: str = ""

    def describe(self) -> dict:
        return {"preset": self.preset, "regex": self.regex}

    def predicate(self, keys: Iterable[str]) -> Callable[[str], bool]:
        """A predicate over ModelPatcher keys; ``keys`` (the model's keys) tells the architecture apart."""
        return make_predicate(self.preset, self.regex, keys)


def is_schedule_key(key: str) -> bool:
    return bool(_SCHEDULE_NAMES.search(key))


def is_temporal_key(key: str, architecture: str = "dynamicrafter") -> bool:
    """Temporal layer? Block-index rules apply to DynamiCrafter only (SVD's index 2 is spatial)."""
    if _TEMPORAL_NAMES.search(key):
        return True
    return architecture == "dynamicrafter" and bool(_DC_TEMPORAL_BLOCKS.search(key))


def detect_architecture(keys: Iterable[str]) -> str:
    """``"dynamicrafter"``, ``"svd"`` or ``"generic"`` from key names alone."""
    keys = list(keys)
    if any(("temopral_conv" in k) or k.startswith(RESAMPLER_PREFIX) for k in keys):
        return "dynamicrafter"
    if any(".time_stack." in k or ".time_mixer." in k for k in keys):
        return "svd"
    return "generic"


def _compile(regex: str) -> re.Pattern:
    try:
        return re.compile(regex)
    except re.error as e:
        raise ValueError(f"invalid custom regular expression {regex!r}: {e}") from None


def make_predicate(preset: str, regex: str, keys: Iterable[str]) -> Callable[[str], bool]:
    """Build the key predicate for ``preset`` (one of PRESETS) and ``regex``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown filter preset {preset!r}; expected one of {', '.join(PRESETS)}")
    regex = (regex or "").strip()
    if preset == "custom" and not regex:
        raise ValueError("filter preset 'custom' needs a regular expression (e.g. 'input_blocks\\.1\\.')")
    extra = _compile(regex) if regex else None
    keys = list(keys)
    arch = detect_architecture(keys)

    if preset == "all" or preset == "custom":
        base = lambda k: True  # noqa: E731
    elif preset == "temporal":
        base = lambda k: is_temporal_key(k, arch)  # noqa: E731
    elif preset == "spatial":
        base = lambda k: not is_temporal_key(k, arch) and not k.startswith(RESAMPLER_PREFIX)  # noqa: E731
    elif preset == "image_cross_attention":
        if any(_DC_IMAGE_XATTN.search(k) for k in keys):
            base = lambda k: bool(_DC_IMAGE_XATTN.search(k))  # noqa: E731
        else:
            base = lambda k: bool(_ATTN2.search(k))  # noqa: E731
    else:  # resampler
        base = lambda k: k.startswith(RESAMPLER_PREFIX)  # noqa: E731

    def pred(k: str) -> bool:
        if not k.startswith(DIFFUSION_PREFIX) or is_schedule_key(k):
            return False
        if not base(k):
            return False
        return extra is None or bool(extra.search(k))

    return pred


def select_keys(keys: Iterable[str], preset: str = "all", regex: str = "") -> list[str]:
    """The keys (in the given order) that the filter selects."""
    keys = list(keys)
    pred = make_predicate(preset, regex, keys)
    return [k for k in keys if pred(k)]
