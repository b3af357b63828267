"""Slider latency in Chromium via Voila: ActivationBrowser vs the common tutorial approach.

Same model (``resnet18_like``), same 224×224 image, same browser, same layer sequence:

* **ActivationBrowser**: keyboard focus on its layer slider, ``ArrowRight``; latency is from the keydown
  event's ``timeStamp`` to the root's ``data-painted-at`` (``performance.now()`` right after the pixels
  were put on the canvas), plus, for reference, to the next animation frame after that.
* **Baseline**: an ``ipywidgets.IntSlider`` over the layer index whose observer redraws an 8×8
  ``plt.imshow`` grid of that layer's first 64 channels into an ``Output`` (activations captured once
  beforehand, as tutorials do with hooks); ``ArrowRight`` on the slider handle; latency is from the
  keydown to the new ``<img>`` appearing in the Output (a MutationObserver). Nothing is drawn while Voila
  executes the notebook (that stalls page loads, see the README, "Facts about the stack"): the first figure comes from the first
  key press.

Both do two unmeasured warm-up moves first. Also reported: bytes the page received per move.
Targets: ActivationBrowser median ≤ 16 ms and ≥ 30× faster than the baseline.

Run: ``.venv/bin/python bench/bench_slider.py [--moves 40] [--baseline-moves 30]`` (about two minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
import harness  # noqa: E402

SETUP = """\
import torch
import ipywidgets as W
from IPython.display import display
from cnn_widgets.zoo import resnet18_like
model = resnet18_like()
image = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
"""

OURS = """\
from cnn_widgets import ActivationBrowser
display(ActivationBrowser(model, image))
"""

BASELINE = """\
import matplotlib.pyplot as plt
from cnn_widgets import capture_activations
acts = capture_activations(model, image)
names = [n for n, a in acts.items() if a.ndim == 4]
slider = W.IntSlider(value=0, min=0, max=len(names) - 1, description="layer")
out = W.Output()
out.add_class("bench-baseline-out")

def show(change):
    a = acts[names[change["new"]]][0]
    with out:
        out.clear_output(wait=True)
        fig, axes = plt.subplots(8, 8, figsize=(8, 8))
        for k, ax in enumerate(axes.flat):
            ax.imshow(a[k], cmap="viridis")
            ax.axis("off")
        fig.suptitle(names[change["new"]])
        plt.show()

slider.observe(show, "value")
display(W.VBox([slider, out]))
"""

OURS_PROBE = """() => {
  const root = document.querySelector('.cnnw-activation-browser');
  const slider = root.querySelector('input.cnnw-layer-slider');
  window.__bench = {keyAt: 0, frameAt: 0};
  slider.addEventListener('keydown', (e) => { window.__bench.keyAt = e.timeStamp; }, true);
  new MutationObserver(() => requestAnimationFrame(() => { window.__bench.frameAt = performance.now(); }))
    .observe(root, {attributes: true, attributeFilter: ['data-paint-count']});
  slider.focus();
}"""

BASELINE_PROBE = """() => {
  const out = document.querySelector('.bench-baseline-out');
  window.__bench = {keyAt: 0, imgAt: 0, src: null};
  document.addEventListener('keydown', (e) => { window.__bench.keyAt = e.timeStamp; }, true);
  new MutationObserver(() => {
    const img = out.querySelector('img');
    if (img && img.src !== window.__bench.src) {
      window.__bench.src = img.src;
      window.__bench.imgAt = performance.now();
    }
  }).observe(out, {childList: true, subtree: true, attributes: true, attributeFilter: ['src']});
  document.querySelector('.widget-slider .noUi-handle').focus();
}"""


@dataclass
class Moves:
    latencies_ms: list[float]
    frames_ms: list[float]
    kb_received: list[float]


def run_ours(page: Page, counter: harness.WireCounter, moves: int, warmup: int) -> Moves:
    page.evaluate(OURS_PROBE)
    result = Moves([], [], [])
    for i in range(warmup + moves):
        count = int(page.locator(".cnnw-activation-browser").get_attribute("data-paint-count"))
        counter.reset()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            """(count) => {
                 const d = document.querySelector('.cnnw-activation-browser').dataset;
                 return Number(d.paintCount) > count && window.__bench.frameAt > window.__bench.keyAt;
               }""",
            arg=count, timeout=10_000, polling="raf",
        )
        page.wait_for_timeout(100)  # let the kernel's small reply arrive before the next move
        t = page.evaluate(
            "() => ({key: window.__bench.keyAt, frame: window.__bench.frameAt,"
            " painted: Number(document.querySelector('.cnnw-activation-browser').dataset.paintedAt)})"
        )
        if i >= warmup:
            result.latencies_ms.append(t["painted"] - t["key"])
            result.frames_ms.append(t["frame"] - t["key"])
            result.kb_received.append(counter.bytes / 1024)
    return result


def run_baseline(page: Page, counter: harness.WireCounter, moves: int, warmup: int) -> Moves:
    page.evaluate(BASELINE_PROBE)
    result = Moves([], [], [])
    for i in range(warmup + moves):
        counter.reset()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "() => window.__bench.imgAt > window.__bench.keyAt", timeout=60_000, polling=10,
        )
        page.wait_for_timeout(300)  # the Output echoes its state; let that finish before the next move
        t = page.evaluate("() => ({key: window.__bench.keyAt, img: window.__bench.imgAt})")
        if i >= warmup:
            result.latencies_ms.append(t["img"] - t["key"])
            result.kb_received.append(counter.bytes / 1024)
    return result


def stats(values: list[float]) -> str:
    q = statistics.quantiles(values, n=10)
    return f"{statistics.median(values):.1f} | {q[-1]:.1f} | {min(values):.1f} | {max(values):.1f}"


def table(ours: Moves, base: Moves) -> str:
    ours_med = statistics.median(ours.latencies_ms)
    base_med = statistics.median(base.latencies_ms)
    speedup = base_med / ours_med
    lines = [
        "Slider latency — Voila + Chromium (headless), resnet18_like, 224² image, keyboard ArrowRight "
        "over the same layers; targets: ours median ≤ 16 ms, ≥ 30× faster",
        "",
        "| approach | moves | median (ms) | p90 (ms) | min (ms) | max (ms) | received per move (KB, median) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| `ActivationBrowser`: key → grid pixels on canvas | {len(ours.latencies_ms)} | "
        f"{stats(ours.latencies_ms)} | {statistics.median(ours.kb_received):.1f} |",
        f"| `ActivationBrowser`: key → next animation frame | {len(ours.frames_ms)} | {stats(ours.frames_ms)} | |",
        f"| `IntSlider` + 8×8 `plt.imshow` grid into `Output`: key → new image in DOM | "
        f"{len(base.latencies_ms)} | {stats(base.latencies_ms)} | {statistics.median(base.kb_received):.1f} |",
        "",
        f"Median speed-up: **{speedup:.0f}×** ({'✅' if speedup >= 30 else '❌'} ≥ 30×); ours "
        f"{ours_med:.1f} ms ({'✅' if ours_med <= 16 else '❌'} ≤ 16 ms).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=40, help="measured ActivationBrowser moves (≥ 30)")
    parser.add_argument("--baseline-moves", type=int, default=30, help="measured baseline moves (≥ 30)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured moves before each series")
    args = parser.parse_args()
    if min(args.moves, args.baseline_moves) + args.warmup > 58:
        parser.error("resnet18_like has 59 four-dimensional layer outputs: keep moves + warmup ≤ 58")
    with tempfile.TemporaryDirectory() as tmp:
        root, home = Path(tmp, "nb"), Path(tmp, "home")
        root.mkdir()
        home.mkdir()
        harness.write_notebook(root / "ours.ipynb", [SETUP, OURS])
        harness.write_notebook(root / "baseline.ipynb", [SETUP, BASELINE])
        with harness.voila_server(root, home) as base_url, sync_playwright() as p:
            browser = harness.launch_chromium(p)
            try:
                results = []
                for name, ready, run, moves in (
                    ("ours.ipynb", ".cnnw-activation-browser[data-paint-count]", run_ours, args.moves),
                    ("baseline.ipynb", ".bench-baseline-out", run_baseline, args.baseline_moves),
                ):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = context.new_page()
                    counter = harness.WireCounter(page)
                    harness.open_voila_page(page, base_url, name, ready, timeout_ms=180_000)
                    page.wait_for_timeout(1000)  # let the kernel finish sending before the first move
                    results.append(run(page, counter, moves, args.warmup))
                    context.close()
            finally:
                browser.close()
    print(table(*results))
    print(f"\n(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
