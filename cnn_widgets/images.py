"""One way in for images: every public function accepts the same forms and fails with the same messages.

Accepted: a torch tensor (C,H,W), (H,W) or (N,C,H,W); a numpy array HWC, CHW, (H,W) or NHWC/NCHW; a PIL
image; or a path to an image file. Values are *unnormalised pixels* and are brought to 0‥1 like this:

* uint8 and other integer arrays/tensors with values in 0‥255 are divided by 255; uint16 by its full
  range 65535. Any other integer values (an int64 image up to 4000, a negative int8) are refused: the
  scale would be a guess.
* Floats (float16/32/64, long double, bfloat16; any byte order) are taken as 0‥1 as they are. A float
  array outside 0‥1 with no ``mean``/``std`` is passed to the model as it is (it may already be
  normalised) and min–max scaled for display. With ``mean``/``std`` given, a float image above 1.5 (a
  0‥255 image in a float array) or below -0.5 (already normalised) is refused.
* bool, complex, string and object data, NaN/inf, sparse, quantized and meta tensors are refused.
* PIL modes: ``1``, ``L``, ``RGB``, ``RGBA``, ``LA`` as they are (``1`` → 0/255); ``P``/``PA`` through
  their palette to RGB(A); ``CMYK``, ``YCbCr``, ``HSV``, ``LAB``, ``RGBX`` to RGB; ``I;16*`` divided by
  65535; ``I`` likewise when it fits 0‥65535 (else refused); ``F`` as floats in 0‥1.

``mean``/``std`` are in the same 0‥1 pixel units, one value or one per channel: a ``mean`` above 1 is
refused (0‥255 statistics must be divided by 255), as is a ``std`` above 1 without a ``mean``.

Channels: the model's expected count is the ``in_channels`` of the first convolution that runs
(:func:`expected_channels`). An alpha channel (a PIL ``RGBA``/``LA`` image, or any 4-channel image) is
kept when the model wants that many channels and dropped otherwise, also when no model is given. The
display image is always RGB: the first three channels, or the first one as grey.

Every refusal is a ``TypeError`` or ``ValueError`` whose message names the bad argument (``image``,
``mean``, ``std``, or the file path); unreadable files raise :class:`ImageFileError`, missing ones
:class:`ImageFileNotFoundError` (a ``FileNotFoundError`` and a ``ValueError``).
"""

from __future__ import annotations

import copy
import numbers
import operator
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.conv import _ConvNd

Image = Any  # torch.Tensor | np.ndarray | PIL.Image.Image | str | os.PathLike
Stats = float | Sequence[float] | None

_COLOR_DIMS = (1, 3, 4)
_FLOAT_MAX = 1.5  # a float image above this, with mean/std given, holds 0‥255 values
_FLOAT_MIN = -0.5  # …and below this it is already normalised
_UINT16_MAX = 65535.0
_INT_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32,
               torch.uint64}
_SCRIPT_CONVS = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"}
_FUNCTIONAL_CONVS = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
                     torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d,
                     torch.conv_transpose3d, torch.convolution}


class ImageFileError(ValueError):
    """An image path that cannot be read as an image: a directory, not an image, or a truncated file."""


class ImageFileNotFoundError(ImageFileError, FileNotFoundError):
    """An image path that does not exist; ``except FileNotFoundError`` and ``except ValueError`` both catch it."""


# ------------------------------------------------------------------------------------------- channels
_FIRST_CONV: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[tuple[str, int], ...], str | None]] = (
    weakref.WeakKeyDictionary()
)
_CACHE_LOCK = threading.Lock()
_TRACE_LOCK = threading.Lock()


def expected_channels(model: nn.Module) -> int | None:
    """Input channels of the first convolution the model runs; ``None`` if none runs, or it is lazy.

    Run order comes from a ``torch.fx`` symbolic trace of a weightless copy of the model (so the user's
    model is never touched), cached per model until its modules change; a model that does not trace
    falls back to registration order, and so do ScriptModules (fx cannot trace them). A functional
    convolution running before any conv module makes the answer ``None`` (unknown: nothing is checked).
    """
    modules = dict(model.named_modules())
    name = _first_conv_name(model, modules)
    return None if name is None else _in_channels(modules[name])


def _first_conv_name(model: nn.Module, modules: dict[str, nn.Module]) -> str | None:
    if isinstance(model, torch.jit.ScriptModule):
        return _first_registered_conv(modules)
    signature = tuple((name, id(m)) for name, m in modules.items())
    try:
        with _CACHE_LOCK:
            cached = _FIRST_CONV.get(model)
    except TypeError:  # a model class that defines __eq__ without __hash__: no caching
        cached = None
    if cached is not None and cached[0] == signature:
        return cached[1]
    from .capture import model_lock  # capture imports this module

    with model_lock(model), _TRACE_LOCK:
        try:
            name = _traced_first_conv(model)
        except Exception:  # any model fx cannot copy or trace falls back to registration order
            name = _first_registered_conv(modules)
    try:
        with _CACHE_LOCK:
            _FIRST_CONV[model] = (signature, name)
    except TypeError:
        pass
    return name


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, _ConvNd) or (
        isinstance(m, torch.jit.ScriptModule) and getattr(m, "original_name", None) in _SCRIPT_CONVS
    )


def _first_registered_conv(modules: dict[str, nn.Module]) -> str | None:
    return next((name for name, m in modules.items() if _is_conv(m)), None)


def _in_channels(conv: nn.Module) -> int | None:
    """``in_channels`` of a conv module, also a scripted or traced one (whose attributes may be gone)."""
    if isinstance(conv, _ConvNd):
        return int(conv.in_channels) or None  # 0: a lazy conv not yet run, it takes any count
    if hasattr(conv, "in_channels"):  # torch.jit.script keeps it
        return int(conv.in_channels)
    weight = getattr(conv, "weight", None)
    if weight is None:
        return None
    if conv.original_name.startswith("ConvTranspose"):
        return int(weight.shape[0])
    groups = _traced_groups(conv)
    return None if groups is None else int(weight.shape[1]) * groups


def traced_conv_args(conv: Any) -> dict[str, Any] | None:
    """``stride``, ``padding``, ``dilation`` and ``groups`` of a ``torch.jit.trace``'d conv, read from the
    constants of its graph (traced modules keep no attributes but parameters); ``None`` when unknown."""
    slots = {  # argument positions after (input, weight, bias)
        "aten::_convolution": {"stride": 3, "padding": 4, "dilation": 5, "groups": 8},
        "aten::conv1d": {"stride": 3, "padding": 4, "dilation": 5, "groups": 6},
        "aten::conv2d": {"stride": 3, "padding": 4, "dilation": 5, "groups": 6},
        "aten::conv3d": {"stride": 3, "padding": 4, "dilation": 5, "groups": 6},
    }
    try:
        for node in conv.graph.nodes():
            if node.kind() in slots:
                inputs = list(node.inputs())
                args = {}
                for name, i in slots[node.kind()].items():
                    producer = inputs[i].node()
                    if producer.kind() == "prim::Constant":
                        args[name] = producer.output().toIValue()
                    elif producer.kind() == "prim::ListConstruct":
                        args[name] = [int(v.node().output().toIValue()) for v in producer.inputs()]
                return args if "groups" in args else None
    except (AttributeError, IndexError, RuntimeError, TypeError):
        return None
    return None


def _traced_groups(conv: Any) -> int | None:
    args = traced_conv_args(conv)
    return None if args is None else int(args["groups"])


class _RunOrderTracer(fx.Tracer):
    """An fx tracer that keeps convolutions (and ScriptModules) as leaves, and lets module calls from
    other threads — which meet fx's temporary patch of ``nn.Module.__call__`` — run normally."""

    def __init__(self) -> None:
        super().__init__(autowrap_modules=(), autowrap_functions=())
        self._thread = threading.get_ident()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        leaf = _is_conv(m) or isinstance(m, torch.jit.ScriptModule)
        return leaf or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def _weightless_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters and buffers are meta tensors and which has no hooks: tracing runs the
    Python of ``forward``, which may assign attributes or call hooks, so it must never see the original."""
    memo: dict[int, Any] = {}
    for m in model.modules():
        for key, value in vars(m).items():
            if "hook" in key and isinstance(value, dict):
                memo[id(value)] = type(value)()
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in memo or isinstance(t, nn.parameter.UninitializedTensorMixin):
            continue
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def _traced_first_conv(model: nn.Module) -> str | None:
    twin = _weightless_copy(model)
    graph = _RunOrderTracer().trace(twin)
    for node in graph.nodes:
        if node.op == "call_module":
            sub = twin.get_submodule(node.target)
            if _is_conv(sub):
                return str(node.target)
            if isinstance(sub, torch.jit.ScriptModule):
                inner = _first_registered_conv(dict(sub.named_modules()))
                if inner is not None:
                    return f"{node.target}.{inner}" if inner else str(node.target)
        elif node.op == "call_function" and node.target in _FUNCTIONAL_CONVS:
            return None
    return None


# ------------------------------------------------------------------------------------------ mean / std
def _is_number(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.ndim == 0 and (x.is_floating_point() or x.dtype in _INT_DTYPES)
    if isinstance(x, np.ndarray):
        return x.ndim == 0 and x.dtype.kind in "iuf"
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _parse_stats(values: Stats, what: str) -> np.ndarray | None:
    """``mean``/``std`` as a 1-D float64 array of finite numbers (count checked later), or None."""
    if values is None:
        return None
    bad = TypeError(
        f"{what} must be a number or a sequence of numbers (one per channel) in 0‥1 pixel units, got {values!r}"
    )
    if isinstance(values, torch.Tensor):
        if values.is_meta or values.is_complex() or not (values.is_floating_point() or values.dtype in _INT_DTYPES):
            raise bad
        flat = values.detach().cpu().to(torch.float64).flatten().tolist()
    elif isinstance(values, np.ndarray) and values.dtype.kind != "O":
        if values.dtype.kind not in "iuf":
            raise bad
        flat = values.astype(np.float64).ravel().tolist()
    elif _is_number(values):
        flat = [float(values)]
    elif isinstance(values, Iterable) and not isinstance(values, (str, bytes)):
        items = list(values.ravel()) if isinstance(values, np.ndarray) else list(values)
        for i, item in enumerate(items):
            if not _is_number(item):
                raise TypeError(f"{what} must contain only numbers, got {item!r} at position {i} of {values!r}")
        flat = [float(item) for item in items]
    else:
        raise bad
    arr = np.asarray(flat, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{what} is empty; give one value or one per channel")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values ({arr.tolist()}); give finite numbers in 0‥1 units")
    return arr


def _check_units(mean: np.ndarray | None, std: np.ndarray | None) -> None:
    hint = (
        "mean and std are in 0‥1 pixel units (images are scaled to 0‥1 first), so divide 0‥255 statistics "
        "by 255: a model expecting (x - 127.5) / 128 wants mean=0.5, std=128/255≈0.502, and ImageNet's "
        "(123.675, 116.28, 103.53) is mean=(0.485, 0.456, 0.406)"
    )
    if mean is not None and (mean > 1).any():
        raise ValueError(f"mean has values above 1 ({mean.tolist()}); {hint}")
    if std is not None and (std <= 0).any():
        raise ValueError(f"std must be positive, got {std.tolist()}")
    if std is not None and mean is None and (std > 1).any():
        raise ValueError(
            f"std has values above 1 ({std.tolist()}) and no mean is given; {hint}. "
            "To shrink the input on purpose, give mean too (mean=0)"
        )


def _per_channel(values: np.ndarray | None, channels: int, what: str, note: str) -> torch.Tensor | None:
    if values is None:
        return None
    if values.size not in (1, channels):
        raise ValueError(
            f"{what} has {values.size} values but the image has {channels} channels{note}; "
            "give one value or one per channel"
        )
    v = torch.as_tensor(values, dtype=torch.float32)
    return v.expand(channels).reshape(1, channels, 1, 1)


# ---------------------------------------------------------------------------------------- image forms
@dataclass
class _Pixels:
    """An image as a float32 (N,C,H,W) CPU tensor in pixel units (integers already scaled to 0‥1) that
    shares no memory with the caller's object."""

    t: torch.Tensor
    is_float: bool  # the source held floats (taken as they are)
    alpha: bool  # the last channel may be alpha (PIL RGBA/LA, or any 4-channel image)


def _from_path(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    from PIL import Image as PILImage

    name = os.fspath(path)
    if not os.path.exists(name):
        raise ImageFileNotFoundError(f"image file {name!r} does not exist; check the path")
    if os.path.isdir(name):
        raise ImageFileError(f"image path {name!r} is a directory, not an image file")
    try:
        with PILImage.open(name) as im:
            im.load()  # decode now, inside the with: a truncated file fails here, not later
            return _from_pil(im)
    except PILImage.UnidentifiedImageError as err:
        raise ImageFileError(f"image file {name!r} is not an image PIL can read (unknown format)") from err
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as err:
        raise ImageFileError(f"image file {name!r} could not be read: {err}") from err


def _from_pil(im: Any) -> tuple[np.ndarray, bool]:
    """(H,W) or (H,W,C) array of a PIL image, in a dtype that says its scale; and whether it has alpha."""
    mode = im.mode
    try:
        if mode in ("L", "RGB", "I", "F") or mode.startswith("I;16"):
            a, alpha = np.array(im), False  # a copy: np.asarray of a PIL image is read-only
        elif mode in ("RGBA", "LA"):
            a, alpha = np.array(im), True
        elif mode == "1":
            a, alpha = np.array(im.convert("L")), False
        elif mode == "La":
            a, alpha = np.array(im.convert("LA")), True
        elif mode in ("PA", "RGBa") or (mode == "P" and im.has_transparency_data):
            a, alpha = np.array(im.convert("RGBA")), True
        else:  # P, CMYK, YCbCr, HSV, LAB, RGBX
            a, alpha = np.array(im.convert("RGB")), False
    except (OSError, ValueError) as err:
        raise ValueError(f"the image (PIL mode {mode!r}) could not be read or converted to RGB: {err}") from err
    if mode == "I":  # 32-bit integers: the 16-bit range is the only known scale
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > _UINT16_MAX:
            raise ValueError(
                f"the image is a PIL mode 'I' image with values from {lo} to {hi}; only 16-bit data "
                "(0‥65535) has a known scale: convert it to floats in 0‥1"
            )
        a = a.astype(np.uint16)
    return a, alpha


def _nan_error(bad: int) -> ValueError:
    return ValueError(f"the image contains {bad} NaN or infinite values; clean it (e.g. torch.nan_to_num)")


def _int_scale(uint16: bool, lo: float, hi: float) -> float:
    """255 for integer images in 0‥255, 65535 for uint16; other integer values are refused."""
    if uint16:
        return _UINT16_MAX
    if lo < 0 or hi > 255:
        raise ValueError(
            f"the image has integer values from {lo:.0f} to {hi:.0f}; integer images must be 0‥255 "
            "(divided by 255) or uint16 (divided by 65535): pass it as uint16 if it is 16-bit data, "
            "otherwise as floats in 0‥1"
        )
    return 255.0


def _array_pixels(a: np.ndarray) -> tuple[torch.Tensor, bool]:
    """Float32 tensor of a numeric array (a copy, native byte order); integers scaled to 0‥1."""
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            raise _nan_error(int((~finite).sum()))
        out = a.astype(np.float32)
        if a.dtype.itemsize > 4 and not np.isfinite(out).all():
            raise ValueError(
                f"the image has values beyond the float32 range (largest magnitude {float(np.abs(a).max()):g}); "
                "pass pixels in 0‥1"
            )
        return torch.from_numpy(out), True
    if a.dtype == np.uint8:
        scale = 255.0
    else:
        scale = _int_scale(a.dtype.kind == "u" and a.dtype.itemsize == 2, float(a.min()), float(a.max()))
    return torch.from_numpy(a.astype(np.float32)) / scale, False


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in ``t``. One sum first (a NaN or infinity makes it non-finite; a scan checks
    every batch, and this is ~15x cheaper than an element-wise test); only a non-finite sum, which
    finite values too large for float32 can also give, needs the element-wise test."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _tensor_pixels(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Float32 CPU copy of a numeric tensor; integers scaled to 0‥1."""
    t = t.detach().cpu()
    if t.is_floating_point():
        if t.dtype == torch.float64 and not _all_finite(t):
            raise _nan_error(int((~torch.isfinite(t)).sum()))
        out = t.to(torch.float32, copy=True)
        if not _all_finite(out):
            if t.dtype == torch.float64:
                raise ValueError(
                    f"the image has values beyond the float32 range (largest magnitude {float(t.abs().max()):g}); "
                    "pass pixels in 0‥1"
                )
            raise _nan_error(int((~torch.isfinite(out)).sum()))
        return out, True
    if t.dtype == torch.uint8:
        scale = 255.0
    else:
        wide = t.to(torch.float64)  # min/max are not implemented for uint16/32/64
        scale = _int_scale(t.dtype == torch.uint16, float(wide.min()), float(wide.max()))
    return t.to(torch.float32) / scale, False


def _check_tensor(t: torch.Tensor) -> None:
    kind = None
    if t.is_meta:
        raise ValueError(
            f"the image tensor is on the meta device and holds no values (shape {tuple(t.shape)}); "
            "pass a tensor with data"
        )
    if t.is_quantized:
        kind = f"a quantized tensor ({t.dtype}); call image.dequantize()"
    elif t.is_nested:
        kind = "a nested tensor; pass one image or a regular (N,C,H,W) batch"
    elif t.layout != torch.strided:
        kind = f"a sparse tensor (layout {t.layout}); call image.to_dense()"
    elif t.dtype == torch.bool:
        kind = "dtype torch.bool; a boolean mask is not an image: pass mask.float()"
    elif not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        kind = f"dtype {t.dtype}; convert to real numbers (e.g. image.abs() or image.real)"
    if kind is not None:
        raise TypeError(f"expected a numeric image tensor (uint8 or float), got {kind}")


def _check_shape(shape: tuple[int, ...]) -> None:
    if 0 in shape:
        raise ValueError(f"the image is empty (shape {shape}); pass an image with pixels")
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"expected an image of rank 2 (H,W), 3 (C,H,W) or 4 (N,C,H,W), got shape {shape}")


def _pixels(image: Image) -> _Pixels:
    """Any accepted image form as :class:`_Pixels`."""
    try:
        from PIL import Image as PILImage
    except ImportError:  # pragma: no cover - pillow is a dependency
        PILImage = None
    hwc = alpha = False
    if isinstance(image, (str, os.PathLike)):
        (image, alpha), hwc = _from_path(image), True
    elif PILImage is not None and isinstance(image, PILImage.Image):
        (image, alpha), hwc = _from_pil(image), True
    if isinstance(image, np.ndarray):
        if image.dtype.kind not in "iuf":
            fix = (
                "a boolean mask is not an image: pass mask.astype(np.uint8) * 255"
                if image.dtype.kind == "b"
                else "convert it with np.asarray(image, dtype=np.float32)"
            )
            raise TypeError(f"expected a numeric image array (uint8, uint16 or float), got dtype {image.dtype}; {fix}")
        _check_shape(image.shape)
        if image.ndim == 3 and not hwc:
            # numpy images are HWC by convention (PIL, matplotlib); CHW is taken when only it fits
            hwc = image.shape[-1] in _COLOR_DIMS or image.shape[0] not in _COLOR_DIMS
        t, is_float = _array_pixels(image)
        if t.ndim == 3 and hwc:
            t = t.permute(2, 0, 1)
        elif t.ndim == 4 and t.shape[-1] in _COLOR_DIMS and t.shape[1] not in _COLOR_DIMS:
            t = t.permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor):
        _check_tensor(image)
        _check_shape(tuple(image.shape))
        t, is_float = _tensor_pixels(image)
    else:
        raise TypeError(
            "expected an image as a torch tensor, numpy array, PIL image or file path, "
            f"got {type(image).__name__}"
        )
    while t.ndim < 4:
        t = t[None]
    return _Pixels(t.contiguous(), is_float, alpha or t.shape[1] == 4)


# ------------------------------------------------------------------------------------------ public API
def to_batch(
    image: Image,
    mean: Stats = None,
    std: Stats = None,
    *,
    model: nn.Module | None = None,
    single: bool = False,
) -> torch.Tensor:
    """The model input: a float32 (N,C,H,W) CPU tensor, normalised with ``mean``/``std`` when given.

    With ``model``, the channel count is checked against the model's first convolution; with
    ``single=True`` a batch of more than one image is refused (widgets show one image). The result
    never shares memory with ``image``.
    """
    return _prepare(image, mean, std, model, single, display=False)[0]


def prepare(
    image: Image,
    mean: Stats = None,
    std: Stats = None,
    *,
    model: nn.Module | None = None,
    single: bool = False,
) -> tuple[torch.Tensor, np.ndarray]:
    """Return ``(batch, display)``: the model input as in :func:`to_batch`, and the first image as an
    H×W×3 uint8 RGB array for display (greyscale replicated, alpha dropped, unnormalised)."""
    batch, display = _prepare(image, mean, std, model, single, display=True)
    assert display is not None
    return batch, display


def _prepare(
    image: Image, mean: Stats, std: Stats, model: nn.Module | None, single: bool, display: bool
) -> tuple[torch.Tensor, np.ndarray | None]:
    mean_v, std_v = _parse_stats(mean, "mean"), _parse_stats(std, "std")
    _check_units(mean_v, std_v)
    px = _pixels(image)
    t = px.t
    if single and t.shape[0] != 1:
        raise ValueError(f"expected one image, got a batch of {t.shape[0]}; pass image[i] to pick one")
    want = expected_channels(model) if model is not None else None
    note = ""
    if px.alpha and want != t.shape[1]:
        t = t[:, :-1]
        note = " after dropping its alpha channel" + ("" if model is not None else " (no model was given)")
    c = t.shape[1]
    if want is not None and want != c:
        fix = (
            "convert it to RGB (PIL: image.convert('RGB'); tensor: x.expand(3, -1, -1))"
            if want == 3 and c == 1
            else "convert it to greyscale (PIL: image.convert('L'))"
            if want == 1
            else f"give it {want} channels"
        )
        raise ValueError(
            f"the model's first convolution expects {want} input channels, but the image has {c}{note} "
            f"(shape {tuple(t.shape)}); {fix}"
        )
    if px.is_float and (mean_v is not None or std_v is not None):
        lo, hi = float(t.min()), float(t.max())
        if hi > _FLOAT_MAX:
            raise ValueError(
                f"the image is a float array with values up to {hi:g} while mean/std are given: mean/std "
                "apply to pixels in 0‥1, so this looks like a 0‥255 image; divide it by 255 or pass it as uint8"
            )
        if lo < _FLOAT_MIN:
            raise ValueError(
                f"the image has negative values (down to {lo:g}) while mean/std are given: it looks "
                "normalised already; pass unnormalised pixels (0‥1 floats or uint8) with mean/std, or the "
                "normalised tensor without them"
            )
    m, s = _per_channel(mean_v, c, "mean", note), _per_channel(std_v, c, "std", note)
    batch = t
    if m is not None:
        batch = batch - m
    if s is not None:
        batch = batch / s
    return batch.contiguous(), _display(t[0]) if display else None


def _display(chw: torch.Tensor) -> np.ndarray:
    lo, hi = float(chw.min()), float(chw.max())
    if lo < 0.0 or hi > 1.0:
        chw = (chw - lo) / (hi - lo) if hi > lo else torch.zeros_like(chw)
    chw = chw[:3] if chw.shape[0] in (3, 4) else chw[:1].expand(3, -1, -1)
    return (chw.permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy().copy()


def is_label(value: Any) -> bool:
    """An int-like class index (int, numpy integer, 0-d integer tensor), not a bool."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        return False
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.is_floating_point() and value.dtype != torch.bool
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def split_images(images: Any) -> tuple[list[Image], list[Any | None]]:
    """``images`` as a list of single images and a list of their true labels (``None`` where none).

    Accepted: one image in any form :mod:`cnn_widgets.images` accepts; an (N, C, H, W) tensor or
    (N, H, W, C) / (N, C, H, W) array (N images); a list or tuple of images; a list of
    ``(image, label)`` pairs, as a dataset yields them.
    """
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim == 4:
            if images.shape[0] == 0:
                raise ValueError("images is an empty batch; pass at least one image")
            return [images[i] for i in range(images.shape[0])], [None] * images.shape[0]
        return [images], [None]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list; pass at least one image")
        items: list[Image] = []
        truths: list[Any | None] = []
        for item in images:
            if isinstance(item, (list, tuple)) and len(item) == 2 and is_label(item[1]):
                items.append(item[0])
                truths.append(item[1])
            else:
                items.append(item)
                truths.append(None)
        return items, truths
    return [images], [None]


def check_one_size(sizes: Iterable[tuple[int, ...]], who: str) -> None:
    """Raise a ``ValueError`` unless every (H, W) in ``sizes`` is the same (``who`` needs one batch)."""
    found = set(sizes)
    if len(found) > 1:
        raise ValueError(
            f"{who} needs images of one size, got {sorted(found)} (H, W); resize or crop them to a common "
            "size first"
        )


def stack_images(images: Any, mean: Stats = None, std: Stats = None, *, model: nn.Module | None = None,
                 who: str = "this view") -> torch.Tensor:
    """One (N, C, H, W) model batch from ``images`` in any form :func:`split_images` takes (a list of
    images of one size included), each through :func:`to_batch`."""
    batches = [to_batch(image, mean, std, model=model) for image in split_images(images)[0]]
    check_one_size((tuple(b.shape[-2:]) for b in batches), who)
    return torch.cat(batches)
