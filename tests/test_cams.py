"""The CAM family against independent implementations of each paper's formula (as pytorch-grad-cam 1.5
computes it): features from a manual forward split, gradients from an explicit ``torch.autograd.grad``
on them, the formulas in float64 numpy. No hooks, no capture engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_attribution import assert_close, image, shapesnet, tiny_resnet
from torch import nn

from cnn_widgets import attribute
from cnn_widgets.zoo.resnet import resnet18_like

pytestmark = pytest.mark.usefixtures("single_thread")

Split = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def resnet_split(model: nn.Module, layer: str, x: torch.Tensor) -> Split:
    """``features(x) -> A`` and ``head(A) -> logits`` for a layer of ``resnet18_like``, written out."""

    def stem(t: torch.Tensor) -> torch.Tensor:
        return model.maxpool(model.relu(model.bn1(model.conv1(t))))

    def tail(t: torch.Tensor) -> torch.Tensor:
        return model.fc(torch.flatten(model.avgpool(t), 1))

    if layer == "layer4":
        return (lambda t: model.layer4(model.layer3(model.layer2(model.layer1(stem(t))))), tail)
    if layer == "layer3":
        return (lambda t: model.layer3(model.layer2(model.layer1(stem(t)))), lambda a: tail(model.layer4(a)))
    if layer == "layer4.1.bn2":  # its output is later rewritten in place (out += identity; relu_)
        block = model.layer4[1]
        with torch.no_grad():
            block_in = model.layer4[0](model.layer3(model.layer2(model.layer1(stem(x)))))

        def features(t: torch.Tensor) -> torch.Tensor:
            return block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(block_in)))))

        return features, lambda a: tail(torch.relu(a + block_in))
    raise KeyError(layer)


def tiny_split(model: nn.Module, layer: str, x: torch.Tensor) -> Split:
    """The same for the test TinyResNet's last stage."""
    assert layer == "layer2"
    return (
        lambda t: model.layer2(model.layer1(model.stem(t))),
        lambda a: model.fc(torch.flatten(model.pool(a), 1)),
    )


def shapesnet_split(model: nn.Module, layer: str, x: torch.Tensor) -> Split:
    """The same for ShapesNet's ``features`` block."""
    assert layer == "features"
    return model.features, lambda a: model.fc(model.flatten(model.pool(a)))


def features_and_gradients(
    split: Split, x: torch.Tensor, targets: list[int] | None
) -> tuple[np.ndarray, np.ndarray, list[int], torch.Tensor]:
    """A (N,C,h,w) and dScore/dA as float64 numpy, the targets used, and the logits."""
    features, head = split
    with torch.no_grad():
        acts = features(x)
    acts = acts.detach().clone().requires_grad_(True)
    logits = head(acts)
    used = logits.argmax(1).tolist() if targets is None else targets
    score = sum(logits[i, t] for i, t in enumerate(used))
    (grads,) = torch.autograd.grad(score, acts)
    return acts.detach().double().numpy(), grads.double().numpy(), used, logits.detach()


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def weighted(weights: np.ndarray, acts: np.ndarray) -> np.ndarray:
    return np.einsum("nc,nchw->nhw", weights, acts)


def ref_grad_cam(a: np.ndarray, g: np.ndarray, **_) -> np.ndarray:
    """Selvaraju et al.: α_c = mean_ij ∂y/∂A_c,ij; relu(Σ_c α_c A_c)."""
    return relu(weighted(g.mean(axis=(2, 3)), a))


def ref_grad_cam_pp(a: np.ndarray, g: np.ndarray, **_) -> np.ndarray:
    """Chattopadhyay et al. eq. 19 with pytorch-grad-cam's eps and zeroing where the gradient is 0."""
    n, c = a.shape[:2]
    weights = np.zeros((n, c))
    for i in range(n):
        for k in range(c):
            gk, ak = g[i, k], a[i, k]
            denominator = 2 * gk**2 + ak.sum() * gk**3 + 1e-6
            alpha = np.where(gk != 0, gk**2 / denominator, 0.0)
            weights[i, k] = (alpha * relu(gk)).sum()
    return relu(weighted(weights, a))


def ref_xgrad_cam(a: np.ndarray, g: np.ndarray, **_) -> np.ndarray:
    """Fu et al.: α_c = Σ_ij (A_c,ij / Σ_kl A_c,kl) ∂y/∂A_c,ij."""
    weights = (a * g).sum(axis=(2, 3)) / (a.sum(axis=(2, 3)) + 1e-7)
    return relu(weighted(weights, a))


def ref_hires_cam(a: np.ndarray, g: np.ndarray, **_) -> np.ndarray:
    """Draelos & Carin: relu(Σ_c ∂y/∂A_c ⊙ A_c)."""
    return relu((g * a).sum(axis=1))


def ref_layer_cam(a: np.ndarray, g: np.ndarray, **_) -> np.ndarray:
    """Jiang et al.: relu(Σ_c relu(∂y/∂A_c) ⊙ A_c)."""
    return relu((relu(g) * a).sum(axis=1))


def ref_eigen_cam(a: np.ndarray, g: np.ndarray, **_) -> np.ndarray:
    """Muhammad & Yeasin: projection of the centred activations on the first right singular vector
    (pytorch-grad-cam's full SVD), sign chosen so the loadings sum to ≥ 0, then relu."""
    maps = []
    for act in a:
        m = act.reshape(act.shape[0], -1).T
        m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=True)
        v = vt[0] if vt[0].sum() >= 0 else -vt[0]
        maps.append((m @ v).reshape(act.shape[1:]))
    return relu(np.stack(maps))


def ref_cam(a: np.ndarray, g: np.ndarray, *, model: nn.Module, used: list[int], **_) -> np.ndarray:
    """Zhou et al.: Σ_c w^fc_{target,c} A_c, no relu."""
    w = model.fc.weight.detach().double().numpy()[used]
    return weighted(w, a)


def ref_score_cam(
    a: np.ndarray, g: np.ndarray, *, model: nn.Module, used: list[int], x: torch.Tensor, **_
) -> np.ndarray:
    """Wang et al. as pytorch-grad-cam does it: each channel upsampled (bilinear, corners aligned) and
    min-max scaled masks the input; softmax over channels of the masked target logits weights them."""
    n, c = a.shape[:2]
    weights = np.zeros((n, c))
    upsample = nn.UpsamplingBilinear2d(size=tuple(x.shape[2:]))
    for i in range(n):
        up = upsample(torch.from_numpy(a[i][:, None]).float())  # (C, 1, H, W)
        lo = up.amin(dim=(1, 2, 3), keepdim=True)
        hi = up.amax(dim=(1, 2, 3), keepdim=True)
        masks = (up - lo) / (hi - lo + 1e-8)
        with torch.no_grad():
            scores = torch.cat([model(x[i] * masks[k : k + 64])[:, used[i]] for k in range(0, c, 64)])
        e = np.exp(scores.double().numpy() - float(scores.max()))
        weights[i] = e / e.sum()
    return relu(weighted(weights, a))


REFERENCES = {
    "grad_cam": ref_grad_cam,
    "grad_cam_pp": ref_grad_cam_pp,
    "xgrad_cam": ref_xgrad_cam,
    "hires_cam": ref_hires_cam,
    "layer_cam": ref_layer_cam,
    "eigen_cam": ref_eigen_cam,
    "cam": ref_cam,
    "score_cam": ref_score_cam,
}


def check(
    untouched: Any, method: str, model: nn.Module, split_for, layer: str, x: torch.Tensor, targets: list[int] | None
) -> None:
    with untouched(model):
        result = attribute(model, x, method, target=targets, layer=layer)
    a, g, used, logits = features_and_gradients(split_for(model, layer, x), x, targets)
    if method != "eigen_cam":  # class-agnostic: its target is only recorded
        assert result.target == used
    expected = REFERENCES[method](a, g, model=model, used=used, x=x)
    assert result.raw.shape == (x.shape[0], 1, *a.shape[2:])
    assert_close(result.raw[:, 0].double(), torch.from_numpy(expected))
    upsampled = F.interpolate(torch.from_numpy(expected)[:, None], size=tuple(x.shape[2:]), mode="bilinear")
    assert result.map.shape == (x.shape[0], *x.shape[2:])
    assert_close(result.map.double(), upsampled[:, 0])
    if method == "cam":  # the spatial mean of CAM plus the bias is the target logit
        bias = model.fc.bias.detach().double().numpy()[used]
        assert_close(torch.from_numpy(expected.mean(axis=(1, 2)) + bias), logits[range(len(used)), used].double())


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return resnet18_like(num_classes=10)


CAMS = sorted(REFERENCES)


@pytest.mark.parametrize("method", [m for m in CAMS if m != "score_cam"])
def test_batch_of_non_square_images_at_the_last_block(resnet, method, untouched):
    check(untouched, method, resnet, resnet_split, "layer4", image(20, (2, 3, 64, 96)), None)


@pytest.mark.parametrize("method", CAMS)
def test_batch_of_non_square_images_on_a_small_resnet(method, untouched):
    check(untouched, method, tiny_resnet(), tiny_split, "layer2", image(26, (3, 3, 40, 56)), None)


@pytest.mark.parametrize("method", [m for m in CAMS if m not in ("score_cam", "cam")])  # cam: only before GAP
def test_given_targets_at_an_earlier_layer(resnet, method, untouched):
    check(untouched, method, resnet, resnet_split, "layer3", image(21, (3, 3, 48, 40)), [3, 7, 0])


@pytest.mark.parametrize("method", ["grad_cam_pp", "hires_cam", "layer_cam", "xgrad_cam"])
def test_a_layer_whose_output_is_rewritten_in_place(resnet, method, untouched):
    check(untouched, method, resnet, resnet_split, "layer4.1.bn2", image(22, (2, 3, 64, 64)), [1, 2])


def test_score_cam_at_an_earlier_layer_with_given_targets(resnet, untouched):
    check(untouched, "score_cam", resnet, resnet_split, "layer3", image(23, (1, 3, 16, 24)), [5])


@pytest.mark.parametrize("method", CAMS)
def test_on_shapesnet(method, untouched):
    model = shapesnet()
    check(untouched, method, model, shapesnet_split, "features", image(24, (2, 3, 64, 64)), None)


def test_cam_equals_grad_cam_up_to_scale_on_a_gap_linear_model(resnet):
    x = image(25, (1, 3, 64, 64))
    cam = attribute(resnet, x, "cam", target=2, layer="layer4")
    grad_cam = attribute(resnet, x, "grad_cam", target=2, layer="layer4")
    h, w = cam.raw.shape[2:]
    assert_close(grad_cam.raw, cam.raw.clamp(min=0) / (h * w))
