"""Explorer: one selection through every part (layers mapped by execution order, channels to filters),
synced and linkable traits with clear errors, image switching that calls ``set_image`` on the
image-dependent parts only and reuses background predictions, and odd models left untouched."""

from __future__ import annotations

from collections import OrderedDict
import threading
from collections.abc import Iterator

import ipywidgets as W
import pytest
import torch
import torch.fx
from torch import nn

import archs
from cnn_widgets import METHODS, ActivationBrowser, zoo
from cnn_widgets.images import prepare
from cnn_widgets.widgets import WidgetValueError
from cnn_widgets.widgets.explorer import THUMB_SIZE, Explorer, ImageStrip, split_images
from cnn_widgets.wire import decode

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES = list(zoo.CLASSES)


def from_browser(widget: W.Widget, state: dict) -> None:
    """A state update as the browser sends it (through ipywidgets' own dispatch)."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                        "buffers": []})


@pytest.fixture(scope="module")
def shapes() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    images, labels, _ = zoo.shapes_dataset(4, seed=3)
    return zoo.load_shapesnet(), images, labels


@pytest.fixture
def ex(shapes) -> Iterator[Explorer]:
    model, images, labels = shapes
    explorer = Explorer(model, list(zip(images, labels)), labels=CLASSES)
    yield explorer
    explorer.wait(30)
    explorer.close()


def parts(ex: Explorer) -> tuple:
    return ex.layer, ex.summary.selected, ex.filters.layer, ex.activations.layer


# --- traits ---------------------------------------------------------------------------------------


def test_public_traits_are_synced_and_jslinkable(ex: Explorer) -> None:
    for name in ("layer", "channel", "image_index", "target", "method"):
        assert ex.trait_metadata(name, "sync"), name
    assert isinstance(ex, W.Box) and type(ex).__mro__[1].__name__ == "Panel"
    text, number = W.Text(), W.IntText()
    W.jslink((ex, "layer"), (text, "value"))  # refuses unsynced traits
    W.jslink((ex, "image_index"), (number, "value"))
    state = ex.get_state()
    assert state["layer"] == ex.layer and state["image_index"] == 0 and state["method"] == "grad_cam"
    seen = []
    ex.observe(lambda c: seen.append(c["new"]), "layer")
    text.value = "features.conv1"
    W.link((text, "value"), (ex, "layer"))
    text.value = "features.conv2"
    assert seen == ["features.conv1", "features.conv2"] and ex.filters.layer == "features.conv2"


def test_parts_start_on_the_cam_layer(ex: Explorer) -> None:
    # ShapesNet's CAM layer is the "features" block: the filters show its last conv, the activations
    # its last layer, and Grad-CAM runs on it
    assert parts(ex) == ("features", "features", "features.conv4", "features.relu4")
    assert ex.attribution.layer == "features"
    assert ex.attribution.method == ex.method == "grad_cam"
    assert (ex.summary, ex.filters, ex.activations, ex.attribution) == tuple(
        getattr(ex, n) for n in ("summary", "filters", "activations", "attribution")
    )


# --- one selection ---------------------------------------------------------------------------------


def test_a_summary_row_moves_every_part(ex: Explorer) -> None:
    from_browser(ex.summary, {"selected": "features.bn2"})
    assert parts(ex) == ("features.bn2", "features.bn2", "features.conv2", "features.bn2")
    assert ex.attribution.layer == "features.bn2"  # grad_cam takes a layer: the spatial layer itself
    from_browser(ex.summary, {"selected": "fc"})
    # no conv and no spatial output at fc: the nearest ones before it
    assert parts(ex) == ("fc", "fc", "features.conv4", "fc")
    assert ex.attribution.layer == "features"  # the last spatial output before fc (the block, its last layer)
    from_browser(ex.summary, {"selected": "features.pool1"})
    assert parts(ex) == ("features.pool1", "features.pool1", "features.conv1", "features.pool1")


def test_activation_slider_filter_select_and_attribution_layer_move_the_others(ex: Explorer) -> None:
    from_browser(ex.activations, {"layer": "features.relu3", "channel": -1})
    assert parts(ex) == ("features.relu3", "features.relu3", "features.conv3", "features.relu3")
    from_browser(ex.filters, {"layer": "features.conv2"})
    assert parts(ex) == ("features.conv2", "features.conv2", "features.conv2", "features.conv2")
    ex.attribution.layer = "features.conv3"  # the view's own layer menu
    assert parts(ex) == ("features.conv3", "features.conv3", "features.conv3", "features.conv3")


def test_layer_not_shown_by_the_activation_browser_goes_to_the_nearest_shown() -> None:
    model = archs.build("plain")[0]
    images = [archs._image(seed=s) for s in (0, 1)]
    with_subset = Explorer(model, images)
    try:
        shown = with_subset.activations.layers
        assert shown and with_subset.activation_layer_for(shown[0]) == shown[0]
        # a name the browser does not list maps to the nearest listed one at or before it
        for name in with_subset._positions:
            mapped = with_subset.activation_layer_for(name)
            assert mapped in shown
            if name not in shown and with_subset._positions[name] >= with_subset._positions[shown[0]]:
                assert with_subset._positions[mapped] <= with_subset._positions[name]
    finally:
        with_subset.wait(30)
        with_subset.close()


def test_channel_highlights_the_filter_and_back(ex: Explorer) -> None:
    ex.layer = "features.relu2"  # conv2 → bn2 → relu2: channel k is filter k of conv2
    ex.channel = 5
    assert (ex.activations.channel, ex.filters.selected) == (5, 5)
    from_browser(ex.activations, {"channel": 7})  # a click in the activation grid
    assert (ex.channel, ex.filters.selected) == (7, 7)
    from_browser(ex.filters, {"selected": 2})  # a click on a filter
    assert (ex.channel, ex.activations.channel) == (2, 2)
    from_browser(ex.filters, {"selected": -1})
    assert (ex.channel, ex.activations.channel) == (-1, -1)
    ex.layer = "fc"  # one output per class, filters of conv4: no correspondence, the filter grid is cleared
    ex.channel = 1
    assert (ex.activations.channel, ex.filters.selected) == (1, -1)
    from_browser(ex.filters, {"selected": 3})
    assert ex.channel == 1 and ex.filters.selected == 3  # the filter is highlighted on its own


def test_method_and_target_follow_both_ways(ex: Explorer) -> None:
    ex.layer = "features.relu3"
    assert ex.attribution.layer == "features.relu3"
    ex.method = "saliency"  # takes no layer: a layer change leaves the view's layer alone
    assert ex.attribution.method == "saliency" and not METHODS["saliency"].needs_layer
    ex.layer = "features.relu2"
    assert ex.attribution.layer == "features.relu3"
    ex.method = "grad_cam_pp"  # takes one: it gets the current layer
    assert ex.attribution.layer == "features.relu2"
    ex.attribution.method = "layer_cam"  # the view's own method menu
    assert ex.method == "layer_cam"
    ex.target = 2
    assert ex.attribution.target == 2
    ex.attribution.target = 4  # a prediction bar clicked
    assert ex.target == 4
    ex.target = None
    assert ex.attribution.target is None


def test_font_scale_reaches_every_part(ex: Explorer) -> None:
    ex.font_scale = 1.5
    assert {p.font_scale for p in (ex.summary, ex.filters, ex.activations, ex.attribution, ex.strip)} == {1.5}


# --- errors -----------------------------------------------------------------------------------------


def test_bad_trait_values_are_clear_errors(ex: Explorer) -> None:
    with pytest.raises(WidgetValueError, match=r"unknown layer 'features\.conv9' \(did you mean .*features\.conv"):
        ex.layer = "features.conv9"
    with pytest.raises(WidgetValueError, match=r"the layers of this model: 'features\.conv1', .*'fc'"):
        ex.layer = "zzz"
    with pytest.raises(WidgetValueError, match=r"image_index 4 is out of range: there are 4 images; use 0‥3"):
        ex.image_index = 4
    with pytest.raises(WidgetValueError, match="image_index must be an int"):
        ex.image_index = 1.0
    with pytest.raises(WidgetValueError, match="unknown method 'gradcam'.*grad_cam"):
        ex.method = "gradcam"
    n = len(CLASSES)
    with pytest.raises(WidgetValueError, match=rf"target {n} is out of range: the model has {n} classes"):
        ex.target = n
    ex.layer = "fc"
    with pytest.raises(WidgetValueError, match=rf"channel {n} is out of range: layer 'fc' shows {n} channels"):
        ex.channel = n
    with pytest.raises(WidgetValueError, match="channel must be an int"):
        ex.channel = True
    with pytest.raises(WidgetValueError, match="layer must be"):
        ex.layer = 3
    assert ex.layer == "fc" and ex.image_index == 0 and ex.method == "grad_cam"


def test_bad_arguments_name_the_image_and_the_argument(shapes) -> None:
    model, images, _ = shapes
    with pytest.raises(ValueError, match="images is an empty list"):
        Explorer(model, [])
    with pytest.raises(ValueError, match=r"images\[1\]: the model's first convolution expects 3 input channels"):
        Explorer(model, [images[0], torch.rand(1, 64, 64)])
    with pytest.raises(TypeError, match=r"images\[0\]: expected an image"):
        Explorer(model, ["a", "b"][:0] + [object(), images[0]])
    with pytest.raises(ValueError, match=rf"true label of image 1 is 9, but the model has {len(CLASSES)} classes"):
        Explorer(model, [(images[0], 0), (images[1], 9)])
    with pytest.raises(ValueError, match="got 1 true_labels for 2 images"):
        Explorer(model, images[:2], true_labels=[0])
    with pytest.raises(ValueError, match=f"got 2 labels but the model has {len(CLASSES)} classes"):
        Explorer(model, images[:2], labels=["a", "b"])
    with pytest.raises(ValueError, match="unknown method"):
        Explorer(model, images[:2], method="nope")
    with pytest.raises(ValueError, match="image_index 2 is out of range"):
        Explorer(model, images[:2], image_index=2)


def test_a_failing_model_is_a_clear_error_not_a_torch_one(untouched) -> None:
    model = archs.Exploding().eval()
    with untouched(model), pytest.raises(ValueError) as err:
        Explorer(model, archs._image(h=16, w=16))
    assert "boom mid-forward" in str(err.value) and not isinstance(err.value, RuntimeError)


# --- images ------------------------------------------------------------------------------------------


def test_image_forms_and_true_labels() -> None:
    x = torch.rand(3, 3, 8, 8)
    assert [tuple(i.shape) for i in split_images(x)[0]] == [(3, 8, 8)] * 3
    assert split_images(x[0])[1] == [None]
    items, truths = split_images([(x[0], 2), (x[1], torch.tensor(1)), x[2]])
    assert len(items) == 3 and truths[0] == 2 and int(truths[1]) == 1 and truths[2] is None
    with pytest.raises(ValueError, match="empty batch"):
        split_images(torch.rand(0, 3, 8, 8))


def test_strip_shows_thumbnails_true_and_predicted_labels(shapes, ex: Explorer) -> None:
    model, images, labels = shapes
    assert ex.wait(60)
    with torch.no_grad():
        predicted = model(images).argmax(1).tolist()
    assert ex.strip._captions == [
        {"truth": CLASSES[t], "predicted": CLASSES[p]} for t, p in zip(labels.tolist(), predicted)
    ]
    for msg, image in zip(ex.strip._thumbs, images):
        thumb = decode(msg)
        assert thumb.shape == (64, 64, 3) and thumb.dtype.name == "uint8" and max(thumb.shape) <= THUMB_SIZE
        assert (thumb == prepare(image)[1]).all()  # a 64² image is sent as it is
    big = ImageStrip([torch.zeros(200, 100, 3, dtype=torch.uint8).numpy()], [{}])
    assert list(decode(big._thumbs[0]).shape) == [64, 32, 3]
    with pytest.raises(WidgetValueError, match="image_index 1 is out of range"):
        big.index = 1


def test_switching_images_recomputes_only_what_depends_on_the_image(shapes, monkeypatch, untouched) -> None:
    model, images, labels = shapes
    calls: dict[str, int] = {}

    def count(obj, name):
        original = getattr(obj, name)

        def wrapped(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, name, wrapped)

    predicted: list[int] = []
    original_predict = Explorer._predict
    monkeypatch.setattr(Explorer, "_predict", lambda self, i, p: predicted.append(i) or original_predict(self, i, p))
    before = untouched.snapshot(model)
    ex = Explorer(model, images[:3], labels=CLASSES)
    try:
        assert ex.wait(60)
        assert predicted[0] == 1 and sorted(predicted) == [1, 2], "the next image first; the shown one is not run"
        count(ex.activations, "set_image")
        count(ex.attribution, "set_image")
        changes: list[str] = []
        ex.summary.observe(lambda c: changes.append(c["name"]), names=["_summary", "selected"])
        ex.filters.observe(lambda c: changes.append(c["name"]), names=["_weights", "layer"])
        ex.layer, ex.channel = "features.relu2", 4
        changes.clear()
        predicted.clear()
        from_browser(ex.strip, {"index": 2})  # a thumbnail clicked
        assert ex.image_index == 2 and ex.strip.index == 2
        assert calls == {"set_image": 2}  # one each on the two parts that show the image
        assert changes == [], "the summary and the filters do not depend on the image"
        assert (ex.layer, ex.activations.layer, ex.channel, ex.filters.selected) == ("features.relu2",) * 2 + (4, 4)
        assert ex.wait(60) and predicted == [], "every prediction was known: nothing recomputed"
        assert torch.equal(ex.attribution._input, prepare(images[2])[0][0])
        ex.image_index = 0  # from Python
        assert ex.strip.index == 0 and calls == {"set_image": 4}
        assert ex.wait(60)
        untouched.check(model, before)
    finally:
        ex.wait(30)
        ex.close()


def test_the_next_images_activations_are_prefetched(shapes, monkeypatch) -> None:
    """After display settles, moving to the next image shows activations computed in the background
    (no forward pass on the kernel's thread), equal to computing them afresh; a weight change since
    the prefetch makes set_image compute them again."""
    from cnn_widgets.widgets import activation_browser as ab

    model, images, labels = shapes
    ex = Explorer(model, images[:3], labels=CLASSES)
    try:
        assert ex.wait(60)
        fresh = ActivationBrowser(model, images[1], layer=ex.activations.layer)
        forwards: list[str] = []
        original = ab.input_dependent_activations
        monkeypatch.setattr(ab, "input_dependent_activations",
                            lambda *a: forwards.append(threading.current_thread().name) or original(*a))
        ex.image_index = 1
        assert forwards == [], "image 1's activations were ready"
        assert ex.activations._meta["layers"] == fresh._meta["layers"]
        assert ex.wait(60)  # image 2's activations prefetched in the worker
        assert forwards and all(name != threading.main_thread().name for name in forwards)
        forwards.clear()
        with torch.no_grad():
            twin_weight = model.features.conv1.weight.clone()
            model.features.conv1.weight.mul_(1.0)  # an in-place write: the weights' version moves
        ex.image_index = 2
        assert forwards == [threading.main_thread().name], "stale prefetched activations are not used"
        assert torch.equal(model.features.conv1.weight, twin_weight)
    finally:
        ex.wait(30)
        ex.close()


# --- odd models ------------------------------------------------------------------------------------


def _softmax_head() -> nn.Module:
    return nn.Sequential(archs.PlainCNN(), nn.Softmax(dim=1)).eval()


def _fx_graph() -> nn.Module:
    return torch.fx.symbolic_trace(archs.PlainCNN().eval())


def _xss_named() -> nn.Module:
    return nn.Sequential(OrderedDict([
        (archs.XSS_NAME, nn.Conv2d(3, 4, 3, padding=1)), ("relu", nn.ReLU()), ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(4, 3)),
    ])).eval()


ODD = {
    "tuple_output": (lambda: archs.build("tuple_output")[0], 0),
    "dict_output": (lambda: archs.build("dict_output")[0], "logits"),
    "softmax_head": (_softmax_head, None),
    "fx_graph": (_fx_graph, None),
    "nested": (lambda: archs.build("nested")[0], lambda out: out.amax(dim=(2, 3))),  # a dense class map
    "xss_named": (_xss_named, None),
}


@pytest.mark.parametrize("name", list(ODD))
def test_odd_models_work_and_stay_untouched(name: str, untouched) -> None:
    torch.manual_seed(0)
    build, output = ODD[name]
    model = build()
    images = [(archs._image(h=24, w=24, seed=s), s % 2) for s in range(3)]
    with untouched(model):
        ex = Explorer(model, images, output=output)
        try:
            assert ex.wait(60)
            assert all(c["predicted"] is not None for c in ex.strip._captions), ex.strip._captions
            for row in ex.summary.rows:  # every layer: the parts follow without an error
                ex.layer = row.name
                assert ex.activations.layer in ex.activations.layers
            ex.image_index = 2
            ex.method = "saliency"
            ex.method = "grad_cam"
            assert ex.wait(60)
            assert ex.attribution.error == "" and ex.attribution.result is not None, ex.attribution.error
        finally:
            ex.wait(30)
            ex.close()


def test_xss_names_travel_as_plain_strings() -> None:
    model = _xss_named()
    ex = Explorer(model, [(archs._image(h=16, w=16), 1)], labels=["a", archs.XSS_NAME, "c"])
    try:
        ex.layer = archs.XSS_NAME
        assert ex.filters.layer == archs.XSS_NAME and ex.summary.selected == archs.XSS_NAME
        assert ex.strip._captions[0]["truth"] == archs.XSS_NAME  # the strip renders it with textContent
    finally:
        ex.wait(30)
        ex.close()


# --- the dataset tab ---------------------------------------------------------------------------------


def test_dataset_tab_is_built_when_opened_and_follows_layer_and_channel(shapes) -> None:
    model, images, labels = shapes
    data_x, data_y, _ = zoo.shapes_dataset(10, seed=5)
    ex = Explorer(model, list(zip(images, labels)), labels=CLASSES, data=(data_x, data_y))
    try:
        assert ex.tabs is not None and ex.tabs.titles == ("image", "dataset") and ex.children == (ex.tabs,)
        assert (ex.top_activations, ex.channel_importance, ex.class_heatmaps) == (None, None, None)
        ex.layer = "features.relu2"  # the hidden tab is not built by a layer change
        assert ex.top_activations is None
        from_browser(ex.tabs, {"selected_index": 1})  # the tab clicked
        views = (ex.top_activations, ex.channel_importance, ex.class_heatmaps)
        assert all(v is not None for v in views) and list(ex.tabs.children[1].children) == list(views)
        assert ex.top_activations.layer == ex.channel_importance.layer == "features.relu2"
        assert ex.wait(120)
        assert ex.top_activations.error == ex.channel_importance.error == ex.class_heatmaps.error == ""
        ex.channel = 3
        assert ex.top_activations.channel == ex.channel_importance.channel == 3
        ex.top_activations.channel = 6  # a patch row picked in the dataset view
        assert (ex.channel, ex.activations.channel, ex.filters.selected, ex.channel_importance.channel) == (6,) * 4
        ex.channel_importance.layer = "features.relu3"  # the dataset view's own layer
        assert parts(ex) == ("features.relu3", "features.relu3", "features.conv3", "features.relu3")
        assert ex.top_activations.layer == "features.relu3"
        ex.layer = "fc"  # no map at fc: the nearest spatial layer before it
        assert ex.top_activations.layer == ex.dataset_layer_for("fc") == "features"
        from_browser(ex.tabs, {"selected_index": 0})
        ex.layer = "features.relu1"  # hidden: no scan for a layer passed on the way
        assert ex.top_activations.layer == "features"
        from_browser(ex.tabs, {"selected_index": 1})
        assert ex.top_activations.layer == ex.channel_importance.layer == "features.relu1"
    finally:
        ex.wait(120)
        ex.close()


def test_dataset_views_follow_the_channel_through_a_pooling_layer(shapes) -> None:
    """At ``pool`` (a 1×1 map) the dataset views show the last conv block, whose channel k is pool's
    channel k: the channel goes both ways (it stayed at 0 / -1 there)."""
    model, images, labels = shapes
    data_x, data_y, _ = zoo.shapes_dataset(8, seed=5)
    ex = Explorer(model, list(zip(images, labels)), data=(data_x, data_y), layer="pool")
    try:
        from_browser(ex.tabs, {"selected_index": 1})
        assert ex.activations.layer == "pool" and ex.top_activations.layer != "pool"
        ex.channel = 23
        assert ex.top_activations.channel == ex.channel_importance.channel == 23
        assert ex.wait(120)
        ex.top_activations.channel = 7  # a patch row picked in the dataset view
        assert (ex.channel, ex.activations.channel) == (7, 7)
    finally:
        ex.wait(120)
        ex.close()


def test_dataset_tab_on_a_dict_output_model_passes_output_to_every_view(untouched) -> None:
    """``output=`` reaches the dataset views that explain predictions (ChannelImportance once lacked it
    and failed on a model whose class scores are a dict entry)."""
    model, x = archs.build("dict_output")
    data = [(x[0] * (0.5 + i / 20), i % 3) for i in range(9)]
    ex = Explorer(model, [d[0] for d in data[:2]], output="logits", data=data)
    try:
        with untouched(model):
            from_browser(ex.tabs, {"selected_index": 1})
            assert ex.wait(120)
            views = (ex.top_activations, ex.channel_importance, ex.class_heatmaps)
            assert [v.error for v in views] == ["", "", ""]
            assert ex.channel_importance.importance is not None
    finally:
        ex.wait(120)
        ex.close()


class Blocks(nn.Module):
    """Two conv blocks in Sequential containers, then a squeeze-excitation and a head: traced by fx, the
    graph calls every leaf itself and the containers never run."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 8), nn.Sigmoid())
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        x = x * self.se(x)[:, :, None, None]
        return self.fc(x.mean((2, 3)))


def test_on_an_fx_graph_a_non_spatial_layer_gets_a_cam_layer_that_runs(untouched) -> None:
    torch.manual_seed(0)
    model = torch.fx.symbolic_trace(Blocks().eval())
    ex = Explorer(model, [torch.rand(3, 16, 16)])
    try:
        with untouched(model):
            for layer in ("se.2", "fc"):  # no map there: the nearest spatial layer before, a leaf that ran
                ex.layer = layer
                assert ex.wait(60)
                assert ex.attribution.layer == "body.1" and ex.attribution.error == "", (layer, ex.attribution.error)
    finally:
        ex.wait(60)
        ex.close()


def test_dataset_argument_is_checked_at_construction(shapes) -> None:
    model, images, _ = shapes
    with pytest.raises(TypeError, match="data must be a Dataset"):
        Explorer(model, images[:1], data=3)
    with pytest.raises(TypeError, match="data: its first image cannot be read: expected an image.*got int"):
        Explorer(model, images[:1], data=[1, 2, 3])
    with pytest.raises(TypeError, match="a generator can be read only once"):
        Explorer(model, images[:1], data=(image for image in images))
    with pytest.raises(ValueError, match="data is empty"):
        Explorer(model, images[:1], data=[])
    with pytest.raises(ValueError, match=r"Explorer needs a model with at least one nn\.Conv2d"):
        Explorer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 5)), images[:1])
    plain = Explorer(model, images[:1])
    try:
        assert plain.tabs is None and isinstance(plain.children[0], ImageStrip)
    finally:
        plain.wait(30)
        plain.close()
