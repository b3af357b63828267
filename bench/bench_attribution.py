"""Attribution benchmarks on the ResNet-18-shaped model at 224², printed as markdown tables.

1. Wrapper overhead: ``cnn_widgets.attribute`` against Captum called directly with the same arguments,
   for integrated gradients (50 steps) and Grad-CAM; runs interleaved (alternating which goes first),
   medians compared in the same run. Target: ≤ 1.05×.
2. Each method's time with its default options (median of three runs), with the ratio to saliency.
3. Cancel latency of slow methods: a cancel requested from another thread at 40% of the method's time,
   as the widget does it, until ``attribute`` has returned.

Run: ``.venv/bin/python bench/bench_attribution.py`` (about two and a half minutes on two idle cores).
"""

from __future__ import annotations

import argparse
import math
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

from cnn_widgets import METHODS, Cancelled, attribute
from cnn_widgets.zoo.resnet import resnet18_like

TARGET = 3
LAYER = "layer4"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def overhead(
    model: torch.nn.Module, pixels: torch.Tensor, rounds: dict[str, int]
) -> list[tuple[str, float, float, tuple[float, float, float]]]:
    """(case, median Captum seconds, median wrapper / median Captum, quartiles of the per-round ratios)
    for IG and Grad-CAM; the quartiles show how noisy the machine was."""
    x = pixels[None]

    def captum_ig() -> object:
        return IntegratedGradients(model).attribute(x, target=TARGET, n_steps=50)

    def ours_ig() -> object:
        return attribute(model, pixels, "integrated_gradients", target=TARGET, n_steps=50)

    def captum_grad_cam() -> object:
        raw = LayerGradCam(model, model.layer4).attribute(x, target=TARGET, relu_attributions=True)
        return LayerAttribution.interpolate(raw, tuple(x.shape[2:]), interpolate_mode="bilinear")

    def ours_grad_cam() -> object:
        return attribute(model, pixels, "grad_cam", target=TARGET, layer=LAYER)

    rows = []
    for case, direct, ours in (
        ("integrated_gradients (50 steps)", captum_ig, ours_ig),
        ("grad_cam", captum_grad_cam, ours_grad_cam),
    ):
        direct(), ours()  # warm-up
        times_direct, times_ours = [], []
        for r in range(rounds[case]):
            pair = (direct, ours) if r % 2 == 0 else (ours, direct)
            for fn in pair:
                (times_direct if fn is direct else times_ours).append(timed(fn))
        med_direct, med_ours = statistics.median(times_direct), statistics.median(times_ours)
        per_round = [o / d for o, d in zip(times_ours, times_direct)]
        quartiles = tuple(statistics.quantiles(per_round, n=4)) if len(per_round) > 1 else (per_round[0],) * 3
        rows.append((case, med_direct, med_ours / med_direct, quartiles))
    return rows


def per_method(model: torch.nn.Module, pixels: torch.Tensor) -> list[tuple[str, float | None, str]]:
    """(method, seconds or None, note) with default options."""
    rows = []
    for name, info in METHODS.items():
        layer = LAYER if info.needs_layer else None
        times = []
        note = "slow: progress + cancel" if info.slow else ""
        try:
            for _ in range(3):
                torch.manual_seed(0)
                np.random.seed(0)
                times.append(timed(lambda: attribute(model, pixels, name, target=TARGET, layer=layer)))
        except ValueError as e:
            rows.append((name, None, str(e).split(";")[0].split(". ")[0]))
            continue
        rows.append((name, statistics.median(times), note))
    return rows


def cancel_latency(
    model: torch.nn.Module, pixels: torch.Tensor, durations: dict[str, float]
) -> list[tuple[str, float, float]]:
    """(method, when the cancel was requested, seconds from the request until attribute() returned)
    for the slow methods; the cancel comes at 40% of the method's measured time."""
    rows = []
    for name, info in METHODS.items():
        if not info.slow or name not in durations:
            continue
        after = 0.4 * durations[name]
        stop = threading.Event()
        done: dict[str, float] = {}

        def check(fraction: float) -> None:
            if stop.is_set():
                raise Cancelled

        def work(name: str = name, layer: str | None = LAYER if info.needs_layer else None) -> None:
            try:
                attribute(model, pixels, name, target=TARGET, layer=layer, progress=check)
            except Cancelled:
                done["at"] = time.perf_counter()

        thread = threading.Thread(target=work)
        thread.start()
        time.sleep(after)
        requested = time.perf_counter()
        stop.set()
        thread.join()
        rows.append((name, after, done["at"] - requested if "at" in done else float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--ig-rounds", type=int, default=9)
    parser.add_argument("--cam-rounds", type=int, default=31)
    args = parser.parse_args()
    model = resnet18_like(num_classes=1000)
    pixels = torch.rand((3, args.size, args.size), generator=torch.Generator().manual_seed(0))
    print(f"ResNet-18-shaped model, {args.size}×{args.size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")

    rounds = {"integrated_gradients (50 steps)": args.ig_rounds, "grad_cam": args.cam_rounds}
    print("| case | rounds | Captum direct (s, median) | cnn_widgets / Captum (medians) | per-round ratio quartiles |")
    print("|---|---:|---:|---:|---|")
    for case, seconds, ratio, (q1, q2, q3) in overhead(model, pixels, rounds):
        print(f"| {case} | {rounds[case]} | {seconds:.3f} | {ratio:.3f}× | {q1:.3f} / {q2:.3f} / {q3:.3f} |")

    rows = per_method(model, pixels)
    base = next(s for n, s, _ in rows if n == "saliency")
    print("\n| method | seconds | ratio to saliency | note |")
    print("|---|---:|---:|---|")
    for name, seconds, note in rows:
        if seconds is None:
            print(f"| {name} | – | – | not applicable: {note} |")
        else:
            print(f"| {name} | {seconds:.3f} | {seconds / base:.1f} | {note} |")

    durations = {name: seconds for name, seconds, _ in rows if seconds is not None}
    print("\n| slow method | cancel requested after (s) | cancel latency (s) |")
    print("|---|---:|---:|")
    for name, after, seconds in cancel_latency(model, pixels, durations):
        latency = "finished before the cancel" if math.isnan(seconds) else f"{seconds:.3f}"
        print(f"| {name} | {after:.2f} | {latency} |")


if __name__ == "__main__":
    main()
