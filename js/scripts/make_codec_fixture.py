"""Write js/test/fixtures/wire.json + wire.bin: tensors encoded by cnn_widgets.wire, for the JS decoder test.

``wire.bin`` holds every encoded payload and every original tensor (float32, little-endian) back to back
at deliberately odd offsets, so the JS test reads them through DataViews with non-zero, unaligned
``byteOffset`` into one larger buffer. ``wire.json`` holds each wire header, where its bytes are, the
error bound the decoded values must meet (``|got - want| <= atol[slice] + rtol * |want|``) and, for
quantised uint8, the exact per-slice extrema the decoder must report. ``tests/test_widgets.py`` checks the committed files are what
this script writes today. Run: ``.venv/bin/python js/scripts/make_codec_fixture.py``.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "js" / "test" / "fixtures"


def cases() -> list[tuple[str, torch.Tensor, dict]]:
    """(name, tensor, wire.encode keyword arguments) for every case."""
    g = torch.Generator().manual_seed(7)
    per_channel = torch.randn(3, 4, 5, generator=g)
    per_channel[1] = 0.25  # constant slice: scale 0
    per_channel[2] *= 1000.0
    mixed = torch.tensor([[0.0, -0.0, 1.0, -2.5, 6e-8, -3e-6, 6.1e-5, 65504.0],
                          [1e6, -1e6, 0.1, 3.14159, 1e-3, 2e-30, -7.0, 1e30],
                          [1e-9, -3e-9, 5e-8, -1e-7, 2.5e-8, -6e-8, 7.5e-9, 1e-8]])
    tiny = torch.logspace(-9, -7, 12) * torch.tensor([1.0, -1.0]).repeat(6)
    image = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(2, 3, 3) * 14
    bad = torch.tensor([[1.0, float("nan"), 3.0], [float("inf"), -1.0, 0.5]])
    return [
        ("uint8_per_channel", per_channel, {}),
        ("uint8_vector", torch.linspace(-3.0, 5.0, 10).reshape(1, 10), {}),
        ("uint8_nonfinite", bad, {}),
        ("uint8_empty_slices", torch.zeros(2, 0, 3), {}),
        ("float16_mixed", mixed, {"dtype": "float16"}),
        ("float16_tiny_gradients", tiny.reshape(2, 6), {"dtype": "float16"}),
        ("float16_scalar", torch.tensor(-1.5e-8), {"dtype": "float16"}),
        ("float32", torch.randn(2, 3, 2, generator=g), {"dtype": "float32"}),
        ("exact_uint8", image, {"exact": True}),
    ]


def bounds(kind: str, original: torch.Tensor) -> tuple[list[float], float]:
    """(atol per slice, rtol) the decoded values must meet, from the original tensor alone: half a
    quantisation step, or float16's half ulp relative (absolute 2**-39 · peak below 2**-29 · peak)."""
    flat = torch.nan_to_num(original.double(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = flat.reshape(flat.shape[0] if flat.dim() else 1, -1)
    if flat.shape[1] == 0 or kind in ("exact", "raw"):
        return [0.0] * flat.shape[0], 0.0
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    if kind == "quantized":
        step = (hi - lo) / 255
        return (step / 2 + 4 * 2.0**-23 * torch.maximum(lo.abs(), hi.abs())).tolist(), 0.0
    return (torch.maximum(lo.abs(), hi.abs()) * 2.0**-39).tolist(), 2.0**-11


def build() -> tuple[str, bytes]:
    """The fixture as (JSON text, binary bytes)."""
    from cnn_widgets import wire

    blob = bytearray()
    entries = []
    for name, x, kwargs in cases():
        enc = wire.encode(x, **kwargs)
        header = {k: v for k, v in enc.items() if k != "data"}
        blob += b"\x00" * (1 + len(blob) % 3)  # odd, unaligned offsets on purpose
        data_at = len(blob)
        blob += bytes(enc["data"])
        blob += b"\x00"
        expected = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
        orig_at = len(blob)
        blob += expected.numpy().astype("<f4").tobytes()
        atol, rtol = bounds(enc["kind"], x)
        entry = {
            "name": name,
            "header": header,
            "data": [data_at, wire.nbytes(enc)],
            "expected": [orig_at, int(expected.numel())],
            "atol": atol,
            "rtol": rtol,
        }
        if enc["kind"] == "quantized":  # the exact extrema of the original, 0 for an empty slice
            rows = expected.reshape(expected.shape[0], -1)
            empty = rows.shape[1] == 0
            entry["min"] = [0.0] * rows.shape[0] if empty else rows.amin(dim=1).tolist()
            entry["max"] = [0.0] * rows.shape[0] if empty else rows.amax(dim=1).tolist()
        entries.append(entry)
    return json.dumps({"entries": entries}, indent=1) + "\n", bytes(blob)


if __name__ == "__main__":
    text, blob = build()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "wire.json").write_text(text, encoding="utf-8")
    (OUT / "wire.bin").write_bytes(blob)
    print(f"wrote {len(blob)} bytes and {len(text)} characters to {OUT.relative_to(ROOT)}")
