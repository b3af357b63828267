"""The widgets in a real page (Voila + Chromium): they paint, the slider needs no kernel data, clicks
reach Python, user strings stay text, and lazy mode still paints."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

import harness
from archs import XSS_NAME

pytestmark = pytest.mark.browser

AB = ".cnnw-activation-browser"
FG = ".cnnw-filter-grid"

RESNET_BROWSER = """\
from cnn_widgets.zoo import resnet18_like
g = torch.Generator().manual_seed(0)
image = torch.rand(3, {size}, {size}, generator=g)
ab = cnn_widgets.ActivationBrowser(resnet18_like(), image{extra})
display(W.VBox([ab, mirror(ab, "layer", "layer"), mirror(ab, "channel", "channel"), probe("mode", ab._mode)]))
"""


def root_data(page: Page, root: str) -> dict[str, str]:
    return page.locator(root).first.evaluate("(el) => ({...el.dataset})")


def assert_painted(page: Page, canvas: str) -> None:
    stats = harness.canvas_stats(page, canvas)
    assert stats["width"] > 0 and stats["height"] > 0, stats
    assert stats["opaque"] > 0.5 and stats["colors"] > 8 and stats["variance"] > 50, stats


def wait_for_paint(page: Page, root: str, after: int, layer: str, timeout_ms: float = 10_000) -> None:
    """Wait until ``root`` has painted more than ``after`` times and shows ``layer``."""
    page.wait_for_function(
        """([sel, after, layer]) => {
             const d = document.querySelector(sel).dataset;
             return Number(d.paintCount) > after && d.paintedLayer === layer;
           }""",
        arg=[root, after, layer], timeout=timeout_ms, polling="raf",
    )


def layers_of(page: Page) -> list[str]:
    """The ActivationBrowser's layer list, from the probe the notebook printed."""
    return page.inner_text(".probe-layers").split("|")


def test_activation_browser_paints_non_blank_canvases(open_voila: Callable[..., Page]) -> None:
    page = open_voila([
        RESNET_BROWSER.format(size=64, extra=""),
        'display(probe("layers", "|".join(ab.layers)))',
    ])
    page.locator(".probe-layers").wait_for()
    first = layers_of(page)[0]
    assert root_data(page, AB)["paintedLayer"] == first == "conv1"
    expect(page.locator(f"{AB} .cnnw-layer-name")).to_have_text(first)
    assert_painted(page, f"{AB} canvas.cnnw-grid")
    assert_painted(page, f"{AB} canvas.cnnw-detail")
    grid = page.locator(f"{AB} canvas.cnnw-grid")
    assert grid.evaluate("(c) => c.dataset.order.split(',').length") == 64


def test_filter_grid_paints_non_blank_canvases_and_follows_the_layer_select(
    open_voila: Callable[..., Page],
) -> None:
    page = open_voila([
        "from cnn_widgets.zoo import resnet18_like\n"
        "fg = cnn_widgets.FilterGrid(resnet18_like())\n"
        'display(W.VBox([fg, mirror(fg, "layer", "layer")]))',
    ])
    assert root_data(page, FG)["paintedLayer"] == "conv1"
    assert_painted(page, f"{FG} canvas.cnnw-grid")
    count = int(root_data(page, FG)["paintCount"])
    page.select_option(f"{FG} select.cnnw-layer-select", "layer3.0.conv1")
    wait_for_paint(page, FG, count, "layer3.0.conv1")
    expect(page.locator(".probe-layer")).to_have_text("layer3.0.conv1")
    assert_painted(page, f"{FG} canvas.cnnw-grid")
    assert page.locator(f"{FG} canvas.cnnw-grid").evaluate("(c) => c.dataset.order.split(',').length") == 256


def test_keyboard_slider_move_repaints_without_fetching_the_layer(
    page: Page, open_voila: Callable[..., Page]
) -> None:
    counter = harness.WireCounter(page)
    open_voila([
        RESNET_BROWSER.format(size=112, extra=""),
        "acts = cnn_widgets.capture_activations(ab._model, image)\n"
        'sizes = [f"{n}={wire.nbytes(wire.encode(acts[n][0]))}" for n in ab.layers[1:4]]\n'
        'display(probe("layers", "|".join(ab.layers)), probe("sizes", "|".join(sizes)))',
    ])
    page.locator(".probe-sizes").wait_for()
    expect(page.locator(".probe-mode")).to_have_text("eager")
    layers = layers_of(page)
    sizes = dict(item.split("=") for item in page.inner_text(".probe-sizes").split("|"))
    assert counter.bytes > sum(int(v) for v in sizes.values()), "the layers arrive over the websocket at load"
    page.locator(f"{AB} input.cnnw-layer-slider").focus()
    for step, name in enumerate(layers[1:4], start=1):
        count = int(root_data(page, AB)["paintCount"])
        counter.reset()
        page.keyboard.press("ArrowRight")
        wait_for_paint(page, AB, count, name)
        expect(page.locator(f"{AB} .cnnw-layer-name")).to_have_text(name)
        expect(page.locator(".probe-layer")).to_have_text(name)  # the kernel heard of the move …
        page.wait_for_timeout(300)
        encoded = int(sizes[name])
        assert encoded >= 50_000, (name, encoded)
        # … but what came back is a few small JSON messages, not the layer's numbers
        assert counter.bytes < encoded / 20, (step, name, counter.bytes, encoded, counter.frames)
        assert_painted(page, f"{AB} canvas.cnnw-grid")
    assert int(page.locator(f"{AB} input.cnnw-layer-slider").input_value()) == 3


def test_clicking_a_channel_tile_sets_the_channel_trait(open_voila: Callable[..., Page]) -> None:
    page = open_voila([RESNET_BROWSER.format(size=64, extra=', sort="mean"')])
    page.locator(".probe-channel").wait_for()
    grid = f"{AB} canvas.cnnw-grid"
    order = page.locator(grid).evaluate("(c) => c.dataset.order.split(',').map(Number)")
    assert sorted(order) == list(range(64)) and order != list(range(64)), "sorted by mean, not by index"
    for slot in (5, 0, 63):
        target = harness.slot_centre(page, grid, slot)
        assert target["channel"] == order[slot]
        page.mouse.click(target["x"], target["y"])
        expect(page.locator(".probe-channel")).to_have_text(str(order[slot]))
        expect(page.locator(f"{AB} .cnnw-detail-caption")).to_contain_text(f"channel {order[slot]}")
        assert_painted(page, f"{AB} canvas.cnnw-detail")


def test_clicking_a_filter_tile_sets_selected(open_voila: Callable[..., Page]) -> None:
    page = open_voila([
        "from cnn_widgets.zoo import resnet18_like\n"
        'fg = cnn_widgets.FilterGrid(resnet18_like(), "layer1.0.conv2")\n'
        'display(W.VBox([fg, mirror(fg, "selected", "selected")]))',
    ])
    expect(page.locator(".probe-selected")).to_have_text("-1")
    grid = f"{FG} canvas.cnnw-grid"
    for slot in (3, 17):
        target = harness.slot_centre(page, grid, slot)
        assert target["slots"] == 64
        page.mouse.click(target["x"], target["y"])
        expect(page.locator(".probe-selected")).to_have_text(str(target["channel"]))
        # the enlarged view of the selected filter (named cnnw-filter-detail in this widget)
        assert_painted(page, f"{FG} canvas.cnnw-detail, {FG} canvas.cnnw-filter-detail")


def test_layer_name_with_html_is_shown_as_text_and_never_runs(open_voila: Callable[..., Page]) -> None:
    evil = f"blocks.{XSS_NAME}"
    page = open_voila([
        "import archs\n"
        "model, x = archs.build('xss_named')\n"
        f"ab = cnn_widgets.ActivationBrowser(model, x, layer={evil!r})\n"
        f"fg = cnn_widgets.FilterGrid(model, {evil!r})\n"
        "display(W.VBox([ab, fg]))",
    ], ready=f"{AB}[data-paint-count]")
    page.wait_for_selector(f"{FG}[data-paint-count]")
    expect(page.locator(f"{AB} .cnnw-layer-name")).to_have_text(evil)
    assert root_data(page, AB)["paintedLayer"] == evil
    assert root_data(page, FG)["paintedLayer"] == evil
    slider = page.locator(f"{AB} input.cnnw-layer-slider")
    slider.focus()
    for key in ("ArrowRight", "ArrowLeft", "ArrowLeft", "ArrowRight"):
        page.keyboard.press(key)
    expect(page.locator(f"{AB} .cnnw-layer-name")).to_have_text(evil)
    for root in (AB, FG):
        assert XSS_NAME in page.locator(root).text_content()
    assert page.locator(f"{FG} select.cnnw-layer-select option:checked").text_content() == evil
    page.wait_for_timeout(300)  # an injected <img src=x> would have fired onerror by now
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert page.evaluate("() => [...document.images].filter((i) => i.getAttribute('src') === 'x').length") == 0
    assert page.locator("img[onerror]").count() == 0


def test_lazy_mode_still_paints_after_slider_moves(open_voila: Callable[..., Page]) -> None:
    page = open_voila([
        RESNET_BROWSER.format(size=64, extra=", budget_mb=0.05"),
        'display(probe("layers", "|".join(ab.layers)))',
    ])
    page.locator(".probe-layers").wait_for()
    expect(page.locator(".probe-mode")).to_have_text("lazy")
    layers = layers_of(page)
    assert_painted(page, f"{AB} canvas.cnnw-grid")
    page.locator(f"{AB} input.cnnw-layer-slider").focus()
    for name in layers[1:4]:  # one step at a time
        count = int(root_data(page, AB)["paintCount"])
        page.keyboard.press("ArrowRight")
        wait_for_paint(page, AB, count, name)
        assert_painted(page, f"{AB} canvas.cnnw-grid")
    for _ in range(6):  # a burst, faster than the kernel answers
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([sel, layer]) => document.querySelector(sel).dataset.paintedLayer === layer",
        arg=[AB, layers[9]], timeout=15_000,
    )
    expect(page.locator(".probe-layer")).to_have_text(layers[9])
    expect(page.locator(f"{AB} .cnnw-layer-name")).to_have_text(layers[9])
    assert_painted(page, f"{AB} canvas.cnnw-grid")
