"""A small convolutional net for fast CPU runs (tests, synthetic data, notebooks' smoke runs)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from atkit.models.base import AtkitModel, Normalization


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(AtkitModel):
    """``conv(w)-pool-conv(2w)-pool-conv(4w)-pool-adaptive_pool(4x4)-fc(hidden)-fc(hidden)-fc``.

    Sized for CPU work: about 3 M multiply-adds per 32x32 image at ``width=16`` (a ResNet-18 needs
    about 550 M), so adversarial training on the synthetic data takes seconds per epoch on two cores.

    Every conv is followed by BatchNorm and ReLU, so train/eval BN modes during attack generation
    (docs/methods.md, common protocol) change the outputs as in the big nets. The adaptive pool makes the
    head independent of the input size (32 px, 64 px, ...).

    Features: ``penultimate`` = input of the last linear layer (``hidden`` dims);
    ``third_to_last`` = input of the second-to-last linear layer (``hidden`` dims).
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        dummy_classes: bool = False,
        normalize: Normalization = None,
        in_channels: int = 3,
        width: int = 16,
        hidden: int = 128,
    ) -> None:
        super().__init__(num_classes, dummy_classes=dummy_classes, normalize=normalize, in_channels=in_channels)
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2),
            _conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_bn_relu(2 * width, 4 * width),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(4 * width * 16, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc = nn.Linear(hidden, self.num_outputs)
        self.penultimate_dim = hidden
        self.third_to_last_dim = hidden

    def _trunk(self, x: torch.Tensor, need_third: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = F.adaptive_avg_pool2d(self.features(x), 4)
        third = F.relu(self.fc1(torch.flatten(out, 1)))
        penultimate = F.relu(self.fc2(third))
        return penultimate, third
