"""The lesson notebooks as a class sees them: teaching_tour.ipynb and clever_hans.ipynb served by Voila in
Chromium. Every cnn_widgets view the notebook creates paints (compare with all its rows, the attribution
view with its result), its canvases are not blank, the plain ipywidgets pictures load, and the page
raises no uncaught error (the ``page`` fixture fails the test on one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Page

import harness

pytestmark = pytest.mark.browser

NOTEBOOKS = harness.REPO / "notebooks"
LOAD_TIMEOUT_MS = 300_000  # Voila runs the whole notebook before the last probe shows; the machine is shared

# Appended to the served copy: how many cnn_widgets views the kernel made (every one is displayed), and a
# heartbeat. The harness's Voila culls a kernel idle for 5 s with no connection; on a loaded machine the
# page may connect later than that after the last cell (seen here: the kernel culled while the server
# waited for its kernel_info reply, every widget stuck at "Loading widget..."). Each beat is a comm
# message on iopub, which counts as kernel activity; the beats stop after BEAT_S.
BEAT_S = 180
COUNT_VIEWS = f"""\
import gc as _gc
import threading as _threading
import time as _time
import ipywidgets as _W
from cnn_widgets.widgets.panel import Panel as _Panel
_label = _W.Label(str(sum(issubclass(type(o), _Panel) for o in _gc.get_objects())))
_label.add_class("probe-views")
_beat = _W.Label("0")
def _heartbeat():
    for i in range({BEAT_S} // 2):
        _time.sleep(2)
        _beat.value = str(i)
_threading.Thread(target=_heartbeat, daemon=True).start()
_label
"""

# True once every view root has painted, every compare has all its rows and every attribution view
# its result; arg: the number of views the kernel made.
ALL_PAINTED_JS = """(views) => {
  const roots = [...document.querySelectorAll('.cnnw-root')];
  if (roots.length < views || !roots.every((r) => Number(r.dataset.paintCount) > 0)) return false;
  const compares = roots.filter((r) => r.classList.contains('cnnw-compare'));
  if (!compares.every((r) => Number(r.dataset.rowCount) === r.querySelectorAll('.cnnw-row-label').length
                              && r.querySelectorAll('.cnnw-row-label').length > 0)) return false;
  const views_ = roots.filter((r) => r.classList.contains('cnnw-attribution-view'));
  return views_.every((r) => Number(r.dataset.resultCount) > 0);
}"""

# The canvases that show data (not colour bars): each must be painted with something.
DATA_CANVASES = (
    ".cnnw-root canvas.cnnw-grid, .cnnw-root canvas.cnnw-overlay, "
    ".cnnw-root canvas.cnnw-input-map, .cnnw-root canvas.cnnw-output-map"
)


def serve(voila_root: Path, name: str) -> str:
    """A clean copy of notebooks/<name> in Voila's root, with the view-counting probe appended."""
    copy = harness.clean_copy(NOTEBOOKS / name, voila_root)
    nb = nbformat.read(copy, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(COUNT_VIEWS))
    nbformat.write(nb, copy)
    return copy.name


@pytest.mark.parametrize(
    "name, kinds",
    [
        ("teaching_tour.ipynb", {"cnnw-conv-explainer": 1, "cnnw-filter-grid": 1, "cnnw-activation-browser": 1,
                                 "cnnw-attribution-view": 1, "cnnw-compare": 1}),
        ("clever_hans.ipynb", {"cnnw-attribution-view": 1, "cnnw-compare": 2}),
    ],
)
def test_lesson_paints_every_widget_in_voila(
    page: Page, voila: Any, name: str, kinds: dict[str, int]
) -> None:
    served = serve(voila.root, name)
    harness.open_voila_page(page, voila.base, served, ".probe-views", timeout_ms=LOAD_TIMEOUT_MS)
    views = int(page.inner_text(".probe-views"))
    assert views == sum(kinds.values()), (views, kinds)
    page.wait_for_function(ALL_PAINTED_JS, arg=views, timeout=120_000, polling=250)
    for kind, count in kinds.items():
        assert page.locator(f".cnnw-root.{kind}").count() == count, kind
    canvases = page.locator(DATA_CANVASES)
    assert canvases.count() >= len(kinds)
    for i in range(canvases.count()):
        canvases.nth(i).scroll_into_view_if_needed()
        stats = harness.canvas_stats(page, DATA_CANVASES, i)
        assert stats["width"] > 0 and stats["colors"] > 8 and stats["variance"] > 50, (i, stats)
    pictures = page.locator(".widget-image")
    assert pictures.count() >= 4
    loaded = pictures.evaluate_all("(imgs) => imgs.map((img) => img.complete && img.naturalWidth > 0)")
    assert all(loaded), loaded
    assert "Traceback" not in page.inner_text("body")
