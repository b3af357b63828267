"""Test architectures: each entry builds a model and an example input, deterministically.

Every architecture also has a reference: :func:`reference_activations` runs the model on a deep copy with
hooks that clone each output the moment it is produced (slow, but immune to later in-place writes),
which is what ``capture_activations`` must reproduce. The ResNet has an additional hand-written forward
(:func:`resnet_manual`) that never relies on hooks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from cnn_widgets.zoo.resnet import ResNet18Like, resnet18_like

XSS_NAME = "<img src=x onerror=pwned=1>"


def _image(channels: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, h, w, generator=g)


def _seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


class PlainCNN(nn.Module):
    """conv → ReLU → pool → conv → ReLU → global average pool → linear; no in-place ops."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.fc(self.flatten(self.gap(x)))


class SharedModules(nn.Module):
    """One ReLU module applied after every conv, and one conv applied twice (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        x = self.act(self.shared(x))
        x = self.act(self.shared(x))
        return self.head(x)


class Nested(nn.Module):
    """Sequential inside Sequential, and a ModuleDict of branches whose outputs are summed."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        )
        self.branches = nn.ModuleDict(
            {
                "wide": nn.Sequential(nn.Conv2d(8, 6, 5, padding=2), nn.Tanh()),
                "narrow": nn.Sequential(nn.Conv2d(8, 6, 1), nn.Sigmoid()),
            }
        )
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = sum(branch(x) for branch in self.branches.values())
        return self.head(x)


class DictOutput(nn.Module):
    """Returns ``{"logits": …, "features": …}``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.relu(self.conv(x))
        return {"logits": self.fc(self.gap(features).flatten(1)), "features": features}


class TupleOutput(nn.Module):
    """Returns ``(logits, features)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.relu(self.bn(self.conv(x)))
        return self.fc(features.mean(dim=(2, 3))), features


class TrainModeBN(nn.Module):
    """conv → BatchNorm → ReLU(inplace) twice; meant to be captured while in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8, momentum=None)
        self.relu2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        return self.drop(self.relu2(self.bn2(self.conv2(x))))


class Identity2(nn.Module):
    """Returns its input unchanged (the output *is* the input tensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class InplaceZoo(nn.Module):
    """Every kind of in-place write that can hit a recorded output after its module returned:
    functional ``inplace=True``, ``Tensor.op_()``, ``+=``, ``x[...] = v``, ``out=``, writes through views
    and through ``.data``, and an identity module whose output aliases its input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.LeakyReLU(0.1, inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.alias = Identity2()
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.flat = nn.Flatten()
        self.hard = nn.Hardtanh(-0.5, 0.5, inplace=True)
        self.conv4 = nn.Conv2d(8, 8, 1)
        self.conv5 = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        y = self.conv2(x)
        y.mul_(2.0)                        # Tensor.op_()
        y += x                             # __iadd__
        a = self.alias(y)                  # output aliases conv2's output
        a[:, 0] = 0.0                      # __setitem__ through the alias
        z = self.conv3(a)
        z.view(-1)[:5].clamp_(min=0.0)     # write through a view
        f = self.flat(z)                   # view of conv3's output
        f.data.add_(1.0)                   # write through .data
        z = self.hard(z)
        w = self.conv4(z)
        torch.add(w, 1.0, out=w)           # out=
        v = self.conv5(w)
        torch.relu_(v)                     # torch.op_()
        F.relu(v, inplace=True)
        return v


class Exploding(nn.Module):
    """A model whose forward raises after some modules ran (when ``explode`` is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.explode = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.conv2(x)
        if self.explode:
            raise RuntimeError("boom mid-forward")
        return x


class XSSNamed(nn.Module):
    """Convolutions stored under a ``ModuleDict`` key that is an HTML injection attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(
            {
                "stem": nn.Conv2d(3, 8, 3, padding=1),
                XSS_NAME: nn.Conv2d(8, 8, 3, padding=1),
            }
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.blocks["stem"](x))
        return self.relu(self.blocks[XSS_NAME](x))


def _train_bn() -> nn.Module:
    return TrainModeBN().train()


def _resnet() -> ResNet18Like:
    model = resnet18_like(num_classes=10)
    # Non-trivial BatchNorm statistics, so a pre-ReLU value differs visibly from its ReLU.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.5)
    return model


# name → (model builder, input builder); the models come back in the mode they are meant to be used in.
ARCHS: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    "plain": (lambda: _seeded(PlainCNN).eval(), lambda: _image()),
    "resnet18_like": (_resnet, lambda: _image(h=64, w=64)),
    "shared": (lambda: _seeded(SharedModules).eval(), lambda: _image()),
    "nested": (lambda: _seeded(Nested).eval(), lambda: _image(h=24, w=40)),
    "dict_output": (lambda: _seeded(DictOutput).eval(), lambda: _image()),
    "tuple_output": (lambda: _seeded(TupleOutput).eval(), lambda: _image()),
    "train_bn": (lambda: _seeded(_train_bn), lambda: _image(h=16, w=16)),
    "inplace_zoo": (lambda: _seeded(InplaceZoo).eval(), lambda: _image(h=16, w=16)),
    "xss_named": (lambda: _seeded(XSSNamed).eval(), lambda: _image(h=16, w=16)),
}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A fresh model and example input for architecture ``name``."""
    make_model, make_input = ARCHS[name]
    return make_model(), make_input()


def leaf_names(model: nn.Module) -> list[str]:
    """Qualified names of modules without children (what ``layers=None`` records when they return tensors)."""
    return [n for n, m in model.named_modules() if n and not list(m.children())]


def reference_activations(model: nn.Module, x: torch.Tensor, layers: list[str] | None = None) -> dict[str, Any]:
    """Outputs of ``layers`` (default: every leaf) cloned the instant each module returns, in execution
    order, with ``#k`` suffixes for repeated calls; computed on a deep copy under ``torch.no_grad``."""
    twin = copy.deepcopy(model)
    wanted = set(leaf_names(twin) if layers is None else layers)
    out: dict[str, Any] = {}
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            key, k = name, 1
            while key in out:
                key, k = f"{name}#{k}", k + 1
            out[key] = output.detach().clone()

        return hook

    for name, module in twin.named_modules():
        if name in wanted:
            handles.append(module.register_forward_hook(hook_for(name)))
    try:
        with torch.no_grad():
            twin(x.clone())
    finally:
        for h in handles:
            h.remove()
    return out


def resnet_manual(model: ResNet18Like, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every leaf output of the ResNet computed by hand, out of place, without any hook."""
    acts: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        acts["conv1"] = model.conv1(x)
        acts["bn1"] = model.bn1(acts["conv1"])
        acts["relu"] = F.relu(acts["bn1"])
        acts["maxpool"] = h = model.maxpool(acts["relu"])
        for stage in range(1, 5):
            for b, block in enumerate(getattr(model, f"layer{stage}")):
                p = f"layer{stage}.{b}."
                identity = h  # BasicBlock computes its shortcut first
                if block.downsample is not None:
                    acts[p + "downsample.0"] = block.downsample[0](h)
                    acts[p + "downsample.1"] = identity = block.downsample[1](acts[p + "downsample.0"])
                acts[p + "conv1"] = block.conv1(h)
                acts[p + "bn1"] = block.bn1(acts[p + "conv1"])
                acts[p + "relu"] = F.relu(acts[p + "bn1"])
                acts[p + "conv2"] = block.conv2(acts[p + "relu"])
                acts[p + "bn2"] = block.bn2(acts[p + "conv2"])
                acts[p + "relu#1"] = h = F.relu(acts[p + "bn2"] + identity)
        acts["avgpool"] = model.avgpool(h)
        acts["fc"] = model.fc(torch.flatten(acts["avgpool"], 1))
    return acts
