"""Every public entry point on the kinds of trained networks users bring, not only ShapesNet: a face
detector's heads (PReLU, tuple outputs, a softmax class head, a fully convolutional net with a dense
class map and a sibling box head that runs after it), a dict output with SiLU, modules returning integer
shape tensors, a ``torch.fx`` GraphModule and odd input sizes. Each call works or fails with a clear
message, the class scores are selected with ``output=``, probabilities are shown as the model gives
them, ``logits=True`` explains the pre-softmax score, and the model is left untouched."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.fx
from torch import nn

from cnn_widgets import METHODS, ActivationBrowser, FilterGrid, attribute, capture_activations, layer_table
from cnn_widgets import suggest_target_layer
from cnn_widgets.outputs import is_probabilities, probabilities
from cnn_widgets.widgets.attribution_view import AttributionView, class_probabilities
from cnn_widgets.widgets.compare import compare


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


class ONet(nn.Module):
    """MTCNN's output network, shape for shape: PReLU everywhere, three heads, the class head a
    softmax over (face, not face); forward returns (boxes, landmarks, probabilities)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 8, 3), nn.PReLU(8)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(8, 16, 3), nn.PReLU(16)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(16, 16, 2), nn.PReLU(16)
        self.flatten = nn.Flatten()
        self.dense = nn.LazyLinear(32)
        self.prelu4 = nn.PReLU(32)
        self.box = nn.Linear(32, 4)
        self.landmarks = nn.Linear(32, 10)
        self.cls = nn.Linear(32, 2)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense(self.flatten(x)))
        return self.box(x), self.landmarks(x), self.softmax(self.cls(x))


class PNet(nn.Module):
    """MTCNN's proposal network: fully convolutional; the class head (a softmax over a dense (N, 2, h, w)
    map) runs BEFORE its sibling box head, so "the last spatial module" is the box conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 8, 3), nn.PReLU(8)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(8, 12, 3), nn.PReLU(12)
        self.conv3, self.prelu3 = nn.Conv2d(12, 16, 3), nn.PReLU(16)
        self.cls = nn.Conv2d(16, 2, 1)
        self.softmax = nn.Softmax(dim=1)
        self.box = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        probs = self.softmax(self.cls(x))
        return self.box(x), probs


class DictSiLU(nn.Module):
    """SiLU activations, a dict output and a buffer-held projection (as converted ONNX models have)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.SiLU(),
        )
        self.register_buffer("projection", torch.randn(8, 6, generator=torch.Generator().manual_seed(3)))

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        f = self.features(x)
        return {"embedding": f.mean(dim=(2, 3)), "logits": f.mean(dim=(2, 3)) @ self.projection, "n": 3}


class Shape(nn.Module):
    """An ONNX ``Shape`` node as onnx2torch converts it: an int64 tensor of the input's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.shape, dtype=torch.int64)


class Reshape(nn.Module):
    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return x.reshape([int(s) for s in shape])


class WithShapeOps(nn.Module):
    """Modules that return integer shape tensors and an input-independent constant beside the features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.shape = Shape()
        self.reshape = Reshape()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        s = self.shape(y)
        flat = self.reshape(y.mean(dim=(2, 3)), torch.stack([s[0], s[1]]))
        return self.fc(flat)


def plain_cnn() -> nn.Module:
    return _seeded(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ))


def onet() -> nn.Module:
    model = ONet()
    model(torch.zeros(1, 3, 48, 48))  # materialise the lazy layer
    return _seeded(model, 1)


def image(h: int = 48, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------- structured outputs
def test_a_tuple_output_without_output_names_the_structure_and_the_fix(untouched) -> None:
    model = onet()
    with untouched(model), pytest.raises(ValueError) as info:
        attribute(model, image(), "saliency")
    text = str(info.value)
    assert "output[0]: Tensor(1, 4)" in text and "output[2]: Tensor(1, 2)" in text
    assert "probability rows" in text and "output=0" in text


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("cam",)])
def test_every_method_on_the_face_detector_head(method: str, untouched) -> None:
    model = onet()
    options = {"n_steps": 4} if method == "integrated_gradients" else {}
    options |= {"nt_samples": 3} if method == "smoothgrad" else {}
    options |= {"n_samples": 8} if method in ("lime", "kernel_shap", "gradient_shap") else {}
    with untouched(model):
        result = attribute(model, image(), method, target=0, output=2, logits=True, options=options)
    assert result.map.shape == (48, 48) and torch.isfinite(result.map).all()
    if method in ("guided_backprop", "deconvolution", "guided_grad_cam"):
        assert any("no nn.ReLU" in note or "none" in note for note in result.notes), result.notes


def test_cam_on_a_model_without_a_gap_head_is_a_clear_error(untouched) -> None:
    model = onet()
    with untouched(model), pytest.raises(ValueError, match="global average pooling"):
        attribute(model, image(), "cam", output=2, logits=True)


def test_logits_true_attributes_the_pre_softmax_score(untouched) -> None:
    """Saliency with logits=True equals the gradient of the class logit, computed independently; on the
    softmax it is a different (and for a saturated head, vanishing) gradient."""
    model = onet()
    x = image()[None]
    want_x = x.clone().requires_grad_(True)
    twin = onet()
    h = twin.prelu3(twin.conv3(twin.pool2(twin.prelu2(twin.conv2(twin.pool1(twin.prelu1(twin.conv1(want_x))))))))
    logit = twin.cls(twin.prelu4(twin.dense(twin.flatten(h))))[0, 1]
    (grad,) = torch.autograd.grad(logit, want_x)
    with untouched(model):
        got = attribute(model, x[0], "saliency", target=1, output=2, logits=True, abs=False)
        soft = attribute(model, x[0], "saliency", target=1, output=2, abs=False)
    assert torch.allclose(got.raw[0], grad[0], atol=1e-6)
    assert not torch.allclose(soft.raw[0], grad[0], atol=1e-6)


def test_logits_without_a_final_softmax_is_a_clear_error(untouched) -> None:
    model = plain_cnn()
    with untouched(model), pytest.raises(ValueError, match="no final nn.Softmax"):
        attribute(model, image(32, 32), "saliency", logits=True)


def test_suggested_layer_is_never_the_sibling_box_head(untouched) -> None:
    """PNet's box conv runs after the class head: the last spatial module overall, but the class scores
    do not depend on it. The suggestion is the last module the scores depend on."""
    model = _seeded(PNet(), 2)
    pooled = lambda out: out[1].amax(dim=(2, 3))  # noqa: E731  (a dense class map pooled to scores)
    with untouched(model):
        assert suggest_target_layer(model, image(24, 24), output=pooled) == "cls"
        for method in ("grad_cam", "grad_cam_pp", "layer_cam", "score_cam", "eigen_cam", "hires_cam"):
            result = attribute(model, image(24, 24), method, output=pooled)
            assert result.layer == "cls", method


def test_a_dense_class_map_without_pooling_says_how_to_pool() -> None:
    model = _seeded(PNet(), 2)
    with pytest.raises(ValueError, match=r"amax\(dim=\(2, 3\)\)"):
        attribute(model, image(24, 24), "saliency", output=1)


def test_dict_output_by_key_and_callable(untouched) -> None:
    model = _seeded(DictSiLU(), 4)
    with untouched(model):
        by_key = attribute(model, image(33, 47), "integrated_gradients", target=2, output="logits", n_steps=8)
        by_call = attribute(model, image(33, 47), "integrated_gradients", target=2,
                            output=lambda out: out["logits"], n_steps=8)
        cam = attribute(model, image(33, 47), "grad_cam", output="logits")
    assert torch.equal(by_key.map, by_call.map) and by_key.map.shape == (33, 47)
    assert cam.layer == "features" and cam.map.shape == (33, 47)
    with pytest.raises(ValueError, match=r"(?s)output='scores' does not select anything.*output\['logits'\]"):
        attribute(model, image(33, 47), "saliency", output="scores")


def test_output_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="output must be"):
        attribute(plain_cnn(), image(32, 32), "saliency", output=1.5)


# --------------------------------------------------------------------------------- probabilities shown
def test_probabilities_are_shown_as_the_model_gives_them() -> None:
    model = nn.Sequential(plain_cnn(), nn.Softmax(dim=1))
    x = image(32, 32)[None]
    with torch.no_grad():
        given = model(x)
    probs, _ = class_probabilities(model, x)
    assert torch.allclose(probs, given, atol=1e-7)  # not softmaxed again
    logits_view, _ = class_probabilities(model, x, scores="logits")
    assert torch.allclose(logits_view, torch.softmax(given, dim=1))
    saturated = torch.tensor([[0.9999, 0.0001]])
    assert is_probabilities(saturated) and probabilities(saturated)[0, 0] == pytest.approx(0.9999)
    assert not is_probabilities(torch.tensor([[2.0, -1.0]]))


def test_attribution_view_on_the_face_detector(untouched) -> None:
    model = onet()
    with untouched(model):
        view = AttributionView(model, image(), method="saliency", output=2, logits=True, labels=["face", "none"])
        assert view.wait(60)
    assert view.error == "" and view.result is not None
    total = sum(p["probability"] for p in view.predictions)
    assert total == pytest.approx(1.0, abs=1e-5)  # the model's own probabilities, two classes


def test_compare_on_the_face_detector(untouched) -> None:
    model = onet()
    with untouched(model):
        widget = compare(model, [image(seed=1), image(seed=2)], ["saliency", "grad_cam"], output=2, logits=True)
        if hasattr(widget, "wait"):
            assert widget.wait(120)
    assert all(r is not None for r in widget.results), widget.errors


# ------------------------------------------------------------------------------ capture, tables, widgets
@pytest.mark.parametrize("build", [onet, lambda: _seeded(PNet(), 2), lambda: _seeded(DictSiLU(), 4)])
def test_capture_table_filters_and_browser_on_real_models(build, untouched) -> None:
    model = build()
    x = image(48, 48)
    with untouched(model):
        acts = capture_activations(model, x)
        rows = layer_table(model, x)
        grid = FilterGrid(model)
        browser = ActivationBrowser(model, x)
    assert acts and all(torch.isfinite(a).all() for a in acts.values() if a.is_floating_point())
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    assert sum(r.buffers for r in rows) == sum(b.numel() for b in model.buffers())
    assert grid.layer and browser.layers


def test_integer_shape_modules_and_fx_graph_modules(untouched) -> None:
    model = _seeded(WithShapeOps(), 5)
    with untouched(model):
        acts = capture_activations(model, image(16, 16))
        result = attribute(model, image(16, 16), "integrated_gradients", n_steps=4)
    assert acts["shape"].dtype == torch.int64 and result.map.shape == (16, 16)
    graph = torch.fx.symbolic_trace(plain_cnn())
    with untouched(graph):
        rows = layer_table(graph, image(32, 32))
        cam = attribute(graph, image(32, 32), "grad_cam")
    assert isinstance(graph, torch.fx.GraphModule) and cam.layer == "3"
    assert [r.name for r in rows if r.type == "Conv2d"] == ["0", "2"]


@pytest.mark.parametrize("size", [(17, 29), (64, 31), (9, 9)])
def test_odd_input_sizes(size: tuple[int, int], untouched) -> None:
    model = plain_cnn()
    with untouched(model):
        for method in ("grad_cam", "occlusion", "feature_ablation"):
            result = attribute(model, image(*size), method)
            assert result.map.shape == size, method


def test_a_wrong_input_size_is_a_value_error_everywhere(untouched) -> None:
    model = onet()  # its dense layer fixes the input at 48×48
    for call in (
        lambda: capture_activations(model, image(40, 40)),
        lambda: layer_table(model, image(40, 40)),
        lambda: attribute(model, image(40, 40), "saliency", output=2),
        lambda: suggest_target_layer(model, image(40, 40), output=2),
    ):
        with untouched(model), pytest.raises(ValueError, match=r"\(1, 3, 40, 40\)"):
            call()


def test_half_and_double_models_get_their_input_cast(untouched) -> None:
    for dtype in (torch.float64, torch.bfloat16):
        model = plain_cnn().to(dtype)
        with untouched(model):
            acts = capture_activations(model, image(16, 16))
            result = attribute(model, image(16, 16), "saliency")
            browser = ActivationBrowser(model, image(16, 16))  # hashed its bfloat16 input with numpy once
            browser.set_image(image(16, 16, seed=1))
        assert acts["0"].dtype == dtype and result.map.dtype == torch.float32
        assert browser.layers and browser.layer in browser.layers


def test_torchscript_models_in_train_mode_are_restored() -> None:
    eager = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).train()
    x = image(12, 12)[None]
    for model in (torch.jit.trace(eager, x), torch.jit.script(eager)):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = attribute(model, x, "saliency")
        assert torch.isfinite(result.map).all()
        for call in (lambda: capture_activations(model, x), lambda: layer_table(model, x),
                     lambda: attribute(model, x, "grad_cam")):
            with pytest.raises(TypeError, match="TorchScript"):
                call()
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "BatchNorm statistics changed"
        assert model.training


# ------------------------------------------------------------------------------------- widget arguments
def test_widget_traits_of_the_wrong_type_are_value_errors_naming_the_trait() -> None:
    from cnn_widgets import ConvExplainer, ModelSummary

    model, x = plain_cnn(), image(16, 16)
    browser, grid = ActivationBrowser(model, x), FilterGrid(model)
    summary, explainer = ModelSummary(model, x), ConvExplainer(model, x)
    cases = [(browser, "channel", "x"), (browser, "scale", 3), (browser, "opacity", "a"), (grid, "input_channel", "a"),
             (grid, "colormap", 5), (grid, "scale", "nope"), (summary, "selected", 3), (explainer, "position", "a"),
             (explainer, "channel", 1.5)]
    for widget, trait, value in cases:
        with pytest.raises(ValueError, match=trait):
            setattr(widget, trait, value)


def test_activation_browser_takes_a_channel_at_construction() -> None:
    browser = ActivationBrowser(plain_cnn(), image(16, 16), channel=3)
    assert browser.channel == 3 and browser.layer == "0"
    with pytest.raises(ValueError, match="channel 9 is out of range"):
        ActivationBrowser(plain_cnn(), image(16, 16), channel=9)


def test_filter_grid_takes_a_selected_filter_at_construction() -> None:
    grid = FilterGrid(plain_cnn(), selected=2)
    assert grid.selected == 2 and grid._weights
    with pytest.raises(ValueError, match="selected 99 is out of range"):
        FilterGrid(plain_cnn(), selected=99)


@pytest.mark.parametrize("kind", ["trace", "script"])
def test_filter_grid_on_torchscript_reads_the_conv_geometry(kind: str) -> None:
    eager = _seeded(nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1, dilation=2, groups=4), nn.ReLU()))
    model = torch.jit.trace(eager, torch.rand(1, 4, 9, 9)) if kind == "trace" else torch.jit.script(eager)
    info = FilterGrid(model)._weights["info"]
    assert info == {"in_channels": 4, "out_channels": 4, "kernel_size": [3, 3], "stride": [2, 2],
                    "padding": [1, 1], "dilation": [2, 2], "groups": 4}


def test_activation_browser_on_a_model_that_cannot_run_under_autograd(untouched) -> None:
    """A model writing with ``out=`` cannot record a graph: the browser still shows every float activation,
    equal to what capture_activations records, and a wrong input is still the clear error."""
    import archs

    model, x = archs.build("inplace_zoo")
    with untouched(model):
        browser = ActivationBrowser(model, x)
        reference = capture_activations(model, x)
    assert browser.layer == "conv1"
    floats = [k for k, v in reference.items() if v.is_floating_point()]
    assert browser.layers == floats
    with pytest.raises(ValueError, match="3 input channels"):
        ActivationBrowser(model, torch.rand(5, 16, 16))


def test_model_lock_lets_user_code_copy_a_model_a_view_is_computing_on() -> None:
    """The documented way to deep-copy a model while a widget computes on it: under model_lock the copy
    never sees the run's temporary hooks or eval mode."""
    import copy

    from cnn_widgets import model_lock

    model = plain_cnn().train()
    view = compare(model, [image(16, 16)] * 2, ["occlusion", "integrated_gradients", "saliency"])
    copies = []
    try:
        while True:  # copies for as long as the grid computes (at least one)
            with model_lock(model):
                copies.append(copy.deepcopy(model))
            if view.wait(0):
                break
    finally:
        view.wait(60)
    for twin in copies:
        assert twin.training and all(m.training for m in twin.modules())
        assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in twin.modules())


# ------------------------------------------------------------------ models and contexts users bring along
def bn_cnn() -> nn.Module:
    """Trained-looking: BatchNorm with running statistics, Dropout, kept in train mode by its user."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(8, 5),
    )
    _seeded(model).train()
    with torch.no_grad():  # statistics a trained model would have, and a version counter past zero
        model(torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    return model


def test_views_never_run_a_train_mode_model_in_train_mode(untouched) -> None:
    """Not one BatchNorm statistic is written (the buffers' version counters stay put), by the probe
    forward of a view either (FeatureVisualizer's once ran in the model's train mode)."""
    from cnn_widgets import FeatureVisualizer, ModelSummary, suggest_target_layer

    model = bn_cnn()
    with untouched(model):
        layer_table(model, image(16, 16))
        suggest_target_layer(model, image(16, 16))
        assert FeatureVisualizer(model, "3", steps=2, size=16).wait(60)
        assert ModelSummary(model, image(16, 16)).selected is None
        assert AttributionView(model, image(16, 16)).wait(60)
    assert model.training


def test_lazy_modules_that_have_not_run_are_refused_and_left_lazy() -> None:
    model = nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear(5))
    for call in (lambda: layer_table(model, image(16, 16)), lambda: capture_activations(model, image(16, 16)),
                 lambda: attribute(model, image(16, 16), "grad_cam"), lambda: FilterGrid(model)):
        with pytest.raises(TypeError, match=r"lazy modules that have not run yet \('0', '4'\).*model\(example\)"):
            call()
    assert isinstance(model[0].weight, nn.parameter.UninitializedParameter), "still lazy: nothing initialised it"
    model(image(16, 16)[None])  # once run, it is an ordinary model
    assert attribute(model, image(16, 16), "grad_cam").map.shape == (16, 16)


def test_a_compiled_model_is_refused_with_the_module_to_pass() -> None:
    model = plain_cnn()
    compiled = torch.compile(model)  # compiles lazily: nothing runs here
    for call in (lambda: capture_activations(compiled, image()), lambda: attribute(compiled, image(), "saliency"),
                 lambda: AttributionView(compiled, image())):
        with pytest.raises(TypeError, match=r"torch\.compile.*model\._orig_mod"):
            call()
    assert compiled._orig_mod is model


def test_inside_no_grad_everything_works_as_outside(untouched) -> None:
    from cnn_widgets import suggest_target_layer

    model = plain_cnn()
    want = attribute(model, image(), "grad_cam")
    with untouched(model), torch.no_grad():
        assert suggest_target_layer(model, image()) == want.layer
        got = attribute(model, image(), "grad_cam")
        assert torch.equal(got.map, want.map) and got.layer == want.layer
    assert torch.is_grad_enabled()


def test_inside_inference_mode_gradient_entry_points_say_so() -> None:
    from cnn_widgets import scan, suggest_target_layer, visualize_feature

    model = plain_cnn()
    with torch.inference_mode():
        for call in (lambda: attribute(model, image(), "grad_cam"), lambda: attribute(model, image(), "saliency"),
                     lambda: suggest_target_layer(model, image())):
            with pytest.raises(ValueError, match=r"needs autograd, which torch\.inference_mode\(\) turns off"):
                call()
        with pytest.raises(ValueError, match=r"visualize_feature\(\) needs autograd"):
            visualize_feature(model, "2", 0, steps=2, size=16)
        with pytest.raises(ValueError, match=r'scan\(by="relevance"\) needs autograd'):
            scan(model, [image()] * 2, ["2"], k=1, by="relevance", progress=False)
        assert set(capture_activations(model, image())) >= {"0", "2"}  # no gradient needed: it works
        assert scan(model, [image()] * 2, ["2"], k=1, progress=False).top_values["2"].shape == (8, 1)


SQUASHES = [nn.Softmax(dim=1), nn.LogSoftmax(dim=1), nn.Sigmoid()]


@pytest.mark.parametrize("squash", SQUASHES, ids=lambda m: type(m).__name__)
def test_cam_on_a_gap_head_behind_a_softmax_says_logits_true(squash: nn.Module, untouched) -> None:
    """The head is there, behind a final squashing module: the message names the fix, which works."""
    model = _seeded(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, 4), squash))
    with untouched(model):
        with pytest.raises(ValueError, match=r"softmax, log-softmax or sigmoid after that head.*logits=True"):
            attribute(model, image(16, 16), "cam")
        assert attribute(model, image(16, 16), "cam", logits=True).map.shape == (16, 16)


class AuxInTraining(nn.Module):
    """Returns (logits, aux_logits) in train mode and the logits alone in eval mode (Inception-style)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc, self.aux = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 5), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> Any:
        f = self.conv(x).relu().mean((2, 3))
        return (self.fc(f), self.aux(f)) if self.training else self.fc(f)


def test_output_index_for_a_train_only_tuple_says_the_model_runs_in_eval_mode(untouched) -> None:
    model = _seeded(AuxInTraining()).train()
    with untouched(model):
        with pytest.raises(ValueError, match=r"runs in eval mode here.*drop output="):
            attribute(model, image(16, 16), "saliency", output=0)
        assert attribute(model, image(16, 16), "saliency").map.shape == (16, 16)  # as the message says
    assert model.training


def test_a_one_logit_binary_classifier_shows_the_sigmoid_not_a_softmax_of_one(untouched) -> None:
    """A softmax over one column is always 1: the bars, the scores and the deletion curve would all say
    100 %. One column is the positive class's logit (sigmoid) or a sigmoid head's probability (as given)."""
    from cnn_widgets import deletion_auc

    logit_model = _seeded(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                        nn.Flatten(), nn.Linear(4, 1)))
    with untouched(logit_model):
        logit = float(logit_model(image(16, 16)[None]))
        view = AttributionView(logit_model, image(16, 16), "saliency")
        assert view.wait(60) and view.error == ""
        assert view.predictions[0]["probability"] == pytest.approx(torch.sigmoid(torch.tensor(logit)).item(), abs=1e-5)
        curve = deletion_auc(logit_model, image(16, 16), torch.rand(16, 16), 0, steps=4)
        assert len(set(curve.probabilities.tolist())) > 1, "the curve moves as pixels are deleted"
        assert curve.probabilities[0].item() == pytest.approx(torch.sigmoid(torch.tensor(logit)).item(), abs=1e-5)
    sigmoid_head = nn.Sequential(logit_model, nn.Sigmoid())
    assert probabilities(sigmoid_head(image(16, 16)[None])).item() == pytest.approx(torch.sigmoid(torch.tensor(logit)).item())
    assert probabilities(torch.tensor([[2.0]]), "logits").item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
