#!/usr/bin/env python3
"""Render the per-node help pages the ComfyUI frontend shows (``web/docs/<node id>.md``) from the node schemas.

Both frontends (1.32.9 with ComfyUI 0.3.75, 1.49.6 with 0.33) fetch a custom node's help from
``/extensions/<pack>/docs/<node id>/<locale>.md`` and then ``/extensions/<pack>/docs/<node id>.md``; the pack's
``WEB_DIRECTORY`` (``web/``) is served at ``/extensions/<pack>/``. Each page: the node's description, a usage note
where the schema cannot say it (:data:`NOTES`), and tables of inputs (type, default, tooltip) and outputs.

Run with a host's python (the schemas need ComfyUI): ``.host/0.33/venv/bin/python tools/node_docs.py`` writes the
pages of every node that host registers; ``--check`` lists stale ones (``tests/unit/test_layout_editor.py``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "web" / "docs"
# combos whose options are files or cases on the user's machine: not listed
DYNAMIC = {("I2VMotion_LoadDynamiCrafter", "ckpt_name"), ("I2VMotion_LayoutCaseLoader", "name")}
NOTES = {
    "I2VMotion_LayoutEditor": """\
**Drawing.** Drag on the image to draw the selected object's box at the current frame (a key box); drag a
box to move it, drag a corner handle to resize it; shift+drag draws a new object. Boxes may be dragged partly
or fully out of the image (the grey margin). Solid boxes are key boxes, dashed ones interpolated; the line is
the centre path, dots mark key frames.

**Frames.** The slider (or ▶ play) scrubs the frames; a box drawn or moved at a frame becomes that object's
key box there. **✕ key** deletes it, **⟲ / ⟳** undo and redo, the **box** fields set exact coordinates
(fractions of the image) at the current frame.

**Objects.** **+ object** adds one; the phrase, colour and interpolation (node default, linear, ease_in_out,
catmull_rom) belong to the selected object. **image…** uploads an image to draw on when none is connected
(a connected Load Image or Load Layout Case shows at once; other images after one run).

**Keys** (click the image first): Ctrl+Z undo, Ctrl+Shift+Z or Ctrl+Y redo, Delete the key box at this frame,
← / → the previous / next frame.

**Start layout.** Connect a layout to `start_layout` (e.g. core's Create Bounding Boxes → Layout from Bounding
Boxes) and run: while nothing is drawn the node outputs that layout and the editor takes its boxes as key boxes.
Once you have drawn, a changed start layout only lights up **⤓ start**, which replaces the drawing with it
(⟲ undoes that).

The drawing is saved in the workflow (a widget value in Layout from JSON's format plus colours and the image
name) and the layout output equals Layout from JSON on the same text.""",
    "I2VMotion_LayoutFromJSON": """\
```
{"objects": [
 {"phrase": "red car", "boxes": [
  [0, 0.40, 0.50, 0.58, 0.66],
  [15, 0.22, 0.40, 0.70, 0.83]]}]}
```
Coordinates are fractions of the image (0..1, origin top-left), boxes may leave the image (−1..2).""",
    "I2VMotion_LayoutFromSpline": """\
Takes the KJNodes Spline Editor's `coord_str` as it is: `[{"x": 12, "y": 40}, …]` for one spline or
`[[…], […]]` for several (pixels of a width × height canvas), the format core's TracksFromCoords reads.""",
    "I2VMotion_LayoutFromBBOX": """\
A BBOX from KJNodes (BatchCropFromMask gives one `(x, y, w, h)` per frame; the Points Editor one box per drawn
rectangle, `xyxy` or `xywh`) or the same list typed as JSON: `[[40, 160, 96, 96], [360, 120, 96, 96]]`.""",
    "I2VMotion_LayoutToTracks": """\
Layout → Tracks → Tracks to Layout (same box size, simplify 0) gives back every object's box centre at every
frame (to float32 precision). ComfyUI 0.33+ only (the TRACKS type).""",
    "I2VMotion_TracksToLayout": "ComfyUI 0.33+ only (the TRACKS type).",
    "I2VMotion_LayoutFromBoundingBoxes": """\
Draw the boxes of each key frame with core's **Create Bounding Boxes** (same width and height as here, or connect
its background image to `image`) and connect each to the next free `bboxes_N` input, in key-frame order; a node
that gives a list of frames (RT-DETR, SAM3, Layout to Bounding Boxes) gives one key frame per frame. With
`match` = box order, draw the objects in the same order on every canvas and name them in `phrases` (Create
Bounding Boxes keeps each box's description for its `elements` output only: its boxes carry none); description
pairs boxes by the label a detector or Layout to Bounding Boxes gives them. The boxes' pixels are divided by
width/height, so boxes may leave the image.
ComfyUI 0.33+ only (the BOUNDING_BOX type).""",
    "I2VMotion_LayoutToBoundingBoxes": """\
Layout → Layout to Bounding Boxes → Layout from Bounding Boxes (`frames` = the layout's, match by box order)
gives back every object's box at every frame to within half a pixel. Create Bounding Boxes, given these boxes at
its `bboxes` input, shows the first frame's. ComfyUI 0.33+ only (the BOUNDING_BOX type).""",
    "I2VMotion_LayoutCaseLoader": """\
The `name` list holds the shipped cases and the case JSON files in sub-folders of ComfyUI's input folder
(`sub/folder/case`); nothing outside those two places is listed or read.""",
}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(node_id: str, name: str, typ, opts: dict) -> str:
    if (node_id, name) in DYNAMIC:
        return ""
    if "default" in opts:
        d = opts["default"]
        if isinstance(d, str) and (len(d) > 40 or "\n" in d):
            return "(example)"
        return f"`{d}`" if d != "" else "(empty)"
    return ""


def _type(node_id: str, name: str, typ, opts: dict) -> str:
    tpl = opts.get("template") if typ == "COMFY_AUTOGROW_V3" else None
    if isinstance(tpl, dict):  # a growing list of inputs: name_0, name_1, … (one more appears as each is connected)
        inner = next(iter(v for sec in tpl.get("input", {}).values() for v in sec.values()), ["?"])
        return f"`{inner[0]}` × {tpl.get('min', 1)}–{tpl.get('max', '…')} (`{tpl.get('prefix', '')}0`, `{tpl.get('prefix', '')}1`, …)"
    if isinstance(typ, list):
        options = typ
    elif typ == "COMBO":
        options = opts.get("options") or []
    else:
        return f"`{typ}`"
    if (node_id, name) in DYNAMIC or len(options) > 8:
        return "choice"
    return "choice: " + ", ".join(f"`{o}`" for o in options)


def render(node_cls) -> str:
    """The help page of one node, from its V1 node info (what /object_info sends)."""
    info = node_cls.GET_NODE_INFO_V1()
    nid = info["name"]
    out = [f"# {info['display_name']}", "", info.get("description") or "", ""]
    if nid in NOTES:
        out += [NOTES[nid], ""]
    out += ["## Inputs", "", "| input | type | default | what it is |", "|---|---|---|---|"]
    order = info.get("input_order") or {}
    for section in ("required", "optional"):
        spec = info.get("input", {}).get(section, {})
        for name in order.get(section, list(spec)):
            entry = spec.get(name)
            if entry is None:
                continue
            typ, opts = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
            label = f"`{name}`" + (" (optional)" if section == "optional" else "")
            out.append(f"| {label} | {_cell(_type(nid, name, typ, opts))} | {_cell(_default(nid, name, typ, opts))} | "
                       f"{_cell(opts.get('tooltip', ''))} |")
    out += ["", "## Outputs", "", "| output | type | what it is |", "|---|---|---|"]
    tips = info.get("output_tooltips") or []
    for i, (typ, name) in enumerate(zip(info.get("output", []), info.get("output_name", []))):
        out.append(f"| `{name}` | `{typ}` | {_cell(tips[i] if i < len(tips) and tips[i] else '')} |")
    out += ["", f"Node id `{nid}` · category `{info.get('category')}` · "
            "[comfyui-i2v-motion README](https://github.com/comfyui-i2v-motion/comfyui-i2v-motion#nodes)", ""]
    return "\n".join(out)


def _nodes() -> list:
    import i2v_motion.nodes

    return i2v_motion.nodes.all_nodes()


def check() -> list[str]:
    """Node ids whose page is missing or differs from :func:`render` (nodes this host registers), and pages of
    node ids the pack does not have."""
    import i2v_motion.nodes

    stale = []
    for n in _nodes():
        nid = n.GET_SCHEMA().node_id
        f = DOCS / f"{nid}.md"
        if not f.is_file() or f.read_text(encoding="utf-8") != render(n):
            stale.append(nid)
    known = set(i2v_motion.nodes.SEARCH_ALIASES)
    stale += [f"{p.name} (no such node)" for p in DOCS.glob("*.md") if p.stem not in known]
    return stale


def write() -> list[Path]:
    DOCS.mkdir(parents=True, exist_ok=True)
    out = []
    for n in _nodes():
        f = DOCS / f"{n.GET_SCHEMA().node_id}.md"
        f.write_text(render(n), encoding="utf-8")
        out.append(f)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="list stale pages, exit 1 if any")
    a = ap.parse_args(argv)
    import comfy_inproc

    comfy_inproc.bootstrap("cpu", dynamic_vram=False)  # the pack as i2v_motion, as the tests import it

    if a.check:
        stale = check()
        print("\n".join(stale) or "all node docs are current")
        return 1 if stale else 0
    for f in write():
        print(f.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
