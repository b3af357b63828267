"""TrainingMonitor in a real page (Voila + Chromium): the bqplot chart grows when a later cell and then a
button click (code running after the page loaded) report steps; the snapshot slider, driven from the
keyboard, changes the filters and activations painted, sending nothing to the kernel; layer names stay
text. In JupyterLab the slider's keys leave the notebook as it was and captions are at least 12 px."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Page, WebSocket, expect

import harness
from archs import XSS_NAME
from conftest import PRELUDE

pytestmark = pytest.mark.browser

TM = ".cnnw-training-monitor"
TIMEOUT = 30_000

SETUP = """\
import torch.nn.functional as F
from cnn_widgets import zoo
from cnn_widgets.widgets.training_monitor import TrainingMonitor

images, labels, _ = zoo.shapes_dataset(64, seed=3)
model = zoo.shapesnet(seed=0)
opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
monitor = TrainingMonitor(model, probe=images[:2])

def epoch():
    model.train()
    for i in range(0, 64, 16):
        loss = F.cross_entropy(model(images[i:i + 16]), labels[i:i + 16])
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.step(loss)
    monitor.epoch_end(accuracy=0.5)

more = W.Button(description="one more epoch")
more.add_class("more")
more.on_click(lambda _: epoch())
display(W.VBox([monitor, more]))
"""

LATER = """\
for _ in range(2):
    epoch()
"""

XSS = """\
import archs
from cnn_widgets.widgets.training_monitor import TrainingMonitor
xss_model, x = archs.build("xss_named")
display(TrainingMonitor(xss_model, probe=x))
"""

# Text of the monitor's own (not bqplot's) with a computed font size below 12 px.
SMALL_TEXT_JS = """() => [...document.querySelectorAll('.cnnw-training-monitor *')]
  .filter((el) => el.tagName !== 'STYLE' && !el.closest('[hidden]')
    && [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())
    && parseFloat(getComputedStyle(el).fontSize) < 12)
  .map((el) => el.className + ': ' + el.textContent.slice(0, 40))"""

PIXELS_JS = """(c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i++) h = (h * 31 + d[i]) >>> 0;
  return `${c.width}x${c.height}:${h}`;
}"""


def pixels(page: Page, canvas: str) -> str:
    return page.locator(f"{TM} canvas.{canvas}").evaluate(PIXELS_JS)


def loss_points(page: Page) -> int:
    """Points of the first line in the chart (the loss per step)."""
    d = page.locator(".cnnw-training-chart .curve path.line").first.get_attribute("d") or ""
    return d.count("L") + 1 if d.startswith("M") else 0


class SentComms:
    """Counts the widget messages the page sends to the kernel."""

    def __init__(self, page: Page) -> None:
        self.count = 0
        page.on("websocket", self._attach)

    def _attach(self, ws: WebSocket) -> None:
        ws.on("framesent", self._sent)

    def _sent(self, payload: str | bytes) -> None:
        if b"comm_msg" in (payload if isinstance(payload, bytes) else payload.encode()):
            self.count += 1


def shown_epoch_is(page: Page, epoch: int) -> None:
    expect(page.locator(TM)).to_have_attribute("data-shown-epoch", str(epoch), timeout=TIMEOUT)


def test_chart_grows_with_steps_reported_after_display(open_voila: Callable[..., Page]) -> None:
    page = open_voila([SETUP, LATER], ready=f"{TM}[data-snapshots='3']")
    page.wait_for_function("() => document.querySelectorAll('.cnnw-training-chart .curve path.line').length >= 2",
                           timeout=TIMEOUT)
    page.wait_for_function(
        "() => (document.querySelector('.cnnw-training-chart .curve path.line').getAttribute('d') || '')"
        ".split('L').length === 8", timeout=TIMEOUT,
    )
    assert loss_points(page) == 8  # two epochs of four steps, from the later cell
    shown_epoch_is(page, 2)  # the slider follows the newest snapshot
    page.locator(".more button, button.more").first.click()
    expect(page.locator(TM)).to_have_attribute("data-snapshots", "4", timeout=TIMEOUT)
    page.wait_for_function(
        "() => (document.querySelector('.cnnw-training-chart .curve path.line').getAttribute('d') || '')"
        ".split('L').length === 12", timeout=TIMEOUT,
    )
    assert loss_points(page) == 12
    shown_epoch_is(page, 3)
    expect(page.locator(f"{TM} .cnnw-snapshot-caption")).to_contain_text("epoch 3 · step 12 · loss ")


def test_snapshot_slider_by_keyboard_repaints_filters_without_the_kernel(
    page: Page, open_voila: Callable[..., Page]
) -> None:
    sent = SentComms(page)  # before the page opens its websocket
    open_voila([SETUP, LATER], ready=f"{TM}[data-snapshots='3']")
    shown_epoch_is(page, 2)
    trained = pixels(page, "cnnw-tm-filters"), pixels(page, "cnnw-tm-activations")
    slider = page.locator(f"{TM} input.cnnw-snapshot-slider")
    slider.focus()
    page.wait_for_timeout(500)  # the page's start-up messages are done
    before = sent.count
    assert before > 0, "the counter saw none of the page's messages (the view's fetch at least)"
    page.keyboard.press("Home")
    shown_epoch_is(page, 0)
    initial = pixels(page, "cnnw-tm-filters"), pixels(page, "cnnw-tm-activations")
    assert initial[0] != trained[0], "the filters at epoch 0 and epoch 2 look the same"
    assert initial[1] != trained[1], "the activations at epoch 0 and epoch 2 look the same"
    page.keyboard.press("ArrowRight")
    shown_epoch_is(page, 1)
    middle = pixels(page, "cnnw-tm-filters")
    assert middle not in (initial[0], trained[0])
    page.keyboard.press("End")
    shown_epoch_is(page, 2)
    assert pixels(page, "cnnw-tm-filters") == trained[0]
    expect(slider).to_be_focused()
    assert (slider.get_attribute("aria-valuetext") or "").startswith("epoch 2 · step 8 · loss ")
    # the layer select, by keyboard too: the next conv layer's filters
    select = page.locator(f"{TM} select.cnnw-layer-select")
    select.focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator(TM)).to_have_attribute("data-painted-layer", "features.conv2", timeout=TIMEOUT)
    assert pixels(page, "cnnw-tm-filters") != trained[0]
    page.wait_for_timeout(300)
    assert sent.count == before, "moving the slider or the layer sent messages to the kernel"


def test_layer_names_are_text(open_voila: Callable[..., Page]) -> None:
    page = open_voila([XSS], ready=f"{TM}[data-paint-count]")
    options = page.locator(f"{TM} select.cnnw-layer-select option")
    assert options.all_text_contents() == ["blocks.stem", f"blocks.{XSS_NAME}"]
    assert page.locator(f"{TM} img").count() == 0
    assert page.evaluate("() => window.pwned") is None


def test_slider_keys_in_jupyterlab_leave_the_notebook_alone(open_lab: Callable[[Path], Page], tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Training\nArrowLeft in command mode would collapse this heading."),
        nbformat.v4.new_code_cell(PRELUDE),
        nbformat.v4.new_code_cell(SETUP),
        nbformat.v4.new_code_cell(LATER),
    ]
    path = tmp_path / "training_keys.ipynb"
    nbformat.write(nb, path)
    page = open_lab(path)
    cells = harness.lab_run_all(page, timeout_s=300)
    assert not [c for c in cells if c["errors"]], cells
    page.wait_for_selector(f"{TM}[data-snapshots='3'][data-shown-epoch='2']", timeout=60_000)
    assert page.evaluate(SMALL_TEXT_JS) == [], "text below 12 px is unreadable on a projector"
    slider = page.locator(f"{TM} input.cnnw-snapshot-slider")
    slider.scroll_into_view_if_needed()
    slider.focus()
    state = page.evaluate(harness.NOTEBOOK_STATE_JS)
    for key, epoch in [("ArrowLeft", 1), ("ArrowLeft", 0), ("ArrowUp", 1), ("ArrowDown", 0), ("End", 2),
                       ("Home", 0), ("ArrowRight", 1)]:
        page.keyboard.press(key)
        shown_epoch_is(page, epoch)
        assert page.evaluate(harness.NOTEBOOK_STATE_JS) == state, f"{key} reached the notebook"
        expect(slider).to_be_focused()
