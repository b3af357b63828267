"""Every control of every widget works from the keyboard in JupyterLab and Notebook 7, and the notebook
does not react to those keys.

In command mode the notebook binds the arrow keys (ArrowUp/ArrowDown move the active cell, ArrowLeft
goes to or collapses the heading above), Enter (edit mode) and more; a focused control inside an output
still passes its keys to those shortcuts unless it sits under Lumino's ``data-lm-suppress-shortcuts``.
For each control the test focuses it, presses its keys and checks (a) the control's value and the Python
trait (read back through a probe label) and (b) that the notebook kept its active cell, its mode, its
headings expanded and every cell visible, and that the control kept the focus.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Locator, Page, expect

import harness
from conftest import PRELUDE

pytestmark = pytest.mark.browser

AV = ".kb-av .cnnw-attribution-view"
AB = ".cnnw-activation-browser"
FG = ".cnnw-filter-grid"
CMP = ".cnnw-compare"
SLOW = ".kb-slow .cnnw-attribution-view"
TIMEOUT = 20_000

NET = """\
from torch import nn
torch.manual_seed(0)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))

class Slow(nn.Module):
    \"\"\"Net at 0.5 s per forward pass: with the occlusion options below a computation takes minutes,
    so it is still running when the test reaches its cancel button.\"\"\"
    def __init__(self):
        super().__init__()
        self.net = Net()
    def forward(self, x):
        import time
        time.sleep(0.5)
        return self.net(x)

model = Net().eval()
images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
labels = ["circle", "square", "triangle", "cross", "star"]
"""

CELLS: list[tuple[str, str]] = [
    ("markdown", "# Keyboard\nEvery widget below, driven from the keyboard."),
    ("code", PRELUDE),
    ("code", NET),
    ("code", """\
av = cnn_widgets.AttributionView(model, images[0], labels=labels)
av.add_class("kb-av")
display(W.VBox([av] + [mirror(av, t, "av-" + t) for t in
                       ("method", "target", "layer", "options", "sign", "colormap", "opacity",
                        "clip_percentile")]))"""),
    ("code", """\
ab = cnn_widgets.ActivationBrowser(model, images[0])
display(W.VBox([ab, probe("ab-layers", "|".join(ab.layers))] + [mirror(ab, t, "ab-" + t) for t in
                       ("layer", "channel", "scale", "sort", "colormap", "opacity")]))"""),
    ("code", """\
fg = cnn_widgets.FilterGrid(model)
display(W.VBox([fg] + [mirror(fg, t, "fg-" + t) for t in
                       ("layer", "input_channel", "normalize", "colormap", "selected")]))"""),
    ("code", """\
cmp = cnn_widgets.compare(model, images, ["grad_cam", "saliency"], labels=labels)
display(W.VBox([cmp] + [mirror(cmp, t, "cmp-" + t) for t in
                        ("scale", "sign", "colormap", "opacity", "clip_percentile")]))"""),
    ("code", """\
slow = cnn_widgets.AttributionView(Slow().eval(), images[0], method="occlusion", labels=labels,
                                  options={"sliding_window_shapes": 3, "strides": 1, "perturbations_per_eval": 1})
slow.add_class("kb-slow")
display(W.VBox([slow, mirror(slow, "busy", "slow-busy")]))"""),
    ("markdown", "## Below the widgets"),
    ("code", "below = 1"),
    ("code", "below += 1"),
    ("code", "below"),
]


# Elements with text of their own inside the widgets, whose computed font size is below 12 px.
SMALL_TEXT_JS = """() => {
  const small = [];
  for (const root of document.querySelectorAll('.cnnw-root')) {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'STYLE' || el.closest('[hidden]')) continue;
      const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (own && parseFloat(getComputedStyle(el).fontSize) < 12) small.push(el.className + ': ' + el.textContent.slice(0, 40));
    }
  }
  return small;
}"""


def write_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        for kind, src in CELLS
    ]
    nbformat.write(nb, path)
    return path


class Keys:
    """Presses keys on focused controls and checks the control, the trait and the notebook."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.pressed = 0

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(harness.NOTEBOOK_STATE_JS)

    def focus(self, control: Locator) -> dict[str, Any]:
        control.scroll_into_view_if_needed()
        control.focus()
        assert control.evaluate("(el) => el === document.activeElement"), "the control takes the focus"
        return self.state()

    def probe(self, name: str, expected: str | float) -> None:
        """Wait until probe ``name`` (the Python trait) shows ``expected`` (numbers compared as numbers)."""
        label = self.page.locator(f".probe-{name}")
        if isinstance(expected, str):
            expect(label).to_have_text(expected, timeout=TIMEOUT)
        else:
            self.wait_number(label, "(el) => el.textContent", expected, name)

    def wait_number(self, node: Locator, read: str, expected: float, what: str) -> None:
        """Wait until ``read(node)`` parses to ``expected``; fail with what it shows."""
        handle = node.element_handle()
        try:
            self.page.wait_for_function(
                f"([el, v]) => Math.abs(parseFloat(({read})(el)) - v) < 1e-9", arg=[handle, expected],
                timeout=TIMEOUT, polling="raf",
            )
        except Exception:
            raise AssertionError(f"{what}: expected {expected}, shows {handle.evaluate(read)!r}") from None

    def press(self, control: Locator, key: str, *, value: str | float | None = None,
              probe: tuple[str, str | float] | None = None, what: str = "", focus_to: Locator | None = None) -> None:
        """Press ``key`` on the focused ``control``; then the control shows ``value`` (if given), the
        probe shows the trait (if given), the control (or ``focus_to``) has the focus and the notebook is
        as it was."""
        before = self.state()
        self.page.keyboard.press(key)
        self.pressed += 1
        label = f"{what} {key}"
        if isinstance(value, str):
            expect(control, label).to_have_value(value, timeout=TIMEOUT)
        elif value is not None:
            self.wait_number(control, "(el) => el.value", value, label)
        if probe is not None:
            self.probe(*probe)
        if focus_to is None:
            assert control.evaluate("(el) => el === document.activeElement"), f"{label}: the control lost the focus"
        else:
            focus_to.evaluate(
                """(el) => new Promise((resolve, reject) => {
                     const t0 = performance.now();
                     const check = () => el === document.activeElement ? resolve()
                       : performance.now() - t0 > %d ? reject(new Error('the focus is on ' + document.activeElement.className))
                       : requestAnimationFrame(check);
                     check();
                   })""" % TIMEOUT
            )
        after = self.state()
        assert after == before, f"{label}: the notebook reacted: {before} → {after}"


def options_of(select: Locator) -> list[str]:
    return select.evaluate("(s) => [...s.options].map((o) => o.value)")


def check_select(keys: Keys, select: Locator, probe: str, shown: Callable[[str], str] = str, what: str = "") -> None:
    """Arrow keys, Home and End on a <select>: next/previous option, first/last, each reaching Python."""
    values = options_of(select)
    assert len(values) >= 2, (what, values)
    keys.focus(select)
    i = values.index(select.input_value())
    start = i
    # Down/Right go to the next option, Up/Left to the previous one (at the ends they stay)
    for key, step in [("ArrowDown", 1), ("ArrowUp", -1), ("ArrowRight", 1), ("ArrowLeft", -1)]:
        if i + step < 0 or i + step >= len(values):
            step = -step
            key = {"ArrowDown": "ArrowUp", "ArrowUp": "ArrowDown", "ArrowRight": "ArrowLeft", "ArrowLeft": "ArrowRight"}[key]
        i += step
        keys.press(select, key, value=values[i], probe=(probe, shown(values[i])), what=what)
    keys.press(select, "End", value=values[-1], probe=(probe, shown(values[-1])), what=what)
    keys.press(select, "Home", value=values[0], probe=(probe, shown(values[0])), what=what)
    if start != 0:  # back to where it was, so the rest of the widget is as the test expects
        for _ in range(start):
            i = values.index(select.input_value())
            keys.press(select, "ArrowDown", value=values[i + 1], what=what)
        keys.probe(probe, shown(values[start]))


def check_range(keys: Keys, slider: Locator, probe: str, step: float, lo: float, hi: float, what: str = "") -> None:
    """Arrow keys move a range slider by one step (Right/Up up, Left/Down down), Home and End to its ends."""
    keys.focus(slider)
    v = float(slider.input_value())
    if v + step > hi:
        order = [("ArrowLeft", -step), ("ArrowRight", step), ("ArrowDown", -step), ("ArrowUp", step)]
    else:
        order = [("ArrowRight", step), ("ArrowLeft", -step), ("ArrowUp", step), ("ArrowDown", -step)]
    for key, d in order:
        v = round(v + d, 6)
        keys.press(slider, key, value=v, probe=(probe, v), what=what)
    keys.press(slider, "End", value=hi, probe=(probe, hi), what=what)
    keys.press(slider, "Home", value=lo, probe=(probe, lo), what=what)


def check_grid(keys: Keys, grid: Locator, probe: str, what: str = "") -> None:
    """A tile grid canvas: focusable; arrows move the selection by a tile or a row, Home/End jump,
    Enter clears the selection, Space brings it back. ``probe`` shows the selected tile's channel."""
    assert grid.get_attribute("tabindex") == "0", f"{what}: the grid must be focusable"
    cols = int(grid.evaluate("(c) => Number(c.dataset.cols)"))
    order = [int(x) for x in grid.evaluate("(c) => c.dataset.order").split(",")]
    count = len(order)
    assert count > cols >= 2, (what, count, cols)
    keys.focus(grid)
    for key, slot in [("ArrowRight", 0), ("ArrowRight", 1), ("ArrowDown", 1 + cols), ("ArrowUp", 1),
                      ("ArrowLeft", 0), ("End", count - 1), ("Home", 0)]:
        keys.press(grid, key, probe=(probe, str(order[slot])), what=what)
    keys.press(grid, "Enter", probe=(probe, "-1"), what=what)
    keys.press(grid, " ", probe=(probe, str(order[0])), what=what)


def run_keyboard_checks(page: Page) -> None:
    cells = harness.lab_run_all(page, timeout_s=300)
    assert not [c for c in cells if c["errors"]], cells
    for sel in (AV, AB, FG, CMP, SLOW):
        page.locator(sel).first.wait_for(timeout=60_000)
    page.wait_for_function(
        """(sels) => sels.every((s) => document.querySelector(s)?.dataset.paintCount)""",
        arg=[AV, AB, FG, CMP], timeout=60_000,
    )
    state = page.evaluate(harness.NOTEBOOK_STATE_JS)
    assert state["mode"] == "command" and state["collapsed"] == 0 and state["visible"] == len(CELLS), state
    assert page.evaluate(SMALL_TEXT_JS) == [], "text below 12 px is unreadable on a projector"
    keys = Keys(page)

    # -- AttributionView: display controls, layer, method options, method, a number input ----------
    av = page.locator(AV)
    check_range(keys, av.locator("input.cnnw-opacity"), "av-opacity", 0.05, 0.0, 1.0, "av opacity")
    check_range(keys, av.locator("input.cnnw-clip"), "av-clip_percentile", 0.5, 50.0, 100.0, "av clip")
    check_select(keys, av.locator("select.cnnw-sign"), "av-sign", what="av sign")
    check_select(keys, av.locator("select.cnnw-colormap"), "av-colormap", what="av colormap")
    check_select(keys, av.locator("select.cnnw-layer"), "av-layer", lambda v: v or "None", what="av layer")
    check_select(keys, av.locator("select.cnnw-target"), "av-target", lambda v: v or "None", what="av class")

    box = av.locator('input.cnnw-option[data-option="relu_attributions"]')
    keys.focus(box)
    for key in ("ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Enter"):
        keys.press(box, key, what="av relu_attributions")  # nothing to do for a checkbox
    assert box.is_checked()
    keys.press(box, " ", probe=("av-options", "{'relu_attributions': False}"), what="av relu_attributions")
    assert not box.is_checked()
    keys.press(box, " ", probe=("av-options", "{'relu_attributions': True}"), what="av relu_attributions")

    mode = av.locator('select.cnnw-option[data-option="interpolate_mode"]')
    keys.focus(mode)
    keys.press(mode, "ArrowDown", value="nearest",
               probe=("av-options", "{'relu_attributions': True, 'interpolate_mode': 'nearest'}"), what="av interpolate")
    keys.press(mode, "ArrowUp", value="bilinear",
               probe=("av-options", "{'relu_attributions': True, 'interpolate_mode': 'bilinear'}"), what="av interpolate")

    method = av.locator("select.cnnw-method")
    methods = options_of(method)
    keys.focus(method)
    g = methods.index("grad_cam")
    for key, name in [("ArrowDown", methods[g + 1]), ("ArrowUp", "grad_cam"), ("ArrowRight", methods[g + 1]),
                      ("ArrowLeft", "grad_cam"), ("End", methods[-1]), ("Home", methods[0])]:
        keys.press(method, key, value=name, probe=("av-method", name), what="av method")
    target = methods.index("gradient_shap")
    for name in methods[1:target + 1]:
        keys.press(method, "ArrowDown", value=name, probe=("av-method", name), what="av method")
    number = av.locator('input.cnnw-option[data-option="n_samples"]')
    keys.focus(number)
    keys.press(number, "ArrowUp", value="21", probe=("av-options", "{'n_samples': 21}"), what="av n_samples")
    keys.press(number, "ArrowDown", value="20", probe=("av-options", "{'n_samples': 20}"), what="av n_samples")
    for key in ("ArrowLeft", "ArrowRight", "Home", "End"):  # the caret moves; the number stays
        keys.press(number, key, value="20", what="av n_samples")
    keys.probe("av-options", "{'n_samples': 20}")
    number.fill("35")  # typed, then Enter commits it (a notebook cell keeps Enter from firing "change")
    keys.press(number, "Enter", value="35", probe=("av-options", "{'n_samples': 35}"), what="av n_samples typed")

    # -- ActivationBrowser: layer slider, selects, overlay opacity, the channel grid -----------------
    ab = page.locator(AB)
    layers = page.inner_text(".probe-ab-layers").split("|")
    slider = ab.locator("input.cnnw-layer-slider")
    keys.focus(slider)
    for key, i in [("ArrowRight", 1), ("ArrowLeft", 0), ("ArrowUp", 1), ("ArrowDown", 0),
                   ("End", len(layers) - 1), ("Home", 0)]:
        keys.press(slider, key, value=str(i), probe=("ab-layer", layers[i]), what="ab layer")
    check_select(keys, ab.locator("select.cnnw-scale"), "ab-scale", what="ab scale")
    check_select(keys, ab.locator("select.cnnw-sort"), "ab-sort", what="ab sort")
    check_select(keys, ab.locator("select.cnnw-colormap"), "ab-colormap", what="ab colormap")
    check_range(keys, ab.locator("input.cnnw-opacity"), "ab-opacity", 0.05, 0.0, 1.0, "ab opacity")
    check_grid(keys, ab.locator("canvas.cnnw-grid"), "ab-channel", "ab channels")

    # -- FilterGrid: selects and the filter grid ----------------------------------------------------
    fg = page.locator(FG)
    check_select(keys, fg.locator("select.cnnw-input-channel"), "fg-input_channel", what="fg input channel")
    check_select(keys, fg.locator("select.cnnw-normalize"), "fg-normalize", what="fg normalize")
    check_select(keys, fg.locator("select.cnnw-colormap"), "fg-colormap", what="fg colormap")
    check_grid(keys, fg.locator("canvas.cnnw-grid"), "fg-selected", "fg filters")
    check_select(keys, fg.locator("select.cnnw-layer-select"), "fg-layer", what="fg layer")

    # -- compare: scale and the display controls ----------------------------------------------------
    cmp = page.locator(CMP)
    check_select(keys, cmp.locator("select.cnnw-scale"), "cmp-scale", what="cmp scale")
    check_select(keys, cmp.locator("select.cnnw-sign"), "cmp-sign", what="cmp sign")
    check_select(keys, cmp.locator("select.cnnw-colormap"), "cmp-colormap", what="cmp colormap")
    check_range(keys, cmp.locator("input.cnnw-opacity"), "cmp-opacity", 0.05, 0.0, 1.0, "cmp opacity")
    check_range(keys, cmp.locator("input.cnnw-clip"), "cmp-clip_percentile", 0.5, 50.0, 100.0, "cmp clip")

    # -- buttons: cancel a running computation, compute again, cancel again --------------------------
    slow = page.locator(SLOW)
    keys.probe("slow-busy", "True")
    cancel = slow.locator("button.cnnw-cancel")
    keys.focus(cancel)
    for key in ("ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"):
        keys.press(cancel, key, what="slow cancel")
    run = slow.locator("button.cnnw-run")
    # a button that hides itself hands the focus to the one that replaces it
    keys.press(cancel, "Enter", probe=("slow-busy", "False"), what="slow cancel", focus_to=run)
    for key in ("ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"):
        keys.press(run, key, what="slow compute")
    keys.press(run, " ", probe=("slow-busy", "True"), what="slow compute", focus_to=cancel)
    keys.press(cancel, " ", probe=("slow-busy", "False"), what="slow cancel", focus_to=run)

    assert keys.pressed > 150, keys.pressed
    final = page.evaluate(harness.NOTEBOOK_STATE_JS)
    assert final["mode"] == "command" and final["collapsed"] == 0 and final["visible"] == len(CELLS), final


def test_every_control_works_from_the_keyboard_in_jupyterlab(
    open_lab: Callable[[Path], Page], tmp_path: Path
) -> None:
    page = open_lab(write_notebook(tmp_path / "keyboard_lab.ipynb"))
    run_keyboard_checks(page)


def test_every_control_works_from_the_keyboard_in_notebook7(
    open_notebook7: Callable[[Path], Page], tmp_path: Path
) -> None:
    page = open_notebook7(write_notebook(tmp_path / "keyboard_nb7.ipynb"))
    run_keyboard_checks(page)
