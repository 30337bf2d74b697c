"""Convert ComfyUI UI-format workflows (what the editor saves) to API-format prompts (stdlib only).

The conversion mirrors the frontend's ``graphToPrompt`` (1.32.9 with ComfyUI 0.3.75, 1.49.6 with 0.33),
driven by the server's ``GET /object_info`` — which inputs are widgets is read from it and from the saved
node, never from a fixed list of widget types:

* An input is a widget unless it is ``forceInput``. Where the saved node lists the input, it is a widget
  exactly when that entry carries ``"widget"``; otherwise it is one when its type is a value type
  (INT/FLOAT/STRING/BOOLEAN/COMBO or a legacy list-combo, or its ``widgetType``), when object_info marks it
  as a widget (``socketless``, ``widgetType``, a dynamic combo's ``options``), or when no node outputs its
  type and it has a ``default`` (a widget kind this converter has never seen).
* ``widgets_values`` (a list) map in order onto the widget inputs, required then optional
  (``input_order``). A dynamic combo (``COMFY_DYNAMICCOMBO_V3``, recognised by its ``options`` of
  ``{key, inputs}``) is followed by the widgets of its selected option, named ``<combo>.<input>``
  (recursively), as the frontend splices them in. Extra values the editor stores that are not inputs are
  skipped: the ``control_after_generate`` mode after a seed-like INT (one value) or a COMBO (mode and filter
  text), and the upload button's value after an ``image_upload``/``video_upload``/... combo. Widgets the
  frontend never saves (``IMAGECOMPARE``) take no value and send its initial value. A dict
  ``widgets_values`` maps by name. Missing trailing values take the input's default. List values go to the
  API wrapped as ``{"__value__": [...]}``, as the frontend sends them.
* Links become ``[source_node_id, output_slot]``; a linked input overrides its widget value (a
  "converted widget").
* ``Reroute`` nodes are followed to their source, ``PrimitiveNode`` values are written into their
  targets, ``Note``/``MarkdownNote`` are dropped, muted nodes (mode 2) are dropped and bypassed nodes
  (mode 4) pass their first type-matching input through, as the editor does.
* Subgraphs are not supported (clear error).

``to_api(wf, object_info)`` accepts either format and returns API format.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize", "increment-wrap"}
VALUE_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# widgets the frontend (1.49.6) marks serialize=false: no widgets_values slot, this initial API value
UNSAVED_WIDGETS = {"IMAGECOMPARE": {"__value__": ["", ""]}}
VIRTUAL_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODE_MUTED, MODE_BYPASS = 2, 4


class WorkflowError(ValueError):
    """The workflow cannot be converted (unknown node type, dangling link, subgraph, ...)."""


def load(path: Path | str) -> dict:
    """Read a workflow JSON file (UI or API format)."""
    return json.loads(Path(path).read_text())


def is_api_format(wf: dict) -> bool:
    """True for ``{id: {"class_type": ..., "inputs": {...}}}`` (or ``{"prompt": {...}}``)."""
    if "nodes" in wf and "links" in wf:
        return False
    body = wf.get("prompt", wf) if isinstance(wf.get("prompt"), dict) else wf
    return bool(body) and all(isinstance(v, dict) and "class_type" in v for v in body.values())


def to_api(wf: dict, object_info: dict, warnings: list[str] | None = None) -> dict:
    """API-format prompt (a fresh copy) from a UI- or API-format workflow."""
    if is_api_format(wf):
        body = wf["prompt"] if isinstance(wf.get("prompt"), dict) else wf
        return json.loads(json.dumps(body))
    return ui_to_api(wf, object_info, warnings)


_PRODUCED: dict[int, set] = {}


def produced_types(object_info: dict) -> set[str]:
    """Every type some node outputs (socket types); cached per object_info dict."""
    key = id(object_info)
    if key not in _PRODUCED:
        out: set[str] = set()
        for info in object_info.values():
            for t in info.get("output", []) or []:
                if isinstance(t, str):
                    out.update(x.strip() for x in t.split(","))
        _PRODUCED.clear()
        _PRODUCED[key] = out
    return _PRODUCED[key]


def _entry_type(entry: Any) -> tuple[Any, dict]:
    typ = entry[0] if isinstance(entry, (list, tuple)) and entry else entry
    opts = entry[1] if isinstance(entry, (list, tuple)) and len(entry) > 1 and isinstance(entry[1], dict) else {}
    return typ, opts


def dynamic_combo_options(opts: dict) -> list[dict] | None:
    """The options of a dynamic combo input (``[{"key", "inputs"}, ...]``), else None."""
    options = opts.get("options")
    if isinstance(options, list) and options and all(isinstance(o, dict) and "key" in o and "inputs" in o
                                                     for o in options):
        return options
    return None


def is_widget(name: str, typ: Any, opts: dict, produced: set | None = None,
              ui_inputs: dict[str, bool] | None = None) -> bool:
    """Whether an input is a widget (see module doc); ``ui_inputs``: the saved node's input names → has widget."""
    if opts.get("forceInput"):
        return False
    if ui_inputs is not None and name in ui_inputs:
        return ui_inputs[name]
    wtype = opts.get("widgetType") or typ
    if isinstance(wtype, list) or wtype in VALUE_TYPES or wtype in UNSAVED_WIDGETS:
        return True
    if opts.get("socketless") or opts.get("widgetType") or dynamic_combo_options(opts) is not None:
        return True
    return produced is not None and isinstance(typ, str) and typ not in produced and "default" in opts


def widget_inputs(info: dict, produced: set | None = None, ui_inputs: dict[str, bool] | None = None,
                  prefix: str = "") -> list[tuple[str, str, dict]]:
    """``(name, type, options)`` of a node's (or a dynamic combo option's) widget inputs, in the order the
    editor creates widgets."""
    spec = info.get("input", {})
    order = info.get("input_order") or {k: list(spec.get(k, {})) for k in ("required", "optional")}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            entry = spec.get(section, {}).get(name)
            if entry is None:
                continue
            typ, opts = _entry_type(entry)
            full = f"{prefix}{name}"
            if not is_widget(full, typ, opts, produced, ui_inputs):
                continue
            wtype = opts.get("widgetType") or typ
            out.append((full, "COMBO" if isinstance(wtype, list) else wtype, opts))
    return out


def _has_control(name: str, typ: str, opts: dict) -> bool:
    ctl = opts.get("control_after_generate")
    if ctl is not None:
        return bool(ctl)
    return typ == "INT" and name in ("seed", "noise_seed")


def _has_upload(opts: dict) -> bool:
    return any(k.endswith("_upload") and v for k, v in opts.items())


def _selected_option_widgets(name: str, opts: dict, value: Any, produced: set | None,
                             ui_inputs: dict[str, bool] | None) -> list[tuple[str, str, dict]]:
    for option in dynamic_combo_options(opts) or []:
        if option.get("key") == value:
            return widget_inputs({"input": option.get("inputs") or {}}, produced, ui_inputs, prefix=f"{name}.")
    return []


def map_widget_values(values: Any, widgets: list[tuple[str, str, dict]], produced: set | None = None,
                      ui_inputs: dict[str, bool] | None = None) -> tuple[dict, list[str]]:
    """Assign ``widgets_values`` to widget names; returns ``(inputs, warnings)``."""
    out: dict = {}
    warnings: list[str] = []
    queue = list(widgets)
    if isinstance(values, dict):
        while queue:
            name, typ, opts = queue.pop(0)
            if name in values:
                out[name] = values[name]
            elif typ in UNSAVED_WIDGETS:
                out[name] = copy.deepcopy(UNSAVED_WIDGETS[typ])
            elif "default" in opts:
                out[name] = opts["default"]
            if name in out:
                queue[0:0] = _selected_option_widgets(name, opts, out[name], produced, ui_inputs)
        return out, warnings
    values = list(values or [])
    i = 0
    while queue:
        name, typ, opts = queue.pop(0)
        if typ in UNSAVED_WIDGETS:
            out[name] = copy.deepcopy(UNSAVED_WIDGETS[typ])
            continue
        if i >= len(values):
            if "default" in opts:
                out[name] = opts["default"]
                warnings.append(f"{name}: no saved value, using default {opts['default']!r}")
            else:
                warnings.append(f"{name}: no saved value")
            continue
        out[name] = values[i]
        i += 1
        queue[0:0] = _selected_option_widgets(name, opts, out[name], produced, ui_inputs)
        if i < len(values) and _has_control(name, typ, opts) and values[i] in CONTROL_VALUES:
            i += 1
            if typ == "COMBO" and i < len(values) and values[i] == "":
                i += 1  # a combo's control also stores its filter text
        elif i < len(values) and _has_upload(opts) and len(values) - i > len(queue):
            i += 1
    if i < len(values):
        warnings.append(f"{len(values) - i} extra widget value(s) ignored: {values[i:]!r}")
    return out, warnings


def _links(wf: dict) -> dict:
    table = {}
    for link in wf.get("links", []) or []:
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"], link.get("type"))
        else:
            table[link[0]] = (link[1], link[2], link[5] if len(link) > 5 else None)
    return table


def ui_to_api(wf: dict, object_info: dict, warnings: list[str] | None = None) -> dict:
    """API-format prompt from a UI-format workflow (see module docstring for the rules)."""
    nodes = {n["id"]: n for n in wf.get("nodes", [])}
    links = _links(wf)
    subgraphs = {s.get("id") for s in (wf.get("definitions") or {}).get("subgraphs", []) or []}
    warnings = [] if warnings is None else warnings

    def resolve(link_id: Any, seen: frozenset = frozenset()) -> tuple[str, Any] | None:
        """Follow a link to ``("link", [id, slot])`` or ``("value", v)``; None if it leads nowhere."""
        if link_id is None:
            return None
        if link_id not in links:
            raise WorkflowError(f"link {link_id} is referenced but missing from 'links'")
        src_id, slot, _ltype = links[link_id]
        if (src_id, slot) in seen:
            raise WorkflowError(f"link cycle through node {src_id}")
        seen = seen | {(src_id, slot)}
        src = nodes.get(src_id)
        if src is None:
            raise WorkflowError(f"link {link_id} comes from missing node {src_id}")
        typ, mode = src.get("type"), src.get("mode", 0)
        if typ == "Reroute":
            ins = src.get("inputs") or []
            return resolve(ins[0].get("link"), seen) if ins else None
        if typ == "PrimitiveNode":
            vals = src.get("widgets_values") or []
            if isinstance(vals, dict):
                vals = list(vals.values())
            if not vals:
                raise WorkflowError(f"PrimitiveNode {src_id} has no value")
            return ("value", vals[0])
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            outs = src.get("outputs") or []
            want = outs[slot].get("type") if slot < len(outs) else None
            ins = [i for i in (src.get("inputs") or []) if i.get("link") is not None]
            same = (src.get("inputs") or [])[slot] if slot < len(src.get("inputs") or []) else None
            cands = ([same] if same and same.get("link") is not None and same.get("type") == want else []) + \
                    [i for i in ins if i.get("type") == want]
            return resolve(cands[0]["link"], seen) if cands else None
        return ("link", [str(src_id), slot])

    prompt: dict = {}
    for nid, node in nodes.items():
        typ, mode = node.get("type"), node.get("mode", 0)
        if typ in VIRTUAL_TYPES or mode in (MODE_MUTED, MODE_BYPASS):
            continue
        if typ in subgraphs:
            raise WorkflowError(f"node {nid} is a subgraph instance; unpack subgraphs in the editor first")
        info = object_info.get(typ)
        if info is None:
            raise WorkflowError(f"node {nid} has type {typ!r}, which the server does not know (not in "
                                "/object_info): is the custom node pack that provides it installed and loaded?")
        produced = produced_types(object_info)
        ui_inputs = {i.get("name"): bool(i.get("widget")) for i in node.get("inputs") or [] if i.get("name")}
        inputs, warns = map_widget_values(node.get("widgets_values"), widget_inputs(info, produced, ui_inputs),
                                          produced, ui_inputs)
        inputs = {k: ({"__value__": v} if isinstance(v, list) else v) for k, v in inputs.items()}
        warnings += [f"node {nid} ({typ}): {w}" for w in warns]
        for inp in node.get("inputs") or []:
            name = (inp.get("widget") or {}).get("name") or inp.get("name")
            src = resolve(inp.get("link"))
            if src is not None:
                inputs[name] = src[1]
        entry = {"class_type": typ, "inputs": inputs}
        title = node.get("title") or info.get("display_name") or typ
        entry["_meta"] = {"title": title}
        prompt[str(nid)] = entry
    return prompt


def find_nodes(prompt: dict, class_type: str) -> list[str]:
    """Ids of the API-format nodes of one class."""
    return [nid for nid, n in prompt.items() if n.get("class_type") == class_type]


def set_input(prompt: dict, class_type: str, name: str, value: Any) -> int:
    """Set ``inputs[name] = value`` on every node of ``class_type``; returns how many were changed."""
    ids = find_nodes(prompt, class_type)
    for nid in ids:
        prompt[nid]["inputs"][name] = value
    return len(ids)


def apply_overrides(prompt: dict, overrides: dict | None) -> None:
    """Write ``{"<node id or class_type>": {"<input>": value}}`` into an API prompt (KeyError if no target)."""
    for key, values in (overrides or {}).items():
        ids = [key] if key in prompt else find_nodes(prompt, key)
        if not ids:
            raise KeyError(f"override target {key!r} is neither a node id nor a class type in the prompt")
        for nid in ids:
            prompt[nid]["inputs"].update(values)


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
           PACK_LOADER: ("ckpt_name", "checkpoints")}
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

    ``expect["tiny_models"]`` when given; else one DynamiCrafter per ``ckpt_name`` of the pack's loader, under that
    very name in ``checkpoints/`` (variant: the loader's, or "256" when the name says so, else "512"), and the
    official Wan files (``standins.guess``: ``wan2.1_i2v_480p_14B…``, ``wan_2.1_vae…``, ``clip_vision_h…``, ...)
    any core loader names. The Wan text encoder is never made: see :func:`tiny_replacements`.
    """
    if "tiny_models" in expect:
        return dict(expect["tiny_models"])
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
