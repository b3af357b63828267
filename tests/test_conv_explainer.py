"""ConvExplainer: for convs with stride, padding (zeros, reflect, circular, "same"), dilation, groups and no
bias, the shown sum + bias equals the model's own output at that position; the patch is the one
``F.unfold`` extracts, padding is marked; the BatchNorm, ReLU and pooling that follow are worked out to
the values the model computed; traits are checked; the model is left untouched."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archs
from cnn_widgets import wire
from cnn_widgets.widgets import WidgetValueError
from cnn_widgets.widgets.conv_explainer import ConvExplainer

TOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


class ConvZoo(nn.Module):
    """One conv of each geometry, each reading the previous one's output."""

    def __init__(self) -> None:
        super().__init__()
        self.stride2 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(8, 6, 3, padding=1, groups=2)
        self.rect = nn.Conv2d(6, 4, (3, 5), stride=(2, 1), padding=(0, 2), bias=False)
        self.same = nn.Conv2d(4, 4, 4, padding="same")
        self.reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
        self.circular = nn.Conv2d(4, 4, 3, padding=2, dilation=2, padding_mode="circular")
        self.depthwise = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.children():
            x = torch.tanh(m(x))
        return x


class ConvBNReLUPool(nn.Module):
    """conv → BN → ReLU(inplace) → max pool, then conv → ReLU → avg pool (padded, ceil mode, padding not
    counted), then conv → ReLU → global average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.conv3 = nn.Conv2d(8, 4, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.gap(self.relu3(self.conv3(x)))


def _with_statistics(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.3)
    return model.eval()


def _inputs(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The conv's input, from an independent hook on a deep copy (archs.reference_activations' way)."""
    seen: list[torch.Tensor] = []
    handle = dict(model.named_modules())[layer].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0]


def _positions(h: int, w: int) -> list[tuple[int, int]]:
    """Corners (padding), edges and the middle, and a few more."""
    ys, xs = sorted({0, 1, h // 2, h - 1}), sorted({0, w // 2, w - 1})
    return list(itertools.product(ys, xs))


CONVS = ["stride2", "dilated", "grouped", "rect", "same", "reflect", "circular", "depthwise"]


@pytest.fixture(scope="module")
def zoo() -> tuple[nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    model = archs._seeded(ConvZoo).eval()
    x = torch.rand(1, 3, 23, 19, generator=torch.Generator().manual_seed(5))
    return model, x, archs.reference_activations(model, x)


@pytest.mark.parametrize("layer", CONVS)
def test_sum_plus_bias_is_the_models_value_for_every_geometry(zoo, layer: str) -> None:
    model, x, ref = zoo
    out = ref[layer][0]
    conv = dict(model.named_modules())[layer]
    ce = ConvExplainer(model, x, layer)
    assert ce.layer == layer
    (kh, kw), per_in = conv.kernel_size, conv.in_channels // conv.groups
    unfolded = None
    if conv.padding_mode == "zeros" and not isinstance(conv.padding, str):  # an independent patch reference
        unfolded = F.unfold(_inputs(model, x, layer), conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    checked = 0
    for channel in sorted({0, conv.out_channels // 2, conv.out_channels - 1}):
        for y, xx in _positions(*out.shape[-2:]):
            ce.position = (y, xx)
            ce.channel = channel
            e = json.loads(json.dumps(ce.explanation, allow_nan=False))
            expected = float(out[channel, y, xx])
            assert abs(e["sum"] + (e["bias"] or 0.0) - expected) < TOL, (layer, channel, y, xx)
            assert e["value"] == pytest.approx(e["sum"] + (e["bias"] or 0.0), abs=1e-12)
            assert abs(e["captured"] - expected) < 1e-7 and e["match"]
            assert (e["bias"] is None) == (conv.bias is None)
            assert sum(e["channel_sums"]) == pytest.approx(e["sum"], abs=1e-9)
            first = (channel // (conv.out_channels // conv.groups)) * per_in
            assert e["group_channels"] == [first, first + per_in] and e["input_channel"] == first
            products, patch, weights = (np.array(e[k]) for k in ("products", "patch", "weights"))
            assert np.allclose(products, patch * weights, atol=1e-12)
            assert np.allclose(weights, conv.weight[channel, 0].detach().numpy(), atol=1e-7)
            assert e["channel_sum"] == pytest.approx(products.sum(), abs=1e-9)
            h, w = x.shape[-2:] if layer == "stride2" else ref[CONVS[CONVS.index(layer) - 1]].shape[-2:]
            pad = np.array(e["pad"])
            rows, cols = np.array(e["rows"]), np.array(e["cols"])
            assert np.array_equal(pad, ~((rows[:, None] >= 0) & (rows[:, None] < h) & (cols >= 0) & (cols < w)))
            if unfolded is not None:
                column = unfolded[0, :, y * out.shape[-1] + xx].reshape(conv.in_channels, kh, kw)
                assert np.allclose(patch, column[first].numpy(), atol=1e-7)
                assert np.all(patch[pad] == 0.0), "zero padding reads zeros"
            checked += 1
    assert checked >= 12


def test_input_channel_picks_the_patch_and_changing_channel_keeps_it_in_the_group(zoo) -> None:
    model, x, ref = zoo
    ce = ConvExplainer(model, x, "grouped", channel=4, position=(3, 5))
    assert ce.input_channel == 4 and ce.explanation["group_channels"] == [4, 8]
    sums = ce.explanation["channel_sums"]
    ce.input_channel = 6
    e = ce.explanation
    assert e["input_channel"] == 6 and e["channel_sum"] == pytest.approx(sums[2], abs=1e-12)
    assert np.allclose(e["weights"], model.grouped.weight[4, 2].detach().numpy(), atol=1e-7)
    ce.channel = 1  # group 0 reads input channels 0‥3: the input channel moves into it
    assert ce.input_channel == 0 and ce.explanation["input_channel"] == 0
    with pytest.raises(WidgetValueError, match="reads input channels 0‥3"):
        ce.input_channel = 5
    with pytest.raises(ValueError, match="out of range"):
        ce.channel = 6
    with pytest.raises(ValueError, match="outside the"):
        ce.position = (0, 99)
    with pytest.raises(ValueError, match="unknown conv layer"):
        ce.layer = "grouped2"


def test_layer_change_sends_that_layers_maps_and_resets_the_place(zoo) -> None:
    model, x, ref = zoo
    ce = ConvExplainer(model, x, channel=5, position=(0, 0))
    assert ce.layers == CONVS and ce.layer == "stride2"
    ce.layer = "depthwise"
    out = ref["depthwise"][0]
    assert ce.channel == 0 and ce.position == (out.shape[1] // 2, out.shape[2] // 2)
    maps = ce._maps
    assert maps["layer"] == "depthwise" and maps["steps"] == [] and maps["calls"] == 1
    assert maps["geometry"]["groups"] == 4 and maps["geometry"]["padding"] == [1, 1, 1, 1]
    decoded = wire.decode(maps["output"])
    lo, hi = out.amin(dim=(1, 2)), out.amax(dim=(1, 2))
    assert np.all(np.abs(decoded - out.numpy()) <= ((hi - lo) / 255 / 2 + 1e-6)[:, None, None].numpy())
    assert list(wire.decode(maps["input"]).shape) == list(ref["circular"][0].shape)


def test_same_padding_is_drawn_as_torch_applies_it(zoo) -> None:
    model, x, _ = zoo
    ce = ConvExplainer(model, x, "same", position=(0, 0))
    assert ce._maps["geometry"]["padding"] == [1, 2, 1, 2]  # kernel 4: one before, two after
    assert ce.explanation["rows"] == [-1, 0, 1, 2]


@pytest.fixture(scope="module")
def chained() -> tuple[nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    model = _with_statistics(archs._seeded(ConvBNReLUPool))
    x = torch.rand(1, 3, 21, 21, generator=torch.Generator().manual_seed(2))
    return model, x, archs.reference_activations(model, x)


def test_batchnorm_relu_and_max_pool_after_the_conv_are_worked_out(chained) -> None:
    model, x, ref = chained
    ce = ConvExplainer(model, x, "conv1")
    assert [s["name"] for s in ce._maps["steps"]] == ["bn1", "relu1", "pool1"]
    seen_negative = seen_positive = False
    for y, xx in [(0, 0), (5, 6), (10, 10), (20, 20), (13, 2)]:
        ce.position = (y, xx)
        for channel in range(8):
            ce.channel = channel
            norm, relu, pool = ce.explanation["steps"]
            assert norm["value"] == pytest.approx(float(ref["bn1"][0, channel, y, xx]), abs=TOL)
            assert norm["captured"] == pytest.approx(float(ref["bn1"][0, channel, y, xx]), abs=1e-7)
            assert relu["input"] == norm["captured"] and relu["value"] == max(norm["captured"], 0.0)
            assert relu["captured"] == pytest.approx(float(ref["relu1"][0, channel, y, xx]), abs=1e-7)
            seen_negative |= relu["input"] < 0
            seen_positive |= relu["input"] > 0
            oy, ox = pool["position"]
            assert pool["rows"][pool["at"][0]] == y and pool["cols"][pool["at"][1]] == xx
            assert pool["rows"] == [2 * oy - 1 + i for i in range(3)]
            assert pool["cols"] == [2 * ox - 1 + j for j in range(3)]
            assert pool["value"] == pytest.approx(float(ref["pool1"][0, channel, oy, ox]), abs=TOL)
            assert pool["captured"] == pytest.approx(float(ref["pool1"][0, channel, oy, ox]), abs=1e-7)
            assert (pool["values"][0][0] is None) == (oy == 0 or ox == 0), "max pool padding is not a value"
    assert seen_negative and seen_positive


def test_average_pools_count_as_torch_counts(chained) -> None:
    model, x, ref = chained
    ce = ConvExplainer(model, x, "conv2")
    assert [s["name"] for s in ce._maps["steps"]] == ["relu2", "pool2"]
    h, w = ref["relu2"].shape[-2:]
    for y, xx in [(0, 0), (h - 1, w - 1), (h // 2, 0), (3, w - 2)]:
        ce.position = (y, xx)
        pool = ce.explanation["steps"][1]
        oy, ox = pool["position"]
        assert pool["value"] == pytest.approx(float(ref["pool2"][0, 0, oy, ox]), abs=TOL)
        clipped = sum(v is not None for row in pool["values"] for v in row)
        assert pool["divisor"] == clipped, "count_include_pad=False divides by the real cells"
    ce.layer = "conv3"
    ce.position = (1, 2)
    relu, gap = ce.explanation["steps"]
    assert gap["position"] == [0, 0] and gap["divisor"] == ref["relu3"][0, 0].numel()
    assert gap["value"] == pytest.approx(float(ref["gap"][0, 0, 0, 0]), abs=TOL)
    assert gap["value"] == pytest.approx(float(ref["relu3"][0, 0].double().mean()), abs=TOL)


def test_resnet_chains_stop_where_the_residual_add_comes_in(untouched) -> None:
    model, x = archs.build("resnet18_like")
    manual = archs.resnet_manual(model, x)
    with untouched(model):
        ce = ConvExplainer(model, x)
        assert [s["name"] for s in ce._maps["steps"]] == ["bn1", "relu", "maxpool"]
        ce.layer = "layer2.0.conv2"
        assert [s["name"] for s in ce._maps["steps"]] == ["layer2.0.bn2"], "the ReLU after += is not explained"
        for channel, (y, xx) in [(0, (0, 0)), (100, (3, 7)), (127, (7, 7))]:
            ce.position = (y, xx)
            ce.channel = channel
            e = ce.explanation
            assert abs(e["sum"] - float(manual["layer2.0.conv2"][0, channel, y, xx])) < TOL
            assert e["steps"][0]["value"] == pytest.approx(float(manual["layer2.0.bn2"][0, channel, y, xx]), abs=TOL)
        ce.layer = "layer3.0.downsample.0"  # 1×1, stride 2, no bias
        e = ce.explanation
        y, xx = e["position"]
        assert e["bias"] is None and e["pad"] == [[False]]
        assert abs(e["sum"] - float(manual["layer3.0.downsample.0"][0, 0, y, xx])) < TOL


def test_a_shared_conv_explains_its_first_call(untouched) -> None:
    model, x = archs.build("shared")
    ref = archs.reference_activations(model, x)
    with untouched(model):
        ce = ConvExplainer(model, x, "shared", position=(4, 9), channel=3)
    assert ce._maps["calls"] == 2 and ce._maps["steps"] == [{"name": "act", "type": "ReLU"}]
    e = ce.explanation
    assert abs(e["value"] - float(ref["shared"][0, 3, 4, 9])) < TOL
    assert abs(float(ref["shared#1"][0, 3, 4, 9]) - e["value"]) > 1e-3, "the second call differs"


@pytest.mark.parametrize("arch", ["train_bn", "inplace_zoo", "xss_named"])
def test_the_model_is_left_untouched(arch: str, untouched) -> None:
    model, x = archs.build(arch)
    with untouched(model):
        ce = ConvExplainer(model, x)
        for layer in ce.layers:
            ce.layer = layer
            ce.position = (0, 0)


def test_a_double_model_is_explained_to_double_precision() -> None:
    model = archs._seeded(ConvZoo).double().eval()
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    ref = archs.reference_activations(model, x.double())
    ce = ConvExplainer(model, x, "grouped", channel=5, position=(1, 2))
    e = ce.explanation
    assert abs(e["value"] - float(ref["grouped"][0, 5, 1, 2])) < 1e-12 and e["match"]


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.spare = nn.Conv2d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_bad_models_and_layers_are_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="needs a model with an nn.Conv2d"):
        ConvExplainer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.rand(3, 2, 2))
    model, x = Unused().eval(), torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="'spare' did not run"):
        ConvExplainer(model, x, "spare")
    with pytest.raises(ValueError, match="did you mean 'conv'"):
        ConvExplainer(model, x, "cnv")
    assert ConvExplainer(model, x).layers == ["conv"], "only convs that ran are offered"
