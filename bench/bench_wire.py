"""Wire size and encode time: every layer of resnet18_like at 224², our codec vs a JSON list of floats.

For each recorded layer output (batch item 0, encoded as ``ActivationBrowser`` does: C×H×W maps per
channel, vectors as one slice): bytes per element as uint8 (the default) and float16 — the payload
alone, the binary buffer (payload plus the float32 per-slice side part) and buffer plus JSON header
(shape, dtype, kind, codec) — against ``json.dumps(t.tolist())``; the time to encode vs the time to
build that JSON; and what an ``ActivationBrowser`` on the same model and image sends in total.
Target: ≤ 1.03 B/element (uint8, everything that travels).
Timing runs on one thread (``json`` has only one; two OpenMP threads on a busy two-core machine measure
the scheduler instead); encode times are medians of several runs, JSON is timed once per layer.

Run: ``.venv/bin/python bench/bench_wire.py [--per-layer]`` (about half a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnn_widgets import ActivationBrowser, capture_activations, wire
from cnn_widgets.zoo.resnet import resnet18_like

TARGET = 1.03


@dataclass
class Row:
    name: str
    shape: tuple[int, ...]
    elements: int
    u8_payload: int
    u8_buffer: int
    u8_total: int
    f16_total: int
    json_bytes: int
    u8_seconds: float
    f16_seconds: float
    json_seconds: float


def header_bytes(msg: dict) -> int:
    return len(json.dumps({k: v for k, v in msg.items() if k != "data"}))


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(repeat: int) -> tuple[list[Row], int]:
    """Per-layer rows, and the bytes ``ActivationBrowser.total_bytes()`` reports for the same input."""
    model = resnet18_like()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rows = []
    for name, act in capture_activations(model, x).items():
        a = act[0] if act.ndim > 1 else act
        if a.ndim == 1:
            a = a.reshape(1, -1)
        u8, f16 = wire.encode(a), wire.encode(a, "float16")
        text = json.dumps(a.tolist())
        rows.append(Row(
            name=name,
            shape=tuple(a.shape),
            elements=a.numel(),
            u8_payload=a.numel(),
            u8_buffer=wire.nbytes(u8),
            u8_total=wire.nbytes(u8) + header_bytes(u8),
            f16_total=wire.nbytes(f16) + header_bytes(f16),
            json_bytes=len(text.encode()),
            u8_seconds=timed(lambda: wire.encode(a), repeat),
            f16_seconds=timed(lambda: wire.encode(a, "float16"), repeat),
            json_seconds=timed(lambda: json.dumps(a.tolist()), 1),
        ))
    return rows, ActivationBrowser(model, x[0]).total_bytes()


def summary(rows: list[Row], browser_bytes: int) -> str:
    n = sum(r.elements for r in rows)

    def per(total: float) -> str:
        return f"{total / n:.3f}"

    u8_payload = sum(r.u8_payload for r in rows)
    u8_buffer = sum(r.u8_buffer for r in rows)
    u8_total = sum(r.u8_total for r in rows)
    f16_total = sum(r.f16_total for r in rows)
    json_total = sum(r.json_bytes for r in rows)
    t_u8 = sum(r.u8_seconds for r in rows)
    t_f16 = sum(r.f16_seconds for r in rows)
    t_json = sum(r.json_seconds for r in rows)
    channels = sum(r.shape[0] for r in rows)
    spatial = [r for r in rows if len(r.shape) == 3 and r.shape[1] * r.shape[2] > 1]
    worst_big = max(spatial, key=lambda r: r.u8_total / r.elements)
    best = min(rows, key=lambda r: r.u8_total / r.elements)
    verdict = "✅" if u8_total <= n * TARGET else "❌"
    lines = [
        f"Wire size — all {len(rows)} recorded layer outputs of resnet18_like at 224² "
        f"({n / 1e6:.2f} M elements); target ≤ {TARGET:g} B/element",
        "",
        "| encoding | total (MB) | B/element | vs JSON | encode time, all layers (ms) | vs json.dumps |",
        "|---|---:|---:|---:|---:|---:|",
        f"| `wire` uint8, payload only | {u8_payload / 1e6:.2f} | {per(u8_payload)} | "
        f"{json_total / u8_payload:.0f}× smaller | | |",
        f"| `wire` uint8, buffer (payload + float32 min/max per channel) | {u8_buffer / 1e6:.2f} | "
        f"{per(u8_buffer)} | {json_total / u8_buffer:.0f}× smaller | | |",
        f"| `wire` uint8, buffer + JSON header | {u8_total / 1e6:.2f} | {per(u8_total)} {verdict} | "
        f"{json_total / u8_total:.0f}× smaller | {t_u8 * 1e3:.1f} | {t_json / t_u8:.0f}× faster |",
        f"| `wire` float16, buffer + JSON header | {f16_total / 1e6:.2f} | {per(f16_total)} | "
        f"{json_total / f16_total:.0f}× smaller | {t_f16 * 1e3:.1f} | {t_json / t_f16:.0f}× faster |",
        f"| `json.dumps(t.tolist())` | {json_total / 1e6:.2f} | {per(json_total)} | 1× | "
        f"{t_json * 1e3:.0f} | 1× |",
        f"| `ActivationBrowser(model, image).total_bytes()` (what the widget sends) | "
        f"{browser_bytes / 1e6:.2f} | {per(browser_bytes)} | {json_total / browser_bytes:.0f}× smaller | | |",
        "",
        f"The uint8 payload is exactly 1 B/element; the float32 min and max add 8 B per channel "
        f"({channels} channels), the JSON header {(u8_total - u8_buffer) / len(rows):.0f} B per tensor: "
        f"+{100 * (worst_big.u8_total / worst_big.elements - 1):.1f} % on {worst_big.name} "
        f"({'×'.join(map(str, worst_big.shape))}) and +{100 * (best.u8_total / best.elements - 1):.1f} % on "
        f"{best.name} ({'×'.join(map(str, best.shape))}).",
    ]
    return "\n".join(lines)


def per_layer(rows: list[Row]) -> str:
    lines = [
        "| layer | shape | elements | uint8 B/el (payload) | uint8 B/el (+min/max, header) | float16 B/el | JSON B/el | "
        "uint8 encode (ms) | json.dumps (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {'×'.join(map(str, r.shape))} | {r.elements} | {r.u8_payload / r.elements:.3f} | "
            f"{r.u8_total / r.elements:.3f} | {r.f16_total / r.elements:.3f} | {r.json_bytes / r.elements:.1f} | "
            f"{r.u8_seconds * 1e3:.2f} | {r.json_seconds * 1e3:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per layer for our encoder")
    parser.add_argument("--per-layer", action="store_true", help="also print one row per layer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, browser_bytes = measure(args.repeat)
    print(summary(rows, browser_bytes))
    if args.per_layer:
        print()
        print(per_layer(rows))
    print(f"\n(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
