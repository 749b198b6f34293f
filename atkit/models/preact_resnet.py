"""PreActResNet-18 (He et al. 2016, "Identity mappings"), as used by robust_overfitting
(Rice et al. 2020) and ReBAT: pre-activation blocks, final BN + ReLU before pooling.

Strides are 1,2,2,2 after a 3x3 stride-1 stem, so 32x32 inputs reach 4x4 before pooling; pooling
is adaptive (docs/methods.md, common protocol, lists a stride that breaks 32x32 among reference-code defects).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from atkit.models.base import AtkitModel, Normalization, global_avg_pool


class PreActBlock(nn.Module):
    """``BN-ReLU-conv3x3-BN-ReLU-conv3x3`` plus shortcut; the 1x1 projection shortcut (no BN) reads
    the pre-activated input, the identity shortcut the raw input."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: Optional[nn.Module] = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(AtkitModel):
    """Pre-activation ResNet with stages 64, 128, 256, 512.

    Features: ``penultimate`` = global-average-pooled ``ReLU(BN(layer4))`` (512 dims, the input of
    the linear layer); ``third_to_last`` = global-average-pooled ``layer3`` output (256 dims; in a
    pre-activation net this is the un-activated residual stream).
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        *,
        dummy_classes: bool = False,
        normalize: Normalization = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__(num_classes, dummy_classes=dummy_classes, normalize=normalize, in_channels=in_channels)
        if len(num_blocks) != 4:
            raise ValueError(f"PreActResNet needs 4 stage sizes; got {list(num_blocks)}")
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, self.num_outputs)
        self.penultimate_dim = 512
        self.third_to_last_dim = 256

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers: List[nn.Module] = []
        for s in [stride] + [1] * (n - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def _trunk(self, x: torch.Tensor, need_third: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = self.layer2(self.layer1(self.conv1(x)))
        out3 = self.layer3(out)
        penultimate = global_avg_pool(F.relu(self.bn(self.layer4(out3))))
        return penultimate, (global_avg_pool(out3) if need_third else None)


def preact_resnet18(num_classes: int = 10, **kw) -> PreActResNet:
    """PreActResNet-18 of robust_overfitting (Rice et al. 2020): PreActBlock ``[2,2,2,2]``, 512-d features."""
    return PreActResNet((2, 2, 2, 2), num_classes, **kw)
