"""Capture overhead: one forward pass with activations recorded on every leaf layer vs a plain forward.

ResNet-18-shaped model (``resnet18_like``), one 224×224 image, CPU, under ``torch.no_grad``. Variants run
interleaved (round-robin, rotating which goes first) and medians are compared within one process, so
machine noise hits all of them alike. Target: ``ActivationCapture`` ≤ 1.15× a plain forward.

Most of what capture costs is not the hooks: it is the OS handing out fresh pages for the ~30 MB of
activations kept alive (glibc gives large freed blocks back to the OS, so every run faults them in again).
The benchmark therefore runs twice, each time in a child process: with the default allocator, and with
glibc told to keep its memory (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_TOP_PAD_``), as a long-running kernel effectively does after a few captures.

Run: ``.venv/bin/python bench/bench_capture.py [--rounds 40]`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from cnn_widgets import ActivationCapture, capture_activations
from cnn_widgets.zoo.resnet import resnet18_like

TUNED_ALLOCATOR = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_TOP_PAD_": "268435456",
}
TARGET = 1.15


def leaves(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]


def variants(model: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Each variant returns what it captured, so retention is part of what is measured."""
    names = leaves(model)
    modules = dict(model.named_modules())

    def plain() -> object:
        with torch.no_grad():
            return model(x)

    def capture() -> object:
        with ActivationCapture(model, names) as cap, torch.no_grad():
            model(x)
        return cap.activations

    def noop_hooks() -> object:
        handles = [modules[n].register_forward_hook(lambda m, a, o: None) for n in names]
        try:
            with torch.no_grad():
                return model(x)
        finally:
            for h in handles:
                h.remove()

    def full_api() -> object:
        return capture_activations(model, x)

    return {"plain": plain, "capture": capture, "noop_hooks": noop_hooks, "full_api": full_api}


def measure(rounds: int, warmup: int = 5) -> dict[str, object]:
    """Median seconds per variant over ``rounds`` interleaved rounds (run in this process), and per
    variant the quartiles of its per-round ratio to the plain forward of the same round."""
    model = resnet18_like()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    runs = variants(model, x)
    order = list(runs)
    times: dict[str, list[float]] = {k: [] for k in order}
    for r in range(warmup + rounds):
        shift = r % len(order)
        for key in order[shift:] + order[:shift]:
            start = time.perf_counter()
            kept = runs[key]()
            elapsed = time.perf_counter() - start
            del kept
            if r >= warmup:
                times[key].append(elapsed)
    paired = {k: [t / p for t, p in zip(v, times["plain"])] for k, v in times.items()}
    return {
        "median": {k: statistics.median(v) for k, v in times.items()},
        "paired": {k: statistics.quantiles(v, n=4) for k, v in paired.items()},
        "layers": len(leaves(model)),
        "threads": torch.get_num_threads(),
    }


def child(allocator: dict[str, str] | None, rounds: int) -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter with (or explicitly without) the tuned allocator."""
    env = {k: v for k, v in os.environ.items() if k not in TUNED_ALLOCATOR}
    env.update(allocator or {})
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--rounds", str(rounds)],
        env=env, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(default: dict[str, object], tuned: dict[str, object]) -> str:
    def row(case: str, result: dict[str, object], key: str, target: bool = True) -> str:
        med = result["median"]
        base, other = med["plain"] * 1e3, med[key] * 1e3
        ratio = other / base
        q1, q2, q3 = result["paired"][key]
        verdict = ("✅" if ratio <= TARGET else "❌") if target else ""
        return f"| {case} | {base:.1f} | {other:.1f} | {ratio:.3f}× {verdict} | {q2:.3f}× ({q1:.2f}–{q3:.2f}) |"

    n = default["layers"]
    lines = [
        f"Capture overhead — resnet18_like, 1×3×224×224, CPU ({default['threads']} threads), "
        f"median of interleaved rounds; target ≤ {TARGET}×",
        "",
        "| case | plain forward (ms) | with capture (ms) | ratio of medians | per-round ratio: median (IQR) |",
        "|---|---:|---:|---:|---:|",
        row(f"`ActivationCapture` on all {n} leaf layers, default allocator", default, "capture"),
        row(f"`ActivationCapture` on all {n} leaf layers, tuned allocator¹", tuned, "capture"),
        row(f"no-op forward hooks on all {n} leaf layers, no retention", default, "noop_hooks", False),
        row("`capture_activations(model, x)` (checks, state snapshot), default allocator", default, "full_api",
            False),
        row("`capture_activations(model, x)`, tuned allocator¹", tuned, "full_api", False),
        "",
        "¹ " + " ".join(f"`{k}={v}`" for k, v in TUNED_ALLOCATOR.items()) + " (glibc keeps freed memory "
        "instead of returning it to the OS, so retained activations do not page-fault on every run)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="measured rounds per variant")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.rounds)))
        return
    default = child(None, args.rounds)
    tuned = child(TUNED_ALLOCATOR, args.rounds)
    print(table(default, tuned))
    print(f"\n(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
