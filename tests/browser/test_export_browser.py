"""Exports in a real browser: the "save PNG" button (reached with the keyboard) downloads the same pixels
``widget.to_png`` writes from Python (±1 per channel), in Voila; ``save_html`` files open from disk with
every network request blocked, paint the same pixels, keep the slider working, and never run a layer
name or label as HTML."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import Page, expect

import archs
import harness
from archs import XSS_NAME

pytestmark = pytest.mark.browser

TIMEOUT = 60_000
AB, FG, AV = ".cnnw-activation-browser", ".cnnw-filter-grid", ".cnnw-attribution-view"
CMP, CE, MS = ".cnnw-compare", ".cnnw-conv-explainer", ".cnnw-model-summary"


def views_cell(out: Path, channel: int, ab_scale: float = 1.0) -> str:
    """ShapesNet views, each written with to_png into ``out`` before it is displayed (the FilterGrid at
    projector scale: its tiles grow with its text, on screen and in the PNG alike)."""
    return f"""\
from pathlib import Path
from cnn_widgets.zoo import load_shapesnet, shapes_dataset
from cnn_widgets.widgets.activation_browser import ActivationBrowser
from cnn_widgets.widgets.filter_grid import FilterGrid
from cnn_widgets.widgets.attribution_view import AttributionView
torch.set_num_threads(1)
out = Path({str(out)!r})
model = load_shapesnet()
images, _, _ = shapes_dataset(2, seed=3)
ab = ActivationBrowser(model, images[0], layer="features.conv2", channel={channel}, colormap="magma", font_scale={ab_scale})
fg = FilterGrid(model, "features.conv1", colormap="RdBu_r", font_scale=1.5)
fg.selected = 5
av = AttributionView(model, images[1], "grad_cam", sign="all", opacity=0.6)
av.wait()
for name, w in [("ab", ab), ("fg", fg), ("av", av)]:
    w.to_png(out / f"{{name}}.png")
display(W.VBox([ab, fg, av]))
"""


def png(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def saved_png(page: Page, root: str) -> np.ndarray:
    """Press the view's save PNG button from the keyboard and read the download."""
    button = page.locator(f"{root} .cnnw-save-png")
    button.focus()
    outline = button.evaluate("(b) => getComputedStyle(b).outlineStyle")
    assert outline != "none", "the focused save button shows a focus ring"
    with page.expect_download(timeout=TIMEOUT) as info:
        page.keyboard.press("Enter")
    return png(info.value.path())


def assert_same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: {got.shape} on screen, {want.shape} from to_png"
    diff = np.abs(got - want)
    assert diff.max() <= 1, f"{what}: {np.count_nonzero(diff.max(axis=2) > 1)} pixels differ by up to {diff.max()}"


def wait_painted(page: Page) -> None:
    for sel in (f"{AB}[data-paint-count]", f"{FG}[data-paint-count]", f"{AV}[data-paint-count]"):
        page.wait_for_selector(sel, timeout=TIMEOUT)


def test_save_png_button_downloads_what_to_png_writes(open_voila: Callable[..., Page], tmp_path: Path) -> None:
    page = open_voila([views_cell(tmp_path, -1)], ready=f"{AV}[data-paint-count]")
    wait_painted(page)
    for root, name in ((AB, "ab"), (FG, "fg"), (AV, "av")):
        assert_same(saved_png(page, root), png(tmp_path / f"{name}.png"), name)
        record = json.loads((tmp_path / f"{name}.png.json").read_text())
        assert record["model"].endswith("ShapesNet") and record["versions"]["torch"] == torch.__version__
    # the filter tiles at scale 1.5 are larger than at scale 1, on screen as in the PNG
    from cnn_widgets import export, zoo

    O, _, kh, kw = zoo.load_shapesnet().features.conv1.weight.shape
    width = page.locator(f"{FG} canvas.cnnw-grid").evaluate("(c) => c.width")
    grid = export.FILTER_GRID
    assert width == export.layout_grid(O, kh, kw, **grid, scale=1.5)["width"] > export.layout_grid(O, kh, kw, **grid)["width"]
    # the on-screen overlay canvas itself (not only the composed download) equals Python's pixels
    data = page.locator(f"{AV} canvas.cnnw-overlay").evaluate(
        "(c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")
    overlay = np.array(data).reshape(png(tmp_path / "av.png").shape[0], -1, 4)[..., :3]
    assert_same(overlay, png(tmp_path / "av.png"), "overlay canvas")


def test_save_png_with_a_channel_selected(open_voila: Callable[..., Page], tmp_path: Path) -> None:
    """With a channel selected the grid (and its outline) is exact, at a projector scale too; the enlarged
    view's smoothed heat layer is the browser's own filter, so it is only close."""
    page = open_voila([views_cell(tmp_path, 3, ab_scale=1.3)], ready=f"{AV}[data-paint-count]")
    wait_painted(page)
    got, want = saved_png(page, AB), png(tmp_path / "ab.png")
    assert got.shape == want.shape
    grid_w = page.locator(f"{AB} canvas.cnnw-grid").evaluate("(c) => c.width")
    grid_h = page.locator(f"{AB} canvas.cnnw-grid").evaluate("(c) => c.height")
    assert np.abs(got[:grid_h, :grid_w] - want[:grid_h, :grid_w]).max() <= 1
    detail = np.abs(got[:, grid_w + 8:] - want[:, grid_w + 8:])
    assert detail.mean() < 3 and np.percentile(detail, 99) <= 24


# -- offline HTML ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HTML and PNG exports of three ShapesNet views and of views named and labelled with markup."""
    from cnn_widgets.widgets.activation_browser import ActivationBrowser
    from cnn_widgets.widgets.attribution_view import AttributionView
    from cnn_widgets.widgets.compare import compare
    from cnn_widgets.widgets.conv_explainer import ConvExplainer
    from cnn_widgets.widgets.filter_grid import FilterGrid
    from cnn_widgets.widgets.model_summary import ModelSummary
    from cnn_widgets.zoo import load_shapesnet, shapes_dataset

    out = tmp_path_factory.mktemp("exports")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_shapesnet()
        images, _, _ = shapes_dataset(2, seed=4)
        views = {
            "ab": ActivationBrowser(model, images[0], layer="features.relu1", colormap="viridis"),
            "fg": FilterGrid(model, "features.conv2"),
            "av": AttributionView(model, images[1], "saliency", labels=[XSS_NAME, "b", "c", "d", "e"]),
        }
        views["cmp"] = compare(model, [images[0], images[1]], ["grad_cam", "saliency"], sign="all", scale="shared")
        views["cmp"].wait()
        views["ce"] = ConvExplainer(model, images[0], "features.conv2", channel=3)
        views["ms"] = ModelSummary(model, images[0], selected="features.conv1")
        xss_model, x = archs.build("xss_named")
        views["xss"] = ActivationBrowser(xss_model, x, layer=f"blocks.{XSS_NAME}")
        for name, view in views.items():
            view.to_png(out / f"{name}.png")
            view.save_html(out / f"{name}.html")
            view.close()
    finally:
        torch.set_num_threads(threads)
    return out


def open_offline(page: Page, path: Path) -> list[str]:
    """The saved file opened with every network request aborted (see harness.open_offline)."""
    return harness.open_offline(page, path, TIMEOUT)


@pytest.mark.parametrize("name, root", [("ab", AB), ("fg", FG), ("av", AV), ("cmp", CMP), ("ce", CE)])
def test_offline_html_paints_what_to_png_writes(page: Page, exports: Path, name: str, root: str) -> None:
    tried = open_offline(page, exports / f"{name}.html")
    assert tried == [], f"the export asked the network for {tried}"
    assert_same(saved_png(page, root), png(exports / f"{name}.png"), name)
    record = json.loads(page.locator("#cnnw-record").text_content() or "{}")
    assert record["widget"] and record["image_sha256"] != "" and record["versions"]["cnn_widgets"]


def test_offline_model_summary_strip_is_close_to_to_png(page: Page, exports: Path) -> None:
    """The strip is an svg: its PNG is the browser's rasterisation, anti-aliased edges and all."""
    open_offline(page, exports / "ms.html")
    got, want = saved_png(page, MS), png(exports / "ms.png")
    assert got.shape == want.shape
    assert np.mean(np.abs(got - want).max(axis=2) > 1) < 0.1


def test_offline_activation_browser_slider_works_from_the_file(page: Page, exports: Path) -> None:
    open_offline(page, exports / "ab.html")
    root = page.locator(AB)
    painted = int(root.get_attribute("data-paint-count") or 0)
    page.locator(f"{AB} .cnnw-layer-slider").focus()
    page.keyboard.press("ArrowRight")
    expect(root).not_to_have_attribute("data-painted-layer", "features.relu1", timeout=TIMEOUT)
    assert int(root.get_attribute("data-paint-count") or 0) > painted
    assert "loading" not in (root.locator(".cnnw-status").text_content() or "")


def test_offline_html_keeps_names_and_labels_as_text(page: Page, exports: Path) -> None:
    for name, root in (("xss", AB), ("av", AV)):
        open_offline(page, exports / f"{name}.html")
        assert page.evaluate("() => window.pwned") is None
        assert page.locator(f"{root} img, .cnnw-export-bars img").count() == 0
        text = page.locator("body").inner_text()
        assert XSS_NAME in text, f"{name}: the name is shown as text"
    # defence in depth: even markup that got into the page could not run a handler (CSP: loader hash only)
    page.evaluate("""() => document.body.insertAdjacentHTML('beforeend', '<img src=x onerror="window.pwned=1">')""")
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.pwned") is None
    raw = (exports / "xss.html").read_text()
    assert XSS_NAME not in raw, "every < of embedded data is escaped"


# -- JupyterLab: the button is a notebook citizen ----------------------------------------------------------


def test_save_png_in_jupyterlab_takes_keys_without_notebook_shortcuts(
    open_lab: Callable[[Path], Page], tmp_path: Path
) -> None:
    """Arrow keys, Home/End on the focused button leave the notebook as it was; Enter saves the view."""
    import nbformat

    from conftest import PRELUDE

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Above"), nbformat.v4.new_code_cell(PRELUDE),
                nbformat.v4.new_code_cell(views_cell(tmp_path, -1)), nbformat.v4.new_markdown_cell("## Below"),
                nbformat.v4.new_code_cell("below = 1")]
    path = tmp_path / "export_lab.ipynb"
    nbformat.write(nb, path)
    page = open_lab(path)
    cells = harness.lab_run_all(page, timeout_s=300)
    assert not [c for c in cells if c["errors"]], cells
    page.wait_for_function("""(sels) => sels.every((s) => document.querySelector(s)?.dataset.paintCount)""",
                           arg=[AB, FG, AV], timeout=TIMEOUT)
    button = page.locator(f"{FG} .cnnw-save-png")
    button.focus()
    before = page.evaluate(harness.NOTEBOOK_STATE_JS)
    for key in ("ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Home", "End"):
        page.keyboard.press(key)
        assert page.evaluate("() => document.activeElement?.className") == "cnnw-save-png", key
    assert page.evaluate(harness.NOTEBOOK_STATE_JS) == before, "a notebook shortcut fired on the button"
    assert_same(saved_png(page, FG), png(tmp_path / "fg.png"), "fg in JupyterLab")
    assert page.evaluate(harness.NOTEBOOK_STATE_JS) == before
