"""Driving Voila, JupyterLab and Chromium from tests and benchmarks (the flags and why: the README,
"Facts about the stack").

Servers run in their own process group with output to a log file; :class:`Server` stops them with SIGINT
(which makes Jupyter shut its kernels down) and kills whatever of the group is left, so nothing leaks when
a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
from playwright.sync_api import Browser, Page, Playwright, WebSocket
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ANNOUNCEMENTS = "@jupyterlab/apputils-extension:announcements"

# Reads a canvas back and summarises its pixels: size, luminance variance, distinct colours, opaque share.
CANVAS_STATS_JS = """(c) => {
  if (!c.width || !c.height) return {width: c.width, height: c.height, variance: 0, colors: 0, opaque: 0};
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0, s2 = 0, opaque = 0;
  const colors = new Set();
  for (let i = 0; i < d.length; i += 4) {
    const v = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    s += v; s2 += v * v;
    if (d[i + 3] > 0) opaque++;
    if (colors.size < 4096) colors.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  }
  const n = d.length / 4, m = s / n;
  return {width: c.width, height: c.height, variance: s2 / n - m * m, colors: colors.size, opaque: opaque / n};
}"""

# Centre of display slot ``slot`` of a grid canvas, in page coordinates, and the channel shown there.
SLOT_JS = """([c, slot]) => {
  const r = c.getBoundingClientRect();
  const cols = Number(c.dataset.cols), cell = Number(c.dataset.cell);
  return {x: r.left + (slot % cols + 0.5) * cell, y: r.top + (Math.floor(slot / cols) + 0.5) * cell,
          channel: Number(c.dataset.order.split(',')[slot]), slots: c.dataset.order.split(',').length};
}"""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


class Server:
    """A Jupyter-family server process: started, polled until it answers, stopped without leftovers."""

    def __init__(self, argv: Sequence[str], url: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.argv, self.url, self.log_path = list(argv), url, log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Launch and wait until ``url`` answers HTTP (any status below 500)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    return
            except urllib.error.HTTPError as err:
                if err.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.url} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGINT (Jupyter shuts its kernels down), then SIGKILL for anything of ours still running."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        family = _descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def jupyter_env(home: Path) -> dict[str, str]:
    """Private config, runtime, settings and workspace dirs under ``home``, with the JupyterLab news
    pop-up disabled through a page config there (nothing outside ``home`` is written)."""
    dirs = {k: home / k.lower() for k in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR",
    )}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    labconfig = dirs["JUPYTER_CONFIG_DIR"] / "labconfig"
    labconfig.mkdir(exist_ok=True)
    (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": {ANNOUNCEMENTS: True}}))
    return {k: str(v) for k, v in dirs.items()} | {"PYTHONUNBUFFERED": "1"}


@contextmanager
def voila_server(root: Path, home: Path) -> Iterator[str]:
    """Voila serving the notebooks in ``root``; yields the base URL (notebooks at ``/voila/render/NAME``)."""
    port = free_port()
    argv = [
        str(BIN / "voila"), str(root), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
        # kernels of closed pages go after 30 s idle; much less (5 s was tried) can cull a kernel whose
        # page is still connecting on a loaded machine, leaving every widget at "Loading widget..."
        "--MappingKernelManager.cull_interval=5", "--MappingKernelManager.cull_idle_timeout=30",
        "--VoilaConfiguration.show_tracebacks=True",
        # with the notebook package (7) installed beside Voila 0.5, its lab extension fails to load in
        # every Voila page (a module-federation error); Voila needs none of it
        "--VoilaConfiguration.extension_denylist=@jupyter-notebook/lab-extension",
    ]
    base = f"http://127.0.0.1:{port}"
    with Server(argv, base + "/", home / "voila.log", jupyter_env(home)):
        yield base


@contextmanager
def lab_server(root: Path, home: Path) -> Iterator[str]:
    """JupyterLab on ``root`` without a token, with ``window.jupyterapp`` exposed; yields the base URL."""
    port = free_port()
    argv = [
        str(BIN / "jupyter"), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
        "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={root}",
        "--MappingKernelManager.cull_interval=5", "--MappingKernelManager.cull_idle_timeout=5",
    ]
    base = f"http://127.0.0.1:{port}"
    with Server(argv, base + "/api", home / "lab.log", jupyter_env(home)):
        yield base


@contextmanager
def notebook_server(root: Path, home: Path) -> Iterator[str]:
    """Jupyter Notebook 7 on ``root`` without a token, with ``window.jupyterapp`` exposed; yields the base
    URL (notebooks at ``/notebooks/NAME``)."""
    port = free_port()
    argv = [
        str(BIN / "jupyter"), "notebook", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
        "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        "--JupyterNotebookApp.expose_app_in_browser=True", f"--ServerApp.root_dir={root}",
        "--MappingKernelManager.cull_interval=5", "--MappingKernelManager.cull_idle_timeout=5",
    ]
    base = f"http://127.0.0.1:{port}"
    with Server(argv, base + "/api", home / "notebook.log", jupyter_env(home)):
        yield base


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's headless Chromium (never ``playwright install``)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def write_notebook(path: Path, cells: Sequence[str]) -> Path:
    """A notebook of code cells with a python3 kernelspec (so no kernel picker ever appears)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, path)
    return path


def clean_copy(src: Path, dst_dir: Path) -> Path:
    """Copy a notebook without outputs or execution counts (so completion can be told from them)."""
    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    dst = dst_dir / src.name
    nbformat.write(nb, dst)
    return dst


def open_voila_page(page: Page, base: str, name: str, ready: str, timeout_ms: float = 90_000) -> None:
    """Open a notebook in Voila and wait for ``ready`` (a CSS selector); fail with the page text if a
    cell raised instead."""
    page.goto(f"{base}/voila/render/{name}", wait_until="domcontentloaded", timeout=timeout_ms)
    try:
        page.wait_for_function(
            """(sel) => document.querySelector(sel) || document.body.innerText.includes('Traceback')""",
            arg=ready, timeout=timeout_ms, polling=100,
        )
    except PlaywrightTimeoutError:
        raise AssertionError(
            f"{name} showed no {ready!r} within {timeout_ms / 1000:.0f} s; the page says:\n"
            f"{page.inner_text('body')[-2000:]}"
        ) from None
    if page.query_selector(ready) is None:
        raise AssertionError(f"a cell of {name} raised in Voila:\n{page.inner_text('body')[-4000:]}")


def canvas_stats(page: Page, selector: str, index: int = 0) -> dict[str, float]:
    """Pixel summary of the ``index``-th canvas matching ``selector``."""
    return page.locator(selector).nth(index).evaluate(CANVAS_STATS_JS)


def slot_centre(page: Page, grid_selector: str, slot: int) -> dict[str, float]:
    """Page coordinates of the centre of a grid slot, and the channel displayed there (DOM contract)."""
    grid = page.locator(grid_selector).first
    grid.scroll_into_view_if_needed()
    return grid.evaluate(f"(c) => ({SLOT_JS})([c, {slot}])")


class WireCounter:
    """Counts what the page receives over its websockets (frames and bytes), from the moment it is
    attached. Playwright delivers frames while the test waits on the page, so wait before reading."""

    def __init__(self, page: Page) -> None:
        self.bytes = 0
        self.frames = 0
        page.on("websocket", self._attach)

    def _attach(self, ws: WebSocket) -> None:
        ws.on("framereceived", self._frame)

    def _frame(self, payload: str | bytes) -> None:
        self.frames += 1
        self.bytes += len(payload) if isinstance(payload, bytes) else len(payload.encode())

    def reset(self) -> None:
        self.bytes = 0
        self.frames = 0


def shutdown_kernels(base: str) -> None:
    """Shut down every kernel of the (token-less) Jupyter server at ``base``."""
    with urllib.request.urlopen(f"{base}/api/kernels", timeout=10) as r:
        kernels = json.load(r)
    for k in kernels:
        req = urllib.request.Request(f"{base}/api/kernels/{k['id']}", method="DELETE")
        with urllib.request.urlopen(req, timeout=30):
            pass


# Summary of the notebook open in JupyterLab: per code cell its execution count and output types.
LAB_CELLS_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  const cells = nb.content.model.cells, out = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code' || !c.sharedModel.getSource().trim()) continue;
    const types = [], errors = [];
    for (let j = 0; j < c.outputs.length; j++) {
      const o = c.outputs.get(j);
      types.push(o.type);
      if (o.type === 'error') errors.push(o.toJSON().ename + ': ' + o.toJSON().evalue);
    }
    out.push({index: i, count: c.executionCount, types, errors});
  }
  return {cells: out, status: nb.sessionContext.session?.kernel?.status ?? 'none'};
}"""


def lab_run_all(page: Page, timeout_s: float = 180.0) -> list[dict[str, Any]]:
    """Run every cell of the notebook open in JupyterLab (fire and forget: awaiting the command can
    hang) and wait until the kernel is idle with each code cell executed, or a cell has failed. The
    notebook must start without execution counts (see :func:`clean_copy`)."""
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = page.evaluate(LAB_CELLS_JS)
        cells = state["cells"]
        if state["status"] == "idle" and (
            all(c["count"] is not None for c in cells) or any(c["errors"] for c in cells)
        ):
            return cells
        page.wait_for_timeout(250)
    raise TimeoutError(f"the notebook did not finish within {timeout_s:.0f} s: {state}")


# What JupyterLab shows around the widgets (active cell, mode, visible and collapsed cells): a notebook
# shortcut that fired on a key meant for a widget changes one of these.
NOTEBOOK_STATE_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  return {
    active: nb.activeCellIndex,
    mode: nb.mode,
    visible: nb.widgets.filter((w) => !w.isHidden).length,
    collapsed: nb.widgets.filter((w) => w.headingCollapsed === true).length,
  };
}"""


def open_offline(page: Page, path: Path, timeout_ms: int, *, painted: bool = True) -> list[str]:
    """Open the saved HTML file ``path`` with every non-file request aborted, once it has rendered (and,
    with ``painted``, once a view has painted); returns the URLs that were tried."""
    tried: list[str] = []

    def route(r):  # noqa: ANN001
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            tried.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-rendered]", timeout=timeout_ms)
    if painted:
        page.wait_for_selector(".cnnw-root[data-paint-count]", timeout=timeout_ms)
    return tried
