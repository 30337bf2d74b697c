"""The pack in the real ComfyUI frontend (1.32.9 on ComfyUI 0.3.75, 1.49.6 on 0.33) in headless Chromium.

- Layout Editor: real mouse drags draw two objects at frame 0 and move them at frame 15 (one box out of the
  image), the graph is queued with the Run button, and the layout the server computed (the editor node's
  ``i2v_layout`` output in ``/history``) must hold those boxes; the saved workflow reopens with the same boxes.
- Layout Editor hygiene: the cost of a pointer move (printed: ms per move, renders and <select> rebuilds per move),
  one draw per animation frame, nothing left on the page once the node is removed.
- Start layouts: Layout from JSON -> the editor's start_layout (both hosts); core boxes (ComfyUI 0.33): two Create
  Bounding Boxes -> Layout from Bounding Boxes -> the editor's start_layout.
- The template browser lists exactly the example workflows under the pack; each loads with every node type known
  (no missing-node dialog) and no console error from the pack's extension.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from .conftest import REPO, STATS

pytestmark = [pytest.mark.browser, pytest.mark.integration]  # it starts a server too

EXAMPLES = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
PACK = "comfyui-i2v-motion"
IMAGE = "i2v_browser_car.png"
TOL = 0.012  # normalised: a few screen pixels of the editor's view


def _box_px(view: dict, rect: dict, u: float, v: float) -> tuple[float, float]:
    """Page pixel of normalised image point (u, v) in the editor canvas."""
    return rect["x"] + view["x"] + u * view["w"], rect["y"] + view["y"] + v * view["h"]


def _drag(page, a: tuple[float, float], b: tuple[float, float], shift: bool = False) -> None:
    m = page.mouse
    m.move(*a)
    if shift:
        page.keyboard.down("Shift")
    m.down()
    m.move((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, steps=4)
    m.move(*b, steps=4)
    m.up()
    if shift:
        page.keyboard.up("Shift")


def _dialog_open(page) -> bool:
    return page.evaluate("() => !!document.querySelector('.p-dialog')")


def _run_button(page):
    b = page.locator('[data-testid="queue-button"]')
    return b.first if b.count() else page.get_by_role("button", name="Run", exact=True).first


def _editor_value(page, node_id: int) -> dict:
    return json.loads(page.evaluate(f"() => app.graph.getNodeById({node_id}).widgets.find(w => w.name === 'editor').value"))


def _run(page, server) -> dict:
    """Queue the graph with the Run button; its /history entry once it finished successfully."""
    before = set(server.get_json("/history"))
    _run_button(page).click()
    deadline, entry = time.monotonic() + 120, None
    while time.monotonic() < deadline and entry is None:
        hist = server.get_json("/history")
        new = [v for k, v in hist.items() if k not in before]
        if new and new[0].get("status", {}).get("completed") is not None:
            entry = new[0]
        time.sleep(0.3)
    assert entry is not None, "the Run button queued nothing that finished within 120 s"
    assert entry["status"].get("status_str") == "success", entry["status"]
    return entry


def test_editor_draw_move_run_and_reopen(ui, server):
    page, t0 = ui.page, time.perf_counter()
    shutil.copy(REPO / "example_workflows" / "layout_cases" / "car_approach.png", server.input_dir / IMAGE)
    ids = page.evaluate("""(image) => {
        app.graph.clear();
        const add = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; app.graph.add(n); return n; };
        const li = add("LoadImage", [10, 40]);
        li.widgets.find(w => w.name === "image").value = image;
        const ed = add("I2VMotion_LayoutEditor", [330, 10]);
        const pv = add("I2VMotion_LayoutPreview", [820, 40]);
        const pi = add("PreviewImage", [820, 260]);
        li.connect(0, ed, ed.inputs.findIndex(i => i.name === "image"));
        ed.connect(2, pv, 0); ed.connect(0, pv, 1); pv.connect(0, pi, 0);
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true);
        return {editor: ed.id, preview: pi.id};
    }""", IMAGE)
    editor = f"app.graph.getNodeById({ids['editor']}).i2vEditor"
    page.wait_for_function(f"() => {editor}.display.img?.naturalWidth === 512")
    canvas = page.locator(".i2v-le-canvas")

    def set_frames(n: int) -> None:
        """Set the node's frames widget as the frontend does (value, then its callback); the timeline follows (on the
        editor's next animation frame)."""
        page.evaluate(f"""(n) => {{ const w = app.graph.getNodeById({ids['editor']}).widgets
            .find(w => w.name === 'frames'); w.value = n; w.callback?.(n); }}""", n)
        try:
            page.wait_for_function(f"(n) => {editor}.display.slider.max === String(n - 1)", arg=n, timeout=5000)
        except Exception:
            pytest.fail(f"the frames widget ({n}) does not drive the editor's timeline")

    set_frames(12)
    set_frames(16)

    def P(u: float, v: float) -> tuple[float, float]:
        """Page pixel of an image point, once the editor's place on the page has settled (the frontend lays DOM
        widgets out on its animation frames, later on a loaded machine)."""
        last = None
        for _ in range(50):
            now = (canvas.bounding_box(), page.evaluate(f"() => {editor}.view()"))
            if now == last:
                break
            last = now
            page.wait_for_timeout(100)
        return _box_px(last[1], last[0], u, v)

    def keys() -> list:
        return [[k[0] for k in o["boxes"]] for o in _editor_value(page, ids["editor"])["objects"]]

    # frame 0: the car (drag), then a kite (shift+drag: a second object)
    _drag(page, P(0.15, 0.55), P(0.35, 0.85))
    assert keys() == [[0]], "the first drag drew no box"
    _drag(page, P(0.60, 0.10), P(0.75, 0.30), shift=True)
    assert keys() == [[0], [0]], "shift+drag drew no second object"
    # frame 15: keyboard on the frame slider, then move both boxes (the car partly out of the image)
    page.locator(".i2v-le-slider").click()
    page.keyboard.press("End")
    page.wait_for_function(f"() => {editor}.model.frame === 15")
    _drag(page, P(0.25, 0.70), P(1.05, 0.60))
    _drag(page, P(0.675, 0.20), P(0.30, 0.25))
    assert keys() == [[0, 15], [0, 15]], "the moves at frame 15 made no key boxes"
    page.locator(".i2v-layout-editor select").nth(1).select_option("catmull_rom")  # object 2's own interpolation
    value = _editor_value(page, ids["editor"])
    ui.shot(page.locator(".i2v-layout-editor"), "layout_editor_frame15.png")
    page.locator(".i2v-le-slider").press("Home")
    for _ in range(8):
        page.locator(".i2v-le-slider").press("ArrowRight")
    ui.shot(page.locator(".i2v-layout-editor"), "layout_editor_frame8.png")

    want = {"object 1": [[0, 0.15, 0.55, 0.35, 0.85], [15, 0.95, 0.45, 1.15, 0.75]],
            "object 2": [[0, 0.60, 0.10, 0.75, 0.30], [15, 0.225, 0.15, 0.375, 0.35]]}
    got = {o["phrase"]: o["boxes"] for o in value["objects"]}
    assert set(got) == set(want), value
    for phrase, keys in want.items():
        assert [k[0] for k in got[phrase]] == [0, 15], got
        for g, w in zip(got[phrase], keys):
            assert max(abs(a - b) for a, b in zip(g[1:], w[1:])) < TOL, (phrase, g, w)
    assert got["object 1"][1][3] > 1.0  # leaves the image on the right
    assert [o.get("interpolation") for o in value["objects"]] == [None, "catmull_rom"]

    # queue from the UI; the server's layout (editor node's UI output in /history) must be the drawn one
    entry = _run(page, server)
    out = entry["outputs"][str(ids["editor"])]["i2v_layout"][0]
    server_layout = json.loads(out)
    assert server_layout["frames"] == 16
    for o in server_layout["objects"]:
        assert o["boxes"] == [[k[0], *[round(c, 6) for c in k[1:]]] for k in got[o["phrase"]]]
    assert entry["outputs"][str(ids["preview"])]["images"], "the layout preview did not run"
    assert len(out.splitlines()) == 1 + 2 + 4  # compact: one key box per line
    # what the editor draws between the keys is what the server computes (layout_math.js vs layout/boxes.py)
    import i2v_motion.layout as L

    py_boxes = L.parse_layout(server_layout).boxes().tolist()
    js_boxes = page.evaluate("""async (lay) => {
        const m = await import(`/extensions/comfyui-i2v-motion/js/layout_math.js`);
        return lay.objects.map(o => m.interpolateBoxes(o.boxes, lay.frames, o.interpolation, lay.size_space)); }""",
                             server_layout)
    assert max(abs(a - b) for po, jo in zip(py_boxes, js_boxes) for pb, jb in zip(po, jo)
               for a, b in zip(pb, jb)) < 1e-5

    # the drawing is in the workflow: reopening it shows the same boxes
    saved = page.evaluate("() => JSON.stringify(app.graph.serialize())")
    page.evaluate("() => app.graph.clear()")
    page.evaluate("(wf) => app.loadGraphData(JSON.parse(wf))", saved)
    page.wait_for_function(f"() => !!app.graph.getNodeById({ids['editor']})?.i2vEditor")
    assert _editor_value(page, ids["editor"]) == value
    assert page.evaluate(f"() => app.graph.getNodeById({ids['editor']}).i2vEditor.model.data.objects.length") == 2
    assert ui.ours() == [], ui.ours()
    STATS["times"]["editor: draw, run, reopen"] = time.perf_counter() - t0


# two key frames drawn on core's Create Bounding Boxes (its editor_state: pixel boxes with a description)
CORE_BOXES = [
    [{"x": 64, "y": 160, "width": 96, "height": 96, "metadata": {"type": "obj", "desc": "car"}},
     {"x": 320, "y": 32, "width": 48, "height": 64, "metadata": {"type": "obj", "desc": "kite"}}],
    [{"x": 400, "y": 144, "width": 128, "height": 112, "metadata": {"type": "obj", "desc": "car"}},
     {"x": 160, "y": 48, "width": 48, "height": 64, "metadata": {"type": "obj", "desc": "kite"}}]]


def _key(box: dict, frame: int) -> list:
    x, y, w, h = (box[k] for k in ("x", "y", "width", "height"))
    return [frame, round(x / 512, 6), round(y / 320, 6), round((x + w) / 512, 6), round((y + h) / 320, 6)]


def test_core_boxes_start_the_layout_editor(ui, server):
    """ComfyUI 0.33: two Create Bounding Boxes (key frames 0 and 15) -> Layout from Bounding Boxes -> the Layout
    Editor's start_layout. The first run outputs those boxes and the empty editor takes them; a drawing made then is
    kept when the boxes change (⤓ start lights up), ⤓ start replaces it, ⟲ brings it back."""
    from i2v_motion.nodes import trajectory as TR

    if not TR.HAS_BOUNDING_BOX:
        pytest.skip("this ComfyUI has no BOUNDING_BOX type (core's Create Bounding Boxes came after 0.3.75): the "
                    "bounding-box nodes are not registered here")
    page, t0 = ui.page, time.perf_counter()
    ids = page.evaluate("""(boxes) => {
        app.graph.clear();
        const add = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; app.graph.add(n); return n; };
        const w = (n, name, v) => { n.widgets.find(x => x.name === name).value = v; };
        const slot = (n, name) => n.inputs.findIndex(i => i.name === name);
        const lf = add("I2VMotion_LayoutFromBoundingBoxes", [560, 10]);
        w(lf, "phrases", "car, kite");  // Create Bounding Boxes' boxes carry no description: objects are by order
        const cb = boxes.map((b, i) => {
            const n = add("CreateBoundingBoxes", [10, 10 + 420 * i]);
            w(n, "width", 512); w(n, "height", 320); w(n, "editor_state", b);
            n.connect(n.outputs.findIndex(o => o.type === "BOUNDING_BOX"), lf, slot(lf, `bboxes.bboxes_${i}`));
            return n.id;
        });
        const ed = add("I2VMotion_LayoutEditor", [900, 10]);
        lf.connect(0, ed, slot(ed, "start_layout"));
        const pv = add("I2VMotion_LayoutPreview", [1500, 40]), pi = add("PreviewImage", [1500, 300]);
        ed.connect(2, pv, 0); ed.connect(0, pv, 1); pv.connect(0, pi, 0);
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [-800, 0]; app.canvas.setDirty(true, true);
        return {boxes: cb, editor: ed.id, layout: lf.id};
    }""", CORE_BOXES)
    editor = f"app.graph.getNodeById({ids['editor']}).i2vEditor"
    want = {"car": [_key(CORE_BOXES[0][0], 0), _key(CORE_BOXES[1][0], 15)],
            "kite": [_key(CORE_BOXES[0][1], 0), _key(CORE_BOXES[1][1], 15)]}

    entry = _run(page, server)
    server_layout = json.loads(entry["outputs"][str(ids["editor"])]["i2v_layout"][0])
    assert {o["phrase"]: o["boxes"] for o in server_layout["objects"]} == want, server_layout
    page.wait_for_function(f"() => {editor}.model.data.objects.length === 2")
    value = _editor_value(page, ids["editor"])
    assert {o["phrase"]: o["boxes"] for o in value["objects"]} == want, value  # the empty editor took them
    assert value.get("start") and "interpolation" not in value["objects"][0]
    page.wait_for_function(f"() => {editor}.display.startBtn.style.display === ''")  # ⤓ start offered, quietly
    assert not page.evaluate(f"() => {editor}.display.startBtn.classList.contains('i2v-le-attn')")
    ui.shot(page.locator(".i2v-layout-editor"), "layout_editor_from_core_boxes.png")

    # the user moves the car at frame 0; then the boxes upstream change: the drawing stays, ⤓ start lights up
    canvas = page.locator(".i2v-le-canvas")
    rect, view = canvas.bounding_box(), page.evaluate(f"() => {editor}.view()")
    car = want["car"][0]
    _drag(page, _box_px(view, rect, (car[1] + car[3]) / 2, (car[2] + car[4]) / 2),
          _box_px(view, rect, (car[1] + car[3]) / 2 + 0.1, (car[2] + car[4]) / 2))
    drawn = _editor_value(page, ids["editor"])
    assert drawn["objects"][0]["boxes"][0][1] == pytest.approx(car[1] + 0.1, abs=TOL), drawn
    page.evaluate("""([id, b]) => { const n = app.graph.getNodeById(id);
        n.widgets.find(x => x.name === "editor_state").value = b; }""",
                  [ids["boxes"][1], [dict(CORE_BOXES[1][0], x=300), CORE_BOXES[1][1]]])
    entry = _run(page, server)
    server_layout = json.loads(entry["outputs"][str(ids["editor"])]["i2v_layout"][0])
    assert server_layout["objects"][0]["boxes"][0] == [0, *[round(c, 6) for c in drawn["objects"][0]["boxes"][0][1:]]]
    page.wait_for_function(f"() => {editor}.display.startBtn.classList.contains('i2v-le-attn')")
    assert _editor_value(page, ids["editor"]) == drawn, "a changed start layout replaced the drawing"
    assert "start layout" in page.evaluate(f"() => {editor}.display.status.textContent")

    # ⤓ start replaces the drawing with the new boxes; ⟲ brings the drawing back
    page.locator(".i2v-layout-editor .i2v-le-btn", has_text="⤓ start").dispatch_event("click")
    page.wait_for_function(f"() => !{editor}.display.startBtn.classList.contains('i2v-le-attn')")
    imported = _editor_value(page, ids["editor"])
    assert imported["objects"][0]["boxes"][1] == _key(dict(CORE_BOXES[1][0], x=300), 15), imported
    page.locator(".i2v-layout-editor .i2v-le-btn", has_text="⟲").dispatch_event("click")
    assert _editor_value(page, ids["editor"]) == drawn
    assert ui.ours() == [], ui.ours()
    STATS["times"]["editor: start from core boxes"] = time.perf_counter() - t0


def test_editor_start_layout_never_replaces_a_drawing(ui, server):
    """Both frontends: Layout from JSON -> the editor's start_layout. The empty editor takes the layout after a run;
    once it holds boxes, a changed start layout is only offered (⤓ start lit), the editor's boxes stay."""
    page = ui.page
    first = {"objects": [{"phrase": "ball", "boxes": [[0, 0.1, 0.5, 0.2, 0.66], [15, 0.7, 0.4, 0.8, 0.56]]}]}
    second = {"objects": [{"phrase": "ball", "boxes": [[0, 0.3, 0.5, 0.4, 0.66], [15, 0.7, 0.4, 0.8, 0.56]]}]}
    ids = page.evaluate("""(text) => {
        app.graph.clear();
        const add = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; app.graph.add(n); return n; };
        const js = add("I2VMotion_LayoutFromJSON", [10, 10]);
        js.widgets.find(w => w.name === "layout_json").value = text;
        const ed = add("I2VMotion_LayoutEditor", [400, 10]);
        js.connect(0, ed, ed.inputs.findIndex(i => i.name === "start_layout"));
        const pv = add("I2VMotion_LayoutPreview", [1000, 40]), pi = add("PreviewImage", [1000, 300]);
        ed.connect(2, pv, 0); ed.connect(0, pv, 1); pv.connect(0, pi, 0);
        return {json: js.id, editor: ed.id};
    }""", json.dumps(first))
    editor = f"app.graph.getNodeById({ids['editor']}).i2vEditor"
    entry = _run(page, server)
    assert json.loads(entry["outputs"][str(ids["editor"])]["i2v_layout"][0])["objects"][0]["boxes"] == \
        first["objects"][0]["boxes"]
    page.wait_for_function(f"() => {editor}.model.data.objects.length === 1")
    took = _editor_value(page, ids["editor"])
    assert took["objects"][0]["boxes"] == first["objects"][0]["boxes"] and took.get("start")
    page.evaluate(f"""(text) => app.graph.getNodeById({ids['json']}).widgets.find(w => w.name === "layout_json")
        .value = text""", json.dumps(second))
    entry = _run(page, server)
    assert json.loads(entry["outputs"][str(ids["editor"])]["i2v_layout"][0])["objects"][0]["boxes"] == \
        first["objects"][0]["boxes"], "the node output the changed start layout over the editor's boxes"
    page.wait_for_function(f"() => {editor}.display.startBtn.classList.contains('i2v-le-attn')")
    assert _editor_value(page, ids["editor"]) == took
    assert ui.ours() == [], ui.ours()


# four objects of three key boxes over 16 frames: what the pointer-move measurement edits
MOVE_LAYOUT = {"objects": [
    {"phrase": f"object {i + 1}", "interpolation": ("linear", "catmull_rom", "ease_in_out", "catmull_rom")[i],
     "boxes": [[0, 0.05 + 0.2 * i, 0.1, 0.2 + 0.2 * i, 0.35], [8, 0.1 + 0.2 * i, 0.4, 0.3 + 0.2 * i, 0.7],
               [15, 0.02 + 0.2 * i, 0.6, 0.22 + 0.2 * i, 0.9]]} for i in range(4)]}
MOVES = 100
# Pointer moves dispatched on the editor's canvas, measured in the page. "paced": one move per animation frame, each in
# a fresh task once the last frame is laid out (as real input comes); its cost = its handler + what the editor then
# does in that frame's animation callbacks + the style and layout that work leaves pending (a frame callback
# registered before the move and one after it bracket the editor's own; the later one forces the layout). "burst":
# MOVES moves in one task, then that frame the same way. Paced: the median move; burst: the mean. Renders are the
# canvas's setTransform calls (one per draw), select rebuilds the <select>'s child-list mutations; per move.
MEASURE_JS = """async ({n, drag}) => {
    const root = document.querySelector('.i2v-layout-editor');
    const canvas = root.querySelector('canvas'), select = root.querySelector('select');
    const g = canvas.getContext('2d');
    let renders = 0;
    const st = g.setTransform;
    g.setTransform = function (...a) { renders++; return st.apply(this, a); };
    let rebuilds = 0;
    const mo = new MutationObserver((recs) => { rebuilds += recs.length; });
    mo.observe(select, {childList: true});
    const rebuilt = () => { rebuilds += mo.takeRecords().length; const k = rebuilds; rebuilds = 0; return k; };
    const r = canvas.getBoundingClientRect();
    const pt = (i) => [r.left + r.width * (0.5 + 0.2 * Math.cos(i / 5)), r.top + r.height * (0.5 + 0.2 * Math.sin(i / 7))];
    const move = (i) => canvas.dispatchEvent(new PointerEvent('pointermove', {clientX: pt(i)[0], clientY: pt(i)[1],
        pointerId: 1, pointerType: 'mouse', isPrimary: true, buttons: drag ? 1 : 0, bubbles: true, cancelable: true}));
    const frame = (fn) => new Promise((res) => requestAnimationFrame(() => { fn(); res(); }));
    const task = () => new Promise((res) => setTimeout(res, 0));
    const settle = () => document.body.offsetHeight; // forces the pending style and layout
    const out = {};
    let r0 = renders;
    const times = [];
    rebuilt();
    for (let i = 0; i < n; i++) {
        await task();
        let tA = 0, tB = 0;
        frame(() => { tA = performance.now(); });
        const t0 = performance.now();
        move(i);
        const t1 = performance.now();
        await frame(() => { settle(); tB = performance.now(); });
        times.push((t1 - t0) + (tB - tA));
    }
    times.sort((a, b) => a - b);
    out.paced = {ms: times[n >> 1], mean: times.reduce((a, b) => a + b, 0) / n, renders: (renders - r0) / n, rebuilds: rebuilt() / n};
    r0 = renders;
    await task();
    let tA = 0, tB = 0;
    frame(() => { tA = performance.now(); });
    const t0 = performance.now();
    for (let i = 0; i < n; i++) move(n + i);
    const t1 = performance.now();
    const sync = renders - r0;
    await frame(() => { settle(); tB = performance.now(); });
    out.burst = {ms: ((t1 - t0) + (tB - tA)) / n, renders: (renders - r0) / n, rebuilds: rebuilt() / n,
                 renders_in_handlers: sync};
    g.setTransform = st;
    mo.disconnect();
    return out;
}"""


def _measure_pointer_moves(ui) -> dict:
    """ms per pointer move over a Layout Editor (hover, and dragging a box) with render and <select> counts."""
    page = ui.page
    node_id = page.evaluate("""(value) => {
        app.graph.clear();
        const n = LiteGraph.createNode("I2VMotion_LayoutEditor"); n.pos = [20, 20]; app.graph.add(n);
        n.widgets.find(w => w.name === "editor").value = value;
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true);
        return n.id; }""", json.dumps(MOVE_LAYOUT))
    editor = f"app.graph.getNodeById({node_id}).i2vEditor"
    canvas = page.locator(".i2v-le-canvas")
    last = None
    for _ in range(50):  # the frontend places DOM widgets on its animation frames
        now = (canvas.bounding_box(), page.evaluate(f"() => {editor}.view()"))
        if now == last and now[0] and now[0]["width"] > 100:
            break
        last = now
        page.wait_for_timeout(100)
    rect, view = last
    hover = page.evaluate(MEASURE_JS, {"n": MOVES, "drag": False})
    # a real press on object 1's box at frame 0 starts a move drag; the measured moves then drag it
    b = MOVE_LAYOUT["objects"][0]["boxes"][0]
    page.mouse.move(*_box_px(view, rect, (b[1] + b[3]) / 2, (b[2] + b[4]) / 2))
    page.mouse.down()
    drag = page.evaluate(MEASURE_JS, {"n": MOVES, "drag": True})
    page.mouse.up()
    return {"hover": hover, "drag": drag, "node": node_id}


# What the pack's own code leaves on the page: every listener it adds (the caller of addEventListener is one of the
# pack's modules) until removed or its AbortSignal aborts, every ResizeObserver it makes until disconnected, every
# animation frame it asks for until run or cancelled, every interval until cleared.
TRACK_JS = r"""() => {
    if (window.__i2vTrack) return;
    const T = window.__i2vTrack = {listeners: new Set(), observers: new Set(), frames: new Set(), timers: new Set()};
    const ours = (err) => /\/extensions\/comfyui-i2v-motion\//.test(err.stack.split('\n')[2] || '');
    const capture = (o) => typeof o === 'boolean' ? o : !!o?.capture;
    const add = EventTarget.prototype.addEventListener, rem = EventTarget.prototype.removeEventListener;
    EventTarget.prototype.addEventListener = function (type, fn, opts) {
        if (ours(new Error())) {
            const rec = {target: this, type, fn, capture: capture(opts)};
            const signal = typeof opts === 'object' ? opts?.signal : null;
            if (!signal?.aborted) T.listeners.add(rec);
            if (signal) add.call(signal, 'abort', () => T.listeners.delete(rec));
        }
        return add.call(this, type, fn, opts);
    };
    EventTarget.prototype.removeEventListener = function (type, fn, opts) {
        for (const r of T.listeners) {
            if (r.target === this && r.type === type && r.fn === fn && r.capture === capture(opts)) T.listeners.delete(r);
        }
        return rem.call(this, type, fn, opts);
    };
    const RO = window.ResizeObserver;
    window.ResizeObserver = class extends RO {
        constructor(cb) { super(cb); if (ours(new Error())) T.observers.add(this); }
        disconnect() { T.observers.delete(this); return super.disconnect(); }
    };
    const raf = window.requestAnimationFrame, caf = window.cancelAnimationFrame;
    window.requestAnimationFrame = function (cb) {
        if (!ours(new Error())) return raf.call(window, cb);
        const id = raf.call(window, (t) => { T.frames.delete(id); cb(t); });
        T.frames.add(id);
        return id;
    };
    window.cancelAnimationFrame = function (id) { T.frames.delete(id); return caf.call(window, id); };
    const si = window.setInterval, ci = window.clearInterval;
    window.setInterval = function (fn, ms, ...a) {
        const id = si.call(window, fn, ms, ...a);
        if (ours(new Error())) T.timers.add(id);
        return id;
    };
    window.clearInterval = function (id) { T.timers.delete(id); return ci.call(window, id); };
}"""
LIVE_JS = """() => { const T = window.__i2vTrack; return {listeners: T.listeners.size, observers: T.observers.size,
    frames: T.frames.size, timers: T.timers.size}; }"""


def test_editor_pointer_moves_batched_and_cleaned_up(ui):
    """Pointer moves over the Layout Editor: the cost per move is printed (the summary shows it); the editor draws at
    most once per animation frame and never inside a pointer handler, rebuilds no <select> on a move, and leaves no
    listener, observer, pending frame or timer behind once its node is removed. Only the entry module registers an
    extension (the others are plain modules), and no console error comes from them."""
    page = ui.page
    page.evaluate(TRACK_JS)
    r = _measure_pointer_moves(ui)  # a fresh editor node, made after the tracker is in place
    host = os.environ.get("I2V_HOST_NAME", "host")
    line = (f"pointer move ({host}, {MOVES} moves, 4 objects x 16 frames): "
            f"hover {r['hover']['paced']['ms']:.2f} ms/move (mean {r['hover']['paced']['mean']:.3f}); "
            f"drag {r['drag']['paced']['ms']:.2f} ms/move paced (mean {r['drag']['paced']['mean']:.3f}), "
            f"{r['drag']['burst']['ms']:.3f} ms/move in a burst; per move: renders {r['drag']['paced']['renders']:.2f} "
            f"paced / {r['drag']['burst']['renders']:.3f} burst, select rebuilds {r['drag']['paced']['rebuilds']:.2f} "
            f"(hover: renders {r['hover']['paced']['renders']:.2f}, rebuilds {r['hover']['paced']['rebuilds']:.2f})")
    print(line)
    STATS.setdefault("lines", []).append(line)
    moved = _editor_value(ui.page, r["node"])["objects"][0]["boxes"][0]
    assert moved != MOVE_LAYOUT["objects"][0]["boxes"][0], "the measured drag did not move the box"

    drag, hover = r["drag"], r["hover"]
    assert drag["burst"]["renders_in_handlers"] == 0, "the editor drew inside a pointer handler (not batched to a frame)"
    assert drag["burst"]["renders"] * MOVES == 1, f"{MOVES} moves in one frame drew {drag['burst']['renders'] * MOVES} times"
    assert drag["paced"]["renders"] * MOVES >= MOVES, "a move per frame should be drawn in its frame"
    assert hover["paced"]["renders"] == 0, "hovering redrew the canvas"
    assert drag["paced"]["rebuilds"] == drag["burst"]["rebuilds"] == hover["paced"]["rebuilds"] == 0, \
        "the object <select> was rebuilt on a pointer move"

    # the tracker sees what the editor holds (so the check after removal can fail): listeners, one ResizeObserver
    page.locator(".i2v-layout-editor .i2v-le-btn", has_text="▶").dispatch_event("click")  # play: an interval
    page.locator(".i2v-le-canvas").focus()
    page.keyboard.press("ArrowRight")  # a key that asks for a frame
    live = page.evaluate(LIVE_JS)
    assert live["listeners"] >= 20 and live["observers"] == 1 and live["timers"] == 1, live
    page.evaluate(f"() => app.graph.remove(app.graph.getNodeById({r['node']}))")
    assert page.evaluate(LIVE_JS) == {"listeners": 0, "observers": 0, "frames": 0, "timers": 0}, \
        "the removed editor left these behind"
    page.wait_for_function("() => !document.querySelector('.i2v-layout-editor')")
    page.wait_for_timeout(300)  # the removed editor's timer and frames would have fired by now
    assert page.evaluate(LIVE_JS) == {"listeners": 0, "observers": 0, "frames": 0, "timers": 0}
    names = page.evaluate("() => app.extensions.map(e => e.name).filter(n => n.startsWith('i2v_motion'))")
    assert sorted(names) == ["i2v_motion.LayoutCasePreview", "i2v_motion.LayoutEditor"], names
    assert ui.ours() == [], ui.ours()


def test_template_browser_lists_the_examples_and_each_loads(ui, server):
    page, t0 = ui.page, time.perf_counter()
    assert server.get_json("/api/workflow_templates") == {PACK: EXAMPLES} or \
        sorted(server.get_json("/api/workflow_templates")[PACK]) == EXAMPLES

    def open_category():
        if not _dialog_open(page):
            page.get_by_role("button", name="Templates").first.click()
        page.get_by_text(PACK, exact=True).first.click()
        page.get_by_text(f"Showing {len(EXAMPLES)} of {len(EXAMPLES)} templates").wait_for()

    open_category()
    shown = page.evaluate("""(names) => { const d = document.querySelector('[role=dialog]');
        const texts = [...d.querySelectorAll('*')].filter(e => !e.children.length).map(e => e.textContent.trim());
        return {names: names.filter(n => texts.includes(n)), expect: texts.filter(t => t.includes('.expect')),
                text: d.innerText}; }""", EXAMPLES)
    assert shown["names"] == EXAMPLES and not shown["expect"], shown["text"][-600:]
    # every card shows its thumbnail (loaded lazily, when scrolled into view: wait until each has loaded)
    thumbs_js = """(names) => { const d = document.querySelector('[role=dialog]');
        const leaves = [...d.querySelectorAll('*')].filter(e => !e.children.length);
        const width = {}, src = {};  // each card's image: natural width once loaded, -1 while loading, null if none yet
        for (const n of names) {
            let a = leaves.find(e => e.textContent.trim() === n), img = null;
            while (a && a !== d && !(img = a.querySelector('img'))) a = a.parentElement;
            width[n] = img ? (img.complete ? [img.naturalWidth, img.naturalHeight] : -1) : null;
            src[n] = img ? img.src.slice(0, 80) : null;
            if (width[n] === -1) {  // lazy images load once in view or once eager
                img.loading = 'eager';
                img.scrollIntoView({block: 'nearest'});
            }
        }
        return {pending: names.filter(n => width[n] === null || width[n] === -1), size: width, src}; }"""
    # the sizes are read in the same evaluation that finds every card loaded: a card's image is re-created when the
    # card leaves and re-enters view, so a second look may find a fresh one still loading
    wait_js = f"(names) => {{ const r = ({thumbs_js})(names); return r.pending.length ? null : r.size; }}"
    thumbs = None
    for attempt in range(2):  # should an image stall: reopen the browser (its cards remount) and wait again
        try:
            thumbs = page.wait_for_function(wait_js, arg=EXAMPLES, timeout=30000 * (attempt + 1)).json_value()
            break
        except Exception as e:  # the assertion below says which
            state = page.evaluate(thumbs_js, EXAMPLES)
            thumbs = state["size"]
            print(f"thumbnails still loading (try {attempt + 1}): "
                  f"{ {n: (state['size'][n], state['src'][n]) for n in state['pending']} } {str(e).splitlines()[0][:120]}")
            if attempt == 0:
                page.evaluate("""() => { const d = document.querySelector('[role=dialog]');
                    const b = [...d.querySelectorAll('button')].find(b => /close/i.test(b.getAttribute('aria-label'))
                        || /pi-times|lucide--x\\b/.test(b.innerHTML));  // its X
                    b ? b.click() : d.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true})); }""")
                page.wait_for_function("() => !document.querySelector('[role=dialog]')")
                open_category()
    from PIL import Image

    for name in EXAMPLES:  # the image each card shows is the workflow's own thumbnail, not a placeholder
        jpg = REPO / "example_workflows" / f"{name}.jpg"
        assert jpg.is_file(), f"{name} has no thumbnail {jpg.name}"
        with Image.open(jpg) as im:
            assert thumbs[name] == list(im.size), f"{name}: the card shows {thumbs[name]}, its thumbnail is {im.size}"
    ui.shot(page, "template_browser.png")
    for name in EXAMPLES:  # as a user opens them: a click on the template's card (which closes the browser)
        open_category()
        page.get_by_text(name, exact=True).first.click()
        page.wait_for_function("() => !document.querySelector('.p-dialog') && app.graph.nodes.length > 3")
        page.wait_for_timeout(300)
        unknown = page.evaluate("() => app.graph.nodes.filter(n => !LiteGraph.registered_node_types[n.type])"
                                ".map(n => n.type)")
        missing_dialog = page.evaluate("() => /missing node|node types were not found/i.test(document.body.innerText)")
        assert unknown == [] and not missing_dialog, (name, unknown)
        if name == "layout_box_trajectory":
            eds = page.evaluate("() => app.graph.nodes.filter(n => n.type === 'I2VMotion_LayoutEditor')"
                                ".map(n => n.i2vEditor.model.data.objects.length)")
            assert eds and eds[0] >= 1, "the layout example should draw its boxes in the Layout Editor"
            page.wait_for_function("() => app.graph.nodes.find(n => n.type === 'I2VMotion_LayoutCaseLoader')"
                                   ".i2vCasePreview?.naturalWidth === 512")  # Load Layout Case shows its image
            page.wait_for_function("() => app.graph.nodes.find(n => n.type === 'I2VMotion_LayoutEditor').i2vEditor.display.img")
            page.evaluate("""() => { const n = app.graph.nodes.find(n => n.type === 'I2VMotion_LayoutEditor');
                app.canvas.ds.scale = 1; app.canvas.ds.offset = [120 - n.pos[0], 120 - n.pos[1]];
                app.canvas.setDirty(true, true); }""")
            page.wait_for_timeout(300)
            ed = page.locator(".i2v-layout-editor").first
            ui.shot(ed, "layout_example_editor.png")
    # the help page of a node, where both frontends look for a custom node's docs (from its python_module)
    doc = page.evaluate("""async () => {
        const def = LiteGraph.registered_node_types['I2VMotion_LayoutEditor'].nodeData;
        const pack = def.python_module.split('.')[1];
        const r = await fetch(`/extensions/${pack}/docs/${def.name}.md`);
        return {ok: r.ok, type: r.headers.get('content-type'), text: await r.text()}; }""")
    assert doc["ok"] and "html" not in (doc["type"] or "") and doc["text"].startswith("# Layout Editor"), doc["type"]
    assert ui.ours() == [], ui.ours()
    STATS["times"]["templates: list and load"] = time.perf_counter() - t0
