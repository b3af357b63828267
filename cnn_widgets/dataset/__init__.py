"""Dataset views on one scan engine: :func:`scan` (top-k images and statistics per channel in one pass
over a data set, locally or on Ray) and :func:`channel_importance` (what each channel is worth to the
model's accuracy or loss)."""

from .importance import Importance, channel_importance
from .result import STAT_RTOL, ScanResult
from .scan import scan

__all__ = ["STAT_RTOL", "Importance", "ScanResult", "channel_importance", "scan"]
