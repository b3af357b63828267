"""Kernel memory of a long AttributionView session: growth over 100 method runs after warm-up.

An AttributionView on the bundled ShapesNet (64² images) first runs every method once and fills its
result cache (32 entries); then 100 more runs cycle through methods × target classes so that every run
computes (a cache miss) and the cache keeps evicting its oldest entry. After every run (and a
``gc.collect()``) it samples:

* heap in use (glibc ``mallinfo2``: bytes allocated and not freed, by torch, numpy and every other C
  allocation, over all arenas, ``mmap``-ed blocks included). Free memory the allocator keeps does not
  count, so this moves by a few KB per run, not the ±10 MB the RSS jumps by;
* RSS (``/proc/self/statm``) after ``malloc_trim(0)``, for comparison: what the process holds once
  glibc has returned its free pages. It jumps with allocator state (which arena a worker thread gets,
  where torch's big buffers land), so it is shown, not judged.

Growth is the Theil–Sen slope of the samples (the median of all pairwise slopes, which a few jumps do not
move) times the number of runs. Also measured from the start to the end of the 100 runs: Python objects
still alive (tracemalloc, started after the warm-up) and the bytes of the tensor storages the garbage
collector can reach. Judged: heap-in-use growth plus the Python objects' growth (the two overlap for
Python's large blocks, so the sum errs high) against the target, ≤ 5 MB; also checked that the cache
stays at 32 entries and no worker thread is left. A leak of the size this benchmark was written to catch
(an autograd graph kept per gradient-CAM run) reads +25–30 MB here.

Run: ``.venv/bin/python bench/bench_memory.py [--runs 100]`` (one to two minutes on two idle cores).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import threading
import time
import tracemalloc
import warnings

import numpy as np
import torch

from cnn_widgets import METHODS, AttributionView, zoo
from cnn_widgets.widgets.jobs import CACHE_SIZE

TARGET_MB = 5.0
MB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc


def heap_in_use() -> int:
    """Bytes glibc has handed out and not had back (all arenas, mmap-ed blocks included)."""
    info = _libc().mallinfo2()
    return info.uordblks + info.hblkhd


def trimmed_rss() -> int:
    """RSS after glibc returned its free heap pages to the OS."""
    _libc().malloc_trim(0)
    return rss()


def tensor_bytes() -> int:
    """Bytes of the distinct tensor storages reachable by the garbage collector."""
    seen: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance on some of torch's deprecated module objects warns
        warnings.simplefilter("ignore")
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor) and not obj.is_meta]
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def settle() -> None:
    for _ in range(3):
        gc.collect()


def theil_sen(values: list[float]) -> float:
    """The median of the slopes between every pair of samples (per step)."""
    y = np.asarray(values)
    i, j = np.triu_indices(len(y), k=1)
    return float(np.median((y[j] - y[i]) / (j - i)))


def explain(view: AttributionView, method: str, target: int, *, miss: bool = True) -> None:
    """One run: method and target changed together (one request), then wait for the result; ``miss``:
    it must be computed, not taken from the cache."""
    with view.hold_trait_notifications():
        view.method = method
        view.target = target
    if miss and not view.busy:
        raise RuntimeError(f"{method} for class {target} came from the cache; the benchmark needs a miss")
    if not view.wait(300):
        raise RuntimeError(f"{method} for class {target} did not finish")
    if view.error or view.result is None or (view.result.method, view.result.target) != (method, target):
        raise RuntimeError(f"{method} for class {target} failed: {view.error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="measured runs after warm-up (default 100)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = zoo.load_shapesnet()
    images, _, _ = zoo.shapes_dataset(1, seed=3)
    view = AttributionView(model, images[0], labels=list(zoo.CLASSES))
    view.wait()
    classes = len(zoo.CLASSES)
    # every (method, class) pair in a fixed order; consecutive uses of a pair are len(pairs) > 32 runs
    # apart, so each run misses the cache
    pairs = [(m, (view.predictions[0]["index"] + k) % classes) for k in range(classes) for m in METHODS]
    assert len(pairs) > CACHE_SIZE

    start = time.perf_counter()
    warm = max(len(METHODS), CACHE_SIZE)  # every method once, and a full cache
    for i in range(warm):
        explain(view, *pairs[i % len(pairs)], miss=False)
    warm_s = time.perf_counter() - start
    settle()
    tensors_before = tensor_bytes()
    tracemalloc.start()
    raw_before = rss()

    heap: list[float] = []
    trimmed: list[float] = []
    start = time.perf_counter()
    for i in range(warm, warm + args.runs):
        explain(view, *pairs[i % len(pairs)])
        gc.collect()
        heap.append(heap_in_use() / MB)
        trimmed.append(trimmed_rss() / MB)
    runs_s = time.perf_counter() - start
    raw_after = rss()
    python_growth = tracemalloc.get_traced_memory()[0] / MB
    tracemalloc.stop()
    settle()
    tensors_after = tensor_bytes()

    cached = len(view._jobs._cache)
    workers = sum(t.name == "cnn_widgets-attribution" for t in threading.enumerate())
    heap_growth = theil_sen(heap) * args.runs
    growth = heap_growth + python_growth
    k = min(10, len(trimmed))
    first, last = float(np.median(trimmed[:k])), float(np.median(trimmed[-k:]))
    print(f"AttributionView on ShapesNet 64², {len(METHODS)} methods × {classes} classes; warm-up {warm} runs "
          f"({warm_s:.0f} s), then {args.runs} runs ({runs_s:.0f} s), every one a cache miss\n")
    print("| memory | start (MB) | end (MB) | growth (MB) |")
    print("|---|---:|---:|---:|")
    print(f"| heap in use (mallinfo2), Theil–Sen slope × {args.runs} runs | {heap[0]:.2f} | {heap[-1]:.2f} | "
          f"{heap_growth:+.2f} |")
    print(f"| Python objects (tracemalloc) | 0.00 | {python_growth:.2f} | {python_growth:+.2f} |")
    print(f"| tensors reachable by gc | {tensors_before / MB:.2f} | {tensors_after / MB:.2f} | "
          f"{(tensors_after - tensors_before) / MB:+.2f} |")
    print(f"| RSS after malloc_trim, Theil–Sen slope × {args.runs} runs (min {min(trimmed):.0f}, max "
          f"{max(trimmed):.0f}) | {trimmed[0]:.1f} | {trimmed[-1]:.1f} | {theil_sen(trimmed) * args.runs:+.2f} |")
    print(f"| RSS after malloc_trim, median of the first / last {k} runs | {first:.1f} | {last:.1f} | "
          f"{last - first:+.2f} |")
    print(f"| RSS | {raw_before / MB:.1f} | {raw_after / MB:.1f} | {(raw_after - raw_before) / MB:+.2f} |")
    ok = growth <= TARGET_MB and cached == CACHE_SIZE and workers == 0
    print(f"\ncache entries: {cached} (size {CACHE_SIZE}); worker threads left: {workers}")
    print(f"growth (heap in use + Python objects) {growth:+.2f} MB over {args.runs} runs "
          f"(target ≤ {TARGET_MB:g} MB): {'PASS' if ok else 'FAIL'}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
