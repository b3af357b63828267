"""The anywidget classes; each renders client-side from binary tensors (see ``js/src/widgets/``)."""

from ._common import COLORMAPS, WidgetValueError
from .activation_browser import ActivationBrowser
from .filter_grid import FilterGrid

__all__ = ["COLORMAPS", "ActivationBrowser", "FilterGrid", "WidgetValueError"]
