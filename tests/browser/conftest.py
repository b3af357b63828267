"""Fixtures for the real-browser tests: one Voila server, one JupyterLab server and one Chromium per
session; a fresh browser context per test. Servers stop with SIGINT and leave no kernel behind, also
when a test fails (see ``harness.Server``)."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

import harness

sys.path.insert(0, str(harness.TESTS))  # archs.py, also when only tests/browser is collected

# The first cell of every generated notebook.
PRELUDE = f"""\
import sys
sys.path.insert(0, {str(harness.TESTS)!r})
import torch
import ipywidgets as W
from IPython.display import display
import cnn_widgets
from cnn_widgets import wire

def probe(name, value=""):
    \"\"\"A Label the test reads back (class probe-<name>).\"\"\"
    label = W.Label(str(value))
    label.add_class(f"probe-{{name}}")
    return label

def mirror(widget, trait, name):
    \"\"\"A probe Label that always shows ``widget.<trait>``.\"\"\"
    label = probe(name, getattr(widget, trait))
    widget.observe(lambda change: setattr(label, "value", str(change["new"])), trait)
    return label
"""


@dataclass
class Running:
    """A server the session started: its base URL and the directory it serves."""

    base: str
    root: Path


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = harness.launch_chromium(p)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def voila(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("voila-notebooks")
    with harness.voila_server(root, tmp_path_factory.mktemp("voila-home")) as base:
        yield Running(base, root)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("lab-root")
    with harness.lab_server(root, tmp_path_factory.mktemp("lab-home")) as base:
        yield Running(base, root)


@pytest.fixture(scope="session")
def notebook7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """Jupyter Notebook 7 (the ``notebook`` package of the dev extras); skips where it is not installed."""
    if not (harness.BIN / "jupyter-notebook").exists():
        pytest.skip("the notebook package (Notebook 7) is not installed")
    root = tmp_path_factory.mktemp("notebook7-root")
    with harness.notebook_server(root, tmp_path_factory.mktemp("notebook7-home")) as base:
        yield Running(base, root)


@pytest.fixture
def known_page_errors() -> list[re.Pattern[str]]:
    """Patterns (matched against message and stack) of uncaught errors that come from the Jupyter
    application itself, not from the widgets; a fixture that opens such an application adds them."""
    return []


@pytest.fixture
def page(chromium: Browser, known_page_errors: list[re.Pattern[str]]) -> Iterator[Page]:
    """A page in a fresh context; uncaught JavaScript errors fail the test (except known_page_errors)."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(f"{err}\n{getattr(err, 'stack', '') or ''}"))
    try:
        yield page
    finally:
        context.close()
    errors = [e for e in errors if not any(known.search(e) for known in known_page_errors)]
    if errors:
        pytest.fail("uncaught errors in the page:\n" + "\n".join(errors))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:80]


@pytest.fixture
def open_voila(page: Page, voila: Running, request: pytest.FixtureRequest) -> Callable[..., Page]:
    """``open_voila(cells, ready=selector)`` writes a notebook (PRELUDE + cells) and opens it in Voila,
    returning the page once ``ready`` matches."""

    def open_(cells: Sequence[str], ready: str = ".cnnw-root[data-paint-count]") -> Page:
        name = f"{_slug(request.node.name)}-{uuid.uuid4().hex[:6]}.ipynb"
        harness.write_notebook(voila.root / name, [PRELUDE, *cells])
        harness.open_voila_page(page, voila.base, name, ready)
        return page

    return open_


@pytest.fixture
def open_lab(page: Page, lab: Running) -> Iterator[Callable[[Path], Page]]:
    """``open_lab(notebook)`` copies the notebook into the lab root and opens it in a fresh workspace,
    returning once its kernel is idle. Every kernel is shut down afterwards."""

    def open_(notebook: Path) -> Page:
        harness.clean_copy(notebook, lab.root)
        page.goto(f"{lab.base}/lab/workspaces/{uuid.uuid4().hex}/tree/{notebook.name}?reset",
                  wait_until="domcontentloaded")
        page.wait_for_function("() => window.jupyterapp?.shell?.currentWidget?.sessionContext", timeout=60_000)
        page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\(ipykernel\) \| Idle")).first.wait_for(
            timeout=60_000
        )
        return page

    yield open_
    harness.shutdown_kernels(lab.base)


# Notebook 7.6.5 with JupyterLab 4.6: its keyboard-shortcuts plugin reads the settings schema of a
# plugin the setting registry has just dropped, on every page load, also for an empty notebook.
NOTEBOOK7_SHORTCUTS_BUG = re.compile(r"reading 'schema'\)[\s\S]*/static/notebook/notebook_core\.")


@pytest.fixture
def open_notebook7(
    page: Page, notebook7: Running, known_page_errors: list[re.Pattern[str]]
) -> Iterator[Callable[[Path], Page]]:
    """``open_notebook7(notebook)`` copies the notebook into the Notebook 7 root and opens it, returning
    once its kernel is idle. Every kernel is shut down afterwards."""
    known_page_errors.append(NOTEBOOK7_SHORTCUTS_BUG)

    def open_(notebook: Path) -> Page:
        harness.clean_copy(notebook, notebook7.root)
        page.goto(f"{notebook7.base}/notebooks/{notebook.name}", wait_until="domcontentloaded")
        page.wait_for_function(
            "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
            timeout=60_000,
        )
        return page

    yield open_
    harness.shutdown_kernels(notebook7.base)
