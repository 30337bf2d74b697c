// Load Layout Case (I2VMotion_LayoutCaseLoader): shows the chosen case's image on the node as soon as a case is
// picked (shipped cases and sub/folder/case names of the input folder), and after a run the image it loaded.
import { app } from "../../../scripts/app.js";
import { after, caseImageUrl, el, outputImageUrl } from "./common.js";

const NODE = "I2VMotion_LayoutCaseLoader";

app.registerExtension({
    name: "i2v_motion.LayoutCasePreview",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (nodeData?.name !== NODE) return;
        after(nodeType.prototype, "onNodeCreated", function () {
            const img = el("img", { class: "i2v-case-preview", alt: "",
                style: { width: "100%", height: "100%", objectFit: "contain", display: "none" } });
            img.addEventListener("load", () => { img.style.display = ""; });
            img.addEventListener("error", () => { img.style.display = "none"; });
            const widget = this.addDOMWidget("case_preview", "i2v_case_preview", img,
                { serialize: false, getMinHeight: () => 120, hideOnZoom: false });
            widget.serialize = false;
            this.i2vCasePreview = img;
            const update = async () => {
                const url = await caseImageUrl(this).catch(() => null);
                if (url) img.src = url;
            };
            for (const name of ["name", "folder"]) {
                const w = this.widgets?.find((x) => x.name === name);
                if (w) after(w, "callback", update);
            }
            this.i2vCaseUpdate = update;
            const [w, h] = this.size;
            this.setSize([Math.max(w, 320), Math.max(h, 300)]);
            setTimeout(update, 0);
        });
        after(nodeType.prototype, "onConfigure", function () {
            setTimeout(() => this.i2vCaseUpdate?.(), 0);
        });
        after(nodeType.prototype, "onExecuted", function (message) {
            const im = message?.i2v_case_image?.[0];
            if (im && this.i2vCasePreview) {
                this.i2vCasePreview.src = outputImageUrl(im);
            }
        });
    },
});
