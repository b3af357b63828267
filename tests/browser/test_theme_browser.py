"""Dark themes in a real browser: in JupyterLab with the "JupyterLab Dark" theme and in Voila's dark
theme, every view's panel shows the notebook's own background (the root is transparent over the cell,
so it matches whatever the theme paints there), its text, captions and control labels have a contrast
of at least 4.5:1 against it, and the bqplot prediction chart follows the theme (its background is the
cell's, its tick and value labels readable). In JupyterLab, a view with ``font_scale=1.5`` shows its
captions 1.5× as large as a view at scale 1.

JupyterLab runs in its own server here (module fixture ``dark_lab``) whose user settings select the
dark theme, so the session's light JupyterLab is left as it is."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

import harness
from conftest import PRELUDE, Running

pytestmark = pytest.mark.browser

VIEWS = """\
from cnn_widgets import zoo
model = zoo.load_shapesnet()
images, truth, _ = zoo.shapes_dataset(2, seed=3)
view = cnn_widgets.AttributionView(model, images[0], labels=list(zoo.CLASSES))
big = cnn_widgets.AttributionView(model, images[0], labels=list(zoo.CLASSES), font_scale=1.5)
grid = cnn_widgets.FilterGrid(model)
view.add_class('at-1'); big.add_class('at-1-5')
display(view, big, grid)
"""

# Colours as the eye gets them: a text colour blended over the background actually behind it (the first
# opaque background up the tree, semi-transparent ones composited on the way), and WCAG contrast.
COLOURS_JS = """() => {
  const parse = (c) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c || '');
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3]));
  const behind = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let out = [255, 255, 255];  // the canvas under everything
    for (const c of layers.reverse()) out = over(c, out);
    return out;
  };
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const contrast = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const text = (el, prop = 'color') => {
    const bg = behind(el);
    const fg = over(parse(getComputedStyle(el)[prop]), bg);
    return {contrast: contrast(fg, bg), fg: fg.map(Math.round), bg: bg.map(Math.round), text: (el.textContent || '').slice(0, 30)};
  };
  const roots = [...document.querySelectorAll('.cnnw-root')];
  return {
    light: document.body.dataset.jpThemeLight ?? null,
    roots: roots.map((root) => {
      const cell = root.closest('.jp-Cell, .jp-OutputArea-output, body');
      const own = parse(getComputedStyle(root).backgroundColor);
      const texts = [...root.querySelectorAll('.cnnw-caption, .cnnw-control > span, .cnnw-legend span, .cnnw-layer-name, .cnnw-description, label, select, button')]
        .filter((el) => el.offsetParent !== null && (el.textContent || '').trim());
      return {
        kind: root.className,
        own,
        root: behind(root).map(Math.round),
        cell: behind(cell).map(Math.round),
        body: text(root),
        texts: texts.map((el) => text(el)),
      };
    }),
    charts: [...document.querySelectorAll('.cnnw-predictions')].map((fig) => {
      const cell = fig.closest('.jp-Cell, .jp-OutputArea-output, body');
      const svg = fig.querySelector('svg.svg-figure');
      const area = fig.querySelector('rect.plotarea_background');
      return {
        area: parse(getComputedStyle(area).fill),
        figure: behind(svg).map(Math.round),
        cell: behind(cell).map(Math.round),
        texts: [...fig.querySelectorAll('.tick text, text.bar_label, text.mainheading')]
          .filter((t) => t.textContent.trim()).map((t) => ({...text(t, 'fill'), bg: behind(svg).map(Math.round)})),
      };
    }),
  };
}"""

CAPTION_JS = """(sel) => parseFloat(getComputedStyle(document.querySelector(sel + ' .cnnw-result-caption')).fontSize)"""


def check_dark(colours: dict[str, Any]) -> None:
    """Every view's panel is the cell's background, every text on it readable, and the charts too."""
    assert colours["roots"], "no view on the page"
    for root in colours["roots"]:
        assert root["own"] is None or root["own"][3] == 0 or root["root"] == root["cell"], root
        assert max(abs(a - b) for a, b in zip(root["root"], root["cell"])) <= 1, root
        assert sum(root["cell"]) / 3 < 80, f"the page is not dark: {root['cell']}"
        assert root["body"]["contrast"] >= 4.5, root["body"]
        assert root["texts"], root["kind"]
        for t in root["texts"]:
            assert t["contrast"] >= 4.5, (root["kind"], t)
    assert colours["charts"], "no prediction chart on the page"
    for chart in colours["charts"]:
        assert max(abs(a - b) for a, b in zip(chart["figure"], chart["cell"])) <= 1, chart
        # the plot area (under the bars and their labels) is not painted: the cell shows through
        assert chart["area"] is None or chart["area"][3] == 0, chart
        assert chart["texts"]
        for t in chart["texts"]:
            assert t["contrast"] >= 4.5, t


@pytest.fixture(scope="module")
def dark_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A JupyterLab whose user settings choose the "JupyterLab Dark" theme."""
    root = tmp_path_factory.mktemp("dark-lab-root")
    home = tmp_path_factory.mktemp("dark-lab-home")
    themes = home / "jupyterlab_settings_dir" / "@jupyterlab" / "apputils-extension"
    themes.mkdir(parents=True)
    (themes / "themes.jupyterlab-settings").write_text(json.dumps({"theme": "JupyterLab Dark"}))
    with harness.lab_server(root, home) as base:
        yield Running(base, root)


def test_views_match_jupyterlab_dark_and_scale_their_captions(
    page: Page, dark_lab: Running, tmp_path: Path
) -> None:
    notebook = harness.write_notebook(tmp_path / "dark.ipynb", [PRELUDE, VIEWS])
    harness.clean_copy(notebook, dark_lab.root)
    try:
        page.goto(f"{dark_lab.base}/lab/workspaces/{uuid.uuid4().hex}/tree/{notebook.name}?reset",
                  wait_until="domcontentloaded")
        page.wait_for_function("() => window.jupyterapp?.shell?.currentWidget?.sessionContext", timeout=60_000)
        page.locator(".jp-StatusBar-Widget", has_text="(ipykernel) | Idle").first.wait_for(timeout=60_000)
        cells = harness.lab_run_all(page, timeout_s=240)
        assert not [c for c in cells if c["errors"]], cells
        for sel in (".at-1 .cnnw-root", ".at-1-5 .cnnw-root"):
            page.locator(f"{sel}[data-paint-count]").first.wait_for(timeout=60_000)
        page.locator(".cnnw-filter-grid[data-paint-count]").first.wait_for(timeout=60_000)
        page.locator(".cnnw-predictions text.bar_label").first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "dark-lab.png"), full_page=True)
        # beside the heatmap in a notebook too (1400 px wide, file browser open)
        canvas = page.locator(".at-1 canvas.cnnw-overlay").bounding_box()
        chart = page.locator(".at-1 .cnnw-predictions").bounding_box()
        assert canvas and chart and chart["x"] >= canvas["x"] + canvas["width"] and chart["y"] < canvas["y"] + canvas["height"]
        colours = page.evaluate(COLOURS_JS)
        assert colours["light"] == "false", "JupyterLab did not start in the dark theme"
        check_dark(colours)
        one, big = page.evaluate(CAPTION_JS, ".at-1"), page.evaluate(CAPTION_JS, ".at-1-5")
        assert one >= 12 and big == pytest.approx(1.5 * one, abs=0.1), (one, big)
    finally:
        harness.shutdown_kernels(dark_lab.base)


def test_views_match_voila_dark(page: Page, voila: Running, tmp_path: Path) -> None:
    name = f"dark-{uuid.uuid4().hex[:6]}.ipynb"
    harness.write_notebook(voila.root / name, [PRELUDE, VIEWS])
    harness.open_voila_page(page, voila.base, f"{name}?theme=dark", ".at-1 .cnnw-root[data-paint-count]")
    page.locator(".cnnw-filter-grid[data-paint-count]").first.wait_for(timeout=60_000)
    page.locator(".cnnw-predictions text.bar_label").first.wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "dark-voila.png"), full_page=True)
    check_dark(page.evaluate(COLOURS_JS))
