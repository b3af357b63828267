"""attribute() and METHODS: equal to Captum called directly, model left untouched, progress and cancel,
and clear errors for bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from captum.attr import (
    Deconvolution,
    DeepLift,
    FeatureAblation,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerAttribution,
    LayerGradCam,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

import cnn_widgets
from cnn_widgets import METHODS, attribute, suggest_target_layer
from cnn_widgets.attribution import REDUCTIONS, Cancelled, linear_surrogate, patch_mask
from cnn_widgets.zoo import load_shapesnet
from cnn_widgets.zoo.resnet import resnet18_like


REQUIRED = {
    "saliency", "integrated_gradients", "smoothgrad", "gradient_shap", "deeplift", "input_x_gradient",
    "guided_backprop", "deconvolution", "guided_grad_cam", "occlusion", "feature_ablation", "lime",
    "kernel_shap", "grad_cam", "cam", "grad_cam_pp", "xgrad_cam", "hires_cam", "layer_cam", "score_cam",
    "eigen_cam",
}  # fmt: skip

pytestmark = pytest.mark.usefixtures("single_thread")


# --- models ------------------------------------------------------------------------------------------


class Block(nn.Module):
    """A residual block with its own ReLU per use (DeepLift needs that) and in-place ReLUs and add."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        out += self.short(x)
        return self.relu2(out)


class TinyResNet(nn.Module):
    """ResNet-shaped (stem, residual stages, GAP, linear) and small enough for every method."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layer1 = Block(8, 16, 2)
        self.layer2 = Block(16, 24, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


def tiny_resnet(seed: int = 0) -> TinyResNet:
    """Deterministic TinyResNet with non-trivial BatchNorm statistics, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyResNet()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def image(seed: int, shape: tuple[int, ...] = (3, 32, 32)) -> torch.Tensor:
    """Pixels in 0‥1."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def seed(value: int) -> None:
    """Seed both generators Captum draws from (GradientShap uses numpy's)."""
    torch.manual_seed(value)
    np.random.seed(value)


def relu_safe(model: nn.Module) -> nn.Module:
    """What the test gives Captum for methods that hook ReLUs: a copy with inplace off."""
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return clone


def shapesnet() -> nn.Module:
    """The bundled trained ShapesNet."""
    return load_shapesnet("clean")


def assert_close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    """Max abs difference within ``rel`` of the largest reference value."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = float(ref.abs().max())
    diff = float((ours.float() - ref.float()).abs().max())
    assert diff <= rel * scale + 1e-12, f"max diff {diff:.3g} vs largest reference value {scale:.3g}"


# --- Captum called directly, with the same arguments -------------------------------------------------

MASK_PATCH = 8


def _captum_cases(layer_of):
    """method → (options for attribute, function(model, x, target) calling Captum directly)."""

    def mask(x):
        return patch_mask(x.shape[2], x.shape[3], MASK_PATCH)

    def kernel_shap(m, x, t):
        ks = KernelShap(m)
        ks.interpretable_model = linear_surrogate(0.0)
        return ks.attribute(
            x, baselines=0.0, target=t, feature_mask=mask(x), n_samples=30, perturbations_per_eval=8
        )

    return {
        "saliency": ({}, lambda m, x, t: Saliency(m).attribute(x, target=t, abs=True)),
        "integrated_gradients": (
            {"n_steps": 12, "method": "riemann_trapezoid", "baselines": 0.25},
            lambda m, x, t: IntegratedGradients(m).attribute(
                x, baselines=0.25, target=t, n_steps=12, method="riemann_trapezoid", internal_batch_size=None
            ),
        ),
        "smoothgrad": (
            {"nt_samples": 5, "stdevs": 0.1},
            lambda m, x, t: NoiseTunnel(Saliency(m)).attribute(
                x, nt_type="smoothgrad", nt_samples=5, nt_samples_batch_size=None, stdevs=0.1, target=t, abs=True
            ),
        ),
        "gradient_shap": (
            {"n_samples": 6, "stdevs": 0.05},
            lambda m, x, t: GradientShap(m).attribute(
                x, baselines=torch.zeros(1, *x.shape[1:]), n_samples=6, stdevs=0.05, target=t
            ),
        ),
        "deeplift": ({}, lambda m, x, t: DeepLift(relu_safe(m)).attribute(x, baselines=0.0, target=t)),
        "input_x_gradient": ({}, lambda m, x, t: InputXGradient(m).attribute(x, target=t)),
        "guided_backprop": ({}, lambda m, x, t: GuidedBackprop(relu_safe(m)).attribute(x, target=t)),
        "deconvolution": ({}, lambda m, x, t: Deconvolution(relu_safe(m)).attribute(x, target=t)),
        "guided_grad_cam": (
            {},
            lambda m, x, t: GuidedGradCam((c := relu_safe(m)), layer_of(c)).attribute(
                x, target=t, interpolate_mode="bilinear"
            ),
        ),
        "occlusion": (
            {"sliding_window_shapes": 8, "strides": 4},
            lambda m, x, t: Occlusion(m).attribute(
                x,
                sliding_window_shapes=(x.shape[1], 8, 8),
                strides=4,
                baselines=0.0,
                target=t,
                perturbations_per_eval=8,
            ),
        ),
        "feature_ablation": (
            {"patch_size": MASK_PATCH},
            lambda m, x, t: FeatureAblation(m).attribute(
                x, baselines=0.0, target=t, feature_mask=mask(x), perturbations_per_eval=8
            ),
        ),
        "lime": (
            {"patch_size": MASK_PATCH, "n_samples": 30},
            lambda m, x, t: Lime(m, interpretable_model=linear_surrogate(1.0)).attribute(
                x, baselines=0.0, target=t, feature_mask=mask(x), n_samples=30, perturbations_per_eval=8
            ),
        ),
        "kernel_shap": ({"patch_size": MASK_PATCH, "n_samples": 30}, kernel_shap),
        "grad_cam": (
            {},
            lambda m, x, t: LayerGradCam(m, layer_of(m)).attribute(x, target=t, relu_attributions=True),
        ),
    }


CAPTUM_METHODS = [name for name, info in METHODS.items() if info.backend == "captum"]


def test_registry_covers_the_required_methods_and_is_serialisable():
    assert REQUIRED <= set(METHODS)
    assert set(CAPTUM_METHODS) == set(_captum_cases(None))
    for name, info in METHODS.items():
        assert info.name == name and info.description
        assert info.reduction in REDUCTIONS and info.reduction_rule
        for option in info.options:
            assert option.check(name, option.default) == option.default
        json.dumps(info.to_json())
    assert METHODS["integrated_gradients"].slow and METHODS["score_cam"].slow and not METHODS["saliency"].slow
    assert METHODS["grad_cam"].needs_layer and not METHODS["occlusion"].needs_layer
    with pytest.raises(TypeError):
        METHODS["mine"] = METHODS["saliency"]


def _check_against_captum(untouched, model, layer_name, method, x, target, mean=None, std=None):
    layer_of = lambda m: dict(m.named_modules())[layer_name]  # noqa: E731
    options, direct = _captum_cases(layer_of)[method]
    seed(7)
    layer = layer_name if METHODS[method].needs_layer else None
    with untouched(model, empty=False):
        result = attribute(model, x, method, target=target, layer=layer, mean=mean, std=std, options=options)
    batch = x[None] if x.ndim == 3 else x
    if mean is not None:
        batch = (batch - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    seed(7)
    reference = direct(model, batch.clone(), target)
    assert_close(result.raw, reference.detach())
    assert result.method == method and result.target == target and not result.top_prediction
    assert result.map.dtype == torch.float32 and result.map.shape == batch.shape[2:]
    info = METHODS[method]
    if method == "grad_cam":
        expected = LayerAttribution.interpolate(reference, tuple(batch.shape[2:]), "bilinear")[0, 0]
    elif info.reduction == "sum":
        expected = reference[0].sum(0)
    elif info.reduction == "mean":
        expected = reference[0].mean(0)
    else:
        expected = reference[0].gather(0, reference[0].abs().argmax(0, keepdim=True))[0]
    assert_close(result.map, expected.detach())
    assert result.layer == (layer_name if info.needs_layer else None)
    return result


@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_captum_methods_equal_captum_direct_on_a_resnet_shaped_model(method, untouched):
    model = tiny_resnet()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)  # an existing .grad must survive
    model.stem[0].weight.requires_grad_(False)
    _check_against_captum(untouched, model, "layer2", method, image(1), target=3)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "occlusion", "grad_cam", "guided_grad_cam"])
def test_captum_methods_equal_captum_direct_on_resnet18_like_with_normalisation(method, untouched):
    model = resnet18_like(num_classes=10)
    _check_against_captum(
        untouched, model, "layer4", method, image(2, (3, 64, 64)), target=4, mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )


@pytest.mark.parametrize("method", CAPTUM_METHODS)
def test_captum_methods_equal_captum_direct_on_shapesnet(method, untouched):
    model = shapesnet()
    layer = suggest_target_layer(model, image(3, (3, 64, 64)))
    _check_against_captum(untouched, model, layer, method, image(3, (3, 64, 64)), 2)


def test_methods_that_hook_relus_leave_an_inplace_model_unchanged(untouched):
    model = resnet18_like(num_classes=10)
    before = untouched.snapshot(model)
    for method in ("guided_backprop", "deconvolution", "guided_grad_cam"):
        attribute(model, image(4, (3, 64, 64)), method, target=1)
        untouched.check(model, before)
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


# --- every method: shapes, targets, batches, untouched model ------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_on_a_batch_leaves_the_model_untouched(method, untouched):
    model = tiny_resnet()
    model.train()  # attribute runs in eval mode and restores the flags
    model.layer1.conv1.weight.grad = torch.full_like(model.layer1.conv1.weight, 0.5)
    before = untouched.snapshot(model)
    small = {
        "integrated_gradients": {"n_steps": 4},
        "smoothgrad": {"nt_samples": 2},
        "gradient_shap": {"n_samples": 2},
        "lime": {"n_samples": 12},
        "kernel_shap": {"n_samples": 12},
        "occlusion": {"sliding_window_shapes": 16, "strides": 16},
        "feature_ablation": {"patch_size": 16},
    }.get(method, {})
    x = image(5, (2, 3, 24, 40))  # a batch of non-square images
    result = attribute(model, x, method, **small)
    untouched.check(model, before)
    assert result.map.shape == (2, 24, 40) and result.map.dtype == torch.float32
    assert result.raw.shape[0] == 2
    assert result.top_prediction and isinstance(result.target, list) and len(result.target) == 2
    with torch.no_grad():
        assert result.target == tiny_resnet()(x).argmax(1).tolist()
    assert torch.isfinite(result.map).all()
    again = attribute(model, x, method, target=[0, 5], **small)
    assert again.target == [0, 5] and not again.top_prediction
    untouched.check(model, before)


def test_single_image_gives_an_hxw_map_and_an_int_target():
    model = tiny_resnet()
    result = attribute(model, image(6), "saliency")
    assert result.map.shape == (32, 32) and isinstance(result.target, int) and result.top_prediction
    assert result.raw.shape == (1, 3, 32, 32)
    one = attribute(model, image(6)[None], "saliency")
    assert one.map.shape == (1, 32, 32) and one.target == [result.target]


def test_resolved_options_are_recorded():
    model = tiny_resnet()
    occ = attribute(model, image(7), "occlusion", target=0)
    assert occ.options["sliding_window_shapes"] == (3, 4, 4) and occ.options["strides"] == (1, 2, 2)
    fa = attribute(model, image(7), "feature_ablation", target=0)
    assert fa.options["patch_size"] == 4
    sg = attribute(model, image(7), "smoothgrad", target=0, nt_samples=2)
    assert sg.options["stdevs"] == pytest.approx(0.15 * float(image(7).max() - image(7).min()))


def test_default_layer_is_the_suggested_one():
    model = resnet18_like(num_classes=10)
    assert suggest_target_layer(model, image(8, (3, 64, 64))) == "layer4"
    assert suggest_target_layer(model, image(8, (3, 32, 32))) == "layer3"  # layer4 is 1×1 there
    assert attribute(model, image(8, (3, 64, 64)), "grad_cam").layer == "layer4"
    assert suggest_target_layer(tiny_resnet(), image(8)) == "layer2"


def test_suggest_target_layer_refuses_models_without_spatial_output():
    with pytest.raises(ValueError, match="spatial"):
        suggest_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), image(9, (3, 4, 4)))


def test_lime_and_kernel_shap_surrogate_is_weighted_least_squares():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(40, 5, generator=gen) > 0.5).float()
    y = torch.randn(40, 1, generator=gen)
    w = torch.rand(40, generator=gen) + 0.1
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, w), batch_size=40)
    for alpha in (0.0, 1.0):
        model = linear_surrogate(alpha)
        model.fit(data)
        xd, yd, wd = x.double(), y.double()[:, 0], w.double()
        design = torch.cat([xd, torch.ones(40, 1, dtype=torch.double)], 1)
        penalty = torch.diag(torch.tensor([alpha] * 5 + [0.0], dtype=torch.double))
        solution = torch.linalg.solve(design.T @ (wd[:, None] * design) + penalty, design.T @ (wd * yd))
        assert_close(model.representation()[0], solution[:5].float(), 1e-5)
        assert_close(model.bias(), solution[5:].float(), 1e-5)


# --- progress and cancel -----------------------------------------------------------------------------

SLOW = {
    "occlusion": {"sliding_window_shapes": 4, "strides": 2},
    "feature_ablation": {"patch_size": 2},
    "lime": {"n_samples": 120},
    "kernel_shap": {"n_samples": 120},
    "integrated_gradients": {"n_steps": 120},
    "smoothgrad": {"nt_samples": 60},
    "score_cam": {"batch_size": 2},
}


def test_slow_methods_are_flagged():
    assert {n for n, i in METHODS.items() if i.slow} == set(SLOW)


@pytest.mark.parametrize("method", sorted(SLOW))
def test_progress_is_reported_in_steps(method):
    fractions = []
    attribute(tiny_resnet(), image(10), method, target=1, progress=fractions.append, **SLOW[method])
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert len(fractions) >= 8, fractions


@pytest.mark.parametrize("method", sorted(SLOW))
def test_cancel_stops_promptly_and_leaves_the_model_usable(method, untouched):
    model = tiny_resnet()
    before = untouched.snapshot(model)
    calls = []

    def cancel_at_a_third(fraction: float) -> None:
        calls.append(fraction)
        if fraction > 0.3:
            raise Cancelled

    with pytest.raises(Cancelled):
        attribute(model, image(11), method, target=1, progress=cancel_at_a_third, **SLOW[method])
    assert calls[-1] < 0.7  # stopped at the first report past a third, not at the end
    untouched.check(model, before)
    seed(0)
    first = attribute(model, image(11), method, target=1, **SLOW[method])
    seed(0)
    second = attribute(model, image(11), method, target=1, **SLOW[method])
    assert torch.equal(first.map, second.map)
    untouched.check(model, before)


def test_cancel_stops_the_work_at_the_next_progress_report(untouched):
    """Progress is reported after every chunk of perturbed inputs, so a cancel (raised from the callback)
    lands within one chunk: no forward pass runs after the callback that raised. Counted, not timed."""
    model = resnet18_like(num_classes=10)
    calls: list[float] = []

    def check(fraction: float) -> None:
        calls.append(fraction)
        if len(calls) == 4:
            raise Cancelled

    forwards = []
    with untouched(model):
        handle = model.fc.register_forward_hook(lambda *_: forwards.append(1))
        try:
            with pytest.raises(Cancelled):
                attribute(model, image(12, (3, 64, 64)), "occlusion", target=0, progress=check, strides=4,
                          perturbations_per_eval=4)
        finally:
            handle.remove()
    assert len(calls) == 4 and calls[0] == 0.0 and 0.0 < calls[-1] < 0.5
    # one forward per report (the unperturbed pass, then one chunk of 4 per report): none after the cancel
    assert len(forwards) == len(calls) - 1


def test_progress_chunking_keeps_integrated_gradients_equal():
    model = tiny_resnet()
    plain = attribute(model, image(13), "integrated_gradients", target=2, n_steps=40)
    chunked = attribute(model, image(13), "integrated_gradients", target=2, n_steps=40, progress=lambda f: None)
    assert chunked.options["internal_batch_size"] == 8 and plain.options["internal_batch_size"] is None
    assert_close(chunked.raw, plain.raw)


# --- bad input ---------------------------------------------------------------------------------------


def _raises(untouched, match: str, *args, **kwargs) -> None:
    with untouched(args[0]), pytest.raises(ValueError, match=match):
        attribute(*args, **kwargs)


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(ValueError, match="available methods: saliency, integrated_gradients") as e:
        attribute(tiny_resnet(), image(0), "gradcam")
    assert "did you mean 'grad_cam'" in str(e.value)


@pytest.mark.parametrize("method", ["saliency", "occlusion", "grad_cam", "deeplift", "hires_cam", "cam", "score_cam"])
def test_target_out_of_range(method, untouched):
    match = r"target 6 is out of range: the model has 6 classes \(0‥5\)"
    _raises(untouched, match, tiny_resnet(), image(0), method, target=6)
    _raises(untouched, "out of range", tiny_resnet(), image(0), method, target=-1)


def test_target_list_length_and_type(untouched):
    batch = image(0, (2, 3, 32, 32))
    _raises(untouched, "got 3 targets for 2 images", tiny_resnet(), batch, "saliency", target=[1, 2, 3])
    with pytest.raises(TypeError, match="class index"):
        attribute(tiny_resnet(), image(0), "saliency", target=1.5)


@pytest.mark.parametrize("method", ["grad_cam", "guided_grad_cam", "grad_cam_pp", "score_cam", "eigen_cam", "cam"])
def test_layer_without_spatial_output(method, untouched):
    _raises(untouched, "no spatial dimensions", tiny_resnet(), image(0), method, layer="fc")


def test_unknown_and_shared_layers(untouched):
    _raises(untouched, "did you mean 'layer2'", tiny_resnet(), image(0), "grad_cam", layer="layer22")
    for method in ("grad_cam", "hires_cam"):
        _raises(
            untouched, "runs more than once", resnet18_like(10), image(0, (3, 64, 64)), method, layer="layer4.1.relu"
        )


def test_cam_needs_a_gap_linear_head(untouched):
    _raises(untouched, "global average pooling", tiny_resnet(), image(0), "cam", layer="layer1")
    flat_head = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, 5))
    _raises(untouched, "global average pooling", flat_head, image(0), "cam")


class BranchingShared(nn.Module):
    """One ReLU module used twice, behind data-dependent control flow: fx cannot trace it, so DeepLift
    cannot get a copy with one module per use."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(x))
        if bool(y.detach().sum() >= 0):
            y = self.relu(y - 0.1)
        return self.fc(y.mean((2, 3)))


def test_deeplift_unshares_reused_nonlinearities_or_refuses_clearly(untouched):
    model = resnet18_like(10)  # one ReLU per block, used twice: attributed on a copy with one per use
    with untouched(model):
        result = attribute(model, image(0, (3, 64, 64)), "deeplift", target=0)
    assert torch.isfinite(result.map).all() and result.map.abs().sum() > 0
    _raises(untouched, "runs more than once", BranchingShared(), image(0), "deeplift", target=0)


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("integrated_gradients", {"n_steps": 0}, "n_steps=0 is not valid .* between 2 and 2000"),
        ("integrated_gradients", {"n_steps": 2.5}, "expected an int"),
        ("integrated_gradients", {"method": "simpson"}, "one of 'gausslegendre'"),
        ("smoothgrad", {"stdevs": -1.0}, ">= 0"),
        ("occlusion", {"sliding_window_shapes": 99}, "does not fit the image"),
        ("score_cam", {"batch_size": True}, "expected an int"),
        ("grad_cam", {"relu_attributions": "yes"}, "True or False"),
        (
            "integrated_gradients",
            {"n_step": 5},
            r"did you mean 'n_steps'.*valid options of 'integrated_gradients': n_steps",
        ),
        ("saliency", {"n_steps": 5}, "valid options of 'saliency': abs"),
        ("hires_cam", {"batch_size": 5}, "valid options of 'hires_cam': none"),
    ],
)
def test_bad_options(method, options, match, untouched):
    _raises(untouched, match, tiny_resnet(), image(0), method, options=options)


class NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x) * torch.tensor(float("nan"))
        return self.fc(features.mean((2, 3)))


@pytest.mark.parametrize("method", ["saliency", "grad_cam", "hires_cam"])
def test_nan_results_are_reported(method, untouched):
    _raises(untouched, "NaN", NaNModel(), image(0), method, target=0)


def test_public_exports():
    for name in ("attribute", "METHODS", "suggest_target_layer", "Attribution", "Cancelled"):
        assert hasattr(cnn_widgets, name)


def test_model_image_and_method_can_be_passed_by_keyword():
    model = tiny_resnet()
    result = attribute(model=model, image=image(0), method="saliency", target=1)
    assert result.method == "saliency" and result.target == 1


def test_an_option_named_like_an_argument_goes_through_options():
    model = tiny_resnet()
    a = attribute(model, image(0), "integrated_gradients", target=1, n_steps=4,
                  options={"method": "riemann_trapezoid"})
    assert a.options["method"] == "riemann_trapezoid" and a.options["n_steps"] == 4
    with pytest.raises(ValueError, match="both as keywords and in options="):
        attribute(model, image(0), "integrated_gradients", n_steps=4, options={"n_steps": 5})
