// Layout Editor model: the drawn objects and their key boxes, the current frame and selection, undo/redo, and the
// interpolated boxes (cached per object until its keys or the node's settings change). No DOM: the view draws it,
// the interaction module edits it. A plain module (imported by layout_editor.js; registers no extension).
import { interpolateBoxes, normBox, round4 } from "./layout_math.js";

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];
export const MIN_SIZE = 0.01; // smallest box side, fraction of the image
const UNDO_DEPTH = 200;

/** A short, stable signature of a text (FNV-1a, 32 bits): which start layout the drawing was imported from. */
export function signature(text) {
    let h = 0x811c9dc5;
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
    return (h >>> 0).toString(16).padStart(8, "0");
}

export class LayoutModel {
    /** @param settings () => ({frames, interpolation, sizeSpace}): the node's widgets, read when needed. */
    constructor(settings) {
        this.settings = settings;
        this.data = { objects: [] };
        this.frame = 0;
        this.sel = -1;
        this.undoStack = [];
        this.redoStack = [];
        this.cache = new WeakMap(); // object -> {key, boxes}
    }

    get value() {
        return JSON.stringify(this.data);
    }

    /** Load a saved value (JSON text or its parsed form); anything malformed gives an empty drawing. */
    load(v) {
        let d;
        try {
            d = typeof v === "string" ? JSON.parse(v || '{"objects": []}') : v;
        } catch {
            d = null;
        }
        this.data = d && typeof d === "object" && Array.isArray(d.objects) ? d : { objects: [] };
        this.data.objects = this.data.objects.filter((o) => o && typeof o === "object");
        this.data.objects.forEach((o, i) => {
            o.boxes = Array.isArray(o.boxes) ? o.boxes : [];
            o.color = o.color || COLORS[i % COLORS.length];
        });
        const n = this.data.objects.length;
        this.sel = n ? Math.min(Math.max(this.sel, 0), n - 1) : -1;
    }

    get objects() {
        return this.data.objects;
    }

    get selected() {
        return this.data.objects[this.sel];
    }

    get frames() {
        return Math.max(1, Number(this.settings().frames) || 16);
    }

    /** Whether anything is drawn (an object with a key box). */
    get drawn() {
        return this.data.objects.some((o) => o.boxes.length);
    }

    clampFrame() {
        this.frame = Math.min(Math.max(0, this.frame), this.frames - 1);
        return this.frame;
    }

    /** The object's box at every frame (cached until its key boxes or the settings change). */
    boxesOf(o) {
        const s = this.settings();
        const interp = o.interpolation || s.interpolation || "linear";
        const key = `${this.frames}|${interp}|${s.sizeSpace || "log"}|${o.boxes.join(";")}`;
        const hit = this.cache.get(o);
        if (hit && hit.key === key) return hit.boxes;
        const boxes = interpolateBoxes(o.boxes, this.frames, interp, s.sizeSpace || "log");
        this.cache.set(o, { key, boxes });
        return boxes;
    }

    boxAt(o, f = this.frame) {
        return o.boxes.length ? this.boxesOf(o)[f] : null;
    }

    keyAt(o, f = this.frame) {
        return o.boxes.findIndex((k) => k[0] === f);
    }

    setKey(o, f, box) {
        const b = normBox(box).map(round4);
        const i = this.keyAt(o, f);
        if (i >= 0) o.boxes[i] = [f, ...b];
        else {
            o.boxes.push([f, ...b]);
            o.boxes.sort((a, c) => a[0] - c[0]);
        }
    }

    deleteKey(o, f = this.frame) {
        const i = this.keyAt(o, f);
        if (i >= 0) o.boxes.splice(i, 1);
        return i >= 0;
    }

    addObject(box = null) {
        const n = this.data.objects.length;
        const o = { phrase: `object ${n + 1}`, color: COLORS[n % COLORS.length], boxes: [] };
        if (box) this.setKey(o, this.frame, box);
        this.data.objects.push(o);
        this.sel = n;
        return o;
    }

    removeObject(i) {
        this.data.objects.splice(i, 1);
        this.sel = Math.min(this.sel, this.data.objects.length - 1);
    }

    /** Key boxes at or beyond the timeline's end (the node would refuse them). */
    lateKeys() {
        const T = this.frames;
        return this.data.objects.flatMap((o) => o.boxes.filter((k) => k[0] >= T).map((k) => `${o.phrase}: key frame ${k[0]}`));
    }

    /** What the object list shows: changes only when objects are added, removed or renamed. */
    listKey() {
        return this.data.objects.map((o) => o.phrase).join("\u0000") + `\u0001${this.data.objects.length}`;
    }

    // -- undo ------------------------------------------------------------------------------------------
    snapshot() {
        this.undoStack.push(this.value);
        if (this.undoStack.length > UNDO_DEPTH) this.undoStack.shift();
        this.redoStack = [];
    }

    /** Forget the last snapshot (a gesture that changed nothing). */
    dropSnapshot() {
        this.undoStack.pop();
    }

    undo() {
        if (!this.undoStack.length) return false;
        this.redoStack.push(this.value);
        this.load(this.undoStack.pop());
        return true;
    }

    redo() {
        if (!this.redoStack.length) return false;
        this.undoStack.push(this.value);
        this.load(this.redoStack.pop());
        return true;
    }

    // -- start layout ------------------------------------------------------------------------------------
    /** Replace the objects with a start layout's ({objects: [{phrase, boxes, interpolation?}]}), undoably; ``sig``
     * records which one, so a changed start layout can be told apart from the one already imported. */
    importStart(start, sig) {
        this.snapshot();
        this.data.objects = (start.objects || []).map((o, i) => ({
            phrase: String(o.phrase ?? `object ${i + 1}`),
            color: COLORS[i % COLORS.length],
            boxes: (o.boxes || []).map((k) => k.slice(0, 5)),
            ...(o.interpolation ? { interpolation: o.interpolation } : {}),
        }));
        this.data.start = sig;
        this.sel = this.data.objects.length ? 0 : -1;
    }
}
