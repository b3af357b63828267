"""cnn_widgets: Jupyter widgets for looking inside PyTorch CNNs.

Hook-based capture and Captum attribution in Python; tensors travel to the browser as binary buffers
through one codec (:mod:`cnn_widgets.wire`) and are coloured and painted client-side.
"""

from .attribution import METHODS, Attribution, Cancelled, attribute
from .capture import ActivationCapture, capture_activations, model_lock
from .dataset import Importance, ScanResult, channel_importance, scan
from .featurevis import visualize_feature
from .images import ImageFileError, ImageFileNotFoundError
from .layers import LayerInfo, conv_layers, layer_table, suggest_target_layer
from .metrics import Curve, deletion_auc, insertion_auc, mass_inside, pointing_game, randomization_test
from .widgets import ActivationBrowser, ConvExplainer, FilterGrid, ModelSummary
from .widgets.attribution_view import AttributionView
from .widgets.compare import Compare, compare

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "ActivationBrowser",
    "ActivationCapture",
    "Attribution",
    "AttributionView",
    "Cancelled",
    "Compare",
    "Curve",
    "ConvExplainer",
    "FilterGrid",
    "Importance",
    "ImageFileError",
    "ImageFileNotFoundError",
    "LayerInfo",
    "ModelSummary",
    "ScanResult",
    "attribute",
    "capture_activations",
    "channel_importance",
    "compare",
    "conv_layers",
    "deletion_auc",
    "insertion_auc",
    "layer_table",
    "mass_inside",
    "model_lock",
    "pointing_game",
    "randomization_test",
    "scan",
    "suggest_target_layer",
    "visualize_feature",
]
