"""Explorer in a real page, in Voila and in JupyterLab: a click on a ModelSummary row moves the
ActivationBrowser and the FilterGrid (their painted layer and their Python traits), a click on an
activation channel highlights its filter, the thumbnail strip switches images by click and by keyboard
(arrow keys, Home, End; in JupyterLab without triggering a notebook shortcut), a class label that is an
HTML injection attempt renders as text, and (Voila) a widget jslinked to ``image_index`` moves the
Explorer and the dataset tab builds its views on the first click, on the Explorer's layer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

import harness
from archs import XSS_NAME
from conftest import PRELUDE

pytestmark = pytest.mark.browser

TIMEOUT = 30_000
MS, AB, FG, AV, STRIP = (
    ".cnnw-model-summary", ".cnnw-activation-browser", ".cnnw-filter-grid", ".cnnw-attribution-view",
    ".cnnw-image-strip",
)

EXPLORER = """\
from cnn_widgets import zoo
from cnn_widgets.widgets.explorer import Explorer
import archs
model = zoo.load_shapesnet()
images, truth, _ = zoo.shapes_dataset(4, seed=3)
names = list(zoo.CLASSES)
names[int(truth[1])] = archs.XSS_NAME  # the class of image 1 is named like an HTML injection
data = zoo.shapes_dataset(12, seed=5)[:2]
ex = Explorer(model, list(zip(images, truth)), labels=names, data=data)
picker = W.IntText(description="image")
picker.add_class("image-picker")
W.jslink((picker, "value"), (ex, "image_index"))  # a browser-side link to the Explorer's trait
display(W.VBox([ex, picker, mirror(ex, "layer", "layer"), mirror(ex, "channel", "channel"),
                mirror(ex, "image_index", "image_index"), mirror(ex.filters, "layer", "filter-layer"),
                mirror(ex.filters, "selected", "filter"), mirror(ex.activations, "layer", "act-layer")]))
"""

ALL_PAINTED_JS = """(sels) => sels.every((s) => document.querySelector(s)?.dataset.paintCount)"""


def probe_is(page: Page, name: str, value: str) -> None:
    expect(page.locator(f".probe-{name}")).to_have_text(value, timeout=TIMEOUT)


def painted_layer_is(page: Page, root: str, layer: str) -> None:
    expect(page.locator(root).first).to_have_attribute("data-painted-layer", layer, timeout=TIMEOUT)


def notebook_state(page: Page, lab: bool) -> dict[str, Any] | None:
    return page.evaluate(harness.NOTEBOOK_STATE_JS) if lab else None


def run_checks(page: Page, *, lab: bool) -> None:
    page.wait_for_function(ALL_PAINTED_JS, arg=[MS, AB, FG, AV, STRIP], timeout=90_000)
    probe_is(page, "layer", "features")

    # a ModelSummary row moves every part: the browser paints that layer, the grid that layer's conv
    row = page.locator(f'{MS} .cnnw-row[data-layer="features.bn2"]')
    row.scroll_into_view_if_needed()
    row.click()
    probe_is(page, "layer", "features.bn2")
    probe_is(page, "act-layer", "features.bn2")
    probe_is(page, "filter-layer", "features.conv2")
    painted_layer_is(page, AB, "features.bn2")
    painted_layer_is(page, FG, "features.conv2")
    expect(page.locator(f"{FG} select.cnnw-layer-select")).to_have_value("features.conv2", timeout=TIMEOUT)

    # a channel clicked in the activation grid highlights the filter of the same index
    spot = harness.slot_centre(page, f"{AB} canvas.cnnw-grid", 5)
    page.mouse.click(spot["x"], spot["y"])
    channel = str(spot["channel"])
    probe_is(page, "channel", channel)
    probe_is(page, "filter", channel)
    expect(page.locator(f"{FG} .cnnw-detail-caption")).to_contain_text(f"filter {channel}:", timeout=TIMEOUT)

    # the strip: a click switches the image, the activations repaint, the channel stays
    strip = page.locator(STRIP)
    paints = int(page.locator(AB).get_attribute("data-paint-count"))
    strip.locator('.cnnw-thumb[data-index="2"]').click()
    probe_is(page, "image_index", "2")
    expect(strip.locator('.cnnw-thumb[data-index="2"]')).to_have_attribute("aria-current", "true")
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.paintCount) > n", arg=[AB, paints],
        timeout=TIMEOUT,
    )
    probe_is(page, "channel", channel)

    # keyboard on the focused thumbnail: arrows, Home, End move the image and the focus
    thumb = strip.locator('.cnnw-thumb[data-index="2"]')
    thumb.focus()
    assert thumb.evaluate("(el) => el === document.activeElement")
    assert thumb.evaluate("(el) => getComputedStyle(el).outlineStyle") != "none", "visible focus"
    for key, index in [("ArrowRight", 3), ("ArrowRight", 3), ("ArrowLeft", 2), ("Home", 0), ("End", 3),
                       ("ArrowUp", 2)]:
        before = notebook_state(page, lab)
        page.keyboard.press(key)
        probe_is(page, "image_index", str(index))
        focused = strip.locator(f'.cnnw-thumb[data-index="{index}"]')
        expect(focused).to_be_focused(timeout=TIMEOUT)
        expect(focused).to_have_attribute("aria-current", "true")
        assert notebook_state(page, lab) == before, f"{key}: the notebook reacted"

    # labels are text: the injected class name shows literally and nothing ran
    truth = strip.locator('.cnnw-thumb[data-index="1"] .cnnw-thumb-truth')
    expect(truth).to_have_text(f"true: {XSS_NAME}")
    assert strip.locator("img").count() == 0 and page.evaluate("() => window.pwned") is None


def test_explorer_links_its_parts_in_voila(open_voila: Callable[..., Page]) -> None:
    page = open_voila([EXPLORER], ready=f"{STRIP}[data-paint-count]")
    run_checks(page, lab=False)
    # jslink: the Explorer's trait follows a widget linked in the browser, and the other way
    picker = page.locator(".image-picker input")
    expect(picker).to_have_value("2", timeout=TIMEOUT)  # moved by the keys above
    picker.fill("1")
    picker.press("Enter")
    probe_is(page, "image_index", "1")
    expect(page.locator(f'{STRIP} .cnnw-thumb[data-index="1"]')).to_have_attribute("aria-current", "true")
    # the dataset tab: its views are built on the first click and paint the Explorer's layer
    assert page.locator(".cnnw-top-activations").count() == 0
    page.get_by_role("tab", name="dataset").click()
    painted_layer_is(page, ".cnnw-top-activations", "features.bn2")
    expect(page.locator(".cnnw-channel-importance")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator(".cnnw-class-heatmaps[data-paint-count]")).to_be_visible(timeout=90_000)


def test_explorer_in_jupyterlab_keys_stay_off_notebook_shortcuts(
    open_lab: Callable[[Path], Page], tmp_path: Path
) -> None:
    page = open_lab(harness.write_notebook(tmp_path / "explorer_lab.ipynb", [PRELUDE, EXPLORER]))
    cells = harness.lab_run_all(page, timeout_s=300)
    assert not [c for c in cells if c["errors"]], cells
    page.evaluate("() => document.activeElement?.blur()")
    state = page.evaluate(harness.NOTEBOOK_STATE_JS)
    assert state["mode"] == "command", state
    run_checks(page, lab=True)
