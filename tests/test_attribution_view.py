"""AttributionView: traits, recomputation, the cache, progress and cancel through the job engine, the
output=/scores=/logits= selection, notes, errors shown as text, and bad arguments (wrong types included)
refused clearly. compare() is tested in test_compare.py, the engine in test_jobs.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from bqplot import Figure
from torch import nn

import cnn_widgets
from cnn_widgets import METHODS, AttributionView, attribute, wire
from cnn_widgets.widgets import WidgetValueError
from cnn_widgets.widgets.attribution_view import TOP_K
from cnn_widgets.zoo.resnet import resnet18_like

HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("single_thread")


class TinyCNN(nn.Module):
    """conv → ReLU → conv → ReLU → global average pool → linear: every method applies, CAM included.
    ``calls`` counts forward passes."""

    def __init__(self, classes: int = 7, delay: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)
        self.delay = delay
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)  # stands in for a big model: makes every forward pass take a while
        return self.fc(self.pool(self.features(x)).flatten(1))


def tiny(classes: int = 7, delay: float = 0.0) -> TinyCNN:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyCNN(classes, delay).eval()


def image(seed: int = 0, size: int = 24) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**{f"p:{n}": p.detach().clone() for n, p in model.named_parameters()},
            **{f"b:{n}": b.detach().clone() for n, b in model.named_buffers()}}  # fmt: skip


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    for name, m in model.named_modules():
        for attr in HOOK_DICTS:
            assert not getattr(m, attr, None), f"{attr} left on {name or 'model'}"
    after = snapshot(model)
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"
    assert not any(p.grad is not None for p in model.parameters())


def shown_map(view: AttributionView) -> np.ndarray:
    """The map as the browser receives it: the decoded float16 wire payload."""
    return wire.decode(view._canvas._result["map"])[0]


def ready(view: AttributionView) -> AttributionView:
    assert view.wait(30), "the worker did not finish"
    return view


# --- traits and the first result -------------------------------------------------------------------


def test_defaults_traits_and_layout():
    model = tiny()
    view = ready(AttributionView(model, image()))
    assert (view.method, view.target, view.layer, view.options) == ("grad_cam", None, None, {})
    assert (view.opacity, view.colormap, view.sign, view.clip_percentile) == (0.5, "inferno", "positive", 99.0)
    assert view.labels == [f"class {i}" for i in range(7)]
    assert len(view.predictions) == TOP_K
    probs = [p["probability"] for p in view.predictions]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert (view.busy, view.progress, view.error) == (False, 1.0, "")
    assert any(isinstance(c, Figure) for c in view.children)
    canvas = view._canvas
    for name in ("method", "target", "layer", "options", "opacity", "colormap", "sign", "clip_percentile",
                 "progress", "busy", "error"):
        assert getattr(canvas, name) == getattr(view, name), name
    assert [m["name"] for m in canvas._methods] == list(METHODS)
    # the top prediction is explained, at input resolution, and travels as float16 within its precision
    res = view.result
    assert res.method == "grad_cam" and res.target == view.predictions[0]["index"] and res.layer == "features"
    assert res.map.shape == (24, 24)
    direct = attribute(model, image(), "grad_cam")
    assert torch.equal(res.map, direct.map)
    assert np.abs(shown_map(view) - res.map.numpy()).max() <= 1e-3 * float(res.map.abs().max())
    assert view._canvas._result["map"]["dtype"] == "float16"


def test_display_traits_change_nothing_in_the_kernel():
    view = ready(AttributionView(tiny(), image()))
    payload = view._canvas._result
    view.opacity, view.colormap, view.sign, view.clip_percentile = 0.9, "RdBu_r", "all", 95.0
    assert not view.busy and view._canvas._result is payload
    assert (view._canvas.opacity, view._canvas.sign) == (0.9, "all")
    # browser-side moves of these traits are not echoed back to the page
    for name in ("opacity", "colormap", "sign", "clip_percentile"):
        assert view._canvas.trait_metadata(name, "echo_update") is False


def test_few_classes_give_fewer_bars_and_labels_are_used():
    view = ready(AttributionView(tiny(classes=3), image(), labels=["cat", "dog", "<b>cow</b>"]))
    assert len(view.predictions) == 3
    assert sorted(view._bars.x) == sorted(["cat", "dog", "<b>cow</b>"])
    assert view._canvas._result["target_label"] == view.labels[view.result.target]


# --- recomputation and the cache ----------------------------------------------------------------------


def test_method_target_layer_and_options_changes_recompute():
    model = tiny()
    view = ready(AttributionView(model, image()))
    view.method = "saliency"
    ready(view)
    assert view.result.method == "saliency"
    assert torch.equal(view.result.map, attribute(model, image(), "saliency").map)
    view.target = 2
    ready(view)
    assert view.result.target == 2 and not view.result.top_prediction
    view.method = "integrated_gradients"
    view.options = {"n_steps": 5}
    ready(view)
    assert view.result.options["n_steps"] == 5
    assert torch.allclose(view.result.map, attribute(model, image(), "integrated_gradients", 2, n_steps=5).map,
                          atol=1e-6)
    view.method = "grad_cam"
    view.layer = "features.1"
    ready(view)
    assert view.result.layer == "features.1"
    assert view._canvas._result["layer"] == "features.1"


def test_switching_back_is_a_cache_hit():
    view = ready(AttributionView(tiny(), image()))
    first = view.result
    view.method = "saliency"
    ready(view)
    view.method = "grad_cam"
    assert not view.busy, "a cached result must not start a computation"
    assert view.result is first and view._jobs._thread is None
    # the top prediction and the same class given explicitly are one cache entry
    view.target = first.target
    assert not view.busy and view.result is first


def test_options_are_remembered_per_method():
    view = ready(AttributionView(tiny(), image(), method="integrated_gradients", options={"n_steps": 4}))
    view.method = "saliency"
    assert view.options == {}
    ready(view)
    view.method = "integrated_gradients"
    assert view.options == {"n_steps": 4} and not view.busy  # restored, and cached


def test_bar_click_sets_target_and_highlights_it():
    view = ready(AttributionView(tiny(), image()))
    second = view.predictions[1]["index"]
    view._bar_clicked(view._bars, {"event": "element_click", "data": {"index": 1}})
    assert view.target == second
    ready(view)
    assert view.result.target == second
    colors = view._bars.colors
    assert colors[1] != colors[0] and len(set(colors)) == 2
    view._bar_clicked(view._bars, {"event": "element_click", "data": {}})  # no index: ignored
    assert view.target == second


def test_set_image_recomputes():
    view = ready(AttributionView(tiny(), image(0)))
    first = view.result
    view.set_image(image(1))
    ready(view)
    assert view.result is not first
    assert not torch.equal(view.result.map, first.map)


# --- progress and cancel -------------------------------------------------------------------------------


SLOW_OPTIONS = {"sliding_window_shapes": 3, "strides": 1, "perturbations_per_eval": 4}


def test_progress_reaches_one_in_steps():
    view = ready(AttributionView(tiny(), image(size=16)))
    seen: list[float] = []
    view.observe(lambda change: seen.append(change["new"]), "progress")
    view.method = "occlusion"
    view.options = {"sliding_window_shapes": 3, "strides": 2}
    ready(view)
    assert view.progress == 1.0 and seen[-1] == 1.0
    assert view.error == "" and view.result.method == "occlusion"


def wait_for_progress(view: AttributionView) -> None:
    deadline = time.monotonic() + 30
    while view.progress <= 0.0 and time.monotonic() < deadline:
        time.sleep(0.01)


def test_cancel_stops_the_work_and_leaves_model_and_view_usable():
    model = tiny(delay=0.02)
    view = ready(AttributionView(model, image()))
    before = snapshot(model)
    view.method = "occlusion"
    view.options = dict(SLOW_OPTIONS)
    wait_for_progress(view)
    assert view.busy and 0.0 < view.progress < 0.5
    view._canvas._handle_msg({"content": {"data": {"method": "custom", "content": {"type": "cancel"}}}, "buffers": []})  # what the cancel button sends
    calls = model.calls
    assert not view.busy and view.progress == 0.0
    assert view.wait(10)
    assert model.calls - calls <= 1, "the job stopped after the forward pass in flight"
    assert view._jobs._thread is None, "no worker thread is left behind"
    assert view.result.method == "grad_cam"  # the previous picture stays
    assert view._canvas._notice.startswith("cancelled")
    assert_untouched(model, before)
    # the view still works: a new request computes, and "run" repeats the cancelled one
    view.method = "saliency"
    ready(view)
    assert view.result.method == "saliency" and view.error == ""
    assert_untouched(model, before)


def test_a_new_request_cancels_the_running_one():
    model = tiny(delay=0.02)
    view = ready(AttributionView(model, image()))
    before = snapshot(model)
    view.method = "occlusion"
    view.options = dict(SLOW_OPTIONS)
    wait_for_progress(view)
    assert view.progress < 0.5  # occlusion has dozens of forward passes to go
    view.method = "saliency"
    calls = model.calls
    ready(view)
    assert model.calls - calls < 10, "occlusion stopped (saliency needs a few passes)"
    assert view.result.method == "saliency" and not view.busy
    assert_untouched(model, before)


def test_run_after_cancel_computes_the_cancelled_request():
    view = ready(AttributionView(tiny(delay=0.01), image(size=16)))
    view.method = "occlusion"
    view.options = {"sliding_window_shapes": 3, "strides": 2}
    view.cancel()
    assert not view.busy
    view._canvas._handle_msg({"content": {"data": {"method": "custom", "content": {"type": "run"}}}, "buffers": []})
    ready(view)
    assert view.result.method == "occlusion" and view._canvas._notice == ""


# --- errors shown as text, bad arguments raised ----------------------------------------------------------


def test_bad_options_are_shown_as_error_text_and_not_painted():
    view = ready(AttributionView(tiny(), image()))
    payload = view._canvas._result
    view.method = "integrated_gradients"
    view.options = {"n_steps": -1}
    ready(view)
    assert "n_steps" in view.error and view._canvas.error == view.error
    assert view._canvas._result is payload and view.result.method == "grad_cam"
    assert not view.busy
    view.options = {"n_steps": 4}
    ready(view)
    assert view.error == "" and view.result.method == "integrated_gradients"
    view.options = {"no_such_option": 1}
    ready(view)
    assert "no_such_option" in view.error


class SqrtNet(nn.Module):
    """Finite scores, NaN gradients: ``where`` passes a zero gradient into the unused ``sqrt`` branch,
    whose backward divides it by ``sqrt`` of a non-positive value."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        return self.fc(torch.where(f > 0, torch.sqrt(f), torch.zeros_like(f)).mean((2, 3)))


def test_nan_results_are_reported_not_painted():
    view = ready(AttributionView(SqrtNet(), image(), method="saliency"))
    assert "NaN" in view.error and view.result is None
    assert view._canvas._result == {}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "gradcam"}, ValueError, "available methods: saliency"),
        ({"target": 7}, ValueError, r"target 7 is out of range.*7 classes"),
        ({"target": True}, ValueError, "class index"),
        ({"labels": ["a", "b"]}, ValueError, "2 labels but the model has 7 classes"),
        ({"labels": "abc"}, TypeError, "list of class names"),
        ({"layer": "features.9"}, ValueError, "unknown layer 'features.9'"),
        ({"sign": "both"}, ValueError, "sign"),
        ({"opacity": 2.0}, ValueError, "opacity must be between 0 and 1"),
        ({"clip_percentile": 10.0}, ValueError, "between 50 and 100"),
        ({"colormap": "jet"}, ValueError, "colormap"),
        ({"options": {"baselines": torch.zeros(3)}}, ValueError, "call cnn_widgets.attribute"),
        ({"mean": [0.5, 0.5]}, ValueError, "mean has 2 values"),
        ({"scores": "softmax"}, ValueError, "scores must be one of 'auto'"),
        ({"logits": 1}, TypeError, "logits must be True or False"),
        ({"output": 1.5}, TypeError, "output must be an int"),
        ({"output": 3}, ValueError, "output=3 does not select anything"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AttributionView(tiny(), image(), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"method": "nope"}, {"layer": "nope"}, {"options": {"baselines": torch.zeros(3)}}, {"opacity": 2.0},
     {"colormap": "jet"}, {"sign": "both"}, {"clip_percentile": 10.0}, {"opacity": "x"}, {"labels": "abc"},
     {"scores": "softmax"}, {"logits": "yes"}],
)
def test_arguments_are_checked_before_the_model_runs(kwargs):
    model = tiny()
    with pytest.raises((ValueError, TypeError)):
        AttributionView(model, image(), **kwargs)
    assert model.calls == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [("opacity", "x"), ("target", "3"), ("target", 2.0), ("method", 3), ("layer", 5), ("options", [1]),
     ("clip_percentile", "high"), ("colormap", None), ("sign", 1)],
)
def test_wrong_types_are_value_errors_naming_the_trait(name, value):
    view = ready(AttributionView(tiny(), image()))
    before = getattr(view, name)
    with pytest.raises(WidgetValueError, match=rf"^{name} must be .*, got the ") as info:
        setattr(view, name, value)
    assert isinstance(info.value, ValueError)
    assert getattr(view, name) == before and not view.busy
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        AttributionView(tiny(), image(), **{name: value})


def test_numpy_and_tensor_class_indices_are_targets():
    view = ready(AttributionView(tiny(), image()))
    view.target = np.int64(2)
    assert view.target == 2 and type(view.target) is int
    view.target = torch.tensor(3)
    assert view.target == 3 and type(view.target) is int
    ready(view)
    assert view.result.target == 3


def test_bad_model_and_image():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        AttributionView(lambda x: x, image())
    with pytest.raises(ValueError, match="expects 3 input channels"):
        AttributionView(tiny(), torch.rand(1, 24, 24))
    with pytest.raises(ValueError, match="one image"):
        AttributionView(tiny(), torch.rand(2, 3, 24, 24))


def test_bad_trait_values_after_construction():
    view = ready(AttributionView(tiny(), image()))
    with pytest.raises(ValueError, match="available methods"):
        view.method = "nope"
    with pytest.raises(ValueError, match="out of range"):
        view.target = -1
    assert view.method == "grad_cam" and view.target is None


class SoftmaxHead(nn.Module):
    """Ends in ``nn.Softmax``: its output already is probabilities, ~0.9999 for class 0 of 2."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([9.2, 0.0]))
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.fc(self.features(x).mean((2, 3))))


class BoxesAndProbs(nn.Module):
    """A detector-like model: returns ``(boxes (N, 4), class probabilities (N, 3))``."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(1)
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.boxes = nn.Linear(8, 4)
            self.classes = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x).mean((2, 3))
        return self.boxes(f), torch.softmax(self.classes(f), dim=1)


def test_a_softmax_head_shows_its_own_probabilities_and_logits_bypasses_it():
    model = SoftmaxHead().eval()
    with torch.no_grad():
        given = model(image()[None])[0]
    assert float(given[0]) > 0.9998  # the setup: a saturated 2-class softmax
    view = ready(AttributionView(model, image(), method="saliency"))
    top = view.predictions[0]
    assert top["index"] == 0 and top["probability"] == pytest.approx(float(given[0]), abs=1e-6)
    assert view._bars.y[0] == pytest.approx(float(given[0]), abs=1e-6)  # 99.99 %, not softmax again (73.1 %)
    assert view._canvas._result["probability"] == pytest.approx(float(given[0]), abs=1e-6)
    # scores="logits" softmaxes what it is given: the 73.1 % a second softmax makes of 0.9999
    forced = ready(AttributionView(model, image(), method="saliency", scores="logits"))
    assert forced.predictions[0]["probability"] == pytest.approx(float(torch.softmax(given, 0)[0]), abs=1e-6)
    assert forced.predictions[0]["probability"] == pytest.approx(0.731, abs=1e-3)
    # logits=True explains the score before the softmax, as attribute() does
    bypassed = ready(AttributionView(model, image(), method="saliency", logits=True))
    assert torch.equal(bypassed.result.map, attribute(model, image(), "saliency", logits=True).map)
    assert torch.equal(view.result.map, attribute(model, image(), "saliency").map)
    assert not torch.allclose(bypassed.result.map, view.result.map)


def test_output_selects_the_class_scores_of_a_tuple_model():
    model = BoxesAndProbs().eval()
    with torch.no_grad():
        probs = model(image()[None])[1][0]
    with pytest.raises(ValueError, match="output="):
        AttributionView(model, image())
    view = ready(AttributionView(model, image(), output=1, labels=["a", "b", "c"]))
    assert [p["index"] for p in view.predictions] == probs.argsort(descending=True).tolist()
    assert [p["probability"] for p in view.predictions] == pytest.approx(sorted(probs.tolist(), reverse=True))
    ref = attribute(model, image(), "grad_cam", output=1)
    assert view.result.layer == ref.layer and torch.equal(view.result.map, ref.map)
    view.method = "integrated_gradients"
    view.options = {"n_steps": 4}
    view.target = 2
    ready(view)
    ref = attribute(model, image(), "integrated_gradients", 2, output=1, n_steps=4)
    assert view.error == "" and torch.allclose(view.result.map, ref.map, atol=1e-6)


class GeluNet(nn.Module):
    """No ``nn.ReLU``: guided backprop equals the plain gradient here, and says so in its notes."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


def test_notes_travel_in_the_result_payload():
    model = GeluNet().eval()
    view = ready(AttributionView(model, image(), method="guided_backprop"))
    notes = view.result.notes
    assert notes and notes == attribute(model, image(), "guided_backprop").notes
    assert view._canvas._result["notes"] == notes
    view.method = "saliency"
    ready(view)
    assert view.result.notes == [] and view._canvas._result["notes"] == []


def test_many_requests_keep_one_worker_and_a_bounded_cache():
    from cnn_widgets.widgets.jobs import CACHE_SIZE

    view = ready(AttributionView(tiny(classes=20), image(size=12)))
    keys = set()
    for method in ("saliency", "grad_cam", "input_x_gradient"):  # 60 keys: the oldest are dropped
        view.method = method
        for target in range(20):
            view.target = target
            keys.add((method, target))
            assert view.wait(30) and view.error == "" and view.result.target == target
    assert len(keys) > CACHE_SIZE and len(view._jobs._cache) == CACHE_SIZE
    assert view._jobs._thread is None and not view._jobs.live()


def _alive(kind: type) -> list:
    """Every live object of ``kind`` (a tensor only when it carries an autograd graph)."""
    import gc
    import warnings

    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module objects warns
        warnings.simplefilter("ignore")
        found = [o for o in gc.get_objects() if isinstance(o, kind)]
    return [o for o in found if kind is not torch.Tensor or o.grad_fn is not None]


def _holders(obj: object) -> str:
    """Who keeps ``obj`` alive, two levels up (for the failure message)."""
    import gc

    lines = []
    for ref in gc.get_referrers(obj)[:6]:
        lines.append(f"{type(ref).__name__}: {str(ref)[:120]}")
        lines += [f"  <- {type(up).__name__}: {str(up)[:120]}" for up in gc.get_referrers(ref)[:4]]
    return "\n".join(lines)


def test_runs_leave_nothing_behind():
    """Every method once through the view: afterwards no capture object and no tensor still needing
    grad that this view's runs created is alive, beyond the cache (a gradient CAM once kept its capture
    and autograd graph, ~1.5 MB per run on ShapesNet, through a cycle the garbage collector cannot see).
    Objects that other tests left (their workers ended with them: conftest) are not counted."""
    import weakref

    from cnn_widgets.capture import ActivationCapture

    before = {id(o): weakref.ref(o) for kind in (ActivationCapture, torch.Tensor) for o in _alive(kind)}

    def new(kind: type) -> list:
        return [o for o in _alive(kind) if id(o) not in before or before[id(o)]() is not o]

    view = ready(AttributionView(tiny(), image(size=16)))
    for method in METHODS:
        view.method = method
        ready(view)
    del method
    live, graphs = new(ActivationCapture), new(torch.Tensor)
    assert live == [], f"{len(live)} captures alive, held by:\n{_holders(live[0])}"
    assert graphs == [], f"{len(graphs)} tensors with an autograd graph alive, held by:\n{_holders(graphs[0])}"


def test_resnet_shaped_model_at_64():
    model = resnet18_like(num_classes=10).eval()
    view = ready(AttributionView(model, image(size=64)))
    assert view.result.layer == "layer4" and view.result.map.shape == (64, 64)
    assert view._canvas._auto_layer == "layer4" and "conv1" in view._canvas._layers


def test_public_exports():
    assert cnn_widgets.AttributionView is AttributionView
