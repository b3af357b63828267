"""AttributionView and compare() in a real page (Voila + Chromium): the overlay paints, display controls
re-composite without the kernel, a prediction bar click reaches Python and repaints, cancel frees the
kernel and the model for the next request, and compare's rows paint as their methods finish, with a
progress bar, cancel and compute buttons."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

import harness
from archs import XSS_NAME
from cnn_widgets import METHODS

pytestmark = pytest.mark.browser

AV = ".cnnw-attribution-view"
CMP = ".cnnw-compare"

# A small CNN with a global-average-pool head (every method applies), defined in the notebook so the
# tests depend on nothing but the package.
NET = """\
from torch import nn
torch.manual_seed(0)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))
"""

VIEW = """\
model = Net().eval()
image = torch.rand(3, {size}, {size}, generator=torch.Generator().manual_seed(1))
labels = [{xss!r}, "square", "triangle", "cross", "star"]
view = cnn_widgets.AttributionView(model, image, labels=labels)
payload = wire.nbytes(cnn_widgets.wire.encode(torch.zeros(1, {size}, {size}), "float16"))
display(W.VBox([view, mirror(view, "target", "target"), mirror(view, "opacity", "opacity"), mirror(view, "options", "options"),
                probe("second", view.predictions[1]["index"]), probe("payload", payload)]))
"""

SLOW_VIEW = """\
import time

class Slow(torch.nn.Module):
    \"\"\"Net that takes 0.2 s per forward pass, standing in for a big model.\"\"\"
    def __init__(self):
        super().__init__()
        self.net = Net()
    def forward(self, x):
        time.sleep(0.2)
        return self.net(x)

view = cnn_widgets.AttributionView(Slow().eval(), torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2)))
display(W.VBox([view, mirror(view, "busy", "busy"), mirror(view, "method", "method")]))
"""


def data(page: Page, root: str) -> dict[str, str]:
    return page.locator(root).first.evaluate("(el) => ({...el.dataset})")


def pixels(page: Page, canvas: str) -> list[int]:
    """Every RGBA byte of a canvas (small canvases only)."""
    return page.locator(canvas).first.evaluate(
        "(c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
    )


def assert_painted(page: Page, canvas: str, index: int = 0) -> None:
    stats = harness.canvas_stats(page, canvas, index)
    assert stats["width"] > 0 and stats["opaque"] == 1.0 and stats["colors"] > 50 and stats["variance"] > 50, stats


def wait_count(page: Page, root: str, key: str, above: int, timeout_ms: float = 15_000) -> None:
    """Wait until ``root``'s ``data-<key>`` counter exceeds ``above``."""
    page.wait_for_function(
        "([sel, key, above]) => Number(document.querySelector(sel).dataset[key] ?? 0) > above",
        arg=[root, key, above], timeout=timeout_ms, polling="raf",
    )


def test_overlay_paints_and_opacity_needs_no_kernel_round_trip(page: Page, open_voila: Callable[..., Page]) -> None:
    counter = harness.WireCounter(page)
    open_voila([NET, VIEW.format(size=128, xss=XSS_NAME)], ready=f"{AV}[data-paint-count]")
    canvas = f"{AV} canvas.cnnw-overlay"
    assert_painted(page, canvas)
    expect(page.locator(f"{AV} .cnnw-result-caption")).to_contain_text("grad_cam")
    payload = int(page.inner_text(".probe-payload"))
    assert payload == 4 + 128 * 128 * 2 and counter.bytes > payload, "the float16 map arrived once at load"
    before = pixels(page, canvas)
    d = data(page, AV)
    paints, results = int(d["paintCount"]), int(d["resultCount"])

    counter.reset()
    page.locator(f"{AV} input.cnnw-opacity").focus()
    for _ in range(4):
        page.keyboard.press("ArrowLeft")
    wait_count(page, AV, "paintCount", paints + 3)
    moved = counter.bytes  # read before the 250 ms save: the page has received nothing at all
    after = pixels(page, canvas)
    d = data(page, AV)
    assert int(d["resultCount"]) == results, "no new map came from the kernel"
    assert int(d["paintCount"]) == paints + 4, "one local repaint per key press"
    assert after != before and sum(abs(a - b) for a, b in zip(after, before)) > 10_000
    assert moved == 0, (moved, counter.frames)
    # the kernel hears the final value once; what comes back is a few status frames, never the map
    expect(page.locator(".probe-opacity")).to_have_text("0.3")
    page.wait_for_timeout(300)
    assert counter.bytes < payload / 10, (counter.bytes, counter.frames, payload)
    assert int(data(page, AV)["resultCount"]) == results
    # a user-supplied label is text, never markup
    page.wait_for_timeout(100)
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert page.locator("img[onerror]").count() == 0


def test_clicking_a_prediction_bar_sets_target_and_repaints(page: Page, open_voila: Callable[..., Page]) -> None:
    open_voila([NET, VIEW.format(size=64, xss="circle")], ready=f"{AV}[data-paint-count]")
    expect(page.locator(".probe-target")).to_have_text("None")
    second = page.inner_text(".probe-second")
    bars = page.locator(".cnnw-predictions rect.bar")
    expect(bars).to_have_count(5)
    before = pixels(page, f"{AV} canvas.cnnw-overlay")
    results = int(data(page, AV)["resultCount"])
    bars.nth(1).click()
    expect(page.locator(".probe-target")).to_have_text(second)
    wait_count(page, AV, "resultCount", results)
    expect(page.locator(f"{AV} .cnnw-result-caption")).to_contain_text(f"(class {second}, p =")
    assert pixels(page, f"{AV} canvas.cnnw-overlay") != before
    assert_painted(page, f"{AV} canvas.cnnw-overlay")


def test_option_controls_follow_the_schema_and_errors_show_as_text(
    page: Page, open_voila: Callable[..., Page]
) -> None:
    open_voila([NET, VIEW.format(size=64, xss="circle")], ready=f"{AV}[data-paint-count]")
    page.select_option(f"{AV} select.cnnw-method", "integrated_gradients")
    steps = page.locator(f'{AV} input.cnnw-option[data-option="n_steps"]')
    expect(steps).to_have_value("50")
    schema = {o.name: o for o in METHODS["integrated_gradients"].options}["n_steps"]
    assert (steps.get_attribute("min"), steps.get_attribute("max")) == (f"{schema.min:g}", f"{schema.max:g}")
    expect(page.locator(f'{AV} select.cnnw-option[data-option="method"]')).to_have_value("gausslegendre")
    expect(page.locator(f"{AV} .cnnw-result-caption")).to_contain_text("integrated_gradients", timeout=15_000)
    results = int(data(page, AV)["resultCount"])
    before = pixels(page, f"{AV} canvas.cnnw-overlay")
    steps.fill("0")
    steps.press("Tab")
    expect(page.locator(f"{AV} .cnnw-error")).to_contain_text("n_steps=0")
    after = pixels(page, f"{AV} canvas.cnnw-overlay")
    assert after != before and int(data(page, AV)["resultCount"]) == results  # the plain image, no heat
    steps.fill("4")
    steps.press("Tab")
    expect(page.locator(".probe-options")).to_have_text("{'n_steps': 4}")
    wait_count(page, AV, "resultCount", results)
    expect(page.locator(f"{AV} .cnnw-error")).to_have_text("")
    assert_painted(page, f"{AV} canvas.cnnw-overlay")


def test_cancel_frees_the_kernel_and_the_view_computes_again(page: Page, open_voila: Callable[..., Page]) -> None:
    open_voila([NET, SLOW_VIEW], ready=f"{AV}[data-paint-count]")
    expect(page.locator(".probe-busy")).to_have_text("False")
    page.select_option(f"{AV} select.cnnw-method", "occlusion")
    expect(page.locator(f"{AV} .cnnw-busy")).to_be_visible()
    page.wait_for_function(
        "(sel) => document.querySelector(sel).value > 0", arg=f"{AV} progress.cnnw-progress", timeout=15_000
    )
    expect(page.locator(".probe-busy")).to_have_text("True")
    results = int(data(page, AV)["resultCount"])
    clicked = time.monotonic()
    page.click(f"{AV} button.cnnw-cancel")
    expect(page.locator(".probe-busy")).to_have_text("False", timeout=3_000)
    assert time.monotonic() - clicked < 1.5
    expect(page.locator(f"{AV} .cnnw-busy")).to_be_hidden()
    expect(page.locator(f"{AV} .cnnw-notice")).to_contain_text("cancelled")
    # the worker has let go of the model: a new method computes at once (occlusion would take ~6 s)
    requested = time.monotonic()
    page.select_option(f"{AV} select.cnnw-method", "saliency")
    wait_count(page, AV, "resultCount", results, timeout_ms=10_000)
    assert time.monotonic() - requested < 4.0
    expect(page.locator(f"{AV} .cnnw-result-caption")).to_contain_text("saliency")
    expect(page.locator(".probe-method")).to_have_text("saliency")
    assert page.locator(f"{AV} .cnnw-error").inner_text() == ""
    assert_painted(page, f"{AV} canvas.cnnw-overlay")


def test_compare_grid_paints_every_panel_and_switches_scale_in_the_browser(
    page: Page, open_voila: Callable[..., Page]
) -> None:
    counter = harness.WireCounter(page)
    open_voila([
        NET,
        "g = torch.Generator().manual_seed(3)\n"
        "imgs = [torch.rand(3, 48, 48, generator=g) for _ in range(3)]\n"
        'grid = cnn_widgets.compare(Net().eval(), imgs, ["grad_cam", "saliency"], scale="shared")\n'
        'display(W.VBox([grid, mirror(grid, "scale", "scale")]))',
    ], ready=f"{CMP}[data-paint-count]")
    wait_count(page, CMP, "rowCount", 1)
    panels = page.locator(f"{CMP} canvas.cnnw-overlay")
    expect(panels).to_have_count(6)
    for i in range(6):
        assert_painted(page, f"{CMP} canvas.cnnw-overlay", i)
    expect(page.locator(f"{CMP} .cnnw-row-label").first).to_contain_text("grad_cam")
    expect(page.locator(f"{CMP} .cnnw-col-label")).to_have_count(3)
    first = pixels(page, f"{CMP} canvas.cnnw-overlay >> nth=4")
    paints = int(data(page, CMP)["paintCount"])
    counter.reset()
    page.select_option(f"{CMP} select.cnnw-scale", "per-panel")
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.paintCount) > n", arg=[CMP, paints]
    )
    assert counter.bytes == 0
    assert pixels(page, f"{CMP} canvas.cnnw-overlay >> nth=4") != first
    expect(page.locator(".probe-scale")).to_have_text("per-panel")


SLOW_COMPARE = """\
import time

class SlowNet(Net):
    \"\"\"Net that takes 0.05 s per forward pass: occlusion below needs ~450 of them.\"\"\"
    def forward(self, x):
        time.sleep(0.05)
        return super().forward(x)

g = torch.Generator().manual_seed(4)
imgs = [torch.rand(3, 32, 32, generator=g) for _ in range(2)]
slow = {"occlusion": {"sliding_window_shapes": 3, "strides": 1, "perturbations_per_eval": 2}}
grid = cnn_widgets.compare(SlowNet().eval(), imgs, ["saliency", "occlusion", "grad_cam"], options=slow)
display(W.VBox([grid, mirror(grid, "status", "status"), mirror(grid, "busy", "busy")]))
"""


def test_compare_rows_paint_as_they_finish_with_progress_and_cancel(
    page: Page, open_voila: Callable[..., Page]
) -> None:
    open_voila([NET, SLOW_COMPARE], ready=f"{CMP}[data-row-count]")
    # saliency's row is painted while occlusion computes and grad_cam waits
    first = page.locator(f'{CMP} canvas.cnnw-overlay[data-row="0"]')
    expect(first).to_have_count(2)
    for i in range(2):
        assert_painted(page, f'{CMP} canvas.cnnw-overlay[data-row="0"]', i)
    running = page.locator(f'{CMP} .cnnw-row-status[data-row="1"]')
    expect(running).to_have_attribute("data-status", "running")
    expect(running).to_contain_text("computing…")
    expect(page.locator(f'{CMP} .cnnw-row-status[data-row="2"]')).to_have_text("queued")
    expect(page.locator(f"{CMP} .cnnw-busy")).to_be_visible()
    page.wait_for_function(
        "(sel) => document.querySelector(sel).value > 1 / 3", arg=f"{CMP} progress.cnnw-progress", timeout=15_000
    )
    expect(page.locator(f"{CMP} .cnnw-busy .cnnw-value")).to_contain_text("1 of 3 methods")
    assert page.locator(f"{CMP} canvas.cnnw-overlay").count() == 2, "only finished rows have panels"

    page.click(f"{CMP} button.cnnw-cancel")
    expect(page.locator(".probe-busy")).to_have_text("False")
    expect(page.locator(".probe-status")).to_have_text("['done', 'cancelled', 'cancelled']")
    expect(page.locator(f"{CMP} .cnnw-busy")).to_be_hidden()
    for r in (1, 2):
        expect(page.locator(f'{CMP} .cnnw-row-status[data-row="{r}"]')).to_have_text("cancelled")
    # the kernel is free: "compute" starts the cancelled rows again, and cancel stops them again
    page.click(f"{CMP} button.cnnw-run")
    expect(page.locator(".probe-busy")).to_have_text("True")
    expect(page.locator(f'{CMP} .cnnw-row-status[data-row="1"]')).to_contain_text("computing…")
    expect(page.locator(f"{CMP} button.cnnw-run")).to_be_hidden()
    page.click(f"{CMP} button.cnnw-cancel")
    expect(page.locator(".probe-status")).to_have_text("['done', 'cancelled', 'cancelled']")
    assert_painted(page, f'{CMP} canvas.cnnw-overlay[data-row="0"]', 1)


NOTES_COMPARE = """\
from torch import nn

class GeluNet(nn.Module):
    \"\"\"No nn.ReLU: guided backprop's row carries a note, as text.\"\"\"
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.GELU()
        self.fc = nn.Linear(8, 5)
    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))

model = GeluNet().eval()
grid = cnn_widgets.compare(model, [torch.rand(3, 32, 32)], ["guided_backprop", "saliency"])
grid.wait()
display(W.VBox([grid, probe("note", grid.notes[0][0])]))
"""


def test_compare_shows_each_rows_notes_under_its_label(page: Page, open_voila: Callable[..., Page]) -> None:
    open_voila([NOTES_COMPARE], ready=f"{CMP}[data-row-count]")
    wait_count(page, CMP, "rowCount", 1)
    heads = page.locator(f"{CMP} .cnnw-row-head")
    expect(heads).to_have_count(2)
    note = page.inner_text(".probe-note")
    expect(heads.nth(0).locator(".cnnw-notes .cnnw-note")).to_have_text([note])
    expect(heads.nth(1).locator(".cnnw-notes .cnnw-note")).to_have_count(0)
