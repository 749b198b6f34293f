"""The DeepMind-style WideResNet and pre-activation ResNet of RobustBench's leaderboard (Gowal et al. 2020,
"Uncovering the Limits of Adversarial Training against Norm-Bounded Adversarial Examples", arXiv:2010.03593;
Rebuffi et al. 2021, "Fixing Data Augmentation to Improve Adversarial Robustness", arXiv:2103.01946).

They differ from the TRADES-style :class:`~atkit.models.wideresnet.WideResNet` in four ways, all of which change
the outputs of a trained checkpoint:

* the activation is Swish, ``x * sigmoid(x)`` (``activation="swish"``; ``"relu"`` for the ReLU variants);
* the first 3x3 convolution of a block pads like TensorFlow's ``SAME``: one pixel on every side at stride 1, but
  only on the right and bottom at stride 2 (the DeepMind code pads by hand before an unpadded convolution);
* the input normalization lives inside the model with the DeepMind CIFAR-10 constants by default
  (``normalize="cifar10"``; a checkpoint's own ``mean``/``std`` buffers are loaded over them);
* the pre-activation ResNet's projection shortcut is a 3x3 convolution on the raw (not activated) input.

Module names follow RobustBench's ``dm_wide_resnet.py`` (``init_conv``, ``layer.<g>.block.<i>.batchnorm_0``,
``conv_0``, ``batchnorm_1``, ``conv_1``, ``shortcut``, ``batchnorm``; ``conv_2d``, ``layer_<g>.<i>.conv_2d_1`` ...
for the ResNet), so a RobustBench state dict loads after two renames (:mod:`atkit.models.external`): the head
``logits`` is atkit's ``fc`` and the buffers ``mean``/``std`` are ``input_mean``/``input_std``. At 10 classes
WRN-28-10 has 36.5M parameters, WRN-70-16 266.8M, the pre-activation ResNet-18 12.5M (its 3x3 shortcuts).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from atkit.core.utils import ConfigError, check_choice
from atkit.models.base import AtkitModel, Normalization, global_avg_pool

#: Activations of the DeepMind models: Swish (= SiLU) on the leaderboard, ReLU in some ablations.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"swish": F.silu, "relu": F.relu}


def same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TensorFlow ``SAME`` padding for a 3x3 kernel: ``(1, 1, 1, 1)`` at stride 1, ``(0, 1, 0, 1)`` (right and
    bottom only) at stride 2, as the DeepMind code pads before its unpadded convolutions."""
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    if stride == 2:
        return F.pad(x, (0, 1, 0, 1))
    raise ConfigError(f"DeepMind-style blocks support stride 1 or 2; got {stride!r}")


class DMWideBlock(nn.Module):
    """``act(BN) -> SAME-padded conv3x3(stride) -> act(BN) -> conv3x3``; when the width changes, the shortcut is a
    1x1 conv on the activated input, otherwise the raw input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.stride = stride
        self.act = ACTIVATIONS[activation]
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: Optional[nn.Conv2d] = None
        if in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.act(self.batchnorm_0(x))
        out = self.conv_0(same_pad(act, self.stride))
        out = self.conv_1(self.act(self.batchnorm_1(out)))
        return (x if self.shortcut is None else self.shortcut(act)) + out


class DMBlockGroup(nn.Module):
    """``n`` blocks under ``.block`` (the extra level in RobustBench's key names: ``layer.0.block.3.conv_0``)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.block = nn.Sequential(*[
            DMWideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, activation)
            for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _check_activation(activation: str) -> str:
    check_choice("activation", activation, tuple(ACTIVATIONS))
    return activation


class DMWideResNet(AtkitModel):
    """DeepMind-style WRN-``depth``-``width`` (depth ``6n + 4``): stem conv to 16 channels, three groups of ``n``
    blocks of widths ``16k, 32k, 64k`` at strides 1, 2, 2, then ``act(BN)``, global average pooling, linear.

    Features: ``penultimate`` = pooled ``act(batchnorm(layer[2]))`` (``64k`` dims); ``third_to_last`` = pooled
    output of ``layer[1]`` (``32k`` dims). At 32 px the global pooling equals the DeepMind code's 8x8 pooling.
    """

    def __init__(
        self,
        depth: int = 28,
        width: int = 10,
        num_classes: int = 10,
        *,
        activation: str = "swish",
        dummy_classes: bool = False,
        normalize: Normalization = "cifar10",
        in_channels: int = 3,
    ) -> None:
        super().__init__(num_classes, dummy_classes=dummy_classes, normalize=normalize, in_channels=in_channels)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ConfigError(f"DM WideResNet depth must be 6n + 4 with n >= 1 (e.g. 28, 34, 70, 106); got {depth!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(f"DM WideResNet width must be a positive integer; got {width!r}")
        self.act = ACTIVATIONS[_check_activation(activation)]
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.depth, self.width, self.activation = depth, width, activation
        self.init_conv = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            DMBlockGroup(n, widths[0], widths[1], 1, activation),
            DMBlockGroup(n, widths[1], widths[2], 2, activation),
            DMBlockGroup(n, widths[2], widths[3], 2, activation),
        )
        self.batchnorm = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], self.num_outputs)
        self.penultimate_dim = widths[3]
        self.third_to_last_dim = widths[2]

    def _trunk(self, x: torch.Tensor, need_third: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        out2 = self.layer[1](self.layer[0](self.init_conv(x)))
        penultimate = global_avg_pool(self.act(self.batchnorm(self.layer[2](out2))))
        return penultimate, (global_avg_pool(out2) if need_third else None)


class DMPreActBlock(nn.Module):
    """``act(BN) -> SAME-padded conv3x3(stride) -> act(BN) -> conv3x3``; when the stride or width changes, the
    shortcut is a SAME-padded 3x3 conv on the raw input (the DeepMind code's choice), otherwise the raw input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.stride = stride
        self.act = ACTIVATIONS[activation]
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.conv_2d_1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.conv_2d_2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: Optional[nn.Conv2d] = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(same_pad(x, self.stride))
        out = self.conv_2d_1(same_pad(self.act(self.batchnorm_0(x)), self.stride))
        return self.conv_2d_2(self.act(self.batchnorm_1(out))) + shortcut


#: Blocks per stage of the DeepMind pre-activation ResNets.
DM_PREACT_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class DMPreActResNet(AtkitModel):
    """DeepMind-style pre-activation ResNet-18/34 (Rebuffi et al. 2021's ResNet-18 rows): stem ``conv_2d``, four
    stages ``layer_0..layer_3`` of widths 64, 128, 256, 512 at strides 1, 2, 2, 2, ``act(batchnorm)``, pooling,
    linear. Features: ``penultimate`` = pooled ``act(batchnorm(layer_3))`` (512), ``third_to_last`` = pooled
    ``layer_2`` output (256)."""

    def __init__(
        self,
        depth: int = 18,
        num_classes: int = 10,
        *,
        activation: str = "swish",
        dummy_classes: bool = False,
        normalize: Normalization = "cifar10",
        in_channels: int = 3,
    ) -> None:
        super().__init__(num_classes, dummy_classes=dummy_classes, normalize=normalize, in_channels=in_channels)
        if depth not in DM_PREACT_DEPTHS:
            raise ConfigError(f"DM PreActResNet depth must be one of {sorted(DM_PREACT_DEPTHS)}; got {depth!r}")
        self.act = ACTIVATIONS[_check_activation(activation)]
        self.depth, self.activation = depth, activation
        self.conv_2d = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        widths, strides = (64, 128, 256, 512), (1, 2, 2, 2)
        in_planes = 64
        for g, (n, planes, stride) in enumerate(zip(DM_PREACT_DEPTHS[depth], widths, strides)):
            setattr(self, f"layer_{g}", self._stage(in_planes, planes, n, stride, activation))
            in_planes = planes
        self.batchnorm = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, self.num_outputs)
        self.penultimate_dim = 512
        self.third_to_last_dim = 256

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int, activation: str) -> nn.Sequential:
        strides: Sequence[int] = [stride] + [1] * (n - 1)
        return nn.Sequential(*[DMPreActBlock(in_planes if i == 0 else planes, planes, s, activation)
                               for i, s in enumerate(strides)])

    def _trunk(self, x: torch.Tensor, need_third: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        out = self.layer_1(self.layer_0(self.conv_2d(x)))
        out3 = self.layer_2(out)
        penultimate = global_avg_pool(self.act(self.batchnorm(self.layer_3(out3))))
        return penultimate, (global_avg_pool(out3) if need_third else None)


__all__ = ["ACTIVATIONS", "DMBlockGroup", "DMPreActBlock", "DMPreActResNet", "DMWideBlock", "DMWideResNet",
           "same_pad"]
