"""ChannelImportance (the view) against audit findings: a label the model has no class for is a clear error
in the view, and ``output=`` selects the class scores of a model returning a dict, as the error tells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnn_widgets import ChannelImportance, channel_importance

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


class DictOut(nn.Module):
    """Returns a dict: the class scores under "logits" and a feature map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.conv(x).relu()
        return {"logits": self.fc(f.mean((2, 3))), "features": f}


def test_output_selects_the_scores_of_a_dict_output(untouched):
    """The view's error tells to pass output='logits'; the view took it into **kwargs and ignored it."""
    net = DictOut().eval()
    data = (torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2]))
    with untouched(net):
        refused = ChannelImportance(net, data, "conv", repeats=1)
        assert refused.wait(60) and "output='logits'" in refused.error
        view = ChannelImportance(net, data, "conv", repeats=1, output="logits")
        assert view.wait(60) and view.error == "", view.error
        expected = channel_importance(net, data, "conv", repeats=1, output="logits", progress=False)
    assert view.importance is not None and view.importance.baseline == expected.baseline
    np.testing.assert_array_equal(view.importance.permutation, expected.permutation)
    with pytest.raises(TypeError, match="output must be an int"):
        ChannelImportance(net, data, "conv", output=1.5)
