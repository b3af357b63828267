"""Bundled demo models and synthetic data: nothing here downloads anything.

- :func:`shapes_dataset`: deterministic synthetic shape images with ground-truth object masks, and a
  shortcut variant where :data:`CHEAT_CLASS` carries a corner mark (:func:`mark_mask`).
- :func:`shapesnet` / :func:`load_shapesnet`: a small CNN ending in global average pooling + linear,
  with shipped weights for the ``"clean"`` and the ``"cheat"`` variant
  (reproduced by ``python -m cnn_widgets.zoo.train``).
- :func:`resnet18_like` / :func:`resnet50_like`: untrained ResNet-18- and ResNet-50-shaped networks
  (torchvision's layouts and parameter counts; torchvision itself does not import beside the CPU torch).
"""

from .data import CHEAT_CLASS, CLASSES, mark_mask, shapes_dataset
from .resnet import resnet18_like, resnet50_like
from .shapesnet import VARIANTS, ShapesNet, load_shapesnet, shapesnet

__all__ = [
    "CHEAT_CLASS",
    "CLASSES",
    "VARIANTS",
    "ShapesNet",
    "load_shapesnet",
    "mark_mask",
    "resnet18_like",
    "resnet50_like",
    "shapes_dataset",
    "shapesnet",
]
