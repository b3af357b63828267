"""unshared_copy: Captum's module-hooking methods on the copy equal the same methods on hand-unrolled twins
(every nonlinearity its own module, weights from the original's state_dict); the user's model is untouched."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Deconvolution, DeepLift, DeepLiftShap, GuidedBackprop
from torch import fx, nn

from cnn_widgets.unshare import UnshareError, unshared_copy
from cnn_widgets.zoo.resnet import resnet18_like

METHODS = [DeepLift, GuidedBackprop, Deconvolution]


class Small(nn.Module):
    """One ReLU module used three times (the last in place with its result dropped), one max-pool used
    twice, and functional relu (in place, result dropped), torch.relu, Tensor.relu, tanh, leaky_relu."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.act(self.conv1(x)))
        h = self.pool(self.act(self.conv2(h)))
        g = self.conv3(h)
        F.relu(g, inplace=True)
        h = torch.relu(h - g)
        z = self.fc1(torch.flatten(h, 1))
        t = torch.tanh(z)
        self.act(z)
        return self.fc2(F.leaky_relu(z - t, 0.2) + t.relu())


class SmallTwin(nn.Module):
    """Small written out by hand with one module per nonlinearity call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 5)
        self.act1, self.act2, self.act3, self.relu_g, self.relu_h, self.relu_t = (nn.ReLU() for _ in range(6))
        self.pool1, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(2)
        self.tanh, self.leaky = nn.Tanh(), nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool1(self.act1(self.conv1(x)))
        h = self.pool2(self.act2(self.conv2(h)))
        g = self.relu_g(self.conv3(h))
        h = self.relu_h(h - g)
        z = self.fc1(torch.flatten(h, 1))
        t = self.tanh(z)
        return self.fc2(self.leaky(self.act3(z) - t) + self.relu_t(t))


class TwinBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + identity)


class ResNetTwin(nn.Module):
    """ResNet-18 with a separate, out-of-place ReLU for every use; same parameter names as resnet18_like."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, w in enumerate([64, 128, 256, 512], start=1):
            setattr(self, f"layer{i}", nn.Sequential(TwinBlock(cin, w, 1 if i == 1 else 2), TwinBlock(w, w)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet() -> nn.Module:
    """resnet18_like with random BatchNorm statistics and affine parameters, so BN is not near identity."""
    model = resnet18_like()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
    return model


def _small() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Small().eval()


def _twin(cls: type[nn.Module], model: nn.Module) -> nn.Module:
    twin = cls()
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def _image(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return _resnet()


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "inplace": {n: getattr(m, "inplace", None) for n, m in model.named_modules()},
        "modules": list(model.modules()),
    }


def _assert_untouched(model: nn.Module, before: dict[str, object]) -> None:
    after = _snapshot(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    for k, v in before["tensors"].items():
        assert after["tensors"][k].dtype == v.dtype and torch.equal(after["tensors"][k], v), k
    for key in ("requires_grad", "training", "inplace"):
        assert after[key] == before[key], key
    assert all(a is b for a, b in zip(after["modules"], before["modules"], strict=True))
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
        # attributes Captum's DeepLift sets on the modules it hooks
        assert not any(hasattr(m, a) for a in ("input", "output", "input_ref"))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _check_against_twin(model: nn.Module, twin: nn.Module, x: torch.Tensor, target: int) -> None:
    before = _snapshot(model)
    unshared = unshared_copy(model)
    with torch.no_grad():
        assert torch.equal(unshared(x), model(x))  # the same operations in the same order
    for method in METHODS:
        kwargs = {"baselines": 0.0} if method is DeepLift else {}
        got = method(unshared).attribute(x.clone().requires_grad_(), target=target, **kwargs)
        want = method(twin).attribute(x.clone().requires_grad_(), target=target, **kwargs)
        got, want = got.detach(), want.detach()
        assert want.abs().max() > 0
        assert _rel(got, want) <= 1e-5, method.__name__
    _assert_untouched(model, before)
    own = {p.data_ptr() for p in model.parameters()}
    assert own.isdisjoint(p.data_ptr() for p in unshared.parameters())


def test_resnet_matches_unrolled_twin(resnet: nn.Module) -> None:
    x = _image((1, 3, 32, 32), seed=0)
    twin = _twin(ResNetTwin, resnet)
    with torch.no_grad():
        target = int(twin(x).argmax())
    _check_against_twin(resnet, twin, x, target)


def test_small_matches_unrolled_twin_and_naive_copy_does_not() -> None:
    model = _small()
    twin = _twin(SmallTwin, model)
    x = _image((1, 3, 16, 16), seed=2)
    _check_against_twin(model, twin, x, target=2)
    baselines = _image((3, 3, 16, 16), seed=6)
    got = DeepLiftShap(unshared_copy(model)).attribute(x.clone().requires_grad_(), baselines, target=2)
    want = DeepLiftShap(twin).attribute(x.clone().requires_grad_(), baselines, target=2)
    assert _rel(got.detach(), want.detach()) <= 1e-5
    # the comparison can fail: a plain deep copy (shared module, functional calls) gives other numbers
    naive = copy.deepcopy(model)
    for m in naive.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    with pytest.raises(RuntimeError, match="size of tensor"):  # DeepLift on the shared max-pool
        DeepLift(naive).attribute(x.clone().requires_grad_(), target=2)
    for method in (GuidedBackprop, Deconvolution):
        got = method(naive).attribute(x.clone().requires_grad_(), target=2).detach()
        want = method(twin).attribute(x.clone().requires_grad_(), target=2).detach()
        assert _rel(got, want) > 1e-2, method.__name__


def _module_calls(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_module"]


def test_structure_of_the_copy(resnet: nn.Module) -> None:
    gm = unshared_copy(resnet)
    calls = _module_calls(gm)
    assert len({id(gm.get_submodule(n.target)) for n in calls}) == len(calls)  # one module per call site
    assert not gm.training and not any(m.training for m in gm.modules())
    assert not any(getattr(m, "inplace", False) for m in gm.modules())
    relus = [n.target for n in calls if isinstance(gm.get_submodule(n.target), nn.ReLU)]
    assert len(relus) == 1 + 8 * 2
    assert set(gm.call_sites) == {n.target for n in calls}
    uses = [k for k, v in gm.call_sites.items() if v == "layer1.0.relu"]
    assert uses == ["layer1.0.relu", "layer1.0.relu_1"]
    assert all(v == k for k, v in gm.call_sites.items() if not k.endswith("relu_1"))


def test_a_reused_module_with_weights_keeps_them_tied() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x).relu())

    model = Twice().eval()
    gm = unshared_copy(model)
    assert gm.call_sites == {"conv": "conv", "relu_fn": "Tensor.relu() in forward", "conv_1": "conv"}
    first, second = gm.get_submodule("conv"), gm.get_submodule("conv_1")
    assert first is not second and first.weight is second.weight and first.bias is second.bias
    assert first.weight is not model.conv.weight
    x = _image((1, 2, 5, 5), seed=7)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_functional_calls_become_modules() -> None:
    gm = unshared_copy(_small())
    functions = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method")]
    assert not [n for n in functions if "relu" in str(n.target)]
    assert not any(n.op == "call_function" and n.target is torch.tanh for n in gm.graph.nodes)
    types = sorted(type(gm.get_submodule(n.target)).__name__ for n in _module_calls(gm))
    expected = ["Conv2d"] * 3 + ["Linear"] * 2 + ["MaxPool2d"] * 2 + ["ReLU"] * 6 + ["Tanh", "LeakyReLU"]
    assert types == sorted(expected)
    assert gm.get_submodule("leaky_relu_fn").negative_slope == 0.2
    assert gm.call_sites["relu_fn"] == "torch.nn.functional.relu() in forward"
    assert gm.call_sites["relu_fn_1"] == "torch.relu() in forward"
    assert gm.call_sites["relu_fn_2"] == "Tensor.relu() in forward"
    assert gm.call_sites["act_2"] == "act"


def test_functional_call_inside_a_submodule_is_named_after_it() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.softplus(F.elu(self.conv(x), 0.5), beta=2.0)
            return torch.sigmoid(y).softmax(1) + F.softmax(y, dim=1, dtype=torch.float64).float()

    model = nn.Sequential(Block(), Block()).eval()
    gm = unshared_copy(model)
    assert isinstance(gm.get_submodule("1.sigmoid_fn"), nn.Sigmoid)
    assert gm.get_submodule("1.softmax_fn").dim == 1
    assert gm.get_submodule("0.elu_fn").alpha == 0.5 and gm.get_submodule("0.softplus_fn").beta == 2.0
    # softmax with a dtype has no module equivalent and stays a function
    assert sum(n.target is F.softmax for n in gm.graph.nodes) == 2
    assert gm.call_sites["0.softmax_fn"] == "Tensor.softmax() in 0"
    x = _image((1, 2, 3, 3), seed=3)
    with torch.no_grad():
        assert torch.allclose(gm(x), model(x), rtol=0, atol=1e-6)


def test_train_mode_model_and_example_check(resnet: nn.Module) -> None:
    model = copy.deepcopy(resnet).train()
    before = _snapshot(model)
    gm = unshared_copy(model, example=_image((1, 3, 32, 32), seed=4))
    assert not gm.training
    _assert_untouched(model, before)  # running statistics unchanged, still in train mode


def test_example_check_catches_what_fx_gets_wrong() -> None:
    class Aliased(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.conv(x)
            b = a
            b += 1  # eager: also changes a; fx traces an out-of-place add
            return a + b

    model = Aliased().eval()
    with pytest.raises(UnshareError, match="different output"):
        unshared_copy(model, example=_image((1, 3, 4, 4), seed=5))


def test_script_module_is_refused() -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(UnshareError, match="TorchScript"):
        unshared_copy(scripted)


def test_data_dependent_control_flow_is_refused() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            if y.sum() > 0:
                y = -y
            return y

    model = Branchy().eval()
    before = _snapshot(model)
    with pytest.raises(UnshareError, match="cannot trace Branchy.*control flow"):
        unshared_copy(model)
    _assert_untouched(model, before)


def test_hooks_on_traced_through_modules_are_refused() -> None:
    model = _small()
    seen: list[object] = []
    handle = model.register_forward_hook(lambda m, i, o: seen.append(o))
    with pytest.raises(UnshareError, match="hooks"):
        unshared_copy(model)
    handle.remove()
    inner = nn.Sequential(_small())
    handle = inner[0].register_forward_pre_hook(lambda m, i: seen.append(i))
    with pytest.raises(UnshareError, match="'0' \\(Small\\) has hooks"):
        unshared_copy(inner)
    handle.remove()
    assert not seen  # no hook ran on fx proxies


def test_model_that_cannot_be_copied_is_refused() -> None:
    model = _small()
    model.lock = threading.Lock()
    with pytest.raises(UnshareError, match="cannot deep-copy Small"):
        unshared_copy(model)
