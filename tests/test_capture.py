"""Capture guarantees on every test architecture: names and order, exact values (in-place writes
included), no hooks left behind, the model's state untouched; image forms, bad input and layer_table;
the buffer pool behind the copies (reuse, no aliasing of what the caller holds, limit, threads)."""

from __future__ import annotations

import copy
import math
import pathlib
import threading
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import archs
import cnn_widgets.capture as capture_module
from cnn_widgets import ActivationCapture, capture_activations, layer_table
from cnn_widgets.capture import _BufferPool
from cnn_widgets.images import to_batch
from cnn_widgets.zoo.resnet import resnet18_like

ALL = list(archs.ARCHS)


# ---------------------------------------------------------------------------------------------- helpers
def disturb(model: nn.Module) -> None:
    """Give the model a state worth restoring: some gradients, a frozen parameter, mixed train flags."""
    g = torch.Generator().manual_seed(7)
    params = list(model.parameters())
    for i, p in enumerate(params):
        if i % 3 == 0:
            p.grad = torch.randn(p.shape, generator=g)
        if i % 4 == 1:
            p.requires_grad_(False)
    modules = list(model.modules())
    if len(modules) > 2:
        modules[1].train(not modules[1].training)


def run(model: nn.Module, x: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The capture engine in the model's own mode (``capture_activations`` switches to eval)."""
    torch.manual_seed(0)
    with ActivationCapture(model, layers) as cap, torch.no_grad():
        model(x.clone())
    return dict(cap.activations)


def test_capture_activations_runs_in_eval_mode_and_agrees_with_itself(untouched: Any) -> None:
    """Dropout and train-mode BatchNorm would make two identical calls differ: capture_activations runs
    the model in eval mode (restored afterwards) and equals an eval-mode reference."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU()).train()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = untouched.snapshot(model)
    first, second = capture_activations(model, x), capture_activations(model, x)
    untouched.check(model, before)
    assert all(m.training for m in model.modules())
    want = archs.reference_activations(copy.deepcopy(model).eval(), x)
    for key in want:
        assert torch.equal(first[key], want[key]) and torch.equal(second[key], want[key]), key


def reference(model: nn.Module, x: torch.Tensor, **kw: Any) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return archs.reference_activations(model, x, **kw)


# ------------------------------------------------------------------------------------ names and values
@pytest.mark.parametrize("arch", ALL)
def test_keys_and_values_match_reference(arch: str) -> None:
    model, x = archs.build(arch)
    got = run(model, x)
    want = reference(model, x)
    assert list(got) == list(want)
    for key, value in want.items():
        a = got[key]
        assert a.device.type == "cpu" and not a.requires_grad and a.grad_fn is None
        assert a.dtype == value.dtype and a.shape == value.shape, key
        assert torch.equal(a, value), f"{arch}: activation {key!r} differs from the reference"


@pytest.mark.parametrize(
    ("arch", "keys"),
    [
        ("plain", ["conv1", "relu1", "pool", "conv2", "relu2", "gap", "flatten", "fc"]),
        ("shared", ["stem", "act", "shared", "act#1", "shared#1", "act#2", "head"]),
        (
            "nested",
            ["features.0.0", "features.0.1", "features.0.2", "features.1.0", "features.1.1", "features.1.2",
             "branches.wide.0", "branches.wide.1", "branches.narrow.0", "branches.narrow.1", "head"],
        ),
        ("dict_output", ["conv", "relu", "gap", "fc"]),
        ("xss_named", ["blocks.stem", "relu", f"blocks.{archs.XSS_NAME}", "relu#1"]),
    ],
)
def test_keys_are_qualified_names_in_execution_order(arch: str, keys: list[str]) -> None:
    model, x = archs.build(arch)
    assert list(run(model, x)) == keys


def test_shared_module_calls_are_told_apart() -> None:
    model, x = archs.build("shared")
    got = run(model, x)
    with torch.no_grad():
        stem = torch.relu(model.stem(x))
        once = model.shared(stem)
        twice = model.shared(torch.relu(once))
    assert torch.equal(got["shared"], once)
    assert torch.equal(got["shared#1"], twice)
    assert not torch.equal(got["shared"], got["shared#1"])


def test_resnet_matches_hand_written_forward() -> None:
    model, x = archs.build("resnet18_like")
    got = run(model, x)
    want = archs.resnet_manual(model, x)
    assert list(got) == list(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    # The values an in-place op rewrote right after the module returned are the pre-write values.
    assert (got["bn1"] < 0).any(), "bn1 must be recorded before ReLU(inplace=True) clipped it"
    assert not torch.equal(got["bn1"], got["relu"])
    for block in ("layer1.0", "layer2.0", "layer4.1"):
        assert (got[f"{block}.bn1"] < 0).any()
        bn2, out = got[f"{block}.bn2"], got[f"{block}.relu#1"]
        assert not torch.equal(torch.relu(bn2), out), f"{block}.bn2 must be recorded before `out += identity`"


@pytest.mark.parametrize(
    ("arch", "rewritten"),
    [
        ("resnet18_like", ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer3.1.bn2"]),
        ("inplace_zoo", ["bn1", "conv2", "alias", "conv3", "flat", "conv4", "conv5"]),
        ("tuple_output", ["bn"]),
        ("train_bn", ["bn1", "bn2"]),
    ],
)
def test_in_place_architectures_really_overwrite_outputs(arch: str, rewritten: list[str]) -> None:
    """Guards the value tests: recording references without copying would give wrong values here."""
    model, x = archs.build(arch)
    refs: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(lambda m, a, out, n=n: refs.setdefault(n, out.detach()))
        for n in rewritten
    ]
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            model(x.clone())
    finally:
        for h in handles:
            h.remove()
    want = reference(model, x, layers=rewritten)
    for n in rewritten:
        assert not torch.equal(refs[n], want[n]), f"{arch}.{n} is not overwritten in place"
    got = run(model, x, layers=rewritten)
    for n in rewritten:
        assert torch.equal(got[n], want[n]), n


@pytest.mark.parametrize(
    "activation",
    [nn.ReLU(True), nn.ReLU6(True), nn.LeakyReLU(0.2, True), nn.ELU(inplace=True), nn.CELU(inplace=True),
     nn.SELU(True), nn.SiLU(True), nn.Hardswish(True), nn.Hardsigmoid(True), nn.Mish(True),
     nn.Hardtanh(-0.1, 0.1, True), nn.Threshold(0.1, 20.0, True), nn.RReLU(inplace=True),
     nn.Dropout(0.5, True), nn.Dropout2d(0.5, True), nn.AlphaDropout(0.5, True)],
    ids=lambda m: type(m).__name__,
)
def test_every_in_place_activation_module_leaves_the_conv_output_intact(activation: nn.Module) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), activation).train()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    got = run(model, x)
    want = reference(model, x)
    assert list(got) == ["0", "1"]
    assert torch.equal(got["0"], want["0"]) and torch.equal(got["1"], want["1"])
    assert not torch.equal(got["0"], got["1"])


def test_activations_survive_in_place_writes_after_exit() -> None:
    model, x = archs.build("plain")
    with ActivationCapture(model) as cap, torch.no_grad():
        logits = model(x)
    before = cap.activations["fc"].clone()
    logits.mul_(0.0)
    assert torch.equal(cap.activations["fc"], before)


def test_returned_activations_share_no_memory() -> None:
    model, x = archs.build("plain")
    acts = run(model, x)
    storages = [a.untyped_storage().data_ptr() for a in acts.values()]
    assert len(set(storages)) == len(storages)
    assert x.untyped_storage().data_ptr() not in storages


def test_activations_are_detached_when_grad_is_enabled() -> None:
    model, x = archs.build("resnet18_like")
    with ActivationCapture(model, ["layer1.0.bn2", "fc"]) as cap:
        model(x).sum().backward()
    for value in cap.activations.values():
        assert not value.requires_grad and value.grad_fn is None


def test_nested_captures_both_record_exact_values(untouched: Any) -> None:
    model, x = archs.build("resnet18_like")
    want = reference(model, x)
    with ActivationCapture(model) as outer, ActivationCapture(model, ["layer2.0.bn2", "bn1"]) as inner:
        with torch.no_grad():
            model(x.clone())
    assert list(inner.activations) == ["bn1", "layer2.0.bn2"]
    for store in (outer.activations, inner.activations):
        for key, value in store.items():
            assert torch.equal(value, want[key]), key
    assert untouched.census(model) == untouched.census(archs.build("resnet18_like")[0])


def test_reentering_a_capture_starts_afresh() -> None:
    model, x = archs.build("shared")
    cap = ActivationCapture(model)
    for _ in range(2):
        with cap, torch.no_grad():
            model(x)
        assert list(cap.activations) == list(reference(model, x))


def test_batch_of_several_images() -> None:
    model, _ = archs.build("plain")
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(3))
    got = run(model, x)
    assert got["conv1"].shape == (3, 8, 20, 20)
    assert torch.equal(got["fc"], reference(model, x)["fc"])


def test_leaf_returning_a_tuple_is_skipped_by_default_and_refused_by_name(untouched: Any) -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, -x

    class WithPair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.pair = Pair()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = self.pair(self.conv(x))
            return a + b

    model = WithPair()
    x = torch.rand(1, 3, 8, 8)
    assert list(capture_activations(model, x)) == ["conv"]
    with untouched(model), pytest.raises(ValueError, match=r"'pair'.*tuple.*not a tensor"):
        capture_activations(model, x, layers=["pair"])


# ------------------------------------------------------------------------------------ hooks and state
@pytest.mark.parametrize("arch", ALL)
def test_no_hooks_remain_after_return(arch: str, untouched: Any) -> None:
    model, x = archs.build(arch)
    before = untouched.census(model)
    assert sum(before.values()) == 0
    run(model, x)
    assert untouched.census(model) == before
    with ActivationCapture(model) as cap, torch.no_grad():
        inside = untouched.census(model)
        model(x)
    assert sum(inside.values()) > 0, "the census must see the capture's own hooks"
    assert cap.activations
    assert untouched.census(model) == before


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_no_hooks_remain_and_state_restored_after_exception_mid_forward(
    error: type[BaseException], untouched: Any
) -> None:
    model, x = archs.build("resnet18_like")
    model.train()
    disturb(model)
    before = untouched.snapshot(model)

    def explode(module: nn.Module, args: Any, output: Any) -> None:
        raise error("boom inside layer2")

    handle = model.layer2[0].bn2.register_forward_hook(explode)
    with_user_hook = untouched.census(model)
    # a raw error from inside the model reaches the user as a ValueError naming the input, with the
    # original chained; an interrupt passes through as it is
    expected = ValueError if error is RuntimeError else error
    with pytest.raises(expected, match="boom") as info:
        capture_activations(model, x)
    if expected is ValueError:
        assert "(1, 3, 64, 64)" in str(info.value) and isinstance(info.value.__cause__, RuntimeError)
    assert untouched.census(model) == with_user_hook
    handle.remove()
    untouched.check(model, before)


def test_no_hooks_remain_after_exception_raised_by_the_model(untouched: Any) -> None:
    model = archs.Exploding().train()
    x = torch.rand(1, 3, 8, 8)
    with untouched(model):
        with pytest.raises(ValueError, match="boom mid-forward"):
            capture_activations(model, x)
    # the user's own train-mode forward inside the context writes BatchNorm's statistics (the context
    # puts their values back on exit); what must not remain is a hook
    census = untouched.census(model)
    with pytest.raises(RuntimeError, match="boom mid-forward"):
        with ActivationCapture(model, ["bn1", "conv2"]):
            model(x)
    assert untouched.census(model) == census


def test_no_hooks_remain_after_exception_in_the_with_block(untouched: Any) -> None:
    model, x = archs.build("inplace_zoo")
    before = untouched.snapshot(model)
    with pytest.raises(ZeroDivisionError):
        with ActivationCapture(model), torch.no_grad():
            model(x)
            1 / 0
    untouched.check(model, before)
    with pytest.raises(ValueError):
        ActivationCapture(model, ["conv1", "nope"]).__enter__()
    untouched.check(model, before)


def test_user_hooks_survive_capture(untouched: Any) -> None:
    model, x = archs.build("plain")
    seen: list[str] = []
    model.conv1.register_forward_hook(lambda m, a, o: seen.append("fwd"))
    model.conv2.register_forward_pre_hook(lambda m, a: seen.append("pre"))
    model.fc.weight.register_hook(lambda g: g)
    with untouched(model, empty=False):
        run(model, x)
    seen.clear()
    with torch.no_grad():
        model(x)
    assert seen == ["fwd", "pre"]


@pytest.mark.parametrize("arch", ALL)
def test_model_state_is_restored(arch: str, untouched: Any) -> None:
    model, x = archs.build(arch)
    disturb(model)
    before = untouched.snapshot(model)
    run(model, x)  # the forward is the test's own, in the model's mode: BatchNorm may write and be put back
    untouched.check(model, before, buffer_writes=True)
    with ActivationCapture(model, archs.leaf_names(model)[:2]), torch.no_grad():
        model(x)
    untouched.check(model, before, buffer_writes=True)


def test_train_mode_batchnorm_statistics_are_not_updated(untouched: Any) -> None:
    model, x = archs.build("train_bn")
    assert model.training and model.bn1.training
    before = untouched.snapshot(model)
    run(model, x)  # a train-mode forward of the test's own: the statistics are written, then put back
    untouched.check(model, before, buffer_writes=True)
    assert int(model.bn2.num_batches_tracked) == 0
    # The same forward without capture does update them (so the assertions above can fail).
    with torch.no_grad():
        model(x)
    assert int(model.bn1.num_batches_tracked) == 1
    assert not torch.equal(model.bn1.running_mean, torch.zeros(8))


def test_backward_inside_the_context_leaves_gradients_as_before(untouched: Any) -> None:
    model, x = archs.build("resnet18_like")
    disturb(model)
    before = untouched.snapshot(model)
    with ActivationCapture(model, ["layer1.0.bn2"]):
        model(x).square().sum().backward()
    untouched.check(model, before)


def test_buffer_rebound_in_forward_is_restored() -> None:
    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.register_buffer("calls", torch.zeros((), dtype=torch.long))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls = self.calls + 1
            return self.conv(x)

    model = Counting()
    capture_activations(model, torch.rand(1, 3, 4, 4))
    assert int(model.calls) == 0


# ------------------------------------------------------------------------------------ layer selection
def test_selected_layers_come_back_in_execution_order() -> None:
    model, x = archs.build("resnet18_like")
    picked = ["fc", "layer2.0.downsample.1", "conv1", "layer1", "layer2.0.conv1"]
    got = run(model, x, layers=picked)
    assert list(got) == ["conv1", "layer1", "layer2.0.downsample.1", "layer2.0.conv1", "fc"]
    want = archs.resnet_manual(model, x)
    assert torch.equal(got["conv1"], want["conv1"])
    assert torch.equal(got["layer1"], want["layer1.1.relu#1"])
    assert torch.equal(got["layer2.0.downsample.1"], want["layer2.0.downsample.1"])


def test_single_layer_name_as_a_string() -> None:
    model, x = archs.build("plain")
    assert list(run(model, x, layers="conv2")) == ["conv2"]


def test_layer_listed_twice_is_recorded_once() -> None:
    model, x = archs.build("plain")
    assert list(run(model, x, layers=["conv1", "conv1"])) == ["conv1"]


def test_shared_module_selected_by_name_records_every_call() -> None:
    model, x = archs.build("shared")
    assert list(run(model, x, layers=["shared"])) == ["shared", "shared#1"]


@pytest.mark.parametrize(
    ("name", "suggested"),
    [("layer1.0.bn3", "'layer1.0.bn2'"), ("layer1.0.conv", "'layer1.0.conv1'"), ("Conv1", "'conv1'")],
)
def test_unknown_layer_suggests_nearest_names(name: str, suggested: str, untouched: Any) -> None:
    model, x = archs.build("resnet18_like")
    with untouched(model), pytest.raises(ValueError, match=r"unknown layer") as info:
        capture_activations(model, x, layers=["conv1", name])
    assert repr(name) in str(info.value)
    assert "did you mean" in str(info.value) and suggested in str(info.value)


def test_unknown_layer_far_from_everything_lists_known_names() -> None:
    model, x = archs.build("plain")
    with pytest.raises(ValueError, match=r"unknown layer 'zzzzzzzz'.*known layer names: 'conv1'"):
        capture_activations(model, x, layers=["zzzzzzzz"])


def test_layer_name_of_wrong_type() -> None:
    model, x = archs.build("plain")
    with pytest.raises(TypeError, match="layers must contain layer names"):
        capture_activations(model, x, layers=[0])
    for bad in (model.conv1, 123, b"conv1"):
        with pytest.raises(TypeError, match="layer"):
            capture_activations(model, x, layers=bad)


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("model", "match"),
    [
        (archs.PlainCNN().state_dict(), r"expected a torch.nn.Module.*got OrderedDict"),
        (lambda x: x, r"expected a torch.nn.Module.*got function"),
        (None, r"expected a torch.nn.Module.*got NoneType"),
    ],
)
def test_model_that_is_not_a_module(model: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        capture_activations(model, torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match=match):
        ActivationCapture(model)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (torch.rand(1, 8, 8), ValueError, r"expects 3 input channels, but the image has 1.*RGB"),
        (torch.rand(5, 8, 8), ValueError, r"expects 3 input channels, but the image has 5"),
        (np.zeros((8, 8, 2), np.uint8), ValueError, r"expects 3 input channels, but the image has"),
        (torch.rand(8), ValueError, r"rank 2 \(H,W\), 3 \(C,H,W\) or 4 \(N,C,H,W\), got shape \(8,\)"),
        (torch.rand(1, 1, 3, 8, 8), ValueError, r"got shape \(1, 1, 3, 8, 8\)"),
        (torch.rand(3, 0, 8), ValueError, r"empty \(shape \(3, 0, 8\)\)"),
        (np.zeros((0, 8, 3)), ValueError, r"empty"),
        (torch.zeros(3, 8, 8, dtype=torch.bool), TypeError, r"numeric image tensor.*torch.bool"),
        (torch.zeros(3, 8, 8, dtype=torch.complex64), TypeError, r"numeric image tensor.*complex64"),
        (np.zeros((8, 8, 3), dtype=bool), TypeError, r"numeric image array.*dtype bool"),
        (np.array([["a"]]), TypeError, r"numeric image array.*<U1"),
        (torch.full((3, 8, 8), math.nan), ValueError, r"192 NaN or infinite values"),
        (torch.tensor([[[0.5, math.inf]]]).expand(3, 2, 2), ValueError, r"6 NaN or infinite values"),
        ([[0.0, 1.0]], TypeError, r"torch tensor, numpy array, PIL image or file path, got list"),
    ],
    ids=["grey-for-rgb", "5ch", "hwc-2ch", "rank1", "rank5", "empty-t", "empty-np", "bool", "complex",
         "np-bool", "np-str", "nan", "inf", "list"],
)
def test_bad_images_give_clear_errors(image: Any, error: type[Exception], match: str, untouched: Any) -> None:
    model, _ = archs.build("plain")
    with untouched(model), pytest.raises(error, match=match):
        capture_activations(model, image)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    model, _ = archs.build("plain")
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match=r"nope\.png.*does not exist"):
        capture_activations(model, str(missing))
    with pytest.raises(FileNotFoundError):
        capture_activations(model, missing)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [((0.5, 0.5), None, r"mean has 2 values but the image has 3 channels"),
     (None, (0.2, 0.0, 0.2), r"std must be positive")],
)
def test_bad_normalisation(mean: Any, std: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_batch(torch.rand(3, 8, 8), mean, std)


# ---------------------------------------------------------------------------------------- image forms
RNG = np.random.default_rng(0)
HWC_U8 = RNG.integers(0, 256, size=(20, 28, 3), dtype=np.uint8)  # non-square on purpose
EXPECT = torch.from_numpy(HWC_U8).permute(2, 0, 1).float().div(255.0)[None]


def _png(tmp_path: pathlib.Path, array: np.ndarray) -> pathlib.Path:
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: EXPECT[0].clone(),
        lambda tmp: EXPECT.clone(),
        lambda tmp: torch.from_numpy(HWC_U8).permute(2, 0, 1).contiguous(),
        lambda tmp: HWC_U8.copy(),
        lambda tmp: np.ascontiguousarray(HWC_U8.transpose(2, 0, 1)),
        lambda tmp: HWC_U8.astype(np.float32) / 255.0,
        lambda tmp: (HWC_U8.astype(np.float64) / 255.0).transpose(2, 0, 1),
        lambda tmp: Image.fromarray(HWC_U8),
        lambda tmp: Image.fromarray(np.dstack([HWC_U8, np.full((20, 28), 77, np.uint8)]), "RGBA"),
        lambda tmp: str(_png(tmp, HWC_U8)),
        lambda tmp: _png(tmp, HWC_U8),
    ],
    ids=["torch-chw", "torch-nchw", "torch-chw-uint8", "np-hwc-uint8", "np-chw-uint8", "np-hwc-float32",
         "np-chw-float64", "pil-rgb", "pil-rgba", "path-str", "path-pathlib"],
)
def test_image_forms_give_the_same_batch_and_activations(make: Any, tmp_path: pathlib.Path) -> None:
    model, _ = archs.build("plain")
    image = make(tmp_path)
    batch = to_batch(image, model=model)
    assert batch.dtype == torch.float32 and batch.shape == (1, 3, 20, 28)
    torch.testing.assert_close(batch, EXPECT, atol=1e-6, rtol=0)
    got = capture_activations(model, image)
    want = capture_activations(model, EXPECT)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: torch.from_numpy(HWC_U8[..., 0]).float() / 255.0,
        lambda tmp: torch.from_numpy(HWC_U8[..., 0]),
        lambda tmp: HWC_U8[..., 0].copy(),
        lambda tmp: HWC_U8[..., :1].copy(),
        lambda tmp: Image.fromarray(HWC_U8[..., 0], "L"),
        lambda tmp: str(_png(tmp, HWC_U8[..., 0])),
    ],
    ids=["torch-hw-float", "torch-hw-uint8", "np-hw", "np-hw1", "pil-l", "path-grey"],
)
def test_greyscale_forms_for_a_one_channel_model(make: Any, tmp_path: pathlib.Path) -> None:
    model = archs.PlainCNN(in_channels=1).eval()
    batch = to_batch(make(tmp_path), model=model)
    assert batch.shape == (1, 1, 20, 28)
    torch.testing.assert_close(batch, EXPECT[:, :1], atol=1e-6, rtol=0)
    assert capture_activations(model, make(tmp_path))["conv1"].shape == (1, 8, 20, 28)


def test_mean_and_std_are_applied() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    batch = to_batch(HWC_U8, mean, std)
    want = (EXPECT - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(batch, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(to_batch(EXPECT, 0.5, 0.25), (EXPECT - 0.5) / 0.25)


def test_capture_accepts_a_batch_and_moves_nothing_it_should_not() -> None:
    model, _ = archs.build("plain")
    x = EXPECT.clone()
    capture_activations(model, x)
    assert torch.equal(x, EXPECT), "the caller's input tensor must not be modified"


# ------------------------------------------------------------------------------------------ layer_table
RESNET18_PARAMS = 11_689_512


def test_layer_table_resnet(untouched: Any) -> None:
    model = resnet18_like()
    with untouched(model):
        rows = layer_table(model, torch.rand(3, 64, 64))
    by_name = {r.name: r for r in rows}
    assert [r.name for r in rows[:5]] == ["conv1", "bn1", "relu", "maxpool", "layer1.0.conv1"]
    assert rows[-1].name == "fc" and rows[-1].output_shape == (1, 1000)
    assert by_name["conv1"].type == "Conv2d" and by_name["conv1"].output_shape == (1, 64, 32, 32)
    assert by_name["conv1"].params == 64 * 3 * 7 * 7
    assert by_name["layer2.0.downsample.0"].output_shape == (1, 128, 8, 8)
    assert by_name["layer4.1.bn2"].params == 2 * 512
    assert by_name["relu"].calls == 1 and by_name["layer1.0.relu"].calls == 2
    assert sum(r.params for r in rows) == RESNET18_PARAMS
    assert sum(r.trainable for r in rows) == RESNET18_PARAMS
    assert sum(p.numel() for p in model.parameters()) == RESNET18_PARAMS


def test_layer_table_counts_frozen_parameters_and_unused_modules() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))  # owned directly by the root
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            self.body.gain = nn.Parameter(torch.ones(4, 1, 1))  # owned by a container
            self.unused = nn.Linear(5, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) * self.body.gain * self.scale

    model = Odd()
    model.body[0].weight.requires_grad_(False)
    rows = layer_table(model, torch.rand(3, 8, 8))
    names = [r.name for r in rows]
    assert names[:2] == ["body.0", "body.1"] and names[-1] == "unused"
    assert "body" in names
    by_name = {r.name: r for r in rows}
    assert by_name["unused"].output_shape is None and by_name["unused"].calls == 0
    assert by_name["body.0"].params == 4 * 3 * 9 + 4 and by_name["body.0"].trainable == 4
    assert by_name["body"].params == 4
    assert by_name[""].params == 1  # the root's own parameter has a row
    total = sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in rows) == total
    assert sum(r.trainable for r in rows) == total - 4 * 3 * 9


def test_layer_table_totals_include_parameters_owned_by_the_root() -> None:
    class RootScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * self.scale

    model = RootScale()
    rows = layer_table(model, torch.rand(3, 8, 8))
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())


def test_layer_table_handles_dict_outputs_and_shared_modules() -> None:
    model, x = archs.build("dict_output")
    assert [r.name for r in layer_table(model, x)] == ["conv", "relu", "gap", "fc"]
    model, x = archs.build("shared")
    rows = {r.name: r for r in layer_table(model, x)}
    assert rows["act"].calls == 3 and rows["shared"].calls == 2
    assert rows["shared"].output_shape == (1, 8, 32, 32)


# ------------------------------------------------------------------------------------------ buffer pool
@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> _BufferPool:
    """A fresh pool (the default limit) in place of the process-wide one, so counts start at zero."""
    fresh = _BufferPool(capture_module.POOL_LIMIT)
    monkeypatch.setattr(capture_module, "_POOL", fresh)
    return fresh


def storages(acts: Any) -> set[int]:
    return {a.untyped_storage().data_ptr() for a in acts}


def test_pool_reuses_buffers_once_the_caller_lets_go(pool: _BufferPool) -> None:
    model, x = archs.build("resnet18_like")
    want = reference(model, x)
    first = run(model, x)
    n = len(first)
    assert pool.allocated == n and pool.idle_bytes == 0
    memory = storages(first.values())
    assert len(memory) == n
    del first
    assert pool.idle_bytes == sum(a.nbytes for a in want.values())
    second = run(model, x)
    assert pool.allocated == n, "a second capture after the first was dropped must allocate nothing"
    assert storages(second.values()) == memory
    assert pool.idle_bytes == 0
    for key in want:
        assert torch.equal(second[key], want[key]), key


def test_buffers_lent_at_entry_are_used_by_the_forward_or_given_back(pool: _BufferPool) -> None:
    """A capture lends idle buffers ahead in the layouts the model's last capture produced, so the
    forward pass only copies; whatever it does not use goes back on exit, also after an error."""
    model, x = archs.build("resnet18_like")
    want = reference(model, x)
    total = sum(a.nbytes for a in want.values())
    run(model, x)
    assert pool.idle_bytes == total
    with ActivationCapture(model) as cap, torch.no_grad():
        assert sum(len(ready) for ready in cap._ready.values()) == len(want)
        assert pool.idle_bytes == 0
        model(x)
        assert not any(cap._ready.values()), "every buffer lent ahead was used"
    assert pool.allocated == len(want)
    for key in want:
        assert torch.equal(cap.activations[key], want[key]), key
    del cap
    assert pool.idle_bytes == total
    with ActivationCapture(model, ["layer1.0.conv1"]) as one, torch.no_grad():
        model(x)
    assert torch.equal(one.activations["layer1.0.conv1"], want["layer1.0.conv1"])
    assert pool.idle_bytes == total - want["layer1.0.conv1"].nbytes
    del one
    run(model, x)  # the model's last layouts are all of them again
    with pytest.raises(ZeroDivisionError), ActivationCapture(model):
        assert pool.idle_bytes == 0
        1 / 0
    assert pool.idle_bytes == total and pool.allocated == len(want)


def test_a_capture_never_writes_into_memory_the_caller_still_holds(pool: _BufferPool) -> None:
    """Held tensors, views outliving their tensor and numpy arrays all keep their buffer out of the pool."""
    model, x = archs.build("resnet18_like")
    other = torch.rand(x.shape, generator=torch.Generator().manual_seed(11))
    want, want_other = reference(model, x), reference(model, other)
    first = run(model, x)
    n = len(first)
    view = first.pop("layer1.0.conv1")[0, :3]  # the tensor is gone, its view is not
    array = first.pop("conv1").numpy()
    second = run(model, other)
    assert pool.allocated == 2 * n, "every buffer of the first capture is still in use"
    assert not storages([*first.values(), view]) & storages(second.values())
    third = run(model, other)  # the pool is empty, so this allocates again
    assert pool.allocated == 3 * n
    del second
    fourth = run(model, x)  # reuses exactly the second capture's buffers
    assert pool.allocated == 3 * n
    assert not storages([*first.values(), view, *third.values()]) & storages(fourth.values())
    assert torch.equal(view, want["layer1.0.conv1"][0, :3])
    assert np.array_equal(array, want["conv1"].numpy())
    for key in want:
        assert torch.equal(fourth[key], want[key]), key
        assert torch.equal(third[key], want_other[key]), key
        if key in first:
            assert torch.equal(first[key], want[key]), key
    assert not torch.equal(want["layer1.0.conv1"], want_other["layer1.0.conv1"]), "inputs must differ"


def test_pool_keeps_at_most_its_limit_dropping_the_oldest_sizes_first() -> None:
    pool = _BufferPool(limit=10_000)
    big = pool.copy(torch.rand(5_000))  # 20 kB: more than the whole limit
    a, b = pool.copy(torch.rand(1_000)), pool.copy(torch.rand(1_000))  # 4 kB each
    c = pool.copy(torch.rand(500))  # 2 kB
    assert pool.allocated == 4
    del big
    assert pool.idle_bytes == 0, "a buffer larger than the limit is freed, not kept"
    del a, b, c
    assert pool.idle_bytes == 10_000
    d = pool.copy(torch.rand(250))  # 1 kB, new
    del d  # 11 kB idle: one of the 4 kB buffers (the oldest size) goes
    assert pool.idle_bytes == 7_000
    e, f = pool.copy(torch.rand(1_000)), pool.copy(torch.rand(1_000))
    assert pool.allocated == 6, "one 4 kB buffer was left to reuse, the second one is new"
    g, h = pool.copy(torch.rand(500)), pool.copy(torch.rand(250))
    assert pool.allocated == 6 and pool.idle_bytes == 0
    del g, h, e
    assert pool.idle_bytes == 7_000
    del f  # 11 kB idle: now the 2 kB size is the oldest
    assert pool.idle_bytes == 9_000 and not pool._leases


def test_capture_through_a_small_pool_holds_nothing_beyond_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    small = _BufferPool(limit=100_000)
    monkeypatch.setattr(capture_module, "_POOL", small)
    model, x = archs.build("resnet18_like")
    want = reference(model, x)
    assert sum(a.nbytes for a in want.values()) > 10 * small.limit
    for _ in range(3):
        got = run(model, x)
        for key in want:
            assert torch.equal(got[key], want[key]), key
        del got
        assert 0 < small.idle_bytes <= small.limit
    assert not small._leases


@pytest.mark.parametrize(
    "dtype",
    [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8, torch.bool, torch.complex64],
    ids=str,
)
def test_pool_copies_every_dtype_and_layout_exactly(dtype: torch.dtype) -> None:
    pool = _BufferPool(limit=1 << 20)
    base = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 50
    value = torch.complex(base, -base).to(dtype) if dtype.is_complex else base.to(dtype)
    for v in (value, value.to(memory_format=torch.channels_last), value.transpose(1, 3)):
        c = pool.copy(v)
        assert c.dtype == v.dtype and c.shape == v.shape and torch.equal(c, v)
        channels_last = v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous()
        assert c.stride() == (v.stride() if channels_last else v.contiguous().stride())
        assert c.untyped_storage().data_ptr() != v.untyped_storage().data_ptr()
        del c
    assert pool.allocated == 1 and pool.idle_bytes == value.nbytes and not pool._leases


def test_channels_last_model_keeps_channels_last_activations(pool: _BufferPool) -> None:
    model, x = archs.build("resnet18_like")
    model = model.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
    want = reference(model, x)
    got = run(model, x)
    assert got["layer1.0.conv1"].is_contiguous(memory_format=torch.channels_last)
    assert not got["layer1.0.conv1"].is_contiguous()
    for key in want:
        assert torch.equal(got[key], want[key]), key
        if want[key].dim() == 4:
            cl = want[key].is_contiguous(memory_format=torch.channels_last)
            assert got[key].is_contiguous(memory_format=torch.channels_last) == cl, key


def test_buffer_dropped_while_the_pool_is_busy_is_filed_later() -> None:
    """A tensor can die inside the pool's own critical section (garbage collection, another thread):
    the return is queued instead of waiting for the lock, so nothing deadlocks."""
    pool = _BufferPool(limit=1 << 20)
    t = pool.copy(torch.rand(100))
    with pool._lock:
        del t
        assert len(pool._returned) == 1
    assert pool.idle_bytes == 400 and not pool._returned


def test_concurrent_captures_share_the_pool_safely(pool: _BufferPool) -> None:
    """Three threads (two on one model, one on another) capture and drop in turn; every result is exact
    and no two results still held share memory."""
    resnet, x = archs.build("resnet18_like")
    plain, y = archs.build("plain")
    other = torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    jobs = [(resnet, x), (resnet, other), (plain, y)]
    wants = [reference(m, inp) for m, inp in jobs]
    held: list[list[dict[str, torch.Tensor]]] = [[] for _ in jobs]
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        try:
            start.wait()
            for round_ in range(6):
                got = run(*jobs[i])
                assert all(torch.equal(got[k], wants[i][k]) for k in wants[i]), (i, round_)
                held[i].append(got)
                if round_ % 2:
                    held[i].pop(0)  # let an older capture go while the others keep theirs
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    everything = [a for results in held for got in results for a in got.values()]
    assert len(storages(everything)) == len(everything)
    for i, results in enumerate(held):
        for got in results:
            assert all(torch.equal(got[k], wants[i][k]) for k in wants[i])
    assert pool.allocated < sum(6 * len(w) for w in wants), "dropped buffers must have been reused"
