// Layout Editor interaction: pointer gestures on the canvas (draw a box, move it, resize it by a corner; hover shows
// what a press would do) and keys while the canvas has focus (undo/redo, delete the key box, step frames). Edits the
// model; repaints are only requested (the view batches them to animation frames). A plain module.
import { MIN_SIZE } from "./layout_model.js";
import { HANDLE } from "./layout_view.js";

const CURSORS = { resize: "nwse-resize", move: "move", draw: "crosshair" };

export class LayoutInteraction {
    /**
     * @param editor the LayoutEditor (model, view, changed(), refresh(), undo(), redo(), deleteKey(), setFrame())
     * @param signal aborts every listener added here (the editor's teardown)
     */
    constructor(editor, signal) {
        this.editor = editor;
        this.model = editor.model;
        this.display = editor.display;
        this.drag = null;
        this.cursor = "";
        const c = this.display.canvas, opts = { signal };
        // the node's canvas must not also see pointer and key events meant for the editor (pan, shortcuts)
        for (const t of ["pointerdown", "pointermove", "pointerup", "wheel", "keydown", "contextmenu"]) {
            this.display.root.addEventListener(t, (e) => e.stopPropagation(), opts);
        }
        c.addEventListener("pointerdown", (e) => this.onDown(e), opts);
        c.addEventListener("pointermove", (e) => this.onMove(e), opts);
        c.addEventListener("pointerup", (e) => this.onUp(e), opts);
        c.addEventListener("pointercancel", (e) => this.onUp(e), opts);
        c.addEventListener("keydown", (e) => this.onKey(e), opts);
        this.display.stage.addEventListener("dragover", (e) => e.preventDefault(), opts);
        this.display.stage.addEventListener("drop", (e) => {
            e.preventDefault();
            const f = e.dataTransfer?.files?.[0];
            if (f && f.type.startsWith("image/")) editor.upload(f);
        }, opts);
    }

    /** What a press at image point p would do: resize the selected box by a corner, move a box, or draw. */
    hit(p) {
        const m = this.model, v = this.display.view();
        const tol = [HANDLE / v.w, HANDLE / v.h];
        const sel = m.selected;
        const b = sel ? m.boxAt(sel) : null;
        if (b) {
            const corners = [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]];
            const c = corners.findIndex(([x, y]) => Math.abs(p[0] - x) <= tol[0] && Math.abs(p[1] - y) <= tol[1]);
            if (c >= 0) return { kind: "resize", obj: m.sel, corner: c };
        }
        const order = [m.sel, ...m.objects.map((_, i) => i).filter((i) => i !== m.sel).reverse()];
        for (const i of order) {
            const o = m.objects[i];
            const ob = o ? m.boxAt(o) : null;
            if (ob && p[0] >= ob[0] && p[0] <= ob[2] && p[1] >= ob[1] && p[1] <= ob[3]) return { kind: "move", obj: i };
        }
        return { kind: "draw" };
    }

    onDown(e) {
        if (e.button !== 0) return;
        e.preventDefault();
        const m = this.model, c = this.display.canvas;
        c.focus();
        try {
            c.setPointerCapture(e.pointerId);
        } catch { /* a pointer that is not active (synthetic events): moves still reach the canvas */ }
        const p = this.display.toNorm(e);
        const h = this.hit(p);
        m.snapshot();
        h.start = p;
        if (h.kind === "draw") {
            if (!m.selected || e.shiftKey) {
                m.addObject();
                h.created = true;
            }
            h.obj = m.sel;
        } else {
            m.sel = h.obj;
            h.box = m.boxAt(m.objects[h.obj]).slice();
        }
        this.drag = h;
        this.editor.refresh();
    }

    onMove(e) {
        const d = this.drag;
        if (!d) { // hover: only the cursor changes
            const cur = CURSORS[this.hit(this.display.toNorm(e)).kind];
            if (cur !== this.cursor) this.display.canvas.style.cursor = this.cursor = cur;
            return;
        }
        const p = this.display.toNorm(e);
        let b;
        if (d.kind === "draw") b = [d.start[0], d.start[1], p[0], p[1]];
        else if (d.kind === "move") {
            const dx = p[0] - d.start[0], dy = p[1] - d.start[1];
            b = [d.box[0] + dx, d.box[1] + dy, d.box[2] + dx, d.box[3] + dy];
        } else {
            b = d.box.slice();
            b[d.corner === 0 || d.corner === 3 ? 0 : 2] = p[0];
            b[d.corner < 2 ? 1 : 3] = p[1];
        }
        d.moved = true;
        if (d.kind !== "draw" || (Math.abs(b[2] - b[0]) >= MIN_SIZE && Math.abs(b[3] - b[1]) >= MIN_SIZE)) {
            this.model.setKey(this.model.objects[d.obj], this.model.frame, b);
            this.display.invalidate({ controls: true, canvas: true });
        }
    }

    onUp(e) {
        const d = this.drag, m = this.model;
        this.drag = null;
        try {
            this.display.canvas.releasePointerCapture(e.pointerId);
        } catch { /* not captured */ }
        if (!d) return;
        if (!d.moved) {
            m.dropSnapshot(); // a click selects; nothing changed
            const o = m.objects[d.obj];
            if (d.created && o && !o.boxes.length) m.removeObject(d.obj); // a click made no box: drop its object
            this.editor.refresh();
            return;
        }
        this.editor.changed();
    }

    /** Keys while the canvas has focus: Ctrl/Cmd+Z undo, Ctrl/Cmd+Shift+Z or Ctrl+Y redo, Delete/Backspace the
     * selected object's key box at this frame, ←/→ the previous/next frame. */
    onKey(e) {
        const ed = this.editor, mod = e.ctrlKey || e.metaKey, k = e.key.toLowerCase();
        if (mod && k === "z") e.shiftKey ? ed.redo() : ed.undo();
        else if (mod && k === "y") ed.redo();
        else if (!mod && (e.key === "Delete" || e.key === "Backspace")) ed.deleteKey();
        else if (!mod && e.key === "ArrowLeft") ed.setFrame(this.model.frame - 1);
        else if (!mod && e.key === "ArrowRight") ed.setFrame(this.model.frame + 1);
        else return;
        e.preventDefault();
    }
}
