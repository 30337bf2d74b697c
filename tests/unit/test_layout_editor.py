"""Layout Editor node (same layout as Layout from JSON on the same data), compact layout JSON, Load Layout Case's
case combo (confined listing) and preview, search aliases and display names, the node docs in web/docs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import i2v_motion.layout as L
import i2v_motion.nodes as NODES
from i2v_motion.nodes import layout as N
from i2v_motion.nodes import trajectory as TR
from support.synth import make_example_cases

REPO = Path(__file__).resolve().parents[2]

# what the browser test's drags produce, in the editor's own format (colours, an uploaded image name)
EDITOR_DATA = {"image": "street.png", "objects": [
    {"phrase": "red car", "color": "#e6194b", "boxes": [[0, 0.2, 0.5, 0.4, 0.8], [15, 0.9, 0.45, 1.15, 0.75]]},
    {"phrase": "kite", "color": "#3cb44b", "interpolation": "catmull_rom",
     "boxes": [[0, 0.6, 0.1, 0.7, 0.3], [8, 0.45, 0.05, 0.55, 0.25], [15, 0.3, 0.15, 0.42, 0.35]]}]}


def _inputs_dir():
    import folder_paths

    return Path(folder_paths.get_input_directory())


@pytest.mark.parametrize("interp,space", [("linear", "log"), ("ease_in_out", "linear"), ("catmull_rom", "log")])
def test_editor_output_equals_layout_from_json(interp, space):
    text = json.dumps(EDITOR_DATA)
    img = torch.rand(1, 32, 48, 3)
    out = TR.LayoutEditor.execute(16, interp, space, text, img)
    ref_layout, ref_json = N.LayoutFromJSON.execute(text, 16, interp, space).result
    lay, js, image = out.result
    assert lay == ref_layout  # dataclass equality: frames, objects (phrases, key boxes, interpolation), size space
    assert torch.equal(lay.boxes(), ref_layout.boxes())
    assert js == ref_json
    assert image is img
    assert out.ui["i2v_layout"] == [js]
    assert out.ui["i2v_editor_image"][0]["type"] == "temp"
    assert lay.objects[1].interpolation == "catmull_rom"  # the object's own choice wins, as in Layout from JSON
    assert lay.objects[0].interpolation == interp


def test_editor_uploaded_image_and_placeholder(tmp_path):
    from PIL import Image

    name = "i2v_editor_test_upload.png"
    path = _inputs_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 24), (200, 10, 10)).save(path)
    try:
        data = dict(EDITOR_DATA, image=name)
        out = TR.LayoutEditor.execute(16, "linear", "log", json.dumps(data))
        assert tuple(out.result[2].shape) == (1, 24, 40, 3)
        assert out.result[2][0, 0, 0, 0] > 0.7
    finally:
        path.unlink()
    data = {k: v for k, v in EDITOR_DATA.items() if k != "image"}
    out = TR.LayoutEditor.execute(16, "linear", "log", json.dumps(data))
    assert tuple(out.result[2].shape) == (1, 320, 512, 3) and "i2v_editor_image" not in out.ui


START = L.parse_layout({"objects": [
    {"phrase": "car", "boxes": [[0, 0.125, 0.5, 0.3125, 0.8], [15, 0.78125, 0.45, 1.03125, 0.8]]},
    {"phrase": "kite", "interpolation": "catmull_rom", "boxes": [[0, 0.625, 0.1, 0.71875, 0.3], [15, 0.3, 0.15, 0.4, 0.35]]}]},
    frames=16)


def test_editor_starts_from_a_connected_layout():
    """Nothing drawn: the node outputs the start layout (with the editor's settings) and sends it in the editor's
    format (object interpolation only where it differs from the node's); what the editor then holds gives the same
    layout on the next run."""
    out = TR.LayoutEditor.execute(16, "linear", "log", TR.EMPTY_EDITOR, None, START)
    lay, text, _ = out.result
    assert lay == START
    sent = json.loads(out.ui["i2v_start"][0])
    assert sent["frames"] == 16 and [o["phrase"] for o in sent["objects"]] == ["car", "kite"]
    assert "interpolation" not in sent["objects"][0] and sent["objects"][1]["interpolation"] == "catmull_rom"
    imported = {"start": "0f0f0f0f", "objects": [dict(o, color="#e6194b") for o in sent["objects"]]}
    assert TR.LayoutEditor.execute(16, "linear", "log", json.dumps(imported)).result[0] == lay
    # objects without boxes are nothing drawn either (an added object not yet drawn)
    empty = json.dumps({"objects": [{"phrase": "object 1", "boxes": []}]})
    assert TR.LayoutEditor.execute(16, "linear", "log", empty, None, START).result[0] == START


def test_editor_drawing_wins_over_the_start_layout():
    drawing = json.dumps({k: v for k, v in EDITOR_DATA.items() if k != "image"})
    out = TR.LayoutEditor.execute(16, "linear", "log", drawing, None, START)
    assert out.result[0] == L.parse_layout(EDITOR_DATA, frames=16)  # the drawing, not the start layout
    assert json.loads(out.ui["i2v_start"][0])["objects"][0]["phrase"] == "car"  # still sent: the editor offers it
    assert "i2v_start" not in TR.LayoutEditor.execute(16, "linear", "log", drawing).ui


def test_editor_start_layout_longer_than_frames_says_so():
    with pytest.raises(ValueError, match="up to frame 15 but the Layout Editor's frames is 8: raise frames to 16"):
        TR.LayoutEditor.execute(8, "linear", "log", TR.EMPTY_EDITOR, None, START)
    out = TR.LayoutEditor.execute(8, "linear", "log", json.dumps({"objects": [  # a drawing that fits: no error
        {"phrase": "a", "boxes": [[0, 0.1, 0.1, 0.2, 0.2]]}]}), None, START)
    assert out.result[0].frames == 8


@pytest.mark.parametrize("image", ["../../etc/passwd", "/etc/hostname", "no_such_file.png"])
def test_editor_image_confined_to_input(image):
    data = dict(EDITOR_DATA, image=image)
    with pytest.raises(ValueError, match="input folder"):
        TR.LayoutEditor.execute(16, "linear", "log", json.dumps(data))


@pytest.mark.parametrize("value,match", [('{"objects": []}', "no objects yet"), ("{", "not JSON"),
                                         ('{"objects": [{"phrase": "a", "boxes": []}]}', "has no box"),
                                         ("[1]", "must be")])
def test_editor_errors_say_what_to_do(value, match):
    with pytest.raises(ValueError, match=match):
        TR.LayoutEditor.execute(16, "linear", "log", value)


def test_editor_input_is_a_widget_the_converter_maps():
    """The editor's value travels as a widget value (a custom widget type) and converts from UI to API format."""
    import workflow

    info = TR.LayoutEditor.GET_NODE_INFO_V1()
    spec = info["input"]["required"]["editor"]
    assert spec[0] == "I2V_LAYOUT_EDITOR" and spec[1]["default"] == TR.EMPTY_EDITOR
    object_info = {"I2VMotion_LayoutEditor": info}
    node = {"id": 1, "type": "I2VMotion_LayoutEditor", "inputs": [],
            "widgets_values": [16, "linear", "log", json.dumps(EDITOR_DATA)]}
    warnings: list[str] = []
    prompt = workflow.ui_to_api({"nodes": [node], "links": []}, object_info, warnings)
    assert warnings == []
    assert prompt["1"]["inputs"] == {"frames": 16, "interpolation": "linear", "size_space": "log",
                                     "editor": json.dumps(EDITOR_DATA)}


# -- the editor's model module (web/js/layout_model.js, no DOM) run with node --------------------------------
def _node_js(script: str) -> dict:
    """Run an ES module script with node (the pack's web/js importable as ./web/js/...); its printed JSON."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if not node:
        pytest.skip("no node executable: the editor's model module is checked in the browser tests instead")
    r = subprocess.run([node, "--input-type=module", "-e", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_editor_model_undo_cache_and_start_import():
    """What the view relies on: interpolated boxes recomputed when a key box or a setting changes (never stale), the
    object list's key unchanged by box edits, undo/redo, and a start layout imported undoably with its signature."""
    out = _node_js("""
        import { LayoutModel, signature } from "./web/js/layout_model.js";
        import { interpolateBoxes } from "./web/js/layout_math.js";
        const settings = { frames: 16, interpolation: "linear", sizeSpace: "log" };
        const m = new LayoutModel(() => settings);
        m.load(JSON.stringify({ objects: [{ phrase: "car", boxes: [[0, 0.1, 0.5, 0.3, 0.8], [15, 0.6, 0.4, 0.8, 0.7]] }] }));
        const o = m.objects[0], fresh = () => interpolateBoxes(o.boxes, settings.frames, o.interpolation || settings.interpolation, settings.sizeSpace);
        const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
        const res = { cached: m.boxesOf(o) === m.boxesOf(o) };
        const list0 = m.listKey();
        m.snapshot(); m.frame = 8; m.setKey(o, 8, [0.3, 0.3, 0.5, 0.6]);
        res.afterKey = same(m.boxesOf(o), fresh()) && m.boxesOf(o)[8][0] === 0.3;
        settings.interpolation = "catmull_rom"; res.afterSetting = same(m.boxesOf(o), fresh());
        settings.frames = 24; res.afterFrames = m.boxesOf(o).length === 24 && same(m.boxesOf(o), fresh());
        res.listSameOnBoxEdit = m.listKey() === list0;
        m.snapshot(); m.addObject(); res.listChangedOnAdd = m.listKey() !== list0;
        res.undo = m.undo() && m.undo() && m.objects.length === 1 && m.objects[0].boxes.length === 2;
        res.redo = m.redo() && m.objects[0].boxes.length === 3;
        const text = JSON.stringify({ frames: 16, objects: [{ phrase: "kite", boxes: [[0, 0.5, 0.1, 0.6, 0.3]] }] });
        m.importStart(JSON.parse(text), signature(text));
        res.imported = m.objects.map((x) => x.phrase).join() === "kite" && m.data.start === signature(text);
        res.sigDiffers = signature(text) !== signature(text.replace("0.5", "0.55"));
        res.undoImport = m.undo() && m.objects[0].phrase === "car" && m.data.start === undefined;
        res.badValue = (m.load("{"), m.objects.length === 0 && m.sel === -1);
        console.log(JSON.stringify(res));
    """)
    assert out == {k: True for k in out} and len(out) == 12, out


@pytest.mark.parametrize("interp,space", [("linear", "log"), ("ease_in_out", "linear"), ("catmull_rom", "log")])
def test_editor_interpolation_js_equals_python(interp, space):
    """layout_math.js (what the editor draws) against layout/boxes.py (what the node outputs), run with node; the
    browser test checks the same in each frontend."""
    lay = L.parse_layout(EDITOR_DATA, frames=24, interpolation=interp, size_space=space)
    keys = [[[k.frame, *k.box] for k in o.keys] for o in lay.objects]
    js = _node_js(f"""
        import {{ interpolateBoxes }} from "./web/js/layout_math.js";
        const keys = {json.dumps(keys)}, interps = {json.dumps([o.interpolation for o in lay.objects])};
        console.log(JSON.stringify(keys.map((k, i) => interpolateBoxes(k, 24, interps[i], "{space}"))));
    """)
    assert (torch.tensor(js, dtype=torch.float64) - lay.boxes().double()).abs().max() < 1e-5


# -- compact JSON ------------------------------------------------------------------------------------------
def test_layout_json_is_compact_one_box_per_line():
    lay = L.parse_layout(EDITOR_DATA)
    text = lay.to_text()
    lines = text.splitlines()
    n_keys = sum(len(o.keys) for o in lay.objects)
    assert len(lines) == 1 + len(lay.objects) + n_keys
    assert lines[2].strip().startswith("[0, 0.2, 0.5, 0.4, 0.8]")
    assert L.parse_layout(text) == lay and json.loads(text) == lay.to_dict()
    assert N.LayoutToJSON.execute(lay).result[0] == text
    assert L.parse_layout(N.EXAMPLE_JSON).objects[0].keys[1].frame == 15
    assert len(N.EXAMPLE_JSON.splitlines()) == 4
    spec = N.LayoutFromJSON.GET_NODE_INFO_V1()["input"]["required"]["layout_json"][1]
    assert "[frame, x0, y0, x1, y1]" in spec["placeholder"]


# -- Load Layout Case ----------------------------------------------------------------------------------------
def test_case_combo_lists_shipped_and_input_subfolder_cases_only(tmp_path):
    inp = _inputs_dir()
    sub = inp / "i2v_cases_test" / "deeper"
    sub.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    make_example_cases(outside)  # valid cases outside the input folder, reachable only through a link
    try:
        (sub / "mine.json").write_text(json.dumps({"image": "ball_roll.png", "caption": "c", "frames": 16,
                                                   "objects": [{"phrase": "b", "boxes": [[0, .1, .1, .3, .3]]}]}))
        (sub / "ball_roll.png").write_bytes((outside / "ball_roll.png").read_bytes())
        (sub / "settings.json").write_text('{"not": "a case"}')
        (inp / "i2v_cases_test" / "escape").symlink_to(outside, target_is_directory=True)
        (sub / "linked.json").symlink_to(outside / "kite_exit.json")
        (inp / "toplevel_case.json").write_text((outside / "ball_roll.json").read_text())
        choices = N.case_choices()
        shipped = L.list_cases(N.CASES_DIR)
        assert choices[0] == N.BY_INDEX and choices[1:1 + len(shipped)] == shipped
        listed = choices[1 + len(shipped):]
        assert "i2v_cases_test/deeper/mine" in listed
        assert not any("settings" in c or "escape" in c or "linked" in c or "toplevel" in c for c in listed), listed
        img, lay, caption, name = N.LayoutCaseLoader.execute("", 0, "i2v_cases_test/deeper/mine").result
        assert name == "mine" and lay.objects[0].phrase == "b" and img.shape[-1] == 3
        with pytest.raises(L.PathRefused):
            N.LayoutCaseLoader.execute("", 0, "i2v_cases_test/escape/kite_exit")
        with pytest.raises(L.PathRefused):
            N.LayoutCaseLoader.execute("", 0, "../" + os.path.relpath(outside, inp.parent) + "/ball_roll")
    finally:
        import shutil

        (inp / "toplevel_case.json").unlink(missing_ok=True)
        shutil.rmtree(inp / "i2v_cases_test")


def test_case_loader_combo_and_preview():
    spec = N.LayoutCaseLoader.GET_NODE_INFO_V1()["input"]["required"]["name"]
    options = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
    assert "car_approach" in options and spec[1]["default"] == "car_approach"
    out = N.LayoutCaseLoader.execute("", 0, "car_approach")
    img, lay, caption, name = out.result
    assert name == "car_approach" and "car" in caption
    preview = out.ui["i2v_case_image"]  # the node's own preview widget shows it (web/js/layout_case.js)
    assert preview and preview[0]["type"] == "temp"
    by_index = N.LayoutCaseLoader.execute("", 1, N.BY_INDEX).result[3]
    assert by_index == L.list_cases(N.CASES_DIR)[1]


# -- findability -----------------------------------------------------------------------------------------
def test_every_node_has_search_aliases_and_a_plain_display_name():
    nodes = NODES.all_nodes()
    for n in nodes:
        schema = n.GET_SCHEMA()
        aliases = NODES.SEARCH_ALIASES.get(schema.node_id)
        assert aliases, f"{schema.node_id} has no search aliases in nodes.SEARCH_ALIASES"
        assert "(I2V Motion)" not in schema.display_name, schema.display_name
        info = n.GET_NODE_INFO_V1()
        if NODES.HAS_SEARCH_ALIASES:  # ComfyUI 0.33+: the node search matches them
            assert info["search_aliases"] == aliases
        else:
            assert not info.get("search_aliases")
    words = {w.lower() for n in nodes for w in NODES.SEARCH_ALIASES[n.GET_SCHEMA().node_id]}
    for w in ("trajectory", "box", "bbox", "iva", "motion", "merge", "dare", "ties", "extrapolate", "expert"):
        assert w in words, w


def test_node_docs_are_current():
    """web/docs/<node id>.md for every node, as tools/node_docs.py renders them from the schemas."""
    import node_docs

    stale = node_docs.check()
    assert not stale, f"run python3 tools/node_docs.py (with a host python) to update: {stale}"
