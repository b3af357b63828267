"""Export cost: ``to_png`` and ``save_html`` of the views, against the common way of saving the same
picture (a matplotlib figure: one subplot per channel / the heatmap over the image, ``savefig``) timed
in the same run. Prints a markdown table: medians, sizes and the ratio to the matplotlib baseline.

Run: ``.venv/bin/python bench/bench_export.py [--repeat N]`` (matplotlib is a dev dependency).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def mpl_grid(values: np.ndarray, path: str) -> None:
    """The tutorial picture of a layer: one imshow subplot per channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = values.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows))
    for ax, v in zip(np.ravel(axes), values):
        ax.imshow(v, cmap="viridis")
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.savefig(path)
    plt.close(fig)


def mpl_overlay(image: np.ndarray, heat: np.ndarray, path: str) -> None:
    """The tutorial picture of an attribution: the heatmap over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image)
    ax.imshow(heat, cmap="inferno", alpha=0.5)
    ax.axis("off")
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from cnn_widgets import wire
    from cnn_widgets.widgets.activation_browser import ActivationBrowser
    from cnn_widgets.widgets.attribution_view import AttributionView
    from cnn_widgets.widgets.filter_grid import FilterGrid
    from cnn_widgets.zoo import load_shapesnet, resnet18_like, shapes_dataset

    model = load_shapesnet()
    images, _, _ = shapes_dataset(1)
    resnet = resnet18_like().eval()
    big = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
    av = AttributionView(model, images[0])
    av.wait()
    views = [
        ("ShapesNet ActivationBrowser", ActivationBrowser(model, images[0], channel=2)),
        ("ShapesNet FilterGrid", FilterGrid(model)),
        ("ShapesNet AttributionView", av),
        ("ResNet-18-shaped ActivationBrowser, 224²", ActivationBrowser(resnet, big)),
    ]
    print("| view | `to_png` | PNG | matplotlib `savefig` of the same picture | ratio | `save_html` | HTML |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        png, html, ref = (os.path.join(tmp, n) for n in ("v.png", "v.html", "ref.png"))
        for name, view in views:
            ours = median_ms(lambda: view.to_png(png), args.repeat)
            page = median_ms(lambda: view.save_html(html), max(1, args.repeat // 2))
            if isinstance(view, AttributionView):
                picture = wire.decode(view._canvas._image)
                heat = wire.decode(view._canvas._result["map"])[0]
                base = median_ms(lambda: mpl_overlay(picture, heat, ref), args.repeat)
            elif isinstance(view, FilterGrid):
                w = wire.decode(view._weights["tensor"]).mean(axis=1)
                base = median_ms(lambda: mpl_grid(w, ref), args.repeat)
            else:
                values = wire.decode(view._layers.get(view.layer))
                base = median_ms(lambda: mpl_grid(values, ref), args.repeat)
            print(f"| {name} | {ours:.0f} ms | {os.path.getsize(png) / 1024:.0f} KB | {base:.0f} ms | "
                  f"{base / ours:.1f}× | {page:.0f} ms | {os.path.getsize(html) / 2**20:.2f} MB |", flush=True)
            view.close()


if __name__ == "__main__":
    main()
