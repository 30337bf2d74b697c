"""comfyui-i2v-motion: image-to-video with controllable motion (DynamiCrafter, EDG merging, IVA0 layouts)."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io


class I2VMotionExtension(ComfyExtension):
    """Lists every node of the pack; each ``nodes/*.py`` module exports ``NODES``."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .nodes import all_nodes
        from .nodes.merging import clean_bake_partials

        clean_bake_partials()  # what bakes killed mid-way left behind (both hosts call this at start-up)
        return all_nodes()


async def comfy_entrypoint() -> ComfyExtension:
    return I2VMotionExtension()


WEB_DIRECTORY = "./web"  # the Layout Editor and Load Layout Case preview (web/js), node docs (web/docs)
