// Box interpolation for the editor's display, the same maths as layout/boxes.py interpolate_keys:
// centres linear / ease_in_out (smoothstep per segment) / time-parametrised Catmull-Rom (Hermite with
// finite-difference tangents), sizes linear in log space (or linear), held before the first and after the
// last key, key boxes exact. The node's output is always computed in Python; this only draws it.

export const INTERPOLATIONS = ["linear", "ease_in_out", "catmull_rom"];

const ease = (u) => u * u * (3 - 2 * u);

/** Boxes [x0, y0, x1, y1] for frames 0..frames-1 from keys [[frame, x0, y0, x1, y1], ...] (any order). */
export function interpolateBoxes(keys, frames, interpolation = "linear", sizeSpace = "log") {
    const byFrame = new Map();
    for (const k of keys) byFrame.set(k[0], k); // the last box of a frame wins, as in Python
    const ks = [...byFrame.values()].sort((a, b) => a[0] - b[0]);
    if (!ks.length || frames < 1) return [];
    const logSize = sizeSpace === "log";
    const kf = ks.map((k) => k[0]);
    const cen = ks.map((k) => [(k[1] + k[3]) / 2, (k[2] + k[4]) / 2]);
    const siz = ks.map((k) => {
        const w = k[3] - k[1], h = k[4] - k[2];
        return logSize ? [Math.log(w), Math.log(h)] : [w, h];
    });
    const K = ks.length;
    let m = null;
    if (interpolation === "catmull_rom" && K > 1) {
        m = cen.map((_, i) => {
            const a = i === 0 ? 0 : i === K - 1 ? K - 2 : i - 1;
            const b = i === 0 ? 1 : i === K - 1 ? K - 1 : i + 1;
            const dt = kf[b] - kf[a];
            return [(cen[b][0] - cen[a][0]) / dt, (cen[b][1] - cen[a][1]) / dt];
        });
    }
    const out = [];
    for (let t = 0; t < frames; t++) {
        let c, s;
        if (K === 1) {
            c = cen[0];
            s = siz[0];
        } else {
            const tc = Math.min(Math.max(t, kf[0]), kf[K - 1]);
            let i = 0;
            while (i < K - 2 && kf[i + 1] <= tc) i++;
            const f0 = kf[i], f1 = kf[i + 1], dt = f1 - f0;
            const u = (tc - f0) / dt;
            const p0 = cen[i], p1 = cen[i + 1];
            let us = u;
            if (interpolation === "catmull_rom") {
                const u2 = u * u, u3 = u2 * u;
                const h00 = 2 * u3 - 3 * u2 + 1, h10 = u3 - 2 * u2 + u, h01 = -2 * u3 + 3 * u2, h11 = u3 - u2;
                c = [0, 1].map((d) => h00 * p0[d] + h10 * dt * m[i][d] + h01 * p1[d] + h11 * dt * m[i + 1][d]);
            } else {
                if (interpolation === "ease_in_out") us = ease(u);
                c = [0, 1].map((d) => p0[d] + (p1[d] - p0[d]) * us);
            }
            s = [0, 1].map((d) => siz[i][d] + (siz[i + 1][d] - siz[i][d]) * us);
        }
        const sw = logSize ? Math.exp(s[0]) : s[0], sh = logSize ? Math.exp(s[1]) : s[1];
        out.push([c[0] - sw / 2, c[1] - sh / 2, c[0] + sw / 2, c[1] + sh / 2]);
    }
    for (const k of ks) if (k[0] < frames) out[k[0]] = k.slice(1);
    return out;
}

/** A box normalised so that x0 < x1 and y0 < y1, clamped to the layout's coordinate range. */
export function normBox(b, lo = -1, hi = 2) {
    const cl = (v) => Math.min(hi, Math.max(lo, v));
    const x0 = cl(Math.min(b[0], b[2])), x1 = cl(Math.max(b[0], b[2]));
    const y0 = cl(Math.min(b[1], b[3])), y1 = cl(Math.max(b[1], b[3]));
    return [x0, y0, x1, y1];
}

export const round4 = (v) => Math.round(v * 10000) / 10000;
