"""Metrics benchmark: the full methods × images table on ShapesNet (8 methods × 32 held-out images,
deletion and insertion AUC with the default blur baseline, plus the pointing game and mass inside the
mask), as the ``Metrics`` widget computes it, against baselines measured in the same run:

1. ``maps``: the attribution maps alone (one batched ``attribute`` call per method), so
   ``table / maps`` says what the metrics cost on top of the heatmaps.
2. ``one at a time``: ``deletion_auc`` + ``insertion_auc`` called per map and image with their default
   batch size, on the first ``--loose`` images (per curve), so the ratio says what batching many maps'
   perturbed images into shared forward passes (``cnn_widgets.metrics.curves``) gains.

Run: ``.venv/bin/python bench/bench_metrics.py`` (about a minute on two idle cores). The issue's target:
the table in under a minute here.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from cnn_widgets import attribute, zoo
from cnn_widgets.metrics import deletion_auc, insertion_auc
from cnn_widgets.widgets.metrics_view import STEPS, Metrics
from cnn_widgets.zoo.train import HELDOUT_SEED

METHODS = ["saliency", "input_x_gradient", "guided_backprop", "deconvolution", "grad_cam", "grad_cam_pp",
           "layer_cam", "eigen_cam"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=STEPS, help="curve steps (the widget's default)")
    parser.add_argument("--loose", type=int, default=4, help="images for the one-at-a-time baseline")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = zoo.load_shapesnet()
    images, _, masks = zoo.shapes_dataset(args.images, seed=HELDOUT_SEED)
    attribute(model, images[:2], "grad_cam")  # warm up

    start, cpu = time.perf_counter(), time.process_time()
    maps = {m: attribute(model, images, m) for m in METHODS}
    t_maps, c_maps = time.perf_counter() - start, time.process_time() - cpu

    start, cpu = time.perf_counter(), time.process_time()
    view = Metrics(model, images, METHODS, masks=masks, steps=args.steps, sample=0)
    view.wait()
    t_table, c_table = time.perf_counter() - start, time.process_time() - cpu
    missing = [r for r in view.table if r["deletion_auc"] is None or r["insertion_auc"] is None]
    if missing or view.error:
        raise SystemExit(f"the table is incomplete: {len(missing)} rows; {view.error}")

    start = time.perf_counter()
    for m in METHODS:
        a = maps[m]
        for i in range(args.loose):
            deletion_auc(model, images[i], a.map[i], a.target[i], steps=args.steps)
            insertion_auc(model, images[i], a.map[i], a.target[i], steps=args.steps)
    t_loose = time.perf_counter() - start

    n_curves = 2 * len(METHODS) * args.images
    per_batched = (t_table - t_maps) / n_curves
    per_loose = t_loose / (2 * len(METHODS) * args.loose)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"ShapesNet 64², {len(METHODS)} methods × {args.images} images, {args.steps} steps, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores, load average {load}\n")
    print("| what | wall s | CPU s | ratio (wall) |")
    print("|---|---:|---:|---:|")
    print(f"| attribution maps alone (baseline) | {t_maps:.1f} | {c_maps:.1f} | 1.00 |")
    print(f"| full table (maps + deletion + insertion + localisation) | {t_table:.1f} | {c_table:.1f} | "
          f"{t_table / t_maps:.2f} |")
    print(f"| per curve, batched: (table − maps) / {n_curves} | {per_batched * 1000:.1f} ms | | 1.00 |")
    print(f"| per curve, one at a time ({args.loose} images) | {per_loose * 1000:.1f} ms | | "
          f"{per_loose / per_batched:.2f} |")
    verdict = "under" if t_table < 60 else "OVER"
    print(f"\nfull table: {t_table:.1f} s ({verdict} the one-minute target)")


if __name__ == "__main__":
    main()
