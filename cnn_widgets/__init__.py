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
from .metrics import (
    Curve,
    curves,
    deletion_auc,
    infidelity,
    insertion_auc,
    mass_inside,
    pointing_game,
    randomization_maps,
    randomization_test,
    sensitivity_max,
)
from .style import style
from .widgets import ActivationBrowser, ConvExplainer, FilterGrid, ModelSummary
from .widgets.attribution_view import AttributionView
from .widgets.channel_importance_view import ChannelImportance
from .widgets.class_heatmaps import ClassHeatmaps
from .widgets.compare import Compare, compare
from .widgets.explorer import Explorer
from .widgets.feature_visualizer import FeatureVisualizer
from .widgets.metrics_view import Metrics
from .widgets.top_activations import TopActivations
from .widgets.training_monitor import TrainingMonitor

__version__ = "0.1.0"

__all__ = [
    "ActivationBrowser",
    "ActivationCapture",
    "Attribution",
    "AttributionView",
    "Cancelled",
    "ChannelImportance",
    "ClassHeatmaps",
    "Compare",
    "ConvExplainer",
    "Curve",
    "Explorer",
    "FeatureVisualizer",
    "FilterGrid",
    "ImageFileError",
    "ImageFileNotFoundError",
    "Importance",
    "LayerInfo",
    "METHODS",
    "Metrics",
    "ModelSummary",
    "ScanResult",
    "TopActivations",
    "TrainingMonitor",
    "attribute",
    "capture_activations",
    "channel_importance",
    "compare",
    "conv_layers",
    "curves",
    "deletion_auc",
    "infidelity",
    "insertion_auc",
    "layer_table",
    "mass_inside",
    "model_lock",
    "pointing_game",
    "randomization_maps",
    "randomization_test",
    "scan",
    "sensitivity_max",
    "style",
    "suggest_target_layer",
    "visualize_feature",
]
