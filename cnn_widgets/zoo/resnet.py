"""ResNet-18- and ResNet-50-shaped networks (same layers, shapes and parameter counts as torchvision's
``resnet18`` and ``resnet50``, which cannot be imported beside the CPU torch used here). Untrained; used by
tests and benchmarks, and fine for users who want a realistic architecture to explore without downloading
weights."""

from __future__ import annotations

import torch
from torch import nn


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    """torchvision's projection shortcut (a strided 1×1 conv and BatchNorm) where the shape changes."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual add (in place, as torchvision does) and in-place ReLUs."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (stride here, as torchvision's v1.5) → 1×1 expand ×4, residual add in place."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class _ResNet(nn.Module):
    """conv1 → bn1 → relu → maxpool → layer1‥4 (``counts`` blocks each) → avgpool → fc."""

    def __init__(
        self, block: type[BasicBlock | Bottleneck], counts: list[int], num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (width, blocks) in enumerate(zip([64, 128, 256, 512], counts), start=1):
            stack = [block(cin, width, 1 if i == 1 else 2)]
            cin = width * block.expansion
            stack += [block(cin, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stack))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet18Like(_ResNet):
    """torchvision's ``resnet18`` layout: 2 BasicBlocks per stage."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes, in_channels)


class ResNet50Like(_ResNet):
    """torchvision's ``resnet50`` layout: 3, 4, 6, 3 Bottlenecks per stage."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes, in_channels)


def _seeded(cls: type[_ResNet], num_classes: int, in_channels: int, seed: int) -> _ResNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(num_classes, in_channels)
    return model.eval()


def resnet18_like(num_classes: int = 1000, in_channels: int = 3, seed: int = 0) -> ResNet18Like:
    """A deterministic, untrained ResNet-18-shaped model in eval mode (11.7 M parameters)."""
    return _seeded(ResNet18Like, num_classes, in_channels, seed)  # type: ignore[return-value]


def resnet50_like(num_classes: int = 1000, in_channels: int = 3, seed: int = 0) -> ResNet50Like:
    """A deterministic, untrained ResNet-50-shaped model in eval mode (25.6 M parameters)."""
    return _seeded(ResNet50Like, num_classes, in_channels, seed)  # type: ignore[return-value]
