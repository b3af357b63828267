"""The CAM family (:mod:`cnn_widgets.cams` holds the formulas), registered with :func:`method`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import cams
from .engine import Run
from .schema import Option, method

cam_note = "(pytorch-grad-cam 1.5 conventions; not min-max normalised)"


def _cam_method(name: str) -> Callable[[Run], tuple[torch.Tensor, torch.Tensor]]:
    def run_method(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
        run.progress.expect(run.n)
        with run.forward(run.model) as f:
            if name == "score_cam":
                result = cams.score_cam(
                    run.model, run.x, run.layer, run.resolved, f, run.progress, run.opts["batch_size"],
                    scores=f.score,
                )
            else:
                if name == "cam":
                    result = cams.cam(run.model, run.x, run.layer, run.resolved, scores=f.score)
                elif name == "eigen_cam":
                    result = cams.eigen_cam(run.model, run.x, run.layer, run.resolved, scores=f.score)
                else:
                    result = cams.gradient_cam(name, run.model, run.x, run.layer, run.resolved, scores=f.score)
                run.progress.advance(run.n)
        run.resolved = result.targets
        return result.raw, cams.upsample(result.raw, run.x.shape[2:])

    return run_method


method(
    "cam",
    "Class activation map (Zhou et al. 2016): the linear head's class weights applied to the "
    "layer before global average pooling. Signed; needs a GAP + linear head.",
    "none",
    needs_layer=True,
    backend="cams",
)(_cam_method("cam"))
method(
    "grad_cam_pp",
    f"Grad-CAM++ (Chattopadhyay et al. 2018): weights from positive gradients with per-pixel "
    f"coefficients {cam_note}.",
    "none",
    needs_layer=True,
    backend="cams",
)(_cam_method("grad_cam_pp"))
method(
    "xgrad_cam",
    f"XGrad-CAM (Fu et al. 2020): gradients weighted by normalised activations {cam_note}.",
    "none",
    needs_layer=True,
    backend="cams",
)(_cam_method("xgrad_cam"))
method(
    "hires_cam",
    f"HiResCAM (Draelos & Carin 2020): gradient × activation element-wise, summed over channels "
    f"{cam_note}.",
    "none",
    needs_layer=True,
    backend="cams",
)(_cam_method("hires_cam"))
method(
    "layer_cam",
    f"LayerCAM (Jiang et al. 2021): positive gradients × activations, summed over channels "
    f"{cam_note}.",
    "none",
    needs_layer=True,
    backend="cams",
)(_cam_method("layer_cam"))
method(
    "score_cam",
    f"Score-CAM (Wang et al. 2020): channels weighted by the softmaxed target scores of the input "
    f"masked by each channel {cam_note}. One forward pass per channel.",
    "none",
    (Option("batch_size", "int", 16, "masked inputs per forward pass", min=1, max=1024, label="masks per pass"),),
    needs_layer=True,
    slow=True,
    backend="cams",
)(_cam_method("score_cam"))
method(
    "eigen_cam",
    f"Eigen-CAM (Muhammad & Yeasin 2020): first principal component of the layer's activations; "
    f"class-agnostic, the target is ignored {cam_note}.",
    "none",
    needs_layer=True,
    backend="cams",
)(_cam_method("eigen_cam"))
