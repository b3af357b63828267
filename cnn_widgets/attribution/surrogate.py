"""The closed-form linear surrogate LIME and KernelSHAP fit (no scikit-learn needed)."""

from __future__ import annotations

import math
from typing import Any

import torch
from captum._utils.models.linear_model import LinearModel
from torch.utils.data import DataLoader


def _fit_linear_surrogate(
    model: LinearModel, dataloader: DataLoader, construct_kwargs: dict[str, Any], **_: Any
) -> dict[str, float]:
    """Captum ``LinearModel`` training function: closed-form weighted least squares with intercept and
    an optional ridge penalty ``alpha`` on the coefficients (minimises
    ``Σ wᵢ (yᵢ − b − xᵢ·β)² + α‖β‖²``). With ``alpha=0`` this is what Captum's default
    ``SkLearnLinearRegression`` fits for KernelSHAP; with ``alpha=1`` it is the ``lime`` package's
    default ``Ridge`` surrogate. Exact, deterministic, and needs no scikit-learn."""
    xs, ys, ws = [], [], []
    for x, y, w in dataloader:
        xs.append(x)
        ys.append(y)
        ws.append(w)
    x = torch.cat(xs).double()
    y = torch.cat(ys).double().reshape(-1)
    w = torch.cat(ws).double().reshape(-1)
    alpha = float(construct_kwargs.get("alpha", 0.0))
    wn = w / w.sum()
    x_mean = wn @ x
    y_mean = wn @ y
    sw = w.sqrt()
    a = sw[:, None] * (x - x_mean)
    b = sw * (y - y_mean)
    if alpha > 0:
        a = torch.cat([a, math.sqrt(alpha) * torch.eye(x.shape[1], dtype=a.dtype)])
        b = torch.cat([b, torch.zeros(x.shape[1], dtype=b.dtype)])
    coef = torch.linalg.lstsq(a, b[:, None], driver="gelsd").solution[:, 0]
    intercept = y_mean - x_mean @ coef
    model._construct_model_params(
        norm_type=None, weight_values=coef.float().view(1, -1), bias_value=intercept.float().view(1)
    )
    return {}


def linear_surrogate(alpha: float) -> LinearModel:
    """The interpretable model for ``lime`` (``alpha`` > 0, ridge) and ``kernel_shap`` (``alpha=0``)."""
    return LinearModel(train_fn=_fit_linear_surrogate, alpha=alpha)


