"""The one tensor codec between Python and the browser (``js/src/codec.js`` is its only counterpart).

A tensor becomes a small JSON-able dict whose ``data`` is a ``memoryview`` (ipywidgets sends it as a
binary buffer, never as a JSON list):

``{"shape": [d0, …], "dtype": "uint8" | "float16" | "float32", "data": memoryview,
   "scale": [s0, …], "offset": [o0, …], "min": [...], "max": [...]}``

* ``uint8`` (default): quantised per slice along axis 0 (a channel of a C×H×W activation, a filter of an
  O×I×kh×kw weight): ``value = offset[c] + scale[c] * q``. The error is at most ``scale[c] / 2``, i.e.
  1/510 of that channel's range. A constant slice has ``scale = 0``.
* ``uint8`` with ``exact=True`` on a uint8 tensor (e.g. an RGB image): raw bytes, no ``scale``/``offset``.
* ``float16`` / ``float32``: raw little-endian values, no ``scale``/``offset``; float16 saturates at ±65504.

``min``/``max`` are the exact per-slice extrema (before quantisation), so colour scales computed in the
browser use the true range. Non-finite values are encoded as 0 and counted in ``"nonfinite"``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

Dtype = Literal["uint8", "float16", "float32"]
DTYPES: tuple[str, ...] = ("uint8", "float16", "float32")
_F16_MAX = 65504.0


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"wire.encode expects a torch tensor or numpy array, got {type(x).__name__}")
    return x.detach().cpu()


def _short(values: torch.Tensor) -> list[float]:
    """Float32 values as the shortest decimals that round-trip in float32: JSON headers stay ~3× smaller
    than Python's float64 ``repr`` of the same numbers (per-channel headers add up over 10k channels)."""
    return values.numpy().astype(np.float32).astype(str).astype(np.float64).tolist()


def downsample(x: torch.Tensor, max_size: int) -> torch.Tensor:
    """Shrink the last two (spatial) dims so neither exceeds ``max_size`` (area averaging)."""
    if x.dim() < 2 or max(x.shape[-2:]) <= max_size:
        return x
    h, w = x.shape[-2:]
    f = max_size / max(h, w)
    size = (max(1, round(h * f)), max(1, round(w * f)))
    lead = x.shape[:-2]
    y = F.adaptive_avg_pool2d(x.reshape(1, -1, h, w).float(), size)
    return y.reshape(*lead, *size)


def encode(
    x: Any, dtype: Dtype = "uint8", *, exact: bool = False, max_size: int | None = None
) -> dict[str, Any]:
    """Encode a tensor for a widget trait or message; see the module docstring for the format."""
    if dtype not in DTYPES:
        raise ValueError(f"wire dtype must be one of {DTYPES}, got {dtype!r}")
    t = _as_tensor(x)
    if exact:
        if t.dtype != torch.uint8:
            raise ValueError(f"exact encoding is for uint8 tensors, got {t.dtype}")
        arr = t.contiguous().numpy()
        return {"shape": list(arr.shape), "dtype": "uint8", "data": memoryview(arr).cast("B")}
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32,
                                                 torch.int64)):
        raise TypeError(f"wire.encode expects a numeric tensor, got {t.dtype}")
    t = t.float()
    if max_size is not None:
        t = downsample(t, max_size)
    shape = list(t.shape)
    flat = t.reshape(shape[0] if shape else 1, -1)
    finite = torch.isfinite(flat)
    nonfinite = int((~finite).sum()) if not bool(finite.all()) else 0
    if nonfinite:
        flat = torch.where(finite, flat, torch.zeros((), dtype=flat.dtype))
    if flat.shape[1] == 0:
        mn = mx = torch.zeros(flat.shape[0])
    else:
        mn, mx = flat.aminmax(dim=1)
    out: dict[str, Any] = {"shape": shape, "dtype": dtype, "min": _short(mn), "max": _short(mx)}
    if nonfinite:
        out["nonfinite"] = nonfinite
    if dtype == "uint8":
        scale = (mx - mn) / 255.0
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = ((flat - mn[:, None]) / safe[:, None]).round_().clamp_(0, 255).to(torch.uint8)
        arr = q.contiguous().numpy()
        out["scale"] = _short(scale)
        out["offset"] = out["min"]
    elif dtype == "float16":
        arr = flat.clamp(-_F16_MAX, _F16_MAX).to(torch.float16).contiguous().numpy()
    else:
        arr = flat.contiguous().numpy()
    out["data"] = memoryview(arr.reshape(-1)).cast("B")
    return out


def decode(msg: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode` (float32 except exact uint8); used by tests and Python-side exports."""
    shape = tuple(msg["shape"])
    raw = np.frombuffer(bytes(msg["data"]), dtype=np.dtype(msg["dtype"]).newbyteorder("<"))
    if "scale" not in msg:
        return raw.reshape(shape) if msg["dtype"] == "uint8" else raw.astype(np.float32).reshape(shape)
    c = len(msg["scale"])
    q = raw.reshape(c, -1).astype(np.float32)
    scale = np.asarray(msg["scale"], dtype=np.float32)[:, None]
    offset = np.asarray(msg["offset"], dtype=np.float32)[:, None]
    return (offset + scale * q).reshape(shape)


def nbytes(msg: dict[str, Any]) -> int:
    """Bytes of binary payload in an encoded message (the JSON header is a few hundred bytes more)."""
    return memoryview(msg["data"]).nbytes
