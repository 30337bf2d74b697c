// Layout Editor (I2VMotion_LayoutEditor): draw box trajectories on the image, on the node itself.
// The widget's value is the layout JSON that Layout from JSON reads (plus the editor's "image", object "color" and
// the "start" layout it was imported from), so it is saved in the workflow and the Python node computes the layout.
// This entry module registers the extension; the editor is layout_model.js (data, undo), layout_view.js (DOM,
// drawing batched to animation frames) and layout_interaction.js (pointer, keys). Everything the editor adds to the
// page (listeners, its ResizeObserver, a pending frame, the play timer) goes when its node is removed.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { after, caseImageUrl, el, outputImageUrl, viewUrl, widgetValue } from "./common.js";
import { MIN_SIZE, LayoutModel, signature } from "./layout_model.js";
import { LayoutView, STYLE } from "./layout_view.js";
import { LayoutInteraction } from "./layout_interaction.js";

const NODE = "I2VMotion_LayoutEditor";
const CASE_NODE = "I2VMotion_LayoutCaseLoader";
const WIDGET = "I2V_LAYOUT_EDITOR";
const EMPTY = '{"objects": []}';
const PLAY_MS = 125;

class LayoutEditor {
    constructor(node) {
        this.node = node;
        this.teardown = new AbortController();
        const signal = this.teardown.signal;
        this.model = new LayoutModel(() => ({ frames: widgetValue(node, "frames"),
            interpolation: widgetValue(node, "interpolation"), sizeSpace: widgetValue(node, "size_space") }));
        this.display = new LayoutView(this.model, this, signal);
        this.interaction = new LayoutInteraction(this, signal);
        this.imgKey = null;
        this.execImage = null;
        this.playTimer = null;
        this.start = null; // the connected start layout of the last run: {parsed, sig}
    }

    get root() {
        return this.display.root;
    }

    /** Where the image lies on the canvas (CSS pixels): what the browser test aims its drags with. */
    view() {
        return this.display.view();
    }

    get value() {
        return this.model.value;
    }

    set value(v) {
        this.model.load(v);
        this.refresh();
    }

    /** Bring the controls and the canvas up to date on the next animation frame. */
    refresh() {
        const s = this.start;
        this.display.startState = s ? (this.model.data.start === s.sig ? "same" : "changed") : null;
        this.display.invalidate({ controls: true, canvas: true });
    }

    /** An edit is done: the workflow is modified. */
    changed() {
        this.display.message = "";
        this.node.setDirtyCanvas?.(true, true);
        this.node.graph?.change?.();
        this.refresh();
    }

    // -- actions (tool bars, keys) ---------------------------------------------------------------------
    select(i) {
        this.model.sel = i;
        this.refresh();
    }

    editSelected(fn) {
        const o = this.model.selected;
        if (!o) return;
        this.model.snapshot();
        fn(o);
        this.changed();
    }

    addObject() {
        this.model.snapshot();
        this.model.addObject();
        this.changed();
    }

    deleteObject() {
        this.editSelected(() => this.model.removeObject(this.model.sel));
    }

    deleteKey() {
        const o = this.model.selected;
        if (!o || this.model.keyAt(o) < 0) return;
        this.editSelected((ob) => this.model.deleteKey(ob));
    }

    setFrame(f) {
        this.model.frame = Math.min(Math.max(0, f), this.model.frames - 1);
        this.refresh();
    }

    numericEdit(values) {
        const m = this.model, o = m.selected;
        if (!o) return;
        const cur = m.boxAt(o);
        const b = values.map((v, i) => (v === "" || isNaN(Number(v)) ? cur?.[i] : Number(v)));
        if (b.some((v) => v === undefined)) return this.say("give all four coordinates for the object's first box");
        if (b[2] - b[0] < MIN_SIZE || b[3] - b[1] < MIN_SIZE) return this.say("x1 must be greater than x0 and y1 greater than y0");
        m.snapshot();
        m.setKey(o, m.frame, b);
        this.changed();
    }

    undo() {
        if (this.model.undo()) this.changed();
    }

    redo() {
        if (this.model.redo()) this.changed();
    }

    say(message) {
        this.display.message = message;
        this.refresh();
    }

    togglePlay() {
        const btn = this.display.playBtn;
        if (this.playTimer) {
            clearInterval(this.playTimer);
            this.playTimer = null;
            btn.textContent = "▶";
            return;
        }
        btn.textContent = "❚❚";
        this.playTimer = setInterval(() => this.setFrame((this.model.frame + 1) % this.model.frames), PLAY_MS);
    }

    async upload(file) {
        const body = new FormData();
        body.append("image", file);
        body.append("type", "input");
        const r = await api.fetchApi("/upload/image", { method: "POST", body });
        if (this.destroyed) return;
        if (r.status !== 200) return this.say(`upload failed: ${r.status} ${r.statusText}`);
        const res = await r.json();
        this.model.snapshot();
        this.model.data.image = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
        this.changed();
    }

    // -- start layout ----------------------------------------------------------------------------------
    /** After a run: the start layout the node was given (its ``i2v_start`` output; none when not connected). An
     * editor with nothing drawn starts from it; a drawing is never replaced but by ⤓ start (undoable). */
    onStart(text) {
        let parsed = null;
        try {
            parsed = typeof text === "string" ? JSON.parse(text) : null;
        } catch { /* not sent by this pack's node: ignored */ }
        this.start = parsed && Array.isArray(parsed.objects) ? { parsed, sig: signature(text) } : null;
        if (this.start && !this.model.drawn) {
            this.importStart();
            this.display.message = `started from the start layout (${this.model.objects.length} objects)`;
        }
        this.refresh();
    }

    importStart() {
        if (!this.start) return;
        this.model.importStart(this.start.parsed, this.start.sig);
        this.changed();
    }

    // -- image -----------------------------------------------------------------------------------------
    upstream() {
        const link = this.node.inputs?.find((i) => i.name === "image")?.link;
        const info = link != null ? this.node.graph?.links?.[link] ?? this.node.graph?.links?.get?.(link) : null;
        return info ? this.node.graph.getNodeById(info.origin_id) : null;
    }

    /** The connected node's image (Load Image, Load Layout Case), else the last run's, else the upload. */
    sourceKey() {
        const up = this.upstream();
        if (up) {
            const cls = up.comfyClass || up.type;
            if (cls === CASE_NODE) return `case|${widgetValue(up, "folder")}|${widgetValue(up, "name")}|${up.id}`;
            const name = widgetValue(up, "image");
            if (typeof name === "string" && name && /LoadImage/.test(cls)) return `view|${name}`;
            return this.execImage ? `exec|${this.execImage}` : "none";
        }
        if (this.model.data.image) return `view|${this.model.data.image}`;
        return this.execImage ? `exec|${this.execImage}` : "none";
    }

    /** Load the image when its source changed (called on every draw of the node: cheap otherwise). */
    async updateImage() {
        if (this.destroyed) return;
        const key = this.sourceKey();
        if (key === this.imgKey) return;
        this.imgKey = key;
        let url = null;
        if (key.startsWith("view|")) url = viewUrl(key.slice(5));
        else if (key.startsWith("exec|")) url = key.slice(5);
        else if (key.startsWith("case|")) url = await caseImageUrl(this.upstream()).catch(() => null);
        const show = (img, message = "") => {
            if (this.imgKey !== key || this.destroyed) return;
            this.display.img = img;
            if (message) this.display.message = message;
            this.display.invalidate({ controls: !!message, canvas: true });
        };
        if (!url) return show(null);
        const img = new Image();
        img.onload = () => show(img);
        img.onerror = () => show(null, "the image could not be loaded (run the graph once to show a connected image)");
        img.src = url;
    }

    /** Remove everything the editor added to the page: listeners, the ResizeObserver, a pending frame, the timer. */
    destroy() {
        if (this.destroyed) return;
        this.destroyed = true;
        if (this.playTimer) this.togglePlay();
        this.teardown.abort();
        this.display.destroy();
    }
}

app.registerExtension({
    name: "i2v_motion.LayoutEditor",
    init() {
        document.head.append(el("style", {}, STYLE));
    },
    getCustomWidgets() {
        return {
            [WIDGET](node, inputName, inputData) {
                const spec = Array.isArray(inputData) ? inputData[1] : inputData;
                const editor = new LayoutEditor(node);
                const widget = node.addDOMWidget(inputName, WIDGET, editor.root, {
                    getValue: () => editor.value,
                    setValue: (v) => editor.value = v,
                    getMinHeight: () => 380,
                    hideOnZoom: false,
                });
                after(widget, "onRemove", () => editor.destroy()); // the frontend calls it when the node goes
                node.i2vEditor = editor;
                editor.value = spec?.default ?? EMPTY;
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
            const ed = this.i2vEditor;
            if (!ed) return;
            const img = message?.i2v_editor_image?.[0];
            if (img) {
                ed.execImage = outputImageUrl(img);
                ed.imgKey = null;
                ed.updateImage();
            }
            ed.onStart(message?.i2v_start?.[0]);
        });
        after(nodeType.prototype, "onDrawForeground", function () {
            this.i2vEditor?.updateImage();
        });
        after(nodeType.prototype, "onConfigure", function () {
            this.i2vEditor?.refresh();
        });
        after(nodeType.prototype, "onRemoved", function () {
            this.i2vEditor?.destroy(); // as well as the widget's onRemove, should a frontend not chain it
        });
    },
});
