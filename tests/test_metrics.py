"""Attribution metrics: deletion/insertion curves (one at a time and batched), the cascading randomisation
test, the pointing game and mass inside the mask, Captum's infidelity and max-sensitivity — each against
an independent computation, and on ShapesNet, whose attention is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnn_widgets import attribute, zoo
from cnn_widgets.metrics import (
    ROAD_NOISE, average_ranks, curves, deletion_auc, gaussian_blur, infidelity, insertion_auc, mass_inside,
    pointing_game, randomization_maps, randomization_test, road_impute, sensitivity_max, spearman,
)
from cnn_widgets.zoo.train import HELDOUT_SEED

CASCADE = [
    "fc", "features.bn4", "features.conv4", "features.bn3", "features.conv3", "features.bn2",
    "features.conv2", "features.bn1", "features.conv1",
]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return zoo.load_shapesnet("clean")


@pytest.fixture(scope="module")
def heldout() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return zoo.shapes_dataset(24, seed=HELDOUT_SEED)


def sobel(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """An edge detector of the input that ignores the model: the Sobel gradient magnitude of the grey image."""
    grey = image.mean(dim=0, keepdim=True)[None]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx = torch.nn.functional.conv2d(grey, kx.view(1, 1, 3, 3), padding=1)
    gy = torch.nn.functional.conv2d(grey, kx.t().reshape(1, 1, 3, 3), padding=1)
    return (gx.square() + gy.square()).sqrt()[0, 0]


# --- deletion / insertion ----------------------------------------------------------------------------


def test_grad_cam_order_beats_its_reverse(model, heldout, untouched):
    """On held-out images the Grad-CAM order deletes the evidence faster (lower deletion AUC) and restores
    it faster (higher insertion AUC) than the same map's reversed order, with the default blur baseline."""
    images = heldout[0][:6]
    with untouched(model):
        for image in images:
            a = attribute(model, image, "grad_cam")
            deletion = deletion_auc(model, image, a, steps=16)
            insertion = insertion_auc(model, image, a, steps=16)
            reverse_deletion = deletion_auc(model, image, -a.map, a.target, steps=16)
            reverse_insertion = insertion_auc(model, image, -a.map, a.target, steps=16)
            assert deletion.auc + 0.3 < reverse_deletion.auc, (deletion.auc, reverse_deletion.auc)
            assert insertion.auc > reverse_insertion.auc + 0.3, (insertion.auc, reverse_insertion.auc)
            assert deletion.target == insertion.target == a.target


def test_grad_cam_order_beats_its_reverse_with_road(model, heldout, untouched):
    images = heldout[0][6:8]
    with untouched(model):
        for image in images:
            a = attribute(model, image, "grad_cam")
            deletion = deletion_auc(model, image, a, baseline="road", steps=16)
            reverse = deletion_auc(model, image, -a.map, a.target, baseline="road", steps=16)
            assert deletion.auc + 0.3 < reverse.auc, (deletion.auc, reverse.auc)


def _softmax_rows(model: nn.Module, batch: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(batch).double(), dim=1).numpy()


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
@pytest.mark.parametrize("baseline", ["black", "mean"])
def test_curve_matches_a_direct_computation(model, heldout, kind, baseline):
    """Probabilities, normalisation and AUC against images perturbed here pixel by pixel in numpy."""
    image = heldout[0][8]
    rng = np.random.default_rng(0)
    heat = rng.integers(0, 5, size=(64, 64)).astype(np.float64)  # many ties: the order keeps row-major
    steps = 4
    fn = deletion_auc if kind == "deletion" else insertion_auc
    curve = fn(model, image, torch.from_numpy(heat), 2, baseline=baseline, steps=steps)

    img = image.numpy().astype(np.float64)
    mean_colour = np.broadcast_to(img.mean(axis=(1, 2), keepdims=True), img.shape)
    base = np.zeros_like(img) if baseline == "black" else mean_colour
    order = sorted(range(64 * 64), key=lambda i: (-heat.flat[i], i))
    batch = []
    for k in range(steps + 1):
        chosen = order[: round(k * 64 * 64 / steps)]
        x = img.copy() if kind == "deletion" else base.copy()
        for i in chosen:
            y, xx = divmod(i, 64)
            x[:, y, xx] = base[:, y, xx] if kind == "deletion" else img[:, y, xx]
        batch.append(x)
    probs = _softmax_rows(model, torch.tensor(np.stack(batch), dtype=torch.float32))[:, 2]
    np.testing.assert_allclose(curve.probabilities.numpy(), probs, rtol=1e-4, atol=1e-7)
    intact = probs[0] if kind == "deletion" else probs[-1]
    scores = np.clip(probs / intact, 0, 1)
    np.testing.assert_allclose(curve.scores.numpy(), scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(curve.fractions.numpy(), np.linspace(0, 1, steps + 1), atol=1e-7)
    assert curve.auc == pytest.approx(float(np.trapezoid(scores, np.linspace(0, 1, steps + 1))), rel=1e-4)
    assert 0.0 <= curve.auc <= 1.0
    assert curve.target == 2 and curve.kind == kind and curve.baseline == baseline


def test_default_target_normalisation_and_batching(model, heldout):
    image = heldout[0][9]
    a = attribute(model, image, "grad_cam")
    with torch.no_grad():
        top = int(model(image[None]).argmax())
    curve = deletion_auc(model, image, a.map, steps=8)
    assert curve.target == top
    assert curve.scores[0] == 1.0
    assert insertion_auc(model, image, a.map, steps=8).scores[-1] == 1.0
    other = (top + 1) % 5
    explained = attribute(model, image, "grad_cam", target=other)
    assert deletion_auc(model, image, explained, steps=8).target == other  # an Attribution brings its target
    one_by_one = deletion_auc(model, image, a.map, steps=8, batch_size=1)
    torch.testing.assert_close(one_by_one.probabilities, curve.probabilities, rtol=1e-5, atol=1e-7)


class Normalised(nn.Module):
    """ShapesNet behind an input normalisation: it takes (x - mean) / std and undoes it."""

    def __init__(self, inner: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        self.register_buffer("std", std.view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * self.std + self.mean)


@pytest.mark.parametrize("baseline", ["blur", "black", "road"])
def test_perturbations_happen_in_pixel_units(model, heldout, baseline):
    """With mean/std given, pixels are removed before normalisation: a model behind a normalisation layer
    gives the same curve as the bare model on raw pixels."""
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    wrapped = Normalised(model, mean, std).eval()
    image = heldout[0][10]
    heat = attribute(model, image, "grad_cam").map
    plain = deletion_auc(model, image, heat, baseline=baseline, steps=8)
    normalised = deletion_auc(wrapped, image, heat, baseline=baseline, steps=8, mean=mean.tolist(), std=std.tolist())
    torch.testing.assert_close(normalised.probabilities, plain.probabilities, rtol=1e-4, atol=1e-6)


def _reference_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    padded = np.pad(img, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    out = np.zeros_like(img)
    for y in range(img.shape[1]):
        for xx in range(img.shape[2]):
            out[:, y, xx] = (padded[:, y : y + 2 * radius + 1, xx : xx + 2 * radius + 1] * kernel).sum(axis=(1, 2))
    return out


def test_gaussian_blur_against_a_dense_kernel():
    img = np.random.default_rng(1).random((3, 12, 10))
    got = gaussian_blur(torch.tensor(img)[None], 1.7)[0].numpy()
    np.testing.assert_allclose(got, _reference_blur(img, 1.7), atol=1e-12)


def _reference_road(img: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """ROAD's linear system assembled pixel by pixel as in the paper's code and solved densely."""
    h, w = missing.shape
    ids = {p: i for i, p in enumerate(zip(*np.nonzero(missing)))}
    weights = {(dy, dx): (1 / 12 if dy and dx else 1 / 6) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx}
    a = np.zeros((len(ids), len(ids)))
    b = np.zeros((len(ids), img.shape[0]))
    for (y, x), i in ids.items():
        for (dy, dx), wt in weights.items():
            ny, nx = y + dy, x + dx
            if not (0 <= ny < h and 0 <= nx < w):
                continue
            a[i, i] += wt
            if missing[ny, nx]:
                a[i, ids[(ny, nx)]] -= wt
            else:
                b[i] += wt * img[:, ny, nx]
    out = img.copy()
    if ids:
        solution = np.linalg.solve(a, b)
        for (y, x), i in ids.items():
            out[:, y, x] = solution[i]
    return out


def test_road_imputation_solves_the_papers_system():
    rng = np.random.default_rng(2)
    img = gaussian_blur(torch.tensor(rng.random((1, 3, 20, 18))), 1.0)[0].numpy()
    yy, xx = np.mgrid[0:20, 0:18]
    masks = [
        rng.random((20, 18)) < 0.3,  # scattered
        (yy - 9) ** 2 + (xx - 8) ** 2 < 36,  # a blob
        rng.random((20, 18)) < 0.97,  # almost everything
        np.ones((20, 18), dtype=bool),  # everything: the mean colour
        np.zeros((20, 18), dtype=bool),  # nothing
    ]
    missing = torch.tensor(np.stack(masks))[:, None]
    got = road_impute(torch.tensor(img, dtype=torch.float32)[None], missing, noise=0.0)[:, :].double().numpy()
    for k, mask in enumerate(masks[:3]):
        np.testing.assert_allclose(got[k], _reference_road(img, mask), atol=1e-3)
    np.testing.assert_allclose(got[3], np.broadcast_to(img.mean(axis=(1, 2), keepdims=True), img.shape), atol=1e-6)
    np.testing.assert_allclose(got[4], img, atol=1e-6)


def test_road_noise_only_on_removed_pixels_and_seeded():
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    missing = (torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1)) < 0.5)
    clean = road_impute(img, missing, noise=0.0)
    noisy = road_impute(img, missing, seed=3)
    difference = (noisy - clean)[0]
    assert torch.equal(difference[:, ~missing[0, 0]], torch.zeros_like(difference[:, ~missing[0, 0]]))
    assert float(difference[:, missing[0, 0]].std()) == pytest.approx(ROAD_NOISE, rel=0.1)
    assert torch.equal(road_impute(img, missing, seed=3), noisy)
    assert not torch.equal(road_impute(img, missing, seed=4), noisy)


def test_curve_argument_errors(model, heldout):
    image = heldout[0][0]
    heat = torch.rand(64, 64)
    with pytest.raises(ValueError, match="baseline must be one of"):
        deletion_auc(model, image, heat, baseline="grey")
    with pytest.raises(ValueError, match="attribution_map is \\(32, 32\\)"):
        deletion_auc(model, image, torch.rand(32, 32))
    with pytest.raises(ValueError, match="attribution_map contains NaN"):
        deletion_auc(model, image, torch.full((64, 64), float("nan")))
    with pytest.raises(TypeError, match="attribution_map must be"):
        deletion_auc(model, image, [[0.0]])
    with pytest.raises(ValueError, match="steps must be a positive int"):
        insertion_auc(model, image, heat, steps=0)
    with pytest.raises(ValueError, match="target 7 is out of range"):
        insertion_auc(model, image, heat, 7, steps=2)
    with pytest.raises(ValueError, match="baseline image has shape"):
        deletion_auc(model, image, heat, baseline=torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="expected one image"):
        deletion_auc(model, heldout[0][:2], heat)


# --- randomisation test ------------------------------------------------------------------------------


def test_cascade_randomises_a_copy_cumulatively_from_the_top(model, heldout, untouched):
    """The default steps are the parameterised layers from the output side down; after step k exactly the
    first k layers of the copy differ from the user's model, which is never the one passed to the method."""
    originals = {name: [p.detach().clone() for p in m.parameters(recurse=False)]
                 for name, m in model.named_modules() if name in CASCADE}
    changed: list[list[str]] = []

    def probe(copy: nn.Module, image: torch.Tensor) -> torch.Tensor:
        assert copy is not model
        modules = dict(copy.named_modules())
        changed.append([n for n in CASCADE if any(
            not torch.equal(p, q) for p, q in zip(modules[n].parameters(recurse=False), originals[n]))])
        return sobel(copy, image)

    rng_state = torch.get_rng_state()
    with untouched(model):
        result = randomization_test(model, heldout[0][0], probe)
    assert torch.equal(torch.get_rng_state(), rng_state), "the global RNG state changed"
    assert [name for name, _ in result] == CASCADE
    assert changed == [CASCADE[:k] for k in range(len(CASCADE) + 1)]


def test_grad_cam_fails_to_survive_randomising_the_top_block(model, heldout, untouched):
    """Adebayo et al.'s check on held-out images and three seeds: randomising the classifier, and then the
    rest of the top block (fc, bn4, conv4), leaves Grad-CAM's rank correlation with its original map
    below 0.5 on average; an edge detector of the input, which ignores the model, stays above 0.9."""
    top = ["fc", "features.bn4", "features.conv4"]
    after_fc, after_block = [], []
    with untouched(model):
        for seed in range(3):
            for image in heldout[0][:6]:
                steps = dict(randomization_test(model, image, "grad_cam", layers=top, seed=seed))
                after_fc.append(steps["fc"])
                after_block.append(steps["features.conv4"])
        edges = randomization_test(model, heldout[0][0], sobel)
    assert np.mean(after_fc) < 0.5, after_fc
    assert np.mean(after_block) < 0.5, after_block
    assert all(rho > 0.9 for _, rho in edges), edges


def test_randomisation_is_seeded_and_named_steps_may_be_blocks(model, heldout):
    image = heldout[0][1]
    a = randomization_test(model, image, "saliency", layers=["fc", "features"], seed=5)
    b = randomization_test(model, image, "saliency", layers=["fc", "features"], seed=5)
    c = randomization_test(model, image, "saliency", layers=["fc", "features"], seed=6)
    assert a == b
    assert a != c
    assert [name for name, _ in a] == ["fc", "features"]


class Scaled(nn.Module):
    """A module with a parameter of its own and no ``reset_parameters``."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.arange(1.0, 6.0).view(1, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def test_modules_without_reset_are_permuted(heldout):
    net = nn.Sequential(zoo.load_shapesnet(), Scaled()).eval()
    seen: list[torch.Tensor] = []

    def probe(copy: nn.Module, image: torch.Tensor) -> torch.Tensor:
        seen.append(copy[1].gain.detach().clone())
        return sobel(copy, image)

    result = randomization_test(net, heldout[0][0], probe, layers=["1"])
    assert [name for name, _ in result] == ["1"]
    before, after = seen
    assert not torch.equal(before, after)
    assert torch.equal(after.sort().values, before.sort().values)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_randomization_argument_errors(model, heldout):
    image = heldout[0][0]
    with pytest.raises(TypeError, match="method must be a name"):
        randomization_test(model, image, 3)
    with pytest.raises(ValueError, match="unknown method"):
        randomization_test(model, image, "grad_cma")
    with pytest.raises(ValueError, match="callable method chooses its own target"):
        randomization_test(model, image, sobel, target=1)
    with pytest.raises(ValueError, match="unknown layer"):
        randomization_test(model, image, "saliency", layers=["features.conv9"])
    with pytest.raises(ValueError, match="has no parameters"):
        randomization_test(model, image, "saliency", layers=["features.relu1"])
    with pytest.raises(TypeError, match="layers must be a list"):
        randomization_test(model, image, "saliency", layers="fc")
    with pytest.raises(ValueError, match=r"layers is empty.*layers=None"):
        randomization_test(model, image, "saliency", layers=[])
    with pytest.raises(TypeError, match="TorchScript"):
        randomization_test(torch.jit.script(model), image, "saliency")


# --- rank correlation and localisation -------------------------------------------------------------


def _naive_ranks(values: list[float]) -> list[float]:
    return [sum(v < x for v in values) + (sum(v == x for v in values) + 1) / 2 for x in values]


def test_spearman_against_a_direct_definition():
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.integers(0, 6, size=40).astype(float)  # heavy ties
        b = a + rng.integers(0, 4, size=40)
        expected = np.corrcoef(_naive_ranks(list(a)), _naive_ranks(list(b)))[0, 1]
        assert spearman(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, abs=1e-12)
        assert average_ranks(torch.tensor(a)).tolist() == _naive_ranks(list(a))
    x = torch.rand(8, 8)
    assert spearman(x, x.exp()) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, torch.zeros(8, 8)) == 0.0
    pandas = pytest.importorskip("pandas")
    a, b = rng.random(50).round(1), rng.random(50).round(1)
    ranks_a, ranks_b = pandas.Series(a).rank(method="average"), pandas.Series(b).rank(method="average")
    assert spearman(a, b) == pytest.approx(ranks_a.corr(ranks_b), abs=1e-12)
    with pytest.raises(ValueError, match="equal size"):
        spearman(torch.rand(3), torch.rand(4))


def test_pointing_game_and_mass_by_hand():
    heat = torch.tensor([[0.0, 3.0, 1.0], [-2.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[1:, :2] = True
    assert pointing_game(heat, mask) is False
    assert pointing_game(heat, mask, tolerance=1) is True
    mask_top = torch.zeros(3, 3, dtype=torch.bool)
    mask_top[0, 1] = True
    assert pointing_game(heat, mask_top) is True
    assert pointing_game(torch.ones(3, 3), mask_top) is False  # a flat map does not score
    assert mass_inside(heat, mask) == pytest.approx(0.5 / 4.5)
    assert mass_inside(heat, mask_top.numpy().astype(np.uint8)) == pytest.approx(3.0 / 4.5)
    assert np.isnan(mass_inside(-heat.abs(), mask))
    batch = pointing_game(torch.stack([heat, heat]), torch.stack([mask, mask_top]))
    assert batch.tolist() == [False, True]
    assert mass_inside(torch.stack([heat, heat]), torch.stack([mask, mask_top])).tolist() == pytest.approx(
        [0.5 / 4.5, 3.0 / 4.5])
    with pytest.raises(ValueError, match="mask must be a tensor or array shaped like the map"):
        pointing_game(heat, mask[:2])
    with pytest.raises(ValueError, match="mask must be boolean"):
        mass_inside(heat, mask.float() * 2)


def test_localisation_of_grad_cam_on_shapesnet(model, heldout):
    """On ShapesNet's held-out images Grad-CAM's peak is on the object, agreeing with a plain argmax check
    wherever the peak is unique, and its positive mass sits on the object far above the object's area."""
    images, _, masks = heldout
    maps = attribute(model, images, "grad_cam").map
    hits = pointing_game(maps, masks)
    flat = maps.flatten(1)
    unique = (flat == flat.amax(dim=1, keepdim=True)).sum(dim=1) == 1
    argmax_hits = masks.flatten(1)[torch.arange(len(flat)), flat.argmax(dim=1)]
    assert torch.equal(hits[unique], argmax_hits[unique])
    assert hits.float().mean() >= 0.9
    share = mass_inside(maps, masks)
    area = masks.flatten(1).float().mean(dim=1)
    assert float(share.mean()) > 2 * float(area.mean())


# --- batched curves ----------------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ["blur", "road"])
def test_curves_of_many_maps_equal_the_single_curves(model, heldout, baseline, untouched):
    """curves() evaluates every map's deletion and insertion images in shared batches (batch size not a
    multiple of a curve's length) and gives what deletion_auc/insertion_auc give one map at a time."""
    image = heldout[0][11]
    a = attribute(model, image, "grad_cam")
    maps = [a, torch.rand(64, 64, generator=torch.Generator().manual_seed(4)), -a.map]
    with untouched(model):
        found = curves(model, image, maps, [None, 3, a.target], baseline=baseline, steps=6, batch_size=5)
    for (deletion, insertion), heat, target in zip(found, maps, [None, 3, a.target]):
        alone_d = deletion_auc(model, image, heat, target, baseline=baseline, steps=6)
        alone_i = insertion_auc(model, image, heat, target, baseline=baseline, steps=6)
        for got, alone in ((deletion, alone_d), (insertion, alone_i)):
            assert (got.kind, got.target, got.baseline) == (alone.kind, alone.target, alone.baseline)
            torch.testing.assert_close(got.probabilities, alone.probabilities, rtol=1e-4, atol=1e-6)
            assert got.auc == pytest.approx(alone.auc, abs=1e-5)
    assert found[1][0].target == 3 and found[0][0].target == a.target


def test_curves_report_progress_and_check_arguments(model, heldout):
    image = heldout[0][11]
    seen: list[float] = []
    curves(model, image, [torch.rand(64, 64)], steps=4, batch_size=3, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 4  # 10 images in passes of 3
    with pytest.raises(TypeError, match="maps must be a list"):
        curves(model, image, torch.rand(64, 64))
    with pytest.raises(ValueError, match="one entry .* per map"):
        curves(model, image, [torch.rand(64, 64)], [1, 2])
    with pytest.raises(ValueError, match="maps is empty; pass a list of at least one map"):  # was torch.cat's text
        curves(model, image, [])


# --- infidelity and max-sensitivity --------------------------------------------------------------------


class PixelLinear(nn.Module):
    """f(x)[k] = (k + 1) · Σ_p w_p Σ_c x_{c,p}: linear in the pixels, one weight per pixel shared by the
    channels, so a map with value C·w_p predicts every perturbation's effect exactly."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.sum(dim=1) * self.weight).flatten(1).sum(dim=1, keepdim=True)
        return s * torch.arange(1.0, 4.0)


def test_infidelity_against_a_direct_computation(untouched):
    """Captum's infidelity through our perturbations, recomputed here from the same noise: E[(Iᵀφ − (f(x) −
    f(x − I)))²] with I one Gaussian value per pixel (patch=1) or per square, shared by the channels; an
    exact linear map scores 0, also rescaled when normalize=True."""
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(8, 8, generator=g)
    net = PixelLinear(weight).eval()
    image = torch.rand(3, 8, 8, generator=g)
    heat = torch.randn(8, 8, generator=g).double()
    with untouched(net):
        got = infidelity(net, image, heat, 1, noise=0.1, patch=1, n_perturb_samples=7, normalize=False, seed=2)
    noise = 0.1 * torch.randn((7, 1, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    change = (2 * (weight.double() * 3 * noise.double()[:, 0]).flatten(1).sum(1))  # f(x) − f(x − I), class 1
    predicted = (noise.double()[:, 0] * heat).flatten(1).sum(1)
    assert got == pytest.approx(float(((predicted - change) ** 2).mean()), rel=1e-4)
    exact = 2 * 3 * weight
    squares = infidelity(net, image, heat, 1, noise=0.1, patch=3, n_perturb_samples=4, normalize=False, seed=2)
    coarse = 0.1 * torch.randn((4, 1, 3, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    field = coarse.double().repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)[:, 0, :8, :8]
    change = 2 * (weight.double() * 3 * field).flatten(1).sum(1)
    assert squares == pytest.approx(float((((field * heat).flatten(1).sum(1) - change) ** 2).mean()), rel=1e-4)
    wrong = infidelity(net, image, 5 * exact, 1, normalize=False)
    assert wrong > 1.0
    assert infidelity(net, image, exact, 1, normalize=False) == pytest.approx(0.0, abs=1e-6 * wrong)
    assert infidelity(net, image, 5 * exact, 1, normalize=True) == pytest.approx(0.0, abs=1e-6 * wrong)


def test_infidelity_on_shapesnet(model, heldout, untouched):
    """With the default region-sized perturbations, Grad-CAM's map predicts the score's response better
    than a random map does, on average over held-out images."""
    ratios = []
    with untouched(model):
        for image in heldout[0][:6]:
            a = attribute(model, image, "grad_cam")
            noise_map = torch.rand(64, 64, generator=torch.Generator().manual_seed(1))
            ratios.append(infidelity(model, image, a, n_perturb_samples=64)
                          / infidelity(model, image, noise_map, a.target, n_perturb_samples=64))
    assert np.mean(ratios) < 0.95, ratios


def test_sensitivity_max_against_a_direct_computation(model, heldout, untouched):
    """With a callable method: the largest ‖φ(x + δ) − φ(x)‖ / ‖φ(x)‖ over uniform δ in the L∞ ball,
    redrawn here from the same seed; the caller's RNG state is unchanged."""
    image = heldout[0][2]
    state = torch.get_rng_state()
    with untouched(model):
        got = sensitivity_max(model, image, sobel, radius=0.05, n_perturb_samples=5, seed=9)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        delta = torch.empty(5, 3, 64, 64).uniform_(-0.05, 0.05)
    base = sobel(model, image).double()
    expected = max(float((sobel(model, image + d).double() - base).norm() / base.norm()) for d in delta)
    assert got == pytest.approx(expected, rel=1e-4)
    assert sensitivity_max(model, image, sobel, radius=0.05, n_perturb_samples=5, seed=9) == got


def test_sensitivity_max_of_methods_on_shapesnet(model, heldout, untouched):
    """Through attribute(): the gradient is far more sensitive to invisible noise than Grad-CAM (Yeh et
    al.'s observation), and a fixed target is kept for every perturbed copy."""
    image = heldout[0][3]
    with untouched(model):
        saliency = sensitivity_max(model, image, "saliency")
        grad_cam = sensitivity_max(model, image, "grad_cam", layer="features.conv4")
    assert saliency > 2 * grad_cam, (saliency, grad_cam)
    other = (attribute(model, image, "grad_cam").target + 1) % 5
    assert sensitivity_max(model, image, "grad_cam", other, layer="features.conv4") != grad_cam


def test_infidelity_and_sensitivity_errors(model, heldout):
    image = heldout[0][0]
    with pytest.raises(ValueError, match="noise must be a positive number"):
        infidelity(model, image, torch.rand(64, 64), noise=0)
    with pytest.raises(ValueError, match="n_perturb_samples must be a positive int"):
        infidelity(model, image, torch.rand(64, 64), n_perturb_samples=0)
    with pytest.raises(ValueError, match="attribution_map is"):
        infidelity(model, image, torch.rand(8, 8))
    with pytest.raises(ValueError, match="target 9 is out of range"):
        infidelity(model, image, torch.rand(64, 64), 9)
    with pytest.raises(ValueError, match="radius must be a positive number"):
        sensitivity_max(model, image, "saliency", radius=-1.0)
    with pytest.raises(ValueError, match="unknown method"):
        sensitivity_max(model, image, "salency")
    with pytest.raises(ValueError, match="callable method chooses its own"):
        sensitivity_max(model, image, sobel, target=1)


def test_randomization_maps_match_the_test(model, heldout):
    image = heldout[0][4]
    original, steps = randomization_maps(model, image, "grad_cam", layers=["fc", "features.conv4"], layer="features.conv3")
    assert original.shape == (64, 64)
    assert [(n, r) for n, r, _ in steps] == randomization_test(
        model, image, "grad_cam", layers=["fc", "features.conv4"], layer="features.conv3")
    for _, rho, heat in steps:
        assert rho == pytest.approx(spearman(original, heat))
    intact = attribute(model, image, "grad_cam", layer="features.conv3").map
    torch.testing.assert_close(original, intact.double(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown layer"):
        randomization_maps(model, image, "grad_cam", layer="features.conv9")


class FlattensInput(nn.Module):
    """A model that views its input, which only works on contiguous tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(x.shape[0], -1))


def test_curves_of_a_model_that_needs_contiguous_input(untouched):
    """Curves feed channels-last batches for speed; a model that cannot take them gets contiguous ones."""
    torch.manual_seed(0)
    net = FlattensInput().eval()
    image = torch.rand(3, 8, 8)
    heat = torch.rand(8, 8)
    with untouched(net):
        curve = deletion_auc(net, image, heat, 1, baseline="black", steps=4, batch_size=2)
    order = torch.argsort(heat.flatten(), descending=True, stable=True)
    expected = []
    for k in range(5):
        x = image.clone().view(3, -1)
        x[:, order[: round(k * 64 / 4)]] = 0.0
        with torch.no_grad():
            expected.append(float(torch.softmax(net(x.view(1, -1)).double(), dim=1)[0, 1]))
    torch.testing.assert_close(curve.probabilities.double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-5, atol=1e-7)


def test_progress_and_cancel_inside_the_checks(model, heldout):
    """randomization_test and sensitivity_max report progress up to 1 and stop when it raises."""
    from cnn_widgets import Cancelled

    image = heldout[0][5]
    seen: list[float] = []
    randomization_test(model, image, "saliency", layers=["fc", "features.conv4"], progress=seen.append)
    assert seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)
    assert all(a <= b + 1e-12 for a, b in zip(seen, seen[1:]))

    def stop(fraction: float) -> None:
        raise Cancelled()

    with pytest.raises(Cancelled):
        randomization_test(model, image, "saliency", progress=stop)
    with pytest.raises(Cancelled):
        sensitivity_max(model, image, "saliency", progress=stop)
