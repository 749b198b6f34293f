"""Model zoo for atkit: CIFAR-style classifiers on [0, 1] images with optional in-model input
normalization, a one-pass feature interface, and DUCAT dummy-class heads.

``build_model(name, num_classes, dummy_classes=..., normalize=..., **kw)`` builds any of
:data:`MODELS`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from atkit.models.base import AtkitModel, Features, Normalization, count_parameters
from atkit.models.dummy import MERGE_MODES, MergedDummyModel, merge_dummy_logits, predict_labels
from atkit.models.preact_resnet import PreActResNet, preact_resnet18
from atkit.models.resnet import ResNet, resnet18, resnet18_bottleneck
from atkit.models.small_cnn import SmallCNN
from atkit.models.wideresnet import WideResNet, wide_resnet, wrn28_10, wrn34_10
from atkit.utils import unknown_name_error


def small_cnn(num_classes: int = 10, **kw: Any) -> SmallCNN:
    """Small BN CNN for CPU runs (see :class:`SmallCNN`)."""
    return SmallCNN(num_classes, **kw)


def _wide_resnet_entry(num_classes: int = 10, *, depth: int = 34, widen_factor: int = 10, **kw: Any) -> WideResNet:
    # Registry entries take num_classes first; wide_resnet() takes (depth, widen_factor) first.
    return wide_resnet(depth, widen_factor, num_classes, **kw)


#: name -> constructor ``f(num_classes, *, dummy_classes, normalize, **extra)``.
MODELS: Dict[str, Callable[..., AtkitModel]] = {
    "small_cnn": small_cnn,
    "resnet18": resnet18,
    "preact_resnet18": preact_resnet18,
    "resnet18_bottleneck": resnet18_bottleneck,
    "wrn34_10": wrn34_10,
    "wrn28_10": wrn28_10,
    "wide_resnet": _wide_resnet_entry,
}

# Extra keyword arguments each model accepts beyond the common ones.
_EXTRA_KW: Dict[str, tuple] = {
    "small_cnn": ("in_channels", "width", "hidden"),
    "resnet18": ("in_channels",),
    "preact_resnet18": ("in_channels",),
    "resnet18_bottleneck": ("in_channels",),
    "wrn34_10": ("in_channels", "drop_rate"),
    "wrn28_10": ("in_channels", "drop_rate"),
    "wide_resnet": ("in_channels", "drop_rate", "depth", "widen_factor"),
}


def build_model(
    name: str,
    num_classes: int = 10,
    *,
    dummy_classes: bool = False,
    normalize: Normalization = None,
    **kw: Any,
) -> AtkitModel:
    """Build model ``name`` from :data:`MODELS` with ``num_classes`` real classes.

    ``dummy_classes=True`` gives the 2C-output DUCAT head; ``normalize=(mean, std)`` normalizes
    inputs inside ``forward``. Unknown names or keyword arguments raise :class:`ConfigError`.
    """
    if name not in MODELS:
        raise unknown_name_error("model", name, MODELS)
    accepted = _EXTRA_KW[name]
    for key in kw:
        if key not in accepted:
            raise unknown_name_error(f"option for model {name!r}", key, accepted or ("(none)",))
    return MODELS[name](num_classes, dummy_classes=dummy_classes, normalize=normalize, **kw)


__all__ = [
    "AtkitModel",
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
    "merge_dummy_logits",
    "predict_labels",
    "preact_resnet18",
    "resnet18",
    "resnet18_bottleneck",
    "small_cnn",
    "wide_resnet",
    "wrn28_10",
    "wrn34_10",
]
