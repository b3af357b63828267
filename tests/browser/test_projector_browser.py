"""Projector-ready views in a real page (Voila + Chromium): one AttributionView fits a 1366×768 screen
with the prediction bars to the right of the heatmap (and below it only when the row is narrow);
``cnn_widgets.style(scale=1.5)`` makes every text of the views already shown 1.5× as large (captions,
controls, option labels, slider values, the chart's ticks and value labels) while a view given its own
``font_scale`` keeps it; captions are at least 12 px at scale 1; the opacity slider shows its value and
follows it live; option controls show human labels with Captum's argument name in the tooltip."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

pytestmark = pytest.mark.browser

AV = ".cnnw-attribution-view"
SCREEN = {"width": 1366, "height": 768}

SHAPES = """\
from cnn_widgets import zoo
model = zoo.load_shapesnet()
images, truth, _ = zoo.shapes_dataset(2, seed=3)
"""

# Boxes of the whole view (the HBox), its canvas part's root, the heatmap canvas and the chart.
BOXES_JS = """(view) => {
  const box = (el) => { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  return {
    view: box(view),
    root: box(view.querySelector('.cnnw-root')),
    canvas: box(view.querySelector('canvas.cnnw-overlay')),
    chart: box(view.querySelector('.cnnw-predictions')),
  };
}"""

# Computed font sizes (px) of every kind of text in a view: body, controls, captions, legend, option
# labels, slider values, and the chart's SVG texts (title, ticks, value labels).
SIZES_JS = """(view) => {
  const px = (el) => el ? parseFloat(getComputedStyle(el).fontSize) : null;
  const q = (sel) => view.querySelector(sel);
  const all = (sel) => [...view.querySelectorAll(sel)].map(px);
  return {
    root: px(q('.cnnw-root')),
    caption: px(q('.cnnw-result-caption')),
    legend: px(q('.cnnw-legend')),
    select: px(q('select')),
    control: px(q('.cnnw-control span')),
    option: px(q('.cnnw-option-label')),
    opacity: px(q('.cnnw-opacity-value')),
    title: px(q('.cnnw-predictions text.mainheading')),
    ticks: all('.cnnw-predictions .axis .tick text'),
    bars: all('.cnnw-predictions text.bar_label'),
  };
}"""


def flat(sizes: dict[str, Any]) -> dict[str, float]:
    """One entry per text kind (the chart's tick and bar labels each share one size: checked here)."""
    out = {}
    for key, value in sizes.items():
        if isinstance(value, list):
            assert value and len(set(value)) == 1, (key, value)
            value = value[0]
        assert value is not None, f"no {key} text in the view"
        out[key] = value
    return out


def sizes_when(view: Locator, ok: Callable[[dict[str, float]], bool], timeout_s: float = 30.0) -> dict[str, float]:
    """The view's font sizes once ``ok`` holds for them (the kernel's change reaches the page a little
    later); the last sizes if it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        sizes = view.evaluate(SIZES_JS)
        try:
            sizes = flat(sizes)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        else:
            if ok(sizes) or time.monotonic() > deadline:
                return sizes
        view.page.wait_for_timeout(200)


def test_one_view_fits_a_1366x768_screen_with_the_bars_beside_the_heatmap(
    page: Page, open_voila: Callable[..., Page], tmp_path: Path
) -> None:
    page.set_viewport_size(SCREEN)
    open_voila([
        SHAPES + "view = cnn_widgets.AttributionView(model, images[0], labels=list(zoo.CLASSES))\n"
        "view.add_class('the-view')\n"
        "display(view)",
    ], ready=f".the-view {AV}[data-paint-count]")
    view = page.locator(".the-view")
    expect(view.locator(".cnnw-predictions text.bar_label")).to_have_count(5)
    page.screenshot(path=str(tmp_path / "screen.png"))
    b = view.evaluate(BOXES_JS)
    # the bars to the right of the heatmap, level with it (side by side, not below)
    assert b["chart"]["left"] >= b["canvas"]["right"], b
    assert b["chart"]["top"] < b["canvas"]["bottom"], b
    # the whole view on the screen at once, Voila's page margin included
    assert page.evaluate("() => window.scrollY") == 0
    assert b["view"]["bottom"] <= SCREEN["height"] and b["view"]["right"] <= SCREEN["width"], b
    # a narrow page: the bars go below the heatmap and nothing sticks out sideways
    page.set_viewport_size({"width": 760, "height": SCREEN["height"]})
    page.wait_for_timeout(300)
    narrow = view.evaluate(BOXES_JS)
    page.screenshot(path=str(tmp_path / "narrow.png"), full_page=True)
    assert narrow["chart"]["top"] >= narrow["canvas"]["bottom"], narrow
    assert narrow["root"]["right"] <= 760 and narrow["chart"]["right"] <= 760, narrow


def test_style_scales_every_text_of_the_views_on_screen(
    page: Page, open_voila: Callable[..., Page], tmp_path: Path
) -> None:
    """``style(scale=1.5)`` run by a button (the kernel runs it while the views are shown)."""
    page.set_viewport_size(SCREEN)
    open_voila([
        SHAPES + "follows = cnn_widgets.AttributionView(model, images[0], 'smoothgrad', labels=list(zoo.CLASSES),"
        " options={'nt_samples': 2})\n"
        "own = cnn_widgets.AttributionView(model, images[1], 'smoothgrad', labels=list(zoo.CLASSES),"
        " options={'nt_samples': 2}, font_scale=1.0)\n"
        "follows.add_class('follows'); own.add_class('own')\n"
        "button = W.Button(description='projector')\n"
        "button.add_class('projector')\n"
        "from cnn_widgets.style import style\n"
        "button.on_click(lambda _: style(scale=1.5))\n"
        "display(button, follows, own)",
    ], ready=f".follows {AV}[data-paint-count]")
    follows, own = page.locator(".follows"), page.locator(".own")
    own.locator(f"{AV}[data-paint-count]").wait_for()
    base = sizes_when(follows, lambda s: True)
    assert base["caption"] >= 12 and base["legend"] >= 12 and base["option"] >= 12, base
    assert base["ticks"] >= 12 and base["bars"] >= 12 and base["root"] >= 13, base
    own_base = sizes_when(own, lambda s: True)

    page.locator(".projector button, button.projector").first.click()
    scaled = sizes_when(follows, lambda s: all(abs(s[k] - 1.5 * base[k]) < 0.6 for k in base))
    page.screenshot(path=str(tmp_path / "projector.png"), full_page=True)
    for kind, size in base.items():
        assert scaled[kind] == pytest.approx(1.5 * size, abs=0.6), (kind, base, scaled)
    # the chart grew with its text: the value labels stay inside the figure
    chart = follows.locator(".cnnw-predictions")
    svg = chart.locator("svg.svg-figure").first.bounding_box()
    for label in chart.locator("text.bar_label").all():
        box = label.bounding_box()
        assert box and svg and box["x"] + box["width"] <= svg["x"] + svg["width"] + 0.5, (box, svg)
    # a view given its own font_scale keeps it
    assert sizes_when(own, lambda s: True) == own_base


def test_opacity_shows_its_value_and_options_have_human_labels(
    page: Page, open_voila: Callable[..., Page]
) -> None:
    open_voila([
        SHAPES + "view = cnn_widgets.AttributionView(model, images[0], 'smoothgrad', options={'nt_samples': 2},"
        " opacity=0.6)\n"
        "view.add_class('the-view')\n"
        "display(W.VBox([view, mirror(view, 'opacity', 'opacity')]))",
    ], ready=f".the-view {AV}[data-paint-count]")
    view = page.locator(".the-view")
    value = view.locator(".cnnw-opacity-value")
    expect(value).to_have_text("0.60")
    # beside the slider, inside the same labelled control
    expect(view.locator("label.cnnw-control:has(input.cnnw-opacity) .cnnw-opacity-value")).to_have_count(1)
    slider = view.locator("input.cnnw-opacity")
    slider.focus()
    page.keyboard.press("ArrowRight")
    expect(value).to_have_text("0.65")  # live, before the kernel hears of it
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(value).to_have_text("0.55")
    expect(page.locator(".probe-opacity")).to_have_text("0.55")
    # smoothgrad's options: human words on the controls, Captum's names in the tooltips
    labels = view.locator(".cnnw-options .cnnw-option-label")
    expect(labels).to_have_text(["samples", "noise level", "samples per pass", "absolute value"])
    titles = view.locator(".cnnw-options label.cnnw-control").evaluate_all("(ls) => ls.map((l) => l.title)")
    names = ["nt_samples", "stdevs", "nt_samples_batch_size", "abs"]
    assert [t.split(":")[0] for t in titles] == names, titles
    assert all(len(t) > len(n) + 10 for t, n in zip(titles, names)), titles  # the name and what it does


def test_style_grows_the_tiles_of_the_grids_on_screen(page: Page, open_voila: Callable[..., Page]) -> None:
    """Tiles are part of what a projector must show: ``style(scale=1.5)`` makes the filter and channel
    tiles of the views on screen larger (laid out as ``export.layout_grid`` says, so clicks and the
    save PNG button still match), and the tile clicked afterwards is the tile under the pointer."""
    from cnn_widgets import export

    page.set_viewport_size(SCREEN)
    open_voila([
        SHAPES + "fg = cnn_widgets.FilterGrid(model, 'features.conv1')\n"
        "ab = cnn_widgets.ActivationBrowser(model, images[0], layer='features.conv2')\n"
        "fg.add_class('fg'); ab.add_class('ab')\n"
        "button = W.Button(description='projector')\n"
        "button.add_class('projector')\n"
        "from cnn_widgets.style import style\n"
        "button.on_click(lambda _: style(scale=1.5))\n"
        "shape = next(m['shape'] for m in ab._meta['layers'] if m['name'] == 'features.conv2')\n"
        "display(button, fg, ab, mirror(ab, 'channel', 'channel'),\n"
        "        probe('fg-shape', 'x'.join(map(str, model.features.conv1.weight.shape))),\n"
        "        probe('ab-shape', 'x'.join(map(str, shape))))",
    ], ready=".ab .cnnw-root[data-paint-count]")
    O, _, kh, kw = (int(v) for v in page.inner_text(".probe-fg-shape").split("x"))
    C, h, w = (int(v) for v in page.inner_text(".probe-ab-shape").split("x"))
    fg, ab = page.locator(".fg canvas.cnnw-grid"), page.locator(".ab canvas.cnnw-grid")

    def layouts(scale: float) -> tuple[dict[str, int], dict[str, int]]:
        return export.layout_grid(O, kh, kw, **export.FILTER_GRID, scale=scale), export.layout_grid(C, h, w, scale=scale)

    def widths() -> list[int]:
        return [grid.evaluate("(c) => [c.width, Number(c.dataset.cell)]") for grid in (fg, ab)]

    small, big = layouts(1.0), layouts(1.5)
    assert widths() == [[L["width"], L["cell"]] for L in small]
    page.locator(".projector button, button.projector").first.click()
    expect(fg).to_have_attribute("data-cell", str(big[0]["cell"]), timeout=30_000)
    expect(ab).to_have_attribute("data-cell", str(big[1]["cell"]), timeout=30_000)
    assert widths() == [[L["width"], L["cell"]] for L in big]
    assert big[0]["drawW"] > small[0]["drawW"] and big[1]["drawW"] > small[1]["drawW"]
    # a click lands on the tile drawn under it at the new size
    L = big[1]
    slot = min(5, C - 1)
    ab.scroll_into_view_if_needed()
    ab.click(position={"x": (slot % L["cols"] + 0.5) * L["cell"], "y": (slot // L["cols"] + 0.5) * L["cell"]})
    order = [int(v) for v in ab.evaluate("(c) => c.dataset.order").split(",")]
    expect(page.locator(".probe-channel")).to_have_text(str(order[slot]), timeout=30_000)
