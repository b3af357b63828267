// ClassHeatmaps view: a grid of mean attribution maps, one row per class, columns correct / incorrect, each
// cell a button (so Tab and Enter reach it) showing its map on one colour range shared by all cells and its
// image count; the selected cell's images below as thumbnails with their own maps.

import { decode } from "../codec.js";
import { lut } from "../colormap.js";
import { Scope, colorLegend, fmt, h, labelledSelect, markPainted, mountRoot, setOptions } from "../dom.js";
import { DATASET_CSS, busyRow } from "../dataset_views.js";
import { colorizeScalar, packLut } from "../grid.js";
import { blendOverlay, overlayRange, paintColorbar, sortedMagnitudes } from "../overlay.js";
import { bindScale } from "../scale.js";

const CELL_CSS = 72;
const THUMB_CSS = 88;
const COLORMAP = "inferno";
const COLUMNS = ["correct", "incorrect"];

/**
 * A canvas of w×h RGBA pixels shown at `css` px on its longer side, in row `row` of a PNG export.
 * @param {Uint8ClampedArray} rgba
 * @param {number} w
 * @param {number} h
 * @param {number} css
 * @param {string} label
 * @param {string} row
 */
function pictureCanvas(rgba, w, h, css, label, row) {
  const canvas = /** @type {HTMLCanvasElement} */ (document.createElement("canvas"));
  canvas.dataset.row = row;
  canvas.width = w;
  canvas.height = h;
  const s = css / Math.max(w, h);
  canvas.style.width = `${Math.round(w * s)}px`;
  canvas.style.height = `${Math.round(h * s)}px`;
  canvas.setAttribute("aria-label", label);
  /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d")).putImageData(new ImageData(rgba, w, h), 0, 0);
  return canvas;
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderClassHeatmaps(model, el) {
  const scope = new Scope();
  const root = mountRoot(el, "cnnw-class-heatmaps");
  root.prepend(h("style", { text: DATASET_CSS }));
  bindScale(model, root, scope);

  const methodSel = labelledSelect("method", "cnnw-method", []);
  const caption = h("div", { className: "cnnw-caption cnnw-grid-caption" });
  const cells = h("div", { className: "cnnw-cells", attrs: { role: "grid", "aria-label": "mean maps per class" } });
  const { legend, bar, lo: barLo, hi: barHi } = colorLegend();
  const listCaption = h("div", { className: "cnnw-caption cnnw-list-caption" });
  const thumbs = h("div", { className: "cnnw-patches cnnw-thumbs", attrs: { role: "list", "aria-label": "images of the cell" } });
  const busy = busyRow(model, scope);
  root.append(h("div", { className: "cnnw-toolbar" }, [methodSel.wrap]), busy.row, busy.error, caption, cells, legend, listCaption, thumbs);

  /** @type {{source: any, values: Float32Array, shape: number[]} | null} */
  let grid = null;

  function paintGrid() {
    const methods = model.get("_methods") ?? [];
    if (methodSel.select.options.length !== methods.length) setOptions(methodSel.select, methods.map((/** @type {string} */ m) => [m, m]));
    methodSel.select.value = model.get("method");
    const g = model.get("_grid");
    if (!g?.maps) {
      caption.textContent = "";
      cells.replaceChildren();
      return;
    }
    if (grid?.source !== g) {
      const t = decode(g.maps);
      grid = { source: g, values: /** @type {Float32Array} */ (t.data), shape: t.shape };
    }
    const [, mh, mw] = grid.shape;
    const size = mh * mw;
    let hi = 0;
    for (const v of grid.values) if (v > hi) hi = v;
    const colors = packLut(lut(COLORMAP));
    paintColorbar(bar, lut(COLORMAP));
    barLo.textContent = "0";
    barHi.textContent = hi > 0 ? fmt(hi) : "0";
    const classes = /** @type {string[]} */ (g.classes);
    const selected = Number(model.get("selected_class"));
    const column = model.get("selected_column");
    cells.style.gridTemplateColumns = `minmax(4em, max-content) repeat(2, ${CELL_CSS + 12}px)`;
    const children = [h("span", { text: "class" }), h("span", { text: "correct" }), h("span", { text: "incorrect" })];
    classes.forEach((name, r) => {
      children.push(h("span", { className: "cnnw-row-label", text: name, attrs: { role: "rowheader" } }));
      COLUMNS.forEach((col, c) => {
        const count = g.counts[r][c];
        const slot = 2 * r + c;
        const pixels = colorizeScalar(grid.values.subarray(slot * size, (slot + 1) * size), 1, [0], [hi > 0 ? hi : 1], colors);
        const rgba = new Uint8ClampedArray(pixels.buffer.slice(0));
        const button = h("button", {
          className: "cnnw-cell",
          attrs: {
            type: "button", "data-class": String(r), "data-column": col,
            "aria-pressed": String(selected === r && column === col),
            "aria-label": `${name}, ${col}: ${count} images`,
          },
        }, [
          // an empty cell is a blank canvas, so a PNG export keeps the grid's columns (export.py)
          pictureCanvas(count ? rgba : new Uint8ClampedArray(4 * mw * mh), mw, mh, CELL_CSS,
            count ? `mean map of ${name}, ${col}` : `no images of ${name}, ${col}`, `class ${r}`),
          h("span", { className: "cnnw-count", text: `${count} image${count === 1 ? "" : "s"}` }),
        ]);
        if (!count) /** @type {HTMLButtonElement} */ (button).disabled = true;
        scope.listen(button, "click", () => model.send({ type: "cell", class: r, column: col }));
        children.push(button);
      });
    });
    const focused = document.activeElement instanceof HTMLElement && cells.contains(document.activeElement)
      ? [document.activeElement.dataset.class, document.activeElement.dataset.column] : null;
    cells.replaceChildren(...children);
    if (focused) /** @type {HTMLElement | null} */ (cells.querySelector(`[data-class="${focused[0]}"][data-column="${focused[1]}"]`))?.focus();
    caption.textContent = `mean ${g.method} map per class (rows, by label) and prediction (columns); each map explains the predicted class`
      + (g.note ? ` · ${g.note}` : "") + " · click a cell for its images";
    markPainted(root, String(g.method), performance.now());
    paintCell();
  }

  function paintCell() {
    const c = model.get("_cell");
    const g = model.get("_grid");
    if (!c || c.class === undefined || !g?.classes || Number(model.get("selected_class")) < 0) {
      listCaption.textContent = "";
      thumbs.replaceChildren();
      return;
    }
    const name = g.classes[c.class] ?? `class ${c.class}`;
    listCaption.textContent = `${name}, ${c.column}: ${c.indices.length} of ${c.total} image${c.total === 1 ? "" : "s"}`;
    if (!c.images) {
      thumbs.replaceChildren();
      return;
    }
    const images = decode(c.images);
    const maps = decode(c.maps);
    const [n, th, tw] = images.shape;
    const size = th * tw;
    const table = lut(COLORMAP);
    const figures = [];
    for (let i = 0; i < n; i++) {
      const heat = /** @type {Float32Array} */ (maps.data).subarray(i * size, (i + 1) * size);
      const { lo, hi } = overlayRange(sortedMagnitudes(heat, "positive"), 99, false);
      const rgba = blendOverlay(/** @type {Uint8Array} */ (images.data).subarray(3 * i * size, 3 * (i + 1) * size), heat,
        { sign: "positive", lo, hi, table, opacity: 0.5 });
      const predicted = g.classes[c.predicted[i]] ?? `class ${c.predicted[i]}`;
      figures.push(h("figure", { className: "cnnw-patch", attrs: { role: "listitem" } }, [
        pictureCanvas(rgba, tw, th, THUMB_CSS, `image ${c.indices[i]}`, "cell"),
        h("figcaption", { text: `#${c.indices[i]} · predicted ${predicted}` }),
      ]));
    }
    thumbs.replaceChildren(...figures);
    root.dataset.cellPaintCount = String(Number(root.dataset.cellPaintCount ?? 0) + 1);
  }

  scope.listen(methodSel.select, "change", () => {
    model.set("method", methodSel.select.value);
    model.save_changes();
  });
  for (const key of ["_grid", "_methods", "method", "selected_class", "selected_column"]) scope.onModel(model, `change:${key}`, paintGrid);
  scope.onModel(model, "change:_cell", paintCell);
  paintGrid();
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderClassHeatmaps(model, el);
  },
};
