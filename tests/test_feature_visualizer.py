"""FeatureVisualizer (Python side): checked traits with clear errors, images in progress reach the
browser through the codec (throttled) while the worker optimises, cancel stops the worker, finished
images come from the cache without recomputing, the same seed gives the same image, grid mode computes
every channel in turn and shares the cache with single mode, odd models work or fail clearly, and the
model is never changed. Step counts and sizes are small: these test the widget, not the optimiser
(tests/test_featurevis.py does)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch
import torch.fx
from torch import nn

import archs
from cnn_widgets import wire, zoo
from cnn_widgets.featurevis import visualize_feature
from cnn_widgets.widgets import feature_visualizer as fv_module
from cnn_widgets.widgets._common import WidgetValueError
from cnn_widgets.widgets.feature_visualizer import FeatureVisualizer
from cnn_widgets.widgets.panel import Panel

pytestmark = pytest.mark.usefixtures("single_thread")

LAYER = "features.relu4"
SMALL = {"steps": 8, "size": 32}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return zoo.load_shapesnet("clean")


class Slow(nn.Module):
    """A small CNN whose forward sleeps, standing in for a big model (progress and cancel have time)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.relu(self.conv(x))


def images_of(widget: FeatureVisualizer) -> list[dict[str, Any]]:
    """Record every ``_image`` the widget publishes (what the browser receives)."""
    seen: list[dict[str, Any]] = []
    widget.observe(lambda change: seen.append(change["new"]), "_image")
    return seen


def sent_of(widget: FeatureVisualizer) -> list[tuple[dict[str, Any], list[Any]]]:
    """Record the custom messages the widget sends."""
    sent: list[tuple[dict[str, Any], list[Any]]] = []
    widget.send = lambda content, buffers=None: sent.append((content, list(buffers or [])))  # type: ignore[method-assign]
    return sent


def pixels(message: dict[str, Any]) -> np.ndarray:
    return wire.decode(message["tensor"])


def test_traits_layers_and_the_first_image(model, untouched) -> None:
    with untouched(model):
        viz = FeatureVisualizer(model, LAYER, 3, **SMALL)
        assert viz.wait(120)
    assert isinstance(viz, Panel) and FeatureVisualizer.__bases__[0] is Panel
    assert viz.layers[:3] == ["features.conv1", "features.bn1", "features.relu1"] and LAYER in viz.layers
    assert (viz.layer, viz.channel, viz.channels, viz.objective, viz.mode) == (LAYER, 3, 64, "channel", "single")
    assert tuple(viz.size) == (32, 32) and not viz.busy and viz.error == ""
    assert (viz.step, viz.progress) == (8, 1.0)
    assert viz._image["final"] and viz._image["channel"] == 3 and viz._image["step"] == 8
    # the image travels as exact bytes through the one codec, and the image property is what it shows
    assert viz._image["tensor"]["kind"] == "exact" and viz._image["tensor"]["shape"] == [32, 32, 3]
    shown = pixels(viz._image)
    assert viz.image is not None and viz.image.shape == (3, 32, 32)
    np.testing.assert_array_equal((viz.image * 255).round().byte().permute(1, 2, 0).numpy(), shown)
    # layer=None picks the last layer with (N, C, H, W) output; the default size follows the model
    auto = FeatureVisualizer(model, None, steps=1)
    assert auto.layer == LAYER and tuple(auto.size) == (64, 64)
    auto.wait(60)


def test_trait_errors_name_the_trait(model) -> None:
    viz = FeatureVisualizer(model, LAYER, **SMALL)
    viz.wait(60)
    cases = [
        ("layer", "features.relu9", "unknown layer 'features.relu9'; did you mean"),
        ("layer", 3, "layer must be a unicode string"),
        ("channel", 64, r"channel 64 is out of range: layer 'features.relu4' has 64 channels \(0‥63\)"),
        ("channel", -1, "channel -1 is out of range"),
        ("channel", 1.5, "channel must be an int"),
        ("objective", "pixel", "objective must be any of"),
        ("steps", 0, "steps must be an int >= 1"),
        ("steps", "8", "steps must be an int"),
        ("seed", -1, "seed must be an int >= 0"),
        ("mode", "mosaic", "mode must be any of"),
    ]
    for name, value, message in cases:
        with pytest.raises(WidgetValueError, match=message):
            setattr(viz, name, value)
        with pytest.raises(ValueError):
            setattr(viz, name, value)
    viz.layer = "fc"
    with pytest.raises(ValueError, match="objective='neuron' needs a layer with \\(N, C, H, W\\) output; 'fc'"):
        viz.objective = "neuron"
    viz.objective = "class"
    assert viz.channels == 5
    with pytest.raises(ValueError, match="channel 5 is out of range: the model has 5 classes"):
        viz.channel = 5
    viz.wait(60)


class Unused(nn.Module):
    """A registered module that never runs, and one that returns an int64 shape tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.spare = nn.Conv2d(4, 4, 1)
        self.shape = archs.Identity2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        self.shape(torch.tensor(y.shape))
        return y


def test_layers_that_cannot_be_visualised_are_clear_errors() -> None:
    viz = FeatureVisualizer(Unused().eval(), "conv", steps=1, size=16)
    viz.wait(30)
    assert viz.layers == ["conv"]
    with pytest.raises(ValueError, match="layer 'spare' cannot be visualised: it did not run during the forward"):
        viz.layer = "spare"
    with pytest.raises(ValueError, match="layer 'shape' cannot be visualised: it returns a torch.int64 tensor"):
        viz.layer = "shape"
    with pytest.raises(ValueError, match="layer 'spare' cannot be visualised"):
        FeatureVisualizer(Unused().eval(), "spare", steps=1, size=16)
    scripted = torch.jit.trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="TorchScript"):
        FeatureVisualizer(scripted, "0")
    fixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2)).eval()
    with pytest.raises(ValueError, match=r"optimises at 64×64: pass size="):
        FeatureVisualizer(fixed, "0")
    ok = FeatureVisualizer(fixed, "0", steps=1, size=32)
    ok.wait(30)
    assert ok.error == ""
    with pytest.raises(ValueError, match="mean has values above 1"):
        FeatureVisualizer(fixed, "0", steps=1, size=32, mean=120)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        FeatureVisualizer(fixed, "0", steps=1, size=32, lr=0)


def test_channel_objective_on_a_linear_layer(untouched) -> None:
    """A (N, C) layer (Linear, Flatten) is visualised with objective='channel' (the unit's value); 'neuron'
    on it is a clear error."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with untouched(net):
        viz = FeatureVisualizer(net, "3", 2, steps=2, size=16)
        assert viz.wait(30) and viz.error == "", viz.error
        assert viz.image is not None and viz.image.shape == (3, 16, 16)
        viz.layer = "2"
        assert viz.wait(30) and viz.error == "", viz.error
    with pytest.raises(ValueError, match=r"objective='neuron' needs a layer with \(N, C, H, W\) output; '2'"):
        viz.objective = "neuron"


def test_images_in_progress_arrive_throttled_with_the_step_count() -> None:
    """The browser sees the image form: the first step's image at once, later ones at most every
    IMAGE_INTERVAL seconds (never one per step), each with its step; progress and step rise."""
    slow = Slow(0.03).eval()
    viz = FeatureVisualizer(slow, "relu", steps=1, size=16)
    viz.wait(30)
    seen = images_of(viz)
    progress: list[tuple[float, int]] = []
    viz.observe(lambda c: progress.append((viz.progress, viz.step)), "progress")
    viz.steps = 40  # about 1.2 s of work: several images in progress
    assert viz.wait(60)
    partial = [m for m in seen if not m["final"]]
    assert len(partial) >= 2, [m["step"] for m in seen]
    assert partial[0]["step"] == 1
    steps = [m["step"] for m in partial]
    assert steps == sorted(steps) and len(set(steps)) == len(steps) and len(partial) < 40 / 2
    assert seen[-1]["final"] and seen[-1]["step"] == 40
    assert all(m["tensor"]["kind"] == "exact" and isinstance(m["tensor"]["data"], memoryview) for m in seen)
    # what was sent at the end is the finished image; the ones in progress differ from it
    assert not np.array_equal(pixels(partial[0]), pixels(seen[-1]))
    fractions = [p for p, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(progress) >= 3


def test_cancel_stops_the_worker_and_run_computes_again(untouched) -> None:
    slow = Slow(0.02).eval()
    with untouched(slow):
        viz = FeatureVisualizer(slow, "relu", steps=5000, size=16)
        deadline = time.monotonic() + 60
        while viz.step < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert viz.busy and 2 <= viz.step < 5000
        viz._on_msg(viz, {"type": "cancel"}, [])  # the browser's cancel button
        assert viz.wait(10), "the worker stopped"
        assert not viz.busy and viz.step < 5000 and not viz._image["final"]
        assert viz._notice.startswith("cancelled at step ")
        seen = images_of(viz)
        viz.steps = 3  # a new request after a cancel computes normally
        assert viz.wait(30)
    assert seen[-1]["final"] and seen[-1]["step"] == 3 and viz._notice == ""
    viz.cancel()  # nothing running: nothing changes
    assert viz._notice == ""
    viz.steps = 5000
    assert viz.busy
    viz.close()  # closing stops the worker too
    assert viz.wait(10)


def test_cache_hit_shows_at_once_without_recomputing(model, monkeypatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append((args[1], args[2], kwargs["objective"], kwargs["steps"], kwargs["seed"]))
        return visualize_feature(*args, **kwargs)

    monkeypatch.setattr(fv_module, "visualize_feature", counting)
    viz = FeatureVisualizer(model, LAYER, 3, **SMALL)
    viz.wait(60)
    first = pixels(viz._image)
    viz.channel = 4
    viz.wait(60)
    assert len(calls) == 2
    seen = images_of(viz)
    viz.channel = 3  # cached: shown within the trait change, no job
    assert not viz.busy and seen and seen[-1]["final"] and seen[-1]["channel"] == 3
    np.testing.assert_array_equal(pixels(seen[-1]), first)
    viz.seed = 1  # a different option is another image
    viz.wait(60)
    viz.seed = 0
    assert not viz.busy
    viz.wait(60)
    assert calls == [(LAYER, 3, "channel", 8, 0), (LAYER, 4, "channel", 8, 0), (LAYER, 3, "channel", 8, 1)]
    np.testing.assert_array_equal(pixels(viz._image), first)


def test_same_seed_same_image(model) -> None:
    a = FeatureVisualizer(model, LAYER, 7, **SMALL)
    b = FeatureVisualizer(model, LAYER, 7, **SMALL)
    c = FeatureVisualizer(model, LAYER, 7, seed=1, **SMALL)
    for viz in (a, b, c):
        assert viz.wait(60)
    assert np.array_equal(pixels(a._image), pixels(b._image))
    assert not np.array_equal(pixels(a._image), pixels(c._image))
    direct = visualize_feature(model, LAYER, 7, **SMALL)
    np.testing.assert_array_equal(pixels(a._image), fv_module._to_bytes(direct).numpy())


def test_grid_mode_computes_every_channel_and_shares_the_cache(model, monkeypatch, untouched) -> None:
    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(args[2])
        return visualize_feature(*args, **kwargs)

    monkeypatch.setattr(fv_module, "visualize_feature", counting)
    with untouched(model):
        viz = FeatureVisualizer(model, "features.relu1", 2, steps=2, size=16)
        viz.wait(60)
        sent = sent_of(viz)
        viz.mode = "grid"
        assert viz.wait(120)
    assert viz.done == viz.channels == 16 and not viz.busy and viz.progress == 1.0
    assert sorted(calls) == list(range(16)), calls  # channel 2 once: single mode computed it, the grid reused it
    grid_id = viz._grid["id"]
    assert (viz._grid["count"], viz._grid["h"], viz._grid["w"], viz._grid["layer"]) == (16, 16, 16, "features.relu1")
    tiles: dict[int, np.ndarray] = {}
    for content, buffers in sent:
        assert content["type"] == "tiles" and content["grid"] == grid_id and len(buffers) == 1
        decoded = wire.decode({**content, "data": buffers[0]})
        assert decoded.shape == (len(content["channels"]), 16, 16, 3)
        if content["final"]:
            tiles.update(zip(content["channels"], decoded))
    assert sorted(tiles) == list(range(16))
    # a tile click opens the channel in single mode: from the cache, the very tile
    before = len(calls)
    with viz.hold_trait_notifications():
        viz.channel = 9
        viz.mode = "single"
    assert not viz.busy and len(calls) == before
    np.testing.assert_array_equal(pixels(viz._image), tiles[9])
    # switching back shows every tile at once; a view that renders later fetches them
    sent.clear()
    viz.mode = "grid"
    assert not viz.busy and viz.done == 16 and len(calls) == before
    assert sum(len(c["channels"]) for c, _ in sent if c["final"]) == 16
    sent.clear()
    viz._on_msg(viz, {"type": "fetch"}, [])
    assert sum(len(c["channels"]) for c, _ in sent) == 16
    # cancel in grid mode stops the tiles not done yet; run resumes them
    viz.steps = 400
    viz.cancel()
    assert viz.wait(30) and not viz.busy and viz.done < 16 and "tiles done" in viz._notice


def test_layer_change_keeps_the_channel_in_range(model) -> None:
    viz = FeatureVisualizer(model, LAYER, 40, steps=1, size=16)
    viz.layer = "features.relu1"  # 16 channels: 40 no longer exists
    assert (viz.channel, viz.channels) == (0, 16)
    viz.objective = "class"
    assert viz.channels == 5
    viz.wait(60)
    assert viz._image["objective"] == "class" and viz._image["layer"] == ""


class SoftmaxHead(nn.Module):
    """PReLU features and a softmax class head, as a face detector's (the scores are probabilities)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.PReLU(6)
        self.fc = nn.Linear(6, 2)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.act(self.conv(x))
        return f.mean(dim=(2, 3)), self.softmax(self.fc(f.mean(dim=(2, 3))))


@pytest.mark.parametrize("name", ["tuple_output", "dict_output", "xss_named", "inplace_zoo", "softmax", "fx"])
def test_odd_models(name: str, untouched) -> None:
    if name == "softmax":
        net: nn.Module = SoftmaxHead().eval()
        output: Any = 1
    elif name == "fx":
        net = torch.fx.symbolic_trace(archs.PlainCNN().eval())
        output = None
    else:
        net = archs.build(name)[0]
        output = {"tuple_output": 0, "dict_output": "logits"}.get(name)
    with untouched(net):
        viz = FeatureVisualizer(net, None, steps=2, size=16, output=output)
        viz.wait(60)
        if name == "inplace_zoo":
            # conv5 runs after torch.add(w, 1.0, out=w), which autograd refuses: a clear message in the
            # widget; conv4 returns before that op (the pass stops at the layer) and works
            assert viz.layer == "conv5" and "the model failed on an input of shape (1, 3, 16, 16)" in viz.error
            assert "automatic differentiation" in viz.error
            viz.layer = "conv4"
            viz.wait(60)
        assert viz.error == "", viz.error
        if name == "xss_named":
            viz.layer = f"blocks.{archs.XSS_NAME}"
            viz.wait(60)
            assert viz.error == "" and viz._image["layer"] == f"blocks.{archs.XSS_NAME}"
        if output is not None or name == "fx":
            viz.objective = "class"
            assert viz.wait(60) and viz.error == "" and viz._image["objective"] == "class"
        viz.mode = "grid"
        assert viz.wait(120) and viz.error == "" and viz.done == viz.channels


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_half_and_double_models(dtype: torch.dtype, untouched) -> None:
    net = archs.build("plain")[0].to(dtype)
    with untouched(net):
        viz = FeatureVisualizer(net, "relu2", 1, steps=2, size=16)
        assert viz.wait(60) and viz.error == "", viz.error
    assert viz.image is not None and viz.image.dtype == torch.float32


def test_class_objective_without_the_scores_says_to_pass_output() -> None:
    net = archs.build("tuple_output")[0]
    viz = FeatureVisualizer(net, "conv", steps=1, size=16)
    viz.wait(30)
    with pytest.raises(ValueError, match="(?s)objective='class' needs the class scores: .*output=0"):
        viz.objective = "class"
    with pytest.raises(ValueError, match="objective='class' needs the class scores"):
        FeatureVisualizer(net, "conv", steps=1, size=16, objective="class")


def test_errors_during_the_run_show_in_the_widget() -> None:
    """A failure in the worker (here: a model that breaks after the probe) is shown as text, not raised
    into a thread nobody watches; the widget stays usable."""
    net = archs.build("plain")[0]
    viz = FeatureVisualizer(net, "conv2", steps=2, size=16)
    viz.wait(30)
    original = net.conv2.forward
    net.conv2.forward = lambda x: (_ for _ in ()).throw(RuntimeError("weights went missing"))  # type: ignore[method-assign]
    try:
        viz.channel = 5
        assert viz.wait(30)
        assert "weights went missing" in viz.error and not viz.busy
    finally:
        net.conv2.forward = original  # type: ignore[method-assign]
    viz.channel = 6
    assert viz.wait(30) and viz.error == ""


def test_png_export_is_the_image_or_the_grid(model, tmp_path) -> None:
    """to_png writes what the canvas shows: the single image at its size, or the grid's tiles (grey
    where not computed) laid out as grid.js does, the chosen channel outlined; the record says how."""
    from PIL import Image

    from cnn_widgets import export

    viz = FeatureVisualizer(model, "features.relu1", 3, steps=2, size=16)
    viz.wait(60)
    record = viz.to_png(tmp_path / "single.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "single.png").convert("RGB")), pixels(viz._image))
    assert record["layer"] == "features.relu1"
    assert record["options"]["channel"] == 3 and record["options"]["steps"] == 2
    assert list(record["options"]["size"]) == [16, 16] and record["options"]["objective"] == "channel"
    viz.mode = "grid"
    viz.wait(120)
    picture = export.image(viz)
    layout = export.layout_grid(16, 16, 16, max_width=640, max_cell=72)
    assert picture.shape == (layout["height"], layout["width"], 3)
    x0, y0 = ((3 % layout["cols"]) * layout["cell"], (3 // layout["cols"]) * layout["cell"])
    assert tuple(picture[y0 + 1, x0 + 1]) == export.ACCENT  # channel 3 outlined
    tile = wire.decode(viz._image["tensor"])  # channel 3's image, shown before the grid
    f = layout["drawH"] // 16
    ox = x0 + ((layout["cell"] - layout["drawW"]) >> 1)
    oy = y0 + ((layout["cell"] - layout["drawH"]) >> 1)
    np.testing.assert_array_equal(picture[oy + 5 * f, ox + 7 * f], tile[5, 7])


def test_html_export_carries_the_grid_tiles(model, tmp_path) -> None:
    """save_html of a grid: the file answers the view's fetch with every finished tile (offline)."""
    viz = FeatureVisualizer(model, "features.relu1", 0, steps=2, size=16, mode="grid")
    record = viz.save_html(tmp_path / "grid.html")
    text = (tmp_path / "grid.html").read_text(encoding="utf-8")
    assert viz.done == 16 and record["layer"] == "features.relu1"
    assert '"fetch"' in text and '"tiles"' in text and "cnnw-feature-visualizer" in text
    parts = viz._export_html()
    (content, buffers), = parts[0]["replies"]["fetch"]
    assert content["channels"] == list(range(16)) and content["final"] and content["grid"] == viz._grid["id"]
    assert wire.decode({**content, "data": buffers[0]}).shape == (16, 16, 16, 3)
