"""The wire codec: round-trip error bounds per kind (against float64 references), the binary layout the JS
decoder relies on, edge values, sizes and buffer types."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cnn_widgets import capture_activations, wire
from cnn_widgets.zoo.resnet import resnet18_like

F32_EPS = float(np.finfo(np.float32).eps)


def activation(c: int = 6, h: int = 17, w: int = 23, seed: int = 0) -> torch.Tensor:
    """Channels with very different ranges and offsets, as real activations have."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-3, 3, c).view(c, 1, 1)
    offsets = torch.linspace(-50, 50, c).view(c, 1, 1)
    return torch.randn(c, h, w, generator=g) * scales + offsets


def header(msg: dict) -> dict:
    return {k: v for k, v in msg.items() if k != "data"}


def side_and_payload(msg: dict, floats_per_slice: int) -> tuple[np.ndarray, np.ndarray]:
    """The buffer split by hand as the format says: float32 LE side part (rows of slices), payload bytes."""
    raw = bytes(msg["data"])
    slices = msg["shape"][0] if msg["shape"] else 1
    cut = 4 * floats_per_slice * slices
    return np.frombuffer(raw[:cut], "<f4").reshape(floats_per_slice, slices), np.frombuffer(raw[cut:], np.uint8)


def f16_bound(x64: np.ndarray) -> np.ndarray:
    """Per element: half a float16 ulp relative (2**-11), the float32 rounding of the input (2**-24), and
    below 2**-29 of the slice's peak an absolute 2**-39 of that peak."""
    flat = x64.reshape(x64.shape[0], -1)
    peak = np.abs(flat).max(axis=1, keepdims=True)
    return ((2.0**-11 + 2.0**-24) * np.abs(flat) + 2.0**-39 * peak).reshape(x64.shape)


# ------------------------------------------------------------------------------------------ uint8 (quantised)
@pytest.mark.parametrize("shape", [(6, 17, 23), (3, 5, 2, 2), (1, 64, 64), (4, 100)])
def test_uint8_error_is_at_most_half_a_step_per_channel(shape: tuple[int, ...]) -> None:
    x = activation(c=shape[0], h=int(np.prod(shape[1:])), w=1).reshape(shape)
    msg = wire.encode(x)
    assert header(msg) == {"shape": list(shape), "dtype": "uint8", "kind": "quantized", "codec": 2}
    flat = x.reshape(shape[0], -1).double().numpy()
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    got_lo, got_hi = wire.extrema(msg)
    assert np.array_equal(got_lo, lo) and np.array_equal(got_hi, hi)  # exact, before quantisation
    step = (hi - lo) / 255.0
    back = wire.decode(msg).reshape(shape[0], -1).astype(np.float64)
    err = np.abs(back - flat).max(axis=1)
    # half a quantisation step, plus float32 rounding of the scale and of min + scale * q
    slack = 4 * F32_EPS * np.maximum(np.abs(lo), np.abs(hi))
    assert (err <= step / 2 + slack).all(), (err / step).tolist()
    # and the bound is nearly reached: the codec does not waste precision either
    assert (err >= step * 0.4).all()


def test_uint8_layout_min_max_side_part_then_full_code_range() -> None:
    x = activation()
    msg = wire.encode(x)
    side, q = side_and_payload(msg, 2)
    flat = x.reshape(6, -1)
    assert np.array_equal(side[0], flat.min(dim=1).values.numpy())
    assert np.array_equal(side[1], flat.max(dim=1).values.numpy())
    q = q.reshape(6, -1)
    assert (q.min(axis=1) == 0).all() and (q.max(axis=1) == 255).all()
    # q is the rounded position in [min, max]: recompute it from the float64 reference
    pos = (flat.double().numpy() - side[0][:, None]) / ((side[1] - side[0])[:, None] / 255.0)
    assert np.abs(q - pos).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("value", [0.0, -3.5, 1e6, 1e-30])
def test_constant_channels_decode_exactly(value: float) -> None:
    x = activation(c=3)
    x[1] = value
    msg = wire.encode(x)
    side, q = side_and_payload(msg, 2)
    assert side[0, 1] == side[1, 1] == np.float32(value)
    assert (q.reshape(3, -1)[1] == 0).all()
    back = wire.decode(msg)
    assert (back[1] == np.float32(value)).all()
    assert np.isfinite(back).all()


def test_numpy_and_integer_input() -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.int64).reshape(2, 3, 4) * 7 - 20
    msg = wire.encode(arr)
    back = wire.decode(msg)
    assert np.abs(back - arr).max() <= (141 - 64) / 255 / 2 + 1e-4
    lo, hi = wire.extrema(msg)
    assert lo.tolist() == [-20.0, 64.0] and hi.tolist() == [57.0, 141.0]


# ------------------------------------------------------------------------------------------ float16 (scaled)
def test_float16_keeps_tiny_gradients_that_plain_float16_flushes() -> None:
    g = torch.Generator().manual_seed(3)
    mags = torch.logspace(-9, -7, 4 * 50, dtype=torch.float64).reshape(4, 50)
    signs = torch.where(torch.rand(4, 50, generator=g) < 0.5, -1.0, 1.0).double()
    x64 = (mags * signs)[:, torch.randperm(50, generator=g)].numpy()
    # plain float16 (what the widgets had to work around by hand) misses the bound on these values
    assert (np.abs(x64.astype(np.float16).astype(np.float64) - x64) > f16_bound(x64)).any()
    back = wire.decode(wire.encode(torch.from_numpy(x64), "float16")).astype(np.float64)
    assert (np.sign(back) == np.sign(x64)).all()
    assert (np.abs(back - x64) <= f16_bound(x64)).all()
    assert np.abs(back - x64).max() > 0  # lossy: it is float16, not a copy


def test_float16_mixed_magnitude_slices() -> None:
    g = torch.Generator().manual_seed(5)
    # each slice spans 8 decades, and the slices sit at very different magnitudes
    per_slice = torch.tensor([1e-12, 1e-3, 1.0, 1e5, 1e30], dtype=torch.float64).view(5, 1)
    decades = torch.logspace(-8, 0, 64, dtype=torch.float64).view(1, 64)
    signs = torch.where(torch.rand(5, 64, generator=g) < 0.5, -1.0, 1.0).double()
    x64 = (per_slice * decades * signs).reshape(5, 8, 8).numpy()
    x64[2, 0, :3] = [0.0, -0.0, 1e-20]  # below 2**-29 of the peak: absolute bound 2**-39 · peak
    back = wire.decode(wire.encode(torch.from_numpy(x64), "float16")).astype(np.float64)
    err = np.abs(back - x64)
    assert (err <= f16_bound(x64)).all(), (err / f16_bound(x64)).max()
    assert err[2, 0, 2] <= 2.0**-39 and back[2, 0, 0] == 0.0
    # no saturation at 65504: 1e30 comes back within float16 precision
    assert abs(back[4].max() / x64[4].max() - 1) <= 2.0**-11


def test_float16_side_part_is_a_power_of_two_per_slice() -> None:
    x = activation()
    x[3] = 0.0  # all-zero slice: any scale decodes it
    msg = wire.encode(x, "float16")
    assert header(msg) == {"shape": [6, 17, 23], "dtype": "float16", "kind": "scaled", "codec": 2}
    side, payload = side_and_payload(msg, 1)
    scale = side[0].astype(np.float64)
    mant, _ = np.frexp(scale)
    assert (mant == 0.5).all()
    peak = x.abs().reshape(6, -1).amax(dim=1).double().numpy()
    live = peak > 0
    assert ((peak / scale >= 2.0**14) & (peak / scale < 2.0**15))[live].all()
    halves = payload.view("<f2").astype(np.float64).reshape(6, -1)
    np.testing.assert_array_equal(wire.decode(msg).reshape(6, -1), (halves * scale[:, None]).astype(np.float32))


def test_float16_buffer_is_little_endian_ieee_half() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5]])  # peak 2 = 0.5 · 2**2: scale 2**(2 - 15)
    raw = bytes(wire.encode(x, "float16")["data"])
    assert raw[:4] == np.array([2.0**-13], dtype="<f4").tobytes()
    assert raw[4:] == np.array([8192.0, -16384.0, 4096.0], dtype="<f2").tobytes()


def test_float16_extreme_scales_stay_in_float32() -> None:
    x = torch.tensor([[3e38, -1e38], [1e-40, 5e-45]])  # near float32's max; float32 subnormals
    msg = wire.encode(x, "float16")
    side, _ = side_and_payload(msg, 1)
    assert np.isfinite(side).all() and (side > 0).all()
    back = wire.decode(msg).astype(np.float64)
    ref = x.double().numpy()
    assert np.allclose(back[0], ref[0], rtol=2.0**-11, atol=0)
    assert np.abs(back[1] - ref[1]).max() <= 2.0**-11 * 1e-40


# ------------------------------------------------------------------------------------------ float32, exact uint8
def test_float32_is_exact() -> None:
    x = activation()
    x[1, 2, 3] = 1.0000001
    x[2, 0, 0] = -1e-38
    msg = wire.encode(x, "float32")
    assert header(msg) == {"shape": [6, 17, 23], "dtype": "float32", "kind": "raw", "codec": 2}
    back = wire.decode(msg)
    assert back.dtype == np.float32
    assert np.array_equal(back.view(np.uint32), x.numpy().view(np.uint32))


def test_exact_uint8_is_lossless() -> None:
    img = torch.randint(0, 256, (3, 31, 17), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    msg = wire.encode(img, exact=True)
    assert header(msg) == {"shape": [3, 31, 17], "dtype": "uint8", "kind": "exact", "codec": 2}
    assert bytes(msg["data"]) == img.numpy().tobytes()  # no side part
    back = wire.decode(msg)
    assert back.dtype == np.uint8 and np.array_equal(back, img.numpy())
    hwc = img.permute(1, 2, 0)  # non-contiguous
    assert np.array_equal(wire.decode(wire.encode(hwc, exact=True)), hwc.numpy())


@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_non_contiguous_and_float64_input(dtype: str) -> None:
    x = activation().double().transpose(1, 2)
    assert not x.is_contiguous()
    back = wire.decode(wire.encode(x, dtype)).astype(np.float64)
    assert back.shape == tuple(x.shape)
    want = x.numpy()
    if dtype == "uint8":
        step = (want.max(axis=(1, 2)) - want.min(axis=(1, 2))) / 255.0
        assert (np.abs(back - want).max(axis=(1, 2)) <= step / 2 * 1.0001).all()
    elif dtype == "float16":
        assert (np.abs(back - want) <= f16_bound(want)).all()
    else:
        assert (np.abs(back - want) <= F32_EPS / 2 * np.abs(want)).all()


# ------------------------------------------------------------------------------------------ edge values
@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_non_finite_values_become_zero_and_are_counted(dtype: str) -> None:
    x = torch.tensor([[[1.0, math.nan], [math.inf, 4.0]], [[-math.inf, -2.0], [2.0, 0.5]]])
    msg = wire.encode(x, dtype)
    assert msg["nonfinite"] == 3
    text = json.dumps(header(msg), allow_nan=False)  # strict JSON: no NaN/Infinity tokens
    assert json.loads(text)["nonfinite"] == 3
    side, _ = side_and_payload(msg, {"uint8": 2, "float16": 1, "float32": 0}[dtype])
    assert np.isfinite(side).all()
    lo, hi = wire.extrema(msg)
    np.testing.assert_allclose(lo, [0.0, -2.0], atol=4.0 / 510)
    np.testing.assert_allclose(hi, [4.0, 2.0], atol=4.0 / 510)
    back = wire.decode(msg)
    assert np.isfinite(back).all()
    np.testing.assert_allclose(back[0], [[1.0, 0.0], [0.0, 4.0]], atol=4.0 / 510 + 1e-6)
    np.testing.assert_allclose(back[1], [[0.0, -2.0], [2.0, 0.5]], atol=4.0 / 510 + 1e-6)


@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_finite_input_has_no_nonfinite_field(dtype: str) -> None:
    assert "nonfinite" not in wire.encode(activation(), dtype)


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_all_nan_channel(dtype: str) -> None:
    x = activation(c=2)
    x[0] = math.nan
    msg = wire.encode(x, dtype)
    assert msg["nonfinite"] == x[0].numel()
    side, _ = side_and_payload(msg, 2 if dtype == "uint8" else 1)
    assert np.isfinite(side).all()
    assert (wire.decode(msg)[0] == 0).all()


@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_scalar_and_empty_tensors(dtype: str) -> None:
    msg = wire.encode(torch.tensor(2.5), dtype)
    assert msg["shape"] == [] and wire.decode(msg).shape == () and float(wire.decode(msg)) == 2.5
    per_slice = {"uint8": 2, "float16": 1, "float32": 0}[dtype]
    empty = wire.encode(torch.zeros(3, 0, 4), dtype)
    assert empty["shape"] == [3, 0, 4] and wire.nbytes(empty) == 4 * per_slice * 3
    assert wire.decode(empty).shape == (3, 0, 4)
    assert [v.tolist() for v in wire.extrema(empty)] == [[0.0] * 3, [0.0] * 3]
    none = wire.encode(torch.zeros(0, 5), dtype)
    assert wire.nbytes(none) == 0 and wire.decode(none).shape == (0, 5)


# ------------------------------------------------------------------------------------------ downsampling
@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_downsampling_area_averages_to_max_size(dtype: str) -> None:
    x = activation(c=4, h=64, w=64).double()
    msg = wire.encode(x, dtype, max_size=16)
    assert msg["shape"] == [4, 16, 16]
    want = x.reshape(4, 16, 4, 16, 4).mean(dim=(2, 4)).numpy()  # float64 reference
    back = wire.decode(msg).astype(np.float64)
    if dtype == "uint8":
        step = (want.max(axis=(1, 2)) - want.min(axis=(1, 2))) / 255.0
        assert (np.abs(back - want).max(axis=(1, 2)) <= step / 2 * 1.001 + 1e-4).all()
        lo, _ = wire.extrema(msg)
        np.testing.assert_allclose(lo, want.reshape(4, -1).min(axis=1), rtol=1e-5, atol=1e-4)
    else:
        np.testing.assert_allclose(back, want, rtol=2.0**-11 if dtype == "float16" else 1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "max_size", "want"),
    [((2, 64, 32), 16, [2, 16, 8]), ((2, 30, 90), 45, [2, 15, 45]), ((2, 10, 12), 16, [2, 10, 12]),
     ((1, 2, 3, 100, 7), 10, [1, 2, 3, 10, 1])],
)
def test_downsampled_shapes(shape: tuple[int, ...], max_size: int, want: list[int]) -> None:
    msg = wire.encode(torch.rand(shape), max_size=max_size)
    assert msg["shape"] == want
    assert wire.nbytes(msg) == 8 * want[0] + int(np.prod(want))


def test_downsampling_leaves_small_tensors_untouched() -> None:
    x = activation(c=2, h=8, w=8)
    assert np.array_equal(wire.decode(wire.encode(x, "float32", max_size=8)), x.numpy())


# ------------------------------------------------------------------------------------------ size and buffers
@pytest.mark.parametrize(
    ("dtype", "per_element", "per_slice"), [("uint8", 1, 8), ("float16", 2, 4), ("float32", 4, 0)]
)
def test_buffer_size_and_a_constant_small_header(dtype: str, per_element: int, per_slice: int) -> None:
    for c in (1, 64, 512):
        x = activation(c=c, h=14, w=14)
        msg = wire.encode(x, dtype)
        assert wire.nbytes(msg) == per_slice * c + per_element * x.numel()
        # the JSON header holds no per-slice numbers: it does not grow with the channel count
        assert len(json.dumps(header(msg))) < 100


@pytest.mark.parametrize("shape", [(), (7,), (1, 300), (64, 56, 56), (3, 0, 4), (0, 5), (2, 3, 4, 5)])
def test_encoded_nbytes_predicts_buffer_plus_header(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape)
    for dtype in wire.DTYPES:
        msg = wire.encode(x, dtype)
        assert wire.encoded_nbytes(shape, dtype) == wire.nbytes(msg) + len(json.dumps(header(msg))), dtype
    image = wire.encode((x * 255).to(torch.uint8), exact=True)
    assert wire.encoded_nbytes(shape, exact=True) == wire.nbytes(image) + len(json.dumps(header(image)))


def test_resnet18_layer_outputs_cost_at_most_1_03_bytes_per_element() -> None:
    """The wire-size target over every layer output of the ResNet-18-shaped model at 224², as
    bench/bench_wire.py counts it (buffer plus JSON header, C×H×W maps per channel, vectors one slice)."""
    image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    acts = capture_activations(resnet18_like().eval(), image)
    elements = total = 0
    for act in acts.values():
        a = act[0] if act.ndim > 1 else act
        msg = wire.encode(a.reshape(1, -1) if a.ndim == 1 else a)
        elements += a.numel()
        total += wire.nbytes(msg) + len(json.dumps(header(msg)))
    assert elements > 7e6
    assert total <= 1.03 * elements, total / elements


def test_data_is_one_flat_memoryview_not_a_list() -> None:
    msg = wire.encode(activation())
    data = msg["data"]
    assert isinstance(data, memoryview)
    assert data.format == "B" and data.ndim == 1 and data.contiguous and data.nbytes == 8 * 6 + 6 * 17 * 23
    assert not any(isinstance(v, list) and len(v) > 3 for v in msg.values())
    json.dumps(header(msg))


@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_encoding_does_not_modify_the_input(dtype: str) -> None:
    x = activation()
    keep = x.clone()
    wire.encode(x, dtype, max_size=8)
    wire.encode(x, dtype)
    assert torch.equal(x, keep)


@pytest.mark.parametrize("dtype", wire.DTYPES)
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


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"codec": 1}, r"codec 1; this decoder reads codec 2"),
        ({"kind": "scaled"}, r"unknown wire kind/dtype 'scaled'/'uint8'"),
        ({"data": memoryview(b"\x00" * 7)}, r"wire data has 7 bytes but shape \[2, 3\] of quantized uint8 needs 22"),
        ({"shape": [3, 2]}, r"has 22 bytes but shape \[3, 2\] of quantized uint8 needs 30"),
    ],
)
def test_decode_rejects_inconsistent_messages(change: dict, match: str) -> None:
    msg = wire.encode(torch.rand(2, 3))
    with pytest.raises(ValueError, match=match):
        wire.decode({**msg, **change})
