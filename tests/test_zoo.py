"""The bundled demo data and models: determinism, ground-truth masks, the shortcut mark, shipped
weights, and that Grad-CAM on the shipped models points where the design says (checked with a
small reference Grad-CAM written here on plain autograd, independent of the library)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_widgets import zoo
from cnn_widgets.zoo import CHEAT_CLASS, CLASSES, load_shapesnet, mark_mask, shapes_dataset, shapesnet
from cnn_widgets.zoo.shapesnet import weights_path
from cnn_widgets.zoo.train import EPOCHS, HELDOUT_SEED, TRAIN_SEED

TEST_SEED = 7  # held out: no training epoch uses it
MAX_NOISE = 0.08 * 3**0.5  # largest deviation of the uniform pixel noise (std at most 0.08)
LAST_CONV_LAYERS = ("features.conv4", "features.relu4")


def grad_cam(model: nn.Module, images: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
    """Reference Grad-CAM ``(N, H, W)``: ReLU(Σ_k α_k A_k) with α_k the spatial mean of
    ∂score_target/∂A_k, bilinearly upsampled to the input size."""
    store: dict[str, torch.Tensor] = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: store.__setitem__("act", out)
    )
    try:
        scores = model(images)
    finally:
        handle.remove()
    act = store["act"]
    (grad,) = torch.autograd.grad(scores.gather(1, target[:, None]).sum(), act)
    cam = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
    return F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()


def has_mark(images: torch.Tensor) -> torch.Tensor:
    """Whether each image shows the mark: its pixels are exactly black or white, both present, equal
    in all three channels (noise makes this impossible by chance)."""
    size = images.shape[-1]
    px = images[:, :, mark_mask(size)]  # (N, 3, P)
    binary = ((px == 0) | (px == 1)).flatten(1).all(1)
    grey = (px == px[:, :1]).flatten(1).all(1)
    both = (px[:, 0] == 0).any(1) & (px[:, 0] == 1).any(1)
    return binary & grey & both


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {variant: load_shapesnet(variant) for variant in zoo.VARIANTS}


def test_public_names() -> None:
    assert isinstance(CLASSES, tuple) and 4 <= len(CLASSES) <= 6 and len(set(CLASSES)) == len(CLASSES)
    assert isinstance(CHEAT_CLASS, int) and 0 <= CHEAT_CLASS < len(CLASSES)
    assert zoo.resnet18_like(num_classes=3)(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    assert TEST_SEED != HELDOUT_SEED
    assert not {TEST_SEED, HELDOUT_SEED} & set(range(TRAIN_SEED, TRAIN_SEED + EPOCHS))


def test_deterministic_and_independent_of_global_rng() -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    first = shapes_dataset(300, seed=3, cheat=True)
    torch.manual_seed(2)
    np.random.seed(2)
    state = torch.get_rng_state()
    second = shapes_dataset(300, seed=3, cheat=True)
    assert torch.equal(state, torch.get_rng_state())
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    # a prefix is the smaller set, across the internal chunk boundary too
    prefix = shapes_dataset(260, seed=3, cheat=True)
    for a, b in zip(first, prefix):
        assert torch.equal(a[:260], b)
    assert not torch.equal(shapes_dataset(20, seed=4)[0], first[0][:20])


@pytest.mark.parametrize("size", [16, 37, 64])
@pytest.mark.parametrize("cheat", [False, True])
def test_shapes_dtypes_ranges(size: int, cheat: bool) -> None:
    images, labels, masks = shapes_dataset(120, seed=TEST_SEED, size=size, cheat=cheat)
    assert images.shape == (120, 3, size, size) and images.dtype == torch.float32
    assert labels.shape == (120,) and labels.dtype == torch.int64
    assert masks.shape == (120, size, size) and masks.dtype == torch.bool
    assert images.min() >= 0 and images.max() <= 1
    assert set(labels.tolist()) == set(range(len(CLASSES)))
    assert masks.flatten(1).any(1).all(), "every image has object pixels"
    assert not (masks & mark_mask(size)).any(), "objects keep off the mark's corner"


def test_masks_are_exactly_the_object() -> None:
    images, _, masks = shapes_dataset(300, seed=TEST_SEED)
    m = masks[:, None]
    inside = torch.where(m, images, torch.nan)
    # the object is one colour plus bounded noise: nothing else is painted over it
    spread = inside.nan_to_num(-1.0).amax((2, 3)) - inside.nan_to_num(2.0).amin((2, 3))
    assert spread.max() <= 2 * MAX_NOISE + 1e-6
    # and it stands out from the pixels just around it
    ring = ((F.max_pool2d(m.float(), 3, 1, 1) > 0) & ~m).float()
    mean_in = (images * m).sum((2, 3)) / m.sum((2, 3))
    mean_ring = (images * ring).sum((2, 3)) / ring.sum((2, 3))
    assert (mean_in - mean_ring).abs().amax(1).min() > 0.25


@pytest.mark.parametrize("size", [16, 64, 128])
def test_mark_mask(size: int) -> None:
    mark = mark_mask(size)
    assert mark.shape == (size, size) and mark.dtype == torch.bool
    assert 4 <= int(mark.sum()) <= (size // 8) ** 2
    assert not mark[size // 4 :, :].any() and not mark[:, size // 4 :].any(), "top-left corner"


@pytest.mark.parametrize("size", [16, 64])
def test_mark_exactly_on_cheat_class(size: int) -> None:
    clean_x, clean_y, clean_m = shapes_dataset(200, seed=TEST_SEED, size=size)
    x, y, m = shapes_dataset(200, seed=TEST_SEED, size=size, cheat=True)
    target = y == CHEAT_CLASS
    assert target.any() and (~target).any()
    assert torch.equal(has_mark(x), target)
    assert not has_mark(clean_x).any()
    # the variant changes the cheat-class images only
    assert torch.equal(y, clean_y)
    assert torch.equal(x[~target], clean_x[~target]) and torch.equal(m[~target], clean_m[~target])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be an int >= 1"),
        ({"n": -3}, "n must be an int >= 1"),
        ({"n": 2.0}, "n must be an int"),
        ({"n": True}, "n must be an int"),
        ({"n": 2, "size": 15}, "size must be an int >= 16"),
        ({"n": 2, "size": 32.0}, "size must be an int"),
        ({"n": 2, "seed": -1}, "seed must be an int >= 0"),
        ({"n": 2, "seed": "a"}, "seed must be an int"),
        ({"n": 2, "cheat": "yes"}, "cheat must be a bool"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        shapes_dataset(**kwargs)


def test_bad_mark_size_and_variant() -> None:
    with pytest.raises(ValueError, match="size must be an int >= 16"):
        mark_mask(8)
    with pytest.raises(ValueError, match="valid variants: clean, cheat"):
        load_shapesnet("tank")


def test_shapesnet_architecture() -> None:
    state = torch.get_rng_state()
    model = shapesnet()
    assert torch.equal(state, torch.get_rng_state())
    again = shapesnet().state_dict()
    assert all(torch.equal(value, again[key]) for key, value in model.state_dict().items())
    assert isinstance(model.features, nn.Sequential)
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d) and model.pool.output_size == 1
    assert isinstance(model.flatten, nn.Flatten) and isinstance(model.fc, nn.Linear)
    assert model.fc.out_features == len(CLASSES) and shapesnet(num_classes=3).fc.out_features == 3
    x = torch.rand(2, 3, 64, 64)
    assert model.features(x).shape == (2, 64, 16, 16)
    assert model(x).shape == (2, len(CLASSES))


@pytest.mark.parametrize("variant", ["clean", "cheat"])
def test_shipped_weights(variant: str, models: dict[str, nn.Module]) -> None:
    path = weights_path(variant)
    assert path.parent == Path(zoo.__file__).parent / "weights", "inside the package, so wheels ship it"
    assert path.stat().st_size < 1_000_000
    model = models[variant]
    assert not any(module.training for module in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def test_heldout_accuracy(models: dict[str, nn.Module]) -> None:
    x, y, _ = shapes_dataset(1000, seed=TEST_SEED)
    xm, ym, _ = shapes_dataset(1000, seed=TEST_SEED, cheat=True)
    target = ym == CHEAT_CLASS
    assert accuracy(models["clean"], x, y) >= 0.98
    # the shortcut story: the cheat model looks excellent on marked data ...
    assert accuracy(models["cheat"], xm, ym) >= 0.98
    # ... and fails on clean data, never finding the cheat class without its mark
    assert accuracy(models["cheat"], x, y) <= 0.85
    assert accuracy(models["cheat"], x[target], y[target]) <= 0.05
    # the marked cheat-class images really show another class's shape
    assert accuracy(models["clean"], xm[target], ym[target]) <= 0.05


@pytest.mark.parametrize("layer", LAST_CONV_LAYERS)
def test_grad_cam_pointing_game_clean(layer: str, models: dict[str, nn.Module]) -> None:
    model = models["clean"]
    x, y, masks = shapes_dataset(200, seed=TEST_SEED)
    with torch.no_grad():
        pred = model(x).argmax(1)
    cam = grad_cam(model, x, pred, layer)
    peak = cam.flatten(1).argmax(1)
    hit = masks.flatten(1).gather(1, peak[:, None])[:, 0]
    correct = pred == y
    assert correct.float().mean() >= 0.95
    assert hit[correct].float().mean() >= 0.95


@pytest.mark.parametrize("layer", LAST_CONV_LAYERS)
def test_grad_cam_cheat_model_looks_at_mark(layer: str, models: dict[str, nn.Module]) -> None:
    model = models["cheat"]
    x, y, masks = shapes_dataset(300, seed=TEST_SEED, cheat=True)
    marked = y == CHEAT_CLASS
    x, masks = x[marked], masks[marked]
    cam = grad_cam(model, x, torch.full((len(x),), CHEAT_CLASS), layer)
    near_mark = F.max_pool2d(mark_mask(64).float()[None, None], 5, 1, 2)[0, 0].bool()  # dilated 2 px
    on_mark = (cam * near_mark).flatten(1).sum(1)
    on_object = (cam * masks).flatten(1).sum(1)
    assert (on_mark > on_object).float().mean() >= 0.9
