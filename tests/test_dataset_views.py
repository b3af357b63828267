"""The dataset views against independent references: receptive-field crops equal the bounding box of the
gradient support of each output position (the input pixels that influence it) on conv stacks with known
strides, paddings and dilations; TopActivations shows exactly the scan's top images, each patch the image's
own pixels inside the field; ClassHeatmaps' averages equal a brute-force mean of attribute() maps;
ChannelImportance shows channel_importance's numbers and is repeatable; clear errors; models untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_widgets import wire, zoo
from cnn_widgets.dataset import channel_importance, scan
from cnn_widgets.dataset.receptive import receptive_field
from cnn_widgets.widgets.top_activations import TopActivations, dataset_images

import archs

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------ receptive fields
def _seeded(build, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build().double().eval()


class Branches(nn.Module):
    """A residual add of a dilated 3×3 path and a strided 1×1 path, functional pooling, "same" padding."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 4, padding="same")
        self.wide = nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2)
        self.narrow = nn.Conv2d(4, 4, 1, stride=2)
        self.head = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.stem(x))
        x = self.wide(x) + self.narrow(x)
        x = F.avg_pool2d(x, 3, stride=2, padding=1)
        return self.head(x)


def _stack() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2),
        nn.AvgPool2d(3, 2, padding=1, ceil_mode=True),
        nn.Conv2d(4, 4, 5), nn.ZeroPad2d((1, 0, 2, 1)),
        nn.Conv2d(4, 4, 2, stride=2, padding=1),
    )


def _pooled(pool: type[nn.Module]) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=1, padding=1), pool(3, stride=2, padding=1, ceil_mode=True),
                         nn.Conv2d(4, 4, 3, stride=2, padding=0, dilation=3), nn.AdaptiveAvgPool2d((3, 2)))


class ChannelsLastNorm(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map, through a channels-last permute (ConvNeXt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class NextBlock(nn.Module):
    """A ConvNeXt block: 7×7 depthwise conv, then LayerNorm and two Linears on the channels-last tensor."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class NextNet(nn.Module):
    """A small ConvNeXt: 4×4/4 stem, channels-last norms, two blocks, a 2×2/2 downsampling, a 3×3 head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = ChannelsLastNorm(8)
        self.blocks = nn.Sequential(NextBlock(8), NextBlock(8))
        self.down = nn.Sequential(ChannelsLastNorm(8), nn.Conv2d(8, 16, 2, stride=2))
        self.head = nn.Conv2d(16, 16, 3, padding=1)
        for m in self.modules():  # unequal scales: a LayerNorm's outputs summed over channels are not constant
            if isinstance(m, nn.LayerNorm):
                nn.init.uniform_(m.weight, 0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.blocks(self.norm(self.stem(x)))))


CASES = {  # name → (model, model whose gradient shows the support, layers, input H×W)
    "stack": (lambda: _seeded(_stack), None, ["0", "2", "3", "4", "5", "6"], (37, 29)),
    "branches": (lambda: _seeded(Branches), None, ["stem", "wide", "head"], (23, 30)),
    # a max pool passes a gradient to one input only: its support is taken from the average-pool twin
    "max_pool": (lambda: _seeded(lambda: _pooled(nn.MaxPool2d)), lambda: _seeded(lambda: _pooled(nn.AvgPool2d)),
                 ["1", "2", "3"], (31, 26)),
    "convnext": (lambda: _seeded(NextNet), None, ["norm", "blocks.0.dwconv", "blocks.0", "blocks.1", "down.1", "head"],
                 (45, 38)),
}


def gradient_support(model: nn.Module, layer: str, size: tuple[int, int]) -> np.ndarray:
    """Per output position (y, x) of ``layer`` the bounding box (top, bottom, left, right) of the nonzero
    set of d(activation[0, c, y, x]) / d(input), summed over channels c, on a random float64 input."""
    x = torch.randn(1, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(5), requires_grad=True)
    found = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: found.setdefault("a", o))
    try:
        model(x)
    finally:
        handle.remove()
    a = found["a"]
    h, w = a.shape[2:]
    boxes = np.zeros((h, w, 4), dtype=np.int64)
    for y in range(h):
        for xx in range(w):
            (g,) = torch.autograd.grad(a[0, :, y, xx].sum(), x, retain_graph=True)
            nz = (g[0] != 0).any(0)
            rows, cols = np.nonzero(nz.any(1).numpy())[0], np.nonzero(nz.any(0).numpy())[0]
            if len(rows):
                boxes[y, xx] = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    return boxes


@pytest.mark.parametrize("case", CASES)
def test_crops_are_exactly_the_gradient_support(case, untouched):
    build, twin, layers, size = CASES[case]
    model = build()
    reference = (twin or build)()
    for layer in layers:
        with untouched(model):
            rf = receptive_field(model, layer, size)
        assert rf.exact, rf.notes
        support = gradient_support(reference, layer, size)
        assert rf.output_size == support.shape[:2]
        for y in range(rf.output_size[0]):
            for x in range(rf.output_size[1]):
                crop = rf.crop(y, x)
                assert crop.inside == tuple(support[y, x]), (layer, y, x, crop)
                top, bottom, left, right = crop.inside
                if bottom == top:  # nothing of the image reaches it (all padding): nothing to contain
                    continue
                assert crop.top <= top and crop.left <= left
                assert crop.top + crop.height >= bottom and crop.left + crop.width >= right


def test_field_size_and_stride_follow_the_arithmetic():
    """The textbook recursion r ← r + (k − 1)·d·j, j ← j·s on the stack's layers."""
    model = _seeded(_stack)
    r, j = 1, 1
    for layer, (k, s, d) in [("0", (3, 2, 1)), ("2", (3, 1, 2)), ("3", (3, 2, 1)), ("4", (5, 1, 1))]:
        r, j = r + (k - 1) * d * j, j * s
        rf = receptive_field(model, layer, (64, 64))
        assert rf.size == (r, r) and rf.stride == (j, j), layer


def test_channels_last_steps_keep_the_field():
    """ConvNeXt's permute → LayerNorm → Linear → permute is a 1×1 step: strides and windows stay those of
    the convolutions (they grew by the map's size at each Linear, to windows of millions of pixels); a
    layer whose output is channels-last gets its whole map's field, said in the notes."""
    model = _seeded(NextNet)
    expected = {"blocks.0": ((4, 4), (28, 28)), "blocks.1": ((4, 4), (52, 52)), "head": ((8, 8), (72, 72))}
    for layer, (stride, size) in expected.items():
        rf = receptive_field(model, layer, (64, 64))
        assert rf.exact and (rf.stride, rf.size) == (stride, size), layer
    rf = receptive_field(model, "blocks.1.pwconv1", (64, 64))
    assert not rf.exact and "channels-last" in rf.notes[0] and rf.output_size == (1, 1)
    assert rf.crop(0, 0).inside == (0, 64, 0, 64)


def test_fields_never_compound_through_steps_not_read_geometrically():
    """Upsampling (not read geometrically) then a stride-2 conv, six times: each position covers its
    input's whole field, but the stride stays that of the map and the window within reach of the image."""

    class UpDown(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(3, 3, 3, stride=2, padding=1) for _ in range(6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for conv in self.convs:
                x = conv(F.interpolate(x, scale_factor=2.0))
            return x

    rf = receptive_field(UpDown().eval(), "convs.5", (32, 32))
    assert not rf.exact and rf.output_size == (32, 32)
    assert rf.stride <= (2, 2) and -32 <= rf.window_rows.min() and rf.window_rows.max() < 64


def test_patches_never_allocate_the_window():
    """A window far larger than the image (an inexact field of a deep model) is drawn from the image part
    alone: the patch is side×side, the image inside its box, no allocation the size of the window."""
    from cnn_widgets.dataset.receptive import ReceptiveField
    from cnn_widgets.widgets.top_activations import crop_patch

    far = np.array([[-10**9, 10**9 - 1]])
    rf = ReceptiveField("x", (8, 8), (1, 1), np.array([[0, 7]]), np.array([[0, 7]]), far, far, (1, 1), False)
    picture = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    patch, box = crop_patch(picture, rf, 0, 0, 16)
    assert patch.shape == (3, 16, 16) and box == [8, 8, 8, 8]  # 8 px of 2e9: less than a patch pixel
    assert not patch.any()
    near = np.array([[-4, 11]])
    rf = ReceptiveField("x", (8, 8), (1, 1), np.array([[0, 7]]), np.array([[0, 7]]), near, near, (1, 1), True)
    patch, box = crop_patch(picture, rf, 0, 0, 16)
    assert box == [4, 4, 12, 4 + 8] and torch.equal(patch[:, 4:12, 4:12], picture)
    assert not patch[:, :4].any() and not patch[:, 12:].any()


def test_top_activations_on_a_convnext(untouched):
    model = _seeded(NextNet).float()
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for layer in ("blocks.1.dwconv", "head"):
        with untouched(model):
            view = TopActivations(model, images, layer, k=2, batch_size=3)
            assert view.wait(120)
        assert view.error == "", layer
        assert view._patches["field"]["exact"] and view._patches["side"] <= 64
    # inside a block the map is (N, H, W, C): no patches there, and the view says why
    assert receptive_field(model, "blocks.0.pwconv1", (32, 32)).channels_last
    assert not receptive_field(model, "blocks.0.dwconv", (32, 32)).channels_last
    with untouched(model):
        view = TopActivations(model, images, "blocks.0.pwconv1", k=2, batch_size=3)
        assert view.wait(120)
    assert "outputs its map channels-last, (N, H, W, C)" in view.error and "(N, C, H, W)" in view.error


def test_receptive_field_errors_and_fallback():
    model = _seeded(_stack)
    with pytest.raises(ValueError, match="unknown layer"):
        receptive_field(model, "nope", (32, 32))
    with pytest.raises(TypeError, match="input_size"):
        receptive_field(model, "0", "32")
    with pytest.raises(ValueError, match="outside"):
        receptive_field(model, "0", (32, 32)).crop(16, 0)
    with pytest.raises(ValueError, match="input_size"):  # too small for the 5×5 conv
        receptive_field(model, "4", (8, 8))
    zoo_model, x = archs.build("inplace_zoo")  # writes through .data: fx cannot trace it
    rf = receptive_field(zoo_model, "conv5", tuple(x.shape))
    assert not rf.exact and rf.notes
    assert rf.crop(3, 2).inside == (0, x.shape[2], 0, x.shape[3])


@pytest.mark.parametrize("name", ["plain", "resnet18_like", "nested", "shared", "dict_output", "train_bn", "xss_named"])
def test_receptive_field_on_odd_models(name, untouched):
    model, x = archs.build(name)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with untouched(model):
        rf = receptive_field(model, convs[-1], tuple(x.shape))
    assert rf.exact, rf.notes
    h, w = x.shape[2:]
    for y, xx in [(0, 0), (rf.output_size[0] - 1, rf.output_size[1] - 1)]:
        top, bottom, left, right = rf.crop(y, xx).inside
        assert 0 <= top < bottom <= h and 0 <= left < right <= w


# --------------------------------------------------------------------------------- TopActivations
LAYER = "features.conv4"
K = 5


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return zoo.load_shapesnet()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels, _ = zoo.shapes_dataset(96, seed=11)
    return images, labels


@pytest.fixture(scope="module")
def scanned(model, data):
    return scan(model, data, [LAYER, "features.relu2"], k=K, batch_size=32, progress=False)


def test_top_activations_shows_the_scans_top_images(model, data, scanned, untouched):
    with untouched(model):
        view = TopActivations(model, data, LAYER, scan=scanned, k=K)
        assert view.wait(120)
    assert view.error == ""
    p = view._patches
    channels = scanned.top_indices[LAYER].shape[0]
    assert p["layer"] == LAYER and p["channels"] == channels and p["k"] == K
    for c in range(channels):
        assert view.top_images(c) == scanned.top_indices[LAYER][c, :K].tolist()
    # each patch holds the image's own pixels inside the receptive field of the arg-max, padding outside
    rf = receptive_field(model, LAYER, (64, 64))
    side = p["side"]
    assert side == max(rf.size)  # 26 px: no resizing at this size
    images = wire.decode(p["images"]).reshape(channels, K, side, side, 3)
    for c in (0, 17, channels - 1):
        for j in range(K):
            index = scanned.top_indices[LAYER][c, j]
            y, x = scanned.top_positions[LAYER][c, j]
            crop = rf.crop(int(y), int(x))
            top, bottom, left, right = crop.inside
            expected = (data[0][index, :, top:bottom, left:right].permute(1, 2, 0) * 255).round().to(torch.uint8)
            b = p["boxes"][c][j]
            assert b == [top - crop.top, left - crop.left, bottom - crop.top, right - crop.left]
            np.testing.assert_array_equal(images[c, j, b[0] : b[2], b[1] : b[3]], expected.numpy())
            outside = np.ones((side, side), bool)
            outside[b[0] : b[2], b[1] : b[3]] = False
            assert not images[c, j][outside].any()
    # the heat map is the channel's activation upsampled to the image, cropped like the image
    heat = wire.decode(p["heat"]).reshape(channels, K, side, side)
    c, j = 3, 0
    index = scanned.top_indices[LAYER][c, j]
    y, x = scanned.top_positions[LAYER][c, j]
    peak = np.unravel_index(np.argmax(heat[c, j]), heat[c, j].shape)
    centre = rf.crop(int(y), int(x))
    assert abs((peak[0] + centre.top) - (4 * y + 1.5)) <= 4 and abs((peak[1] + centre.left) - (4 * x + 1.5)) <= 4
    assert p["means"] == pytest.approx(scanned.channel_mean[LAYER].tolist())
    assert view._filters["layer"] == LAYER and wire.decode(view._filters["tensor"]).shape == (64, 64, 3, 3)


def test_top_activations_scans_when_not_given_a_scan(model, data, scanned, untouched):
    with untouched(model):
        view = TopActivations(model, data, LAYER, k=K, batch_size=32)
        assert view.wait(180)
    assert view.error == "" and not view.busy
    assert view.scan == scan(model, data, LAYER, k=K, batch_size=32, progress=False)
    assert view.top_images(5) == scanned.top_indices[LAYER][5, :K].tolist()
    # another layer of the model: scanned on demand; its filter is absent (not a conv)
    view.layer = "features.relu2"
    assert view.wait(180) and view.error == ""
    assert view._patches["layer"] == "features.relu2" and "tensor" not in view._filters
    assert view.top_images(1) == scanned.top_indices["features.relu2"][1, :K].tolist()


def test_top_activations_sort_by_importance_computes_it(model, data, scanned):
    view = TopActivations(model, data, LAYER, scan=scanned, k=2, batch_size=32)
    assert view.wait(120)
    assert view._importance is None
    view.sort = "importance"
    assert view.wait(300) and view.error == ""
    expected = channel_importance(model, data, LAYER, metric="loss", batch_size=32, progress=False)
    assert view._importance == pytest.approx(expected.permutation.tolist())


def test_top_activations_channel_and_errors(model, data, scanned):
    view = TopActivations(model, data, LAYER, scan=scanned, k=2, channel=7)
    assert view.wait(120)
    assert view.channel == 7
    with pytest.raises(ValueError, match="channel"):
        view.channel = 64
    view.channel = -1
    with pytest.raises(ValueError, match="unknown layer"):
        TopActivations(model, data, "features.nope")
    with pytest.raises(ValueError, match="does not cover"):
        TopActivations(model, data, "features.conv3", scan=scanned)
    with pytest.raises(TypeError, match="data"):
        TopActivations(model, "images/", LAYER)
    with pytest.raises(TypeError, match="scan"):
        TopActivations(model, data, LAYER, scan={"top": 1})
    with pytest.raises(ValueError, match="k"):
        TopActivations(model, data, LAYER, k=0)
    flat = TopActivations(model, data, "fc", k=2)  # no map to crop: the view says so
    assert flat.wait(120)
    assert "(N, C, H, W)" in flat.error


def test_top_activations_refuses_a_channel_the_layer_lacks(untouched):
    """channel=99 on a 16-channel layer was silently replaced by channel 0: it is refused as the other
    views refuse it, naming the valid range — at once when the channel count is known without running the
    model (a conv, a given scan), else when the scan is done (in ``error``, no channel selected)."""
    model = _seeded(lambda: nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                          nn.Flatten(), nn.Linear(16, 5))).float()
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="channel 99 is out of range: '0' has 16 channels; use 0‥15, or -1"):
        TopActivations(model, images, "0", k=2, channel=99)
    given = scan(model, images, "1", k=2, progress=False)
    with pytest.raises(ValueError, match="'1' has 16 channels; use 0‥15"):
        TopActivations(model, images, "1", scan=given, k=2, channel=16)
    with untouched(model):
        view = TopActivations(model, images, "1", k=2, channel=99)
        assert view.wait(120)
    assert "channel 99 is out of range: '1' has 16 channels; use 0‥15, or -1" in view.error
    assert view.channel == -1 and view._patches["channels"] == 16
    view = TopActivations(model, images, "1", k=2, channel=15)
    assert view.wait(120) and view.error == "" and view.channel == 15


def test_dataset_views_refuse_data_read_only_once(untouched):
    """Each dataset view reads its data more than once (a scan, then the top images or a cell's images,
    again for another layer, metric or method): a generator, empty after the first pass, is refused up
    front (TopActivations scanned it, then blamed the data for holding fewer images than the scan saw)."""
    from cnn_widgets.widgets.channel_importance_view import ChannelImportance
    from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps

    model = _seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                          nn.Flatten(), nn.Linear(4, 5))).float()
    images, labels = torch.rand(4, 3, 16, 16), torch.arange(4)
    message = "a generator can be read only once: pass a list, a Dataset or a DataLoader"
    for build in (lambda d: TopActivations(model, d, "0", k=2), lambda d: ChannelImportance(model, d, "0"),
                  lambda d: ClassHeatmaps(model, d)):
        with untouched(model), pytest.raises(TypeError, match=message):
            build((images[i], int(labels[i])) for i in range(4))
        with pytest.raises(TypeError, match="data is a list_iterator"):
            build(iter([(images[i], int(labels[i])) for i in range(4)]))


def test_top_activations_cancel_stops_the_scan(model, data):
    view = TopActivations(model, data, LAYER, k=2, batch_size=8)
    view.cancel()
    assert view.wait(120)
    assert not view.busy and view.status == "cancelled" and not view._patches


@pytest.mark.parametrize("name", ["plain", "nested", "resnet18_like", "dict_output", "xss_named"])
def test_top_activations_on_odd_models(name, untouched):
    model, x = archs.build(name)
    images = torch.rand(12, *x.shape[1:], generator=torch.Generator().manual_seed(2))
    layer = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    with untouched(model):
        view = TopActivations(model, images, layer, k=3, batch_size=5)
        assert view.wait(120)
    assert view.error == ""
    assert view.top_images(0) == scan(model, images, layer, k=3, batch_size=5, progress=False).top_indices[layer][0].tolist()


def test_dataset_images_reads_any_data_form(model, data):
    images, labels = data
    wanted = [5, 2, 5, 40]
    x, pixels = dataset_images(data, wanted, model)
    torch.testing.assert_close(pixels, images[wanted])
    listed = [(images[i], int(labels[i])) for i in range(50)]
    torch.testing.assert_close(dataset_images(listed, wanted, model)[1], images[wanted])
    generator = (images[i : i + 7] for i in range(0, 50, 7))  # not indexable: read once
    torch.testing.assert_close(dataset_images(generator, wanted, model)[1], images[wanted])
    x, _ = dataset_images(data, [1], model, mean=0.5, std=0.25)
    torch.testing.assert_close(x, (images[[1]] - 0.5) / 0.25)
    with pytest.raises(ValueError, match="no image 500"):
        dataset_images(data, [500], model)


# ------------------------------------------------------------------------------- ClassHeatmaps
def test_class_heatmaps_equal_a_brute_force_mean_of_attribute_maps(untouched):
    from cnn_widgets import attribute
    from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps

    model = zoo.load_shapesnet("cheat")  # the cheat model on clean data: some images are misclassified
    images, labels, _ = zoo.shapes_dataset(40, seed=4)
    with untouched(model):
        view = ClassHeatmaps(model, (images, labels), "grad_cam", labels=list(zoo.CLASSES), batch_size=16)
        assert view.wait(300)
    assert view.error == ""
    maps, predicted = [], []
    for i in range(len(images)):  # one image at a time: no batching shared with the view
        result = attribute(model, images[i : i + 1], "grad_cam")
        maps.append(result.map.reshape(64, 64).double().numpy())
        predicted.append(int(result.target[0] if isinstance(result.target, list) else result.target))
    classes = len(zoo.CLASSES)
    assert view.counts.shape == (classes, 2)
    assert view.counts[:, 1].sum() > 0, "the test needs misclassified images"
    for label in range(classes):
        for col, correct in enumerate((True, False)):
            members = [i for i in range(len(images)) if labels[i] == label and (predicted[i] == label) == correct]
            assert view.cell_indices(label, correct) == members
            assert view.counts[label, col] == len(members)
            if members:
                expected = np.mean([maps[i] for i in members], axis=0)
                np.testing.assert_allclose(view.averages[label, col], expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
            else:
                assert np.isnan(view.averages[label, col]).all()
    payload = view._grid
    assert payload["classes"] == list(zoo.CLASSES) and payload["counts"] == view.counts.tolist()
    # clicking a cell lists its images with their own maps
    label, col = np.argwhere(view.counts[:, 1] > 0)[0][0], 1
    view.select(int(label), correct=False)
    assert view.wait(120) and view.error == ""
    cell = view._cell
    members = view.cell_indices(int(label), False)
    assert cell["indices"] == members[:24] and cell["total"] == len(members)
    assert [predicted[i] for i in cell["indices"]] == cell["predicted"]
    thumbs = wire.decode(cell["images"])
    np.testing.assert_array_equal(thumbs[0], (images[members[0]].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    assert view.selected_class == label and view.selected_column == "incorrect"


def test_class_heatmaps_errors():
    from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps

    model = zoo.load_shapesnet()
    images, labels, _ = zoo.shapes_dataset(8, seed=4)
    with pytest.raises(ValueError, match="unknown method"):
        ClassHeatmaps(model, (images, labels), "nope")
    with pytest.raises(TypeError, match="data"):
        ClassHeatmaps(model, 3)
    view = ClassHeatmaps(model, images)  # no labels: said in the view
    assert view.wait(120)
    assert "labelled" in view.error
    labelled = ClassHeatmaps(model, (images, labels), labels=[archs.XSS_NAME] * 5)
    assert labelled.wait(120) and labelled._grid["classes"][0] == archs.XSS_NAME
    with pytest.raises(ValueError, match="selected_class"):
        labelled.selected_class = 5
    with pytest.raises(ValueError, match="selected_column"):
        labelled.selected_column = "both"


def test_class_heatmaps_refuse_labels_for_another_number_of_classes(untouched):
    """labels=['a'] on a 5-class model was accepted silently; it is refused as AttributionView refuses it
    (the same check, with its message), before any map is computed."""
    from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps

    model = _seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                          nn.Flatten(), nn.Linear(4, 5))).float()
    data = torch.utils.data.TensorDataset(torch.rand(6, 3, 16, 16), torch.arange(6) % 5)
    with untouched(model):
        view = ClassHeatmaps(model, data, labels=["a"], batch_size=3)
        assert view.wait(120)
    assert view.error == "got 1 labels but the model has 5 classes; pass one name per class output"
    assert view._counts is None and not view._grid
    view = ClassHeatmaps(model, data, labels=list("abcde"), batch_size=3)
    assert view.wait(120) and view.error == "" and view._grid["classes"] == list("abcde")


# --------------------------------------------------------------------------- ChannelImportance
def test_channel_importance_view_shows_the_functions_numbers(untouched):
    from cnn_widgets.widgets.channel_importance_view import ChannelImportance

    model = zoo.load_shapesnet()
    images, labels, _ = zoo.shapes_dataset(48, seed=8)
    data = (images, labels)
    with untouched(model):
        view = ChannelImportance(model, data, "features.conv3", metric="loss", repeats=2, seed=4, batch_size=16)
        assert view.wait(300)
    assert view.error == ""
    expected = channel_importance(model, data, "features.conv3", metric="loss", repeats=2, seed=4, batch_size=16,
                                  progress=False)
    got = view.importance
    for field in ("permutation", "zeroing", "std"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    # seeded: a second view gives identical numbers
    again = ChannelImportance(model, data, "features.conv3", metric="loss", repeats=2, seed=4, batch_size=16)
    assert again.wait(300)
    np.testing.assert_array_equal(again.importance.permutation, got.permutation)
    # sorted bars with error bars; a click selects the channel under the bar
    channels = len(expected.permutation)
    order = np.lexsort((np.arange(channels), -expected.permutation))
    assert view._bars.x.tolist() == [str(c) for c in order]
    np.testing.assert_allclose(view._bars.y, expected.permutation[order])
    np.testing.assert_allclose(np.asarray(view._errors.y)[:, 1] - view._bars.y, expected.std[order])
    np.testing.assert_allclose(view._dots.y, expected.zeroing[order])
    view._bar_clicked(view._bars, {"data": {"index": 3}})
    assert view.channel == order[3]
    assert view._bars.colors[3] != view._bars.colors[0]
    view.sort = "channel"
    assert view._bars.x.tolist() == [str(c) for c in range(channels)]
    # the controls carry the numbers for the keyboard path
    assert view._controls._rows["permutation"] == pytest.approx(expected.permutation.tolist())
    view._controls.channel = 5  # the channel menu
    assert view.channel == 5


def test_channel_importance_view_errors_and_given_result():
    from cnn_widgets.widgets.channel_importance_view import ChannelImportance

    model = zoo.load_shapesnet()
    images, labels, _ = zoo.shapes_dataset(16, seed=8)
    given = channel_importance(model, (images, labels), "features.conv4", repeats=1, progress=False)
    view = ChannelImportance(model, (images, labels), "features.conv4", importance=given)
    assert view.importance is given and not view.busy
    with pytest.raises(ValueError, match="channel"):
        view.channel = 64
    with pytest.raises(ValueError, match="unknown layer"):
        ChannelImportance(model, (images, labels), "features.nope")
    with pytest.raises(ValueError, match="metric"):
        ChannelImportance(model, (images, labels), "features.conv4", metric="f1")
    with pytest.raises(ValueError, match="seed"):
        ChannelImportance(model, (images, labels), "features.conv4", seed=-1)
    with pytest.raises(ValueError, match="not of"):
        ChannelImportance(model, (images, labels), "features.conv3", importance=given)


def test_channel_importance_going_back_to_a_cached_result_ends_the_busy_state(model, data):
    """Switching back to a metric already computed cancels the computation under way and shows the
    cached result: the view is not left 'busy' with a job that will never report."""
    from cnn_widgets.widgets.channel_importance_view import ChannelImportance

    view = ChannelImportance(model, data, "features.conv3", metric="accuracy", repeats=1, batch_size=32)
    try:
        assert view.wait(300) and view.importance.metric == "accuracy"
        view.metric = "loss"  # starts a computation
        view.metric = "accuracy"  # cached
        assert view.importance.metric == "accuracy"
        assert not view.busy and view._controls.status == ""
        assert view.wait(60)
        assert view.importance.metric == "accuracy", "the cancelled loss run never replaces it"
    finally:
        view.wait(60)
        view.close()
