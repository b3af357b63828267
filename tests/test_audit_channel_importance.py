"""ChannelImportance (the view) against audit findings: a label the model has no class for is a clear error
in the view, and ``output=`` selects the class scores of a model returning a dict, as the error tells."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnn_widgets import ChannelImportance

pytestmark = pytest.mark.usefixtures("single_thread")


def head(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, classes)).eval()


def test_a_label_the_model_has_no_class_for_shows_a_clear_error(untouched):
    """The view showed numpy's "IndexError: index 9 is out of bounds for axis 1 with size 5"."""
    net = head()
    data = (torch.rand(4, 3, 16, 16), torch.tensor([0, 9, 1, 2]))
    with untouched(net):
        view = ChannelImportance(net, data, "0", metric="loss", repeats=1)
        assert view.wait(60)
    assert view.error.startswith("label 9 is not a class of this model (it has 5 outputs"), view.error
    assert view.importance is None
