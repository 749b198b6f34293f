"""CIFAR-style ResNets (He et al. 2016): 3x3 stride-1 stem, no max-pool, stages at strides 1,2,2,2.

``ResNet(BasicBlock, [2,2,2,2])`` is the standard ResNet-18 (512-d features, ~11.2M parameters at
10 classes). ``ResNet(Bottleneck, [2,2,2,2])`` is what the RPAT/DUCAT released code calls
"ResNet-18": Bottleneck blocks with expansion 4, 2048-d features (docs/methods.md, common protocol, known
defects). Both are offered under honest names.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn
from torch.nn import functional as F

from atkit.models.base import AtkitModel, Normalization, global_avg_pool


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; identity shortcut, or 1x1 conv + BN when the shape changes."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand to ``4 * planes``; BN after each conv."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(AtkitModel):
    """CIFAR ResNet with four stages of widths 64, 128, 256, 512 (times ``block.expansion``).

    Features: ``penultimate`` = global-average-pooled ``layer4`` output (512 or 2048 dims);
    ``third_to_last`` = global-average-pooled ``layer3`` output (256 or 1024 dims).
    """

    def __init__(
        self,
        block: Block,
        num_blocks: Sequence[int],
        num_classes: int = 10,
        *,
        dummy_classes: bool = False,
        normalize: Normalization = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__(num_classes, dummy_classes=dummy_classes, normalize=normalize, in_channels=in_channels)
        if len(num_blocks) != 4:
            raise ValueError(f"ResNet needs 4 stage sizes; got {list(num_blocks)}")
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.fc = nn.Linear(512 * block.expansion, self.num_outputs)
        self.penultimate_dim = 512 * block.expansion
        self.third_to_last_dim = 256 * block.expansion

    def _make_layer(self, block: Block, planes: int, n: int, stride: int) -> nn.Sequential:
        layers: List[nn.Module] = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def _trunk(self, x: torch.Tensor, need_third: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out3 = self.layer3(out)
        penultimate = global_avg_pool(self.layer4(out3))
        return penultimate, (global_avg_pool(out3) if need_third else None)


def resnet18(num_classes: int = 10, **kw) -> ResNet:
    """ResNet-18: BasicBlock ``[2,2,2,2]``, 512-d features (~11.2M parameters at 10 classes)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, **kw)


def resnet18_bottleneck(num_classes: int = 10, **kw) -> ResNet:
    """Bottleneck ``[2,2,2,2]`` (expansion 4, 2048-d features): the net the RPAT/DUCAT released code
    calls "ResNet-18". It is not the BasicBlock ResNet-18; use it to match that code."""
    return ResNet(Bottleneck, [2, 2, 2, 2], num_classes, **kw)
