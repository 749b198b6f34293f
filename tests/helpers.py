"""Small shared pieces for tests: a tiny linear model and a batch type."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn


class TinyBatch(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor
    x2: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None


class TinyNet(nn.Module):
    """Linear classifier on flattened 3x4x4 images with a BatchNorm, so BN modes matter."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_outputs = num_classes
        self.bn = nn.BatchNorm1d(48)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(x.flatten(1)))


def tiny_batch(b: int = 8, num_classes: int = 5, seed: int = 0, two_views: bool = False) -> TinyBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 4, 4, generator=g)
    y = torch.randint(0, num_classes, (b,), generator=g)
    x2 = torch.rand(b, 3, 4, 4, generator=g) if two_views else None
    return TinyBatch(x, y, x2, torch.arange(b))
