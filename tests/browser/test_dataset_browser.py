"""The dataset views in a real page (Voila + Chromium): TopActivations paints its patches and filter, and the
channel slider moves through channels from the keyboard; a ClassHeatmaps cell, clicked or activated with
Enter, lists its images; a ChannelImportance bar click and the channel menu (keyboard) select a channel; the
Python traits follow (read back through probe labels); class labels and layer names stay text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

import harness
from archs import XSS_NAME

pytestmark = pytest.mark.browser

TA = ".cnnw-top-activations"
CH = ".cnnw-class-heatmaps"
CI = ".cnnw-channel-importance"
TIMEOUT = 60_000

DATA = """\
from cnn_widgets import zoo
torch.set_num_threads(1)
model = zoo.load_shapesnet()
images, labels, _ = zoo.shapes_dataset(48, seed=5)
"""

TOP = DATA + """\
from cnn_widgets.widgets.top_activations import TopActivations
top = TopActivations(model, (images, labels), "features.conv4", k=4, batch_size=16)
top.wait()  # its scan (tested against brute force in test_scan.py) gives the channel means
display(W.VBox([top, mirror(top, "channel", "channel"), mirror(top, "sort", "sort"),
                probe("top-mean", int(top.scan.channel_mean["features.conv4"].argmax()))]))
"""

HEATMAPS = DATA + f"""\
from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps
cheat = zoo.load_shapesnet("cheat")
names = [{XSS_NAME!r}] + list(zoo.CLASSES[1:])
heat = ClassHeatmaps(cheat, (images, labels), labels=names, batch_size=16)
display(W.VBox([heat, mirror(heat, "selected_class", "class"), mirror(heat, "selected_column", "column")]))
"""

IMPORTANCE = DATA + """\
from cnn_widgets.widgets.channel_importance_view import ChannelImportance
imp = ChannelImportance(model, (images, labels), "features.conv4", metric="loss", repeats=1, batch_size=16)
imp.wait()
display(W.VBox([imp, mirror(imp, "channel", "channel"), probe("order", ",".join(map(str, imp.order())))]))
"""


def probe_is(page: Page, name: str, value: str) -> None:
    expect(page.locator(f".probe-{name}")).to_have_text(value, timeout=TIMEOUT)


def no_injection(page: Page) -> None:
    page.wait_for_timeout(300)  # an injected <img src=x> would have fired onerror by now
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert page.locator("img[onerror]").count() == 0


def test_top_activations_paints_and_the_slider_moves_by_keyboard(open_voila: Callable[..., Page]) -> None:
    page = open_voila([TOP], ready=f"{TA}[data-paint-count]")
    root = page.locator(TA)
    patches = root.locator(".cnnw-patches canvas")
    expect(patches).to_have_count(4, timeout=TIMEOUT)
    for i in range(4):
        stats = harness.canvas_stats(page, f"{TA} .cnnw-patches canvas", i)
        assert stats["width"] == 26 and stats["opaque"] == 1.0 and stats["colors"] > 20, stats
    filt = harness.canvas_stats(page, f"{TA} .cnnw-filter-tile")
    assert (filt["width"], filt["height"]) == (3, 3)
    expect(root.locator(".cnnw-channel-caption")).to_contain_text("channel 0")
    probe_is(page, "channel", "0")
    slider = root.locator(".cnnw-channel-slider")
    slider.focus()
    page.keyboard.press("ArrowRight")
    probe_is(page, "channel", "1")
    expect(root).to_have_attribute("data-channel", "1")
    page.keyboard.press("End")
    probe_is(page, "channel", "63")
    # sort by mean activation from the keyboard: the slider's first position is the top channel
    sort = root.locator("select.cnnw-sort")
    sort.focus()
    page.keyboard.press("ArrowDown")
    probe_is(page, "sort", "mean")
    slider.focus()
    page.keyboard.press("Home")
    probe_is(page, "channel", page.locator(".probe-top-mean").inner_text())
    # the index box sets a channel directly
    box = root.locator(".cnnw-channel-input")
    box.fill("7")
    box.press("Enter")
    probe_is(page, "channel", "7")
    no_injection(page)


def test_class_heatmaps_cell_click_and_enter_list_its_images(open_voila: Callable[..., Page]) -> None:
    page = open_voila([HEATMAPS], ready=f"{CH}[data-paint-count]")
    root = page.locator(CH)
    expect(root.locator(".cnnw-row-label").first).to_have_text(XSS_NAME)
    cells = root.locator("button.cnnw-cell:not([disabled])")
    first = cells.first
    count = int(first.locator(".cnnw-count").inner_text().split()[0])
    first.click()
    thumbs = root.locator(".cnnw-thumbs canvas")
    expect(thumbs).to_have_count(min(count, 24), timeout=TIMEOUT)
    probe_is(page, "class", first.get_attribute("data-class") or "")
    assert harness.canvas_stats(page, f"{CH} .cnnw-thumbs canvas")["colors"] > 20
    expect(root.locator(".cnnw-list-caption")).to_contain_text(f"of {count} image")
    # Enter on another cell (keyboard) lists that one
    other = cells.nth(1)
    other_count = int(other.locator(".cnnw-count").inner_text().split()[0])
    other.focus()
    page.keyboard.press("Enter")
    probe_is(page, "class", other.get_attribute("data-class") or "")
    probe_is(page, "column", other.get_attribute("data-column") or "")
    expect(thumbs).to_have_count(min(other_count, 24), timeout=TIMEOUT)
    no_injection(page)


def test_channel_importance_bar_click_and_menu_select_a_channel(open_voila: Callable[..., Page]) -> None:
    page = open_voila([IMPORTANCE], ready=f"{CI}[data-paint-count]")
    order = page.locator(".probe-order").inner_text().split(",")
    probe_is(page, "channel", "-1")
    bars = page.locator(".cnnw-channel-importance-chart rect.bar")
    expect(bars).to_have_count(len(order), timeout=TIMEOUT)
    bars.nth(2).click()
    probe_is(page, "channel", order[2])
    # the keyboard path: the channel menu lists channels in the chart's order
    menu = page.locator(f"{CI} select.cnnw-channel-select")
    expect(menu).to_have_value(order[2])
    menu.focus()
    page.keyboard.press("ArrowDown")
    probe_is(page, "channel", order[3])
    expect(page.locator(f"{CI} .cnnw-importance-caption")).to_contain_text(f"channel {order[3]}")


LAB_CELLS = [
    ("markdown", "# Dataset views\nDriven from the keyboard."),
    ("code", "PRELUDE"),
    ("code", DATA + """\
from cnn_widgets.widgets.top_activations import TopActivations
from cnn_widgets.widgets.channel_importance_view import ChannelImportance
from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps
top = TopActivations(model, (images, labels), "features.conv4", k=3, batch_size=16)
imp = ChannelImportance(model, (images, labels), "features.conv4", metric="loss", repeats=1, batch_size=16)
heat = ClassHeatmaps(model, (images, labels), batch_size=16)
for view in (top, imp, heat):
    view.wait()
display(W.VBox([top] + [mirror(top, t, "ta-" + t) for t in ("channel", "sort")]))
display(W.VBox([imp] + [mirror(imp, t, "ci-" + t) for t in ("channel", "sort", "metric")]))
display(W.VBox([heat] + [mirror(heat, t, "ch-" + t) for t in ("selected_class", "selected_column", "method")]))"""),
    ("markdown", "## Below the widgets"),
    ("code", "below = 1"),
]


def test_dataset_views_from_the_keyboard_in_jupyterlab(open_lab: Callable[..., Page], tmp_path) -> None:
    """Every control of the three views, by key, in JupyterLab: the trait follows and the notebook does
    not react (active cell, mode, headings, visible cells)."""
    import nbformat
    from conftest import PRELUDE
    from test_keyboard import Keys, check_select

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown"
                else nbformat.v4.new_code_cell(PRELUDE if src == "PRELUDE" else src) for kind, src in LAB_CELLS]
    path = tmp_path / "dataset_keys.ipynb"
    nbformat.write(nb, path)
    page = open_lab(path)
    cells = harness.lab_run_all(page, timeout_s=300)
    assert not any(c["errors"] for c in cells), cells
    for root in (TA, CI, CH):
        page.locator(f"{root}[data-paint-count]").first.wait_for(timeout=TIMEOUT)
    page.locator(".jp-Notebook").first.click(position={"x": 2, "y": 2})  # command mode, as a user would be
    page.keyboard.press("Escape")
    keys = Keys(page)

    top = page.locator(TA)
    slider = top.locator("input.cnnw-channel-slider")
    keys.focus(slider)
    for key, channel in [("ArrowRight", 1), ("ArrowLeft", 0), ("ArrowUp", 1), ("ArrowDown", 0), ("End", 63), ("Home", 0)]:
        keys.press(slider, key, value=str(channel), probe=("ta-channel", str(channel)), what="ta channel")
    heat_slider = top.locator("input.cnnw-opacity")
    keys.focus(heat_slider)
    for key in ("ArrowRight", "ArrowLeft", "End", "Home"):
        keys.press(heat_slider, key, what="ta heat opacity")
    box = top.locator("input.cnnw-channel-input")
    keys.focus(box)
    box.fill("5")
    keys.press(box, "Enter", probe=("ta-channel", "5"), what="ta index")
    check_select(keys, top.locator("select.cnnw-sort"), "ta-sort", what="ta sort")

    imp = page.locator(CI)
    check_select(keys, imp.locator("select.cnnw-channel-select"), "ci-channel", what="ci channel")
    check_select(keys, imp.locator("select.cnnw-sort"), "ci-sort", what="ci sort")

    heat = page.locator(CH)
    cell = heat.locator("button.cnnw-cell:not([disabled])").first
    keys.focus(cell)
    for key in ("ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"):
        keys.press(cell, key, what="ch cell")
    keys.press(cell, "Enter", probe=("ch-selected_class", cell.get_attribute("data-class") or ""), what="ch cell")
    expect(heat.locator(".cnnw-thumbs canvas").first).to_be_visible(timeout=TIMEOUT)
    final = page.evaluate(harness.NOTEBOOK_STATE_JS)
    assert final["mode"] == "command" and final["collapsed"] == 0 and final["visible"] == len(LAB_CELLS), final
