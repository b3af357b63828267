"""Metrics in a real page (Voila + Chromium): the deletion and insertion curves are drawn, clicking a curve,
a table row or choosing in the method select shows that method's heatmap (set in Python, repainted in the
page), the randomisation slider moved by keyboard changes the map and the correlation shown, and method
and class names are text, never HTML."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

import harness
from archs import XSS_NAME

pytestmark = pytest.mark.browser

ROOT = ".cnnw-metrics"

# ShapesNet on 3 held-out images; an edge detector as a second "method" under an XSS name, so the
# randomisation test flags it; the class labels carry the XSS name too.
VIEW = """\
from cnn_widgets import zoo
from cnn_widgets.zoo.train import HELDOUT_SEED
from cnn_widgets.widgets.metrics_view import Metrics
torch.set_num_threads(1)

def edges(model, image):
    grey = image.mean(dim=0, keepdim=True)[None]
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx = torch.nn.functional.conv2d(grey, k.view(1, 1, 3, 3), padding=1)
    gy = torch.nn.functional.conv2d(grey, k.t().reshape(1, 1, 3, 3), padding=1)
    return (gx.square() + gy.square()).sqrt()[0, 0]

model = zoo.load_shapesnet()
images, _, masks = zoo.shapes_dataset(3, seed=HELDOUT_SEED)
labels = [{xss!r}, "square", "triangle", "cross", "star"]
view = Metrics(model, images, {{"grad_cam": "grad_cam", {xss!r}: edges}}, labels, masks=masks, sample=1,
               randomize=["fc", "features.conv4", "features.conv3"], steps=8)
view.wait()
display(W.VBox([view, mirror(view, "method", "method"), mirror(view, "step", "step"),
                probe("flagged", [row["flagged"] for row in view.summary])]))
"""


def dataset(page: Page) -> dict[str, str]:
    return page.locator(ROOT).first.evaluate("(el) => ({...el.dataset})")


def canvas_data(page: Page) -> dict[str, str]:
    return page.locator(f"{ROOT} canvas.cnnw-overlay").first.evaluate("(el) => ({...el.dataset})")


def pixels(page: Page) -> list[int]:
    return page.locator(f"{ROOT} canvas.cnnw-overlay").first.evaluate(
        "(c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")


def wait_painted(page: Page, method: str, image: int, step: int) -> None:
    page.wait_for_function(
        """([sel, layer]) => {
            const root = document.querySelector(sel);
            const c = root && root.querySelector('canvas.cnnw-overlay');
            return root && root.dataset.paintedLayer === layer && c.dataset.hasMap === 'true';
        }""",
        arg=[ROOT, f"{method}/{image}/{step}"], timeout=60_000,
    )


@pytest.fixture
def metrics_page(open_voila) -> Page:
    page = open_voila([VIEW.format(xss=XSS_NAME)], ready=f"{ROOT}[data-maps='2']")
    wait_painted(page, "grad_cam", 0, 0)
    return page


def test_curves_drawn_and_selection_shows_the_map(metrics_page: Page) -> None:
    page = metrics_page
    # one bqplot line per method in each figure, with points
    for kind in ("deletion", "insertion"):
        paths = page.locator(f".cnnw-metrics-{kind} .curve path.line")
        expect(paths).to_have_count(2, timeout=30_000)
        d = paths.first.get_attribute("d") or ""
        assert d.count("L") >= 8, d  # 9 points: 8 segments
    grad_cam = pixels(page)

    # the table row of the second method selects it: Python hears it, the map repaints
    page.locator(f"{ROOT} tbody tr").nth(1).click()
    expect(page.locator(".probe-method")).to_have_text(XSS_NAME, timeout=30_000)
    wait_painted(page, XSS_NAME, 0, 0)
    assert pixels(page) != grad_cam

    # a click on a point of the Grad-CAM curve brings Grad-CAM back
    page.locator(".cnnw-metrics-deletion .object_grp").nth(4).click(force=True)
    expect(page.locator(".probe-method")).to_have_text("grad_cam", timeout=30_000)
    wait_painted(page, "grad_cam", 0, 0)
    assert pixels(page) == grad_cam

    # keyboard: the method select, then the image select
    select = page.locator(f"{ROOT} select.cnnw-method")
    select.focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator(".probe-method")).to_have_text(XSS_NAME, timeout=30_000)
    wait_painted(page, XSS_NAME, 0, 0)
    page.locator(f"{ROOT} select.cnnw-image").focus()
    page.keyboard.press("ArrowDown")
    wait_painted(page, XSS_NAME, 1, 0)


def test_randomisation_slider_by_keyboard(metrics_page: Page) -> None:
    page = metrics_page
    rho = page.locator(f"{ROOT} .cnnw-rho")
    expect(rho).to_contain_text("intact model")
    before = pixels(page)
    slider = page.locator(f"{ROOT} input.cnnw-step")
    expect(slider).to_have_attribute("max", "3")
    slider.focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator(".probe-step")).to_have_text("1", timeout=30_000)
    wait_painted(page, "grad_cam", 0, 1)
    expect(rho).to_contain_text("down to fc")
    text = rho.text_content() or ""
    value = float(text.split("ρ = ")[1].split(" ")[0])
    assert value < 0.9, text  # Grad-CAM's map changes when the classifier is randomised
    assert pixels(page) != before
    page.keyboard.press("End")
    wait_painted(page, "grad_cam", 0, 3)
    expect(rho).to_contain_text("features.conv3")
    # the edge detector's map stays the same and it is flagged
    expect(page.locator(".probe-flagged")).to_have_text("[False, True]")
    flagged = page.locator(f"{ROOT} tbody tr[data-flagged='true']")
    expect(flagged).to_have_count(1)
    expect(flagged.locator(".cnnw-flag")).to_contain_text("flagged")


def test_names_are_text(metrics_page: Page) -> None:
    page = metrics_page
    assert page.evaluate("() => window.pwned === undefined")
    expect(page.locator(f"{ROOT} img")).to_have_count(0)
    expect(page.locator(f"{ROOT} tbody tr").nth(1).locator(".cnnw-method-name")).to_have_text(XSS_NAME)
    options = page.locator(f"{ROOT} select.cnnw-method option")
    expect(options.nth(1)).to_have_text(XSS_NAME)
    assert harness.canvas_stats(page, f"{ROOT} canvas.cnnw-overlay")["variance"] > 0
