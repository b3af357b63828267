"""The newer views from the keyboard in Notebook 7 and JupyterLab, all in ONE notebook: the Explorer's
thumbnail strip, TopActivations, ChannelImportance, ClassHeatmaps, FeatureVisualizer, TrainingMonitor's
snapshot slider and Metrics (selects, randomisation slider), and every view's "save PNG" button.

For each control the test focuses it, presses the keys it supports and checks (a) the widget's state
(the Python trait through a probe label, or the DOM where the state lives only in the page), (b) that the
notebook did not react (active cell, mode, cell count, visible cells, collapsed headings: a notebook
shortcut that fired changes one of them) and (c) that the focused control shows a focus ring
(``:focus-visible`` with a non-empty outline or box-shadow), as a projector audience needs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

import harness
from conftest import PRELUDE
from test_keyboard import Keys, check_range, check_select

pytestmark = pytest.mark.browser

STRIP, TA, CI, CH = ".cnnw-image-strip", ".cnnw-top-activations", ".cnnw-channel-importance", ".cnnw-class-heatmaps"
FV, TM, MX = ".cnnw-feature-visualizer", ".cnnw-training-monitor", ".cnnw-metrics"
VIEWS = (STRIP, TA, CI, CH, FV, TM, MX)
TIMEOUT = 60_000

SETUP = """\
import torch.nn.functional as F
from cnn_widgets import zoo
from cnn_widgets.widgets.explorer import Explorer
from cnn_widgets.widgets.top_activations import TopActivations
from cnn_widgets.widgets.channel_importance_view import ChannelImportance
from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps
from cnn_widgets.widgets.feature_visualizer import FeatureVisualizer
from cnn_widgets.widgets.training_monitor import TrainingMonitor
from cnn_widgets.widgets.metrics_view import Metrics
torch.set_num_threads(1)
model = zoo.load_shapesnet()
images, labels, masks = zoo.shapes_dataset(24, seed=5)
"""

CELLS: list[tuple[str, str]] = [
    ("markdown", "# New views\nArrowLeft in command mode would collapse this heading."),
    ("code", PRELUDE),
    ("code", SETUP),
    ("code", """\
ex = Explorer(model, list(zip(images[:4], labels[:4])), labels=list(zoo.CLASSES))
display(W.VBox([ex, mirror(ex, "image_index", "ex-image_index")]))"""),
    ("code", """\
top = TopActivations(model, (images, labels), "features.conv4", k=3, batch_size=12)
imp = ChannelImportance(model, (images, labels), "features.conv4", metric="loss", repeats=1, batch_size=12)
heat = ClassHeatmaps(model, (images, labels), batch_size=12)
for view in (top, imp, heat):
    view.wait()
display(W.VBox([top] + [mirror(top, t, "ta-" + t) for t in ("layer", "channel", "sort")]))
display(W.VBox([imp] + [mirror(imp, t, "ci-" + t) for t in ("channel", "sort", "metric")]))
display(W.VBox([heat] + [mirror(heat, t, "ch-" + t) for t in ("selected_class", "selected_column")]))"""),
    ("code", """\
viz = FeatureVisualizer(model, "features.conv1", 2, steps=8, size=32)
display(W.VBox([viz] + [mirror(viz, t, "fv-" + t) for t in ("channel", "mode", "busy", "steps")]))"""),
    ("code", """\
train_model = zoo.shapesnet(seed=0)
opt = torch.optim.SGD(train_model.parameters(), lr=0.5, momentum=0.9)
monitor = TrainingMonitor(train_model, probe=images[:2])
for _ in range(2):
    train_model.train()
    for i in range(0, 24, 12):
        loss = F.cross_entropy(train_model(images[i:i + 12]), labels[i:i + 12])
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.step(loss)
    monitor.epoch_end()
display(monitor)"""),
    ("code", """\
mx = Metrics(model, images[:2], ["grad_cam", "saliency"], list(zoo.CLASSES), masks=masks[:2], sample=1,
             randomize=["fc", "features.conv4"], steps=4)
mx.wait()
display(W.VBox([mx] + [mirror(mx, t, "mx-" + t) for t in ("method", "image", "step", "opacity")]))"""),
    ("markdown", "## Below the widgets"),
    ("code", "below = 1"),
]

# NOTEBOOK_STATE_JS plus the number of cells (a shortcut such as "a", "b" or "dd" changes it).
STATE_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  return {...(%s)(), cells: nb.widgets.length};
}""" % harness.NOTEBOOK_STATE_JS

# The focused element's focus ring: whether it matches :focus-visible and what it draws.
RING_JS = """(el) => {
  const s = getComputedStyle(el);
  return {focused: el === document.activeElement, visible: el.matches(':focus-visible'),
          outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0,
          shadow: s.boxShadow !== 'none' && s.boxShadow !== ''};
}"""


class NotebookKeys(Keys):
    """test_keyboard's Keys, with the cell count in the notebook state and a focus-ring check."""

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(STATE_JS)

    def ring(self, control: Locator, what: str) -> None:
        """The focused ``control`` shows a focus ring (call after a key, so :focus-visible applies)."""
        ring = control.evaluate(RING_JS)
        assert ring["focused"] and ring["visible"], f"{what}: not focused by keyboard: {ring}"
        assert ring["outline"] or ring["shadow"], f"{what}: no visible focus ring: {ring}"

    def inert(self, control: Locator, keys: tuple[str, ...], what: str) -> None:
        """Keys a control does nothing with (a button's arrows): focus stays, the notebook is unmoved."""
        self.focus(control)
        for key in keys:
            self.press(control, key, what=what)
        self.ring(control, what)


def write_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
                for kind, src in CELLS]
    nbformat.write(nb, path)
    return path


def save_png(page: Page, keys: NotebookKeys, root: str, key: str) -> None:
    """The view's save PNG button: arrows, Home, End do nothing; ``key`` (Enter or Space) clicks it, which
    downloads a PNG."""
    button = page.locator(f"{root} .cnnw-save-png")
    status = page.locator(f"{root} .cnnw-save-status")
    keys.inert(button, ("ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Home", "End"), f"{root} save PNG")
    before = keys.state()
    try:
        with page.expect_download(timeout=TIMEOUT) as info:
            page.keyboard.press(key)
    except PlaywrightTimeoutError:
        said = status.text_content()
        raise AssertionError(f"{root} save PNG {key!r}: no download; the view says {said!r}") from None
    assert info.value.suggested_filename.endswith(".png"), info.value.suggested_filename
    expect(status).to_contain_text("saved", timeout=TIMEOUT)
    assert keys.state() == before, f"{root} save PNG {key!r}: the notebook reacted"


def run_checks(page: Page) -> None:
    cells = harness.lab_run_all(page, timeout_s=600)
    assert not [c for c in cells if c["errors"]], cells
    page.wait_for_function("(sels) => sels.every((s) => document.querySelector(s)?.dataset.paintCount)",
                           arg=list(VIEWS), timeout=TIMEOUT)
    page.wait_for_selector(f"{TM}[data-snapshots='3']", timeout=TIMEOUT)
    page.evaluate("() => document.activeElement?.blur()")
    keys = NotebookKeys(page)
    start = keys.state()
    assert start["mode"] == "command" and start["collapsed"] == 0 and start["cells"] == len(CELLS), start

    # -- Explorer's thumbnail strip: roving focus, arrows, Home, End ---------------------------------
    strip = page.locator(STRIP)
    thumb = strip.locator('.cnnw-thumb[data-index="0"]')
    keys.focus(thumb)
    for key, index in [("ArrowRight", 1), ("ArrowRight", 2), ("ArrowLeft", 1), ("End", 3), ("Home", 0),
                       ("ArrowDown", 1), ("ArrowUp", 0)]:
        focused = strip.locator(f'.cnnw-thumb[data-index="{index}"]')
        keys.press(thumb, key, probe=("ex-image_index", str(index)), what="strip", focus_to=focused)
        expect(focused).to_have_attribute("aria-current", "true")
        keys.ring(focused, f"strip {key}")

    # -- TopActivations: channel slider, heat opacity, index box, sort and layer menus ---------------
    top = page.locator(TA)
    slider = top.locator("input.cnnw-channel-slider")
    keys.focus(slider)
    for key, channel in [("ArrowRight", 1), ("ArrowLeft", 0), ("ArrowUp", 1), ("ArrowDown", 0), ("End", 63),
                         ("Home", 0)]:
        keys.press(slider, key, value=str(channel), probe=("ta-channel", str(channel)), what="ta channel")
    keys.ring(slider, "ta channel")
    heat_slider = top.locator("input.cnnw-opacity")  # a display setting of the page only: its DOM value
    keys.focus(heat_slider)
    keys.press(heat_slider, "End", value=float(heat_slider.get_attribute("max") or "1"), what="ta heat opacity")
    keys.press(heat_slider, "Home", value=float(heat_slider.get_attribute("min") or "0"), what="ta heat opacity")
    keys.ring(heat_slider, "ta heat opacity")
    box = top.locator("input.cnnw-channel-input")
    keys.focus(box)
    box.fill("7")
    keys.press(box, "Enter", probe=("ta-channel", "7"), what="ta index")
    keys.ring(box, "ta index")
    check_select(keys, top.locator("select.cnnw-sort"), "ta-sort", what="ta sort")
    keys.ring(top.locator("select.cnnw-sort"), "ta sort")
    layer_sel = top.locator("select.cnnw-layer-select")  # a new layer is scanned: one step there and back
    layers = layer_sel.evaluate("(s) => [...s.options].map((o) => o.value)")
    i = layers.index("features.conv4")
    keys.focus(layer_sel)
    keys.press(layer_sel, "ArrowUp", value=layers[i - 1], probe=("ta-layer", layers[i - 1]), what="ta layer")
    keys.press(layer_sel, "ArrowDown", value=layers[i], probe=("ta-layer", layers[i]), what="ta layer")
    keys.ring(layer_sel, "ta layer")

    # -- ChannelImportance: channel, sort and metric menus ------------------------------------------
    imp = page.locator(CI)
    check_select(keys, imp.locator("select.cnnw-channel-select"), "ci-channel", what="ci channel")
    keys.ring(imp.locator("select.cnnw-channel-select"), "ci channel")
    check_select(keys, imp.locator("select.cnnw-sort"), "ci-sort", what="ci sort")
    metric = imp.locator("select.cnnw-metric")  # each change recomputes: one step there and back
    keys.focus(metric)
    keys.press(metric, "ArrowUp", value="accuracy", probe=("ci-metric", "accuracy"), what="ci metric")
    keys.press(metric, "ArrowDown", value="loss", probe=("ci-metric", "loss"), what="ci metric")
    keys.ring(metric, "ci metric")

    # -- ClassHeatmaps: a cell by Enter, another by Space -------------------------------------------
    heat = page.locator(CH)
    enabled = heat.locator("button.cnnw-cell:not([disabled])")
    assert enabled.count() >= 2, "ClassHeatmaps has cells to choose"
    for key, cell in [("Enter", enabled.nth(0)), (" ", enabled.nth(1))]:
        keys.focus(cell)
        for arrow in ("ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"):
            keys.press(cell, arrow, what="ch cell")
        keys.ring(cell, "ch cell")
        keys.press(cell, key, probe=("ch-selected_class", cell.get_attribute("data-class") or ""), what="ch cell")
        keys.probe("ch-selected_column", cell.get_attribute("data-column") or "")

    # -- FeatureVisualizer: channel slider and box, mode menu, the grid, run -------------------------
    fv = page.locator(FV)
    fslider = fv.locator("input.cnnw-channel-slider")
    keys.focus(fslider)
    channels = int(fslider.get_attribute("max") or 0)
    for key, channel in [("ArrowRight", 3), ("ArrowLeft", 2), ("End", channels), ("Home", 0)]:
        keys.press(fslider, key, value=str(channel), probe=("fv-channel", str(channel)), what="fv channel")
    keys.ring(fslider, "fv channel")
    number = fv.locator("input.cnnw-channel")
    keys.focus(number)
    keys.press(number, "ArrowUp", value="1", what="fv channel box")
    keys.press(number, "Enter", probe=("fv-channel", "1"), what="fv channel box")
    keys.ring(number, "fv channel box")
    steps = fv.locator("input.cnnw-steps")
    keys.focus(steps)
    steps.fill("9")  # typed, then Enter commits it (a notebook cell keeps Enter from firing "change")
    keys.press(steps, "Enter", value="9", probe=("fv-steps", "9"), what="fv steps typed")
    mode = fv.locator("select.cnnw-mode")
    keys.focus(mode)
    keys.press(mode, "ArrowDown", value="grid", probe=("fv-mode", "grid"), what="fv mode")
    keys.ring(mode, "fv mode")
    grid = fv.locator("canvas.cnnw-grid")
    expect(grid).to_be_visible(timeout=TIMEOUT)
    keys.focus(grid)
    keys.press(grid, "ArrowRight", what="fv grid")  # the cursor starts on the channel (1)
    keys.press(grid, "ArrowRight", what="fv grid")
    expect(fv).to_have_attribute("data-cursor", "3", timeout=TIMEOUT)
    keys.press(grid, "ArrowLeft", what="fv grid")
    expect(fv).to_have_attribute("data-cursor", "2", timeout=TIMEOUT)
    keys.ring(grid, "fv grid")
    before = keys.state()
    page.keyboard.press("Enter")  # opens the tile: the grid goes away, so the focus may move
    keys.probe("fv-mode", "single")
    keys.probe("fv-channel", "2")
    assert keys.state() == before, "fv grid Enter: the notebook reacted"
    run = fv.locator("button.cnnw-run")
    expect(run).to_be_visible(timeout=TIMEOUT)
    keys.inert(run, ("ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"), "fv run")

    # -- TrainingMonitor: the snapshot slider (the page's own state), layer and probe menus ----------
    tm = page.locator(TM)
    snap = tm.locator("input.cnnw-snapshot-slider")
    keys.focus(snap)
    for key, epoch in [("ArrowLeft", 1), ("ArrowLeft", 0), ("ArrowUp", 1), ("ArrowDown", 0), ("End", 2),
                       ("Home", 0), ("ArrowRight", 1)]:
        keys.press(snap, key, value=str(epoch), what="tm snapshot")
        expect(tm).to_have_attribute("data-shown-epoch", str(epoch), timeout=TIMEOUT)
    keys.ring(snap, "tm snapshot")
    layer = tm.locator("select.cnnw-layer-select")
    keys.focus(layer)
    keys.press(layer, "ArrowDown", what="tm layer")
    expect(tm).to_have_attribute("data-painted-layer", "features.conv2", timeout=TIMEOUT)
    keys.press(layer, "Home", what="tm layer")
    expect(tm).to_have_attribute("data-painted-layer", "features.conv1", timeout=TIMEOUT)
    keys.ring(layer, "tm layer")
    probe_sel = tm.locator("select.cnnw-probe-select")
    keys.focus(probe_sel)
    keys.press(probe_sel, "ArrowDown", value=probe_sel.evaluate("(s) => s.options[1].value"), what="tm probe image")
    keys.ring(probe_sel, "tm probe image")

    # -- Metrics: method and image menus, randomisation slider, opacity ------------------------------
    mx = page.locator(MX)
    check_select(keys, mx.locator("select.cnnw-method"), "mx-method", what="mx method")
    keys.ring(mx.locator("select.cnnw-method"), "mx method")
    check_select(keys, mx.locator("select.cnnw-image"), "mx-image", what="mx image")
    step = mx.locator("input.cnnw-step")
    expect(step).to_have_attribute("max", "2", timeout=TIMEOUT)
    check_range(keys, step, "mx-step", 1, 0, 2, "mx step")
    keys.ring(step, "mx step")
    check_range(keys, mx.locator("input.cnnw-opacity"), "mx-opacity", 0.05, 0.0, 1.0, "mx opacity")

    # -- every view's save PNG button (Enter for half of them, Space for the rest); ChannelImportance's
    # chart is bqplot, so its button downloads the picture the kernel draws (the PNG to_png writes)
    for i, root in enumerate(VIEWS):
        save_png(page, keys, root, "Enter" if i % 2 == 0 else " ")

    assert keys.pressed > 100, keys.pressed
    final = keys.state()  # focusing a control makes its cell the active one; the rest stays
    assert {**final, "active": 0} == {**start, "active": 0}, (start, final)


def test_new_views_from_the_keyboard_in_notebook7(open_notebook7: Callable[[Path], Page], tmp_path: Path) -> None:
    run_checks(open_notebook7(write_notebook(tmp_path / "keys_new_nb7.ipynb")))


def test_new_views_from_the_keyboard_in_jupyterlab(open_lab: Callable[[Path], Page], tmp_path: Path) -> None:
    run_checks(open_lab(write_notebook(tmp_path / "keys_new_lab.ipynb")))
