// The display controls of the heatmap views (AttributionView and compare): sign, colormap, opacity and
// clip percentile, kept in step with the model traits of those names; both sliders show their value as
// text beside them (read from across a room, not guessed from the knob). A change repaints in the browser
// at once; the kernel, which recomputes nothing for it, hears the new values once the user pauses.

import { COLORMAPS } from "./colormap.js";
import { bindControl, h, labelledSelect } from "./dom.js";
import { SIGNS } from "./constants_data.js";

const SAVE_DELAY_MS = 250;

/**
 * Build the controls. Whenever one of their traits changes (from a control or from the kernel) they
 * show the new value and `repaint` is called.
 * @param {any} model
 * @param {import("./dom.js").Scope} scope
 * @param {() => void} repaint
 * @returns {{controls: HTMLElement[], save: () => void}} the labelled controls in toolbar order, and
 *   their delayed save (for the view's own display controls)
 */
export function heatmapControls(model, scope, repaint) {
  const sign = labelledSelect("show", "cnnw-sign", SIGNS.map((s) => [s, s === "all" ? "all (signed)" : s]));
  const cmap = labelledSelect("colormap", "cnnw-colormap", COLORMAPS.map((n) => [n, n]));
  const opacity = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-opacity",
    attrs: { type: "range", min: "0", max: "1", step: "0.05", "aria-label": "heatmap opacity" },
  }));
  const clip = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-clip",
    attrs: { type: "range", min: "50", max: "100", step: "0.5", "aria-label": "clip at percentile" },
  }));
  const opacityValue = h("span", { className: "cnnw-value cnnw-opacity-value" });
  const clipValue = h("span", { className: "cnnw-value cnnw-clip-value" });

  let saveTimer = 0;
  /** Send local display changes to the kernel once the user pauses. */
  function save() {
    clearTimeout(saveTimer);
    saveTimer = window.setTimeout(() => {
      saveTimer = 0;
      model.save_changes();
    }, SAVE_DELAY_MS);
  }
  scope.add(() => {
    if (saveTimer) {
      clearTimeout(saveTimer);
      model.save_changes();
    }
  });

  /** Put the display traits into their controls. */
  function sync() {
    sign.select.value = model.get("sign");
    cmap.select.value = model.get("colormap");
    opacity.value = String(model.get("opacity"));
    opacityValue.textContent = Number(model.get("opacity")).toFixed(2);
    clip.value = String(model.get("clip_percentile"));
    clipValue.textContent = `${Number(model.get("clip_percentile"))}%`;
  }

  bindControl(scope, model, sign.select, "sign", { save });
  bindControl(scope, model, cmap.select, "colormap", { save });
  bindControl(scope, model, opacity, "opacity", { event: "input", parse: Number, save });
  bindControl(scope, model, clip, "clip_percentile", { event: "input", parse: Number, save });
  for (const key of ["sign", "colormap", "opacity", "clip_percentile"]) {
    scope.onModel(model, `change:${key}`, () => {
      sync();
      repaint();
    });
  }
  sync();
  return {
    controls: [
      sign.wrap,
      cmap.wrap,
      h("label", { className: "cnnw-control" }, [h("span", { text: "opacity" }), opacity, opacityValue]),
      h("label", { className: "cnnw-control" }, [h("span", { text: "clip at" }), clip, clipValue]),
    ],
    save,
  };
}
