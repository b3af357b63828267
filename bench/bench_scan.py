"""Scan throughput, memory and Ray: ``cnn_widgets.dataset.scan`` vs a plain loop that only runs the model.

Throughput: two models over the same 64×64 ShapesNet images in a ``DataLoader`` (batches of 64), CPU:
ShapesNet (the bundled model) and ``zoo.resnet18_like()`` (ResNet-18-shaped, untrained; 64² input keeps
a round short on 2 cores). Per round the plain loop (``for x, y in loader: model(x)`` under
``torch.no_grad``) and each scan variant run interleaved, rotating which goes first, so machine noise
hits them alike; the throughput ratio is plain time / scan time per round, reported as the median (and
quartiles) over rounds. Target: the scan of one layer (``by="max"``) at ≥ 0.85× the plain loop's images/s.

Memory: peak resident memory (``ru_maxrss``) of a fresh process that scans N images streamed from an
``IterableDataset`` (256 generated per step, so the data never sits in memory), for growing N; the scan
keeps k × channels per layer plus 16 bytes per image (prediction and label), so the peak must stay flat.

Ray: ``scan(..., backend="ray", shards=2..4)`` on a local Ray started here with
``ray.init(num_cpus=2)`` (two worker processes, one torch thread each) vs the local scan of the same
``(images, labels)`` in this process, interleaved rounds, ratio local time / Ray time; every Ray result
is compared with ``==`` to the local one. Ray's fixed costs are reported apart: ``ray.init()``, the first
Ray scan (worker processes start and import torch) over a later one, and a Ray scan of a single batch vs
the local one (the per-call cost: model and data into the object store, the Ray Data plan, merging). Ray
misses its fixed 30 s start-up deadline on 2 cores when the load average is ≥ 6, so the section is then
skipped with a line saying so (also when Ray is missing or fails to start); ``--no-ray`` skips it.

Run: ``.venv/bin/python bench/bench_scan.py [--images 1024] [--resnet-images 512] [--rounds 9]
[--sizes 1000 5000 20000] [--ray-images 1024] [--ray-rounds 5] [--no-ray]`` (about 13 minutes with the
defaults on a shared 2-core machine at load average 3–9, Ray's start-up included; ``--threads`` sets
torch's intra-op threads in this process, default 1: on a shared 2-core machine a second thread mostly
waits).
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
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from cnn_widgets.dataset import scan
from cnn_widgets.zoo import load_shapesnet, resnet18_like, shapes_dataset

TARGET = 0.85
RAY_MAX_LOAD = 6.0
SHARDS = (2, 3, 4)
# per model: its constructor, the one layer of the headline variant, and the layers of the multi-layer one
MODELS: dict[str, tuple[Callable[[], nn.Module], str, list[str]]] = {
    "ShapesNet": (load_shapesnet, "features.conv4",
                  ["features.conv1", "features.conv2", "features.conv3", "features.conv4"]),
    "ResNet-18-like": (resnet18_like, "layer4", ["layer1", "layer2", "layer3", "layer4"]),
}
ALL_CONVS = MODELS["ShapesNet"][2]


def interleaved(
    runs: dict[str, Callable[[], object]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds per round of each run, rotating the order each round, after one warm-up call of each
    (first-call costs off the books); also what each warm-up call returned."""
    order = list(runs)
    first = {key: runs[key]() for key in order}
    times: dict[str, list[float]] = {k: [] for k in order}
    for r in range(rounds):
        shift = r % len(order)
        for key in order[shift:] + order[:shift]:
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
    return times, first


def summary(times: dict[str, list[float]], baseline: str) -> dict[str, Any]:
    """Median seconds, and the per-round throughput ratio baseline time / time: median and quartiles."""
    ratios = {k: [b / t for b, t in zip(times[baseline], v)] for k, v in times.items()}
    return {
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "ratio": {k: statistics.median(v) for k, v in ratios.items()},
        "quartiles": {k: statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3 for k, v in ratios.items()},
    }


def variants(
    model: nn.Module, loader: DataLoader, layer: str, all_layers: list[str]
) -> dict[str, Callable[[], object]]:
    """The plain loop and the scan variants over the same loader and model."""

    def plain() -> object:
        with torch.no_grad():
            for x, _ in loader:
                model(x)
        return None

    def run(layers: str | list[str] = layer, by: str = "max") -> Callable[[], object]:
        return lambda: scan(model, loader, layers, by=by, progress=False)

    return {
        "plain": plain,
        "scan max, 1 layer": run(),
        "scan mean, 1 layer": run(by="mean"),
        f"scan max, {len(all_layers)} layers": run(all_layers),
        "scan relevance, 1 layer": run(by="relevance"),
    }


def throughput(name: str, images: int, rounds: int) -> dict[str, Any]:
    make, layer, all_layers = MODELS[name]
    x, y, _ = shapes_dataset(images, seed=1)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False)
    times, _ = interleaved(variants(make(), loader, layer, all_layers), rounds)
    return {"model": name, "layer": layer, "layers": all_layers, "images": images, **summary(times, "plain")}


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


def start_ray() -> tuple[Any, float] | str:
    """``(ray, seconds ray.init took)``, or why Ray cannot run here (a sentence for the report)."""
    load = os.getloadavg()[0]
    if load >= RAY_MAX_LOAD:
        return (f"skipped: load average {load:.1f} ≥ {RAY_MAX_LOAD:.0f} (Ray's agent misses its fixed 30 s "
                "start-up deadline on 2 cores)")
    try:
        import ray
        import ray.data
    except ImportError:
        return 'skipped: Ray Data is not installed (pip install "ray[data]")'
    start = time.perf_counter()
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as err:  # Ray raises assorted errors (timeouts, RuntimeError) when it cannot start
        ray.shutdown()
        return (f"skipped: Ray did not start at load average {os.getloadavg()[0]:.1f} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray, time.perf_counter() - start


def ray_model(name: str, images: int, rounds: int) -> dict[str, Any]:
    """Ray vs local scan of one layer (by max) of ``name`` over the same ``(images, labels)``."""
    make, layer, _ = MODELS[name]
    model = make()
    x, y, _ = shapes_dataset(images, seed=2)

    def run(data: tuple[torch.Tensor, torch.Tensor], shards: int | None = None) -> Callable[[], object]:
        if shards is None:
            return lambda: scan(model, data, layer, progress=False)
        return lambda: scan(model, data, layer, progress=False, backend="ray", shards=shards)

    start = time.perf_counter()
    run((x, y), 2)()  # the run's first Ray scan (for the first model) starts the worker processes
    cold = time.perf_counter() - start
    runs = {"local": run((x, y))} | {f"ray, {s} shards": run((x, y), s) for s in SHARDS}
    times, first = interleaved(runs, rounds)
    equal = {k: first[k] == first["local"] for k in runs if k != "local"}
    one = (x[:64], y[:64])  # one batch: what a Ray scan costs beyond its forward passes
    tiny, _ = interleaved({"local": run(one), "ray": run(one, 1)}, 3)
    return {"model": name, "layer": layer, "images": images, "cold_s": cold, "equal": equal,
            "tiny_s": {k: statistics.median(v) for k, v in tiny.items()}, **summary(times, "local")}


def ray_section(models: list[str], images: int, rounds: int) -> tuple[list[dict[str, Any]], float] | str:
    """The Ray measurements of :func:`ray_model` per model and ``ray.init()``'s seconds, or a skip line."""
    started = start_ray()
    if isinstance(started, str):
        return started
    ray, init_s = started
    try:
        return [ray_model(name, images, rounds) for name in models], init_s
    finally:
        ray.shutdown()


def throughput_table(tp: dict[str, Any]) -> list[str]:
    med, ratio, quart = tp["median_s"], tp["ratio"], tp["quartiles"]
    n = tp["images"]
    lines = [
        f"Scan throughput — {tp['model']}, {n} ShapesNet images of 64×64 in a DataLoader (batches of 64), CPU "
        f"({torch.get_num_threads()} threads), interleaved rounds; 1 layer = {tp['layer']}, "
        f"{len(tp['layers'])} layers = {', '.join(tp['layers'])}; target ≥ {TARGET}× the plain loop's images/s",
        "",
        "| variant | median s | images/s | throughput vs plain (median of rounds) | quartiles |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, seconds in med.items():
        q1, _, q3 = quart[key]
        r = ratio[key]
        verdict = (" ✅" if r >= TARGET else " ❌") if key == "scan max, 1 layer" else ""
        lines.append(f"| {key} | {seconds:.2f} | {n / seconds:.0f} | {r:.3f}×{verdict} | {q1:.2f}–{q3:.2f} |")
    return lines


def memory_table(mem: list[dict[str, float]]) -> list[str]:
    lines = [
        "Peak memory — ShapesNet, scan of the 4 conv layers (k=16) over N streamed images, fresh process each",
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
    return lines


def ray_table(section: tuple[list[dict[str, Any]], float] | str) -> list[str]:
    head = "Ray — scan(backend='ray') on a local Ray (ray.init(num_cpus=2): 2 worker processes, 1 torch thread each)"
    if isinstance(section, str):
        return [head, "", section]
    results, init_s = section
    n = results[0]["images"]
    lines = [
        f"{head} vs the local scan in this process ({torch.get_num_threads()} threads), {n} ShapesNet images "
        "of 64×64 as (images, labels), batches of 64, one layer by max, interleaved rounds",
        "",
        "| model | variant | median s | images/s | throughput vs local (median of rounds) | quartiles | "
        "result == local |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for res in results:
        med, ratio, quart = res["median_s"], res["ratio"], res["quartiles"]
        for key, seconds in med.items():
            q1, _, q3 = quart[key]
            eq = "—" if key == "local" else str(res["equal"][key])
            lines.append(f"| {res['model']} ({res['layer']}) | {key} | {seconds:.2f} | {n / seconds:.0f} | "
                         f"{ratio[key]:.3f}× | {q1:.2f}–{q3:.2f} | {eq} |")
    lines += [
        "",
        "Ray's fixed costs (not in the table above)",
        "",
        "| cost | s |",
        "|---|---:|",
        f"| `ray.init(num_cpus=2)` | {init_s:.2f} |",
    ]
    first = results[0]
    lines.append(f"| first Ray scan of the run ({first['model']}, 2 shards: worker processes start, import torch) "
                 f"− a later one | {first['cold_s'] - first['median_s']['ray, 2 shards']:.2f} |")
    for res in results:
        tiny = res["tiny_s"]
        lines += [
            f"| {res['model']}: per call, Ray scan of one batch (64 images, 1 shard) − local "
            f"({tiny['ray']:.2f} − {tiny['local']:.2f}) | {tiny['ray'] - tiny['local']:.2f} |",
        ]
    verdict = all(all(res["equal"].values()) for res in results)
    lines.append(f"\nEvery Ray result == the local result: {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="images per ShapesNet throughput round")
    parser.add_argument("--resnet-images", type=int, default=512, help="images per ResNet-18-like throughput round")
    parser.add_argument("--rounds", type=int, default=9, help="measured rounds per variant")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 20000],
                        help="data set sizes for memory")
    parser.add_argument("--ray-images", type=int, default=1024, help="images per Ray round")
    parser.add_argument("--ray-rounds", type=int, default=5, help="measured Ray rounds")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray section")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_memory is not None:
        print(json.dumps(peak_rss_child(args.child_memory)))
        return
    sizes = {"ShapesNet": args.images, "ResNet-18-like": args.resnet_images}
    for name, images in sizes.items():
        print("\n".join(throughput_table(throughput(name, images, args.rounds))) + "\n", flush=True)
    if args.sizes:
        print("\n".join(memory_table(memory(args.sizes, args.threads))) + "\n", flush=True)
    if not args.no_ray:
        print("\n".join(ray_table(ray_section(list(MODELS), args.ray_images, args.ray_rounds))) + "\n", flush=True)
    print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
