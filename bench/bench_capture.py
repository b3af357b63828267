"""Capture overhead: one forward pass with activations recorded on every leaf layer vs a plain forward, and
vs the physical floor of keeping them.

ResNet-18-shaped model (``resnet18_like``), one 224×224 image, CPU, under ``torch.no_grad``. Variants run
interleaved (round-robin, rotating which goes first) and every ratio is taken per round against the plain
forward (or the floor) of the same round, so machine noise hits all of them alike; the tables give the
ratio of medians and the quartiles of the per-round ratios. Target: ``ActivationCapture`` ≤ 1.15× a plain
forward.

The floor is what keeping the activations must cost at least: a plain forward plus one copy of every
captured activation (the same shapes, 60 tensors, ~30 MB) into warm preallocated memory, measured in the
same round. ``ActivationCapture`` copies each output the moment its module returns into buffers from a
pool reused across captures (lent ahead, on entry, in the layouts the model's last capture produced), so
after the first capture in a kernel it writes into warm pages; the "pool off" row (a pool that keeps
nothing) shows what fresh pages from the OS cost instead. Two more rows split the rest: forward hooks
that copy into the floor's buffers (hook dispatch plus copying mid-forward, nothing else) and entering
and leaving a capture without a forward (argument checks, the model-state snapshot, hook registration,
lending).

The benchmark runs twice, each time in a child process: with glibc's default allocator (which gives
large freed blocks back to the OS), and with glibc told to keep freed memory (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``). On a loaded machine, ``--threads 1 --clock cpu``
(CPU time of the one compute thread, page-fault time included, time spent waiting for a core excluded)
gives much tighter quartiles than wall-clock time.

Run: ``.venv/bin/python bench/bench_capture.py [--rounds 40] [--threads N] [--clock wall|cpu]``
(a few minutes; longer on a loaded machine with the wall clock).
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

import cnn_widgets.capture as capture_module
from cnn_widgets import ActivationCapture, capture_activations
from cnn_widgets.zoo.resnet import resnet18_like

TUNED_ALLOCATOR = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_TOP_PAD_": "268435456",
}
TARGET = 1.15
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def leaves(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]


def variants(model: nn.Module, x: torch.Tensor, captured: list[torch.Tensor]) -> dict[str, Callable[[], object]]:
    """Each variant returns what it captured, so retention is part of what is measured (it is dropped
    after the clock stops, as a kernel drops the previous capture when it makes the next one)."""
    names = leaves(model)
    modules = dict(model.named_modules())
    sources = [a.clone() for a in captured]
    targets = [torch.empty_like(a) for a in captured]
    no_pool = capture_module._BufferPool(0)

    def plain() -> object:
        with torch.no_grad():
            return model(x)

    def copies() -> object:
        for target, source in zip(targets, sources):
            target.copy_(source)
        return None

    def fresh_copies() -> object:
        return [torch.empty_like(a).copy_(a) for a in sources]

    def capture_pooled() -> object:
        with ActivationCapture(model, names) as cap, torch.no_grad():
            model(x)
        return cap.activations

    def capture_pool_off() -> object:
        pool, capture_module._POOL = capture_module._POOL, no_pool
        try:
            return capture_pooled()
        finally:
            capture_module._POOL = pool

    def with_hooks(hook: Callable[..., None]) -> object:
        handles = [modules[n].register_forward_hook(hook) for n in names]
        try:
            with torch.no_grad():
                return model(x)
        finally:
            for h in handles:
                h.remove()

    def noop_hooks() -> object:
        return with_hooks(lambda m, a, o: None)

    def hook_copies() -> object:
        slots = iter(targets)
        with_hooks(lambda m, a, o: next(slots).copy_(o))
        return targets

    def enter_exit() -> object:
        with ActivationCapture(model, names) as cap:
            pass
        return cap.activations

    def full_api() -> object:
        return capture_activations(model, x)

    return {"plain": plain, "copies": copies, "fresh_copies": fresh_copies, "capture": capture_pooled,
            "capture_pool_off": capture_pool_off, "noop_hooks": noop_hooks, "hook_copies": hook_copies,
            "enter_exit": enter_exit, "full_api": full_api}


def measure(rounds: int, clock: str, warmup: int = 5) -> dict[str, object]:
    """Median seconds per variant over ``rounds`` interleaved rounds (run in this process), and per
    variant the quartiles of its per-round ratio to the plain forward and to the floor (plain forward +
    warm copies) of the same round."""
    model = resnet18_like()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with ActivationCapture(model, leaves(model)) as cap, torch.no_grad():
        model(x)
    captured = list(cap.activations.values())
    runs = variants(model, x, captured)
    megabytes = sum(a.numel() * a.element_size() for a in captured) / 1e6
    tensors = len(captured)
    del cap, captured
    now = CLOCKS[clock]
    order = list(runs)
    times: dict[str, list[float]] = {k: [] for k in order}
    for r in range(warmup + rounds):
        shift = r % len(order)
        for key in order[shift:] + order[:shift]:
            start = now()
            kept = runs[key]()
            elapsed = now() - start
            del kept
            if r >= warmup:
                times[key].append(elapsed)
    times["floor"] = [p + c for p, c in zip(times["plain"], times["copies"])]

    def quartiles(base: str) -> dict[str, list[float]]:
        return {k: statistics.quantiles([t / b for t, b in zip(v, times[base])], n=4) for k, v in times.items()}

    return {
        "median": {k: statistics.median(v) for k, v in times.items()},
        "vs_plain": quartiles("plain"),
        "vs_floor": quartiles("floor"),
        "layers": len(leaves(model)),
        "tensors": tensors,
        "megabytes": megabytes,
        "threads": torch.get_num_threads(),
        "pool_buffers": capture_module._POOL.allocated,
    }


def child(allocator: dict[str, str] | None, args: argparse.Namespace) -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter with (or explicitly without) the tuned allocator."""
    env = {k: v for k, v in os.environ.items() if k not in TUNED_ALLOCATOR}
    env.update(allocator or {})
    command = [sys.executable, __file__, "--child", "--rounds", str(args.rounds), "--clock", args.clock]
    if args.threads:
        command += ["--threads", str(args.threads)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(default: dict[str, object], tuned: dict[str, object], clock: str) -> str:
    def ratio(result: dict[str, object], key: str, base: str) -> str:
        med = result["median"]
        q1, q2, q3 = result[f"vs_{base}"][key]
        return f"{med[key] / med[base]:.3f}× ({q1:.2f} / {q2:.2f} / {q3:.2f})"

    def verdict(result: dict[str, object], key: str) -> str:
        """Met or missed only when the per-round quartiles agree; otherwise the noise decides nothing."""
        q1, _, q3 = result["vs_plain"][key]
        return " ✅" if q3 <= TARGET else " ❌" if q1 > TARGET else " (quartiles span the target)"

    def row(case: str, result: dict[str, object], key: str, target: bool = False) -> str:
        ms = result["median"][key] * 1e3
        mark = verdict(result, key) if target else ""
        return f"| {case} | {ms:.1f} | {ratio(result, key, 'plain')}{mark} | {ratio(result, key, 'floor')} |"

    n, tensors, mb = default["layers"], default["tensors"], default["megabytes"]
    lines = [
        f"Capture overhead — resnet18_like, 1×3×224×224, CPU ({default['threads']} threads), {clock} clock, "
        f"median of interleaved rounds; target ≤ {TARGET}× a plain forward",
        "",
        "| case | ms | × plain forward: ratio of medians (per-round q1 / median / q3) | × floor |",
        "|---|---:|---:|---:|",
    ]
    for label, result in (("default allocator", default), ("tuned allocator¹", tuned)):
        lines += [
            row(f"plain forward, {label}", result, "plain"),
            row(f"floor = plain forward + copy of the {tensors} activations ({mb:.1f} MB) into warm memory, "
                f"{label}", result, "floor"),
            row(f"`ActivationCapture` on all {n} leaf layers, {label}", result, "capture", target=True),
            row(f"`ActivationCapture`, pool off (fresh buffers every capture), {label}", result,
                "capture_pool_off"),
            row(f"`capture_activations(model, x)` (checks, state snapshot, eval), {label}", result, "full_api"),
        ]
    lines += [
        row(f"no-op forward hooks on all {n} leaf layers, no retention, default allocator", default,
            "noop_hooks"),
        row(f"forward hooks copying into the floor's warm buffers (the best a hook can do), default allocator",
            default, "hook_copies"),
        row("`ActivationCapture` entered and left without a forward (checks, snapshot, hooks), default allocator",
            default, "enter_exit"),
        "",
        f"Copying the {tensors} activations alone (default allocator): "
        f"{default['median']['copies'] * 1e3:.1f} ms into warm memory "
        f"({mb / 1e3 / default['median']['copies']:.1f} GB/s), "
        f"{default['median']['fresh_copies'] * 1e3:.1f} ms into `torch.empty_like` buffers. "
        f"Pool buffers allocated over the whole run: {default['pool_buffers']} (default), "
        f"{tuned['pool_buffers']} (tuned); a capture needs {tensors}.",
        "",
        "¹ " + " ".join(f"`{k}={v}`" for k, v in TUNED_ALLOCATOR.items()) + " (glibc keeps freed memory "
        "instead of returning it to the OS)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="measured rounds per variant")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: CPU time of the process (use with --threads 1)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure(args.rounds, args.clock)))
        return
    default = child(None, args)
    tuned = child(TUNED_ALLOCATOR, args)
    print(table(default, tuned, args.clock))
    print(f"\n(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
