"""ShapesNet: the small CNN bundled for demos and tests, and loading of its shipped weights.

Four conv blocks (conv → BatchNorm → ReLU; max-pooling after the first two) keep a 16×16 feature map
for 64×64 inputs, so heatmaps of the last conv layer are meaningful; then global average pooling and
one linear layer, so CAM applies. Input: float RGB images in [0, 1] as :func:`shapes_dataset` makes
them, with no mean/std normalisation. ReLUs are not in place, so every activation can be captured as
it is.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .data import CLASSES

VARIANTS: tuple[str, ...] = ("clean", "cheat")
WEIGHTS_DIR = Path(__file__).with_name("weights")
_WIDTHS = (16, 32, 64, 64)


class ShapesNet(nn.Module):
    """``features`` (conv1‥conv4 with bn/relu, pool1, pool2) → ``pool`` (global average) →
    ``flatten`` → ``fc``. Last conv output: 64 channels at a quarter of the input resolution."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin = 3
        for i, width in enumerate(_WIDTHS, start=1):
            layers[f"conv{i}"] = nn.Conv2d(cin, width, 3, padding=1, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm2d(width)
            layers[f"relu{i}"] = nn.ReLU()
            if i <= 2:
                layers[f"pool{i}"] = nn.MaxPool2d(2)
            cin = width
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


def shapesnet(num_classes: int = len(CLASSES), seed: int = 0) -> ShapesNet:
    """An untrained ShapesNet with initial weights drawn from ``seed`` (the global RNG is left
    untouched), so training from it is reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ShapesNet(num_classes)


def check_variant(variant: object) -> str:
    """``variant`` if it names a shipped variant, else a ``ValueError`` listing the valid ones."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ShapesNet variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    return str(variant)


def weights_path(variant: str) -> Path:
    """Where the shipped weights of ``variant`` live inside the package."""
    return WEIGHTS_DIR / f"shapesnet_{check_variant(variant)}.pt"


def load_shapesnet(variant: str = "clean") -> ShapesNet:
    """ShapesNet with the shipped trained weights, in eval mode, on the CPU.

    ``"clean"`` was trained on ``shapes_dataset(..., cheat=False)`` and keeps its class evidence on
    the object (its training used the ground-truth masks, see :mod:`cnn_widgets.zoo.train`), so a
    correct heatmap of its last conv layer points at the shape. ``"cheat"`` was trained the same way
    on the shortcut variant (``cheat=True``) and recognises :data:`CHEAT_CLASS` by the corner mark
    alone. ``python -m cnn_widgets.zoo.train`` reproduces both.
    """
    path = weights_path(variant)
    model = shapesnet()
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()
