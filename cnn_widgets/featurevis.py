"""Feature visualisation by activation maximisation, in the style of Lucid / Lucent (Olah et al. 2017,
"Feature Visualization", Distill): optimise an image so that one channel, one neuron or one class
score of the model responds as strongly as possible.

The image is not optimised pixel by pixel (that gives high-frequency noise that excites a network
without showing anything). As in Lucid:

* **Fourier parameterisation**: the variables are the image's 2-D real FFT coefficients, each scaled by
  1/f (f the spatial frequency in cycles per pixel, at least 1/max(H, W)), so every frequency band
  gets an equal share of the gradient and low frequencies are not starved; inverse FFT (orthonormal)
  and division by 4 give the image before colour.
* **Decorrelated colour**: the three channels are combinations of decorrelated colour components,
  through Lucid's square root of the ImageNet colour correlation matrix (:data:`COLOR_CORRELATION`,
  its columns scaled so the largest has norm 1); a sigmoid then maps to 0‥1 pixels. 1-channel models
  get one grey channel without the colour step.
* **Transformation robustness**: every step sees the image randomly shifted by up to ``jitter``
  pixels, scaled by one of ``scales`` and rotated by one of ``rotations`` degrees (one bilinear
  resampling with reflected edges, so the size stays the size the model takes), then normalised with
  ``mean``/``std`` for the model.
* **Redirected ReLU gradient**: every ``nn.ReLU`` module of the model back-propagates as Lucid's
  ``redirected_relu_grad`` does — when no gradient passes a ReLU for an image (all the units it feeds
  are off), the gradient of the off units that would be pushed up goes through instead — so a channel
  that is silent on the first, nearly grey image can still be reached. The forward pass is unchanged.
* **Penalties**: ``tv`` times the total variation (mean absolute difference of neighbouring pixels)
  and ``l2`` times the mean squared distance from grey (0.5) of the 0‥1 image are subtracted from the
  objective.

Optimisation: Adam with learning rate ``lr``. Everything random (initial spectrum, transforms) comes
from a local ``torch.Generator`` seeded with ``seed``, so the same call gives the same image: on the
CPU, torch's kernels are deterministic for a given number of threads (a different
``torch.set_num_threads`` rounds differently, and Adam's normalised first steps can make such last-bit
differences visible). A list of channels is optimised as one batch (measured on ShapesNet: 1.2–1.4×
faster than one call per channel; the work is compute-bound).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import outputs
from ._checks import check_autograd, check_layer_names, check_model, forward_error, model_input
from .capture import model_session
from .images import Stats, _check_units, _parse_stats, _per_channel, expected_channels
from .outputs import Output

OBJECTIVES: tuple[str, ...] = ("channel", "neuron", "class")

COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
"""Lucid's square root of the ImageNet RGB colour correlation matrix (rows R, G, B)."""

DEFAULT_SCALES: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))  # 0.9 … 1.1, Lucid's
DEFAULT_ROTATIONS: tuple[float, ...] = tuple(float(a) for a in range(-10, 11))  # degrees, Lucid's
SMALL_MODEL = 1_000_000  # parameters: below this the default size is 64, else 128
PROGRESS_EVERY = 8  # steps between progress callbacks

__all__ = [
    "COLOR_CORRELATION", "DEFAULT_ROTATIONS", "DEFAULT_SCALES", "OBJECTIVES", "Settings", "default_size",
    "input_normaliser", "settings", "visualize_feature",
]


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass once the layer's output is in hand."""


@dataclass(frozen=True)
class Settings:
    """The checked optimisation options of :func:`visualize_feature` (hashable: a cache key part)."""

    steps: int
    size: tuple[int, int]
    seed: int
    lr: float
    jitter: int
    scales: tuple[float, ...]
    rotations: tuple[float, ...]
    tv: float
    l2: float


def default_size(model: nn.Module) -> int:
    """The image side :func:`visualize_feature` optimises at when ``size=None``: 64 for models under
    1 M parameters (small demo networks such as ShapesNet, trained on 64² images), else 128."""
    return 64 if sum(p.numel() for p in model.parameters()) < SMALL_MODEL else 128


def settings(
    model: nn.Module,
    *,
    steps: int = 256,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    lr: float = 0.05,
    jitter: int | None = None,
    scales: Sequence[float] = DEFAULT_SCALES,
    rotations: Sequence[float] = DEFAULT_ROTATIONS,
    tv: float = 0.0,
    l2: float = 0.0,
) -> Settings:
    """The options of :func:`visualize_feature` checked (clear ``TypeError``/``ValueError`` naming the
    argument), with ``size`` and ``jitter`` resolved for ``model``."""
    height, width = _size(size, model)
    return Settings(
        steps=_int_at_least("steps", steps, 1),
        size=(height, width),
        seed=_int_at_least("seed", seed, 0),
        lr=_number("lr", lr, positive=True),
        jitter=max(1, min(height, width) // 16) if jitter is None else _int_at_least("jitter", jitter, 0),
        scales=tuple(_numbers("scales", scales, positive=True)),
        rotations=tuple(_numbers("rotations", rotations)),
        tv=_number("tv", tv),
        l2=_number("l2", l2),
    )


def visualize_feature(
    model: nn.Module,
    layer: str | None,
    channel: int | Sequence[int],
    *,
    objective: str = "channel",
    steps: int = 256,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    lr: float = 0.05,
    jitter: int | None = None,
    scales: Sequence[float] = DEFAULT_SCALES,
    rotations: Sequence[float] = DEFAULT_ROTATIONS,
    tv: float = 0.0,
    l2: float = 0.0,
    mean: Stats = None,
    std: Stats = None,
    output: Output = None,
    progress: Callable[[int, torch.Tensor], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> torch.Tensor:
    """An image (float32 3×H×W in 0‥1, on the CPU) that maximises one feature of ``model`` (see the
    module doc for the method).

    ``objective``: ``"channel"`` — the mean activation of ``channel`` in ``layer``'s output (over all
    positions; its value for a (N, C) output such as a ``Linear``'s; the first call when the module runs
    more than once); ``"neuron"`` — that channel at the
    centre position of a (N, C, H, W) output; ``"class"`` — the score of class ``channel`` (``layer`` is
    ignored; ``output=`` selects the scores of a structured output as in
    :func:`cnn_widgets.attribute`). ``channel`` may be a list of channels (or classes): they are
    optimised together as one batch and an N×3×H×W tensor comes back, image ``i`` for ``channel[i]``,
    each from the same start and under the same random transforms as its single call. Batched
    convolutions round differently and Adam's normalised first steps turn last-bit differences into
    visible ones (as another ``torch.set_num_threads`` does), so a batch's image is an equally optimised
    image, not the single call's bit for bit; a one-channel list gives exactly the single call's image.

    Options and defaults: ``steps=256`` Adam steps of learning rate ``lr=0.05``. ``size``: the image
    side (or ``(height, width)``); ``size=None`` (the default) optimises at :func:`default_size` — 64² for
    models under 1 M parameters, else 128² (the model's own input size is not known; pass it for models with a fixed
    input size). ``jitter``: the largest random shift in pixels, default ``size // 16`` (at least 1);
    ``scales``/``rotations``: the random zoom factors and angles (degrees) to choose from, default
    Lucid's 0.9‥1.1 (:data:`DEFAULT_SCALES`) and −10‥10 (:data:`DEFAULT_ROTATIONS`); ``tv``/``l2``:
    penalty weights, default 0 (the Fourier parameterisation and transforms already keep the image
    smooth; raise them for calmer images). ``mean``/``std``: the model's input normalisation in 0‥1
    units (default none). ``seed=0``: the same seed gives the same image.

    ``progress(step, image)`` is called every ``progress_every`` (8) steps and after the last with the
    current image (shaped as the result, 0‥1); it may raise :class:`cnn_widgets.Cancelled` to stop.
    The model runs in eval mode in one model session with its parameters' ``requires_grad`` off (no
    ``.grad`` is ever written) and is restored afterwards, also on error or cancel.
    """
    check_model(model, hooks=objective != "class")
    check_autograd("visualize_feature()")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(map(repr, OBJECTIVES))}, got {objective!r}")
    if objective == "class":
        outputs.check_output(output)
    else:
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a layer name (str) from model.named_modules(), got {layer!r}")
        layer = check_layer_names(model, [layer])[0]
    batched = isinstance(channel, Sequence) and not isinstance(channel, (str, bytes))
    if batched and not channel:
        raise ValueError("channel is an empty list; pass a channel index or a non-empty list of them")
    targets = [_int_at_least("channel", c, 0) for c in (channel if batched else [channel])]
    options = settings(
        model, steps=steps, size=size, seed=seed, lr=lr, jitter=jitter, scales=scales, rotations=rotations,
        tv=tv, l2=l2,
    )
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable (step, image), got {type(progress).__name__}")
    progress_every = _int_at_least("progress_every", progress_every, 1)
    normalise = input_normaliser(model, mean, std)

    generator = torch.Generator().manual_seed(options.seed)
    image = _FourierImage(normalise.channels, *options.size, generator, batch=len(targets))
    optimizer = torch.optim.Adam([image.spectrum], lr=options.lr)
    transform = _Transform(options.jitter, list(options.scales), list(options.rotations), generator)

    def result() -> torch.Tensor:
        pixels = _rgb(image)
        return pixels if batched else pixels[0]

    with model_session(model, eval_mode=True, hooks=objective != "class"), torch.enable_grad(), \
            _redirected_relus(model):
        for p in model.parameters():
            p.requires_grad_(False)  # the session restores the flags; no parameter gradient is formed
        score = _objective(model, objective, layer, targets, output)
        for step in range(1, options.steps + 1):
            pixels = image()
            x = normalise(transform(pixels))
            # one sum over the batch: each image's gradient is that of its own objective
            loss = -score(x).sum()
            if options.tv:
                loss = loss + options.tv * _total_variation(pixels).sum()
            if options.l2:
                loss = loss + options.l2 * (pixels - 0.5).square().flatten(1).mean(dim=1).sum()
            (grad,) = torch.autograd.grad(loss, [image.spectrum])
            image.spectrum.grad = grad
            optimizer.step()
            if progress is not None and (step % progress_every == 0 or step == options.steps):
                progress(step, result())
    return result()


class _Normaliser:
    """The model's input from 0‥1 pixels: ``(x - mean) / std`` per channel (``channels``: 1 or 3)."""

    def __init__(self, channels: int, shift: torch.Tensor | None, divide: torch.Tensor | None) -> None:
        self.channels, self.shift, self.divide = channels, shift, divide

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift is not None:
            x = x - self.shift
        if self.divide is not None:
            x = x / self.divide
        return x


def input_normaliser(model: nn.Module, mean: Stats = None, std: Stats = None) -> _Normaliser:
    """How :func:`visualize_feature` turns its 0‥1 images into ``model``'s input: RGB, or grey for a
    model whose first convolution takes one channel (any other count is a ``ValueError``), normalised
    with ``mean``/``std`` (0‥1 units, checked)."""
    channels = expected_channels(model) or 3
    if channels not in (1, 3):
        raise ValueError(
            f"visualize_feature makes RGB or grey images, but the model's first convolution takes {channels} "
            "channels"
        )
    mean_v, std_v = _parse_stats(mean, "mean"), _parse_stats(std, "std")
    _check_units(mean_v, std_v)
    return _Normaliser(channels, _per_channel(mean_v, channels, "mean", ""), _per_channel(std_v, channels, "std", ""))


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward, for an example where no gradient gets through (every unit it would feed is
    off), passes the gradient of units that are off when it pushes them up (Lucid's
    ``redirected_relu_grad``), so a channel that is silent on the first image can still be reached."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        through = grad * (x > 0)
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        blocked = through.flatten(1).abs().amax(dim=1) == 0
        return torch.where(blocked.view(-1, *([1] * (x.ndim - 1))), redirected, through)


@contextmanager
def _redirected_relus(model: nn.Module) -> Iterator[None]:
    """Inside a model session: every ``nn.ReLU`` module of ``model`` computes through
    :class:`_RedirectedReLU` (its input is cloned first, so an in-place ReLU leaves the original for
    the backward pass); hooks removed on exit."""
    handles = []
    saved: dict[int, torch.Tensor] = {}

    def before(module: nn.Module, args: Any) -> Any:
        if args and isinstance(args[0], torch.Tensor):
            saved[id(module)] = args[0]
            return (args[0].clone(), *args[1:])
        return None

    def after(module: nn.Module, args: Any, out: Any) -> Any:
        x = saved.pop(id(module), None)
        return None if x is None else _RedirectedReLU.apply(x)

    try:
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                handles.append(m.register_forward_pre_hook(before))
                handles.append(m.register_forward_hook(after))
        yield
    finally:
        for h in handles:
            h.remove()


class _FourierImage:
    """The image as 1/f-scaled Fourier coefficients (the optimised variable, ``spectrum``) → pixels."""

    def __init__(
        self, channels: int, height: int, width: int, generator: torch.Generator, batch: int = 1
    ) -> None:
        fy = torch.fft.fftfreq(height)[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        frequency = (fy.square() + fx.square()).sqrt()
        self.scale = 1.0 / frequency.clamp_min(1.0 / max(height, width))
        self.size = (height, width)
        self.channels = channels
        shape = (1, channels, height, width // 2 + 1, 2)
        start = torch.randn(shape, generator=generator) * 0.01  # one start, shared by a batch's images
        self.spectrum = start.repeat(batch, 1, 1, 1, 1).requires_grad_(True)

    def __call__(self) -> torch.Tensor:
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        t = torch.fft.irfftn(coefficients, s=self.size, norm="ortho") / 4.0
        if self.channels == 3:
            matrix = COLOR_CORRELATION / COLOR_CORRELATION.norm(dim=0).max()
            t = torch.einsum("nchw,rc->nrhw", t, matrix)
        return torch.sigmoid(t)


def _rgb(image: _FourierImage) -> torch.Tensor:
    """The images as N×3×H×W float32 (a grey image repeated in the three channels)."""
    with torch.no_grad():
        pixels = image().float()
    return pixels.expand(-1, 3, -1, -1).clone() if pixels.shape[1] == 1 else pixels.clone()


class _Transform:
    """One random shift + zoom + rotation per call (the same for every image of a batch), as a single
    bilinear resampling (reflected edges)."""

    def __init__(
        self, jitter: int, scales: list[float], rotations: list[float], generator: torch.Generator
    ) -> None:
        self.jitter, self.scales, self.rotations, self.generator = jitter, scales, rotations, generator

    def _pick(self, values: list[float]) -> float:
        return values[int(torch.randint(len(values), (1,), generator=self.generator))]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        h, w = pixels.shape[2:]
        dy, dx = (int(v) for v in torch.randint(-self.jitter, self.jitter + 1, (2,), generator=self.generator))
        zoom = self._pick(self.scales)
        angle = math.radians(self._pick(self.rotations))
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        # output (x, y) in [-1, 1] → input position: rotate and shrink (the image appears zoomed), then shift
        theta = torch.tensor([[cos, -sin * h / w, 2 * dx / w], [sin * w / h, cos, 2 * dy / h]])
        theta = theta[None].to(pixels.dtype).expand(pixels.shape[0], -1, -1)
        grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
        return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _objective(
    model: nn.Module, objective: str, layer: str | None, targets: list[int], output: Output
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``score(x)``: the quantity to maximise for each image of the model input ``x`` (pixels already
    normalised; image ``i`` scores ``targets[i]``), N values. Runs inside the caller's session; checks
    the layer output and the channels on the first call."""
    index = torch.tensor(targets)
    rows = torch.arange(len(targets))
    top = max(targets)

    def run(x: torch.Tensor, hook: Callable[..., Any] | None) -> Any:
        batch = model_input(model, x)
        handle = None if hook is None else dict(model.named_modules())[layer].register_forward_hook(hook)
        try:
            return model(batch)
        except _Stop:
            return None
        except Exception as err:
            wrapped = forward_error(err, batch)
            if wrapped is err:
                raise
            raise wrapped from err
        finally:
            if handle is not None:
                handle.remove()

    if objective == "class":
        def score(x: torch.Tensor) -> torch.Tensor:
            scores = outputs.select(run(x, None), output)
            if top >= scores.shape[1]:
                raise ValueError(
                    f"channel {top} is out of range: the model has {scores.shape[1]} classes "
                    f"(0‥{scores.shape[1] - 1}); for objective='class', channel is the class index"
                )
            return scores[rows, index].float()

        return score

    def score(x: torch.Tensor) -> torch.Tensor:
        found: list[torch.Tensor] = []

        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if not isinstance(out, torch.Tensor):
                raise ValueError(
                    f"layer {layer!r} returns a {type(out).__name__}, not a tensor; pick one of its submodules"
                )
            found.append(out.clone())  # as returned: a later in-place op cannot change it
            raise _Stop

        run(x, hook)
        if not found:
            raise ValueError(
                f"layer {layer!r} did not run during the forward pass (it is registered but the model's forward "
                "never calls it); pick a layer the model uses"
            )
        out = found[0]
        if out.ndim < 2 or top >= out.shape[1]:
            have = f"{out.shape[1]} channels (0‥{out.shape[1] - 1})" if out.ndim >= 2 else "no channel dimension"
            raise ValueError(f"channel {top} is out of range: layer {layer!r} output {tuple(out.shape)} has {have}")
        if objective == "neuron":
            if out.ndim != 4:
                raise ValueError(
                    f"objective='neuron' needs a layer with (N, C, H, W) output; {layer!r} gives "
                    f"{tuple(out.shape)} (use objective='channel')"
                )
            return out[rows, index, out.shape[2] // 2, out.shape[3] // 2].float()
        # (N, C) output: the channel's value itself; (N, C, ...): its mean over the positions
        return out[rows, index].reshape(len(targets), -1).float().mean(dim=1)

    return score


def _total_variation(pixels: torch.Tensor) -> torch.Tensor:
    """Per image of an N×C×H×W batch: the mean absolute difference of vertical plus horizontal
    neighbours (N values)."""
    dy = (pixels[:, :, 1:] - pixels[:, :, :-1]).abs().flatten(1).mean(dim=1)
    dx = (pixels[:, :, :, 1:] - pixels[:, :, :, :-1]).abs().flatten(1).mean(dim=1)
    return dy + dx


# --- argument checks ------------------------------------------------------------------------------


def _int_at_least(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _number(name: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _numbers(name: str, values: Any, positive: bool = False) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise TypeError(f"{name} must be a non-empty list of numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise TypeError(f"{name} must contain finite numbers, got {v!r}")
        if positive and v <= 0:
            raise ValueError(f"{name} must contain numbers > 0, got {v!r}")
        out.append(float(v))
    return out


def _size(size: Any, model: nn.Module) -> tuple[int, int]:
    if size is None:
        side = default_size(model)
        return side, side
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if (
        isinstance(size, (tuple, list)) and len(size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 8 for s in size)
    ):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be an int >= 8 or a (height, width) pair of them, got {size!r}")
