"""Attribution: one registry (:data:`METHODS`) of every method the widgets offer, and one entry point
(:func:`attribute`) that runs any of them on any image form :mod:`cnn_widgets.images` accepts.

Layout: :mod:`.schema` (Option, MethodInfo, Attribution, the :func:`~.schema.method` decorator),
:mod:`.engine` (the run plumbing and :func:`attribute`), :mod:`.captum_methods` and :mod:`.cam_methods`
(each method's runner beside its metadata; adding a method touches one place), :mod:`.surrogate`
(LIME/KernelSHAP's closed-form linear model). :mod:`cnn_widgets.cams` keeps the CAM formulas.

Captum-backed methods pass their options to Captum under Captum's own argument names. Every call leaves
the model as it found it: no hooks, parameters and buffers bit-identical, ``training``/``requires_grad``
/``.grad`` restored, also when it fails or is cancelled. Methods that hook nonlinearities (guided
backprop, deconvolution, DeepLift, guided Grad-CAM) run on a private copy of the model.

Slow methods report progress and can be cancelled: ``attribute(..., progress=callback)`` calls
``callback(fraction)`` after every forward pass (and 0.0 first, 1.0 last); raising :class:`Cancelled`
from it stops the work at that point. With a callback, integrated gradients and SmoothGrad evaluate in
chunks of about eight images (unless ``internal_batch_size`` / ``nt_samples_batch_size`` is given), so a
cancel lands within one chunk; results then differ from an unchunked run only in float rounding.
"""

from . import captum_methods  # noqa: F401, I001  (registers the Captum methods first: the UI's order)
from . import cam_methods  # noqa: F401  (then the CAM family)
from .engine import attribute, check_method, check_options, normalize_targets, patch_mask
from .schema import METHODS, REDUCTIONS, Attribution, Cancelled, MethodInfo, Option
from .surrogate import linear_surrogate

__all__ = [
    "METHODS",
    "REDUCTIONS",
    "Attribution",
    "Cancelled",
    "MethodInfo",
    "Option",
    "attribute",
    "check_method",
    "check_options",
    "linear_surrogate",
    "normalize_targets",
    "patch_mask",
]
