// Layout Editor (I2VMotion_LayoutEditor): draw box trajectories on the image, on the node itself.
// The widget's value is the layout JSON that Layout from JSON reads (plus the editor's "image" and object
// "color"), so it is saved in the workflow and the Python node computes the layout from it.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { INTERPOLATIONS, interpolateBoxes, normBox, round4 } from "./layout_math.js";
import { after, caseImageUrl, el, outputImageUrl, viewUrl, widgetValue } from "./common.js";

const NODE = "I2VMotion_LayoutEditor";
const CASE_NODE = "I2VMotion_LayoutCaseLoader";
const WIDGET = "I2V_LAYOUT_EDITOR";
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];
const MARGIN = 0.3;       // view margin around the image, as a fraction of its size (boxes may leave the image)
const HANDLE = 7;         // corner handle half-size, CSS pixels
const MIN_SIZE = 0.01;    // smallest box side, fraction of the image
const PLACEHOLDER = [512, 320];

class LayoutEditorWidget {
    constructor(node) {
        this.node = node;
        this.data = { objects: [] };
        this.frame = 0;
        this.sel = -1;
        this.undoStack = [];
        this.redoStack = [];
        this.img = null;
        this.imgKey = null;
        this.execImage = null;
        this.drag = null;
        this.playTimer = null;
        this.build();
    }

    // -- value ------------------------------------------------------------------------------------------
    get value() {
        return JSON.stringify(this.data);
    }

    set value(v) {
        try {
            const d = typeof v === "string" ? JSON.parse(v || '{"objects": []}') : v;
            this.data = d && Array.isArray(d.objects) ? d : { objects: [] };
        } catch {
            this.data = { objects: [] };
        }
        this.data.objects.forEach((o, i) => {
            o.boxes = Array.isArray(o.boxes) ? o.boxes : [];
            o.color = o.color || COLORS[i % COLORS.length];
        });
        this.sel = this.data.objects.length ? Math.min(Math.max(this.sel, 0), this.data.objects.length - 1) : -1;
        this.refresh();
    }

    snapshot() {
        this.undoStack.push(this.value);
        if (this.undoStack.length > 200) this.undoStack.shift();
        this.redoStack = [];
    }

    changed() {
        this.node.setDirtyCanvas?.(true, true);
        this.node.graph?.change?.();
        this.refresh();
    }

    undo() {
        if (!this.undoStack.length) return;
        this.redoStack.push(this.value);
        this.value = this.undoStack.pop();
        this.changed();
    }

    redo() {
        if (!this.redoStack.length) return;
        this.undoStack.push(this.value);
        this.value = this.redoStack.pop();
        this.changed();
    }

    // -- settings from the node ------------------------------------------------------------------------
    get frames() {
        return Math.max(1, Number(widgetValue(this.node, "frames")) || 16);
    }

    interpOf(o) {
        return o.interpolation || widgetValue(this.node, "interpolation") || "linear";
    }

    boxesOf(o) {
        return interpolateBoxes(o.boxes, this.frames, this.interpOf(o), widgetValue(this.node, "size_space") || "log");
    }

    keyAt(o, f) {
        return o.boxes.findIndex((k) => k[0] === f);
    }

    setKey(o, f, box) {
        const b = normBox(box).map(round4);
        const i = this.keyAt(o, f);
        if (i >= 0) o.boxes[i] = [f, ...b];
        else o.boxes.push([f, ...b]);
        o.boxes.sort((a, c) => a[0] - c[0]);
    }

    addObject(box = null) {
        const n = this.data.objects.length;
        const o = { phrase: `object ${n + 1}`, color: COLORS[n % COLORS.length], boxes: [] };
        if (box) this.setKey(o, this.frame, box);
        this.data.objects.push(o);
        this.sel = n;
        return o;
    }

    // -- DOM -----------------------------------------------------------------------------------------
    build() {
        const btn = (label, title, fn) => el("button", { title, class: "i2v-le-btn", onclick: (e) => { e.preventDefault(); fn(); } }, label);
        this.objSelect = el("select", { title: "Selected object", onchange: () => { this.sel = Number(this.objSelect.value); this.refresh(); } });
        this.phrase = el("input", { type: "text", title: "Phrase: what the object is", placeholder: "phrase", style: { width: "8em" },
            onchange: () => this.editSel((o) => { o.phrase = this.phrase.value; }) });
        this.color = el("input", { type: "color", title: "Colour", onchange: () => this.editSel((o) => { o.color = this.color.value; }) });
        this.interp = el("select", { title: "Interpolation of this object's path (node default: the interpolation widget)",
            onchange: () => this.editSel((o) => { if (this.interp.value) o.interpolation = this.interp.value; else delete o.interpolation; }) },
            el("option", { value: "" }, "node default"), ...INTERPOLATIONS.map((i) => el("option", { value: i }, i)));
        this.fileInput = el("input", { type: "file", accept: "image/*", style: { display: "none" },
            onchange: () => this.fileInput.files[0] && this.upload(this.fileInput.files[0]) });
        this.playBtn = btn("▶", "Play / pause", () => this.togglePlay());
        const bar1 = el("div", { class: "i2v-le-bar" }, this.objSelect,
            btn("+ object", "Add an object (then drag on the image to draw its box)", () => { this.snapshot(); this.addObject(); this.changed(); }),
            this.phrase, this.color, this.interp,
            btn("✕ object", "Delete the selected object", () => this.editSel((o) => { this.data.objects.splice(this.sel, 1); this.sel = Math.min(this.sel, this.data.objects.length - 1); })));
        this.canvas = el("canvas", { class: "i2v-le-canvas", tabindex: "0" });
        this.stage = el("div", { class: "i2v-le-stage" }, this.canvas);
        this.slider = el("input", { type: "range", min: "0", max: "15", value: "0", class: "i2v-le-slider", title: "Frame",
            oninput: () => { this.frame = Number(this.slider.value); this.refresh(); } });
        this.frameLabel = el("span", { class: "i2v-le-label" }, "frame 0");
        this.nums = ["x0", "y0", "x1", "y1"].map((n) => el("input", { type: "number", step: "0.01", title: `${n} at this frame (fraction of the image)`,
            class: "i2v-le-num", "data-coord": n, onchange: () => this.numericEdit() }));
        const bar2 = el("div", { class: "i2v-le-bar" }, this.playBtn, this.slider, this.frameLabel,
            btn("⟲", "Undo", () => this.undo()), btn("⟳", "Redo", () => this.redo()),
            btn("image…", "Upload an image to draw on (used when no image is connected)", () => this.fileInput.click()), this.fileInput);
        const bar3 = el("div", { class: "i2v-le-bar" }, el("span", { class: "i2v-le-label" }, "box"), ...this.nums,
            btn("✕ key", "Delete the selected object's key box at this frame", () => this.editSel((o) => {
                const i = this.keyAt(o, this.frame);
                if (i >= 0) o.boxes.splice(i, 1);
            })));
        this.status = el("div", { class: "i2v-le-status" });
        this.root = el("div", { class: "i2v-layout-editor" }, bar1, this.stage, bar2, bar3, this.status);
        for (const t of ["pointerdown", "pointermove", "pointerup", "wheel", "keydown", "contextmenu"]) {
            this.root.addEventListener(t, (e) => e.stopPropagation());
        }
        this.canvas.addEventListener("pointerdown", (e) => this.onDown(e));
        this.canvas.addEventListener("pointermove", (e) => this.onMove(e));
        this.canvas.addEventListener("pointerup", (e) => this.onUp(e));
        this.canvas.addEventListener("pointercancel", (e) => this.onUp(e));
        this.stage.addEventListener("dragover", (e) => e.preventDefault());
        this.stage.addEventListener("drop", (e) => {
            e.preventDefault();
            const f = e.dataTransfer?.files?.[0];
            if (f && f.type.startsWith("image/")) this.upload(f);
        });
        new ResizeObserver(() => this.draw()).observe(this.stage);
    }

    editSel(fn) {
        const o = this.data.objects[this.sel];
        if (!o) return;
        this.snapshot();
        fn(o);
        this.changed();
    }

    refresh() {
        const objs = this.data.objects;
        this.objSelect.replaceChildren(...objs.map((o, i) => el("option", { value: String(i) }, `${i + 1}: ${o.phrase || "(no phrase)"}`)));
        if (!objs.length) this.objSelect.append(el("option", { value: "-1" }, "no objects"));
        this.objSelect.value = String(this.sel);
        const o = objs[this.sel];
        this.phrase.value = o?.phrase ?? "";
        this.color.value = o?.color ?? "#888888";
        this.interp.value = o?.interpolation ?? "";
        const T = this.frames;
        this.frame = Math.min(this.frame, T - 1);
        this.slider.max = String(T - 1);
        this.slider.value = String(this.frame);
        const isKey = o && this.keyAt(o, this.frame) >= 0;
        this.frameLabel.textContent = `frame ${this.frame} / ${T - 1}${isKey ? " ◆" : ""}`;
        const cur = o ? this.boxesOf(o)[this.frame] : null;
        this.nums.forEach((n, i) => {
            n.disabled = !o;
            if (document.activeElement !== n) n.value = cur ? round4(cur[i]) : "";
        });
        const late = objs.flatMap((ob) => ob.boxes.filter((k) => k[0] >= T).map((k) => `${ob.phrase}: key frame ${k[0]}`));
        this.status.textContent = late.length ? `beyond ${T} frames (raise frames or delete): ${late.join(", ")}` : "";
        this.status.classList.toggle("i2v-le-warn", late.length > 0);
        this.draw();
    }

    numericEdit() {
        const o = this.data.objects[this.sel];
        if (!o) return;
        const cur = this.boxesOf(o)[this.frame];
        const b = this.nums.map((n, i) => (n.value === "" || isNaN(Number(n.value)) ? cur?.[i] : Number(n.value)));
        if (b.some((v) => v === undefined)) {
            this.status.textContent = "give all four coordinates for the object's first box";
            return;
        }
        if (b[2] - b[0] < MIN_SIZE || b[3] - b[1] < MIN_SIZE) {
            this.status.textContent = "x1 must be greater than x0 and y1 greater than y0";
            return;
        }
        this.snapshot();
        this.setKey(o, this.frame, b);
        this.changed();
    }

    togglePlay() {
        if (this.playTimer) {
            clearInterval(this.playTimer);
            this.playTimer = null;
            this.playBtn.textContent = "▶";
            return;
        }
        this.playBtn.textContent = "❚❚";
        this.playTimer = setInterval(() => {
            if (!this.root.isConnected) return this.togglePlay();
            this.frame = (this.frame + 1) % this.frames;
            this.refresh();
        }, 125);
    }

    async upload(file) {
        const body = new FormData();
        body.append("image", file);
        body.append("type", "input");
        const r = await api.fetchApi("/upload/image", { method: "POST", body });
        if (r.status !== 200) {
            this.status.textContent = `upload failed: ${r.status} ${r.statusText}`;
            return;
        }
        const res = await r.json();
        this.snapshot();
        this.data.image = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
        this.changed();
    }

    // -- image ---------------------------------------------------------------------------------------
    /** The connected node's image (Load Image, Load Layout Case), else the last run's, else the upload. */
    sourceKey() {
        const link = this.node.inputs?.find((i) => i.name === "image")?.link;
        const info = link != null ? this.node.graph?.links?.[link] ?? this.node.graph?.links?.get?.(link) : null;
        const up = info ? this.node.graph.getNodeById(info.origin_id) : null;
        if (up) {
            const cls = up.comfyClass || up.type;
            if (cls === CASE_NODE) return `case|${widgetValue(up, "folder")}|${widgetValue(up, "name")}|${up.id}`;
            const name = widgetValue(up, "image");
            if (typeof name === "string" && name && /LoadImage/.test(cls)) return `view|${name}`;
            return this.execImage ? `exec|${this.execImage}` : "none";
        }
        if (this.data.image) return `view|${this.data.image}`;
        return this.execImage ? `exec|${this.execImage}` : "none";
    }

    async updateImage() {
        const key = this.sourceKey();
        if (key === this.imgKey) return;
        this.imgKey = key;
        let url = null;
        if (key.startsWith("view|")) url = viewUrl(key.slice(5));
        else if (key.startsWith("exec|")) url = key.slice(5);
        else if (key.startsWith("case|")) {
            const link = this.node.inputs.find((i) => i.name === "image").link;
            const info = this.node.graph.links[link] ?? this.node.graph.links.get?.(link);
            url = await caseImageUrl(this.node.graph.getNodeById(info.origin_id)).catch(() => null);
        }
        if (!url) {
            this.img = null;
            this.draw();
            return;
        }
        const img = new Image();
        img.onload = () => {
            if (this.imgKey === key) {
                this.img = img;
                this.draw();
            }
        };
        img.onerror = () => {
            if (this.imgKey === key) {
                this.img = null;
                this.status.textContent = "the image could not be loaded (run the graph once to show a connected image)";
                this.draw();
            }
        };
        img.src = url;
    }

    // -- geometry --------------------------------------------------------------------------------------
    view() {
        const W = this.canvas.clientWidth, H = this.canvas.clientHeight;
        const [iw, ih] = this.img ? [this.img.naturalWidth, this.img.naturalHeight] : PLACEHOLDER;
        const s = Math.min(W / (iw * (1 + 2 * MARGIN)), H / (ih * (1 + 2 * MARGIN)));
        const w = iw * s, h = ih * s;
        return { x: (W - w) / 2, y: (H - h) / 2, w, h };
    }

    toNorm(e) {
        const r = this.canvas.getBoundingClientRect();
        const v = this.view();
        // the DOM widget may be scaled with the canvas zoom: map client pixels to CSS pixels of the canvas
        const sx = this.canvas.clientWidth / (r.width || 1), sy = this.canvas.clientHeight / (r.height || 1);
        return [((e.clientX - r.left) * sx - v.x) / v.w, ((e.clientY - r.top) * sy - v.y) / v.h];
    }

    hit(p) {
        const v = this.view();
        const tol = [HANDLE / v.w, HANDLE / v.h];
        const order = [this.sel, ...this.data.objects.map((_, i) => i).filter((i) => i !== this.sel).reverse()];
        const sel = this.data.objects[this.sel];
        if (sel?.boxes.length) {
            const b = this.boxesOf(sel)[this.frame];
            const corners = [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]];
            const c = corners.findIndex(([x, y]) => Math.abs(p[0] - x) <= tol[0] && Math.abs(p[1] - y) <= tol[1]);
            if (c >= 0) return { kind: "resize", obj: this.sel, corner: c };
        }
        for (const i of order) {
            const o = this.data.objects[i];
            if (!o || !o.boxes.length) continue;
            const b = this.boxesOf(o)[this.frame];
            if (p[0] >= b[0] && p[0] <= b[2] && p[1] >= b[1] && p[1] <= b[3]) return { kind: "move", obj: i };
        }
        return { kind: "draw" };
    }

    onDown(e) {
        if (e.button !== 0) return;
        e.preventDefault();
        this.canvas.focus();
        this.canvas.setPointerCapture?.(e.pointerId);
        const p = this.toNorm(e);
        const h = this.hit(p);
        this.snapshot();
        if (h.kind === "draw") {
            const o = this.data.objects[this.sel];
            if (!o || e.shiftKey) {
                this.addObject();
                h.created = true;
            }
            h.obj = this.sel;
            h.start = p;
        } else {
            this.sel = h.obj;
            h.start = p;
            h.box = this.boxesOf(this.data.objects[h.obj])[this.frame].slice();
        }
        this.drag = h;
        this.refresh();
    }

    onMove(e) {
        if (!this.drag) {
            const h = this.hit(this.toNorm(e));
            this.canvas.style.cursor = h.kind === "resize" ? "nwse-resize" : h.kind === "move" ? "move" : "crosshair";
            return;
        }
        const p = this.toNorm(e);
        const d = this.drag;
        const o = this.data.objects[d.obj];
        let b;
        if (d.kind === "draw") b = [d.start[0], d.start[1], p[0], p[1]];
        else if (d.kind === "move") {
            const dx = p[0] - d.start[0], dy = p[1] - d.start[1];
            b = [d.box[0] + dx, d.box[1] + dy, d.box[2] + dx, d.box[3] + dy];
        } else {
            b = d.box.slice();
            const xi = d.corner === 0 || d.corner === 3 ? 0 : 2, yi = d.corner < 2 ? 1 : 3;
            b[xi] = p[0];
            b[yi] = p[1];
        }
        d.moved = true;
        d.current = b;
        if (d.kind !== "draw" || (Math.abs(b[2] - b[0]) >= MIN_SIZE && Math.abs(b[3] - b[1]) >= MIN_SIZE)) {
            this.setKey(o, this.frame, b);
        }
        this.refresh();
    }

    onUp(e) {
        const d = this.drag;
        this.drag = null;
        this.canvas.releasePointerCapture?.(e.pointerId);
        if (!d) return;
        if (!d.moved) {
            this.undoStack.pop(); // a click selects; nothing changed
            const o = this.data.objects[d.obj];
            if (d.created && o && !o.boxes.length) {  // a click made no box: drop the object it started
                this.data.objects.splice(d.obj, 1);
                this.sel = Math.min(this.sel, this.data.objects.length - 1);
            }
            this.refresh();
            return;
        }
        this.changed();
    }

    // -- drawing ----------------------------------------------------------------------------------------
    draw() {
        const c = this.canvas;
        const dpr = window.devicePixelRatio || 1;
        const W = this.stage.clientWidth, H = this.stage.clientHeight;
        if (!W || !H) return;
        if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
            c.width = Math.round(W * dpr);
            c.height = Math.round(H * dpr);
            c.style.width = `${W}px`;
            c.style.height = `${H}px`;
        }
        const g = c.getContext("2d");
        g.setTransform(dpr, 0, 0, dpr, 0, 0);
        g.fillStyle = "#1b1b1b";
        g.fillRect(0, 0, W, H);
        const v = this.view();
        if (this.img) g.drawImage(this.img, v.x, v.y, v.w, v.h);
        else {
            g.fillStyle = "#555";
            g.fillRect(v.x, v.y, v.w, v.h);
            g.fillStyle = "#ddd";
            g.font = "12px sans-serif";
            g.textAlign = "center";
            g.fillText("connect an image or upload one (image…)", v.x + v.w / 2, v.y + v.h / 2);
            g.textAlign = "start";
        }
        g.strokeStyle = "#fff";
        g.lineWidth = 1;
        g.setLineDash([]);
        g.strokeRect(v.x - 0.5, v.y - 0.5, v.w + 1, v.h + 1);
        const X = (x) => v.x + x * v.w, Y = (y) => v.y + y * v.h;
        this.data.objects.forEach((o, i) => {
            if (!o.boxes.length) return;
            const bs = this.boxesOf(o);
            const sel = i === this.sel;
            g.strokeStyle = o.color;
            g.globalAlpha = sel ? 0.9 : 0.5;
            g.lineWidth = 1.5;
            g.beginPath();
            bs.forEach((b, t) => {
                const cx = X((b[0] + b[2]) / 2), cy = Y((b[1] + b[3]) / 2);
                t ? g.lineTo(cx, cy) : g.moveTo(cx, cy);
            });
            g.stroke();
            for (const k of o.boxes) {
                if (k[0] >= bs.length) continue;
                const b = bs[k[0]];
                g.fillStyle = o.color;
                g.beginPath();
                g.arc(X((b[0] + b[2]) / 2), Y((b[1] + b[3]) / 2), sel ? 4 : 3, 0, 2 * Math.PI);
                g.fill();
                if (sel && k[0] !== this.frame) {
                    g.globalAlpha = 0.3;
                    g.setLineDash([2, 3]);
                    g.strokeRect(X(b[0]), Y(b[1]), X(b[2]) - X(b[0]), Y(b[3]) - Y(b[1]));
                    g.setLineDash([]);
                    g.globalAlpha = 0.9;
                }
            }
            const b = bs[this.frame];
            const key = this.keyAt(o, this.frame) >= 0;
            g.globalAlpha = 1;
            g.lineWidth = sel ? 3 : 2;
            g.setLineDash(key ? [] : [6, 4]);
            g.strokeRect(X(b[0]), Y(b[1]), X(b[2]) - X(b[0]), Y(b[3]) - Y(b[1]));
            g.setLineDash([]);
            g.font = "12px sans-serif";
            const label = `${o.phrase || i + 1}`;
            const tw = g.measureText(label).width;
            g.fillStyle = o.color;
            g.fillRect(X(b[0]), Y(b[1]) - 16, tw + 8, 16);
            g.fillStyle = "#fff";
            g.fillText(label, X(b[0]) + 4, Y(b[1]) - 4);
            if (sel) {
                g.fillStyle = "#fff";
                for (const [x, y] of [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]) {
                    g.fillRect(X(x) - HANDLE / 2, Y(y) - HANDLE / 2, HANDLE, HANDLE);
                }
            }
        });
        g.globalAlpha = 1;
        g.fillStyle = "#fff";
        g.font = "12px sans-serif";
        g.fillText(`frame ${this.frame}`, 6, 14);
        if (!this.data.objects.some((o) => o.boxes.length)) {
            g.fillText("drag on the image to draw a box; shift+drag adds another object", 6, H - 8);
        }
    }
}

const STYLE = `
.i2v-layout-editor { display: flex; flex-direction: column; gap: 3px; width: 100%; height: 100%; box-sizing: border-box;
  font: 12px sans-serif; color: var(--input-text, #ddd); }
.i2v-le-bar { display: flex; gap: 4px; align-items: center; flex-wrap: nowrap; min-height: 22px; }
.i2v-le-bar select, .i2v-le-bar input, .i2v-le-btn { background: var(--comfy-input-bg, #222); color: inherit;
  border: 1px solid var(--border-color, #555); border-radius: 4px; font: inherit; padding: 1px 4px; }
.i2v-le-btn { cursor: pointer; white-space: nowrap; }
.i2v-le-btn:hover { filter: brightness(1.3); }
.i2v-le-stage { flex: 1 1 auto; min-height: 160px; position: relative; overflow: hidden; }
.i2v-le-canvas { position: absolute; left: 0; top: 0; touch-action: none; outline: none; }
.i2v-le-slider { flex: 1 1 auto; min-width: 60px; }
.i2v-le-num { width: 5em; }
.i2v-le-label { white-space: nowrap; }
.i2v-le-status { min-height: 14px; font-size: 11px; opacity: 0.8; }
.i2v-le-warn { color: #f88; opacity: 1; }
`;

app.registerExtension({
    name: "i2v_motion.LayoutEditor",
    init() {
        document.head.append(el("style", {}, STYLE));
    },
    getCustomWidgets() {
        return {
            [WIDGET](node, inputName, inputData) {
                const spec = Array.isArray(inputData) ? inputData[1] : inputData;
                const editor = new LayoutEditorWidget(node);
                const widget = node.addDOMWidget(inputName, WIDGET, editor.root, {
                    getValue: () => editor.value,
                    setValue: (v) => editor.value = v,
                    getMinHeight: () => 380,
                    hideOnZoom: false,
                });
                widget.i2vEditor = editor;
                node.i2vEditor = editor;
                editor.value = spec?.default ?? '{"objects": []}';
                return { widget };
            },
        };
    },
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (nodeData?.name !== NODE) return;
        after(nodeType.prototype, "onNodeCreated", function () {
            const [w, h] = this.size;
            this.setSize([Math.max(w, 560), Math.max(h, 600)]);
            for (const name of ["frames", "interpolation", "size_space"]) {
                const wd = this.widgets?.find((x) => x.name === name);
                if (wd) after(wd, "callback", () => this.i2vEditor?.refresh());
            }
        });
        after(nodeType.prototype, "onExecuted", function (message) {
            const img = message?.i2v_editor_image?.[0];
            if (img && this.i2vEditor) {
                this.i2vEditor.execImage = outputImageUrl(img);
                this.i2vEditor.imgKey = null;
                this.i2vEditor.updateImage();
            }
        });
        after(nodeType.prototype, "onDrawForeground", function () {
            this.i2vEditor?.updateImage(); // cheap unless the image source changed
        });
        after(nodeType.prototype, "onConfigure", function () {
            this.i2vEditor?.refresh();
        });
    },
});
