"""A big model (Voila + headless Chromium): display → first paint, and a held arrow key in lazy mode.

Model ``resnet50_like()`` (torchvision's ResNet-50 layout, 25.6 M parameters), one 224×224 image: 158
layers, 31 MB encoded. Two variants in the same run, each in its own Voila kernel and page, rounds
interleaved after one unmeasured warm-up display per page (the kernel's first forward pass):

* **current**: this checkout.
* **baseline**: the package as of ``--baseline-ref`` (default: the last commit before the staged first
  paint and the one-fetch-in-flight store), exported with ``git archive`` and its bundle built with this
  checkout's esbuild; its kernel imports that copy (the model comes from this checkout's zoo file).

Each round, per variant: click a button whose handler closes the previous widget, builds
``ActivationBrowser(model, image)`` and displays it in an ``Output``; **display → first paint** is from the
click (``performance.now()``) to the new root's ``data-painted-at``, with the kernel's build time beside
it. Then, per ``--intervals`` entry, the same with ``budget_mb=--lazy-budget-mb`` (lazy), and after
``--settle`` seconds **hold ArrowRight** on its slider: ``--hold`` keydowns that many ms apart, then keyup.
Reported: time from keyup (and from the last keydown) to the paint of the layer the slider stopped at;
layers fetched (the layers passed named in the page's fetch messages, from the hold until 1 s after that
paint); MB the page received in that time; distinct layers painted on the way.

Targets: first paint ≤ 1.5 s; final layer painted ≤ 100 ms after keyup; layers fetched well below those
passed when keys come faster than the kernel answers. Run:
``.venv/bin/python bench/bench_big.py [--rounds 3] [--hold 40] [--intervals 33 0]`` (3–10 minutes: the
baseline builds its widget with torch's default threads, slow on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
import harness  # noqa: E402
from test_big_model import FetchLog  # noqa: E402

REPO = harness.REPO
BASELINE_REF = "83915e3"  # the last commit before the staged first paint and the coalescing store
AB = ".cnnw-activation-browser"

SETUP = """\
import importlib.util, json, sys, time
{path}
import torch
import ipywidgets as W
from IPython.display import display
import cnn_widgets
assert cnn_widgets.__file__.startswith({root!r}), cnn_widgets.__file__
spec = importlib.util.spec_from_file_location("bench_resnet", {resnet!r})
resnet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(resnet)
model = resnet.resnet50_like()
image = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
out = W.Output()
info = W.Label()
info.add_class("bench-info")
layer = W.Label()
layer.add_class("bench-layer")
buttons = [W.Button(description="show"), W.Button(description="show lazy")]
buttons[0].add_class("bench-show")
buttons[1].add_class("bench-show-lazy")
shown = []

def show(**kwargs):
    for widget in shown:
        widget.close()
    shown.clear()
    start = time.perf_counter()
    ab = cnn_widgets.ActivationBrowser(model, image, **kwargs)
    built = time.perf_counter() - start
    shown.append(ab)
    layer.value = ab.layer
    ab.observe(lambda change: setattr(layer, "value", change["new"]), "layer")
    out.clear_output()
    with out:
        display(ab)
    info.value = json.dumps({{"built_s": built, "mode": ab._mode, "mb": ab.total_bytes() / 2**20,
                             "layers": ab.layers, "stamp": time.time()}})

buttons[0].on_click(lambda _: show())
buttons[1].on_click(lambda _: show(budget_mb={budget}))
display(W.VBox([*buttons, info, layer, out]))
"""

PROBE = """() => {
  if (window.__bench) return;
  window.__bench = {clickAt: 0, downs: [], upAt: 0, paints: []};
  new MutationObserver((records) => {
    for (const r of records) {
      const el = r.target;
      if (!el.classList || !el.classList.contains('cnnw-activation-browser')) continue;
      window.__bench.paints.push([el.dataset.paintedLayer, Number(el.dataset.paintedAt)]);
    }
  }).observe(document.documentElement,
             {subtree: true, attributes: true, attributeFilter: ['data-paint-count']});
  document.addEventListener('keydown', (e) => { window.__bench.downs.push(e.timeStamp); }, true);
  document.addEventListener('keyup', (e) => { window.__bench.upAt = e.timeStamp; }, true);
}"""

CLICK = """(button) => {
  document.querySelectorAll('.cnnw-activation-browser').forEach((e) => { e.dataset.benchOld = '1'; });
  window.__bench.clickAt = performance.now();
  document.querySelector(button).click();
}"""

NEW_ROOT = f"{AB}:not([data-bench-old])"


@dataclass
class Hold:
    """Held-key measurements, one entry per round: ms from keyup and from the last keydown to the final
    layer's paint, layers fetched, MB received and layers painted on the way."""

    up_to_paint_ms: list[float] = field(default_factory=list)
    key_to_paint_ms: list[float] = field(default_factory=list)
    fetched: list[int] = field(default_factory=list)
    mb: list[float] = field(default_factory=list)
    painted: list[int] = field(default_factory=list)


@dataclass
class Series:
    """One variant's measurements, one entry per round (``holds`` by keydown interval)."""

    built_s: list[float] = field(default_factory=list)
    first_paint_s: list[float] = field(default_factory=list)
    lazy_built_s: list[float] = field(default_factory=list)
    lazy_first_paint_s: list[float] = field(default_factory=list)
    holds: dict[int, Hold] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def export_baseline(ref: str, dest: Path) -> Path:
    """The package as of ``ref`` under ``dest``, with its front-end bundle built."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "cnn_widgets", "js/src", "js/build.mjs",
                              "js/package.json"], check=True, capture_output=True).stdout
    dest.mkdir()
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "js" / "node_modules").symlink_to(REPO / "js" / "node_modules")
    subprocess.run(["node", "build.mjs"], cwd=dest / "js", check=True, capture_output=True)
    return dest


def display(page: Page, button: str) -> tuple[float, dict]:
    """Click ``button`` (a new widget replaces the old) and wait for its first paint: (seconds from the
    click, the kernel's info about the widget)."""
    page.evaluate(PROBE)
    stamp = page.inner_text(".bench-info")
    page.evaluate(CLICK, button)
    # the first paint may happen before the view is in the document (no mutation to observe), and
    # nothing paints again until a key is pressed, so the root's stamp once it is there is the first
    page.wait_for_selector(f"{NEW_ROOT}[data-paint-count]", state="attached", timeout=180_000)
    page.wait_for_function("(old) => document.querySelector('.bench-info').innerText !== old", arg=stamp,
                           timeout=60_000)
    root = page.evaluate(f"() => ({{...document.querySelector('{NEW_ROOT}').dataset}})")
    assert root["paintCount"] == "1", root
    first = float(root["paintedAt"]) - page.evaluate("() => window.__bench.clickAt")
    return first / 1000, json.loads(page.inner_text(".bench-info"))


def hold_key(page: Page, log: FetchLog, layers: list[str], hold: Hold, presses: int, interval_ms: int) -> None:
    """Hold ArrowRight on the slider of the widget on screen for ``presses`` keydowns; appends to ``hold``."""
    page.locator(f"{NEW_ROOT} input.cnnw-layer-slider").focus()
    page.evaluate("() => { window.__bench.downs = []; window.__bench.upAt = 0; window.__bench.paints = []; }")
    log.reset()
    for _ in range(presses):
        page.keyboard.down("ArrowRight")
        if interval_ms:
            page.wait_for_timeout(interval_ms)
    page.keyboard.up("ArrowRight")
    final = layers[presses]
    page.wait_for_function(
        "([sel, layer]) => document.querySelector(sel).dataset.paintedLayer === layer",
        arg=[NEW_ROOT, final], timeout=60_000, polling="raf",
    )
    page.wait_for_timeout(1000)
    t = page.evaluate("() => window.__bench")
    painted_at = next(at for name, at in t["paints"] if name == final)
    hold.up_to_paint_ms.append(max(0.0, painted_at - t["upAt"]))
    hold.key_to_paint_ms.append(painted_at - t["downs"][-1])
    passed = set(layers[1:presses + 1])
    hold.fetched.append(len([n for n in log.requested if n in passed]))
    hold.mb.append(log.bytes / 2**20)
    hold.painted.append(len({name for name, at in t["paints"] if at <= painted_at}))
    page.wait_for_function("(f) => document.querySelector('.bench-layer').innerText === f", arg=final,
                           timeout=10_000)


def round_trip(page: Page, log: FetchLog, series: Series, args: argparse.Namespace) -> None:
    """On ``page``: display at the default budget, then per hold interval display lazily and hold the key.
    Appends to ``series``."""
    first, info = display(page, "button.bench-show")
    layers = info.pop("layers")
    series.info = info | {"layers": len(layers)}
    series.built_s.append(info["built_s"])
    series.first_paint_s.append(first)
    for interval in args.intervals:
        page.wait_for_timeout(args.settle * 1000)
        first, info = display(page, "button.bench-show-lazy")
        assert info["mode"] == "lazy", info
        series.lazy_built_s.append(info["built_s"])
        series.lazy_first_paint_s.append(first)
        page.wait_for_timeout(args.settle * 1000)
        hold_key(page, log, layers, series.holds.setdefault(interval, Hold()), args.hold, interval)


def med(values: list[float]) -> float:
    return statistics.median(values)


def table(results: dict[str, Series], args: argparse.Namespace) -> str:
    cur = results["current"]
    lines = [
        f"Big model — Voila + Chromium (headless), resnet50_like, 224² image, {cur.info['layers']} layers, "
        f"{cur.info['mb']:.1f} MB encoded; medians of {args.rounds} interleaved rounds after one warm-up",
        "",
        "Display: click → first paint (kernel build time beside it), at the default budget_mb and at "
        f"budget_mb={args.lazy_budget_mb:g} (lazy)",
        "",
        "| variant | build (s) | first paint (s) | build, lazy (s) | first paint, lazy (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in results.items():
        lines.append(f"| {name} | {med(s.built_s):.2f} | {med(s.first_paint_s):.2f} | "
                     f"{med(s.lazy_built_s):.2f} | {med(s.lazy_first_paint_s):.2f} |")
    lines += [
        "",
        f"Held ArrowRight in lazy mode: {args.hold} keydowns, then keyup",
        "",
        "| variant | keydown every | key up → final layer painted (ms) | last keydown → painted (ms) | "
        "layers fetched / passed | MB received | layers painted on the way |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for interval in args.intervals:
        for name, s in results.items():
            h = s.holds[interval]
            lines.append(f"| {name} | {interval} ms | {med(h.up_to_paint_ms):.0f} | "
                         f"{med(h.key_to_paint_ms):.0f} | {med(h.fetched):.0f} / {args.hold} | "
                         f"{med(h.mb):.1f} | {med(h.painted):.0f} |")
    first = max(med(cur.first_paint_s), med(cur.lazy_first_paint_s))
    up = max(med(h.up_to_paint_ms) for h in cur.holds.values())
    lines += ["", f"current: first paint ≤ {first:.2f} s ({'✅' if first <= 1.5 else '❌'} ≤ 1.5 s); "
                  f"final layer ≤ {up:.0f} ms after keyup ({'✅' if up <= 100 else '❌'} ≤ 100 ms)."]
    if "baseline" in results:
        base = results["baseline"]
        lines.append(
            f"baseline / current: first paint {med(base.first_paint_s) / med(cur.first_paint_s):.1f}× "
            f"(lazy {med(base.lazy_first_paint_s) / med(cur.lazy_first_paint_s):.1f}×), build "
            f"{med(base.built_s) / med(cur.built_s):.1f}×"
        )
        for interval in args.intervals:
            b, c = base.holds[interval], cur.holds[interval]
            lines[-1] += (
                f"; keydown every {interval} ms: layers fetched "
                f"{med(b.fetched) / max(med(c.fetched), 1):.1f}×, "
                f"MB {med(b.mb) / max(med(c.mb), 1e-3):.1f}×, key up → painted "
                f"{med(b.up_to_paint_ms):.0f} vs {med(c.up_to_paint_ms):.0f} ms"
            )
        lines[-1] += "."
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    parser.add_argument("--hold", type=int, default=40, help="ArrowRight keydowns per hold (layers passed)")
    parser.add_argument("--intervals", type=int, nargs="+", default=[33, 0],
                        help="ms between keydowns, one hold each (33: a keyboard's auto-repeat; 0: as fast as "
                             "the browser takes them, a stand-in for a kernel slower than the repeat)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after each first paint")
    parser.add_argument("--lazy-budget-mb", type=float, default=8.0, help="budget_mb of the held-key widget")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the baseline package")
    parser.add_argument("--no-baseline", action="store_true", help="measure only this checkout")
    args = parser.parse_args()
    if not 1 <= args.hold <= 150:
        parser.error("resnet50_like has 158 layers: keep 1 ≤ --hold ≤ 150")
    with tempfile.TemporaryDirectory() as tmp:
        root, home = Path(tmp, "nb"), Path(tmp, "home")
        root.mkdir()
        home.mkdir()
        resnet = str(REPO / "cnn_widgets" / "zoo" / "resnet.py")
        variants = {"current": (str(REPO), "")}
        if not args.no_baseline:
            base = export_baseline(args.baseline_ref, Path(tmp, "baseline"))
            variants["baseline"] = (str(base), f"sys.path.insert(0, {str(base)!r})")
        for name, (pkg, path) in variants.items():
            cell = SETUP.format(path=path, root=pkg, resnet=resnet, budget=args.lazy_budget_mb)
            harness.write_notebook(root / f"{name}.ipynb", [cell])
        results = {name: Series() for name in variants}
        with harness.voila_server(root, home) as base_url, sync_playwright() as p:
            browser = harness.launch_chromium(p)
            try:
                pages = {}
                for name in variants:
                    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                    log = FetchLog(page)
                    harness.open_voila_page(page, base_url, f"{name}.ipynb", "button.bench-show",
                                            timeout_ms=180_000)
                    page.wait_for_timeout(2000)  # let the page finish starting its widget manager
                    pages[name] = (page, log)
                for name in variants:  # warm-up: the kernel's first forward pass and the page's first view
                    display(pages[name][0], "button.bench-show")
                for r in range(args.rounds):
                    order = list(variants) if r % 2 == 0 else list(reversed(variants))
                    for name in order:
                        round_trip(*pages[name], results[name], args)
            finally:
                browser.close()
    print(table(results, args))
    print(f"\n(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
