"""Explorer in JupyterLab + headless Chromium: time from display to every panel painted, on ShapesNet.

One notebook in a real JupyterLab: a setup cell loads ShapesNet and 8 of its images and shows two buttons
and an ``Output``. Each round clicks a button whose handler closes the previous widget, builds the widget
and displays it in the ``Output``:

* **explorer**: ``Explorer(model, images, labels=CLASSES)``: thumbnail strip, ModelSummary, FilterGrid,
  ActivationBrowser and AttributionView (Grad-CAM heatmap and the bqplot prediction bars);
* **baseline**: ``ActivationBrowser(model, images[0])`` alone, the single widget the Explorer's slowest
  part is, measured in the same run and kernel.

**display → painted** runs from the click (``performance.now()``) to the last panel's first paint: each
view's root records its paint time in ``data-painted-at`` (dom.js ``markPainted``; the AttributionView's
when the heatmap is on screen), the prediction bars count when their ``rect`` elements exist (seen by a
``requestAnimationFrame`` loop). The kernel's build time is printed beside it. Rounds alternate the
order of the two variants after one unmeasured warm-up each. Target: the Explorer ≤ 1.5 s.

Run: ``.venv/bin/python bench/bench_explorer.py [--rounds 5]`` (about a minute plus Lab's start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
import harness  # noqa: E402

REPO = harness.REPO
PANELS = {
    "strip": ".cnnw-image-strip",
    "summary": ".cnnw-model-summary",
    "filters": ".cnnw-filter-grid",
    "activations": ".cnnw-activation-browser",
    "attribution": ".cnnw-attribution-view",
}
BARS = ".cnnw-predictions rect.bar"

SETUP = """\
import json, time
import ipywidgets as W
from IPython.display import display
import cnn_widgets
assert cnn_widgets.__file__.startswith({root!r}), cnn_widgets.__file__
from cnn_widgets import zoo
from cnn_widgets.widgets.activation_browser import ActivationBrowser
from cnn_widgets.widgets.explorer import Explorer

model = zoo.load_shapesnet()
images, labels, _ = zoo.shapes_dataset(8, seed=2024)
out = W.Output()
info = W.Label()
info.add_class("bench-info")
buttons = {{"explorer": W.Button(description="explorer"), "baseline": W.Button(description="baseline")}}
for name, button in buttons.items():
    button.add_class(f"bench-{{name}}")
shown = []

def show(kind):
    for widget in shown:
        widget.close()
    shown.clear()
    start = time.perf_counter()
    if kind == "explorer":
        widget = Explorer(model, list(zip(images, labels)), labels=list(zoo.CLASSES))
    else:
        widget = ActivationBrowser(model, images[0])
    built = time.perf_counter() - start
    shown.append(widget)
    out.clear_output()
    with out:
        display(widget)
    info.value = json.dumps({{"kind": kind, "built_s": built, "stamp": time.time()}})

for name, button in buttons.items():
    button.on_click(lambda _, name=name: show(name))
display(W.VBox([*buttons.values(), info, out]))
"""

# Marks the views on screen as old, clicks, and watches every frame for the new views' first paints.
CLICK = """([button, panels, bars]) => {
  for (const sel of [...Object.values(panels), bars].filter(Boolean)) {
    document.querySelectorAll(sel).forEach((e) => { e.dataset.benchOld = '1'; });
  }
  const t = {clickAt: performance.now(), painted: {}};
  window.__bench = t;
  const firstPaint = (el) => {
    // a root painted once holds its first paint time; a later repaint would move it, so keep the first seen
    const at = Number(el.dataset.paintedAt);
    return el.dataset.paintCount === '1' ? at : Math.min(at, performance.now());
  };
  const look = () => {
    for (const [name, sel] of Object.entries(panels)) {
      if (t.painted[name] !== undefined) continue;
      const el = document.querySelector(`${sel}:not([data-bench-old])[data-paint-count]`);
      if (el) t.painted[name] = firstPaint(el);
    }
    if (bars && t.painted.bars === undefined && document.querySelector(`${bars}:not([data-bench-old])`)) {
      t.painted.bars = performance.now();
    }
    if (Object.keys(t.painted).length < Object.keys(panels).length + (bars ? 1 : 0)) requestAnimationFrame(look);
  };
  document.querySelector(button).click();
  requestAnimationFrame(look);
}"""


def show(page: Page, kind: str, panels: dict[str, str], bars: str) -> tuple[float, dict[str, float], float]:
    """Click ``kind``'s button; return (s from click to the last panel's first paint, s per panel, the
    kernel's build time in s)."""
    stamp = page.inner_text(".bench-info")
    page.evaluate(CLICK, [f"button.bench-{kind}", panels, bars])
    want = len(panels) + (1 if bars else 0)
    page.wait_for_function(f"() => Object.keys(window.__bench.painted).length >= {want}", timeout=120_000,
                           polling=100)
    page.wait_for_function("(old) => document.querySelector('.bench-info').innerText !== old", arg=stamp,
                           timeout=60_000)
    t = page.evaluate("() => window.__bench")
    per = {name: (at - t["clickAt"]) / 1000 for name, at in t["painted"].items()}
    return max(per.values()), per, json.loads(page.inner_text(".bench-info"))["built_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per variant")
    args = parser.parse_args()
    explorer: list[float] = []
    baseline: list[float] = []
    built: dict[str, list[float]] = {"explorer": [], "baseline": []}
    parts: dict[str, list[float]] = {}
    variants = {
        "explorer": (PANELS, BARS),
        "baseline": ({"activations": PANELS["activations"]}, ""),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root, home = Path(tmp, "nb"), Path(tmp, "home")
        root.mkdir()
        home.mkdir()
        notebook = harness.write_notebook(root / "bench_explorer.ipynb", [SETUP.format(root=str(REPO))])
        with harness.lab_server(root, home) as base, sync_playwright() as p:
            browser = harness.launch_chromium(p)
            try:
                page = browser.new_context(viewport={"width": 1600, "height": 1200}).new_page()
                page.goto(f"{base}/lab/workspaces/{uuid.uuid4().hex}/tree/{notebook.name}?reset",
                          wait_until="domcontentloaded", timeout=120_000)
                page.locator(".jp-StatusBar-Widget", has_text="(ipykernel) | Idle").first.wait_for(
                    timeout=120_000)
                cells = harness.lab_run_all(page, timeout_s=300)
                assert not [c for c in cells if c["errors"]], cells
                page.locator("button.bench-explorer").wait_for(timeout=60_000)
                for kind, (panels, bars) in variants.items():  # warm-up: first forward passes, first views
                    show(page, kind, panels, bars)
                for r in range(args.rounds):
                    order = list(variants) if r % 2 == 0 else list(reversed(variants))
                    for kind in order:
                        total, per, build = show(page, kind, *variants[kind])
                        built[kind].append(build)
                        (explorer if kind == "explorer" else baseline).append(total)
                        if kind == "explorer":
                            for name, s in per.items():
                                parts.setdefault(name, []).append(s)
                harness.shutdown_kernels(base)
            finally:
                browser.close()
    med = statistics.median
    e, b = med(explorer), med(baseline)
    print(f"Explorer on ShapesNet, 8 images, JupyterLab + headless Chromium; medians of {args.rounds} "
          "alternating rounds after one warm-up each")
    print()
    print("| variant | build in the kernel (s) | display → all panels painted (s) |")
    print("|---|---:|---:|")
    print(f"| Explorer (5 panels + prediction bars) | {med(built['explorer']):.2f} | {e:.2f} |")
    print(f"| ActivationBrowser alone (baseline) | {med(built['baseline']):.2f} | {b:.2f} |")
    print()
    print("Explorer, display → each panel's first paint (s): "
          + ", ".join(f"{name} {med(v):.2f}" for name, v in sorted(parts.items(), key=lambda kv: med(kv[1]))))
    print(f"Explorer / ActivationBrowser alone: {e / b:.2f}×; Explorer {e:.2f} s "
          f"({'✅' if e <= 1.5 else '❌'} ≤ 1.5 s)")
    print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
