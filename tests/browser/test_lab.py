"""notebooks/quickstart.ipynb in JupyterLab: every cell runs without an error and the widgets render."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page

import harness

pytestmark = pytest.mark.browser

QUICKSTART = harness.REPO / "notebooks" / "quickstart.ipynb"


def test_quickstart_runs_and_renders_in_jupyterlab(open_lab: Callable[[Path], Page]) -> None:
    assert QUICKSTART.is_file(), f"{QUICKSTART} is missing"
    page = open_lab(QUICKSTART)
    cells = harness.lab_run_all(page, timeout_s=240)
    failed = [c for c in cells if c["errors"]]
    assert not failed, f"cells raised: {failed}"
    assert all(c["count"] is not None for c in cells), cells
    roots = page.locator(".jp-Notebook .cnnw-root")
    roots.first.wait_for(timeout=30_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-Notebook .cnnw-root:has(canvas.cnnw-grid)')].every((r) => r.dataset.paintCount)",
        timeout=30_000,
    )
    grids = page.locator(".jp-Notebook .cnnw-root canvas.cnnw-grid")
    assert grids.count() >= 1
    for i in range(grids.count()):
        grids.nth(i).scroll_into_view_if_needed()
        stats = harness.canvas_stats(page, ".jp-Notebook .cnnw-root canvas.cnnw-grid", i)
        assert stats["width"] > 0 and stats["colors"] > 8 and stats["variance"] > 50, (i, stats)
