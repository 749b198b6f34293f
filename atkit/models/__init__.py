"""Models: the model zoo, CIFAR-style classifiers on [0, 1] images with optional in-model input
normalization, a one-pass feature interface, and DUCAT dummy-class heads.

Owns the registry :data:`MODELS` (one registered factory per architecture), the dummy-class protocols' prediction
rules (:mod:`atkit.models.dummy`) and the loading of other people's weights (:mod:`atkit.models.external`). May
import core only.

``build_model(name, num_classes, dummy_classes=..., normalize=..., **kw)`` builds any of
:data:`MODELS`; :mod:`atkit.models.external` loads other people's state dicts (RobustBench key names) into them.
"""
from __future__ import annotations

from functools import partial
from typing import Any

from atkit.models.base import (NORMALIZATIONS, AtkitModel, Features, Normalization, count_parameters,
                               resolve_normalization)
from atkit.models.dm_wideresnet import DMPreActResNet, DMWideResNet
from atkit.models.dummy import MERGE_MODES, MergedDummyModel, merge_dummy_logits, predict_labels
from atkit.models.preact_resnet import PreActResNet, preact_resnet18
from atkit.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet18_bottleneck
from atkit.models.small_cnn import SmallCNN
from atkit.models.wideresnet import WideResNet, wide_resnet, wrn28_10, wrn34_10
from atkit.core.registry import Registry
from atkit.core.utils import unknown_name_error


def small_cnn(num_classes: int = 10, **kw: Any) -> SmallCNN:
    """Small BN CNN for CPU runs (see :class:`SmallCNN`)."""
    return SmallCNN(num_classes, **kw)


def _wide_resnet_entry(num_classes: int = 10, *, depth: int = 34, widen_factor: int = 10, drop_rate: float = 0.0,
                       dummy_classes: bool = False, normalize: Normalization = None,
                       in_channels: int = 3) -> WideResNet:
    # Registry entries take num_classes first; WideResNet takes (depth, widen_factor) first.
    return WideResNet(depth, widen_factor, num_classes, drop_rate=drop_rate, dummy_classes=dummy_classes,
                      normalize=normalize, in_channels=in_channels)


#: name -> constructor ``f(num_classes, *, dummy_classes, normalize, **extra)``; each model's extra options are
#: read from its constructor's signature (:meth:`atkit.core.registry.Registry.options`), so a new option of a
#: model class is accepted by :func:`build_model` without a second list to keep.
MODELS: Registry = Registry("model", {
    "small_cnn": SmallCNN,
    "resnet18": partial(ResNet, BasicBlock, [2, 2, 2, 2]),  # = resnet18()
    "preact_resnet18": partial(PreActResNet, (2, 2, 2, 2)),  # = preact_resnet18()
    "resnet18_bottleneck": partial(ResNet, Bottleneck, [2, 2, 2, 2]),  # = resnet18_bottleneck()
    "wrn34_10": partial(WideResNet, 34, 10),  # = wrn34_10()
    "wrn28_10": partial(WideResNet, 28, 10),  # = wrn28_10()
    "wide_resnet": _wide_resnet_entry,
})


# The DeepMind-style nets of RobustBench's leaderboard (atkit/models/dm_wideresnet.py): Swish, SAME padding, the
# DeepMind CIFAR-10 normalization inside the model unless ``normalize`` says otherwise.
@MODELS.register("dm_wrn28_10")
def dm_wrn28_10(num_classes: int = 10, *, activation: str = "swish", dummy_classes: bool = False,
                normalize: Normalization = "cifar10", in_channels: int = 3) -> DMWideResNet:
    """DeepMind-style WRN-28-10 with Swish (Gowal et al. 2020; Rebuffi et al. 2021), 36.5M parameters."""
    return DMWideResNet(28, 10, num_classes, activation=activation, dummy_classes=dummy_classes,
                        normalize=normalize, in_channels=in_channels)


@MODELS.register("dm_wrn70_16")
def dm_wrn70_16(num_classes: int = 10, *, activation: str = "swish", dummy_classes: bool = False,
                normalize: Normalization = "cifar10", in_channels: int = 3) -> DMWideResNet:
    """DeepMind-style WRN-70-16 with Swish (Gowal et al. 2020; Rebuffi et al. 2021), 267M parameters."""
    return DMWideResNet(70, 16, num_classes, activation=activation, dummy_classes=dummy_classes,
                        normalize=normalize, in_channels=in_channels)


@MODELS.register("dm_wide_resnet")
def dm_wide_resnet(num_classes: int = 10, *, depth: int = 28, width: int = 10, activation: str = "swish",
                   dummy_classes: bool = False, normalize: Normalization = "cifar10",
                   in_channels: int = 3) -> DMWideResNet:
    """Any DeepMind-style WRN-depth-width (depth = 6n + 4), e.g. the leaderboard's 34-20 and 106-16."""
    return DMWideResNet(depth, width, num_classes, activation=activation, dummy_classes=dummy_classes,
                        normalize=normalize, in_channels=in_channels)


@MODELS.register("dm_preact_resnet18")
def dm_preact_resnet18(num_classes: int = 10, *, activation: str = "swish", dummy_classes: bool = False,
                       normalize: Normalization = "cifar10", in_channels: int = 3) -> DMPreActResNet:
    """DeepMind-style pre-activation ResNet-18 with Swish (Rebuffi et al. 2021's ResNet-18 rows), 12.5M parameters."""
    return DMPreActResNet(18, num_classes, activation=activation, dummy_classes=dummy_classes, normalize=normalize,
                          in_channels=in_channels)


#: Arguments of :func:`build_model` itself, not per-model options.
_COMMON_KW = ("num_classes", "dummy_classes", "normalize")


def model_options(name: str) -> tuple[str, ...]:
    """The extra keyword options model ``name`` accepts beyond ``num_classes``, ``dummy_classes``, ``normalize``."""
    return tuple(MODELS.options(name, skip=_COMMON_KW))


#: ``build_model(normalize=MODEL_DEFAULT)``: the model's own default (none, or the DeepMind nets' CIFAR-10 constants).
MODEL_DEFAULT = "default"


def build_model(
    name: str,
    num_classes: int = 10,
    *,
    dummy_classes: bool = False,
    normalize: Normalization = MODEL_DEFAULT,
    **kw: Any,
) -> AtkitModel:
    """Build model ``name`` from :data:`MODELS` with ``num_classes`` real classes.

    ``dummy_classes=True`` gives the 2C-output DUCAT head; ``normalize`` (``(mean, std)``, a name of
    :data:`NORMALIZATIONS` such as ``"cifar10"``, or ``"none"``) normalizes inputs inside ``forward``; left out, the
    model's own default applies (none, except the DeepMind-style nets: ``"cifar10"``). Unknown names or keyword
    arguments raise :class:`ConfigError`.
    """
    entry = MODELS.get(name)
    accepted = model_options(name)
    for key in kw:
        if key not in accepted:
            raise unknown_name_error(f"option for model {name!r}", key, accepted or ("(none)",))
    if not (isinstance(normalize, str) and normalize == MODEL_DEFAULT):
        kw["normalize"] = normalize
    return entry(num_classes, dummy_classes=dummy_classes, **kw)


__all__ = [
    "AtkitModel",
    "DMPreActResNet",
    "DMWideResNet",
    "MODEL_DEFAULT",
    "NORMALIZATIONS",
    "Features",
    "MODELS",
    "MERGE_MODES",
    "MergedDummyModel",
    "PreActResNet",
    "ResNet",
    "SmallCNN",
    "WideResNet",
    "build_model",
    "count_parameters",
    "dm_preact_resnet18",
    "dm_wide_resnet",
    "dm_wrn28_10",
    "dm_wrn70_16",
    "merge_dummy_logits",
    "model_options",
    "predict_labels",
    "preact_resnet18",
    "resnet18",
    "resnet18_bottleneck",
    "resolve_normalization",
    "small_cnn",
    "wide_resnet",
    "wrn28_10",
    "wrn34_10",
]
