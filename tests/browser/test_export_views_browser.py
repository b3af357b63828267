"""Offline HTML exports of Metrics, TrainingMonitor, TopActivations, ClassHeatmaps and ChannelImportance in
Chromium with every network request blocked: each page renders with no page error, the view's "save PNG"
button gives what ``to_png`` wrote (±1 per channel), the curves and the importance chart are there, and
method names and class labels made of markup stay text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import Page

import harness
from archs import XSS_NAME

pytestmark = pytest.mark.browser

TIMEOUT = 90_000
# view → (root selector, selector that appears once the exported state is painted)
VIEWS = {
    "metrics": (".cnnw-metrics", ".cnnw-metrics canvas.cnnw-overlay[data-has-map='true']"),
    "tm": (".cnnw-training-monitor", ".cnnw-training-monitor[data-painted-layer]"),
    "top": (".cnnw-top-activations", ".cnnw-top-activations[data-paint-count] .cnnw-patch canvas"),
    "ch": (".cnnw-class-heatmaps", ".cnnw-class-heatmaps[data-cell-paint-count] .cnnw-thumbs canvas"),
}


def edges(model, image):  # noqa: ANN001, ANN201
    """A "method" that ignores the model."""
    grey = image.mean(dim=0)
    return grey.diff(dim=1, prepend=grey[:, :1]).abs()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PNG and HTML exports of the five views on ShapesNet (a method and a class named with markup)."""
    import copy

    from cnn_widgets import model_lock, zoo
    from cnn_widgets.widgets.channel_importance_view import ChannelImportance
    from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps
    from cnn_widgets.widgets.metrics_view import Metrics
    from cnn_widgets.widgets.top_activations import TopActivations
    from cnn_widgets.widgets.training_monitor import TrainingMonitor

    out = tmp_path_factory.mktemp("exports")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = zoo.load_shapesnet()
        images, labels, masks = zoo.shapes_dataset(16, seed=4)
        names = [XSS_NAME] + list(zoo.CLASSES[1:])
        metrics = Metrics(model, images[:2], {"grad_cam": "grad_cam", XSS_NAME: edges}, labels=names, masks=masks[:2],
                          steps=4, sample=1, randomize=["fc"])
        with model_lock(model):  # Metrics is computing on it: copy no run's hooks (README)
            net = copy.deepcopy(model)
        monitor = TrainingMonitor(net, probe=images[:2], layers=["features.conv1", "features.conv2"])
        monitor.step(1.0)
        monitor.epoch_end(accuracy=0.5)
        heatmaps = ClassHeatmaps(zoo.load_shapesnet("cheat"), (images, labels), "saliency", labels=names, batch_size=16)
        heatmaps.wait()
        heatmaps.select(int(np.argwhere(heatmaps.counts[:, 0] > 0)[0, 0]), True)
        views = {
            "metrics": metrics, "tm": monitor, "ch": heatmaps,
            "top": TopActivations(model, (images, labels), "features.conv2", k=3, batch_size=16, channel=1),
            "ci": ChannelImportance(model, (images, labels), "features.conv3", metric="loss", repeats=1, batch_size=16),
        }
        for name, view in views.items():
            view.to_png(out / f"{name}.png")
            view.save_html(out / f"{name}.html")
            view.close()
    finally:
        torch.set_num_threads(threads)
    return out


def open_offline(page: Page, path: Path) -> list[str]:
    """The saved file opened with every network request aborted (see harness.open_offline)."""
    return harness.open_offline(page, path, TIMEOUT, painted=False)


def png(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def saved_png(page: Page, root: str) -> np.ndarray:
    """Press the view's save PNG button from the keyboard and read the download."""
    page.locator(f"{root} .cnnw-save-png").focus()
    with page.expect_download(timeout=TIMEOUT) as info:
        page.keyboard.press("Enter")
    return png(info.value.path())


@pytest.mark.parametrize("name", list(VIEWS))
def test_offline_html_paints_what_to_png_writes(page: Page, exports: Path, name: str) -> None:
    root, ready = VIEWS[name]
    tried = open_offline(page, exports / f"{name}.html")
    page.wait_for_selector(ready, timeout=TIMEOUT)
    assert tried == [], f"the export asked the network for {tried}"
    got, want = saved_png(page, root), png(exports / f"{name}.png")
    assert got.shape == want.shape, f"{name}: {got.shape} on screen, {want.shape} from to_png"
    assert np.abs(got - want).max() <= 1, f"{name}: {np.count_nonzero(np.abs(got - want).max(axis=2) > 1)} pixels differ"
    if name == "metrics":  # the curves are inline SVG, one line per method, the names as text
        assert page.locator(".cnnw-export-curves polyline").count() == 4
        assert page.locator(".cnnw-export-legend").first.inner_text().count("AUC") == 2
    if name == "tm":  # the loss chart, and the slider over both kept snapshots works from the file
        assert page.locator(".cnnw-export-curves polyline").count() >= 1
        slider = page.locator(".cnnw-snapshot-slider")
        assert slider.get_attribute("max") == "1"
        slider.focus()
        page.keyboard.press("ArrowLeft")
        page.wait_for_selector(".cnnw-training-monitor[data-shown-epoch='0']", timeout=TIMEOUT)


def test_offline_html_keeps_markup_names_as_text_and_shows_the_importance_chart(page: Page, exports: Path) -> None:
    for name in ("metrics", "ch"):
        open_offline(page, exports / f"{name}.html")
        page.wait_for_selector(VIEWS[name][1], timeout=TIMEOUT)
        assert page.evaluate("() => window.pwned") is None
        assert page.locator("img").count() == 0, f"{name}: no markup became an element"
        assert XSS_NAME in page.locator("body").inner_text(), f"{name}: the name is shown as text"
    tried = open_offline(page, exports / "ci.html")
    assert tried == []
    page.wait_for_selector(".cnnw-channel-importance[data-paint-count]", timeout=TIMEOUT)
    picture = page.locator("img.cnnw-export-picture")
    page.wait_for_function("() => document.querySelector('img.cnnw-export-picture').complete", timeout=TIMEOUT)
    size = picture.evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
    assert size == [png(exports / "ci.png").shape[1], png(exports / "ci.png").shape[0]]
    assert page.locator(".cnnw-channel-select option").count() > 10, "the channel menu works from the file"
