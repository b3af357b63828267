"""The scan engine against brute force: every activation of a ~250-image ShapesNet set captured batch by
batch, fully sorted per channel (ties to the lower index), moments in float64 numpy. Also: merging is
associative and equals one scan, save/load/resume, every data form, clear refusals, the model left
untouched, and Ray equal to local (with ray installed and CNN_WIDGETS_TEST_RAY=1: it starts a local
cluster, about a minute on two busy cores)."""

from __future__ import annotations

import copy
import io
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnn_widgets import capture_activations, zoo
from cnn_widgets.dataset import STAT_RTOL, ScanResult, scan
from cnn_widgets.dataset import progress as progress_module
from cnn_widgets.dataset.ray_backend import merged_prefix, scan_shards, shard_bounds

B = 16
LAYERS = ["features.conv4", "features.relu4", "fc"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return zoo.load_shapesnet()


@pytest.fixture(scope="module")
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    """240 images with constructed ties: the image that tops most channels of features.relu4 is repeated
    at 50, 100 and 200 (other batches; batches of equal size give bit-identical activations), and three
    images are black."""
    images, labels, _ = zoo.shapes_dataset(240, seed=11)
    images, labels = images.clone(), labels.clone()
    maxima = torch.cat([capture_activations(model, images[s : s + B], ["features.relu4"])["features.relu4"].amax((2, 3))
                        for s in range(0, 240, B)])
    star = int(torch.bincount(maxima.argmax(0)).argmax())
    for i in (50, 100, 200):
        images[i], labels[i] = images[star], labels[star]
    for i in (20, 120, 220):
        images[i] = 0.0
    return images, labels


def brute_force(model: nn.Module, images: torch.Tensor, layer: str, by: str, target: object = None,
                labels: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Activations of every image (captured in batches of B, as the scan runs them), and per channel the
    full ranking: values, indices sorted by (value desc, index asc), positions; moments in float64."""
    acts, grads = [], []
    for s in range(0, len(images), B):
        x = images[s : s + B]
        if by == "relevance":  # ShapesNet is a Sequential trunk: split it at the layer by hand
            cut = [n for n, _ in model.features.named_children()].index(layer.split(".")[1]) + 1
            a = model.features[:cut](x).detach().requires_grad_(True)
            scores = model.fc(model.flatten(model.pool(model.features[cut:](a))))
            if target is None:
                chosen = scores.argmax(1)
            elif target == "label":
                chosen = labels[s : s + B]
            else:
                chosen = torch.full((len(x),), target)
            (g,) = torch.autograd.grad(scores.gather(1, chosen[:, None]).sum(), [a])
            acts.append(a.detach().numpy())
            grads.append(g.numpy())
        else:
            acts.append(capture_activations(model, x, [layer])[layer].numpy())
    a = np.concatenate(acts)
    n, c = a.shape[:2]
    flat = a.reshape(n, c, -1)
    width = a.shape[3] if a.ndim == 4 else 1
    wide = flat.astype(np.float64)
    if by == "relevance":
        product = wide * np.concatenate(grads).reshape(n, c, -1).astype(np.float64)
        values, arg = product.sum(2), product.argmax(2)
    elif by == "mean":
        values, arg = wide.mean(2), flat.argmax(2)
    else:
        values, arg = wide.max(2), flat.argmax(2)
    order = np.stack([np.lexsort((np.arange(n), -values[:, ch])) for ch in range(c)])  # (C, N)
    return {
        "values": np.take_along_axis(values.T, order, 1), "indices": order,
        "positions": np.stack([arg // width, arg % width], -1).transpose(1, 0, 2)[np.arange(c)[:, None], order],
        "mean": wide.mean((0, 2)), "std": wide.std((0, 2)), "image_mean": wide.mean(2),
    }


def test_top_k_max_and_mean_equal_brute_force(model, data, untouched):
    images, labels = data
    for by in ("max", "mean"):
        with untouched(model):
            result = scan(model, (images, labels), LAYERS, k=12, by=by, batch_size=B, progress=False)
        ties = 0
        for layer in LAYERS:
            ref = brute_force(model, images, layer, by)
            np.testing.assert_array_equal(result.top_indices[layer], ref["indices"][:, :12])
            np.testing.assert_array_equal(result.top_positions[layer], ref["positions"][:, :12])
            if by == "max":  # a maximum involves no rounding: bit-identical
                np.testing.assert_array_equal(result.top_values[layer], ref["values"][:, :12])
            np.testing.assert_allclose(result.top_values[layer], ref["values"][:, :12], rtol=1e-12, atol=1e-12)
            top = ref["values"][:, :13]
            ties += int((top[:, 1:] == top[:, :-1]).sum())  # equal neighbours the tie rule had to order
            np.testing.assert_allclose(result.channel_mean[layer], ref["mean"], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(result.channel_std[layer], ref["std"], rtol=1e-10, atol=1e-12)
            expected = np.stack([ref["image_mean"][labels.numpy() == cls].mean(0) for cls in range(5)])
            np.testing.assert_allclose(result.class_mean[layer], expected, rtol=1e-10, atol=1e-12)
        assert ties > 0, "the data set was meant to contain exact ties"
    with torch.no_grad():
        predicted = torch.cat([model(images[s : s + B]) for s in range(0, len(images), B)]).argmax(1).numpy()
    np.testing.assert_array_equal(result.predictions, predicted)
    assert result.accuracy == pytest.approx(float((predicted == labels.numpy()).mean()))
    assert result.count == 240 and result.classes == 5


@pytest.mark.parametrize("target", [None, 2, "label"])
def test_top_k_relevance_equals_brute_force(model, data, untouched, target):
    images, labels = data
    layer = "features.relu3"
    with untouched(model):
        result = scan(model, (images, labels), [layer], k=10, by="relevance", target=target, batch_size=B,
                      progress=False)
    ref = brute_force(model, images, layer, "relevance", target, labels)
    np.testing.assert_array_equal(result.top_indices[layer], ref["indices"][:, :10])
    np.testing.assert_array_equal(result.top_positions[layer], ref["positions"][:, :10])
    np.testing.assert_allclose(result.top_values[layer], ref["values"][:, :10], rtol=1e-6, atol=1e-9)
    assert result.target == target


def test_tie_goes_to_lower_index(model):
    """Sixteen identical images among dimmed others: where the copies lead a channel, its top-k must be
    the four lowest of their indices."""
    image = zoo.shapes_dataset(1, seed=4)[0]
    images = image.expand(2 * B, -1, -1, -1).clone()
    images[::2] = zoo.shapes_dataset(B, seed=9)[0] * 0.25  # odd indices are the copies
    result = scan(model, images, ["features.conv4"], k=4, batch_size=B, progress=False)
    ref = brute_force(model, images, "features.conv4", "max")
    np.testing.assert_array_equal(result.top_indices["features.conv4"], ref["indices"][:, :4])
    copies_on_top = (ref["values"][:, 0] == ref["values"][:, 3]) & (ref["indices"][:, 0] % 2 == 1)
    assert copies_on_top.any()
    np.testing.assert_array_equal(result.top_indices["features.conv4"][copies_on_top],
                                  [[1, 3, 5, 7]] * int(copies_on_top.sum()))


def test_merge_is_associative_and_equals_one_scan(model, data):
    images, labels = data[0][:224], data[1][:224]  # 224 = 14 batches: 1, 2 or 7 shards on batch bounds

    def part(lo: int, hi: int) -> ScanResult:
        return scan(model, (images[lo:hi], labels[lo:hi]), LAYERS, k=8, batch_size=B, progress=False)

    whole = part(0, 224)
    a, b, c = part(0, 64), part(64, 96), part(96, 224)
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    sevens = [part(i, i + 32) for i in range(0, 224, 32)]
    seven = sevens[0]
    for p in sevens[1:]:
        seven = seven.merge(p)
    for merged in (left, right, seven):
        assert merged == whole
        for layer in LAYERS:  # the exact part of ==, spelled out
            np.testing.assert_array_equal(merged.top_indices[layer], whole.top_indices[layer])
            np.testing.assert_array_equal(merged.top_values[layer], whole.top_values[layer])
            np.testing.assert_array_equal(merged.top_positions[layer], whole.top_positions[layer])
        np.testing.assert_array_equal(merged.predictions, whole.predictions)
    changed = copy.copy(whole)
    changed.tables = dict(whole.tables)
    t = whole.tables["fc"]
    changed.tables["fc"] = type(t)(t.values, t.indices, t.positions, t.n, t.mean * (1 + 100 * STAT_RTOL), t.m2,
                                   t.class_sum)
    assert changed != whole  # == is not vacuous
    with pytest.raises(ValueError, match="different settings"):
        whole.merge(scan(model, images[:16], ["fc"], k=8, batch_size=B, progress=False))


def test_save_load_round_trip_and_refuse_pickles(model, data, tmp_path):
    images, labels = data
    result = scan(model, (images[:64], labels[:64]), LAYERS, k=5, batch_size=B, progress=False)
    path = tmp_path / "scan.result"
    result.save(path)
    assert path.exists() and not (tmp_path / "scan.result.npz").exists()
    loaded = ScanResult.load(path)
    assert loaded == result and repr(loaded) == repr(result)
    for layer in LAYERS:
        np.testing.assert_array_equal(loaded.channel_std[layer], result.channel_std[layer])
    assert ScanResult.from_bytes(result.to_bytes()) == result
    evil = io.BytesIO()
    np.savez(evil, meta=np.array([{"format": "x"}], dtype=object))
    with pytest.raises(ValueError, match="not a saved ScanResult"):
        ScanResult.load(io.BytesIO(evil.getvalue()))
    damaged = dict(np.load(path))
    damaged["layer0.values"] = damaged["layer0.values"][:, :2]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **damaged)
    with pytest.raises(ValueError, match="layer 'features.conv4' values"):
        ScanResult.load(bad)


def _batches_of(images: torch.Tensor, labels: torch.Tensor, size: int, fail_at: int | None = None):
    for s in range(0, len(images), size):
        if fail_at is not None and s >= fail_at:
            raise RuntimeError("the disk went away")
        yield images[s : s + size], labels[s : s + size]


def test_resume_from_checkpoint_equals_one_scan(model, data, tmp_path, untouched):
    images, labels = data
    whole = scan(model, (images, labels), LAYERS, k=8, batch_size=B, progress=False)
    path = tmp_path / "partial.npz"
    with untouched(model), pytest.raises(RuntimeError, match="disk went away"):
        scan(model, _batches_of(images, labels, 32, fail_at=96), LAYERS, k=8, batch_size=B, progress=False,
             checkpoint=path)
    partial = ScanResult.load(path)
    assert partial.count == 96
    # a generator is re-read from the start, skipping what was scanned; items of 10 straddle image 96
    resumed = scan(model, _batches_of(images, labels, 10), LAYERS, k=8, batch_size=B, progress=False,
                   resume=partial)
    assert resumed == whole
    indexed = scan(model, (images, labels), LAYERS, k=8, batch_size=B, progress=False, resume=partial)
    assert indexed == whole
    with pytest.raises(ValueError, match="other settings"):
        scan(model, (images, labels), LAYERS, k=9, batch_size=B, progress=False, resume=partial)


def test_every_data_form_gives_the_same_scan(model, data):
    images, labels = data[0][:80], data[1][:80]
    reference = scan(model, (images, labels), ["features.conv4"], k=6, batch_size=B, progress=False)
    loader = DataLoader(TensorDataset(images, labels), batch_size=24, shuffle=False)  # re-cut into batches of B
    pairs = [(images[i], int(labels[i])) for i in range(80)]
    dicts = ({"image": images[i], "label": labels[i]} for i in range(80))
    uint8 = [((images[i] * 255).round().to(torch.uint8), int(labels[i])) for i in range(80)]
    for form in (loader, TensorDataset(images, labels), pairs, dicts):
        assert scan(model, form, ["features.conv4"], k=6, batch_size=B, progress=False) == reference
    unlabelled = scan(model, images, ["features.conv4"], k=6, batch_size=B, progress=False)
    assert unlabelled.accuracy is None and unlabelled.class_mean == {}
    np.testing.assert_array_equal(unlabelled.top_indices["features.conv4"], reference.top_indices["features.conv4"])
    pixels = scan(model, uint8, ["features.conv4"], k=6, batch_size=B, progress=False)
    assert pixels.count == 80 and pixels.accuracy == reference.accuracy


def test_images_of_two_sizes(model, data):
    """A change of image size ends a batch early (16, 4, 16, 4 images here); the numbers match brute
    force over those batches."""
    big = data[0][:20]
    small = torch.nn.functional.interpolate(data[0][20:40], size=(48, 48), mode="bilinear", align_corners=False)
    items = [*big, *small]
    result = scan(model, items, ["features.relu4"], k=40, batch_size=B, progress=False)
    acts = [capture_activations(model, torch.stack(items[lo:hi]), ["features.relu4"])["features.relu4"].double()
            for lo, hi in ((0, 16), (16, 20), (20, 36), (36, 40))]
    maxima = torch.cat([a.amax((2, 3)) for a in acts]).numpy()  # (40, C)
    order = np.stack([np.lexsort((np.arange(40), -column)) for column in maxima.T])
    np.testing.assert_array_equal(result.top_indices["features.relu4"], order)
    np.testing.assert_array_equal(result.top_values["features.relu4"], np.take_along_axis(maxima.T, order, 1))
    values = torch.cat([a.transpose(0, 1).reshape(a.shape[1], -1) for a in acts], dim=1)
    np.testing.assert_allclose(result.channel_mean["features.relu4"], values.mean(1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(result.channel_std["features.relu4"], values.std(1, correction=0).numpy(), rtol=1e-10)


class _Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.unused = nn.Conv2d(4, 4, 1)
        self.seq = nn.Flatten(2)  # (N, C, H·W): neither spatial nor a vector
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.seq(self.conv(x)).mean(2))


def test_clear_refusals(model, data, untouched):
    images = data[0][:8]
    odd = _Odd()
    with untouched(odd):
        with pytest.raises(ValueError, match="unknown layer 'features.conv5'.*did you mean"):
            scan(model, images, "features.conv5", progress=False)
        with pytest.raises(ValueError, match=r"outputs shape \(8, 4, 3844\)"):
            scan(odd, images, ["seq"], progress=False)
        with pytest.raises(ValueError, match="did not run"):
            scan(odd, images, ["unused"], progress=False)
    with pytest.raises(ValueError, match="by must be one of"):
        scan(model, images, "fc", by="median", progress=False)
    with pytest.raises(ValueError, match="target applies to by='relevance'"):
        scan(model, images, "fc", target=1, progress=False)
    with pytest.raises(ValueError, match="k must be a positive int"):
        scan(model, images, "fc", k=0, progress=False)
    with pytest.raises(TypeError, match="data must be"):
        scan(model, "images/", "fc", progress=False)
    with pytest.raises(ValueError, match="no images"):
        scan(model, [], "fc", progress=False)
    with pytest.raises(TypeError, match="labels must be integer class indices"):
        scan(model, [(images[0], 0.5)], "fc", progress=False)
    with pytest.raises(ValueError, match="out of range"):
        scan(model, images, "fc", by="relevance", target=7, progress=False)
    with pytest.raises(ValueError, match="layers is empty"):
        scan(model, images, [], progress=False)


def test_train_mode_model_is_scanned_in_eval_mode_and_restored(model, data, untouched):
    images, labels = data[0][:32], data[1][:32]
    trained = copy.deepcopy(model).train()
    with untouched(trained):
        result = scan(trained, (images, labels), ["features.bn4"], k=4, batch_size=B, progress=False)
    assert trained.training
    assert result == scan(model, (images, labels), ["features.bn4"], k=4, batch_size=B, progress=False)


def test_notebook_progress_bar(model, data, monkeypatch):
    shown = []
    monkeypatch.setattr(progress_module, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda w: shown.append(w))
    scan(model, data[0][:40], "fc", batch_size=B, progress=True)
    bar, label = shown[0].children
    assert (bar.value, bar.max, bar.bar_style) == (40, 40, "success")
    assert label.value.startswith("40 / 40 images · ") and label.value.endswith(" images/s")


def test_shard_bounds_fall_on_batches():
    assert shard_bounds(0, 100, 16, 3) == [(0, 32), (32, 64), (64, 100)]
    assert shard_bounds(96, 240, 16, 2) == [(96, 160), (160, 240)]
    assert shard_bounds(0, 10, 16, 4) == [(0, 10)]


def test_ray_driver_logic_without_ray(model, data):
    """What the Ray backend does, minus Ray: shards after a resumed prefix, each scanned by the worker
    function and shipped as npz bytes, merged in order on the driver — the local result."""
    images, labels = data
    whole = scan(model, (images, labels), LAYERS, k=8, batch_size=B, progress=False)
    start = scan(model, (images[:48], labels[:48]), LAYERS, k=8, batch_size=B, progress=False)
    settings = dict(layers=tuple(LAYERS), k=8, by="max", mean=None, std=None, output=None, target=None,
                    batch_size=B)
    bounds = shard_bounds(48, 240, B, 4)
    parts = {}
    for a, b in reversed(bounds):  # shards arrive in any order
        rows = {"start": np.array([a]), "stop": np.array([b])}
        out = scan_shards(rows, {"model": model, "data": (images, labels), "settings": settings})
        parts[int(out["start"][0])] = ScanResult.from_bytes(out["result"][0])
    assert merged_prefix(start, parts, bounds) == whole
    del parts[bounds[2][0]]
    assert merged_prefix(start, parts, bounds).count == bounds[2][0]  # stops at the gap


@pytest.mark.skipif(
    os.getloadavg()[0] >= 6,
    reason="Ray's agent misses its fixed 30 s start-up deadline on 2 cores at load >= 6 (the suite alone stays far below)",
)
def test_ray_equals_local(model, data, untouched):
    """backend='ray' (three shards on a 2-CPU local cluster) gives exactly the local result."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    images, labels = data
    local = scan(model, (images, labels), LAYERS, k=8, batch_size=B, progress=False)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with untouched(model):
            remote = scan(model, (images, labels), LAYERS, k=8, batch_size=B, progress=False, backend="ray", shards=3)
        assert remote == local
        for layer in LAYERS:
            np.testing.assert_array_equal(remote.top_values[layer], local.top_values[layer])
    finally:
        if started:
            ray.shutdown()
