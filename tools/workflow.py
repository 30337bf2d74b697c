"""The test side of workflows: ``*.expect.json`` sidecars, tiny stand-in checkpoints, shipped input pictures.

The UI -> API conversion itself lives in the pack's ``sweep/workflow.py`` (the sweep runner needs it at run time);
its names are re-exported here so tools and tests keep ``import workflow``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import paths

paths.use_pack_root()  # the pack's ``sweep`` package (last on the path: ComfyUI's own top-level modules win)

from sweep.workflow import *  # noqa: E402,F401,F403
from sweep.workflow import (MODE_BYPASS, MODE_MUTED, WorkflowError, _entry_type, _has_control,  # noqa: E402,F401
                            _has_upload, find_nodes, is_api_format, produced_types, widget_inputs)

def api_to_ui(prompt: dict, object_info: dict, *, titles: dict | None = None, models: dict | None = None,
              column_width: int = 360) -> dict:
    """A UI-format workflow (what the editor saves) from an API-format prompt: the inverse of :func:`ui_to_api`
    (``ui_to_api(api_to_ui(p)) == p`` up to ``_meta``), for authoring example workflows in API form.

    Nodes are laid out in columns by their depth in the graph. ``titles``: ``{node id: title}``; ``models``:
    ``{node id: [{"name", "url", "directory"}]}`` written to ``properties.models`` (ComfyUI's missing-models dialog
    offers those downloads)."""
    produced = produced_types(object_info)
    ids = list(prompt)
    depth: dict[str, int] = {}

    def level(nid: str, stack: tuple = ()) -> int:
        if nid in depth:
            return depth[nid]
        if nid in stack:
            raise WorkflowError(f"cycle through node {nid}")
        srcs = [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2
                and isinstance(v[0], str) and v[0] in prompt]
        depth[nid] = 1 + max((level(s, stack + (nid,)) for s in srcs), default=-1)
        return depth[nid]

    for nid in ids:
        level(nid)
    rows: dict[int, int] = {}
    nodes, links = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid in sorted(ids, key=lambda n: (depth[n], int(n) if n.isdigit() else 0)):
        entry = prompt[nid]
        typ = entry["class_type"]
        info = object_info.get(typ)
        if info is None:
            raise WorkflowError(f"node {nid}: {typ!r} is not in /object_info")
        widgets = widget_inputs(info, produced)
        wnames = {w[0] for w in widgets}
        values, ui_inputs = [], []
        for name, wtype, opts in widgets:
            v = entry["inputs"].get(name, opts.get("default"))
            linked = isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in prompt
            if isinstance(v, dict) and "__value__" in v:
                v = v["__value__"]
            values.append(opts.get("default") if linked else v)
            if _has_control(name, wtype, opts):
                values.append("fixed")
            elif _has_upload(opts):
                values.append("image")
        spec = info.get("input", {})
        order = info.get("input_order") or {k: list(spec.get(k, {})) for k in ("required", "optional")}
        for section in ("required", "optional"):
            for name in order.get(section, []):
                typ_in, _ = _entry_type(spec.get(section, {}).get(name))
                v = entry["inputs"].get(name)
                linked = isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in prompt
                if name in wnames and not linked:
                    continue
                item = {"name": name, "type": typ_in if isinstance(typ_in, str) else "COMBO", "link": None}
                if name in wnames:
                    item["widget"] = {"name": name}
                if linked:
                    link_id = len(links) + 1
                    item["link"] = link_id
                    src, slot = v
                    links.append([link_id, int(src), int(slot), int(nid), len(ui_inputs), None])
                    out_links.setdefault((src, int(slot)), []).append(link_id)
                ui_inputs.append(item)
        col = depth[nid]
        y = rows.get(col, 0)
        rows[col] = y + 60 + 26 * (len(ui_inputs) + len(values))
        node = {"id": int(nid), "type": typ, "pos": [40 + col * column_width, 40 + y], "size": [column_width - 40, 100],
                "flags": {}, "order": 0, "mode": 0, "inputs": ui_inputs, "outputs": [], "properties":
                {"Node name for S&R": typ}, "widgets_values": values}
        if titles and nid in titles:
            node["title"] = titles[nid]
        if models and nid in models:
            node["properties"]["models"] = models[nid]
        nodes.append(node)
    by_id = {str(n["id"]): n for n in nodes}
    for n in nodes:
        info = object_info[n["type"]]
        names = info.get("output_name") or info.get("output") or []
        for slot, typ_out in enumerate(info.get("output") or []):
            n["outputs"].append({"name": names[slot] if slot < len(names) else typ_out, "type": typ_out,
                                 "links": out_links.get((str(n["id"]), slot), []), "slot_index": slot})
    for link in links:
        link[5] = by_id[str(link[1])]["outputs"][link[2]]["type"]
    for i, nid in enumerate(sorted(ids, key=lambda n: (depth[n], n))):
        by_id[nid]["order"] = i
    return {"last_node_id": max(int(n) for n in ids), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


EXPECT_DIR = Path(__file__).resolve().parent.parent / "tests" / "integration" / "expect"


def load_expect(path: Path | str) -> dict:
    """The ``<name>.expect.json`` sidecar of a workflow ({} when absent; format in tests/integration): beside the
    file, else in ``tests/integration/expect/`` (where the example workflows' sidecars live, so that
    ``example_workflows/`` holds only loadable workflows — ComfyUI's template browser lists every .json there)."""
    path = Path(path)
    side = path.with_name(path.stem + ".expect.json")
    if not side.is_file():
        side = EXPECT_DIR / (path.stem + ".expect.json")
    return json.loads(side.read_text()) if side.is_file() else {}


PACK_LOADER = "I2VMotion_LoadDynamiCrafter"
#: loader nodes → (input naming the file, models folder it is read from); core's and the pack's
LOADERS = {"CheckpointLoaderSimple": ("ckpt_name", "checkpoints"),
           "ImageOnlyCheckpointLoader": ("ckpt_name", "checkpoints"),
           "UNETLoader": ("unet_name", "diffusion_models"), "VAELoader": ("vae_name", "vae"),
           "CLIPVisionLoader": ("clip_name", "clip_vision"), "CLIPLoader": ("clip_name", "text_encoders"),
           "LoraLoader": ("lora_name", "loras"), "LoraLoaderModelOnly": ("lora_name", "loras"),
           PACK_LOADER: ("ckpt_name", "checkpoints"), "I2VMotion_LoraTaskVector": ("lora_name", "loras")}
#: the test-only node (tests/support/comfy_nodes) that stands in for CLIPTextEncode on core's Wan text encoder
WAN_TEXT_STANDIN = {"class_type": "I2VTest_WanTextEncode", "drop": ["clip"]}


def model_files(prompt: dict) -> dict[str, list[str]]:
    """``{"<folder>/<file>": [node ids]}`` of every model file the prompt's loader nodes (:data:`LOADERS`) name."""
    out: dict[str, list[str]] = {}
    for nid, node in prompt.items():
        entry = LOADERS.get(node.get("class_type"))
        name = node.get("inputs", {}).get(entry[0]) if entry else None
        if isinstance(name, str):
            out.setdefault(f"{entry[1]}/{name}", []).append(nid)
    return out


MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")


def model_files_ui(wf: dict) -> dict[str, list[str]]:
    """:func:`model_files` of a UI-format workflow read without ``/object_info``: the model-file-looking widget
    values of its (not muted or bypassed) loader nodes."""
    if is_api_format(wf):
        return model_files(wf.get("prompt", wf) if isinstance(wf.get("prompt"), dict) else wf)
    out: dict[str, list[str]] = {}
    for node in wf.get("nodes", []):
        entry = LOADERS.get(node.get("type"))
        if entry is None or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        values = node.get("widgets_values") or []
        values = [values.get(entry[0])] if isinstance(values, dict) else values
        for v in values:
            if isinstance(v, str) and v.lower().endswith(MODEL_SUFFIXES):
                out.setdefault(f"{entry[1]}/{v}", []).append(str(node.get("id")))
    return out


def tiny_models(prompt: dict, expect: dict) -> dict[str, dict]:
    """Stand-ins a run on random weights needs: ``{"<models sub-path>": spec}`` (``support.standins``: a ``kind``
    and its arguments; no ``kind``: a DynamiCrafter checkpoint, or ``arch``'s).

    One DynamiCrafter per ``ckpt_name`` of the pack's loader, under that
    very name in ``checkpoints/`` (variant: the loader's, or "256" when the name says so, else "512"), and the
    official Wan files (``standins.guess``: ``wan2.1_i2v_480p_14B…``, ``wan_2.1_vae…``, ``clip_vision_h…``, ...)
    any core loader names; then ``expect["tiny_models"]`` entries, which win. The Wan text encoder is never made: see
    :func:`tiny_replacements`.
    """
    import paths

    paths.use_support()
    from support.standins import guess

    out: dict[str, dict] = {}
    for rel, ids in model_files(prompt).items():
        inputs = prompt[ids[0]]["inputs"]
        if prompt[ids[0]]["class_type"] == PACK_LOADER:
            variant = inputs.get("variant", "auto")
            if variant == "auto":
                variant = "256" if "256" in Path(rel).stem else "512"
            out[rel] = {"variant": variant}
        elif not rel.startswith("text_encoders/") and (spec := guess(rel)) is not None:
            out[rel] = spec
    out.update(expect.get("tiny_models") or {})  # the sidecar's entries win (seeds, narrower VAEs, LoRAs)
    return out


def _source(value: Any) -> str | None:
    return str(value[0]) if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) else None


def tiny_replacements(prompt: dict, expect: dict) -> dict[str, dict]:
    """Node swaps for a run on stand-ins: ``{node id: {"class_type", "drop": [inputs], "inputs": {...}}}``.

    By default every ``CLIPTextEncode`` whose ``clip`` comes from a ``CLIPLoader`` of type ``wan`` (umT5-XXL, which
    no stand-in can replace) becomes :data:`WAN_TEXT_STANDIN` (same text, umT5-shaped CONDITIONING). The sidecar's
    ``tiny_replace`` (``{"<node id or class_type>": swap or null}``) adds swaps or, with null, cancels them.
    """
    out: dict[str, dict] = {}
    for nid in find_nodes(prompt, "CLIPTextEncode"):
        src = _source(prompt[nid]["inputs"].get("clip"))
        loader = prompt.get(src or "", {})
        if loader.get("class_type") == "CLIPLoader" and loader.get("inputs", {}).get("type") == "wan":
            out[nid] = copy.deepcopy(WAN_TEXT_STANDIN)
    for key, swap in (expect.get("tiny_replace") or {}).items():
        ids = [key] if key in prompt else find_nodes(prompt, key)
        if not ids:
            raise KeyError(f"tiny_replace target {key!r} is neither a node id nor a class type in the prompt")
        for nid in ids:
            if swap is None:
                out.pop(nid, None)
            else:
                out[nid] = copy.deepcopy(swap)
    return out


def apply_replacements(prompt: dict, swaps: dict[str, dict]) -> list[str]:
    """Apply :func:`tiny_replacements`: set each node's ``class_type``, drop the named inputs, merge ``inputs``;
    then delete the nodes a dropped link came from once nothing uses them (e.g. the Wan ``CLIPLoader``), and so on
    upstream. Returns the ids of the deleted nodes."""
    orphans: list[str] = []
    for nid, swap in swaps.items():
        node = prompt[nid]
        node["class_type"] = swap["class_type"]
        for name in swap.get("drop", []):
            src = _source(node["inputs"].pop(name, None))
            if src is not None:
                orphans.append(src)
        node["inputs"].update(swap.get("inputs", {}))
    removed: list[str] = []
    while orphans:
        nid = orphans.pop()
        if nid not in prompt or any(_source(v) == nid for n in prompt.values() for v in n.get("inputs", {}).values()):
            continue
        orphans += [s for v in prompt.pop(nid).get("inputs", {}).values() if (s := _source(v)) is not None]
        removed.append(nid)
    return removed


def input_files(wf_path: Path | str, prompt: dict, expect: dict) -> dict[str, Path | None]:
    """``LoadImage`` file names of a prompt mapped to the shipped file (``expect["inputs"]`` paths are
    relative to the workflow; else a same-named file beside it or in ``inputs/``), or None if none ships."""
    base = Path(wf_path).resolve().parent
    mapping = expect.get("inputs") or {}
    out: dict[str, Path | None] = {}
    for nid in find_nodes(prompt, "LoadImage"):
        name = prompt[nid]["inputs"].get("image")
        if not isinstance(name, str):
            continue
        cands = ([base / mapping[name]] if name in mapping else []) + [base / name, base / "inputs" / name]
        out[name] = next((c for c in cands if c.is_file()), None)
    return out
