"""What a TrainingMonitor costs a training loop: ShapesNet (64², batch 32, one torch thread) trained for an
epoch of steps plainly and with a monitor attached (per-step ``step(loss)`` and a snapshot at the epoch's
end; and the worst case, a snapshot after every step), in interleaved rounds so load drifts hit every
case alike. Process CPU time per epoch, ratios against the plain loop of the same round.

Run: ``.venv/bin/python bench/bench_training_monitor.py [--rounds N] [--steps S]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cnn_widgets.widgets.training_monitor import TrainingMonitor
from cnn_widgets.zoo import shapes_dataset, shapesnet

CASES = ("plain", "monitor", "snapshot every step")


def epoch(case: str, images: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    """CPU seconds of one epoch of ``steps`` steps (monitor construction excluded)."""
    model = shapesnet(seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    monitor = None
    if case != "plain":
        monitor = TrainingMonitor(model, probe=images[:2], every_steps=1 if case == "snapshot every step" else None)
    start = time.process_time()
    model.train()
    for i in range(steps):
        x, y = images[32 * i : 32 * (i + 1)], labels[32 * i : 32 * (i + 1)]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.step(loss)
    if monitor is not None:
        monitor.epoch_end(accuracy=0.5)
    seconds = time.process_time() - start
    if monitor is not None:
        monitor.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, labels, _ = shapes_dataset(32 * args.steps, seed=1)
    times: dict[str, list[float]] = {c: [] for c in CASES}
    for _ in range(args.rounds):
        for case in CASES:
            times[case].append(epoch(case, images, labels, args.steps))
    plain = times["plain"]
    print(f"| case ({args.steps} steps, {args.rounds} rounds) | CPU s per epoch (median) | × plain (median of rounds) |")
    print("|---|---:|---:|")
    for case in CASES:
        ratio = statistics.median(t / p for t, p in zip(times[case], plain))
        print(f"| {case} | {statistics.median(times[case]):.2f} | {ratio:.3f}× |")


if __name__ == "__main__":
    main()
