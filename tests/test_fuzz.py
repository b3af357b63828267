"""Property-based tests of the public entry points (``capture_activations``, ``ActivationCapture``,
``layer_table``, ``suggest_target_layer`` and ``attribute`` with each of the 21 methods) over every
argument: images, mean/std, targets, layers, options, ``output=``, ``logits=``, ``progress=`` and model
kinds (tuple, dict and softmax heads, PReLU/SiLU, TorchScript in train and eval mode, half, double, meta,
not deep-copyable, NaN weights, Conv1d/Conv3d, integer outputs, too small for reflect padding).

Every case must either work (a finite map of the right shape, a well-formed table or capture) or raise a
``ValueError``/``TypeError`` raised by cnn_widgets whose message names an argument that was at fault —
never a raw torch or Captum error — and in every case the model must be left exactly as it was (the
``untouched`` fixture of conftest.py), with no session or lock left behind.

``make test`` runs the default hypothesis profile (few derandomised examples); ``make fuzz`` runs the
``fuzz`` profile (many more)."""

from __future__ import annotations

import math
import pathlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from PIL import Image as PILImage
from torch import nn

from cnn_widgets import METHODS, ActivationCapture, attribute, capture_activations, layer_table, suggest_target_layer
from cnn_widgets._checks import raised_here
from cnn_widgets.attribution import Cancelled
from cnn_widgets.attribution.engine import patch_mask
from cnn_widgets.capture import _ACTIVE, model_lock
from cnn_widgets.images import to_batch

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.filterwarnings(
        "ignore:`torch.jit.(script|trace|trace_method)` is deprecated:DeprecationWarning",
        "ignore::torch.jit.TracerWarning",
    ),
]
CLASSES = 3
ALL_METHODS = sorted(METHODS)
COPYING = {"deeplift", "guided_backprop", "deconvolution", "guided_grad_cam"}  # work on a deep copy
HOOKED = {name for name, info in METHODS.items() if info.hooks}


# ------------------------------------------------------------------------------------------------ models
class Plain(nn.Module):
    """conv → BN → ReLU(inplace) → conv → ReLU → GAP → flatten → linear; plus a conv that never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6, CLASSES)
        self.unused = nn.Conv2d(6, 6, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.relu1(self.bn(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(self.features(x))))


class TupleOut(Plain):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        f = self.features(x)
        return f, self.fc(self.flat(self.pool(f)))


class DictOut(Plain):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        f = self.features(x)
        return {"features": f, "logits": self.fc(self.flat(self.pool(f)))}


class SoftmaxHead(Plain):
    def __init__(self) -> None:
        super().__init__()
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(super().forward(x))


class IntegerOut(Plain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (super().forward(x) * 100).round().long()


class WithLock(Plain):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()  # deepcopy fails on it


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _example() -> torch.Tensor:
    return torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))


def _nan_weights() -> nn.Module:
    model = _seeded(Plain).eval()
    with torch.no_grad():
        model.fc.weight[0, 0] = math.nan
    return model


def _disturbed() -> nn.Module:
    """A model with a state worth restoring: gradients on some parameters, frozen ones, mixed modes."""
    model = _seeded(Plain).eval()
    model.conv1.weight.grad = torch.full_like(model.conv1.weight, 0.5)
    model.fc.bias.grad = torch.ones_like(model.fc.bias)
    model.conv2.weight.requires_grad_(False)
    model.bn.train()
    return model


def _sequential(*layers: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """A builder of a fresh, seeded ``nn.Sequential`` of the layers the factories make."""
    return lambda: _seeded(lambda: nn.Sequential(*(make() for make in layers))).eval()


Refusal = tuple[type[Exception], str]


@dataclass(frozen=True)
class Kind:
    """A model kind: how to build it, the ``output=`` that selects its scores, its layers, the smallest
    image side it runs on, and ``refuses(entry)``: the error type and message pattern when it cannot
    work for an entry point (``capture``, ``layer_table``, ``suggest`` or a method name), else ``None``."""

    name: str
    build: Callable[[], nn.Module]
    output: Any = None
    spatial: tuple[str, ...] = ("conv1", "bn", "relu1", "conv2", "relu2")
    flat: tuple[str, ...] = ("flat", "fc", "")
    unused: str | None = "unused"
    min_side: int = 1
    refuses: Callable[[str], Refusal | None] = field(default=lambda entry: None)

    def __repr__(self) -> str:
        return self.name

    def make(self) -> nn.Module:
        """A model of this kind: a fresh build, except for TorchScript, which compiles slowly and whose
        deep copies have non-leaf parameters: one module per kind, reused (each call must leave it
        untouched anyway)."""
        if not self.name.startswith(("script", "trace")):
            return self.build()
        if self.name not in _BUILT:
            _BUILT[self.name] = self.build()
        return _BUILT[self.name]


_BUILT: dict[str, nn.Module] = {}


def _script(train: bool, trace: bool) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        model = _seeded(Plain).train(train)
        return torch.jit.trace(model, _example()) if trace else torch.jit.script(model)

    return build


def _hooks_needed(entry: str) -> Refusal | None:
    if entry in ("capture", "layer_table", "suggest") or entry in HOOKED:
        return TypeError, r"TorchScript.*eager"
    return None


SEQ_SPATIAL = ("0", "1", "2", "3")
KINDS = [
    Kind("plain", lambda: _seeded(Plain).eval()),
    Kind("plain_train", lambda: _seeded(Plain).train()),
    Kind("disturbed", _disturbed),
    Kind("tuple", lambda: _seeded(TupleOut).eval(), output=1),
    Kind("dict", lambda: _seeded(DictOut).eval(), output="logits"),
    Kind("softmax", lambda: _seeded(SoftmaxHead).eval(), flat=("flat", "fc", "softmax", ""),
         refuses=lambda entry: (ValueError, r"applies a softmax, log-softmax or sigmoid after that head.*logits=True")
         if entry == "cam" else None),
    Kind("prelu_silu", _sequential(lambda: nn.Conv2d(3, 4, 3, padding=1), nn.PReLU,
                                   lambda: nn.Conv2d(4, 6, 3, padding=1), nn.SiLU, lambda: nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten, lambda: nn.Linear(6, CLASSES)),
         spatial=SEQ_SPATIAL, flat=("5", "6", ""), unused=None),
    Kind("script_eval", _script(False, False), refuses=_hooks_needed),
    Kind("script_train", _script(True, False), refuses=_hooks_needed),
    Kind("trace_eval", _script(False, True), refuses=_hooks_needed),
    Kind("trace_train", _script(True, True), refuses=_hooks_needed),
    Kind("half", lambda: _seeded(Plain).eval().half()),
    Kind("double", lambda: _seeded(Plain).eval().double()),
    Kind("meta", lambda: Plain().to("meta"), refuses=lambda entry: (TypeError, r"meta device")),
    Kind("lock", lambda: _seeded(WithLock).eval(),
         refuses=lambda entry: (TypeError, r"cannot be deep-copied") if entry in COPYING else None),
    Kind("nan_weights", _nan_weights,
         refuses=lambda entry: None if entry in ("capture", "layer_table", "suggest") else (ValueError, r"not finite")),
    Kind("conv1d", _sequential(lambda: nn.Conv1d(3, 4, 3, padding=1), nn.ReLU, lambda: nn.AdaptiveAvgPool1d(1),
                               nn.Flatten, lambda: nn.Linear(4, CLASSES)),
         spatial=(), flat=("4", ""), unused=None, refuses=lambda entry: (ValueError, r"Conv1d.*image")),
    Kind("conv3d", _sequential(lambda: nn.Conv3d(3, 4, 3, padding=1), nn.ReLU, lambda: nn.AdaptiveAvgPool3d(1),
                               nn.Flatten, lambda: nn.Linear(4, CLASSES)),
         spatial=(), flat=("4", ""), unused=None, refuses=lambda entry: (ValueError, r"Conv3d.*image")),
    Kind("integer_output", lambda: _seeded(IntegerOut).eval(),
         refuses=lambda entry: None if entry in ("capture", "layer_table") else (ValueError, r"integers")),
    Kind("reflect", _sequential(lambda: nn.Conv2d(3, 4, 5, padding=2, padding_mode="reflect"), nn.ReLU,
                                lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), nn.ReLU,
                                lambda: nn.AdaptiveAvgPool2d(1), nn.Flatten, lambda: nn.Linear(6, CLASSES)),
         spatial=SEQ_SPATIAL, flat=("5", "6", ""), unused=None, min_side=3),
]
KIND = {k.name: k for k in KINDS}


# --------------------------------------------------------------------------------------- the oracle
KEYWORDS: dict[str, tuple[str, ...]] = {
    "image": ("image",),
    "mean": ("mean",),
    "std": ("std",),
    "target": ("target",),
    "layer": ("layer",),
    "options": ("option",),
    "output": ("output",),
    "logits": ("logits",),
    "progress": ("progress",),
}
_GENERIC = re.compile(r"failed on an input of shape|failed: \w+(Error|Exception)")
_RAW = re.compile(r"invalid combination of arguments|^Expected |size of tensor a|must match the size", re.M)


def check_error(err: BaseException, suspects: dict[str, tuple[str, ...]], must: Refusal | None) -> None:
    """``err`` is a ValueError/TypeError of cnn_widgets that names one of the ``suspects`` (argument →
    words that name it), or is ``must`` (the model kind's refusal)."""
    message = str(err)
    where = f"{type(err).__name__}: {message}"
    assert raised_here(err), f"raised outside cnn_widgets: {where}"
    if must is not None and isinstance(err, must[0]) and re.search(must[1], message, re.S):
        return
    if _GENERIC.search(message):
        # the wrapper for a failing forward pass names the input shape: only a bad image may cause it
        assert "image" in suspects, f"a forward pass failed with valid arguments: {where}"
        return
    assert not _RAW.search(message), f"a raw torch message: {where}"
    named = [arg for arg, words in suspects.items() if any(w in message.lower() for w in words)]
    assert named, f"the message names none of the arguments at fault {sorted(suspects)}: {where}"


def assert_released(model: nn.Module) -> None:
    """No model session is left open in this thread and the model's lock is free for another thread."""
    assert not _ACTIVE.sessions, "a model session was left open"
    got: list[bool] = []

    def try_lock() -> None:
        lock = model_lock(model)
        got.append(lock.acquire(blocking=False))
        if got[-1]:
            lock.release()

    thread = threading.Thread(target=try_lock)
    thread.start()
    thread.join()
    assert got == [True], "the model's lock is still held"


def outcome(
    untouched: Any, model: nn.Module, call: Callable[[], Any], suspects: dict[str, tuple[str, ...]],
    must: Refusal | None, *, may_cancel: bool = False,
) -> Any:
    """Run ``call``; return its result, or ``None`` when it raised an acceptable error. Either way the
    model must be untouched and released."""
    result = None
    with untouched(model):
        try:
            result = call()
        except Cancelled:
            assert may_cancel, "Cancelled without a cancelling progress callback"
        except (ValueError, TypeError) as err:
            check_error(err, suspects, must)
        else:
            assert must is None, f"expected {must[0].__name__} matching {must[1]!r}, but the call worked"
    assert_released(model)
    return result


# ------------------------------------------------------------------------------------------ strategies
@dataclass
class Arg:
    """A drawn argument: its value, whether it may legitimately be refused, and the words that name it
    in a refusal (default: :data:`KEYWORDS` of the argument)."""

    value: Any
    suspect: bool = False
    words: tuple[str, ...] | None = None


def pixels(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Deterministic values in 0‥1."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _pixels(draw: st.DrawFn, shape: tuple[int, ...]) -> torch.Tensor:
    return pixels(shape, draw(st.integers(0, 2**16)))


@st.composite
def good_image(draw: st.DrawFn, kind: Kind, files: pathlib.Path, batch_ok: bool = True) -> Arg:
    """An image every working entry point must accept: 3 channels, sides the model runs on."""
    low = max(4, kind.min_side)
    h, w = draw(st.integers(low, low + 5)), draw(st.integers(low, low + 5))
    n = draw(st.sampled_from([None, 1, 2] if batch_ok else [None]))
    x = _pixels(draw, (n or 1, 3, h, w))
    form = draw(st.sampled_from(["float", "uint8", "np_hwc", "np_float", "float64", "pil", "path"]))
    if n is not None:
        return Arg(x if form != "uint8" else (x * 255).to(torch.uint8))
    x = x[0]
    if form == "uint8":
        return Arg((x * 255).to(torch.uint8))
    if form == "np_hwc":
        return Arg((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    if form == "np_float":
        return Arg(x.numpy().astype(np.float32))
    if form == "float64":
        return Arg(x.double())
    pil = PILImage.fromarray((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8), "RGB")
    if form == "pil":
        return Arg(pil)
    path = files / f"good_{h}x{w}.png"
    pil.save(path)
    return Arg(draw(st.sampled_from([str(path), path])))


def _truncated_png(files: pathlib.Path) -> pathlib.Path:
    full = files / "full.png"
    PILImage.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(full)
    cut = files / "truncated.png"
    cut.write_bytes(full.read_bytes()[:60])
    return cut


@st.composite
def odd_image(draw: st.DrawFn, kind: Kind, files: pathlib.Path) -> Arg:
    """Anything that might be passed as an image: odd shapes, dtypes, ranges, PIL modes, paths."""
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    form = draw(st.sampled_from([
        "tensor", "tensor", "numpy", "pil", "path", "nan", "inf", "object", "layout",
    ]))
    if form == "tensor":
        shape = draw(st.sampled_from([(h,), (h, w), (1, h, w), (3, h, w), (4, h, w), (5, h, w), (2, 3, h, w),
                                      (1, 1, 3, h, w), (3, 0, w), (0, 3, h, w)]))
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8,
                                      torch.int8, torch.int64, torch.bool, torch.complex64]))
        scale = draw(st.sampled_from([1.0, 255.0, 4000.0, -1.0]))
        x = _pixels(draw, shape) * scale
        return Arg(x.to(dtype) if dtype != torch.bool else x > 0.5, suspect=True)
    if form == "numpy":
        shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 3), (h, w, 4), (3, h, w), (h, w, 2), (1, h, w, 3)]))
        dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_]))
        x = _pixels(draw, shape).numpy() * draw(st.sampled_from([1.0, 255.0, 70000.0]))
        return Arg(x.astype(dtype), suspect=True)
    if form == "pil":
        mode = draw(st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F", "I;16"]))
        return Arg(PILImage.new(mode, (w, h)), suspect=True)
    if form == "path":
        choice = draw(st.sampled_from(["dir", "text", "truncated", "missing", "grey"]))
        if choice == "dir":
            path = files
        elif choice == "text":
            path = files / "notes.txt"
            path.write_text("not an image")
        elif choice == "truncated":
            path = _truncated_png(files)
        elif choice == "missing":
            path = files / "missing.png"
        else:
            path = files / "grey.png"
            PILImage.fromarray(np.full((h, w), 128, np.uint8), "L").save(path)
        return Arg(draw(st.sampled_from([str(path), path])), suspect=True)
    if form == "layout":
        x = _pixels(draw, (3, h, w))
        return Arg(draw(st.sampled_from([
            x.requires_grad_(True), x.transpose(1, 2), x[None].to(memory_format=torch.channels_last), x[:, ::2],
            x.expand(2, 3, h, w), torch.tensor(0.5), x.to("meta"),
        ])), suspect=True)
    if form in ("nan", "inf"):
        x = _pixels(draw, (3, h, w))
        x[0, 0, 0] = math.nan if form == "nan" else math.inf
        return Arg(x, suspect=True)
    return Arg(draw(st.sampled_from([None, 3, [[0.5, 0.5]], {"image": 1}, "", b"png"])), suspect=True)


def image_arg(draw: st.DrawFn, kind: Kind, files: pathlib.Path, fault: bool, batch_ok: bool = True) -> Arg:
    return draw(odd_image(kind, files) if fault else good_image(kind, files, batch_ok))


GOOD_STATS = [None, 0.5, (0.5, 0.5, 0.5), [0.45, 0.5, 0.55], np.array([0.5, 0.4, 0.3]), torch.tensor([0.2]),
              0]
BAD_STATS = [math.nan, -0.5, (0.5, 0.5), "0.5", ["a", "b", "c"], 2.0, 255, (), {"r": 0.5}, [[0.5]] * 3,
             (0.5, math.inf, 0.5), torch.tensor([0.5, 0.5, 0.5, 0.5]), 1.5, 0.0, b"x"]


def stats_args(draw: st.DrawFn, faults: set[str]) -> tuple[Arg, Arg]:
    mean = Arg(draw(st.sampled_from(BAD_STATS)), True) if "mean" in faults else Arg(draw(st.sampled_from(GOOD_STATS)))
    good_std = [s for s in GOOD_STATS if not (isinstance(s, (int, float)) and s == 0)]
    std = Arg(draw(st.sampled_from(BAD_STATS)), True) if "std" in faults else Arg(draw(st.sampled_from(good_std)))
    return mean, std


def target_arg(draw: st.DrawFn, n: int, fault: bool) -> Arg:
    if not fault:
        one = st.integers(0, CLASSES - 1)
        return Arg(draw(st.one_of(
            st.none(), one, one.map(np.int64), one.map(torch.tensor),
            st.lists(st.one_of(one, st.none()), min_size=n, max_size=n),
            st.lists(one, min_size=n, max_size=n).map(torch.tensor),
            st.lists(one, min_size=n, max_size=n).map(np.array),
        )))
    return Arg(draw(st.one_of(
        st.sampled_from([CLASSES, 100, -1, True, False, 1.0, 1.5, "1", math.nan, np.bool_(True), b"1", {}]),
        st.lists(st.integers(0, CLASSES - 1), min_size=n + 1, max_size=n + 2),
        st.just(torch.tensor([[0, 1]])), st.just(torch.tensor(1.0)), st.just(np.float32(1.0)),
        st.just([[0]] * n), st.just(torch.zeros(n, dtype=torch.bool)),
    )), True)


def layer_arg(draw: st.DrawFn, kind: Kind, model: nn.Module, method: str, fault: bool) -> Arg:
    needs_layer = METHODS[method].needs_layer
    if not fault:
        if not needs_layer or not kind.spatial:
            return Arg(None)
        # CAM proper needs the layer right before global average pooling
        return Arg(draw(st.one_of(st.none(), st.sampled_from(kind.spatial[-1:] if method == "cam" else kind.spatial))))
    picks: list[Any] = ["nope", "conv", "Conv1", "conv1 ", 3, b"conv1", ["conv1"], 1.5, *kind.flat]
    if kind.unused:
        picks.append(kind.unused)
    picks.append(next(iter(dict(model.named_modules()).values())))  # a module object
    if not needs_layer and kind.spatial:
        picks.extend(kind.spatial)
    return Arg(draw(st.sampled_from(picks)), True)


TINY: dict[str, st.SearchStrategy[Any]] = {
    "n_steps": st.integers(2, 3),
    "nt_samples": st.integers(1, 2),
    "n_samples": st.integers(1, 3),
    "batch_size": st.integers(1, 4),
    "internal_batch_size": st.one_of(st.none(), st.integers(1, 4)),
    "nt_samples_batch_size": st.one_of(st.none(), st.integers(1, 4)),
    "perturbations_per_eval": st.integers(1, 4),
    "patch_size": st.one_of(st.none(), st.integers(1, 4)),
    "sliding_window_shapes": st.one_of(st.none(), st.integers(1, 3)),
    "strides": st.one_of(st.none(), st.integers(1, 5), st.tuples(st.just(1), st.integers(1, 5), st.integers(1, 5))),
    "stdevs": st.floats(0.0, 0.5),
    "alpha": st.floats(0.0, 2.0),
}
COSTLY = {"n_steps", "nt_samples", "n_samples", "batch_size"}


def good_option(draw: st.DrawFn, option: Any, shape: tuple[int, ...]) -> Any:
    n, c, h, w = shape
    if option.name in TINY:
        return draw(TINY[option.name])
    if option.type == "bool":
        return draw(st.booleans())
    if option.type == "choice":
        return draw(st.sampled_from(option.choices))
    if option.name == "baselines":
        return draw(st.one_of(
            st.floats(-1.0, 1.0),
            st.sampled_from([(), (1,), (c, 1, 1), (1, c, 1, 1), (c, h, w), (1, c, h, w), (n, c, h, w)]).map(
                lambda s: torch.full(s, 0.25)
            ),
        ))
    if option.name == "feature_mask":
        side = draw(st.integers(1, 4))
        mask = patch_mask(h, w, side)
        return draw(st.sampled_from([None, mask, mask[0, 0], mask.expand(1, c, h, w).clone(), mask * 3 + 7]))
    raise AssertionError(f"no generator for option {option.name}")


def bad_option(draw: st.DrawFn, option: Any, shape: tuple[int, ...]) -> Any:
    n, c, h, w = shape
    common = ["x", [1], math.nan, math.inf, -1, 0, 10**9, True, object(), -0.5]
    if option.default is not None:
        common.append(None)
    if option.name == "baselines":
        return draw(st.sampled_from([
            torch.zeros(2, h, w), torch.zeros(1, c, h + 1, w), torch.zeros(5), torch.zeros(n + 2, c, h, w),
            torch.zeros(c, h, w, dtype=torch.bool), torch.full((c, h, w), math.nan), torch.zeros(1, c, h, w, 2),
            torch.zeros(c, h, w, dtype=torch.complex64), np.zeros((c, h, w)), "zero", [0.0],
        ]))
    if option.name == "feature_mask":
        mask = patch_mask(h, w, 2)
        return draw(st.sampled_from([
            mask.float(), mask.bool(), mask[..., :-1], torch.zeros(2, h, w, dtype=torch.long), mask.numpy(),
            torch.zeros(1, 1, h, w + 3, dtype=torch.long), torch.zeros(5, dtype=torch.long), "patches", 4,
        ]))
    if option.name in ("sliding_window_shapes", "strides"):
        return draw(st.sampled_from(common + [(1, 2), (c, 0, 1), (c, 2, 2, 2), (c, 99, 99), 99, (1.5, 2, 2)]))
    return draw(st.sampled_from(common))


def options_arg(draw: st.DrawFn, method: str, shape: tuple[int, ...], fault: bool) -> tuple[Arg, dict[str, Any]]:
    """``(options mapping, keyword options)``: tiny values for the costly options; with ``fault``, one
    bad value, an unknown name, or a container that is not a mapping."""
    info = METHODS[method]
    chosen = {o.name for o in info.options if o.name in COSTLY}
    chosen |= set(draw(st.sets(st.sampled_from([o.name for o in info.options]), max_size=3))) if info.options else set()
    values = {o.name: good_option(draw, o, shape) for o in info.options if o.name in chosen}
    words = ("option",)
    if fault:
        how = draw(st.sampled_from(["value", "value", "unknown", "name_type", "container"]))
        if how == "value" and info.options:
            option = draw(st.sampled_from(info.options))
            values[option.name] = bad_option(draw, option, shape)
            words = ("option", option.name)
        elif how == "name_type":
            values[draw(st.sampled_from([1, None, ("n_steps",)]))] = 1
        elif how == "container":
            return Arg(draw(st.sampled_from([list(values.items()), "n_steps=2", 3, {1, 2}])), True), {}
        else:
            values[draw(st.sampled_from(["n_step", "steps", "", "abs ", "layer", "N_STEPS", "window"]))] = 1
    split = draw(st.booleans())
    keywords = {k: v for k, v in values.items() if split and isinstance(k, str) and k.isidentifier()
                and k not in ATTRIBUTE_ARGS}
    rest = {k: v for k, v in values.items() if k not in keywords}
    return Arg(rest if rest or not draw(st.booleans()) else None, fault, words), keywords


ATTRIBUTE_ARGS = {"model", "image", "method", "target", "layer", "mean", "std", "output", "logits", "progress",
                  "options"}


def output_arg(draw: st.DrawFn, kind: Kind, fault: bool) -> Arg:
    right = kind.output
    if not fault:
        good: list[Any] = [right]
        if right is not None:
            good.append(lambda out, key=right: out[key])
        return Arg(draw(st.sampled_from(good)))
    return Arg(draw(st.sampled_from([
        None, 0, 1, 2, -7, "logits", "features", "nope", 1.5, True, [1], b"logits",
        lambda out: [out], lambda out: "scores", lambda out: torch.zeros(3), lambda out: out["missing"],
        lambda out: torch.zeros(1, 3, 2, 2), lambda out: torch.zeros(1, 3, dtype=torch.long),
    ])), True)


def cancel_on_second_report() -> Callable[[float], None]:
    calls: list[float] = []

    def progress(fraction: float) -> None:
        calls.append(fraction)
        if len(calls) == 2:
            raise Cancelled

    return progress


def progress_arg(draw: st.DrawFn, fault: bool) -> Arg:
    if not fault:
        return Arg(draw(st.sampled_from([None, lambda fraction: None])))
    return Arg(draw(st.one_of(st.sampled_from([1, "bar", []]), st.builds(cancel_on_second_report))), True)


def batch_size(image: Any) -> int:
    return int(image.shape[0]) if isinstance(image, (torch.Tensor, np.ndarray)) and image.ndim == 4 else 1


# -------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("fuzz_images")


def suspects_of(args: dict[str, Arg]) -> dict[str, tuple[str, ...]]:
    """The arguments a refusal may name (those drawn as faults), with the words that name them."""
    return {name: arg.words or KEYWORDS[name] for name, arg in args.items() if arg.suspect}


# ------------------------------------------------------------------------------------------- attribute
def check_attribution(result: Any, image: Any, method: str) -> None:
    n, _, h, w = to_batch(image).shape
    batch = isinstance(image, (torch.Tensor, np.ndarray)) and image.ndim == 4
    assert tuple(result.map.shape) == ((n, h, w) if batch else (h, w)), result.map.shape
    assert result.map.dtype == torch.float32 and bool(torch.isfinite(result.map).all())
    assert result.method == method
    assert (result.layer is not None) == METHODS[method].needs_layer


@pytest.mark.parametrize("method", ALL_METHODS)
@given(data=st.data())
def test_attribute(method: str, data: st.DataObject, untouched: Any, files: pathlib.Path) -> None:
    draw = data.draw
    kind = draw(st.sampled_from(KINDS), label="kind")
    model = kind.make()
    names = ["image", "mean", "std", "target", "layer", "options", "output", "logits", "progress"]
    faulty = draw(st.sets(st.sampled_from(names), max_size=2), label="faults")
    image = image_arg(draw, kind, files, "image" in faulty)
    n = batch_size(image.value)
    shape = (n, 3, 8, 8) if image.suspect else tuple(to_batch(image.value).shape)
    mean, std = stats_args(draw, faulty)
    target = target_arg(draw, n, "target" in faulty)
    layer = layer_arg(draw, kind, model, method, "layer" in faulty)
    options, keywords = options_arg(draw, method, shape, "options" in faulty)
    output = output_arg(draw, kind, "output" in faulty)
    logits = Arg(draw(st.sampled_from([True, "yes", 1, None])), True) if "logits" in faulty else Arg(False)
    progress = progress_arg(draw, "progress" in faulty)
    args = {"image": image, "mean": mean, "std": std, "target": target, "layer": layer, "options": options,
            "output": output, "logits": logits, "progress": progress}
    suspects = suspects_of(args)
    note(f"model={kind.name} " + " ".join(f"{k}={v.value!r}" for k, v in args.items()) + f" kw={keywords!r}")

    def call() -> Any:
        return attribute(
            model, image.value, method, target=target.value, layer=layer.value, mean=mean.value, std=std.value,
            output=output.value, logits=logits.value, progress=progress.value, options=options.value, **keywords,
        )

    must = kind.refuses(method)
    if kind.name == "softmax" and logits.value is True:
        must = None  # logits=True bypasses the softmax: the head is GAP + linear again
    result = outcome(untouched, model, call, suspects, must, may_cancel=progress.suspect)
    if result is not None:
        check_attribution(result, image.value, method)


@given(method=st.one_of(st.sampled_from([*ALL_METHODS, "gradcam", "Saliency", "", "ig", "grad_cam "]),
                        st.text(max_size=12), st.sampled_from([None, 3, b"saliency", ["saliency"], METHODS])))
def test_method_names(method: Any, untouched: Any) -> None:
    model = KIND["plain"].make()
    known = isinstance(method, str) and method in METHODS
    suspects = {} if known else {"method": ("method",)}
    result = outcome(untouched, model, lambda: attribute(model, pixels((3, 6, 6)), method, target=0,
                                                         **(tiny_options(method) if known else {})), suspects, None)
    if known:
        check_attribution(result, pixels((3, 6, 6)), method)


# --------------------------------------------------------------------------------- capture and layers
def layers_arg(draw: st.DrawFn, kind: Kind, model: nn.Module, fault: bool) -> Arg:
    leaves = [n for n, m in model.named_modules() if n and not any(True for _ in m.children()) and n != kind.unused]
    if not fault:
        return Arg(draw(st.one_of(st.none(), st.sampled_from(leaves) if leaves else st.none(),
                                  st.lists(st.sampled_from(leaves), min_size=1, max_size=3) if leaves else st.none())))
    picks: list[Any] = ["nope", 3, b"conv1", [3], ["conv1", None], model, 2.5, [""], {"conv1": 1}]
    if kind.unused:
        picks.extend([kind.unused, [kind.unused, *leaves[:1]]])
    return Arg(draw(st.sampled_from(picks)), True)


def check_capture(acts: dict[str, torch.Tensor], model: nn.Module, layers: Any) -> None:
    known = {n for n, _ in model.named_modules()}
    assert acts or layers is not None
    for key, value in acts.items():
        assert key.split("#")[0] in known, key
        assert isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.requires_grad
    if isinstance(layers, str):
        layers = [layers]
    for name in layers or ():
        assert name in acts, f"{name} was asked for but not captured"


@given(data=st.data())
def test_capture_activations(data: st.DataObject, untouched: Any, files: pathlib.Path) -> None:
    draw = data.draw
    kind = draw(st.sampled_from(KINDS), label="kind")
    model = kind.make()
    faulty = draw(st.sets(st.sampled_from(["image", "mean", "std", "layers"]), max_size=2), label="faults")
    image = image_arg(draw, kind, files, "image" in faulty)
    mean, std = stats_args(draw, faulty)
    layers = layers_arg(draw, kind, model, "layers" in faulty)
    args = {"image": image, "mean": mean, "std": std, "layer": layers}
    note(f"model={kind.name} " + " ".join(f"{k}={v.value!r}" for k, v in args.items()))
    result = outcome(
        untouched, model, lambda: capture_activations(model, image.value, layers.value, mean.value, std.value),
        suspects_of(args), kind.refuses("capture"),
    )
    if result is not None:
        check_capture(result, model, layers.value)


@given(data=st.data())
def test_activation_capture(data: st.DataObject, untouched: Any, files: pathlib.Path) -> None:
    draw = data.draw
    kind = draw(st.sampled_from(KINDS), label="kind")
    model = kind.make()
    faulty = draw(st.sets(st.sampled_from(["image", "mean", "std", "layers"]), max_size=2), label="faults")
    image = image_arg(draw, kind, files, "image" in faulty)
    mean, std = stats_args(draw, faulty)
    layers = layers_arg(draw, kind, model, "layers" in faulty)
    gradients = draw(st.booleans())
    args = {"image": image, "mean": mean, "std": std, "layer": layers}
    note(f"model={kind.name} gradients={gradients} " + " ".join(f"{k}={v.value!r}" for k, v in args.items()))

    def call() -> dict[str, torch.Tensor]:
        with ActivationCapture(model, layers.value, gradients=gradients, mean=mean.value, std=std.value) as cap:
            out = cap.run(image.value)
            if gradients and isinstance(out, torch.Tensor) and out.is_floating_point() and out.requires_grad:
                out.float().sum().backward()
        return cap.activations

    result = outcome(untouched, model, call, suspects_of(args), kind.refuses("capture"))
    if result is not None:
        check_capture(result, model, layers.value)


@given(data=st.data())
def test_layer_table(data: st.DataObject, untouched: Any, files: pathlib.Path) -> None:
    draw = data.draw
    kind = draw(st.sampled_from(KINDS), label="kind")
    model = kind.make()
    faulty = draw(st.sets(st.sampled_from(["image", "mean", "std"]), max_size=2), label="faults")
    image = image_arg(draw, kind, files, "image" in faulty)
    mean, std = stats_args(draw, faulty)
    args = {"image": image, "mean": mean, "std": std}
    note(f"model={kind.name} " + " ".join(f"{k}={v.value!r}" for k, v in args.items()))
    rows = outcome(
        untouched, model, lambda: layer_table(model, image.value, mean.value, std.value),
        suspects_of(args), kind.refuses("layer_table"),
    )
    if rows is not None:
        assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
        assert {r.name for r in rows} <= {n for n, _ in model.named_modules()}


@given(data=st.data())
def test_suggest_target_layer(data: st.DataObject, untouched: Any, files: pathlib.Path) -> None:
    draw = data.draw
    kind = draw(st.sampled_from(KINDS), label="kind")
    model = kind.make()
    faulty = draw(st.sets(st.sampled_from(["image", "mean", "std", "output"]), max_size=2), label="faults")
    image = image_arg(draw, kind, files, "image" in faulty)
    mean, std = stats_args(draw, faulty)
    output = output_arg(draw, kind, "output" in faulty)
    args = {"image": image, "mean": mean, "std": std, "output": output}
    note(f"model={kind.name} " + " ".join(f"{k}={v.value!r}" for k, v in args.items()))
    name = outcome(
        untouched, model,
        lambda: suggest_target_layer(model, image.value, mean.value, std.value, output=output.value),
        suspects_of(args), kind.refuses("suggest"),
    )
    if name is not None:
        assert name in kind.spatial, name


# ------------------------------------------------------------------- every method on every model kind
def tiny_options(method: str) -> dict[str, Any]:
    """The cheapest values of the costly options, so each call takes milliseconds."""
    small = {"n_steps": 2, "nt_samples": 2, "n_samples": 2, "batch_size": 4, "sliding_window_shapes": 4}
    return {o.name: small[o.name] for o in METHODS[method].options if o.name in small}


def expect(untouched: Any, kind: Kind, entry: str, call: Callable[[nn.Module], Any], *, own_mode: bool = False) -> Any:
    """Run ``call(model)`` on a model of ``kind``: it must work unless the kind refuses ``entry``, and
    then fail with the refusal's message, raised before any forward pass (nothing chained). Either
    way the model is untouched and released (``own_mode``: the call runs the model in its own mode, so
    a train-mode model's buffers are written and put back)."""
    model = kind.make()
    must = kind.refuses(entry)
    with untouched(model, buffer_writes=own_mode):
        if must is None:
            result = call(model)
        else:
            with pytest.raises(must[0], match=must[1]) as info:
                call(model)
            assert raised_here(info.value)
            result = None
    assert_released(model)
    return result


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_on_every_model_kind(method: str, kind: Kind, untouched: Any) -> None:
    x = pixels((3, 8, 8))
    result = expect(
        untouched, kind, method,
        lambda model: attribute(model, x, method, target=1, output=kind.output, **tiny_options(method)),
    )
    if result is not None:
        assert result.map.shape == (8, 8) and bool(torch.isfinite(result.map).all())
        assert result.target == 1


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_capture_table_and_suggestion_on_every_model_kind(kind: Kind, untouched: Any) -> None:
    x = pixels((3, 8, 8))

    def capture_with_run(model: nn.Module) -> dict[str, torch.Tensor]:
        with ActivationCapture(model) as cap:
            cap.run(x)
        return cap.activations

    for entry, call in [
        ("capture", lambda model: capture_activations(model, x)),
        ("capture", capture_with_run),
        ("layer_table", lambda model: layer_table(model, x)),
        ("suggest", lambda model: suggest_target_layer(model, x, output=kind.output)),
    ]:
        result = expect(untouched, kind, entry, call, own_mode=call is capture_with_run)
        if entry == "capture" and result is not None:
            assert result and all(isinstance(v, torch.Tensor) for v in result.values())
        if entry == "suggest" and result is not None:
            assert result == kind.spatial[-1]


def test_a_model_traced_in_train_mode_gets_its_batchnorm_statistics_back(untouched: Any) -> None:
    """A graph traced in train mode updates BatchNorm statistics whatever ``training`` says: a forward
    pass of its own changes them (so the check below can fail), a gradient method must not."""
    model = KIND["trace_train"].build()
    x = pixels((1, 3, 8, 8))
    with untouched(model):
        attribute(model, x[0], "integrated_gradients", target=0, n_steps=4)
        attribute(model, x[0], "occlusion", target=0, sliding_window_shapes=4)
    before = model.bn.running_mean.clone()
    model.eval()
    with torch.no_grad():
        model(x)
    assert not torch.equal(model.bn.running_mean, before), "the traced graph should update the statistics"


def test_an_input_too_small_for_reflect_padding_is_a_value_error_naming_the_shape(untouched: Any) -> None:
    kind = KIND["reflect"]
    model = kind.make()
    for side in (1, 2):
        x = torch.rand(3, side, side)
        for call in (lambda: capture_activations(model, x), lambda: layer_table(model, x),
                     lambda: suggest_target_layer(model, x), lambda: attribute(model, x, "saliency", target=0),
                     lambda: attribute(model, x, "saliency"), lambda: attribute(model, x, "grad_cam", layer="0")):
            with untouched(model), pytest.raises(ValueError, match=rf"input of shape \(1, 3, {side}, {side}\)"):
                call()
    assert attribute(model, torch.rand(3, 3, 3), "grad_cam").map.shape == (3, 3)


# ----------------------------------------------------------------------------- options before Captum
@pytest.mark.parametrize("side", [4, 5, 9, 16, 40])
def test_the_readme_occlusion_strides_work_on_small_inputs(side: int, untouched: Any) -> None:
    """``view.options = {"strides": 4}`` with the automatic window: a step longer than the window would
    skip pixels (and Captum refuses it), so it is cut to the window and the note says so."""
    model = KIND["plain"].make()
    with untouched(model):
        result = attribute(model, torch.rand(3, side, side), "occlusion", target=0, strides=4)
    window, strides = result.options["sliding_window_shapes"], result.options["strides"]
    assert all(s <= w for s, w in zip(strides, window))
    assert strides[1:] == tuple(min(4, w) for w in window[1:])
    assert any("strides=4" in note for note in result.notes) == (window[1] < 4)


BAD_TENSOR_OPTIONS = [
    ("integrated_gradients", {"baselines": torch.zeros(2, 8, 8)}, r"baselines of shape \(2, 8, 8\) does not fit"),
    ("integrated_gradients", {"baselines": torch.zeros(1, 3, 9, 8)}, r"baselines .* does not fit"),
    ("deeplift", {"baselines": torch.zeros(5)}, r"baselines of shape \(5,\) does not fit"),
    ("occlusion", {"baselines": torch.zeros(2, 3, 8, 8)}, r"baselines of shape \(2, 3, 8, 8\) does not fit"),
    ("gradient_shap", {"baselines": torch.zeros(4, 2, 8, 8)}, r"baselines .* does not fit"),
    ("integrated_gradients", {"baselines": torch.zeros(3, 8, 8, dtype=torch.bool)}, r"baselines=.*not bool"),
    ("feature_ablation", {"baselines": torch.full((3, 1, 1), math.nan)}, r"baselines=.*without NaN"),
    ("feature_ablation", {"feature_mask": patch_mask(8, 8, 2).float()}, r"feature_mask=.*mask.long\(\)"),
    ("lime", {"feature_mask": patch_mask(8, 8, 2).bool()}, r"feature_mask=.*not bool"),
    ("kernel_shap", {"feature_mask": patch_mask(8, 7, 2)}, r"feature_mask of shape \(1, 1, 8, 7\) does not fit"),
    ("feature_ablation", {"feature_mask": torch.zeros(2, 8, 8, dtype=torch.long)}, r"feature_mask .* does not fit"),
    ("lime", {"feature_mask": patch_mask(8, 8, 2).numpy()}, r"feature_mask=.*torch.Tensor"),
    ("occlusion", {"sliding_window_shapes": (3, 9, 9)}, r"sliding_window_shapes=.*does not fit"),
    ("occlusion", {"strides": (1, 2)}, r"strides=\(1, 2\) needs one value per input dimension"),
    ("integrated_gradients", {"n_steps": 1}, r"n_steps=1 is not valid .* between 2 and 2000"),
]


@pytest.mark.parametrize(("method", "options", "match"), BAD_TENSOR_OPTIONS)
def test_options_are_checked_before_captum_runs(method: str, options: dict[str, Any], match: str,
                                                untouched: Any) -> None:
    model = KIND["plain"].make()
    with untouched(model), pytest.raises(ValueError, match=match) as info:
        attribute(model, torch.rand(3, 8, 8), method, target=0, options={**tiny_options(method), **options})
    assert info.value.__cause__ is None, "a raw Captum error was wrapped instead of checking first"


@pytest.mark.parametrize(("method", "options"), [
    ("integrated_gradients", {"baselines": torch.full((3, 1, 1), 0.5)}),
    ("deeplift", {"baselines": torch.zeros(3, 8, 8)}),
    ("gradient_shap", {"baselines": torch.rand(5, 3, 8, 8)}),
    ("occlusion", {"baselines": torch.tensor(0.5)}),
    ("feature_ablation", {"feature_mask": patch_mask(8, 8, 4)[0, 0] * 10 + 3}),
    ("lime", {"feature_mask": patch_mask(8, 8, 4).expand(1, 3, 8, 8)}),
    ("kernel_shap", {"feature_mask": patch_mask(8, 8, 2).int()}),
])
def test_tensor_options_that_broadcast_work(method: str, options: dict[str, Any], untouched: Any) -> None:
    model = KIND["plain"].make()
    with untouched(model):
        result = attribute(model, torch.rand(2, 3, 8, 8), method, target=[0, 1],
                           options={**tiny_options(method), **options})
    assert result.map.shape == (2, 8, 8) and bool(torch.isfinite(result.map).all())


def test_feature_ids_are_only_a_grouping() -> None:
    """Renumbered ids give the same map: ids 3, 13, 23, … group the pixels as 0, 1, 2, … do."""
    model = KIND["plain"].make()
    x = torch.rand(3, 8, 8)
    mask = patch_mask(8, 8, 4)
    plain = attribute(model, x, "feature_ablation", target=0, feature_mask=mask)
    shifted = attribute(model, x, "feature_ablation", target=0, feature_mask=mask * 10 + 3)
    assert torch.equal(plain.map, shifted.map)


# ------------------------------------------------------------------------------- NaN, layers, copies
@pytest.mark.parametrize("method", ["lime", "kernel_shap", "eigen_cam", "score_cam", "integrated_gradients"])
def test_nan_weights_are_reported_before_a_fit_or_decomposition(method: str, untouched: Any) -> None:
    """With the target and layer given there is no probe pass: the first forward pass of the method
    itself must notice, before lstsq (LIME, KernelSHAP) or an SVD (Eigen-CAM) meets the NaN."""
    model = KIND["nan_weights"].make()
    layer = "relu2" if METHODS[method].needs_layer else None
    with untouched(model), pytest.raises(ValueError, match="not finite") as info:
        attribute(model, torch.rand(3, 8, 8), method, target=1, layer=layer, **tiny_options(method))
    assert info.value.__cause__ is None


@pytest.mark.parametrize("target", [None, 1])
@pytest.mark.parametrize("method", [m for m in ALL_METHODS if METHODS[m].needs_layer])
def test_a_layer_that_never_runs_is_an_error(method: str, target: int | None, untouched: Any) -> None:
    model = KIND["plain"].make()
    with untouched(model), pytest.raises(ValueError, match=r"'unused' did not run"):
        attribute(model, torch.rand(3, 8, 8), method, target=target, layer="unused", **tiny_options(method))


def test_a_layer_that_never_runs_is_an_error_for_capture(untouched: Any) -> None:
    model = KIND["plain"].make()
    x = torch.rand(3, 8, 8)
    with untouched(model):
        with pytest.raises(ValueError, match=r"'unused' did not run"):
            capture_activations(model, x, layers=["conv1", "unused"])
        with pytest.raises(ValueError, match=r"'unused' did not run"):
            with ActivationCapture(model, "unused") as cap:
                cap.run(x)


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if not METHODS[m].needs_layer])
def test_a_layer_for_a_method_that_takes_none_is_an_error(method: str, untouched: Any) -> None:
    model = KIND["plain"].make()
    with untouched(model), pytest.raises(ValueError, match=rf"{method} takes no layer"):
        attribute(model, torch.rand(3, 8, 8), method, layer="conv1")


@pytest.mark.parametrize("kind", ["conv1d", "conv3d"])
def test_a_conv1d_or_conv3d_model_is_refused_before_any_forward_pass(kind: str, untouched: Any) -> None:
    model = KIND[kind].make()
    calls = [0]
    model.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    with untouched(model, empty=False):
        for method in ("saliency", "occlusion", "grad_cam"):
            with pytest.raises(ValueError, match=rf"{kind.capitalize()} '0'.*\(N, C, H, W\)"):
                attribute(model, torch.rand(3, 8, 8), method, target=0)
    assert calls == [0]


def test_kernel_shap_with_one_feature_gives_its_exact_shapley_value(untouched: Any) -> None:
    """One feature (a patch as large as the image): Captum's sampler has no coalition size to draw; the
    Shapley value of a single player is the score drop when it is removed, as feature ablation gives."""
    model = KIND["plain"].make()
    x = pixels((3, 6, 6))
    with untouched(model):
        shap = attribute(model, x, "kernel_shap", target=1, patch_size=6, n_samples=3)
    ablation = attribute(model, x, "feature_ablation", target=1, patch_size=6)
    assert torch.equal(shap.map, ablation.map) and bool((shap.map != 0).any())
    with torch.no_grad():
        drop = model(x[None])[0, 1] - model(torch.zeros(1, 3, 6, 6))[0, 1]
    torch.testing.assert_close(shap.map, torch.full((6, 6), float(drop)))
    assert any("one feature" in note for note in shap.notes)
