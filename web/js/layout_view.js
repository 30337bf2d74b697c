// Layout Editor view: the editor's DOM (tool bars, canvas, frame slider, box fields, status line) and its drawing.
// Every change asks for a repaint with invalidate(); the controls and the canvas are then brought up to date once,
// on the next animation frame, however many pointer moves or edits came before it. The object list (<select>) is
// rebuilt only when objects are added, removed or renamed. A plain module (registers no extension).
import { INTERPOLATIONS, round4 } from "./layout_math.js";
import { el } from "./common.js";

const MARGIN = 0.3;          // view margin around the image, as a fraction of its size (boxes may leave the image)
export const HANDLE = 7;     // corner handle size, CSS pixels
const PLACEHOLDER = [512, 320];

export const STYLE = `
.i2v-layout-editor { display: flex; flex-direction: column; gap: 3px; width: 100%; height: 100%; box-sizing: border-box;
  font: 12px sans-serif; color: var(--input-text, #ddd); }
.i2v-le-bar { display: flex; gap: 4px; align-items: center; flex-wrap: nowrap; min-height: 22px; }
.i2v-le-bar select, .i2v-le-bar input, .i2v-le-btn { background: var(--comfy-input-bg, #222); color: inherit;
  border: 1px solid var(--border-color, #555); border-radius: 4px; font: inherit; padding: 1px 4px; }
.i2v-le-btn { cursor: pointer; white-space: nowrap; }
.i2v-le-btn:hover { filter: brightness(1.3); }
.i2v-le-btn.i2v-le-attn { border-color: #fb4; color: #fb4; }
.i2v-le-stage { flex: 1 1 auto; min-height: 160px; position: relative; overflow: hidden; }
.i2v-le-canvas { position: absolute; left: 0; top: 0; touch-action: none; outline: none; }
.i2v-le-slider { flex: 1 1 auto; min-width: 60px; }
.i2v-le-num { width: 5em; }
.i2v-le-label { white-space: nowrap; }
.i2v-le-status { min-height: 14px; font-size: 11px; opacity: 0.8; }
.i2v-le-warn { color: #f88; opacity: 1; }
`;

export class LayoutView {
    /**
     * @param model the LayoutModel drawn
     * @param act the editor's actions the controls call (select, editSelected, addObject, deleteObject, deleteKey,
     *            numericEdit, setFrame, togglePlay, undo, redo, chooseImage, importStart)
     * @param signal aborts every listener the view adds (the editor's teardown)
     */
    constructor(model, act, signal) {
        this.model = model;
        this.img = null;
        this.message = "";      // a transient status message (cleared by the next edit)
        this.startState = null; // null (no start layout), "same" (imported) or "changed"
        this.dirty = { controls: false, canvas: false };
        this.raf = 0;
        this.listKey = null;
        this.build(act, signal);
        this.resize = new ResizeObserver(() => this.invalidate({ canvas: true }));
        this.resize.observe(this.stage);
    }

    build(act, signal) {
        const btn = (label, title, fn, attrs = {}) => el("button", { title, class: "i2v-le-btn", signal, ...attrs,
            onclick: (e) => { e.preventDefault(); fn(); } }, label);
        this.objSelect = el("select", { title: "Selected object", signal, onchange: () => act.select(Number(this.objSelect.value)) });
        this.phrase = el("input", { type: "text", title: "Phrase: what the object is", placeholder: "phrase", signal,
            style: { width: "8em" }, onchange: () => act.editSelected((o) => { o.phrase = this.phrase.value; }) });
        this.color = el("input", { type: "color", title: "Colour", signal,
            onchange: () => act.editSelected((o) => { o.color = this.color.value; }) });
        this.interp = el("select", { title: "Interpolation of this object's path (node default: the interpolation widget)", signal,
            onchange: () => act.editSelected((o) => { if (this.interp.value) o.interpolation = this.interp.value; else delete o.interpolation; }) },
            el("option", { value: "" }, "node default"), ...INTERPOLATIONS.map((i) => el("option", { value: i }, i)));
        this.fileInput = el("input", { type: "file", accept: "image/*", style: { display: "none" }, signal,
            onchange: () => this.fileInput.files[0] && act.upload(this.fileInput.files[0]) });
        this.playBtn = btn("▶", "Play / pause", () => act.togglePlay());
        this.startBtn = btn("⤓ start", "Replace the drawing with the connected start layout's boxes (⟲ undoes it)",
            () => act.importStart(), { style: { display: "none" } });
        const bar1 = el("div", { class: "i2v-le-bar" }, this.objSelect,
            btn("+ object", "Add an object (then drag on the image to draw its box)", () => act.addObject()),
            this.phrase, this.color, this.interp,
            btn("✕ object", "Delete the selected object", () => act.deleteObject()));
        this.canvas = el("canvas", { class: "i2v-le-canvas", tabindex: "0" });
        this.ctx = this.canvas.getContext("2d");
        this.stage = el("div", { class: "i2v-le-stage" }, this.canvas);
        this.slider = el("input", { type: "range", min: "0", max: "15", value: "0", class: "i2v-le-slider", title: "Frame",
            signal, oninput: () => act.setFrame(Number(this.slider.value)) });
        this.frameLabel = el("span", { class: "i2v-le-label" }, "frame 0");
        this.nums = ["x0", "y0", "x1", "y1"].map((n) => el("input", { type: "number", step: "0.01", signal,
            title: `${n} at this frame (fraction of the image)`, class: "i2v-le-num", "data-coord": n,
            onchange: () => act.numericEdit(this.nums.map((x) => x.value)) }));
        const bar2 = el("div", { class: "i2v-le-bar" }, this.playBtn, this.slider, this.frameLabel,
            btn("⟲", "Undo (Ctrl+Z)", () => act.undo()), btn("⟳", "Redo (Ctrl+Shift+Z)", () => act.redo()),
            btn("image…", "Upload an image to draw on (used when no image is connected)", () => this.fileInput.click()),
            this.fileInput, this.startBtn);
        const bar3 = el("div", { class: "i2v-le-bar" }, el("span", { class: "i2v-le-label" }, "box"), ...this.nums,
            btn("✕ key", "Delete the selected object's key box at this frame (Delete)", () => act.deleteKey()));
        this.status = el("div", { class: "i2v-le-status" });
        this.root = el("div", { class: "i2v-layout-editor" }, bar1, this.stage, bar2, bar3, this.status);
    }

    // -- scheduling ------------------------------------------------------------------------------------
    /** Ask for the controls and/or the canvas to be brought up to date on the next animation frame (once). */
    invalidate({ controls = false, canvas = false } = {}) {
        this.dirty.controls ||= controls;
        this.dirty.canvas ||= canvas;
        if (!this.raf && !this.destroyed) this.raf = requestAnimationFrame(() => this.flush());
    }

    flush() {
        this.raf = 0;
        const { controls, canvas } = this.dirty;
        this.dirty = { controls: false, canvas: false };
        // draw first: it reads the layout (sizes), which is still clean; the controls then write the DOM
        if (canvas) this.render();
        if (controls) this.syncControls();
    }

    destroy() {
        this.destroyed = true;
        if (this.raf) cancelAnimationFrame(this.raf);
        this.raf = 0;
        this.resize.disconnect();
    }

    // -- controls --------------------------------------------------------------------------------------
    /** Bring the controls up to date, writing only what changed (each write makes the page lay out again). */
    syncControls() {
        const m = this.model, objs = m.objects;
        const set = (e, prop, v) => { if (e[prop] !== v) e[prop] = v; };
        const key = m.listKey();
        if (key !== this.listKey) { // objects added, removed or renamed: rebuild the list
            this.listKey = key;
            this.objSelect.replaceChildren(...objs.map((o, i) => el("option", { value: String(i) }, `${i + 1}: ${o.phrase || "(no phrase)"}`)));
            if (!objs.length) this.objSelect.append(el("option", { value: "-1" }, "no objects"));
        }
        set(this.objSelect, "value", String(objs.length ? m.sel : -1));
        const o = m.selected;
        const focused = document.activeElement;
        if (focused !== this.phrase) set(this.phrase, "value", o?.phrase ?? "");
        set(this.color, "value", o?.color ?? "#888888");
        set(this.interp, "value", o?.interpolation ?? "");
        const T = m.frames, f = m.clampFrame();
        set(this.slider, "max", String(T - 1));
        set(this.slider, "value", String(f));
        set(this.frameLabel, "textContent", `frame ${f} / ${T - 1}${o && m.keyAt(o, f) >= 0 ? " ◆" : ""}`);
        const cur = o ? m.boxAt(o, f) : null;
        this.nums.forEach((n, i) => {
            set(n, "disabled", !o);
            if (focused !== n) set(n, "value", cur ? String(round4(cur[i])) : "");
        });
        const late = m.lateKeys();
        const warn = late.length ? `beyond ${T} frames (raise frames or delete): ${late.join(", ")}` : "";
        const start = this.startState === "changed"
            ? "a new start layout is connected: ⤓ start replaces the drawing with it (⟲ undoes)" : "";
        set(this.status, "textContent", [warn, this.message, start].filter(Boolean).join(" · "));
        if (this.status.classList.contains("i2v-le-warn") !== late.length > 0) this.status.classList.toggle("i2v-le-warn");
        set(this.startBtn.style, "display", this.startState ? "" : "none");
        if (this.startBtn.classList.contains("i2v-le-attn") !== (this.startState === "changed")) {
            this.startBtn.classList.toggle("i2v-le-attn");
        }
    }

    // -- geometry --------------------------------------------------------------------------------------
    /** Where the image lies on the canvas (CSS pixels): {x, y, w, h}. */
    view() {
        const W = this.canvas.clientWidth, H = this.canvas.clientHeight;
        const [iw, ih] = this.img ? [this.img.naturalWidth, this.img.naturalHeight] : PLACEHOLDER;
        const s = Math.min(W / (iw * (1 + 2 * MARGIN)), H / (ih * (1 + 2 * MARGIN)));
        const w = iw * s, h = ih * s;
        return { x: (W - w) / 2, y: (H - h) / 2, w, h };
    }

    /** A pointer event's position as a fraction of the image. */
    toNorm(e) {
        const r = this.canvas.getBoundingClientRect();
        const v = this.view();
        // the DOM widget may be scaled with the canvas zoom: map client pixels to CSS pixels of the canvas
        const sx = this.canvas.clientWidth / (r.width || 1), sy = this.canvas.clientHeight / (r.height || 1);
        return [((e.clientX - r.left) * sx - v.x) / v.w, ((e.clientY - r.top) * sy - v.y) / v.h];
    }

    // -- drawing ---------------------------------------------------------------------------------------
    render() {
        const c = this.canvas, m = this.model;
        const dpr = window.devicePixelRatio || 1;
        const W = this.stage.clientWidth, H = this.stage.clientHeight;
        if (!W || !H) return;
        if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
            c.width = Math.round(W * dpr);
            c.height = Math.round(H * dpr);
            c.style.width = `${W}px`;
            c.style.height = `${H}px`;
        }
        const g = this.ctx;
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
        const rect = (b) => g.strokeRect(X(b[0]), Y(b[1]), X(b[2]) - X(b[0]), Y(b[3]) - Y(b[1]));
        const f = m.clampFrame();
        g.font = "12px sans-serif";
        m.objects.forEach((o, i) => {
            if (!o.boxes.length) return;
            const bs = m.boxesOf(o);
            const sel = i === m.sel;
            g.strokeStyle = o.color;
            g.fillStyle = o.color;
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
                g.beginPath();
                g.arc(X((b[0] + b[2]) / 2), Y((b[1] + b[3]) / 2), sel ? 4 : 3, 0, 2 * Math.PI);
                g.fill();
                if (sel && k[0] !== f) {
                    g.globalAlpha = 0.3;
                    g.setLineDash([2, 3]);
                    rect(b);
                    g.setLineDash([]);
                    g.globalAlpha = 0.9;
                }
            }
            const b = bs[f];
            g.globalAlpha = 1;
            g.lineWidth = sel ? 3 : 2;
            g.setLineDash(m.keyAt(o, f) >= 0 ? [] : [6, 4]);
            rect(b);
            g.setLineDash([]);
            const label = `${o.phrase || i + 1}`;
            const tw = g.measureText(label).width;
            g.fillRect(X(b[0]), Y(b[1]) - 16, tw + 8, 16);
            g.fillStyle = "#fff";
            g.fillText(label, X(b[0]) + 4, Y(b[1]) - 4);
            if (sel) {
                for (const [x, y] of [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]]) {
                    g.fillRect(X(x) - HANDLE / 2, Y(y) - HANDLE / 2, HANDLE, HANDLE);
                }
            }
        });
        g.globalAlpha = 1;
        g.fillStyle = "#fff";
        g.fillText(`frame ${f}`, 6, 14);
        if (!m.drawn) g.fillText("drag on the image to draw a box; shift+drag adds another object", 6, H - 8);
    }
}
