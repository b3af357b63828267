"""One way in for images: every public function accepts the same forms and fails with the same messages.

Accepted: a torch tensor (C,H,W), (H,W) or (N,C,H,W); a numpy array HWC, CHW or (H,W), uint8 or float; a
PIL image; or a path to an image file. Values are *unnormalised pixels* — uint8/integers in 0‥255, floats
in 0‥1 — and ``mean``/``std`` (per channel) are applied for the model. A float array outside 0‥1 with no
``mean``/``std`` is passed to the model as it is (it may already be normalised) and min–max scaled for
display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

Image = Any  # torch.Tensor | np.ndarray | PIL.Image.Image | str | os.PathLike
Stats = float | Sequence[float] | None

_COLOR_DIMS = (1, 3, 4)


def expected_channels(model: nn.Module) -> int | None:
    """Input channels of the first convolution the model runs (by registration order), if any."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return None


def _from_path(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image as PILImage

    if not os.path.exists(path):
        raise FileNotFoundError(f"image file {os.fspath(path)!r} does not exist; check the path")
    with PILImage.open(path) as im:
        return _from_pil(im)


def _from_pil(im: Any) -> np.ndarray:
    if im.mode not in ("L", "RGB"):
        im = im.convert("L" if im.mode in ("1", "I", "I;16", "F") else "RGB")
    return np.asarray(im)


def _as_chw(image: Image) -> tuple[torch.Tensor, bool]:
    """Return (N,C,H,W) float32 tensor and whether the source values were integers (0‥255)."""
    try:
        from PIL import Image as PILImage
    except ImportError:  # pragma: no cover - pillow is a dependency
        PILImage = None
    hwc = False
    if isinstance(image, (str, os.PathLike)):
        image, hwc = _from_path(image), True
    elif PILImage is not None and isinstance(image, PILImage.Image):
        image, hwc = _from_pil(image), True
    if isinstance(image, np.ndarray):
        if image.dtype.kind not in "iuf":
            raise TypeError(
                f"expected a numeric image array (uint8 or float), got dtype {image.dtype}; "
                "convert it with np.asarray(image, dtype=np.float32)"
            )
        if image.ndim == 3 and not hwc:
            # numpy images are HWC by convention (PIL, matplotlib); CHW is taken when only it fits
            hwc = image.shape[-1] in _COLOR_DIMS or image.shape[0] not in _COLOR_DIMS
        t = torch.from_numpy(np.ascontiguousarray(image))
        if t.ndim == 3 and hwc:
            t = t.permute(2, 0, 1)
        elif t.ndim == 4 and t.shape[-1] in _COLOR_DIMS and t.shape[1] not in _COLOR_DIMS:
            t = t.permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor):
        t = image.detach()
        if not (t.is_floating_point() or _is_int(t)):
            raise TypeError(
                f"expected a numeric image tensor (uint8 or float), got dtype {t.dtype}; convert with .float()"
            )
    else:
        raise TypeError(
            "expected an image as a torch tensor, numpy array, PIL image or file path, "
            f"got {type(image).__name__}"
        )
    if t.numel() == 0:
        raise ValueError(f"the image is empty (shape {tuple(t.shape)}); pass an image with pixels")
    if t.ndim == 2:
        t = t[None]
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4:
        raise ValueError(
            f"expected an image of rank 2 (H,W), 3 (C,H,W) or 4 (N,C,H,W), got shape {tuple(t.shape)}"
        )
    integer = not t.is_floating_point()
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"the image contains {bad} NaN or infinite values; clean it (e.g. torch.nan_to_num)")
    if t.shape[1] == 4:  # RGBA → RGB
        t = t[:, :3]
    return t.cpu().contiguous(), integer


def _is_int(t: torch.Tensor) -> bool:
    return t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _stats(values: Stats, channels: int, what: str) -> torch.Tensor | None:
    if values is None:
        return None
    v = torch.as_tensor(values, dtype=torch.float32).flatten()
    if v.numel() == 1:
        v = v.expand(channels)
    if v.numel() != channels:
        raise ValueError(f"{what} has {v.numel()} values but the image has {channels} channels")
    if what == "std" and (v <= 0).any():
        raise ValueError(f"std must be positive, got {v.tolist()}")
    return v.view(1, channels, 1, 1)


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
    ``single=True`` a batch of more than one image is refused (widgets show one image).
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
    H×W×3 uint8 RGB array for display (greyscale replicated, unnormalised)."""
    batch, display = _prepare(image, mean, std, model, single, display=True)
    assert display is not None
    return batch, display


def _prepare(
    image: Image, mean: Stats, std: Stats, model: nn.Module | None, single: bool, display: bool
) -> tuple[torch.Tensor, np.ndarray | None]:
    t, integer = _as_chw(image)
    if single and t.shape[0] != 1:
        raise ValueError(f"expected one image, got a batch of {t.shape[0]}; pass image[i] to pick one")
    c = t.shape[1]
    if model is not None:
        want = expected_channels(model)
        if want is not None and want != c:
            fix = (
                "convert it to RGB (PIL: image.convert('RGB'); tensor: x.expand(3, -1, -1))"
                if want == 3 and c == 1
                else "convert it to greyscale (PIL: image.convert('L'))"
                if want == 1
                else f"give it {want} channels"
            )
            raise ValueError(
                f"the model's first convolution expects {want} input channels, but the image has {c} "
                f"(shape {tuple(t.shape)}); {fix}"
            )
    pixels = t / 255.0 if integer else t
    m, s = _stats(mean, c, "mean"), _stats(std, c, "std")
    batch = pixels
    if m is not None:
        batch = batch - m
    if s is not None:
        batch = batch / s
    return batch.contiguous(), _display(pixels[0]) if display else None


def _display(chw: torch.Tensor) -> np.ndarray:
    lo, hi = float(chw.min()), float(chw.max())
    if lo < 0.0 or hi > 1.0:
        chw = (chw - lo) / (hi - lo) if hi > lo else torch.zeros_like(chw)
    if chw.shape[0] == 1:
        chw = chw.expand(3, -1, -1)
    elif chw.shape[0] != 3:
        chw = chw[:1].expand(3, -1, -1)
    return (chw.permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy().copy()
