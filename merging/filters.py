"""Key filters: which weights of an I2V diffusion model take part in a merge.

Keys are ComfyUI ModelPatcher keys (``diffusion_model.input_blocks.1.2.proj_in.weight``). The presets are the
backbone families' own (``families``: EDG's temporal/spatial split, image cross-attention, the Resampler, Wan's
attention/FFN/modulation parts); ``all`` and a ``custom`` regular expression work on any model. Only parameters
under ``diffusion_model.`` are ever candidates, so schedule buffers (``model_sampling.*``, ``betas``,
``alphas_cumprod`` ...) never take part.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from .. import families
from ..families import DIFFUSION_PREFIX

PRESETS: tuple[str, ...] = families.preset_names()
PRESET_HELP: dict[str, str] = families.preset_help()

# Names of schedule buffers; never merged even if a backbone registers them inside the diffusion model.
_SCHEDULE_NAMES = re.compile(
    r"(^|\.)(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|"
    r"log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|"
    r"posterior_\w+|scale_arr|sigmas|log_sigmas|logvar)$")


@dataclass(frozen=True)
class KeyFilter:
    """A preset plus an optional regular expression (ANDed with the preset unless the preset is custom)."""

    preset: str = "all"
    regex: str = ""

    def describe(self) -> dict:
        return {"preset": self.preset, "regex": self.regex}

    def predicate(self, keys: Iterable[str]) -> Callable[[str], bool]:
        """A predicate over ModelPatcher keys; ``keys`` (the model's keys) tell the family apart."""
        return make_predicate(self.preset, self.regex, keys)


def is_schedule_key(key: str) -> bool:
    return bool(_SCHEDULE_NAMES.search(key))


def detect_architecture(keys: Iterable[str]) -> str:
    """The family name (``"dynamicrafter"``, ``"svd"``, ``"wan"`` or ``"generic"``) from key names alone."""
    return families.of_keys(keys).name


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
    family = families.of_keys(keys)
    if preset in ("all", "custom"):
        base: Callable[[str], bool] = lambda k: True  # noqa: E731
    else:
        found = family.preset(preset)
        if found is None:
            offered = ", ".join(["all"] + [p.name for p in family.presets] + ["custom"])
            raise ValueError(f"filter preset {preset!r} is not defined for {family.title} models; "
                             f"their presets are: {offered}")
        base = found.match

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
