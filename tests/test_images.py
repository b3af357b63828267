"""cnn_widgets.images: every bad image, mean or std gets a TypeError/ValueError naming the argument; every
good form (uint16, big-endian, PIL 16-bit and palette modes, RGBA for a 4-channel model) gives the values
an independent float64 reference says; expected_channels follows run order and never touches the model."""

from __future__ import annotations

import gc
import pathlib
import re
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnn_widgets import images
from cnn_widgets.images import ImageFileError, ImageFileNotFoundError, expected_channels, prepare, to_batch

RNG = np.random.default_rng(7)
RGB_U8 = RNG.integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
GREY_U16 = RNG.integers(0, 65536, size=(6, 9), dtype=np.uint16)


def raises_naming(error: type[Exception], name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Call ``fn``; assert it raises ``error`` with ``name`` as a word of the message; return the message."""
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message), message
    return message


def chw(hwc: np.ndarray) -> np.ndarray:
    """float64 (1,C,H,W) reference of an HWC or HW array, without any cnn_widgets code."""
    a = hwc.astype(np.float64)
    return (a[None, None] if a.ndim == 2 else a.transpose(2, 0, 1)[None])


def hook_sizes(model: nn.Module) -> dict[str, int]:
    return {
        f"{name}.{attr}": len(value)
        for name, m in model.named_modules()
        for attr, value in vars(m).items()
        if "hook" in attr and isinstance(value, dict)
    }


# ------------------------------------------------------------------------------ 1. mean and std
@pytest.mark.parametrize(
    ("mean", "std", "error", "name"),
    [
        ("0.5", None, TypeError, "mean"),
        (True, None, TypeError, "mean"),
        ([0.5, None, 0.5], None, TypeError, "mean"),
        (None, ["a", "b", "c"], TypeError, "std"),
        (None, torch.tensor([0.2 + 1j]), TypeError, "std"),
        ([float("nan")] * 3, None, ValueError, "mean"),
        (0.5, float("inf"), ValueError, "std"),
        ((0.5, 0.5), None, ValueError, "mean"),
        ([], None, ValueError, "mean"),
        (None, (0.2, 0.0, 0.2), ValueError, "std"),
        (None, (0.2, 0.2, 0.2, 0.2), ValueError, "std"),
    ],
    ids=["str", "bool", "none-inside", "str-inside", "complex", "nan", "inf", "count", "empty", "zero-std",
         "std-count"],
)
def test_bad_mean_or_std_is_named(mean: Any, std: Any, error: type[Exception], name: str) -> None:
    message = raises_naming(error, name, to_batch, torch.rand(3, 8, 8), mean, std)
    assert "the image contains" not in message  # a NaN mean is not the image's fault


def test_mean_in_0_255_units_explains_the_conversion() -> None:
    message = raises_naming(ValueError, "mean", to_batch, RGB_U8, (123.675, 116.28, 103.53), (58.4, 57.1, 57.4))
    assert "0‥1" in message and "255" in message and "0.502" in message


def test_std_above_1_is_kept_with_a_mean_and_refused_alone() -> None:
    x = RNG.random((5, 4, 3))
    np.testing.assert_allclose(to_batch(x, 0.5, 2.0).numpy(), (chw(x) - 0.5) / 2.0, rtol=0, atol=1e-6)
    raises_naming(ValueError, "std", to_batch, x, None, 255)


@pytest.mark.parametrize(
    "form",
    [lambda v: v, lambda v: tuple(np.float32(x) for x in v), lambda v: np.array(v),
     lambda v: torch.tensor(v).view(3, 1, 1)],
    ids=["list", "np-scalars", "ndarray", "tensor-311"],
)
def test_mean_and_std_forms_match_a_float64_reference(form: Callable[[list[float]], Any]) -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    want = (chw(RGB_U8) / 255.0 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    np.testing.assert_allclose(to_batch(RGB_U8, form(mean), form(std)).numpy(), want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ 2. 0‥255 floats with mean/std
def test_float_image_in_0_255_with_mean_is_refused() -> None:
    x = RGB_U8.astype(np.float32)
    message = raises_naming(ValueError, "image", to_batch, x, 0.5, 0.25)
    assert "255" in message and "uint8" in message
    raises_naming(ValueError, "image", to_batch, x, None, 0.25)
    np.testing.assert_array_equal(to_batch(x).numpy(), chw(x))  # without mean/std: passed as it is


def test_already_normalised_float_image_with_mean_is_refused() -> None:
    normalised = (RNG.random((3, 8, 8)) - 0.5) / 0.25
    raises_naming(ValueError, "image", to_batch, normalised, 0.5, 0.25)


# --------------------------------------------------------------------------- 3. integer scales
@pytest.mark.parametrize(
    "image",
    [np.linspace(0, 4000, 48, dtype=np.int64).reshape(6, 8), np.full((6, 8), -3, np.int8),
     torch.full((3, 4, 4), 256, dtype=torch.int16), torch.full((3, 4, 4), -1, dtype=torch.int32)],
    ids=["int64-4000", "int8-negative", "torch-int16-256", "torch-int32-negative"],
)
def test_integer_images_outside_0_255_are_refused(image: Any) -> None:
    message = raises_naming(ValueError, "image", to_batch, image)
    assert "0‥255" in message and "uint16" in message


@pytest.mark.parametrize(
    "make",
    [lambda a: a, lambda a: torch.from_numpy(a.astype(np.int32)).to(torch.uint16),
     lambda a: a.astype(">u2"), lambda a: Image.fromarray(a),
     lambda a: Image.frombytes("I;16B", (a.shape[1], a.shape[0]), a.astype(">u2").tobytes()),
     lambda a: Image.fromarray(a.astype(np.int32))],
    ids=["np-uint16", "torch-uint16", "np-big-endian-u2", "pil-I;16", "pil-I;16B", "pil-I"],
)
def test_16_bit_images_are_divided_by_65535(make: Callable[[np.ndarray], Any]) -> None:
    batch = to_batch(make(GREY_U16))
    assert batch.dtype == torch.float32 and batch.shape == (1, 1, 6, 9)
    np.testing.assert_allclose(batch.numpy(), chw(GREY_U16) / 65535.0, rtol=0, atol=1e-7)


def test_16_bit_png_file_round_trip(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(GREY_U16).save(path)
    batch, display = prepare(path)
    np.testing.assert_allclose(batch.numpy(), chw(GREY_U16) / 65535.0, rtol=0, atol=1e-7)
    want = np.rint(GREY_U16.astype(np.float64) / 65535.0 * 255.0)
    assert np.abs(display[..., 0].astype(np.float64) - want).max() <= 1


def test_integer_images_in_0_255_match_uint8() -> None:
    for image in (RGB_U8.astype(np.int64), torch.from_numpy(RGB_U8.astype(np.int16)).permute(2, 0, 1)):
        np.testing.assert_allclose(to_batch(image).numpy(), chw(RGB_U8) / 255.0, rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------- 4. PIL modes
def test_pil_mode_I_outside_16_bits_is_refused() -> None:
    raises_naming(ValueError, "image", to_batch, Image.fromarray(np.full((4, 4), 70000, np.int32)))


@pytest.mark.parametrize(
    ("make", "want"),
    [
        (lambda: Image.fromarray(RGB_U8[..., 0] > 127), lambda: chw((RGB_U8[..., 0] > 127).astype(np.float64))),
        (lambda: Image.fromarray((RGB_U8[..., 0] / 255.0).astype(np.float32), "F"),
         lambda: chw((RGB_U8[..., 0] / 255.0).astype(np.float32))),
        (lambda: Image.fromarray(RGB_U8).convert("P"),
         lambda: chw(np.asarray(Image.fromarray(RGB_U8).convert("P").convert("RGB"))) / 255.0),
        (lambda: Image.fromarray(RGB_U8).convert("CMYK"),
         lambda: chw(np.asarray(Image.fromarray(RGB_U8).convert("CMYK").convert("RGB"))) / 255.0),
        (lambda: Image.fromarray(RGB_U8).convert("YCbCr"),
         lambda: chw(np.asarray(Image.fromarray(RGB_U8).convert("YCbCr").convert("RGB"))) / 255.0),
        (lambda: Image.fromarray(np.dstack([RGB_U8, RGB_U8[..., :1]]), "RGBA").convert("PA"),
         lambda: chw(np.asarray(Image.fromarray(np.dstack([RGB_U8, RGB_U8[..., :1]]), "RGBA").convert("PA")
                                .convert("RGB"))) / 255.0),
        (lambda: Image.fromarray(RGB_U8[..., :2], "LA"), lambda: chw(RGB_U8[..., 0]) / 255.0),
    ],
    ids=["1", "F", "P", "CMYK", "YCbCr", "PA", "LA"],
)
def test_pil_modes_are_converted_not_clipped(make: Callable[[], Any], want: Callable[[], np.ndarray]) -> None:
    np.testing.assert_allclose(to_batch(make()).numpy(), want(), rtol=0, atol=1e-7)


def test_pil_images_emit_no_warning() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())  # fresh: the channel trace runs too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for mode in ("RGB", "RGBA", "P", "CMYK"):
            prepare(Image.fromarray(RGB_U8).convert(mode), model=model)
        to_batch(Image.fromarray(GREY_U16))
    assert [str(w.message) for w in caught] == []


# ---------------------------------------------------------------------- 5. numpy dtypes and order
@pytest.mark.parametrize("dtype", [">f4", ">f8", np.longdouble, np.float16])
def test_float_dtypes_and_byte_orders_equal_native_float32(dtype: Any) -> None:
    native = (RGB_U8 / 255.0).astype(np.float16).astype(np.float32)  # exact in every dtype above
    got = to_batch(native.astype(dtype))
    assert got.dtype == torch.float32
    assert torch.equal(got, to_batch(native))


@pytest.mark.parametrize(
    ("image", "dtype_text"),
    [(np.zeros((4, 4, 3), bool), "bool"), (np.zeros((4, 4), np.complex64), "complex64"),
     (np.array([["a", "b"]]), "<U1"), (np.array([[1, None]], dtype=object), "object")],
    ids=["bool", "complex", "str", "object"],
)
def test_non_numeric_arrays_are_refused_naming_the_dtype(image: np.ndarray, dtype_text: str) -> None:
    message = raises_naming(TypeError, "image", to_batch, image)
    assert dtype_text in message


def test_readonly_array_gives_no_warning_and_result_never_aliases_the_input() -> None:
    a = (RGB_U8 / 255.0).astype(np.float32)
    a.setflags(write=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = to_batch(a)
    assert caught == []
    writable = a.copy()
    batch = to_batch(writable)
    batch += 1
    np.testing.assert_array_equal(writable, a)
    x = torch.rand(3, 4, 4)
    before = x.clone()
    to_batch(x).add_(1)
    assert torch.equal(x, before)


# ------------------------------------------------------------------------------------- 6. files
def test_missing_file_is_file_not_found_and_value_error(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.png"
    raises_naming(FileNotFoundError, repr(str(missing)), to_batch, missing)
    raises_naming(ValueError, repr(str(missing)), to_batch, str(missing))
    try:
        to_batch(missing)
    except ValueError as err:
        assert isinstance(err, ImageFileNotFoundError) and isinstance(err, FileNotFoundError)


def _truncated_png(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "cut.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "make",
    [lambda tmp: tmp, lambda tmp: (tmp / "notes.png", (tmp / "notes.png").write_text("not an image"))[0],
     _truncated_png],
    ids=["directory", "not-an-image", "truncated"],
)
def test_unreadable_files_name_the_path(make: Callable[[pathlib.Path], pathlib.Path], tmp_path: pathlib.Path) -> None:
    path = make(tmp_path)
    raises_naming(ImageFileError, repr(str(path)), to_batch, path)
    assert issubclass(ImageFileError, ValueError)


# ----------------------------------------------------------------------------------- 7. tensors
@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: torch.rand(3, 4, 4, device="meta"), ValueError),
        (lambda: torch.rand(3, 4, 4).to_sparse(), TypeError),
        (lambda: torch.rand(4, 4).to_sparse_csr(), TypeError),
        (lambda: torch.rand(3, 4, 4, dtype=torch.complex64), TypeError),
        (lambda: torch.zeros(3, 4, 4, dtype=torch.bool), TypeError),
        (lambda: torch.quantize_per_tensor(torch.rand(3, 4, 4), 0.01, 0, torch.quint8), TypeError),
    ],
    ids=["meta", "sparse-coo", "sparse-csr", "complex", "bool", "quantized"],
)
def test_unusable_tensors_are_refused(make: Callable[[], torch.Tensor], error: type[Exception]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's beta/deprecation notices for building these tensors
        image = make()
    raises_naming(error, "image", to_batch, image)


def test_grad_and_non_contiguous_tensors_are_fine() -> None:
    x = torch.rand(4, 5, 3, requires_grad=True)
    batch = to_batch(x.permute(2, 0, 1))
    assert not batch.requires_grad and batch.is_contiguous()
    np.testing.assert_array_equal(batch.numpy(), chw(x.detach().numpy()))


# ------------------------------------------------------------------------------- 8. alpha
def test_four_channel_image_for_a_four_channel_model() -> None:
    rgba = np.dstack([RGB_U8, RNG.integers(0, 256, RGB_U8.shape[:2], dtype=np.uint8)])
    four = nn.Sequential(nn.Conv2d(4, 2, 3))
    for image in (rgba, Image.fromarray(rgba, "RGBA")):
        batch, display = prepare(image, (0.5,) * 4, 0.5, model=four)
        np.testing.assert_allclose(batch.numpy(), (chw(rgba) / 255.0 - 0.5) / 0.5, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(display, RGB_U8)
        for model in (nn.Sequential(nn.Conv2d(3, 2, 3)), None):  # alpha dropped
            np.testing.assert_allclose(to_batch(image, model=model).numpy(), chw(RGB_U8) / 255.0, rtol=0, atol=1e-7)
    raises_naming(ValueError, "image", to_batch, rgba, model=nn.Sequential(nn.Conv2d(1, 2, 3)))
    message = raises_naming(ValueError, "image", to_batch, Image.fromarray(RGB_U8[..., :2], "LA"),
                            model=nn.Sequential(nn.Conv2d(3, 2, 3)))
    assert "alpha" in message


# ------------------------------------------------------------------------ 9. expected_channels
class RunOrder(nn.Module):
    """The first registered conv (8 inputs) runs second; the first to run takes 3."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(8, 4, 1)
        self.stem = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(x)))


class Untraceable(RunOrder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = x * 2
        return super().forward(x)


def test_expected_channels_follows_run_order() -> None:
    model = RunOrder()
    assert next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels == 8
    assert expected_channels(model) == 3
    assert to_batch(torch.rand(3, 8, 8), model=model).shape == (1, 3, 8, 8)
    raises_naming(ValueError, "image", to_batch, torch.rand(8, 8, 8), model=model)
    assert expected_channels(Untraceable()) == 8  # falls back to registration order


def test_functional_conv_first_means_unknown_and_lazy_conv_means_any() -> None:
    class Functional(RunOrder):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.rand(3, 5, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(F.conv2d(x, self.w))

    assert expected_channels(Functional()) is None

    class StdConv(nn.Conv2d):  # a user conv class calling F.conv2d itself is still a conv module
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, self.weight - self.weight.mean(), self.bias)

    assert expected_channels(nn.Sequential(StdConv(3, 4, 3))) == 3
    assert expected_channels(nn.Sequential(nn.LazyConv2d(4, 3))) is None
    assert expected_channels(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))) is None


def test_expected_channels_is_cached_per_model_and_follows_module_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = images._traced_first_conv
    monkeypatch.setattr(images, "_traced_first_conv", lambda m: calls.append(m) or real(m))
    model = RunOrder()
    assert [expected_channels(model) for _ in range(3)] == [3, 3, 3]
    assert len(calls) == 1
    model.stem = nn.Conv2d(1, 8, 3)
    assert expected_channels(model) == 1 and len(calls) == 2
    ref = weakref.ref(model)
    del model, calls[:]
    gc.collect()
    assert ref() is None  # the cache does not keep models alive


def test_tracing_never_changes_the_model() -> None:
    seen: list[str] = []

    class Stateful(RunOrder):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Identity())
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            self.last = self.block(x)
            return super().forward(self.last)

    model = Stateful().train()
    model.block.register_forward_hook(lambda *a: seen.append("block"))
    model.stem.register_forward_pre_hook(lambda *a: seen.append("stem"))
    params = {n: (p, p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    hooks, attrs = hook_sizes(model), {n: sorted(vars(m)) for n, m in model.named_modules()}
    assert expected_channels(model) == 3
    assert model.calls == 0 and not hasattr(model, "last") and seen == []
    assert hook_sizes(model) == hooks and {n: sorted(vars(m)) for n, m in model.named_modules()} == attrs
    assert all(m.training for m in model.modules())
    for name, p in model.named_parameters():
        was, values, grad = params[name]
        assert p is was and p.device.type == "cpu" and torch.equal(p, values) and p.requires_grad == grad


def test_tracing_lets_other_threads_run_their_models() -> None:
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    x = torch.rand(1, 3, 8, 8)
    want = other(x).detach()
    got: list[torch.Tensor] = []

    class Spawner(RunOrder):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            # runs during the trace: another thread's forward meets fx's patched nn.Module.__call__
            worker = threading.Thread(target=lambda: got.append(other(x).detach()))
            worker.start()
            worker.join()
            return super().forward(inp)

    assert expected_channels(Spawner()) == 3  # 3 only by run order: the trace itself succeeded
    assert len(got) == 1 and torch.equal(got[0], want)


def _small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(6, 6, 3, groups=3), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()


@pytest.mark.parametrize(
    "compile_",
    [torch.jit.script, lambda m: torch.jit.trace(m, torch.rand(1, 6, 8, 8))],
    ids=["script", "trace"],
)
def test_script_modules_use_registration_order_without_fx(
    compile_: Callable[[nn.Module], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's own deprecation notices
        scripted = compile_(_small_cnn())
    monkeypatch.setattr(images, "_traced_first_conv", lambda m: pytest.fail("fx must not trace a ScriptModule"))
    assert expected_channels(scripted) == 6  # weight.shape[1] is 2: groups are taken into account
    assert to_batch(torch.rand(6, 8, 8), model=scripted).shape == (1, 6, 8, 8)
    raises_naming(ValueError, "image", to_batch, torch.rand(3, 8, 8), model=scripted)


def test_script_submodule_inside_a_traced_model() -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unused = nn.Conv2d(9, 3, 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.backbone = torch.jit.script(_small_cnn())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    assert expected_channels(Wrapper()) == 6


# ----------------------------------------------------------------------------------- 10. shapes
@pytest.mark.parametrize(
    "image",
    [torch.rand(3, 0, 8), np.zeros((8, 0, 3), np.uint8), torch.rand(0, 3, 8, 8), torch.rand(1, 1, 3, 8, 8),
     np.zeros((2, 1, 3, 8, 8), np.float32), torch.rand(8)],
    ids=["zero-height", "np-zero-width", "empty-batch", "rank5", "np-rank5", "rank1"],
)
def test_empty_and_wrong_rank_images_are_refused(image: Any) -> None:
    raises_naming(ValueError, "image", to_batch, image)
