"""The wire codec: round-trip error bounds per dtype, edge values, sizes and buffer types."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cnn_widgets import wire


def activation(c: int = 6, h: int = 17, w: int = 23, seed: int = 0) -> torch.Tensor:
    """Channels with very different ranges and offsets, as real activations have."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-3, 3, c).view(c, 1, 1)
    offsets = torch.linspace(-50, 50, c).view(c, 1, 1)
    return torch.randn(c, h, w, generator=g) * scales + offsets


def header_json(msg: dict) -> str:
    return json.dumps({k: v for k, v in msg.items() if k != "data"})


# ------------------------------------------------------------------------------------------ error bounds
@pytest.mark.parametrize("shape", [(6, 17, 23), (3, 5, 2, 2), (1, 64, 64), (4, 100)])
def test_uint8_error_is_at_most_half_a_step_per_channel(shape: tuple[int, ...]) -> None:
    x = activation(c=shape[0], h=int(np.prod(shape[1:])), w=1).reshape(shape)
    msg = wire.encode(x)
    assert msg["dtype"] == "uint8" and msg["shape"] == list(shape)
    flat = x.reshape(shape[0], -1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    # header floats are the shortest decimals that round-trip in float32: exact as float32
    assert torch.equal(torch.tensor(msg["min"]), lo) and torch.equal(torch.tensor(msg["max"]), hi)
    scale = torch.tensor(msg["scale"])
    torch.testing.assert_close(scale, (hi - lo) / 255.0)
    assert torch.equal(torch.tensor(msg["offset"]), lo)
    back = torch.from_numpy(wire.decode(msg)).reshape(shape[0], -1)
    err = (back - flat).abs().max(dim=1).values
    # half a quantisation step, plus float32 rounding of offset + scale * q
    slack = 4 * torch.finfo(torch.float32).eps * torch.maximum(lo.abs(), hi.abs())
    assert (err <= scale / 2 + slack).all(), (err / scale).tolist()
    # and the bound is nearly reached: the codec does not waste precision either
    assert (err >= scale * 0.4).all()


def test_uint8_uses_the_full_code_range_per_channel() -> None:
    msg = wire.encode(activation())
    q = np.frombuffer(msg["data"], dtype=np.uint8).reshape(6, -1)
    assert (q.min(axis=1) == 0).all() and (q.max(axis=1) == 255).all()


def test_float16_relative_error() -> None:
    x = activation()
    x[0, 0, :4] = torch.tensor([1e-3, -6.1e-5, 3.0e4, -6.5e4])
    back = torch.from_numpy(wire.decode(wire.encode(x, "float16")))
    rel = ((back - x).abs() / x.abs()).max().item()
    assert rel <= 2.0**-11


def test_float16_subnormals_and_saturation() -> None:
    x = torch.tensor([[1e-6, -3e-7, 0.0, 1e5, -1e9, 65504.0]])
    back = wire.decode(wire.encode(x, "float16"))
    assert np.abs(back[0, :3] - x[0, :3].numpy()).max() <= 2.0**-25
    assert back[0, 3:].tolist() == [65504.0, -65504.0, 65504.0]


def test_float32_is_exact() -> None:
    x = activation()
    x[1, 2, 3] = 1.0000001
    x[2, 0, 0] = -1e-38
    back = wire.decode(wire.encode(x, "float32"))
    assert back.dtype == np.float32
    assert np.array_equal(back.view(np.uint32), x.numpy().view(np.uint32))


@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_non_contiguous_and_float64_input(dtype: str) -> None:
    x = activation().double().transpose(1, 2)
    assert not x.is_contiguous()
    back = wire.decode(wire.encode(x, dtype))
    assert back.shape == tuple(x.shape)
    want = x.float().numpy()
    if dtype == "uint8":
        step = (want.max(axis=(1, 2)) - want.min(axis=(1, 2))) / 255.0
        assert (np.abs(back - want).max(axis=(1, 2)) <= step / 2 * 1.0001).all()
    else:
        np.testing.assert_allclose(back, want, rtol=2.0**-11 if dtype == "float16" else 0)


def test_numpy_and_integer_input() -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.int64).reshape(2, 3, 4) * 7 - 20
    msg = wire.encode(arr)
    back = wire.decode(msg)
    assert np.abs(back - arr).max() <= max(msg["scale"]) / 2 + 1e-4
    assert msg["min"] == [-20.0, 64.0] and msg["max"] == [57.0, 141.0]


# ------------------------------------------------------------------------------------------ edge values
@pytest.mark.parametrize("value", [0.0, -3.5, 1e6])
def test_constant_channels_decode_exactly(value: float) -> None:
    x = activation(c=3)
    x[1] = value
    msg = wire.encode(x)
    assert msg["scale"][1] == 0.0 and msg["offset"][1] == value
    assert msg["min"][1] == msg["max"][1] == value
    back = wire.decode(msg)
    assert (back[1] == np.float32(value)).all()
    assert np.isfinite(back).all()


@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_non_finite_values_become_zero_and_are_counted(dtype: str) -> None:
    x = torch.tensor([[[1.0, math.nan], [math.inf, 4.0]], [[-math.inf, -2.0], [2.0, 0.5]]])
    msg = wire.encode(x, dtype)
    assert msg["nonfinite"] == 3
    assert msg["min"] == [0.0, -2.0] and msg["max"] == [4.0, 2.0]
    assert all(math.isfinite(v) for v in msg.get("scale", []) + msg.get("offset", []))
    json.loads(header_json(msg))  # strict JSON: no NaN/Infinity tokens in the header
    assert "NaN" not in header_json(msg) and "Infinity" not in header_json(msg)
    back = wire.decode(msg)
    assert np.isfinite(back).all()
    np.testing.assert_allclose(back[0], [[1.0, 0.0], [0.0, 4.0]], atol=4.0 / 510 + 1e-6)
    np.testing.assert_allclose(back[1], [[0.0, -2.0], [2.0, 0.5]], atol=4.0 / 510 + 1e-6)


def test_finite_input_has_no_nonfinite_field() -> None:
    assert "nonfinite" not in wire.encode(activation())


def test_all_nan_channel() -> None:
    x = activation(c=2)
    x[0] = math.nan
    msg = wire.encode(x)
    assert msg["nonfinite"] == x[0].numel()
    assert msg["scale"][0] == 0.0
    assert (wire.decode(msg)[0] == 0).all()


def test_exact_uint8_is_lossless() -> None:
    img = torch.randint(0, 256, (3, 31, 17), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    msg = wire.encode(img, exact=True)
    assert msg["dtype"] == "uint8" and "scale" not in msg and "offset" not in msg
    assert wire.nbytes(msg) == img.numel()
    back = wire.decode(msg)
    assert back.dtype == np.uint8 and np.array_equal(back, img.numpy())
    hwc = img.permute(1, 2, 0)  # non-contiguous
    assert np.array_equal(wire.decode(wire.encode(hwc, exact=True)), hwc.numpy())


def test_scalar_and_empty_tensors() -> None:
    msg = wire.encode(torch.tensor(2.5))
    assert msg["shape"] == [] and wire.decode(msg).shape == () and float(wire.decode(msg)) == 2.5
    empty = wire.encode(torch.zeros(3, 0, 4))
    assert empty["shape"] == [3, 0, 4] and wire.nbytes(empty) == 0
    assert wire.decode(empty).shape == (3, 0, 4)


# ------------------------------------------------------------------------------------------ downsampling
def test_downsampling_area_averages_to_max_size() -> None:
    x = activation(c=4, h=64, w=64)
    msg = wire.encode(x, "float32", max_size=16)
    assert msg["shape"] == [4, 16, 16]
    want = x.reshape(4, 16, 4, 16, 4).mean(dim=(2, 4))
    np.testing.assert_allclose(wire.decode(msg), want.numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(msg["min"], want.reshape(4, -1).min(dim=1).values, rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "max_size", "want"),
    [((2, 64, 32), 16, [2, 16, 8]), ((2, 30, 90), 45, [2, 15, 45]), ((2, 10, 12), 16, [2, 10, 12]),
     ((1, 2, 3, 100, 7), 10, [1, 2, 3, 10, 1])],
)
def test_downsampled_shapes(shape: tuple[int, ...], max_size: int, want: list[int]) -> None:
    msg = wire.encode(torch.rand(shape), max_size=max_size)
    assert msg["shape"] == want
    assert wire.nbytes(msg) == int(np.prod(want))


def test_downsampling_leaves_small_tensors_untouched() -> None:
    x = activation(c=2, h=8, w=8)
    assert np.array_equal(wire.decode(wire.encode(x, "float32", max_size=8)), x.numpy())


# ------------------------------------------------------------------------------------------ size and buffers
@pytest.mark.parametrize(("dtype", "per_element"), [("uint8", 1), ("float16", 2), ("float32", 4)])
def test_payload_size(dtype: str, per_element: int) -> None:
    x = activation(c=64, h=56, w=56)
    msg = wire.encode(x, dtype)
    assert wire.nbytes(msg) == per_element * x.numel()
    # the JSON header grows with the channel count only, never with the number of elements
    assert len(header_json(msg)) < 120 * 64


def test_data_is_one_flat_memoryview_not_a_list() -> None:
    msg = wire.encode(activation())
    data = msg["data"]
    assert isinstance(data, memoryview)
    assert data.format == "B" and data.ndim == 1 and data.contiguous and data.nbytes == 6 * 17 * 23
    assert not any(isinstance(v, list) and len(v) > 6 for v in msg.values())
    for key, value in msg.items():
        if key != "data":
            json.dumps(value)


def test_float16_buffer_is_little_endian_ieee_half() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5]])
    raw = bytes(wire.encode(x, "float16")["data"])
    assert raw == np.array([1.0, -2.0, 0.5], dtype="<f2").tobytes()


@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_encoding_does_not_modify_the_input(dtype: str) -> None:
    x = activation()
    keep = x.clone()
    wire.encode(x, dtype, max_size=8)
    wire.encode(x, dtype)
    assert torch.equal(x, keep)


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_payload_does_not_follow_later_writes_to_the_input(dtype: str) -> None:
    x = activation()
    msg = wire.encode(x, dtype)
    before = bytes(msg["data"])
    x.mul_(-3.0)
    assert bytes(msg["data"]) == before


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("dtype", ["int8", "float64", "uint16", None, "UINT8"])
def test_unknown_wire_dtype(dtype: object) -> None:
    with pytest.raises(ValueError, match=r"wire dtype must be one of \('uint8', 'float16', 'float32'\)"):
        wire.encode(activation(), dtype)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([1.0, 2.0], TypeError, r"torch tensor or numpy array, got list"),
        (torch.zeros(2, 2, dtype=torch.bool), TypeError, r"numeric tensor, got torch.bool"),
        (torch.zeros(2, 2, dtype=torch.complex64), TypeError, r"numeric tensor, got torch.complex64"),
    ],
)
def test_bad_tensors(value: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        wire.encode(value)


def test_exact_needs_uint8() -> None:
    with pytest.raises(ValueError, match=r"exact encoding is for uint8 tensors, got torch.float32"):
        wire.encode(torch.zeros(3, 2, 2), exact=True)
