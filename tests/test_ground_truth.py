"""Heatmaps against ground truth: ShapesNet's synthetic images come with the object's mask, and the
shortcut ("cheat") model's evidence is a known corner mark."""

from __future__ import annotations

import pytest
import torch

from cnn_widgets import attribute, zoo
from cnn_widgets.zoo.train import HELDOUT_SEED

pytestmark = pytest.mark.usefixtures("single_thread")


def test_grad_cam_points_at_the_object():
    """Pointing game on 200 held-out images: the hottest pixel of the Grad-CAM of the predicted class lies
    on the object for ≥ 90% of the correctly classified ones."""
    model = zoo.load_shapesnet("clean")
    images, labels, masks = zoo.shapes_dataset(200, seed=HELDOUT_SEED, size=64)
    result = attribute(model, images, "grad_cam")
    correct = torch.tensor(result.target) == labels
    assert correct.float().mean() > 0.8, "the clean model should classify held-out images well"
    flat = result.map.flatten(1).argmax(1)
    hits = masks.flatten(1)[torch.arange(len(flat)), flat]
    rate = float(hits[correct].float().mean())
    assert rate >= 0.9, f"pointing game: {rate:.1%} of {int(correct.sum())} correctly classified images"


def test_cheat_model_looks_at_the_mark():
    """On held-out images carrying the shortcut mark, the cheat model's Grad-CAM for the marked class puts
    more mass on the mark than on the object for ≥ 80% of them."""
    model = zoo.load_shapesnet("cheat")
    images, labels, masks = zoo.shapes_dataset(600, seed=HELDOUT_SEED, size=64, cheat=True)
    marked = labels == zoo.CHEAT_CLASS
    images, masks = images[marked], masks[marked]
    assert len(images) >= 60
    mark = zoo.mark_mask(64)
    heat = attribute(model, images, "grad_cam", target=zoo.CHEAT_CLASS).map.clamp(min=0)
    on_mark = (heat * mark).flatten(1).sum(1)
    on_object = (heat * masks).flatten(1).sum(1)
    rate = float((on_mark > on_object).float().mean())
    assert rate >= 0.8, f"more mass on the mark than on the object for only {rate:.1%} of {len(images)} images"
