"""The anywidget classes; each renders client-side from binary tensors (see ``js/src/widgets/``)."""

from ._common import COLORMAPS, WidgetValueError
from .activation_browser import ActivationBrowser
from .conv_explainer import ConvExplainer
from .filter_grid import FilterGrid
from .model_summary import ModelSummary

__all__ = ["COLORMAPS", "ActivationBrowser", "ConvExplainer", "FilterGrid", "ModelSummary", "WidgetValueError"]
