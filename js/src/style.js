// Stylesheet of every view. JupyterLab theme variables (--jp-*) with light fallbacks keep the widgets
// readable in light and dark themes, in Voila and in plain pages: the root is transparent over the page
// (a notebook cell, a Voila page, light or dark) and its text takes the theme's font colours. Every font
// size is calc(<size at scale 1> * var(--cnnw-scale, 1)): scale.js sets --cnnw-scale on each view's root
// from its font_scale trait (cnn_widgets.style), so one property rescales all text for a projector.
// Small text (captions, legends, tooltips, notes) is never below 12px at scale 1.

/** Font size of body text and controls at the view's scale. */
export const FONT_SIZE = "calc(max(13px, var(--jp-ui-font-size1, 13px)) * var(--cnnw-scale, 1))";
/** Font size of captions, legends, tooltips and notes at the view's scale (12px at scale 1). */
export const SMALL_FONT_SIZE = "calc(max(12px, var(--jp-ui-font-size1, 13px) - 1px) * var(--cnnw-scale, 1))";

export const CSS = `
.cnnw-root {
  position: relative;
  display: flex;
  flex-direction: column;
  gap: 6px;
  padding: 4px;
  color: var(--jp-ui-font-color1, #1a1a1a);
  background: transparent;
  font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  font-size: ${FONT_SIZE};
  --cnnw-small-font-size: ${SMALL_FONT_SIZE};
  max-width: 100%;
}
.cnnw-root [hidden] {
  display: none !important;
}
.cnnw-toolbar {
  display: flex;
  flex-wrap: wrap;
  align-items: center;
  gap: 6px 14px;
}
.cnnw-control {
  display: inline-flex;
  align-items: center;
  gap: 4px;
  color: var(--jp-ui-font-color2, #555);
}
.cnnw-root select,
.cnnw-root input[type="number"],
.cnnw-root button {
  color: var(--jp-ui-font-color1, #1a1a1a);
  background: var(--jp-layout-color2, #f3f3f3);
  border: 1px solid var(--jp-border-color1, #bdbdbd);
  border-radius: 2px;
  font: inherit;
  padding: 1px 2px;
}
.cnnw-root button {
  padding: 1px 8px;
  cursor: pointer;
}
.cnnw-root button:hover {
  background: var(--jp-layout-color3, #e0e0e0);
}
.cnnw-root input[type="range"],
.cnnw-root input[type="checkbox"] {
  accent-color: var(--jp-brand-color1, #1976d2);
}
.cnnw-root input[type="checkbox"] {
  width: calc(13px * var(--cnnw-scale, 1));
  height: calc(13px * var(--cnnw-scale, 1));
}
.cnnw-value {
  min-width: 3.2em;
  font-variant-numeric: tabular-nums;
}
.cnnw-root input:focus-visible,
.cnnw-root select:focus-visible,
.cnnw-root button:focus-visible,
.cnnw-root canvas:focus-visible {
  outline: 2px solid var(--jp-brand-color1, #1976d2);
  outline-offset: 1px;
}
.cnnw-layer-slider {
  width: min(320px, 60vw);
}
.cnnw-layer-name {
  font-family: var(--jp-code-font-family, monospace);
  font-weight: 600;
  color: var(--jp-ui-font-color0, #000);
  overflow-wrap: anywhere;
}
.cnnw-caption {
  color: var(--jp-ui-font-color2, #555);
  font-family: var(--jp-code-font-family, monospace);
  font-size: var(--cnnw-small-font-size);
  overflow-wrap: anywhere;
}
.cnnw-main {
  display: flex;
  flex-wrap: wrap;
  align-items: flex-start;
  gap: 12px;
}
.cnnw-grid-wrap {
  max-width: 100%;
  max-height: 720px;
  overflow: auto;
}
.cnnw-grid,
.cnnw-detail,
.cnnw-filter-detail {
  display: block;
  image-rendering: pixelated;
  cursor: crosshair;
}
.cnnw-detail {
  image-rendering: auto;
  cursor: default;
}
.cnnw-side {
  display: flex;
  flex-direction: column;
  gap: 4px;
}
.cnnw-legend {
  display: flex;
  align-items: center;
  gap: 4px;
  font-size: var(--cnnw-small-font-size);
  color: var(--jp-ui-font-color2, #555);
}
.cnnw-legend canvas {
  width: 120px;
  height: 10px;
  image-rendering: auto;
  border: 1px solid var(--jp-border-color2, #ccc);
}
.cnnw-tooltip {
  position: absolute;
  z-index: 10;
  pointer-events: none;
  padding: 2px 6px;
  border-radius: 3px;
  white-space: pre;
  color: var(--jp-ui-inverse-font-color0, #fff);
  background: var(--jp-inverse-layout-color2, rgba(30, 30, 30, 0.92));
  font-family: var(--jp-code-font-family, monospace);
  font-size: var(--cnnw-small-font-size);
}
.cnnw-tooltip[hidden] {
  display: none;
}
.cnnw-status {
  color: var(--jp-warn-color0, #b26b00);
}
.cnnw-status:empty {
  display: none;
}
.cnnw-notes {
  display: flex;
  flex-direction: column;
  gap: 2px;
  max-width: 640px;
  padding-left: 6px;
  border-left: 3px solid var(--jp-warn-color1, #f0ad4e);
  color: var(--jp-ui-font-color1, #1a1a1a);
  font-size: var(--cnnw-small-font-size);
  overflow-wrap: anywhere;
}
.cnnw-notes:empty {
  display: none;
}
`;
