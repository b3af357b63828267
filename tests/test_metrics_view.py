"""Metrics widget: its table holds exactly what the metrics functions give when called directly, a method
whose maps ignore the model is flagged, arguments fail with clear errors before any work, the model is
never changed, the odd architectures get results or clear errors, and cancel stops the work (run resumes
it)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

import archs
from cnn_widgets import attribute, zoo
from cnn_widgets.metrics import (
    deletion_auc, infidelity, insertion_auc, mass_inside, pointing_game, randomization_test, sensitivity_max,
)
from cnn_widgets.widgets._common import WidgetValueError
from cnn_widgets.widgets.metrics_view import RANDOMIZATION_THRESHOLD, Metrics
from cnn_widgets.zoo.train import HELDOUT_SEED

pytestmark = pytest.mark.usefixtures("single_thread")

TOP = ["fc", "features.conv4"]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return zoo.load_shapesnet("clean")


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return zoo.shapes_dataset(3, seed=HELDOUT_SEED)


def sobel(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """An edge detector of the input used as a "method": it ignores the model."""
    grey = image.mean(dim=0, keepdim=True)[None]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx = torch.nn.functional.conv2d(grey, kx.view(1, 1, 3, 3), padding=1)
    gy = torch.nn.functional.conv2d(grey, kx.t().reshape(1, 1, 3, 3), padding=1)
    return (gx.square() + gy.square()).sqrt()[0, 0]


@pytest.fixture(scope="module")
def done(model, data) -> Metrics:
    """Grad-CAM and the edge detector on three held-out images, everything computed."""
    images, _, masks = data
    view = Metrics(model, images, {"grad_cam": "grad_cam", "edges": sobel}, masks=masks, sample=2, steps=8,
                   randomize=TOP, seed=3)
    assert view.wait(600)
    return view


def test_table_equals_the_metrics_functions(done, model, data):
    images, _, masks = data
    assert not done.busy and done.progress == 1.0 and done.phase == "done" and done.error == ""
    maps = done.maps
    grad_cam = attribute(model, images, "grad_cam", done.targets)
    torch.testing.assert_close(maps["grad_cam"], grad_cam.map)
    for row in done.table:
        m, i = row["method"], row["image"]
        heat = maps[m][i]
        assert row["target"] == done.targets[i]
        deletion = deletion_auc(model, images[i], heat, row["target"], steps=8)
        insertion = insertion_auc(model, images[i], heat, row["target"], steps=8)
        assert row["deletion_auc"] == pytest.approx(deletion.auc, abs=1e-5)
        assert row["insertion_auc"] == pytest.approx(insertion.auc, abs=1e-5)
        pair = done.curves[(m, i)]
        torch.testing.assert_close(pair[0].scores, deletion.scores, rtol=1e-4, atol=1e-5)
        assert row["pointing_game"] == pointing_game(heat, masks[i])
        assert row["mass_inside"] == pytest.approx(mass_inside(heat, masks[i]), abs=1e-6)
        if i < 2:
            assert row["infidelity"] == pytest.approx(infidelity(model, images[i], heat, row["target"], seed=3), rel=1e-5)
            spec = "grad_cam" if m == "grad_cam" else sobel
            target = row["target"] if m == "grad_cam" else None
            assert row["sensitivity_max"] == pytest.approx(
                sensitivity_max(model, images[i], spec, target, seed=3), rel=1e-4)
        else:
            assert row["infidelity"] is None and row["sensitivity_max"] is None
    direct = [randomization_test(model, images[i], "grad_cam", done.targets[i], layers=TOP, seed=3) for i in range(2)]
    assert done.randomization["grad_cam"] == direct
    summary = {row["method"]: row for row in done.summary}
    rows = [r for r in done.table if r["method"] == "grad_cam"]
    assert summary["grad_cam"]["deletion_auc"] == pytest.approx(np.mean([r["deletion_auc"] for r in rows]))
    assert summary["grad_cam"]["pointing_game"] == pytest.approx(np.mean([r["pointing_game"] for r in rows]))
    assert summary["grad_cam"]["infidelity"] == pytest.approx(np.mean([r["infidelity"] for r in rows[:2]]))
    means = [np.mean([d[k][1] for d in direct]) for k in range(len(TOP))]
    assert [rho for _, rho in summary["grad_cam"]["randomization"]] == pytest.approx(means)
    assert summary["grad_cam"]["randomization_min"] == pytest.approx(min(means))


def test_the_method_that_ignores_the_model_is_flagged(done):
    summary = {row["method"]: row for row in done.summary}
    assert summary["edges"]["flagged"] is True
    assert all(rho > 0.99 for _, rho in summary["edges"]["randomization"])
    assert summary["grad_cam"]["flagged"] is False
    assert summary["grad_cam"]["randomization_min"] < RANDOMIZATION_THRESHOLD
    # the browser gets the same verdict and the cascade's layer names
    cascade = {m["name"]: c for m, c in zip(done._canvas._methods, done._canvas._cascade)}
    assert cascade["edges"]["flagged"] and not cascade["grad_cam"]["flagged"]
    assert cascade["grad_cam"]["layers"] == TOP
    assert [r["flagged"] for r in done._canvas._summary] == [False, True]


def test_selection_traits_and_curves_follow(done):
    done.method = "edges"
    done.image = 2
    lines = done._lines["deletion"]
    curve = done.curves[("edges", 2)][0]
    edges_line, edges_dots = lines[1]
    assert list(edges_line.y) == pytest.approx(curve.scores.tolist())
    assert edges_line.stroke_width > lines[0][0].stroke_width
    assert "AUC" in edges_line.labels[0]
    edges_dots._handle_custom_msg({"event": "element_click", "data": {"index": 3}}, [])
    assert done.method == "edges"
    lines[0][1]._handle_custom_msg({"event": "element_click", "data": {"index": 3}}, [])
    assert done.method == "grad_cam"
    with pytest.raises(WidgetValueError, match="method must be one of"):
        done.method = "saliency"
    with pytest.raises(WidgetValueError, match="image 3 is out of range"):
        done.image = 3
    with pytest.raises(WidgetValueError, match="step must be"):
        done.step = -1
    with pytest.raises(ValueError, match="opacity"):
        done.opacity = 2.0
    done.image = 0


def test_untouched_and_odd_models(untouched):
    """The tuple-output model gets its table through output=0; a dict output without output= and a
    model with no class scores fail at construction with a clear error; none is changed."""
    model, x = archs.build("tuple_output")
    images = torch.cat([x, x.flip(-1)])
    with untouched(model):
        view = Metrics(model, images, ["saliency", "grad_cam"], output=0, steps=4, sample=1)
        assert view.wait(300)
    assert view.error == "" and all(r["error"] == "" for r in view.summary)
    assert all(r["deletion_auc"] is not None for r in view.table)
    assert view.randomization["saliency"][0]
    model, x = archs.build("dict_output")
    with untouched(model), pytest.raises((ValueError, TypeError), match="output"):
        Metrics(model, x, ["saliency"])
    model, x = archs.build("xss_named")
    with untouched(model), pytest.raises((ValueError, TypeError)):
        Metrics(model, x, ["saliency"])


def test_argument_errors(model, data):
    images, _, masks = data
    with pytest.raises(ValueError, match="unknown method"):
        Metrics(model, images, ["grad_cma"])
    with pytest.raises(ValueError, match="methods is empty"):
        Metrics(model, images, [])
    with pytest.raises(ValueError, match="given twice"):
        Metrics(model, images, ["saliency", "saliency"])
    with pytest.raises(TypeError, match="must be a METHODS name or a callable"):
        Metrics(model, images, {"x": 3})
    with pytest.raises(ValueError, match="baseline must be one of"):
        Metrics(model, images, ["saliency"], baseline="grey")
    with pytest.raises(ValueError, match=r"got a Tensor \(an image as the baseline is for cnn_widgets\.deletion_auc") as info:
        Metrics(model, images, ["saliency"], baseline=torch.zeros(3, 64, 64))
    assert "0., 0." not in str(info.value), "the message names the type, not every pixel"
    with pytest.raises(ValueError, match="masks must have shape"):
        Metrics(model, images, ["saliency"], masks=masks[:2])
    with pytest.raises(ValueError, match="got 2 labels"):
        Metrics(model, images, ["saliency"], ["a", "b"])
    with pytest.raises(ValueError, match="target 7 is out of range"):
        Metrics(model, images, ["saliency"], targets=7)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        Metrics(model, images, ["saliency"], steps=0)
    with pytest.raises(ValueError, match="sample must be an int >= 0"):
        Metrics(model, images, ["saliency"], sample=-1)
    with pytest.raises(ValueError, match="unknown layer"):
        Metrics(model, images, ["saliency"], randomize=["features.conv9"])
    with pytest.raises(ValueError, match="options given for 'grad_cam'"):
        Metrics(model, images, ["saliency"], options={"grad_cam": {}})
    with pytest.raises(ValueError, match="one size"):
        Metrics(model, [images[0], images[0][:, :32, :32]], ["saliency"])


def test_a_failing_method_shows_its_error_and_the_rest_completes(model, data):
    images = data[0][:2]

    def broken(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no map today")

    view = Metrics(model, images, {"grad_cam": "grad_cam", "broken": broken}, steps=4, sample=0)
    assert view.wait(300)
    summary = {row["method"]: row for row in view.summary}
    assert "no map today" in summary["broken"]["error"]
    assert summary["broken"]["deletion_auc"] is None
    assert summary["grad_cam"]["deletion_auc"] is not None and summary["grad_cam"]["error"] == ""
    assert not view.busy and view.progress == 1.0


class Slow(nn.Module):
    """ShapesNet that sleeps in every forward pass, so there is time to cancel."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return self.inner(x)


def test_cancel_stops_and_run_resumes(model, data, untouched):
    slow = Slow(model).eval()
    with untouched(slow):
        view = Metrics(slow, data[0], ["grad_cam", "saliency"], steps=8, sample=1)
        deadline = time.monotonic() + 60
        while not view.maps and time.monotonic() < deadline:  # the first method's maps are in
            time.sleep(0.02)
        view.cancel()
        assert view.wait(60)
        assert not view.busy and view.phase == "cancelled" and view._canvas.cancelled
        partial_table = view.table
        assert any(r["deletion_auc"] is None for r in partial_table)
        assert view.progress < 1.0
        view.run()
        assert view.busy
        assert view.wait(600)
    assert view.progress == 1.0 and not view.busy
    assert all(r["deletion_auc"] is not None for r in view.table)
    assert view.randomization["grad_cam"]


def test_browser_messages(done):
    """A rendered view asks for the maps; each method's maps and cascade travel as float16 buffers."""
    sent: list[tuple[dict, list]] = []
    done._canvas.send = lambda content, buffers=None: sent.append((content, buffers))  # type: ignore[method-assign]
    done._canvas._handle_custom_msg({"type": "fetch"}, [])
    kinds = sorted((c["type"], c["method"]) for c, _ in sent)
    assert kinds == [("cascade", "edges"), ("cascade", "grad_cam"), ("maps", "edges"), ("maps", "grad_cam")]
    maps = next(c for c, _ in sent if c["type"] == "maps")
    assert maps["shape"] == [3, 64, 64] and maps["dtype"] == "float16"
    cascade = next(c for c, _ in sent if c["type"] == "cascade")
    assert cascade["shape"] == [2, len(TOP) + 1, 64, 64]
    assert all(math.isfinite(x) for row in done._canvas._summary for x in (row["deletion_auc"],))
    del done._canvas.send
