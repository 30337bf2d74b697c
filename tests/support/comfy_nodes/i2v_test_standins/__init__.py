"""Test-only ComfyUI nodes for headless runs on tiny random weights (never shipped: ``tests/`` is left out of the
Registry archive, and only test and demo servers load this folder, beside the pack: ``comfy_server.TEST_NODES``).

``I2VTest_WanTextEncode``: what ``CLIPTextEncode`` gives for core's Wan text encoder (umT5-XXL, 5.7 B parameters:
nothing here can run it) — CONDITIONING ``[[cond [1, 512, 4096], {"pooled_output": None}]]`` — made from the text
alone by ``support.wan.text_conditioning``. ``workflow.apply_replacements`` swaps it in for each CLIPTextEncode fed by
a Wan CLIPLoader when a workflow runs on stand-ins (the sidecar's ``tiny_replace``).
"""
from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[3]  # .../tests (this folder may be reached through a symlink)
if str(_TESTS) not in sys.path:
    sys.path.append(str(_TESTS))

from support import wan  # noqa: E402


class WanTextEncodeStandIn:
    """CLIPTextEncode for Wan without umT5-XXL: same text in, umT5-shaped CONDITIONING out."""

    CATEGORY = "testing/i2v-motion"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    DESCRIPTION = ("Test stand-in for CLIPTextEncode on core's Wan text encoder: umT5-XXL-shaped conditioning "
                   "[1, 512, 4096] drawn from the text (one seeded row per word), no text model.")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True})},
                "optional": {"tokens": ("INT", {"default": wan.TEXT_TOKENS, "min": 1, "max": 4096})}}

    def encode(self, text: str, tokens: int = wan.TEXT_TOKENS) -> tuple[list]:
        return (wan.text_conditioning(text, tokens),)


NODE_CLASS_MAPPINGS = {"I2VTest_WanTextEncode": WanTextEncodeStandIn}
NODE_DISPLAY_NAME_MAPPINGS = {"I2VTest_WanTextEncode": "Wan Text Encode (umT5 stand-in, tests only)"}
