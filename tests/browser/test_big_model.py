"""Big models in a real page (Voila + Chromium). A lazy ActivationBrowser under a held arrow key keeps at
most one fetch in flight plus the latest layer wanted, so layers passed while the kernel is busy are never
fetched, and the layer where the key stops paints. A total too big to encode before returning paints its
first layer from a fetch, then turns eager when the kernel has encoded the rest."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, WebSocket, expect

import harness

pytestmark = pytest.mark.browser

AB = ".cnnw-activation-browser"

# Lazy (a 0.05 MB budget against ~1.5 MB of activations), and a button that keeps the kernel busy for a
# moment, as a slow layer or another cell would: every key press in that time finds the kernel occupied.
LAZY_BROWSER = """\
import time
from cnn_widgets.zoo import resnet18_like
g = torch.Generator().manual_seed(0)
image = torch.rand(3, 112, 112, generator=g)
ab = cnn_widgets.ActivationBrowser(resnet18_like(), image, budget_mb=0.05)
busy = W.Button(description="busy")
busy.add_class("busy")
busy.on_click(lambda _: time.sleep(1.5))
display(W.VBox([ab, busy, mirror(ab, "layer", "layer"), probe("mode", ab._mode),
                probe("layers", "|".join(ab.layers))]))
"""

# Staged: the ~1.9 MB of layers count as big (as a ResNet-50's 31 MB at 224² do by default), and the
# background encoder waits for the page's first fetch however long Voila takes to show the page.
STAGED_BROWSER = """\
from cnn_widgets.widgets import activation_browser
from cnn_widgets.zoo import resnet18_like
activation_browser.SYNC_MB = 0.5
activation_browser.ENCODE_DELAY = 600.0
image = torch.rand(3, 112, 112, generator=torch.Generator().manual_seed(0))
ab = cnn_widgets.ActivationBrowser(resnet18_like(), image)
display(W.VBox([ab, mirror(ab, "_mode", "mode"), mirror(ab, "layer", "layer"),
                probe("layers", "|".join(ab.layers))]))
"""


class FetchLog:
    """The layer traffic of a page over its websockets, from the moment it is attached: ``events`` in
    order, ``("fetch", [names])`` for each fetch message the page sends and ``("layer", [name])`` for each
    layer reply it receives, and the bytes received. Playwright delivers frames while the test waits on
    the page, so wait before reading."""

    FETCH = re.compile(rb'"type":\s*"fetch",\s*"layers":\s*(\[[^\]]*\])')
    REPLY = re.compile(rb'"type":\s*"layer",\s*"name":\s*("(?:[^"\\]|\\.)*")')

    def __init__(self, page: Page) -> None:
        self.events: list[tuple[str, list[str]]] = []
        self.bytes = 0
        page.on("websocket", self._attach)

    @property
    def requested(self) -> list[str]:
        """Every layer name asked for, in order."""
        return [n for kind, names in self.events if kind == "fetch" for n in names]

    @property
    def replies(self) -> int:
        return sum(kind == "layer" for kind, _ in self.events)

    def most_in_flight(self) -> int:
        """The most fetch messages that were ever unanswered at once (a fetch is answered when a reply
        for each of its layers has arrived)."""
        open_: list[set[str]] = []
        most = 0
        for kind, names in self.events:
            if kind == "fetch":
                open_.append(set(names))
                most = max(most, len(open_))
            else:
                for pending in open_:
                    pending.difference_update(names)
                open_ = [p for p in open_ if p]
        return most

    def _attach(self, ws: WebSocket) -> None:
        ws.on("framesent", self._sent)
        ws.on("framereceived", self._received)

    @staticmethod
    def _bytes(payload: str | bytes) -> bytes:
        return payload if isinstance(payload, bytes) else payload.encode()

    def _sent(self, payload: str | bytes) -> None:
        for m in self.FETCH.finditer(self._bytes(payload)):
            self.events.append(("fetch", json.loads(m.group(1))))

    def _received(self, payload: str | bytes) -> None:
        data = self._bytes(payload)
        self.bytes += len(data)
        for m in self.REPLY.finditer(data):
            self.events.append(("layer", [json.loads(m.group(1))]))

    def reset(self) -> None:
        self.events = []
        self.bytes = 0


def paint_count(page: Page) -> int:
    return int(page.locator(AB).first.get_attribute("data-paint-count") or 0)


def wait_for_layer_painted(page: Page, layer: str, timeout_ms: float = 20_000) -> None:
    page.wait_for_function(
        "([sel, layer]) => document.querySelector(sel).dataset.paintedLayer === layer",
        arg=[AB, layer], timeout=timeout_ms, polling="raf",
    )


def assert_grid_painted(page: Page) -> None:
    stats = harness.canvas_stats(page, f"{AB} canvas.cnnw-grid")
    assert stats["width"] > 0 and stats["height"] > 0, stats
    assert stats["opaque"] > 0.5 and stats["colors"] > 8 and stats["variance"] > 50, stats


def hold_right(page: Page, presses: int) -> None:
    """``presses`` ArrowRight key presses on the focused slider, none waiting for the kernel."""
    for _ in range(presses):
        page.keyboard.press("ArrowRight")


@pytest.fixture
def lazy_page(page: Page, open_voila: Callable[..., Page]) -> tuple[Page, FetchLog, list[str]]:
    log = FetchLog(page)
    open_voila([LAZY_BROWSER])
    page.locator(".probe-layers").wait_for()
    expect(page.locator(".probe-mode")).to_have_text("lazy")
    layers = page.inner_text(".probe-layers").split("|")
    assert len(layers) > 40
    wait_for_layer_painted(page, layers[0])
    page.wait_for_timeout(500)  # the neighbours' prefetch after the first paint
    page.locator(f"{AB} input.cnnw-layer-slider").focus()
    return page, log, layers


def test_held_key_while_the_kernel_is_busy_fetches_only_the_last_layer(
    lazy_page: tuple[Page, FetchLog, list[str]],
) -> None:
    page, log, layers = lazy_page
    page.click(".busy")
    page.locator(f"{AB} input.cnnw-layer-slider").focus()
    log.reset()
    painted = paint_count(page)
    hold_right(page, 30)
    final = layers[30]
    wait_for_layer_painted(page, final)
    page.wait_for_timeout(300)  # frames sent just before the paint reach the log
    # the layer asked for before the key was held, its neighbour prefetch, then only the final layer
    passed = layers[2:31]
    fetched = [n for n in log.requested if n in passed]
    assert final in fetched and len(fetched) <= 3, (fetched, log.requested)
    assert log.replies <= 6, (log.replies, log.requested)
    assert log.most_in_flight() == 1, log.events
    assert paint_count(page) - painted <= 8, "only layers already in the browser painted on the way"
    assert_grid_painted(page)
    expect(page.locator(f"{AB} .cnnw-layer-name")).to_have_text(final)
    expect(page.locator(".probe-layer")).to_have_text(final)


def test_held_key_fetches_far_fewer_layers_than_it_passes(
    lazy_page: tuple[Page, FetchLog, list[str]],
) -> None:
    page, log, layers = lazy_page
    log.reset()
    hold_right(page, 40)
    final = layers[40]
    wait_for_layer_painted(page, final)
    page.wait_for_timeout(300)
    passed = layers[2:41]
    fetched = [n for n in log.requested if n in passed]
    assert final in fetched
    assert log.most_in_flight() == 1, log.events
    assert len(fetched) <= len(passed) // 2, (len(fetched), len(passed), log.requested)
    assert_grid_painted(page)
    expect(page.locator(".probe-layer")).to_have_text(final)
    # and stepping back one layer paints it (from the cache or after one more fetch)
    page.keyboard.press("ArrowLeft")
    wait_for_layer_painted(page, layers[39])
    expect(page.locator(".probe-layer")).to_have_text(layers[39])


def test_a_big_total_paints_its_first_layer_from_a_fetch_then_turns_eager(
    page: Page, open_voila: Callable[..., Page],
) -> None:
    log = FetchLog(page)
    open_voila([STAGED_BROWSER], ready=".probe-layers")
    layers = page.inner_text(".probe-layers").split("|")
    wait_for_layer_painted(page, layers[0])
    assert_grid_painted(page)
    expect(page.locator(".probe-mode")).to_have_text("eager", timeout=30_000)
    page.wait_for_timeout(300)
    assert log.requested[0] == layers[0], log.events  # the shown layer alone, first
    log.reset()
    page.locator(f"{AB} input.cnnw-layer-slider").focus()
    for name in layers[1:6]:
        count = paint_count(page)
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "([sel, count, layer]) => { const d = document.querySelector(sel).dataset;"
            " return Number(d.paintCount) > count && d.paintedLayer === layer; }",
            arg=[AB, count, name], timeout=10_000, polling="raf",
        )
    expect(page.locator(".probe-layer")).to_have_text(layers[5])
    page.wait_for_timeout(300)
    assert log.requested == [], "every layer came with _data: nothing to fetch"
    assert_grid_painted(page)
