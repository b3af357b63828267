"""channel_importance against brute force: ShapesNet split by hand at the layer (its trunk is a
Sequential), each channel zeroed or permuted with the documented random draws, the metric recomputed in
float64; the top-ranked channels matter more than random ones; a model with a skip connection around
the layer (where stacking perturbed copies would be wrong) still gives the brute-force numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_widgets import zoo
from cnn_widgets.dataset import Importance, channel_importance

B = 32
LAYER = "features.conv4"


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return zoo.load_shapesnet()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels, _ = zoo.shapes_dataset(128, seed=21)
    return images, labels


@pytest.fixture(scope="module")
def by_loss(model, data, untouched) -> Importance:
    with untouched(model):
        return channel_importance(model, data, LAYER, metric="loss", repeats=2, seed=3, batch_size=B, progress=False)


def split(model: nn.Module, layer: str):
    """(before, after): ShapesNet as two functions meeting at ``layer``'s output."""
    cut = [n for n, _ in model.features.named_children()].index(layer.split(".")[1]) + 1

    def after(a: torch.Tensor) -> torch.Tensor:
        return model.fc(model.flatten(model.pool(model.features[cut:](a))))

    return model.features[:cut], after


def losses(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.cross_entropy(scores.double(), labels, reduction="sum"))


_OUTPUTS: dict[tuple[int, str], tuple[torch.Tensor, list[torch.Tensor]]] = {}


def brute_force(model, images, labels, layer, perturb, metric="loss") -> float:
    """The metric summed over all images with ``perturb(a, batch_number)`` applied to the layer output
    (computed once per image set and layer, in batches of B)."""
    before, after = split(model, layer)
    with torch.no_grad():
        key = (id(images), layer)
        if key not in _OUTPUTS:  # the images are kept too, so their id cannot be reused meanwhile
            _OUTPUTS[key] = images, [before(images[s : s + B]) for s in range(0, len(images), B)]
        total = 0.0
        for i, a in enumerate(_OUTPUTS[key][1]):
            scores = after(perturb(a.clone(), i))
            y = labels[i * B : (i + 1) * B]
            total += losses(scores, y) if metric == "loss" else float((scores.argmax(1) == y).sum())
    return total


def test_zeroing_and_permutation_equal_brute_force(model, data, by_loss):
    images, labels = data
    n = len(images)
    base = brute_force(model, images, labels, LAYER, lambda a, i: a)
    assert by_loss.baseline == pytest.approx(base / n, rel=1e-5)
    zeroing = []
    for c in range(64):
        def zero(a, i, c=c):
            a[:, c] = 0
            return a
        zeroing.append(brute_force(model, images, labels, LAYER, zero) / n - base / n)
    np.testing.assert_allclose(by_loss.zeroing, zeroing, rtol=1e-4, atol=1e-6)

    # the documented draws: per batch, per repeat, per channel, randperm(batch) (again if the identity)
    g = torch.Generator().manual_seed(3)
    perms = []
    for s in range(0, n, B):
        m = min(B, n - s)
        batch = []
        for _ in range(2):
            row = []
            for _ in range(64):
                p = torch.randperm(m, generator=g)
                while bool((p == torch.arange(m)).all()):
                    p = torch.randperm(m, generator=g)
                row.append(p)
            batch.append(row)
        perms.append(batch)
    for c in (0, 7, 31, 63, *np.argsort(-by_loss.permutation)[:2]):
        drops = []
        for r in range(2):
            def permute(a, i, c=c, r=r):
                a[:, c] = a[perms[i][r][c], c]
                return a
            drops.append(brute_force(model, images, labels, LAYER, permute) / n - base / n)
        assert by_loss.permutation[c] == pytest.approx(np.mean(drops), rel=1e-4, abs=1e-6)
        assert by_loss.std[c] == pytest.approx(np.std(drops), rel=1e-3, abs=1e-6)


def test_top_ranked_channels_matter_more_than_random_ones(model, data, by_loss):
    """Zeroing the three channels ranked highest by permutation (loss) raises the loss more than zeroing
    any of eight random triples."""
    images, labels = data
    n = len(images)

    def rise(channels) -> float:
        def zero(a, i):
            a[:, list(channels)] = 0
            return a
        return brute_force(model, images, labels, LAYER, zero) / n - by_loss.baseline

    top = np.argsort(-by_loss.permutation, kind="stable")[:3]
    rng = np.random.default_rng(0)
    random_rises = [rise(rng.choice(64, 3, replace=False)) for _ in range(8)]
    assert rise(top) > max(random_rises)


def test_accuracy_metric_and_other_seed(model, data):
    images, labels = data[0][:64], data[1][:64]
    n = 64

    def run(metric: str, seed: int) -> Importance:
        return channel_importance(model, (images, labels), "features.relu4", metric=metric, repeats=1, seed=seed,
                                  batch_size=B, progress=False)

    passes = []
    handle = model.register_forward_hook(lambda *_: passes.append(1))
    try:
        acc = run("accuracy", 5)
    finally:
        handle.remove()
    assert len(passes) < 64  # perturbed copies went through stacked (2 batches × 128 perturbations)
    base = brute_force(model, images, labels, "features.relu4", lambda a, i: a, "accuracy")
    assert acc.baseline == base / n and acc.metric == "accuracy" and acc.count == n
    for c in (3, 40):
        def zero(a, i, c=c):
            a[:, c] = 0
            return a
        zeroed = brute_force(model, images, labels, "features.relu4", zero, "accuracy")
        assert acc.zeroing[c] == pytest.approx((base - zeroed) / n)
    assert np.allclose(acc.permutation * n, np.round(acc.permutation * n))  # whole images
    first, again, other = run("loss", 5), run("loss", 5), run("loss", 6)
    np.testing.assert_array_equal(again.permutation, first.permutation)  # seeded: repeatable
    np.testing.assert_array_equal(again.zeroing, first.zeroing)
    assert not np.array_equal(other.permutation, first.permutation)
    np.testing.assert_array_equal(other.zeroing, first.zeroing)  # zeroing draws nothing


class _Residual(nn.Module):
    """out = head(relu(conv2(conv1(x)) + conv1(x))): the layer conv2 sits inside a skip connection, so
    the part after it also reads conv1's output."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
            self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
            self.head = nn.Linear(6, 3)

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv1(x)
        return self.conv2(skip), skip

    def finish(self, a: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(a + skip).mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(*self.parts(x))


def test_skip_connection_around_the_layer(untouched):
    model = _Residual().eval()
    images = torch.rand(20, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(20) % 3
    with untouched(model):
        imp = channel_importance(model, (images, labels), "conv2", metric="loss", repeats=1, seed=2, batch_size=8,
                                 progress=False)
    g = torch.Generator().manual_seed(2)
    total_base, totals = 0.0, np.zeros((2, 6))
    with torch.no_grad():
        for s in range(0, 20, 8):
            x, y = images[s : s + 8], labels[s : s + 8]
            a, skip = model.parts(x)
            total_base += losses(model.finish(a, skip), y)
            for c in range(6):
                p = torch.randperm(len(x), generator=g)
                while bool((p == torch.arange(len(x))).all()):
                    p = torch.randperm(len(x), generator=g)
                permuted, zeroed = a.clone(), a.clone()
                permuted[:, c] = a[p, c]
                zeroed[:, c] = 0
                totals[0, c] += losses(model.finish(permuted, skip), y)
                totals[1, c] += losses(model.finish(zeroed, skip), y)
    np.testing.assert_allclose(imp.permutation, (totals[0] - total_base) / 20, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(imp.zeroing, (totals[1] - total_base) / 20, rtol=1e-4, atol=1e-7)


def test_refusals(model, data):
    images = data[0][:8]
    with pytest.raises(ValueError, match="metric must be one of"):
        channel_importance(model, images, LAYER, metric="f1", progress=False)
    with pytest.raises(ValueError, match="unknown layer"):
        channel_importance(model, images, "features.conv9", progress=False)
    with pytest.raises(TypeError, match="one layer name"):
        channel_importance(model, images, [LAYER], progress=False)
    with pytest.raises(ValueError, match="repeats must be a positive int"):
        channel_importance(model, images, LAYER, repeats=0, progress=False)


@pytest.mark.parametrize("metric", ["loss", "accuracy"])
def test_a_label_the_model_has_no_class_for_is_a_clear_error(metric, untouched):
    """Labels of a 10-class dataset on a 5-class head: 'loss' raised numpy's IndexError, 'accuracy'
    silently gave all-zero importances."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 5)).eval()
    images = torch.rand(4, 3, 16, 16)
    with untouched(net), pytest.raises(ValueError, match=r"label 9 is not a class of this model \(it has 5 outputs"):
        channel_importance(net, (images, torch.tensor([0, 9, 4, 2])), "0", metric=metric, repeats=1, progress=False)
    with untouched(net):
        imp = channel_importance(net, (images, torch.tensor([0, 4, -1, 2])), "0", metric=metric, repeats=1,
                                 progress=False)
    assert imp.count == 4 and imp.permutation.shape == (4,)
