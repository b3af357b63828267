"""FilterGrid and ActivationBrowser: traits, payloads, eager/lazy transport, conv variants, bad input."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import threading

import numpy as np
import pytest
import torch
from torch import nn
from traitlets import TraitError

from cnn_widgets import ActivationBrowser, FilterGrid, capture_activations, wire
from cnn_widgets.widgets import WidgetValueError
from cnn_widgets.widgets._common import bundle
from cnn_widgets.zoo.resnet import resnet18_like

ROOT = pathlib.Path(__file__).resolve().parents[1]


def seeded(module: type[nn.Module], *args, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return module(*args, **kwargs).eval()


class SmallCNN(nn.Module):
    """conv(3→8) → BN → ReLU → pool → conv(8→16) → ReLU → GAP → flatten → linear(16→5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn(self.conv1(x))))
        x = self.relu2(self.conv2(x))
        return self.fc(self.flatten(self.gap(x)))


class ConvZoo(nn.Module):
    """Every conv flavour FilterGrid must draw: RGB stem, 1×1, depthwise, grouped, 5×5, dilated."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.point = nn.Conv2d(12, 16, 1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.grouped = nn.Conv2d(16, 8, 3, padding=1, groups=4)
        self.big = nn.Conv2d(8, 6, 5, padding=2)
        self.dilated = nn.Conv2d(6, 4, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.children():
            x = m(x)
        return x


class TupleOut(SmallCNN):
    def forward(self, x: torch.Tensor):  # type: ignore[override]
        y = super().forward(x)
        return y, y.softmax(-1)


class DictOut(SmallCNN):
    def forward(self, x: torch.Tensor):  # type: ignore[override]
        return {"logits": super().forward(x)}


class NoConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)[:, :4])


class Ranks(nn.Module):
    """Outputs of rank 3 (N,C,L) and 5 (N,C,D,H,W) besides the usual ones."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.seq = nn.Conv1d(4, 5, 3, padding=1)
        self.vol = nn.Conv3d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        s = self.seq(y.flatten(2))
        v = self.vol(y[:, None])
        return s.mean() + v.mean()


def image(h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
        ),
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["training"] == b["training"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["hooks"] == b["hooks"] == 0
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k


def sent(widget) -> list[tuple[dict, list]]:
    """Replace ``widget.send`` by a recorder; return the list it fills."""
    out: list[tuple[dict, list]] = []
    widget.send = lambda content, buffers=None: out.append((content, list(buffers or [])))
    return out


# ---------------------------------------------------------------------------------------------- FilterGrid


def test_filter_grid_defaults_and_payload():
    model = seeded(SmallCNN)
    g = FilterGrid(model)
    assert g.layers == ["conv1", "conv2"]
    assert g.layer == "conv1"
    assert (g.input_channel, g.normalize, g.selected, g.colormap) == (-1, "filter", -1, "RdBu_r")
    w = g._weights
    assert w["layer"] == "conv1"
    assert w["tensor"]["shape"] == [8, 3, 3, 3]
    assert w["tensor"]["dtype"] == "uint8"
    # one byte per weight, plus a float32 min and max per filter
    assert wire.nbytes(w["tensor"]) == model.conv1.weight.numel() + 8 * 8
    decoded = wire.decode(w["tensor"])
    lo, hi = wire.extrema(w["tensor"])
    scale = ((hi - lo) / 255)[:, None, None, None]
    assert np.all(np.abs(decoded - model.conv1.weight.detach().numpy()) <= scale / 2 + 1e-6)
    assert w["info"]["kernel_size"] == [3, 3] and w["info"]["groups"] == 1


def test_filter_grid_only_a_new_layer_sends_weights():
    g = FilterGrid(seeded(SmallCNN))
    changes = []
    g.observe(lambda c: changes.append(c["name"]), names=["_weights"])
    g.input_channel = 2
    g.normalize = "layer"
    g.colormap = "viridis"
    g.selected = 7
    assert changes == []
    g.layer = "conv2"
    assert changes == ["_weights"]
    assert g._weights["layer"] == "conv2"
    assert g._weights["tensor"]["shape"] == [16, 8, 3, 3]
    assert g.input_channel == 2 and g.selected == 7  # still valid for conv2: kept


def test_filter_grid_resets_indices_the_new_layer_lacks():
    g = FilterGrid(seeded(SmallCNN), layer="conv2", input_channel=7)
    g.selected = 15
    g.layer = "conv1"
    assert g.input_channel == -1  # conv1 filters have 3 input channels
    assert g.selected == -1  # conv1 has 8 filters


@pytest.mark.parametrize(
    "layer, shape, groups, dilation",
    [
        ("stem", [12, 3, 3, 3], 1, [1, 1]),
        ("point", [16, 12, 1, 1], 1, [1, 1]),
        ("depthwise", [16, 1, 3, 3], 16, [1, 1]),
        ("grouped", [8, 4, 3, 3], 4, [1, 1]),
        ("big", [6, 8, 5, 5], 1, [1, 1]),
        ("dilated", [4, 6, 3, 3], 1, [2, 2]),
    ],
)
def test_filter_grid_conv_variants(layer, shape, groups, dilation):
    model = seeded(ConvZoo)
    g = FilterGrid(model, layer)
    t = g._weights["tensor"]
    assert t["shape"] == shape
    assert wire.nbytes(t) == 8 * shape[0] + int(np.prod(shape))
    assert g._weights["info"]["groups"] == groups
    assert g._weights["info"]["dilation"] == dilation
    # input_channel indexes each filter's own input channels (within its group)
    g.input_channel = shape[1] - 1
    with pytest.raises(ValueError, match="input_channel"):
        g.input_channel = shape[1]


def test_filter_grid_rgb_layer():
    g = FilterGrid(seeded(ConvZoo))
    # a layer whose filters have exactly 3 input channels is drawn as RGB when input_channel == -1
    assert g.layer == "stem" and g._weights["tensor"]["shape"][1] == 3 and g.input_channel == -1
    g.input_channel = 1  # one channel of each filter, through the colormap
    assert g.input_channel == 1


def test_filter_grid_bad_input():
    with pytest.raises(TypeError, match="nn.Module"):
        FilterGrid({"conv1.weight": torch.zeros(1)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one nn.Conv2d"):
        FilterGrid(NoConv())
    with pytest.raises(ValueError, match=r"unknown conv layer 'conv'.*'conv1'"):
        FilterGrid(seeded(SmallCNN), "conv")
    g = FilterGrid(seeded(SmallCNN))
    with pytest.raises(ValueError, match="did you mean 'conv2'"):
        g.layer = "conv_2"
    with pytest.raises(TraitError):
        g.normalize = "global"
    with pytest.raises(ValueError, match="selected 8 is out of range.*8 filters"):
        g.selected = 8
    with pytest.raises(ValueError, match="viridis"):
        g.colormap = "virdis"
    assert g.layer == "conv1" and g.selected == -1 and g.colormap == "RdBu_r"


def test_filter_grid_scale_is_the_trait_and_normalize_its_old_name():
    g = FilterGrid(seeded(SmallCNN), scale="layer")
    assert (g.scale, g.normalize) == ("layer", "layer")
    assert "scale" in g.keys and "normalize" not in g.keys  # one synced trait; the alias stays in Python
    g.normalize = "filter"
    assert g.scale == "filter"
    g.scale = "layer"
    assert g.normalize == "layer"
    from_browser(g, {"method": "update", "state": {"scale": "filter"}, "buffer_paths": []})
    assert (g.scale, g.normalize) == ("filter", "filter")
    old = FilterGrid(seeded(SmallCNN), normalize="layer")
    assert (old.scale, old.normalize) == ("layer", "layer")
    assert FilterGrid(seeded(SmallCNN), scale="layer", normalize="layer").scale == "layer"
    with pytest.raises(ValueError, match="normalize is the old name of scale"):
        FilterGrid(seeded(SmallCNN), scale="layer", normalize="filter")
    with pytest.raises(TraitError):
        g.scale = "global"
    assert g.scale == "filter"


def test_filter_grid_leaves_model_untouched():
    model = seeded(SmallCNN).train()
    before = snapshot(model)
    FilterGrid(model).layer = "conv2"
    assert_same(before, snapshot(model))


# ------------------------------------------------------------------------------------- ActivationBrowser


def test_browser_defaults_and_layers():
    model = seeded(SmallCNN)
    b = ActivationBrowser(model, image())
    assert b.layers == ["conv1", "bn", "relu", "pool", "conv2", "relu2", "gap", "flatten", "fc"]
    assert b.layer == "conv1"
    assert (b.channel, b.scale, b.sort, b.colormap, b.budget_mb) == (-1, "channel", "index", "viridis", 32.0)
    assert b._mode == "eager"
    assert set(b._data) == set(b.layers)
    img = b._image
    assert img["shape"] == [16, 16, 3] and img["kind"] == "exact"
    meta = {m["name"]: m for m in b._meta["layers"]}
    assert meta["conv1"]["shape"] == [8, 16, 16] and meta["conv1"]["kind"] == "grid"
    assert meta["pool"]["shape"] == [8, 8, 8]
    assert meta["fc"]["shape"] == [5, 1, 1] and meta["fc"]["kind"] == "vector"
    assert meta["flatten"]["source_shape"] == [16]
    lo, hi = b._meta["global"]
    assert lo == min(m["min"] for m in meta.values()) and hi == max(m["max"] for m in meta.values())


def test_browser_payload_is_one_byte_per_element_plus_small_header():
    model = resnet18_like().eval()
    b = ActivationBrowser(model, torch.rand(3, 224, 224))
    elements = 0
    headers = 0
    for m in b._meta["layers"]:
        enc = b._data[m["name"]]
        n = int(np.prod(m["shape"]))
        elements += n
        slices = enc["shape"][0]
        assert slices == (1 if m["kind"] == "vector" else m["shape"][0])
        assert wire.nbytes(enc) == n + 8 * slices  # one byte per element, a float32 min and max per slice
        header = len(json.dumps({k: v for k, v in enc.items() if k != "data"}))
        headers += header
        assert header <= 100, m["name"]  # nothing per channel or per element in the JSON
    assert b.total_bytes() == sum(wire.nbytes(e) for e in b._data.values()) + headers
    # 60 layers, 7.5 M elements: min/max and headers add about 2 %; a JSON list of floats is ~20 B/element
    assert b.total_bytes() <= 1.03 * elements


def test_browser_values_round_trip_within_codec_bound():
    model = seeded(SmallCNN)
    x = image(seed=3)
    b = ActivationBrowser(model, x)
    acts = capture_activations(model, x[None])
    for name in ("conv1", "bn", "fc"):
        enc = b._data[name]
        got = wire.decode(enc).reshape(-1)
        want = acts[name][0].reshape(-1).numpy()
        lo, hi = wire.extrema(enc)
        assert np.max(np.abs(got - want)) <= max(hi - lo) / 255 / 2 + 1e-5


def test_browser_eager_lazy_switch_at_budget():
    b = ActivationBrowser(seeded(SmallCNN), image())
    total = b.total_bytes()
    b.budget_mb = total / 2**20  # exactly fits
    assert b._mode == "eager" and set(b._data) == set(b.layers)
    b.budget_mb = (total - 1) / 2**20
    assert b._mode == "lazy" and b._data == {}
    b.budget_mb = 32
    assert b._mode == "eager" and len(b._data) == len(b.layers)
    lazy = ActivationBrowser(seeded(SmallCNN), image(), budget_mb=0.001)
    assert lazy._mode == "lazy" and lazy._data == {}


def from_browser(widget, data: dict, buffers: list | None = None) -> None:
    """Deliver a comm message as the browser would (through ipywidgets' own dispatch)."""
    widget._handle_msg({"content": {"data": data}, "buffers": buffers or []})


def fetch(widget, layers, version=None) -> None:
    version = widget._meta["version"] if version is None else version
    from_browser(widget, {"method": "custom", "content": {"type": "fetch", "layers": layers, "version": version}})


def test_browser_lazy_fetch_messages():
    b = ActivationBrowser(seeded(SmallCNN), image(), budget_mb=0.001)
    out = sent(b)
    v = b._meta["version"]
    fetch(b, ["pool", "conv2"])
    assert [c["name"] for c, _ in out] == ["pool", "conv2"]
    for content, buffers in out:
        assert content["type"] == "layer" and content["version"] == v
        assert len(buffers) == 1
        enc = b._layers.encoded[content["name"]]
        assert bytes(buffers[0]) == bytes(enc["data"])
        assert content["shape"] == enc["shape"] and content["kind"] == enc["kind"] == "quantized"
        decoded = wire.decode({**content, "data": buffers[0]})
        assert decoded.shape == tuple(enc["shape"])
    assert len(bytes(out[0][1][0])) == 8 * 8 + 8 * 8 * 8
    out.clear()
    fetch(b, ["pol"])
    assert out[0][0]["type"] == "error" and "did you mean 'pool'" in out[0][0]["message"]
    out.clear()
    fetch(b, ["pool"], version=v - 1)  # asked before set_image(): ignored
    from_browser(b, {"method": "custom", "content": {"type": "something else"}})
    from_browser(b, {"method": "custom", "content": ["not", "a", "dict"]})
    assert out == []


def test_browser_state_from_the_page_reaches_python():
    b = ActivationBrowser(seeded(SmallCNN), image())
    from_browser(b, {"method": "update", "state": {"layer": "conv2", "channel": 9}, "buffer_paths": []})
    assert (b.layer, b.channel) == ("conv2", 9)
    from_browser(b, {"method": "update", "state": {"layer": "pool", "channel": -1}, "buffer_paths": []})
    assert (b.layer, b.channel) == ("pool", -1)
    g = FilterGrid(seeded(SmallCNN))
    from_browser(g, {"method": "update", "state": {"selected": 5}, "buffer_paths": []})
    assert g.selected == 5


def test_browser_slider_state_needs_no_data_from_the_kernel():
    b = ActivationBrowser(seeded(SmallCNN), image())
    out = sent(b)
    changes = []
    b.observe(lambda c: changes.append(c["name"]), names=["_data", "_meta", "_image", "_mode"])
    for name in b.layers:
        b.layer = name
    b.scale = "global"
    b.sort = "max"
    b.colormap = "magma"
    assert out == [] and changes == []


def test_browser_channel_validation_and_reset():
    b = ActivationBrowser(seeded(SmallCNN), image(), layer="conv2")
    b.channel = 15
    with pytest.raises(ValueError, match=r"channel 16 is out of range.*16 channels"):
        b.channel = 16
    with pytest.raises(TraitError):
        b.channel = -2
    b.layer = "conv1"  # 8 channels: 15 no longer exists
    assert b.channel == -1
    b.channel = 3
    b.layer = "relu"
    assert b.channel == 3


def test_browser_bad_trait_values():
    b = ActivationBrowser(seeded(SmallCNN), image())
    with pytest.raises(TraitError, match="scale"):
        b.scale = "log"
    with pytest.raises(TraitError, match="sort"):
        b.sort = "median"
    with pytest.raises(WidgetValueError, match="did you mean 'magma'"):
        b.colormap = "magam"
    with pytest.raises(ValueError, match="budget_mb"):
        b.budget_mb = 0
    with pytest.raises(ValueError, match="opacity"):
        b.opacity = 1.5
    with pytest.raises(ValueError, match="did you mean 'conv2', 'conv1'"):
        b.layer = "conv"
    assert (b.scale, b.sort, b.colormap, b.layer) == ("channel", "index", "viridis", "conv1")


@pytest.mark.parametrize(
    "bad, error, pattern",
    [
        (torch.rand(1, 16, 16), ValueError, "expects 3 input channels, but the image has 1"),
        (torch.rand(1, 1, 3, 16, 16), ValueError, "rank"),
        (torch.rand(3, 0, 16), ValueError, "empty"),
        (torch.zeros(3, 16, 16, dtype=torch.bool), TypeError, "numeric"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "numeric"),
        (torch.full((3, 16, 16), float("nan")), ValueError, "NaN"),
        (torch.tensor([[[float("inf")]]]).expand(3, 4, 4), ValueError, "infinite"),
        ("/no/such/image.png", FileNotFoundError, "does not exist"),
        (torch.rand(2, 3, 16, 16), ValueError, "one image"),
    ],
)
def test_browser_bad_images(bad, error, pattern):
    model = seeded(SmallCNN)
    before = snapshot(model)
    with pytest.raises(error, match=pattern):
        ActivationBrowser(model, bad)
    assert_same(before, snapshot(model))


def test_browser_bad_model_and_layers():
    with pytest.raises(TypeError, match="nn.Module"):
        ActivationBrowser(lambda x: x, image())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown layer 'conv3'; did you mean .*'conv1'"):
        ActivationBrowser(seeded(SmallCNN), image(), layers=["conv1", "conv3"])
    with pytest.raises(ValueError, match="did you mean"):
        ActivationBrowser(seeded(SmallCNN), image(), layer="cnv1")


def test_browser_model_that_fails_on_the_input_gets_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 14 * 14, 3))
    with pytest.raises(ValueError, match=r"model failed on an input of shape \(1, 3, 20, 20\)"):
        ActivationBrowser(model, image(20, 20))


@pytest.mark.parametrize("cls", [TupleOut, DictOut])
def test_browser_models_returning_tuple_or_dict(cls):
    b = ActivationBrowser(seeded(cls), image())
    assert "fc" in b.layers and b._mode == "eager"


def test_browser_explicit_layers_and_other_ranks():
    b = ActivationBrowser(seeded(Ranks), image(8, 8))
    meta = {m["name"]: m for m in b._meta["layers"]}
    assert meta["conv"]["shape"] == [4, 8, 8]
    assert meta["seq"]["shape"] == [5, 1, 64]  # (C, L) sequence: one-row tiles
    assert meta["vol"]["shape"] == [2, 4 * 8, 8]  # (C, D, H, W): depth folded into rows
    sub = ActivationBrowser(seeded(SmallCNN), image(), layers=["conv2", "fc"])
    assert sub.layers == ["conv2", "fc"] and sub.layer == "conv2"


def test_browser_grey_and_nonsquare_images_with_normalisation():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    b = ActivationBrowser(model, np.random.default_rng(0).random((12, 20)), mean=0.5, std=0.25)
    assert b._image["shape"] == [12, 20, 3]
    assert b._meta["layers"][0]["shape"] == [2, 10, 18]


def test_browser_set_image_bumps_version_and_keeps_layer():
    model = seeded(SmallCNN)
    b = ActivationBrowser(model, image(seed=1), layer="conv2")
    v = b._meta["version"]
    old = bytes(b._data["conv2"]["data"])
    b.channel = 4
    b.set_image(image(seed=2))
    assert b._meta["version"] == v + 1
    assert b.layer == "conv2" and b.channel == -1
    assert bytes(b._data["conv2"]["data"]) != old


def test_widgets_leave_model_untouched_and_hookless():
    model = seeded(SmallCNN).train()  # BatchNorm in train mode must not update its running stats
    model.conv1.weight.requires_grad_(False)
    before = snapshot(model)
    ActivationBrowser(model, image())
    FilterGrid(model)
    assert_same(before, snapshot(model))
    assert model.training


def test_a_bare_conv_is_a_model_too():
    conv = seeded(nn.Conv2d, 3, 4, 3)
    g = FilterGrid(conv)
    assert g.layers == [""] and g._weights["tensor"]["shape"] == [4, 3, 3, 3]
    b = ActivationBrowser(conv, image())
    assert b.layers == [""] and b._meta["layers"][0]["shape"] == [4, 14, 14]


def test_layer_names_reach_the_page_as_data_only():
    model = nn.Sequential()
    model.add_module("<img src=x onerror=pwned=1>", nn.Conv2d(3, 2, 3))
    b = ActivationBrowser(model, image())
    g = FilterGrid(model)
    assert b.layers == ["<img src=x onerror=pwned=1>"] and g.layer == b.layer
    for path in (ROOT / "js" / "src").rglob("*.js"):
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", path.read_text()), path


class ShapeOf(nn.Module):
    """``x.shape`` as an int64 tensor (ONNX Shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._shape_as_tensor(x)


class Cast(nn.Module):
    """ONNX Cast to float: float output, but of a shape, not of the input's values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32)


class Constant(nn.Module):
    """An input-independent constant (ONNX Constant)."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value)

    def forward(self) -> torch.Tensor:
        return self.value.clone()


class Slice(nn.Module):
    """``x[:n]`` (ONNX Slice/Gather on a shape)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[: self.n]


class Concat(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b])


class Reshape(nn.Module):
    """ONNX Reshape: the target shape is a tensor."""

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return x.reshape(tuple(shape.tolist()))


class OnnxLike(SmallCNN):
    """SmallCNN whose flatten is a Reshape to ``concat(shape(x)[:1], [-1])``, as ONNX exports build it,
    plus a float constant added to the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.shape = ShapeOf()
        self.batch = Slice(1)
        self.minus_one = Constant(torch.tensor([-1]))
        self.target = Concat()
        self.reshape = Reshape()
        self.bias = Constant(torch.linspace(-1.0, 1.0, 5))
        self.shape_f = Cast()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn(self.conv1(x))))
        x = self.gap(self.relu2(self.conv2(x)))
        shape = self.shape(x)
        self.shape_f(shape)
        x = self.reshape(x, self.target(self.batch(shape), self.minus_one()))
        return self.fc(x) + self.bias()


class _Leaves(torch.fx.Tracer):
    """Keeps the ONNX-like modules as call_module nodes, as onnx2torch's GraphModules have them."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        onnx_like = (ShapeOf, Cast, Constant, Slice, Concat, Reshape)
        return isinstance(m, onnx_like) or super().is_leaf_module(m, qualname)


def onnx_like_graph() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    root = OnnxLike().eval()
    return torch.fx.GraphModule(root, _Leaves().trace(root))


def test_browser_lists_only_input_dependent_float_layers_of_an_fx_graph(untouched):
    gm = onnx_like_graph()
    gm.conv1.weight.requires_grad_(False)  # a mix of flags, all to be kept
    gm.train()  # and BatchNorm statistics that a forward in train mode would update
    with untouched(gm):
        b = ActivationBrowser(gm, image())
        everything = ActivationBrowser(gm, image(), layers="all")
        picked = ActivationBrowser(gm, image(), layers=["conv2", "shape", "minus_one"])
    dependent = ["conv1", "bn", "relu", "pool", "conv2", "relu2", "gap", "reshape", "fc"]
    assert b.layers == dependent
    assert everything.layers == [
        "conv1", "bn", "relu", "pool", "conv2", "relu2", "gap", "shape", "shape_f", "batch", "minus_one",
        "target", "reshape", "fc", "bias",
    ]
    assert picked.layers == ["conv2", "shape", "minus_one"]  # named layers are shown whatever they hold
    meta = {m["name"]: m for m in everything._meta["layers"]}
    assert meta["shape"]["kind"] == "vector" and meta["shape"]["source_shape"] == [4]
    assert (meta["target"]["min"], meta["target"]["max"]) == (-1.0, 1.0)
    # the listed layers hold what capture_activations (no autograd) records for them
    acts = capture_activations(gm, image()[None])
    for name in dependent:
        got = wire.decode(b._data[name]).reshape(-1)
        want = (acts[name][0] if acts[name].shape[0] == 1 else acts[name]).reshape(-1).numpy()
        lo, hi = wire.extrema(b._data[name])
        assert np.max(np.abs(got - want)) <= max(hi - lo) / 255 / 2 + 1e-5, name


def test_browser_says_how_to_see_layers_that_do_not_depend_on_the_input():
    model = nn.Sequential()
    model.add_module("const", Constant(torch.ones(3)))

    class Ignore(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.const = Constant(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.const()

    with pytest.raises(ValueError, match="layers='all'"):
        ActivationBrowser(Ignore(), image())
    assert ActivationBrowser(Ignore(), image(), layers="all").layers == ["const"]


def encoders() -> list[threading.Thread]:
    """The background encoders running now."""
    return [th for th in threading.enumerate() if th.name == "cnn_widgets-encode"]


def test_browser_big_total_sends_the_shown_layer_first_and_encodes_the_rest_after(monkeypatch):
    from cnn_widgets.widgets import activation_browser as ab_module

    threads_seen = []
    encode = ab_module._encode
    monkeypatch.setattr(ab_module, "_encode", lambda x, kind: (threads_seen.append(torch.get_num_threads()),
                                                                encode(x, kind))[1])
    monkeypatch.setattr(ab_module, "SYNC_MB", 0.001)  # SmallCNN's ~10 KB count as big
    before = torch.get_num_threads()
    b = ActivationBrowser(seeded(SmallCNN), image(), layer="pool")
    assert torch.get_num_threads() == before
    assert b._mode == "lazy" and b._data == {}  # for now: the browser fetches what it shows
    assert set(b._layers.encoded) == {"relu", "pool", "conv2"}  # the shown layer and its neighbours
    (worker,) = encoders()
    out = sent(b)
    fetch(b, ["pool"])  # the browser's first fetch: answered at once, and lets the encoder start
    assert [c["name"] for c, _ in out] == ["pool"]
    worker.join()
    assert not b._layers.raw  # every float activation let go once encoded
    assert b._mode == "eager" and set(b._data) == set(b.layers)  # it all fits the budget: sent in _data
    assert threads_seen and set(threads_seen) == {1}, "encoding runs on one intra-op thread"
    assert torch.get_num_threads() == before
    # the same numbers and sizes as encoding everything before returning
    monkeypatch.setattr(ab_module, "SYNC_MB", 10.0)
    sync = ActivationBrowser(seeded(SmallCNN), image(), layer="pool")
    assert not encoders()
    assert b._meta["layers"] == sync._meta["layers"]
    assert b.total_bytes() == sync.total_bytes()
    for name in b.layers:
        assert bytes(b._data[name]["data"]) == bytes(sync._data[name]["data"]), name
    # over the budget the widget stays lazy when the encoder is done
    monkeypatch.setattr(ab_module, "SYNC_MB", 0.001)
    small = ActivationBrowser(seeded(SmallCNN), image(), budget_mb=0.001)
    small._layers.served.set()
    encoders()[0].join()
    assert small._mode == "lazy" and small._data == {} and not small._layers.raw


def test_browser_new_image_or_close_stops_the_background_encoder(monkeypatch):
    from cnn_widgets.widgets import activation_browser as ab_module

    monkeypatch.setattr(ab_module, "SYNC_MB", 0.001)
    monkeypatch.setattr(ab_module, "ENCODE_DELAY", 600.0)  # the encoders wait for a first fetch
    b = ActivationBrowser(seeded(SmallCNN), image(seed=1))
    first, (worker,) = b._layers, encoders()
    b.set_image(image(seed=2))
    assert first.stop.is_set() and b._layers is not first and b._layers.version == first.version + 1
    first.served.set()
    worker.join()
    assert first.raw, "the old image's layers were not encoded after it was replaced"
    out = sent(b)
    fetch(b, [b.layer], version=first.version)  # a fetch for the old image is ignored
    assert out == []
    b.close()
    assert b._layers.stop.is_set()
    b._layers.served.set()
    for th in encoders():
        th.join()


def test_browser_meta_ranges_without_encoding_match_the_wire(monkeypatch):
    from cnn_widgets.widgets import activation_browser as ab_module

    class Spiky(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x * 4 - 1
            return torch.where(x > 0.9, torch.full_like(y, float("inf")), y)

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Spiky(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    monkeypatch.setattr(ab_module, "SYNC_MB", 0.0)
    lazy = ActivationBrowser(model, image(), budget_mb=0.001)
    for name, (x, kind) in list(lazy._layers.raw.items()):
        lo, hi = wire.extrema(ab_module._encode(x, kind))
        m = next(m for m in lazy._meta["layers"] if m["name"] == name)
        assert (m["min"], m["max"]) == (float(lo.min()), float(hi.max())), name
    assert any(m["name"] == "1" for m in lazy._meta["layers"])  # the layer with infinities was among them


def test_resnet50_like_has_torchvisions_layout_and_158_layers_to_browse():
    from cnn_widgets.zoo.resnet import resnet50_like

    model = resnet50_like()
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision.models.resnet50()
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    b = ActivationBrowser(model, torch.rand(3, 64, 64), budget_mb=0.5)
    assert len(b.layers) == 158 and b.layers[-1] == "fc" and b._mode == "lazy"
    assert {m["name"]: m["shape"] for m in b._meta["layers"]}["layer4.2.relu#2"] == [2048, 2, 2]
    b.close()


# ------------------------------------------------------------------------------ front-end data and bundle


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "js" / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_codec_fixture_is_what_wire_encode_writes_today():
    text, blob = _load_script("make_codec_fixture").build()
    fixtures = ROOT / "js" / "test" / "fixtures"
    assert (fixtures / "wire.json").read_text() == text
    assert (fixtures / "wire.bin").read_bytes() == blob


def test_bundle_missing_is_a_visible_message_not_an_import_error():
    src = bundle("no_such_widget")
    assert isinstance(src, str) and "npm run build" in src and "textContent" in src


def test_no_view_overrides_an_ipywidgets_or_anywidget_member_by_accident():
    """A view method named like a base-class member (a ``_send`` once replaced ``Widget._send``, and every
    synced trait change then failed) breaks the widget; only ``close`` is overridden, on purpose."""
    import importlib
    import inspect
    import pkgutil

    import anywidget
    import ipywidgets
    import traitlets

    import cnn_widgets.widgets as package

    classes = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        classes |= {c for c in vars(module).values()
                    if inspect.isclass(c) and issubclass(c, ipywidgets.Widget) and c.__module__ == module.__name__}
    assert len(classes) >= 15
    bases = (ipywidgets.DOMWidget, ipywidgets.Box, anywidget.AnyWidget)
    inherited = set().union(*(dir(b) for b in bases)) - set(dir(traitlets.HasTraits))
    allowed = {"close", "_esm", "_css", "_model_name", "_view_name", "_model_module", "_view_module"}
    clashes = {c.__name__: sorted(set(vars(c)) & inherited - allowed) for c in classes}
    assert {k: v for k, v in clashes.items() if v} == {}


def public_views() -> list[type]:
    """Every widget class ``cnn_widgets`` exports."""
    import inspect

    import ipywidgets

    import cnn_widgets

    views = [getattr(cnn_widgets, n) for n in cnn_widgets.__all__]
    return [v for v in views if inspect.isclass(v) and issubclass(v, ipywidgets.Widget)]


def test_a_view_whose_constructor_failed_is_collected_quietly(monkeypatch):
    """A view whose constructor raised (a missing argument, a TorchScript model) is garbage-collected
    without Python printing "Exception ignored in: Widget.__del__ ... AttributeError" (its close() needed
    attributes the constructor never set)."""
    import gc
    import sys

    ignored: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(f"{u.object}: {u.exc_value!r}"))
    from cnn_widgets import FeatureVisualizer

    views = public_views()
    assert len(views) >= 13
    for view in views:
        with pytest.raises(TypeError, match="missing"):
            view()
        gc.collect()
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(TypeError, match="TorchScript"):
        FeatureVisualizer(scripted, "0", steps=1, size=16)
    gc.collect()
    assert ignored == []


def test_a_mistyped_keyword_is_a_type_error_in_every_view():
    """traitlets only warned about an unknown keyword (``AttributionView(m, x, methd=...)`` kept the default
    method); every view refuses it before doing any work, as Python does, and names the nearest keyword.
    Whatever names a trait (``layout``, ``font_scale``, ``tooltip``, ``tabbable``, a box's ``children``) or a
    constructor parameter gets through the check (here to the missing-argument error)."""
    import ipywidgets

    from cnn_widgets import AttributionView

    model = seeded(SmallCNN).eval()
    with pytest.raises(TypeError, match=r"^AttributionView\(\) got an unexpected keyword argument 'methd'; "
                                        r"did you mean 'method'\?$"):
        AttributionView(model, image(), methd="saliency")
    legitimate = {"layout": ipywidgets.Layout(width="50%"), "font_scale": 1.5, "tooltip": "tip", "tabbable": True}
    for view in public_views():
        with pytest.raises(TypeError, match=rf"^{view.__name__}\(\) got an unexpected keyword argument 'xyzzy'$"):
            view(model, xyzzy=1)
        with pytest.raises(TypeError, match="fontscale.*did you mean 'font_scale'"):
            view(fontscale=2)
        extra = {"children": ()} if issubclass(view, ipywidgets.Box) else {}
        with pytest.raises(TypeError, match="missing"):  # past the keyword check, to the constructor
            view(**legitimate, **extra)
    grid = FilterGrid(model, **legitimate)
    assert (grid.layout.width, grid.font_scale, grid.tooltip, grid.tabbable) == ("50%", 1.5, "tip", True)
