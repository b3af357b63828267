"""The one tensor codec between Python and the browser (``js/src/codec.js`` is its only decoder there).

A tensor becomes a small JSON header and one binary buffer, ``data`` (a ``memoryview``: ipywidgets sends
it as a binary buffer, never as a JSON list)::

    {"shape": [d0, …], "dtype": "uint8" | "float16" | "float32",
     "kind": "quantized" | "exact" | "scaled" | "raw", "codec": 2, "data": memoryview}

``data`` is a side part of float32 numbers per slice (slices run along axis 0: a channel of a C×H×W
activation, a filter of an O×I×kh×kw weight; a scalar is one slice), then the payload, little-endian:

* ``quantized`` (uint8, the default): side ``min[C], max[C]``, the exact per-slice extrema before
  quantisation; payload one byte per element, ``value = min[c] + scale[c] * q`` with
  ``scale[c] = float32((max[c] - min[c]) / 255)`` evaluated in float64, so both decoders derive the
  encoder's scale bit for bit. The error is at most ``scale[c] / 2`` (1/510 of the slice's range); a
  constant slice decodes exactly.
* ``exact`` (uint8, ``exact=True`` on a uint8 tensor such as an RGB image): no side part, the raw bytes.
* ``scaled`` (float16): side ``scale[C]``, the power of two that puts the slice's peak magnitude in
  [2**14, 2**15); payload IEEE half values ``h``, ``value = scale[c] * h``. Relative error at most 2**-11
  for every value down to 2**-29 of its slice's peak (small gradients keep their digits), absolute at
  most 2**-39 of the peak below that; nothing saturates.
* ``raw`` (float32): no side part, the values bit for bit.

Non-finite values are encoded as 0 and counted in the header's ``"nonfinite"`` (present when > 0). Both
decoders check ``codec``, the format version (not ``version``: widget messages use that key themselves).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

Dtype = Literal["uint8", "float16", "float32"]
DTYPES: tuple[str, ...] = ("uint8", "float16", "float32")
CODEC = 2
# kind → (payload dtype, float32 side values per slice)
KINDS: dict[str, tuple[str, int]] = {
    "quantized": ("uint8", 2), "exact": ("uint8", 0), "scaled": ("float16", 1), "raw": ("float32", 0),
}
_KIND_OF_DTYPE = {"uint8": "quantized", "float16": "scaled", "float32": "raw"}
_F16_TOP = 15  # scaled float16: |peak| / scale lies in [2**(_F16_TOP - 1), 2**_F16_TOP)
_F32_MIN_EXP = -126  # scales stay normal float32 numbers


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"wire.encode expects a torch tensor or numpy array, got {type(x).__name__}")
    return x.detach().cpu()


def _quant_scales(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The uint8 step per slice from float32 extrema: float64 arithmetic, rounded once to float32 (what
    ``codec.js`` computes as ``Math.fround((max - min) / 255)``)."""
    return ((hi.astype(np.float64) - lo.astype(np.float64)) / 255.0).astype(np.float32)


def _f16_scales(peak: np.ndarray) -> np.ndarray:
    """Power-of-two float16 scale per slice: ``peak / scale`` in [2**14, 2**15) (float32, normal)."""
    _, exp = np.frexp(peak.astype(np.float32))
    return np.ldexp(np.float32(1.0), np.maximum(exp - _F16_TOP, _F32_MIN_EXP)).astype(np.float32)


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


def _message(shape: list[int], kind: str, side: np.ndarray, payload: np.ndarray) -> dict[str, Any]:
    """Header plus one buffer: the float32 side part, then the payload (both little-endian)."""
    dtype = KINDS[kind][0]
    parts = [np.ascontiguousarray(side, dtype="<f4").reshape(-1).view(np.uint8),
             np.ascontiguousarray(payload, dtype=np.dtype(dtype).newbyteorder("<")).reshape(-1).view(np.uint8)]
    data = memoryview(np.concatenate(parts))
    return {"shape": shape, "dtype": dtype, "kind": kind, "codec": CODEC, "data": data}


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
        return _message(list(arr.shape), "exact", np.empty(0, np.float32), arr)
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32,
                                                 torch.int64)):
        raise TypeError(f"wire.encode expects a numeric tensor, got {t.dtype}")
    t = t.float()
    if max_size is not None:
        t = downsample(t, max_size)
    shape = list(t.shape)
    slices = shape[0] if shape else 1
    flat = t.reshape(slices, t.numel() // slices if slices else 0)
    finite = torch.isfinite(flat)
    nonfinite = int((~finite).sum()) if not bool(finite.all()) else 0
    if nonfinite:
        flat = torch.where(finite, flat, torch.zeros((), dtype=flat.dtype))
    kind = _KIND_OF_DTYPE[dtype]
    if kind == "raw":
        msg = _message(shape, kind, np.empty(0, np.float32), flat.numpy())
    else:
        if flat.shape[1] == 0:
            mn = mx = torch.zeros(flat.shape[0])
        else:
            mn, mx = flat.aminmax(dim=1)
        if kind == "quantized":
            scale = torch.from_numpy(_quant_scales(mn.numpy(), mx.numpy()))
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            q = ((flat - mn[:, None]) / safe[:, None]).round_().clamp_(0, 255).to(torch.uint8)
            msg = _message(shape, kind, np.stack([mn.numpy(), mx.numpy()]), q.numpy())
        else:
            scale = _f16_scales(torch.maximum(-mn, mx).numpy())
            inverse = torch.from_numpy(np.float32(1.0) / scale)  # exact: powers of two
            msg = _message(shape, kind, scale, (flat * inverse[:, None]).to(torch.float16).numpy())
    if nonfinite:
        msg["nonfinite"] = nonfinite
    return msg


def _parts(msg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(side values as per-slice float32 rows, payload as slices × elements) of a message, checked."""
    kind, shape = msg.get("kind"), [int(d) for d in msg["shape"]]
    if msg.get("codec") != CODEC:
        raise ValueError(f"wire message has codec {msg.get('codec')!r}; this decoder reads codec {CODEC}")
    if kind not in KINDS or KINDS[kind][0] != msg.get("dtype"):
        raise ValueError(f"unknown wire kind/dtype {kind!r}/{msg.get('dtype')!r}; expected one of {sorted(KINDS)}")
    dtype, per_slice = KINDS[kind]
    slices, n = (shape[0] if shape else 1), math.prod(shape)
    buf = np.frombuffer(msg["data"], dtype=np.uint8)
    side_bytes = 4 * per_slice * slices
    want = side_bytes + n * np.dtype(dtype).itemsize
    if buf.size != want:
        raise ValueError(f"wire data has {buf.size} bytes but shape {shape} of {kind} {dtype} needs {want}")
    side = buf[:side_bytes].view("<f4").reshape(per_slice, slices)
    payload = buf[side_bytes:].view(np.dtype(dtype).newbyteorder("<"))
    return side, payload.reshape(slices, n // slices if slices else 0)


def decode(msg: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode`: float32, except exact uint8 (the bytes). For tests and Python exports."""
    side, payload = _parts(msg)
    shape = tuple(msg["shape"])
    if msg["kind"] == "exact":
        return payload.reshape(shape)
    if msg["kind"] == "quantized":
        lo, hi = side
        return (lo[:, None] + _quant_scales(lo, hi)[:, None] * payload.astype(np.float32)).reshape(shape)
    values = payload.astype(np.float32)
    return (values * side[0][:, None] if msg["kind"] == "scaled" else values).reshape(shape)


def extrema(msg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice (axis 0) minimum and maximum, as float32: the exact values before quantisation for
    ``quantized`` (read from the side part), else those of the decoded values (0 for an empty slice)."""
    side, payload = _parts(msg)
    if msg["kind"] == "quantized":
        return side[0].copy(), side[1].copy()
    values = decode(msg).reshape(payload.shape)
    if values.shape[1] == 0:
        return np.zeros(values.shape[0], np.float32), np.zeros(values.shape[0], np.float32)
    return values.min(axis=1).astype(np.float32), values.max(axis=1).astype(np.float32)


def nbytes(msg: dict[str, Any]) -> int:
    """Bytes of an encoded message's binary buffer (side part plus payload; the JSON header is ~70 more)."""
    return memoryview(msg["data"]).nbytes


def encoded_nbytes(shape: Sequence[int], dtype: Dtype = "uint8", *, exact: bool = False) -> int:
    """What :func:`encode` makes of a finite tensor of ``shape``, without encoding it: :func:`nbytes` plus
    the length of the JSON header (``json.dumps``)."""
    kind = "exact" if exact else _KIND_OF_DTYPE[dtype]
    payload, per_slice = KINDS[kind]
    dims = [int(d) for d in shape]
    head = json.dumps({"shape": dims, "dtype": payload, "kind": kind, "codec": CODEC})
    return 4 * per_slice * (dims[0] if dims else 1) + math.prod(dims) * np.dtype(payload).itemsize + len(head)
