"""WideResNet (Zagoruyko & Komodakis 2016), the variant used by the TRADES/MART code, with the class
count as a parameter (that code hard-codes 10; docs/methods.md, common protocol).

Depth ``d = 6n + 4``: a 3x3 stem to 16 channels, three groups of ``n`` pre-activation blocks of
widths ``16k, 32k, 64k`` at strides 1, 2, 2, then BN-ReLU, global average pooling and a linear
layer. WRN-34-10 has ~46.2M parameters; WRN-28-10 ~36.5M.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from atkit.core.utils import ConfigError
from atkit.models.base import AtkitModel, Normalization, global_avg_pool


class WideBasicBlock(nn.Module):
    """``BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3``. When the width or stride changes the
    shortcut is a 1x1 conv on the pre-activated input; otherwise it is the raw input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut: Optional[nn.Module] = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(act)
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


def _group(n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> nn.Sequential:
    return nn.Sequential(
        *[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(n)
        ]
    )


class WideResNet(AtkitModel):
    """WRN-``depth``-``widen_factor``.

    Features: ``penultimate`` = global-average-pooled ``ReLU(BN(block3))`` (``64k`` dims, 640 for
    k = 10); ``third_to_last`` = global-average-pooled ``block2`` output (``32k`` dims).
    """

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        *,
        drop_rate: float = 0.0,
        dummy_classes: bool = False,
        normalize: Normalization = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__(num_classes, dummy_classes=dummy_classes, normalize=normalize, in_channels=in_channels)
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ConfigError(f"WideResNet depth must be 6n + 4 with n >= 1 (e.g. 16, 28, 34, 40); got {depth!r}")
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise ConfigError(f"WideResNet widen_factor must be a positive integer; got {widen_factor!r}")
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ConfigError(f"WideResNet drop_rate must be in [0, 1); got {drop_rate!r}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth = depth
        self.widen_factor = widen_factor
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _group(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = _group(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = _group(n, widths[2], widths[3], 2, drop_rate)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], self.num_outputs)
        self.penultimate_dim = widths[3]
        self.third_to_last_dim = widths[2]
        # The WRN paper's initialisation (He normal, fan-out) as in the TRADES code. A build on the meta device
        # (shapes only) has no values to initialise, and its normal_ would import torch's compiler (seconds).
        for m in ([] if self.conv1.weight.is_meta else self.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def _trunk(self, x: torch.Tensor, need_third: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = self.block1(self.conv1(x))
        out2 = self.block2(out)
        penultimate = global_avg_pool(F.relu(self.bn(self.block3(out2))))
        return penultimate, (global_avg_pool(out2) if need_third else None)


def wide_resnet(depth: int = 34, widen_factor: int = 10, num_classes: int = 10, **kw) -> WideResNet:
    """Generic WRN-depth-widen_factor (depth = 6n + 4)."""
    return WideResNet(depth, widen_factor, num_classes, **kw)


def wrn34_10(num_classes: int = 10, **kw) -> WideResNet:
    """WRN-34-10 (TRADES/MART/RPAT benchmark net), ~46.2M parameters at 10 classes."""
    return WideResNet(34, 10, num_classes, **kw)


def wrn28_10(num_classes: int = 10, **kw) -> WideResNet:
    """WRN-28-10 (DUCAT appendix, ReBAT), ~36.5M parameters at 10 classes."""
    return WideResNet(28, 10, num_classes, **kw)
