"""Base class shared by every atkit classifier: class bookkeeping, in-model input normalization,
and the one-pass feature interface used by RPAT's perception-proxy ablation."""
from __future__ import annotations

import math
import numbers
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from atkit.core.utils import ConfigError, check_choice, unknown_name_error

#: What ``normalize`` accepts (:func:`resolve_normalization`): None / ``"none"``, a name of :data:`NORMALIZATIONS`,
#: a pair ``(mean, std)`` of per-channel lists, or a mapping ``{"mean": [...], "std": [...]}``.
Normalization = Union[None, str, Mapping[str, Sequence[float]], Tuple[Sequence[float], Sequence[float]]]

#: Named input normalizations (per-channel mean and std of images in [0, 1]). ``cifar10`` / ``cifar100`` are the
#: constants of the DeepMind adversarial-robustness code (Gowal et al. 2020, arXiv:2010.03593) that RobustBench's
#: DeepMind-style models and many CIFAR checkpoints use; ``imagenet`` the torchvision constants.
NORMALIZATIONS: dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class Features(NamedTuple):
    """Outputs of one forward pass (all ``(B, D)`` tensors).

    - ``logits``: the model output, ``(B, num_outputs)``.
    - ``penultimate``: the vector fed to the final linear layer ("embedding from the second-to-last
      layer", RPAT, Table 5).
    - ``third_to_last``: the layer before that ("embedding from the third-to-last layer"). For the
      convolutional nets this is the global-average-pooled output of the stage before the last
      stage (ResNet ``layer3``, WideResNet ``block2``); for ``small_cnn`` it is the input of its
      second-to-last linear layer.
    """

    logits: torch.Tensor
    penultimate: torch.Tensor
    third_to_last: torch.Tensor


def resolve_normalization(normalize: Normalization) -> Optional[Tuple[Sequence[float], Sequence[float]]]:
    """``(mean, std)`` or None from what a user may write (:data:`Normalization`); an unknown name or a mapping
    without exactly ``mean`` and ``std`` is a :class:`ConfigError`. Numbers are checked by the model."""
    if normalize is None:
        return None
    if isinstance(normalize, str):
        key = normalize.strip().lower()
        if key == "none":
            return None
        if key not in NORMALIZATIONS:
            raise unknown_name_error("normalization", normalize, ("none", *NORMALIZATIONS, "[mean, std]"))
        return NORMALIZATIONS[key]
    if isinstance(normalize, Mapping):
        if set(normalize) != {"mean", "std"}:
            raise ConfigError(f"normalize as a mapping needs exactly the keys mean and std; got {sorted(normalize)}")
        return normalize["mean"], normalize["std"]
    return normalize  # type: ignore[return-value]  # a (mean, std) pair, checked by _check_normalize


def _check_normalize(normalize: Normalization, in_channels: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    normalize = resolve_normalization(normalize)
    if normalize is None:
        return None
    try:
        mean, std = normalize
        mean_v = [float(v) for v in mean]
        std_v = [float(v) for v in std]
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"normalize must be none, one of {', '.join(NORMALIZATIONS)}, or a pair [mean, std] of per-channel "
            f"number lists; got {normalize!r}"
        ) from exc
    if len(mean_v) != len(std_v) or len(mean_v) not in (1, in_channels):
        raise ConfigError(
            f"normalize mean/std must both have 1 or {in_channels} (= in_channels) entries; "
            f"got {len(mean_v)} and {len(std_v)}"
        )
    # Checked on Python floats, not tensors: a model built under ``torch.device("meta")`` has no values to test.
    if not all(math.isfinite(v) and v > 0 for v in std_v) or not all(math.isfinite(v) for v in mean_v):
        raise ConfigError(f"normalize std must be > 0 and mean finite; got mean={list(mean)}, std={list(std)}")
    mean_t = torch.tensor(mean_v, dtype=torch.float32)
    std_t = torch.tensor(std_v, dtype=torch.float32)
    return mean_t.view(1, -1, 1, 1), std_t.view(1, -1, 1, 1)


class AtkitModel(nn.Module):
    """A classifier on images in [0, 1] (NCHW) with ``num_outputs`` logits.

    ``num_classes`` is the real class count C; with ``dummy_classes=True`` the head has 2C outputs and
    output ``k + C`` is the dummy of class ``k`` (docs/methods.md, DUCAT).
    ``normalize=(mean, std)`` applies ``(x - mean) / std`` per channel inside ``forward`` so attacks
    keep working in [0, 1] pixel space (docs/methods.md, common protocol); ``None`` is the identity.

    Subclasses build their trunk, set ``self.fc`` (the final ``nn.Linear``) and implement
    :meth:`_trunk`, which returns ``(penultimate, third_to_last or None)``.
    """

    penultimate_dim: int
    third_to_last_dim: int

    def __init__(
        self,
        num_classes: int,
        *,
        dummy_classes: bool = False,
        normalize: Normalization = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
            raise ConfigError(f"num_classes must be an integer >= 2; got {num_classes!r}")
        num_classes = int(num_classes)  # numpy / tensor-derived ints from dataset metadata
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ConfigError(f"in_channels must be a positive integer; got {in_channels!r}")
        self.num_classes = num_classes
        self.dummy_classes = bool(dummy_classes)
        self.num_outputs = 2 * num_classes if self.dummy_classes else num_classes
        self.in_channels = in_channels
        stats = _check_normalize(normalize, in_channels)
        # Registered as None when unused so state_dicts of normalized and plain models differ
        # (loading one into the other then fails loudly instead of silently changing inputs).
        self.register_buffer("input_mean", None if stats is None else stats[0])
        self.register_buffer("input_std", None if stats is None else stats[1])

    # -- to be provided by subclasses -------------------------------------------------------
    fc: nn.Linear

    def _trunk(self, x: torch.Tensor, need_third: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError

    # -- shared behaviour -----------------------------------------------------------------------
    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_mean is None:
            return x
        return (x - self.input_mean) / self.input_std

    def forward(self, x: torch.Tensor, return_features: bool = False) -> Union[torch.Tensor, Features]:
        """Logits ``(B, num_outputs)``; the same computation as ``forward_features(x).logits``.

        ``return_features=True`` returns :class:`Features` instead, so wrappers that only intercept
        ``__call__`` (DistributedDataParallel) also serve the feature path.
        """
        penultimate, third = self._trunk(self.normalize_input(x), return_features)
        logits = self.fc(penultimate)
        if not return_features:
            return logits
        assert third is not None
        return Features(logits, penultimate, third)

    def forward_features(self, x: torch.Tensor) -> Features:
        """Logits, penultimate and third-to-last embeddings from one pass (see :class:`Features`)."""
        return self.forward(x, return_features=True)

    def enable_dummy_classes(self, init: str = "random") -> "AtkitModel":
        """Grow a C-output head to the 2C-output DUCAT head in place (fine-tuning a robust C-class
        checkpoint, DUCAT, Algorithm 1 with resuming epoch T_r).

        The first C rows keep the trained weights; the dummy rows ``C..2C-1`` get a fresh
        ``nn.Linear`` initialisation (``init="random"``) or a copy of their real class's row
        (``init="copy"``, so dummy and real logits start equal). Returns ``self``.
        """

        check_choice("dummy head init", init, ("random", "copy"))
        if self.dummy_classes:
            raise ConfigError("model already has dummy classes (num_outputs == 2 * num_classes)")
        old = self.fc
        new = nn.Linear(old.in_features, 2 * self.num_classes, bias=old.bias is not None)
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight[: self.num_classes].copy_(old.weight)
            if init == "copy":
                new.weight[self.num_classes:].copy_(old.weight)
            if old.bias is not None:
                new.bias[: self.num_classes].copy_(old.bias)
                if init == "copy":
                    new.bias[self.num_classes:].copy_(old.bias)
        new.train(old.training)
        self.fc = new
        self.dummy_classes = True
        self.num_outputs = 2 * self.num_classes
        return self

    def extra_repr(self) -> str:
        norm = "none" if self.input_mean is None else "per-channel"
        return (
            f"num_classes={self.num_classes}, num_outputs={self.num_outputs}, "
            f"dummy_classes={self.dummy_classes}, normalize={norm}"
        )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C)``; works at any spatial size (32 px CIFAR, 64 px Tiny-ImageNet)."""
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
