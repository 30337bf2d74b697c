// Helpers shared by the pack's frontend modules (Layout Editor, Load Layout Case preview).
import { api } from "../../../scripts/api.js";

/** The pack's folder name as ComfyUI serves it (/extensions/<pack>/, /api/workflow_templates/<pack>/). */
export const PACK = (new URL(import.meta.url).pathname.match(/\/extensions\/([^/]+)\//) || [])[1] || "comfyui-i2v-motion";

/** A DOM element: attributes, ``style`` (an object), ``on<event>`` listeners (removed when ``signal``, an
 * AbortSignal, aborts) and children. */
export const el = (tag, { signal, ...attrs } = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
        if (k === "style") Object.assign(e.style, v);
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v, signal ? { signal } : undefined);
        else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
};

export function viewUrl(name, type = "input") {
    const parts = String(name).replace(/\s*\[(input|output|temp)\]$/, "").split("/");
    const filename = parts.pop();
    const q = new URLSearchParams({ filename, type, subfolder: parts.join("/") });
    return api.apiURL(`/view?${q}`);
}

/** The /view URL of an image a node sent back after running ({filename, subfolder, type} in its ui output). */
export function outputImageUrl(im) {
    return viewUrl(im.subfolder ? `${im.subfolder}/${im.filename}` : im.filename, im.type || "temp");
}

/** Chain `fn` after the method `name` of `obj` (a node type's prototype or a widget's callback): the original
 * runs first and its result is returned; `fn` gets the same `this` and arguments. */
export function after(obj, name, fn) {
    const orig = obj[name];
    obj[name] = function (...args) {
        const r = orig?.apply(this ?? obj, args);
        fn.apply(this ?? obj, args);
        return r;
    };
}

export function widgetValue(node, name) {
    return node?.widgets?.find((w) => w.name === name)?.value;
}

/** Where the image of a Load Layout Case node comes from (the case JSON names it). */
export async function caseImageUrl(node) {
    const name = widgetValue(node, "name");
    if (!name || name === "(index)") return null;
    let jsonUrl, imageUrl;
    if (name.includes("/")) {
        jsonUrl = viewUrl(`${name}.json`);
        const sub = name.split("/").slice(0, -1).join("/");
        imageUrl = (img) => viewUrl(`${sub}/${img}`);
    } else if (!widgetValue(node, "folder")) {
        const base = api.apiURL(`/workflow_templates/${PACK}/layout_cases`);
        jsonUrl = `${base}/${encodeURIComponent(name)}.json`;
        imageUrl = (img) => `${base}/${encodeURIComponent(img)}`;
    } else return null;
    const r = await fetch(jsonUrl);
    if (!r.ok) return null;
    const data = await r.json();
    return typeof data.image === "string" ? imageUrl(data.image) : null;
}

