"""Write js/test/fixtures/wire.json + wire.bin: tensors encoded by cnn_widgets.wire, for the JS decoder test.

``wire.bin`` holds every encoded payload and every original tensor (float32, little-endian) back to back
at deliberately odd offsets, so the JS test reads them through DataViews with non-zero, unaligned
``byteOffset`` into one larger buffer. ``wire.json`` holds each wire header, where its bytes are, and the
error bound the decoded values must meet. ``tests/test_widgets.py`` checks the committed files are what
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
    f16 = torch.tensor([0.0, -0.0, 1.0, -2.5, 6e-8, -3e-6, 6.1e-5, 65504.0, 1e6, -1e6, 0.1, 3.14159])
    image = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(2, 3, 3) * 14
    bad = torch.tensor([[1.0, float("nan"), 3.0], [float("inf"), -1.0, 0.5]])
    return [
        ("uint8_per_channel", per_channel, {}),
        ("uint8_vector", torch.linspace(-3.0, 5.0, 10).reshape(1, 10), {}),
        ("uint8_nonfinite", bad, {}),
        ("float16", f16.reshape(3, 4), {"dtype": "float16"}),
        ("float32", torch.randn(2, 3, 2, generator=g), {"dtype": "float32"}),
        ("exact_uint8", image, {"exact": True}),
    ]


def bound(header: dict, original: torch.Tensor) -> float:
    """The largest error the decoder may make on this case (beyond float32 rounding)."""
    if header["dtype"] == "uint8" and "scale" in header:
        return max(header["scale"]) / 2
    if header["dtype"] == "float16":
        return float(original.abs().clamp(max=65504).max()) * 2.0**-11 + 2.0**-25
    return 0.0


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
        expected = x.float().clamp(-65504, 65504) if kwargs.get("dtype") == "float16" else x.float()
        expected = torch.nan_to_num(expected, nan=0.0, posinf=0.0, neginf=0.0)
        orig_at = len(blob)
        blob += expected.numpy().astype("<f4").tobytes()
        entries.append({
            "name": name,
            "header": header,
            "data": [data_at, wire.nbytes(enc)],
            "expected": [orig_at, int(expected.numel())],
            "bound": bound(header, x),
        })
    return json.dumps({"entries": entries}, indent=1) + "\n", bytes(blob)


if __name__ == "__main__":
    text, blob = build()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "wire.json").write_text(text, encoding="utf-8")
    (OUT / "wire.bin").write_bytes(blob)
    print(f"wrote {len(blob)} bytes and {len(text)} characters to {OUT.relative_to(ROOT)}")
