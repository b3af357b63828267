"""FeatureVisualizer in a real page (Voila + Chromium): the image paints while the kernel optimises and
keeps changing until the last step, cancel and run work from the keyboard (the focus moves from one to
the other), grid mode paints every tile, and the keyboard (arrows + Enter) or a click opens a tile in
single mode. Layer names stay text. In JupyterLab, the widget's keys never reach the notebook's
shortcuts."""

from __future__ import annotations

from collections.abc import Callable

import nbformat
import pytest
from playwright.sync_api import Page, expect

import harness
from archs import XSS_NAME
from conftest import PRELUDE

pytestmark = pytest.mark.browser

FV = ".cnnw-feature-visualizer"
TIMEOUT = 60_000

# A small random CNN whose forward sleeps: each optimisation step takes at least `delay` seconds, so the
# run lasts long enough to watch (defined in the notebook: the test depends on nothing but the package).
NET = """\
import time
from torch import nn
torch.manual_seed(0)

class Slow(nn.Module):
    def __init__(self, delay):
        super().__init__()
        self.delay = delay
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    def forward(self, x):
        time.sleep(self.delay)
        return self.features(x)
"""

VIEW = """\
from cnn_widgets.widgets.feature_visualizer import FeatureVisualizer
viz = FeatureVisualizer(Slow({delay}).eval(), "features.3", 2, steps={steps}, size=32)
display(W.VBox([viz] + [mirror(viz, name, name) for name in ("busy", "channel", "mode", "step")]))
"""

GRID = f"""\
import archs
from cnn_widgets.widgets.feature_visualizer import FeatureVisualizer
net = archs.XSSNamed().eval()
viz = FeatureVisualizer(net, "blocks." + {XSS_NAME!r}, 0, steps=4, size=16, mode="grid")
display(W.VBox([viz] + [mirror(viz, name, name) for name in ("busy", "channel", "mode", "done")]))
"""


def dataset(page: Page) -> dict[str, str]:
    return page.locator(FV).first.evaluate("(el) => ({...el.dataset})")


def pixels(page: Page, canvas: str) -> list[int]:
    return page.locator(canvas).first.evaluate(
        "(c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
    )


def wait_data(page: Page, key: str, predicate: str, timeout_ms: float = TIMEOUT) -> None:
    """Wait until ``predicate`` (JS over ``v``, the root's data-<key> as a string) holds."""
    page.wait_for_function(
        f"([sel, key]) => {{ const v = document.querySelector(sel)?.dataset[key]; return v !== undefined && ({predicate}); }}",
        arg=[FV, key], timeout=timeout_ms, polling=100,
    )


def test_the_image_paints_and_changes_while_the_kernel_optimises(page: Page, open_voila: Callable[..., Page]) -> None:
    open_voila([NET, VIEW.format(delay=0.05, steps=160)], ready=f"{FV}[data-paint-count]")
    canvas = f"{FV} canvas.cnnw-feature"
    expect(page.locator(f"{FV} .cnnw-busy")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator(f"{FV} progress.cnnw-progress")).to_be_visible()
    first_step = int(dataset(page)["imageStep"])
    wait_data(page, "imageStep", f"Number(v) > {first_step}")
    wait_data(page, "imageStep", f"Number(v) >= {first_step + 20}")
    middle = dataset(page)
    assert middle["imageFinal"] == "false"
    before = pixels(page, canvas)
    expect(page.locator(f"{FV} .cnnw-step-text")).to_contain_text("/ 160")
    wait_data(page, "imageFinal", "v === 'true'", timeout_ms=120_000)
    after = pixels(page, canvas)
    d = dataset(page)
    assert int(d["paintCount"]) >= 3 and d["imageStep"] == "160", d
    assert sum(abs(a - b) for a, b in zip(after, before)) > 1000, "the image changed as the optimisation went on"
    stats = harness.canvas_stats(page, canvas)
    assert stats["width"] == 32 and stats["opaque"] == 1.0 and stats["colors"] > 50 and stats["variance"] > 20, stats
    expect(page.locator(".probe-busy")).to_have_text("False")
    expect(page.locator(f"{FV} .cnnw-busy")).to_be_hidden()
    expect(page.locator(f"{FV} .cnnw-feature-caption")).to_have_text("features.3 · channel 2 · step 160 / 160")


def test_cancel_and_run_from_the_keyboard(page: Page, open_voila: Callable[..., Page]) -> None:
    open_voila([NET, VIEW.format(delay=0.05, steps=5000)], ready=f"{FV}[data-paint-count]")
    cancel = page.locator(f"{FV} button.cnnw-cancel")
    run = page.locator(f"{FV} button.cnnw-run")
    expect(cancel).to_be_visible(timeout=TIMEOUT)
    expect(page.locator(".probe-busy")).to_have_text("True")
    cancel.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".probe-busy")).to_have_text("False", timeout=10_000)
    expect(page.locator(f"{FV} .cnnw-notice")).to_contain_text("cancelled at step")
    expect(run).to_be_focused()  # the focus went from cancel to run, so the keyboard is not lost
    step = int(page.inner_text(".probe-step"))
    assert 0 < step < 5000
    page.keyboard.press("Enter")  # run: computes again
    expect(page.locator(".probe-busy")).to_have_text("True", timeout=10_000)
    expect(cancel).to_be_focused()
    page.keyboard.press(" ")
    expect(page.locator(".probe-busy")).to_have_text("False", timeout=10_000)
    # the steps field from the keyboard: a short run finishes
    steps = page.locator(f"{FV} input.cnnw-steps")
    steps.fill("3")
    steps.press("Enter")
    wait_data(page, "imageFinal", "v === 'true'")
    expect(page.locator(f"{FV} .cnnw-feature-caption")).to_contain_text("step 3 / 3")
    assert page.evaluate("() => document.activeElement?.closest('[data-lm-suppress-shortcuts]') !== null")


def test_grid_tiles_paint_and_the_keyboard_opens_one(page: Page, open_voila: Callable[..., Page]) -> None:
    open_voila([GRID], ready=f"{FV}[data-tiles-done]")
    grid = f"{FV} canvas.cnnw-grid"
    wait_data(page, "tilesDone", "v === '8'")
    expect(page.locator(".probe-done")).to_have_text("8")
    stats = harness.canvas_stats(page, grid)
    assert stats["width"] > 0 and stats["colors"] > 100 and stats["variance"] > 20, stats
    slots = harness.slot_centre(page, grid, 0)["slots"]
    assert slots == 8
    # the layer name is text, never markup
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert page.locator("img[onerror]").count() == 0
    expect(page.locator(f"{FV} select.cnnw-layer")).to_have_value(f"blocks.{XSS_NAME}")

    page.locator(grid).focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    wait_data(page, "cursor", "v === '2'")
    page.keyboard.press("Enter")
    expect(page.locator(".probe-mode")).to_have_text("single")
    expect(page.locator(".probe-channel")).to_have_text("2")
    expect(page.locator(f"{FV} canvas.cnnw-feature")).to_be_visible()
    expect(page.locator(f"{FV} .cnnw-feature-caption")).to_contain_text(f"blocks.{XSS_NAME} · channel 2 · step 4 / 4")
    expect(page.locator(f"{FV} .cnnw-busy")).to_be_hidden()  # from the cache: nothing to compute

    # back to the grid from the keyboard: every tile at once, and a click opens a tile
    mode = page.locator(f"{FV} select.cnnw-mode")
    mode.focus()
    page.keyboard.press("ArrowDown")  # "single image" → "channel grid"
    expect(page.locator(".probe-mode")).to_have_text("grid")
    wait_data(page, "tilesDone", "v === '8'", timeout_ms=10_000)
    centre = harness.slot_centre(page, grid, 5)
    page.mouse.click(centre["x"], centre["y"])
    expect(page.locator(".probe-channel")).to_have_text("5")
    expect(page.locator(".probe-mode")).to_have_text("single")
    expect(page.locator(f"{FV} .cnnw-feature-caption")).to_contain_text("channel 5")


def test_keys_in_jupyterlab_stay_with_the_widget(page: Page, open_lab: Callable[..., Page], tmp_path) -> None:
    """In JupyterLab the arrow keys and Enter on the widget's controls change the widget, never the
    notebook (active cell, mode, collapsed headings stay as they were)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Feature visualisation"),
        nbformat.v4.new_code_cell(PRELUDE),
        nbformat.v4.new_code_cell(NET),
        nbformat.v4.new_code_cell(VIEW.format(delay=0.0, steps=4)),
        nbformat.v4.new_markdown_cell("## Below"),
        nbformat.v4.new_code_cell("below = 1"),
    ]
    path = tmp_path / "featurevis_keys.ipynb"
    nbformat.write(nb, path)
    open_lab(path)
    cells = harness.lab_run_all(page)
    assert not any(c["errors"] for c in cells), cells
    page.locator(f"{FV}[data-paint-count]").wait_for(timeout=TIMEOUT)

    def press(control: str, key: str) -> None:
        target = page.locator(f"{FV} {control}")
        target.scroll_into_view_if_needed()
        target.focus()
        before = page.evaluate(harness.NOTEBOOK_STATE_JS)
        page.keyboard.press(key)
        page.wait_for_timeout(150)
        assert page.evaluate(harness.NOTEBOOK_STATE_JS) == before, f"{control} {key}: the notebook reacted"

    press("input.cnnw-channel-slider", "ArrowRight")
    expect(page.locator(".probe-channel")).to_have_text("3", timeout=TIMEOUT)
    press("input.cnnw-channel-slider", "ArrowLeft")
    expect(page.locator(".probe-channel")).to_have_text("2", timeout=TIMEOUT)
    press("input.cnnw-channel", "ArrowUp")
    press("input.cnnw-channel", "Enter")
    expect(page.locator(".probe-channel")).to_have_text("3", timeout=TIMEOUT)
    press("select.cnnw-mode", "ArrowDown")
    expect(page.locator(".probe-mode")).to_have_text("grid", timeout=TIMEOUT)
    wait_data(page, "tilesDone", "v === '8'")
    press("canvas.cnnw-grid", "ArrowDown")
    press("canvas.cnnw-grid", "ArrowLeft")
    cursor = int(dataset(page)["cursor"])
    assert cursor == 3 + int(page.locator(f"{FV} canvas.cnnw-grid").get_attribute("data-cols")) - 1
    press("canvas.cnnw-grid", "Enter")
    expect(page.locator(".probe-mode")).to_have_text("single", timeout=TIMEOUT)
    expect(page.locator(".probe-channel")).to_have_text(str(cursor), timeout=TIMEOUT)
