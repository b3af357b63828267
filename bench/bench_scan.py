"""Scan throughput and memory: ``cnn_widgets.dataset.scan`` vs a plain loop that only runs the model.

Throughput: ShapesNet (the bundled model), a ``DataLoader`` over 64×64 ShapesNet images in batches of
64, CPU. Per round the plain loop (``for x, y in loader: model(x)`` under ``torch.no_grad``) and each
scan variant run interleaved, rotating which goes first, so machine noise hits them alike; the
throughput ratio is plain time / scan time per round, reported as the median (and quartiles) over
rounds. Target: the scan of one layer (``by="max"``) at ≥ 0.85× the plain loop's images/s.

Memory: peak resident memory (``ru_maxrss``) of a fresh process that scans N images streamed from an
``IterableDataset`` (256 generated per step, so the data never sits in memory), for growing N; the scan
keeps k × channels per layer plus 16 bytes per image (prediction and label), so the peak must stay flat.

Run: ``.venv/bin/python bench/bench_scan.py [--images 1024] [--rounds 9] [--sizes 1000 5000 20000]``
(about 5 minutes on a quiet 2-core machine with the defaults; ``--threads`` sets torch's intra-op threads,
default 1: on a shared 2-core machine a second thread mostly waits).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from cnn_widgets.dataset import scan
from cnn_widgets.zoo import load_shapesnet, shapes_dataset

TARGET = 0.85
LAYER = "features.conv4"
ALL_CONVS = ["features.conv1", "features.conv2", "features.conv3", "features.conv4"]


def variants(loader: DataLoader) -> dict[str, Callable[[], object]]:
    """The plain loop and the scan variants over the same loader and model."""
    model = load_shapesnet()

    def plain() -> object:
        with torch.no_grad():
            for x, _ in loader:
                model(x)
        return None

    def run(layers: str | list[str] = LAYER, by: str = "max") -> Callable[[], object]:
        return lambda: scan(model, loader, layers, by=by, progress=False)

    return {
        "plain": plain,
        "scan max, 1 layer": run(),
        "scan mean, 1 layer": run(by="mean"),
        "scan max, 4 conv layers": run(ALL_CONVS),
        "scan relevance, 1 layer": run(by="relevance"),
    }


def throughput(images: int, rounds: int) -> dict[str, Any]:
    x, y, _ = shapes_dataset(images, seed=1)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False)
    runs = variants(loader)
    order = list(runs)
    times: dict[str, list[float]] = {k: [] for k in order}
    for key in order:  # warm-up: first-call costs (allocator, lazy inits) off the books
        runs[key]()
    for r in range(rounds):
        shift = r % len(order)
        for key in order[shift:] + order[:shift]:
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
    ratios = {k: [p / t for p, t in zip(times["plain"], v)] for k, v in times.items()}
    return {
        "images": images,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "ratio": {k: statistics.median(v) for k, v in ratios.items()},
        "quartiles": {k: statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3 for k, v in ratios.items()},
    }


class Stream(IterableDataset):
    """``n`` ShapesNet images with labels, generated 256 at a time (a different seed per step)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step, start in enumerate(range(0, self.n, 256)):
            x, y, _ = shapes_dataset(min(256, self.n - start), seed=1000 + step)
            yield x, y


def resident_mb() -> float:
    """Current resident memory of this process in MB (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return float("nan")


def peak_rss_child(n: int) -> dict[str, float]:
    """In this (fresh) process: peak RSS after a warm-up scan of 256 images and after scanning ``n``
    streamed images, and the resident memory left at the end, in MB."""
    model = load_shapesnet()
    scan(model, Stream(256), ALL_CONVS, progress=False)  # warm: the first chunk and batch are allocated
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = scan(model, Stream(n), ALL_CONVS, progress=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "before_mb": before, "peak_mb": after, "rss_end_mb": resident_mb(), "seconds": seconds,
            "count": result.count}


def memory(sizes: list[int], threads: int) -> list[dict[str, float]]:
    out = []
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--child-memory", str(n), "--threads", str(threads)],
            check=True, capture_output=True, text=True,
        )
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def report(tp: dict[str, Any], mem: list[dict[str, float]]) -> str:
    med, ratio, quart = tp["median_s"], tp["ratio"], tp["quartiles"]
    n = tp["images"]
    lines = [
        f"Scan throughput — ShapesNet, {n} images of 64×64 in a DataLoader (batches of 64), CPU "
        f"({torch.get_num_threads()} threads), interleaved rounds; target ≥ {TARGET}× the plain loop's images/s",
        "",
        "| variant | median s | images/s | throughput vs plain (median of rounds) | quartiles |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, seconds in med.items():
        q1, _, q3 = quart[key]
        r = ratio[key]
        verdict = (" ✅" if r >= TARGET else " ❌") if key == "scan max, 1 layer" else ""
        lines.append(f"| {key} | {seconds:.2f} | {n / seconds:.0f} | {r:.3f}×{verdict} | {q1:.2f}–{q3:.2f} |")
    if mem:
        lines += [
            "",
            "Peak memory — scan of the 4 conv layers (k=16) over N streamed images, fresh process each",
            "",
            "| N images | peak RSS after a 256-image warm-up (MB) | peak RSS after N (MB) | growth (MB) | "
            "resident at the end (MB) | s |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in mem:
            lines.append(
                f"| {row['n']:,} | {row['before_mb']:.0f} | {row['peak_mb']:.0f} | "
                f"{row['peak_mb'] - row['before_mb']:.1f} | {row['rss_end_mb']:.0f} | {row['seconds']:.0f} |"
            )
        lines.append(
            f"\nPeak after scanning {mem[-1]['n']:,} vs {mem[0]['n']:,} images: "
            f"{mem[-1]['peak_mb'] - mem[0]['peak_mb']:+.1f} MB"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="images per throughput round")
    parser.add_argument("--rounds", type=int, default=9, help="measured rounds per variant")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000], help="data set sizes for memory")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_memory is not None:
        print(json.dumps(peak_rss_child(args.child_memory)))
        return
    tp = throughput(args.images, args.rounds)
    mem = memory(args.sizes, args.threads) if args.sizes else []
    print(report(tp, mem))
    print(f"\n(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
