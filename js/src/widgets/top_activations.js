// TopActivations view: per channel the k dataset patches that excite it most (cropped to the receptive
// field, padding checkered), the channel's activation as a heatmap over each, and its filter beside them.
// Every channel's patches are in the browser: the channel slider and the sort order need no kernel.

import { decode } from "../codec.js";
import { colorRange, isDiverging, lut } from "../colormap.js";
import { Scope, bindControl, fmt, h, labelledSelect, markPainted, mountRoot, onCommit, setOptions } from "../dom.js";
import { DATASET_CSS, busyRow, channelOrder, patchPixels } from "../dataset_views.js";
import { filterTiles } from "../filters.js";
import { colorizeRgb, colorizeScalar, packLut } from "../grid.js";
import { bindScale } from "../scale.js";

const PATCH_CSS = 96;
const FILTER_CSS = 96;
const HEAT_MAP = "inferno";
const FILTER_MAP = "RdBu_r";
/** @type {Array<[string, string]>} */
const SORTS = [["channel", "channel index"], ["mean", "mean activation ↓"], ["importance", "importance ↓"]];

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderTopActivations(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-top-activations");
  root.prepend(h("style", { text: DATASET_CSS }));
  bindScale(model, root, scope);

  const layerSel = labelledSelect("layer", "cnnw-layer-select", []);
  const sortSel = labelledSelect("sort", "cnnw-sort", SORTS);
  const slider = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-channel-slider",
    attrs: { type: "range", min: "0", step: "1", value: "0", "aria-label": "channel, in sort order" },
  }));
  const number = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-channel-input",
    attrs: { type: "number", min: "-1", step: "1", "aria-label": "channel index" },
  }));
  const opacity = /** @type {HTMLInputElement} */ (h("input", {
    className: "cnnw-opacity",
    attrs: { type: "range", min: "0", max: "1", step: "0.05", value: "0.5", "aria-label": "heatmap opacity" },
  }));
  const caption = h("div", { className: "cnnw-caption cnnw-channel-caption" });
  const fieldCaption = h("div", { className: "cnnw-caption cnnw-field-caption" });
  const patches = h("div", { className: "cnnw-patches", attrs: { role: "list", "aria-label": "top patches" } });
  const filterCanvas = /** @type {HTMLCanvasElement} */ (h("canvas", { className: "cnnw-filter-tile", attrs: { "aria-label": "the channel's filter" } }));
  const filterCaption = h("div", { className: "cnnw-caption cnnw-filter-caption" });
  const busy = busyRow(model, scope);

  root.append(
    h("div", { className: "cnnw-toolbar" }, [
      layerSel.wrap,
      sortSel.wrap,
      h("label", { className: "cnnw-control" }, [h("span", { text: "channel" }), slider]),
      h("label", { className: "cnnw-control" }, [h("span", { text: "index" }), number]),
      h("label", { className: "cnnw-control" }, [h("span", { text: "heat" }), opacity]),
    ]),
    busy.row,
    busy.error,
    caption,
    h("div", { className: "cnnw-main" }, [
      patches,
      h("div", { className: "cnnw-side" }, [filterCanvas, filterCaption]),
    ]),
    fieldCaption,
  );

  /** Decoded patches of the layer on screen. */
  /** @type {{source: any, layer: string, channels: number, k: number, side: number, rgb: Uint8Array,
   *   heat: Float32Array, min: number[], max: number[], p: any} | null} */
  let loaded = null;
  /** @type {{source: any, values: Float32Array, shape: number[], groups: number} | null} */
  let filters = null;
  let order = new Int32Array(0);

  function load() {
    const p = model.get("_patches");
    if (!p?.images) return null;
    if (loaded?.source !== p) {
      const images = decode(p.images);
      const heat = decode(p.heat);
      loaded = {
        source: p, layer: p.layer, channels: p.channels, k: p.k, side: p.side,
        rgb: /** @type {Uint8Array} */ (images.data), heat: /** @type {Float32Array} */ (heat.data),
        min: heat.min, max: heat.max, p,
      };
    }
    const f = model.get("_filters");
    if (f?.tensor && filters?.source !== f) {
      const t = decode(f.tensor);
      filters = { source: f, values: /** @type {Float32Array} */ (t.data), shape: t.shape, groups: f.groups };
    } else if (!f?.tensor) {
      filters = null;
    }
    return loaded;
  }

  function syncControls() {
    const layers = model.get("layers") ?? [];
    if (layerSel.select.options.length !== layers.length) setOptions(layerSel.select, layers.map((/** @type {string} */ n) => [n, n]));
    layerSel.select.value = model.get("layer");
    sortSel.select.value = model.get("sort");
  }

  function paint() {
    syncControls();
    const s = load();
    if (!s || s.layer !== model.get("layer")) {
      caption.textContent = model.get("busy") ? "" : `loading ${model.get("layer")}…`;
      return;
    }
    const imp = model.get("_importance");
    order = channelOrder(model.get("sort"), s.p.means, imp, s.channels);
    const channel = Number(model.get("channel"));
    slider.max = String(Math.max(s.channels - 1, 0));
    number.max = String(s.channels - 1);
    const rank = order.indexOf(channel);
    if (rank >= 0) slider.value = String(rank);
    if (document.activeElement !== number) number.value = String(channel);
    const field = s.p.field;
    fieldCaption.textContent = `receptive field ${field.size.join("×")} px, stride ${field.stride.join("×")}`
      + (field.exact ? "" : ` (approximate: ${field.notes.join("; ")})`) + " · checkered: outside the image (padding)";
    if (channel < 0 || channel >= s.channels) {
      caption.textContent = `${s.channels} channels · pick one with the slider`;
      patches.replaceChildren();
      filterCanvas.hidden = true;
      filterCaption.textContent = "";
      return;
    }
    const mean = s.p.means[channel];
    const impText = Array.isArray(imp) ? ` · importance ${fmt(imp[channel])}` : "";
    caption.textContent = `channel ${channel} (${rank + 1} of ${s.channels} by ${model.get("sort")}) · mean ${mean === null ? "–" : fmt(mean)}${impText}`;
    const table = lut(HEAT_MAP);
    const size = s.side * s.side;
    const lo = 0; // the positive part: how strongly the channel fires where
    const hi = s.max[channel];
    const alpha = Number(opacity.value);
    const figures = [];
    for (let j = 0; j < s.k; j++) {
      const slot = channel * s.k + j;
      const rgb = s.rgb.subarray(3 * slot * size, 3 * (slot + 1) * size);
      const heat = s.heat.subarray(slot * size, (slot + 1) * size);
      const rgba = patchPixels(rgb, heat, s.p.boxes[channel][j], s.side, { lo, hi, table, opacity: alpha });
      const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", { attrs: { "aria-label": `image ${s.p.indices[channel][j]}` } }));
      canvas.width = s.side;
      canvas.height = s.side;
      canvas.style.width = `${PATCH_CSS}px`;
      canvas.style.height = `${PATCH_CSS}px`;
      /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d")).putImageData(new ImageData(rgba, s.side, s.side), 0, 0);
      const v = s.p.values[channel][j];
      figures.push(h("figure", { className: "cnnw-patch", attrs: { role: "listitem" } }, [
        canvas,
        h("figcaption", { text: `#${s.p.indices[channel][j]} · ${v === null ? "–" : fmt(v)}` }),
      ]));
    }
    patches.replaceChildren(...figures);
    paintFilter(channel);
    markPainted(root, s.layer, performance.now());
    root.dataset.channel = String(channel);
  }

  /** The channel's filter (mean over input channels, or true colour on RGB input), when the layer is a conv. */
  function paintFilter(/** @type {number} */ channel) {
    if (!filters || channel >= filters.shape[0]) {
      filterCanvas.hidden = true;
      filterCaption.textContent = filters ? "" : "no filter: the layer is not a convolution";
      return;
    }
    const [, , kh, kw] = filters.shape;
    const tiles = filterTiles(filters.values, filters.shape, -1, filters.groups);
    const n = tiles.rgb ? 3 * kh * kw : kh * kw;
    const one = tiles.values.subarray(channel * n, (channel + 1) * n);
    const [lo, hi] = colorRange(tiles.min[channel], tiles.max[channel], !tiles.rgb && isDiverging(FILTER_MAP));
    const pixels = tiles.rgb ? colorizeRgb(one, 1, [lo], [hi]) : colorizeScalar(one, 1, [lo], [hi], packLut(lut(FILTER_MAP)));
    filterCanvas.width = kw;
    filterCanvas.height = kh;
    const scale = FILTER_CSS / Math.max(kh, kw);
    filterCanvas.style.width = `${Math.round(kw * scale)}px`;
    filterCanvas.style.height = `${Math.round(kh * scale)}px`;
    const ctx = /** @type {CanvasRenderingContext2D} */ (filterCanvas.getContext("2d"));
    const img = ctx.createImageData(kw, kh);
    new Uint32Array(img.data.buffer).set(pixels);
    ctx.putImageData(img, 0, 0);
    filterCanvas.hidden = false;
    filterCaption.textContent = `filter ${channel} · ${kh}×${kw}${tiles.rgb ? " · RGB" : " · mean over inputs"} · ${fmt(lo)}‥${fmt(hi)}`;
  }

  /** @param {number} channel */
  function setChannel(channel) {
    model.set("channel", channel);
    model.save_changes();
    paint();
  }

  scope.listen(slider, "input", () => {
    const c = order[Number(slider.value)];
    if (c !== undefined) setChannel(c);
  });
  /** Take the index typed in the box. */
  const commitNumber = () => {
    const c = Math.trunc(Number(number.value));
    const count = loaded?.channels ?? 0;
    if (Number.isFinite(c) && c >= -1 && c < count) {
      if (c !== Number(model.get("channel"))) setChannel(c);
    } else {
      number.value = String(model.get("channel"));
    }
  };
  onCommit(scope, number, commitNumber);
  scope.listen(opacity, "input", paint);
  bindControl(scope, model, layerSel.select, "layer");
  bindControl(scope, model, sortSel.select, "sort");
  for (const key of ["_patches", "_filters", "_importance", "channel", "layer", "sort", "layers"]) {
    scope.onModel(model, `change:${key}`, paint);
  }
  paint();
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderTopActivations(model, el);
  },
};
