// ChannelImportance controls: the keyboard path to what the bqplot bars do by click (a channel menu in
// the chart's order, each entry with its numbers), the sort order, the metric, and progress with cancel
// while the kernel computes.

import { Scope, bindControl, fmt, h, kernelPicture, labelledSelect, mountRoot, setOptions } from "../dom.js";
import { DATASET_CSS, busyRow } from "../dataset_views.js";
import { bindScale } from "../scale.js";

/** @type {Array<[string, string]>} */
const SORTS = [["permutation", "permuted ↓"], ["zeroing", "zeroed ↓"], ["channel", "channel index"]];
/** @type {Array<[string, string]>} */
const METRICS = [["accuracy", "accuracy"], ["loss", "cross-entropy"]];

/**
 * Channels in the chart's order (the same rule as ChannelImportance.order in Python: descending, ties
 * by index, NaN last).
 * @param {string} sort
 * @param {{permutation: number[], zeroing: number[]}} rows
 * @returns {number[]}
 */
export function importanceOrder(sort, rows) {
  const n = rows.permutation.length;
  const order = Array.from({ length: n }, (_, i) => i);
  if (sort === "channel") return order;
  const key = sort === "zeroing" ? rows.zeroing : rows.permutation;
  /** @param {number} c */
  const v = (c) => (Number.isFinite(key[c]) ? key[c] : -Infinity);
  return order.sort((a, b) => v(b) - v(a) || a - b);
}

/**
 * @param {any} model
 * @param {HTMLElement} el
 * @returns {() => void} cleanup
 */
function renderControls(model, el) {
  const scope = new Scope();
  // the chart is a bqplot widget beside this one: "save PNG" downloads the picture to_png writes
  const root = mountRoot(el, "cnnw-channel-importance", { picture: () => kernelPicture(model) });
  root.prepend(h("style", { text: DATASET_CSS }));
  bindScale(model, root, scope);
  const channelSel = labelledSelect("channel", "cnnw-channel-select", []);
  const sortSel = labelledSelect("sort", "cnnw-sort", SORTS);
  const metricSel = labelledSelect("metric", "cnnw-metric", METRICS);
  const caption = h("div", { className: "cnnw-caption cnnw-importance-caption" });
  const busy = busyRow(model, scope);
  root.append(h("div", { className: "cnnw-toolbar" }, [channelSel.wrap, sortSel.wrap, metricSel.wrap]), busy.row, busy.error, caption);

  function paint() {
    const rows = model.get("_rows");
    sortSel.select.value = model.get("sort");
    metricSel.select.value = model.get("metric");
    if (!rows?.permutation) {
      setOptions(channelSel.select, [["-1", "(computing…)"]]);
      return;
    }
    const order = importanceOrder(model.get("sort"), rows);
    setOptions(channelSel.select, [["-1", "(none)"], ...order.map((c) => /** @type {[string, string]} */ ([
      String(c), `${c}: permuted ${fmt(rows.permutation[c])} ± ${fmt(rows.std[c])} · zeroed ${fmt(rows.zeroing[c])}`,
    ]))]);
    const channel = Number(model.get("channel"));
    channelSel.select.value = String(channel);
    caption.textContent = channel >= 0 && channel < rows.permutation.length
      ? `channel ${channel}: permuted ${fmt(rows.permutation[channel])} ± ${fmt(rows.std[channel])}, zeroed ${fmt(rows.zeroing[channel])}`
      : `${rows.permutation.length} channels of ${rows.layer} · click a bar or pick a channel`;
    root.dataset.channel = String(channel);
    root.dataset.paintCount = String(Number(root.dataset.paintCount ?? 0) + 1);
  }

  bindControl(scope, model, channelSel.select, "channel", { parse: Number });
  bindControl(scope, model, sortSel.select, "sort");
  bindControl(scope, model, metricSel.select, "metric");
  for (const key of ["_rows", "channel", "sort", "metric"]) scope.onModel(model, `change:${key}`, paint);
  paint();
  return () => scope.dispose();
}

export default {
  /** @param {{model: any, el: HTMLElement}} props */
  render({ model, el }) {
    return renderControls(model, el);
  },
};
