"""compare(): returns at once and fills each method's row when it is done (progress, cancel, run, wait
and results through the job engine), the maps against attribute() computed directly, rows travelling
once as custom messages, notes and errors per row, targets in every form attribute() takes, layer only
for layer methods, output=/scores=/logits=, arguments checked before anything runs, and two widgets
sharing one model without seeing each other's hooks."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

import cnn_widgets
from cnn_widgets import AttributionView, Compare, attribute, compare, wire
from cnn_widgets.widgets import WidgetValueError
from test_attribution_view import BoxesAndProbs, GeluNet, SoftmaxHead, image, tiny

TIMEOUT = 60


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def sent(monkeypatch) -> list[tuple[dict, list]]:
    """Every custom message a Compare sends (content, buffers), in order."""
    messages: list[tuple[dict, list]] = []
    monkeypatch.setattr(Compare, "send", lambda self, content, buffers=None: messages.append((content, buffers)))
    return messages


def ready(grid: Compare) -> Compare:
    assert grid.wait(TIMEOUT), "the rows were not computed in time"
    return grid


def row_maps(grid: Compare, r: int) -> np.ndarray:
    """Row ``r``'s maps as the browser receives them (N×H×W)."""
    return wire.decode(grid._encoded[r])


def message(grid: Compare, kind: str) -> None:
    """What a button (or a newly rendered view) of the page sends."""
    grid._handle_msg({"content": {"data": {"method": "custom", "content": {"type": kind}}}, "buffers": []})


def wait_until(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert predicate()


# occlusion options that take a while on a 24² image with a 0.01 s forward delay (~122 passes)
SLOW = {"occlusion": {"sliding_window_shapes": 3, "strides": 1, "perturbations_per_eval": 4}}


def test_grid_shapes_labels_and_maps_against_attribute(sent):
    model = tiny()
    imgs = [image(0), image(1), image(2)]
    grid = ready(compare(model, imgs, ["grad_cam", "saliency"], labels=[f"c{i}" for i in range(7)],
                         targets=[None, 3, None]))
    assert grid.methods == ["grad_cam", "saliency"] and grid.errors == ["", ""]
    assert grid.status == ["done", "done"] and grid.progress == 1.0 and not grid.busy
    assert grid._images["shape"] == [3, 24, 24, 3]
    assert grid.row_labels == ["grad_cam · features", "saliency"]
    assert len(grid.column_labels) == 3 and "c3" in grid.column_labels[1]
    assert grid.targets[1] == 3 and grid.scale == "per-method"  # one colour range per method by default
    for m, method in enumerate(grid.methods):
        assert grid._encoded[m]["shape"] == [3, 24, 24] and grid._encoded[m]["dtype"] == "float16"
        res = grid.results[m]
        assert torch.equal(res.map, attribute(model, torch.stack(imgs), method, grid.targets).map)
        for i, img in enumerate(imgs):
            ref = attribute(model, img, method, grid.targets[i]).map.numpy()
            assert np.abs(row_maps(grid, m)[i] - ref).max() <= 2e-3 * np.abs(ref).max() + 1e-12
    # each row went to the page once, as it finished: header + one buffer that decodes to the same maps
    rows = [(c, b) for c, b in sent if c["type"] == "row"]
    assert [c["row"] for c, _ in rows] == [0, 1]
    for content, buffers in rows:
        header = {k: v for k, v in content.items() if k not in ("type", "row")}
        assert len(buffers) == 1
        assert np.array_equal(wire.decode({**header, "data": buffers[0]}), row_maps(grid, content["row"]))
    # a view that renders later asks for the rows done
    message(grid, "fetch")
    assert [c["row"] for c, _ in sent if c["type"] == "row"] == [0, 1, 0, 1]
    for mode in ("per-panel", "per-method", "shared"):
        grid.scale = mode
    with pytest.raises(ValueError):
        grid.scale = "global"


def test_returns_at_once_and_fills_rows_one_after_another():
    model = tiny(delay=0.01)
    seen: list[list[str]] = []
    grid = compare(model, [image(0), image(1)], ["saliency", "occlusion", "grad_cam"], options=SLOW)
    grid.observe(lambda change: seen.append(list(change["new"])), "status")
    assert grid.busy and grid._images["shape"] == [2, 24, 24, 3], "the images are there at once"
    assert grid.results[1] is None and grid.results[2] is None
    ready(grid)
    assert grid.status == ["done"] * 3 and grid.progress == 1.0 and not grid.busy
    assert all(r is not None for r in grid.results)
    # one row at a time, in order: a row runs only once the rows before it are done
    for states in seen:
        running = [r for r, s in enumerate(states) if s == "running"]
        assert len(running) <= 1
        if running:
            assert all(s == "done" for s in states[: running[0]])
            assert all(s == "queued" for s in states[running[0] + 1:])
    assert ["done", "done", "running"] in seen  # (occlusion may have started before observe() above)


def test_progress_covers_the_whole_grid():
    model = tiny(delay=0.01)
    values: list[float] = []
    grid = compare(model, [image(0)], ["saliency", "occlusion"], options=SLOW)
    grid.observe(lambda change: values.append(change["new"]), "progress")
    ready(grid)
    assert values == sorted(values) and values[-1] == 1.0
    assert any(0.5 < v < 1.0 for v in values), "occlusion's own progress shows in the second half"


def test_cancel_stops_the_rest_and_run_computes_it(sent, untouched):
    model = tiny(delay=0.01)
    with untouched(model):
        grid = compare(model, [image(0), image(1)], ["saliency", "occlusion", "grad_cam"], options=SLOW)
        wait_until(lambda: grid.status[1] == "running" and grid.progress > 0.4)
        message(grid, "cancel")  # the cancel button
        calls = model.calls
        assert grid.status == ["done", "cancelled", "cancelled"] and not grid.busy
        assert ready(grid) and model.calls - calls <= 1, "occlusion stopped after the pass in flight"
        assert grid.results[0] is not None and grid.results[1:] == [None, None]
        assert [c["row"] for c, _ in sent if c["type"] == "row"] == [0]
        progress = grid.progress
        assert 1 / 3 <= progress < 2 / 3
        message(grid, "run")  # the "compute the cancelled rows" button
        assert grid.busy and grid.status[0] == "done" and grid.status[1] in ("queued", "running")
        ready(grid)
    assert grid.status == ["done"] * 3 and grid.errors == ["", "", ""]
    assert [c["row"] for c, _ in sent if c["type"] == "row"] == [0, 1, 2]
    batch = torch.stack([image(0), image(1)])
    assert torch.equal(grid.results[1].map, attribute(model, batch, "occlusion", grid.targets, **SLOW["occlusion"]).map)


def test_a_failing_method_shows_in_its_row():
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 24 * 24, 4)).eval()
    grid = ready(compare(flat, torch.stack([image(0), image(1)]), ["saliency", "grad_cam"]))
    assert grid.status == ["done", "failed"]
    assert grid.errors[0] == "" and grid.errors[1].startswith("grad_cam failed: ")
    assert grid.results[1] is None and grid.results[0].map.shape == (2, 24, 24)
    assert grid._encoded[1] is None and grid.row_labels == ["saliency", "grad_cam"]
    assert grid.progress == 1.0 and not grid.busy


def test_notes_per_row():
    model = GeluNet().eval()
    grid = ready(compare(model, [image(0)], ["guided_backprop", "saliency"]))
    assert grid.notes[0] and grid.notes[0] == attribute(model, image(0), "guided_backprop").notes
    assert grid.notes[1] == []


@pytest.mark.parametrize(
    "targets",
    [2, np.int64(2), torch.tensor(2), [2, None], (2, None), torch.tensor([2, 4]), np.array([2, 4]), None],
)
def test_targets_in_every_form_attribute_takes(targets):
    model = tiny()
    batch = torch.stack([image(0), image(1)])
    grid = ready(compare(model, batch, ["saliency"], targets=targets))
    ref = attribute(model, batch, "saliency", targets)
    assert grid.targets == ref.target
    assert torch.equal(grid.results[0].map, ref.map)


def test_layer_goes_only_to_the_methods_that_take_one():
    model = tiny()
    grid = ready(compare(model, [image(0)], ["saliency", "grad_cam"], layer="features.2"))
    assert grid.errors == ["", ""]
    assert grid.results[0].layer is None and grid.results[1].layer == "features.2"
    assert grid.row_labels == ["saliency", "grad_cam · features.2"]
    assert torch.equal(grid.results[1].map, attribute(model, image(0)[None], "grad_cam", layer="features.2").map)


def test_probability_heads_and_tuple_outputs():
    model = SoftmaxHead().eval()
    with torch.no_grad():
        given = float(model(image(0)[None])[0, 0])
    grid = ready(compare(model, [image(0)], ["saliency"], labels=["yes", "no"]))
    assert grid.column_labels == [f"image 0 · yes {given:.0%}"] and "100%" in grid.column_labels[0]
    logits = ready(compare(model, [image(0)], ["saliency"], labels=["yes", "no"], scores="logits"))
    assert "73%" in logits.column_labels[0]  # softmax of the probabilities: what "auto" avoids
    bypassed = ready(compare(model, [image(0)], ["saliency"], logits=True))
    assert torch.equal(bypassed.results[0].map, attribute(model, image(0)[None], "saliency", logits=True).map)
    tupled = BoxesAndProbs().eval()
    grid = ready(compare(tupled, [image(0), image(1)], ["grad_cam", "saliency"], output=1))
    assert grid.errors == ["", ""]
    for r, method in enumerate(grid.methods):
        ref = attribute(tupled, torch.stack([image(0), image(1)]), method, output=1)
        assert grid.targets == ref.target and torch.equal(grid.results[r].map, ref.map)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([image(0), image(1, size=16)], ["saliency"]), {}, ValueError, "images of one size"),
        (([image(0)], ["nope"]), {}, ValueError, "available methods"),
        (([image(0)], [3]), {}, TypeError, "method must be a name"),
        (([image(0)], []), {}, ValueError, "methods is empty"),
        (([], ["saliency"]), {}, ValueError, "images is an empty list"),
        (([image(0), image(1)], ["saliency"]), {"targets": [1]}, ValueError, "1 targets for 2 images"),
        (([image(0)], ["saliency"]), {"targets": "1"}, TypeError, "class index"),
        (([image(0)], ["saliency"]), {"targets": [1.5]}, TypeError, "class index"),
        (([image(0)], ["saliency"]), {"targets": 9}, ValueError, "out of range"),
        (([image(0)], ["saliency"]), {"labels": ["a"]}, ValueError, "1 labels but the model has 7 classes"),
        (([image(0)], ["saliency"]), {"layer": "nope"}, ValueError, "unknown layer"),
        (([image(0)], ["grad_cam"]), {"layer": "nope"}, ValueError, "unknown layer"),
        (([image(0)], ["saliency"]), {"layer": "features"}, ValueError, "none of .* takes a layer"),
        (([image(0)], ["saliency"]), {"options": {"occlusion": {}}}, ValueError, "not among the methods"),
        (([image(0)], ["occlusion"]), {"options": {"occlusion": {"strides": 0}}}, ValueError, "strides"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        compare(tiny(), *args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale": "global"}, ValueError, "scale must be one of"),
        ({"opacity": 2.0}, ValueError, "opacity must be between 0 and 1"),
        ({"opacity": "x"}, WidgetValueError, "opacity must be a float"),
        ({"colormap": "jet"}, ValueError, "colormap"),
        ({"sign": "both"}, ValueError, "sign must be one of"),
        ({"clip_percentile": 10.0}, ValueError, "between 50 and 100"),
        ({"clip_percentile": "99"}, WidgetValueError, "clip_percentile must be a float"),
        ({"labels": "abc"}, TypeError, "list of class names"),
        ({"targets": "1"}, TypeError, "class index"),
        ({"scores": "softmax"}, ValueError, "scores must be one of"),
        ({"logits": 1}, TypeError, "logits must be True or False"),
        ({"output": 1.5}, TypeError, "output must be an int"),
        ({"options": {"saliency": {"abs": "yes"}}}, ValueError, "abs"),
        ({"layer": "nope"}, ValueError, "unknown layer"),
    ],
)
def test_arguments_are_checked_before_the_model_runs(kwargs, error, match):
    model = tiny()
    with pytest.raises(error, match=match):
        compare(model, [image(0)], ["saliency"], **kwargs)
    assert model.calls == 0


def test_display_traits_refuse_wrong_types_after_creation():
    grid = ready(compare(tiny(), [image(0)], ["saliency"]))
    for name, value in [("scale", 3), ("opacity", "x"), ("colormap", None), ("sign", 1), ("clip_percentile", "x")]:
        with pytest.raises(WidgetValueError, match=rf"^{name} must be"):
            setattr(grid, name, value)


def test_two_widgets_on_one_model_never_see_each_others_hooks(untouched):
    """An AttributionView computing occlusion while a compare runs grad_cam and guided_grad_cam (hooks
    on the model, and on a copy) on the same model: every result equals the one computed alone."""
    model = tiny(delay=0.005)
    imgs = [image(0), image(1)]
    occlusion = {"sliding_window_shapes": 3, "strides": 2, "perturbations_per_eval": 2}
    with untouched(model):
        view = ready_view(AttributionView(model, imgs[0], method="saliency"))
        # holding the model's lock, give both widgets their work: their workers wait for it, then take
        # turns (the grid's probe pass runs here, in the lock's owner)
        with cnn_widgets.model_lock(model):
            grid = compare(model, imgs, ["grad_cam", "guided_grad_cam", "saliency"])
            view.method = "occlusion"
            view.options = occlusion  # replaces the job with default options, which has not started
            # (the first row may report its start: attribute() does so before it waits for the lock)
            assert view.busy and grid.busy and grid.status[1:] == ["queued"] * 2 and grid.progress == 0.0
        assert view.wait(TIMEOUT) and grid.wait(TIMEOUT)
    assert view.error == "" and grid.errors == ["", "", ""]
    assert torch.equal(view.result.map, attribute(model, imgs[0], "occlusion", **occlusion).map)
    batch = torch.stack(imgs)
    for r, method in enumerate(grid.methods):
        assert torch.equal(grid.results[r].map, attribute(model, batch, method, grid.targets).map), method
    for name, module in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(module, attr), f"{attr} left on {name or 'model'}"


def ready_view(view: AttributionView) -> AttributionView:
    assert view.wait(TIMEOUT), "the view's worker did not finish"
    return view


def test_public_exports():
    assert cnn_widgets.compare is compare and cnn_widgets.Compare is Compare
