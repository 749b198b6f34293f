"""Training options that change the targets a method learns from: CutMix and label smoothing (docs/methods.md,
training options). Both need a :attr:`atkit.methods.Method.soft_targets` method; the run refuses others up front.

**CutMix** (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features",
ICCV 2019, arXiv:1905.04899), as ReBAT's released code applies it for "ReBAT + CutMix" (the rows marked * in
RPAT, Table 4; RPAT++'s released script is the same code with the RP term). Once per batch, with probability
``prob`` (ReBAT: every batch):

    lam ~ Beta(alpha, alpha)                               (ReBAT: alpha = beta = 1, i.e. lam ~ U(0, 1))
    pi  = a random permutation of the batch
    box: sides floor(H sqrt(1 - lam)) x floor(W sqrt(1 - lam)) around a uniform pixel (cy, cx), i.e. rows
         [cy - h//2, cy + h//2) and columns [cx - w//2, cx + w//2), clipped to the image
    x_i[box] <- x_pi(i)[box] for every image i             (one box for the whole batch)
    lam <- 1 - |box| / (H W)                               (the exact share of pixels each image keeps)
    target_i = lam e_{y_i} + (1 - lam) e_{y_pi(i)}

The method then sees ``batch.y`` as these (B, C) probabilities: its training attack maximises the cross-entropy
against the mixed target on the mixed image and its loss is ``CE(z(x'), target) = lam CE(z(x'), y) + (1 - lam)
CE(z(x'), y_pi)``, exactly the released code's ``attack_pgd(..., mixup=True)`` and ``mixup_criterion``. Label-free
terms (ReBAT's BoAT, RPAT++'s RP, TRADES's KL) are computed on the mixed images, as there. The draws come from a
generator seeded by ``(seed, epoch, step, rank)``, so a resumed run mixes exactly as an uninterrupted one; under
torchrun each process mixes within its own share of the batch. The mix is applied to the whole batch before it is
split for gradient accumulation (:mod:`atkit.training.accumulate`), so accumulation does not change it.

**Label smoothing** (Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016,
arXiv:1512.00567): the methods' cross-entropy terms use ``(1 - s) t + s / C`` in place of the target ``t``
(``F.cross_entropy(..., label_smoothing=s)``), i.e. ``(1 - s) CE(z, t) + s mean_c(-log p_c)``; training attacks
keep the unsmoothed target (as Pang et al.'s "Bag of tricks" code does). Neither ReBAT* nor RPAT++* uses it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.utils import ConfigError, check_field_types, unknown_name_error
from ..methods import METHODS
from ..methods.base import build_params

_CUTMIX_STREAM = 0xC07A1  # separates CutMix's draws from every other seeded stream of a run


@dataclass
class CutMixParams:
    """``RunConfig.cutmix``: ``{prob, alpha}`` (``None`` in the config: no CutMix)."""

    prob: float = field(default=1.0, metadata={
        "help": "probability that a batch is mixed (1: every batch, as ReBAT's code does)", "range": (0.0, 1.0)})
    alpha: float = field(default=1.0, metadata={
        "help": "lam ~ Beta(alpha, alpha) (1: uniform, ReBAT's --cutmix-alpha = --cutmix-beta = 1)",
        "range": (1e-3, None)})


def cutmix_params(value: Optional[Mapping[str, Any]]) -> Optional[CutMixParams]:
    """The validated ``cutmix`` option (None: off); ``{}`` means the defaults."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"cutmix={value!r} must be a mapping such as {{prob: 1.0, alpha: 1.0}}, or null (off)")
    names = [f.name for f in dataclasses.fields(CutMixParams)]
    for key in value:
        if key not in names:
            raise unknown_name_error("cutmix key", key, names)
    return build_params(CutMixParams, dict(value), "cutmix")


class CutMixDraw(NamedTuple):
    """One batch's CutMix: the partner of each row and the pasted box (rows ``top:bottom``, columns ``left:right``)."""

    perm: Tensor
    top: int
    bottom: int
    left: int
    right: int


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the box for a draw ``lam``: sides ``floor(H sqrt(1-lam))``,
    ``floor(W sqrt(1-lam))`` around a uniform pixel, halves ``side // 2`` each way, clipped to the image."""
    cut = math.sqrt(1.0 - lam)
    half_h, half_w = int(height * cut) // 2, int(width * cut) // 2
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    return (min(max(cy - half_h, 0), height), min(max(cy + half_h, 0), height),
            min(max(cx - half_w, 0), width), min(max(cx + half_w, 0), width))


def cutmix(x: Tensor, y: Tensor, draw: CutMixDraw, num_classes: int) -> tuple[Tensor, Tensor, float]:
    """``(mixed images, mixed targets (B, C), lam)`` of one draw (module docstring); ``y`` indices or probabilities.

    ``lam`` is the share of each image's pixels outside the box (the weight of its own label)."""
    height, width = x.shape[-2:]
    perm = draw.perm.to(x.device)
    mixed = x.clone()
    box = (..., slice(draw.top, draw.bottom), slice(draw.left, draw.right))
    mixed[box] = x[perm][box]
    lam = 1.0 - (draw.bottom - draw.top) * (draw.right - draw.left) / float(height * width)
    soft = y.float() if y.dim() == 2 else F.one_hot(y, num_classes).float()
    return mixed, lam * soft + (1.0 - lam) * soft[perm], lam


class CutMix:
    """The per-batch CutMix of a run: ``cutmix_batch(batch, epoch, step)`` (module docstring)."""

    def __init__(self, params: CutMixParams, num_classes: int, seed: int = 0, rank: int = 0) -> None:
        self.params, self.num_classes, self.seed, self.rank = params, int(num_classes), int(seed), int(rank)

    def draw(self, n: int, height: int, width: int, epoch: int, step: int) -> Optional[CutMixDraw]:
        """The draw of batch ``step`` of ``epoch`` (None: this batch is not mixed)."""
        rng = np.random.default_rng([self.seed, int(epoch), int(step), self.rank, _CUTMIX_STREAM])
        if rng.random() >= self.params.prob:
            return None
        lam = float(rng.beta(self.params.alpha, self.params.alpha))
        perm = torch.from_numpy(rng.permutation(n))
        return CutMixDraw(perm, *cutmix_box(height, width, lam, rng))

    def __call__(self, batch: Any, epoch: int, step: int) -> Any:
        """``batch`` with mixed ``x`` (and ``x2``, with the same box and partners) and probability targets ``y``."""
        draw = self.draw(batch.x.shape[0], batch.x.shape[-2], batch.x.shape[-1], epoch, step)
        if draw is None:
            return batch
        x, y, _ = cutmix(batch.x, batch.y, draw, self.num_classes)
        x2 = cutmix(batch.x2, batch.y, draw, self.num_classes)[0] if getattr(batch, "x2", None) is not None else None
        return batch._replace(x=x, y=y, **({"x2": x2} if x2 is not None else {}))


def build_cutmix(config: Any, num_classes: int, rank: int = 0) -> Optional[CutMix]:
    """The run's :class:`CutMix` (None when ``config.cutmix`` is None)."""
    params = cutmix_params(config.cutmix)
    return None if params is None else CutMix(params, num_classes, seed=config.seed, rank=rank)


def hard_labels(y: Tensor) -> Tensor:
    """Class indices of ``y``: itself, or the most probable class of probability targets (the larger share of a
    CutMix image), for the training-accuracy count."""
    return y.argmax(dim=1) if y.dim() == 2 else y


# -------------------------------------------------------------------------------- run configuration
#: The run keys of this module and of :mod:`atkit.training.accumulate` with their defaults (a run config without one of them
#: trains as with the default).
TRAINING_OPTION_DEFAULTS: dict[str, Any] = {"cutmix": None, "label_smoothing": 0.0, "accumulate_steps": 1}


def check_training_options(config: Any, method: Any) -> None:
    """Refuse a bad ``cutmix`` / ``label_smoothing`` / ``accumulate_steps`` of ``config`` (naming the value and what
    is accepted), and CutMix or label smoothing for a method without :attr:`~atkit.methods.Method.soft_targets`."""
    check_field_types(type(config), {k: getattr(config, k) for k in TRAINING_OPTION_DEFAULTS})
    cutmix_params(config.cutmix)
    smoothing = config.label_smoothing
    if not (math.isfinite(smoothing) and 0.0 <= smoothing < 1.0):
        raise ConfigError(f"label_smoothing={smoothing!r} must be in [0, 1) (0: off; 0.1 is the usual value)")
    steps, batch = config.accumulate_steps, config.resolved_batch_size()
    if steps < 1 or steps > batch:
        raise ConfigError(f"accumulate_steps={steps!r} must be an integer in [1, batch_size={batch}] (the batch is "
                          "split into that many micro-batches)")
    if (config.cutmix is not None or smoothing > 0) and not getattr(method, "soft_targets", False):
        takers = sorted(n for n, cls in METHODS.items() if getattr(cls, "soft_targets", False))
        used = " and ".join(k for k, on in (("cutmix", config.cutmix is not None), ("label_smoothing", smoothing > 0))
                            if on)
        raise ConfigError(f"method {config.method!r} cannot train with {used}: its loss reads the labels as class "
                          f"indices; methods that take mixed or smoothed targets: {', '.join(takers)} (and their "
                          "'+rpat' composites)")


def training_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The target-changing options of a run config (or of a reference entry's ``training``), defaults left out and
    CutMix's resolved: ``{}`` for a plain run, ``{"cutmix": {"prob": 1.0, "alpha": 1.0}}`` for ReBAT*. Two runs
    learn from the same targets iff these are equal (gradient accumulation is not among them)."""
    out: dict[str, Any] = {}
    params = cutmix_params(config.get("cutmix"))
    if params is not None:
        out["cutmix"] = dataclasses.asdict(params)
    if float(config.get("label_smoothing") or 0.0) > 0:
        out["label_smoothing"] = float(config["label_smoothing"])
    return out


def training_label(config: Mapping[str, Any]) -> str:
    """``"cutmix p=1 a=1, ls 0.1"`` for run labels ("" for a plain run)."""
    options = training_options(config)
    parts = []
    if "cutmix" in options:
        parts.append(f"cutmix p={options['cutmix']['prob']:g} a={options['cutmix']['alpha']:g}")
    if "label_smoothing" in options:
        parts.append(f"ls {options['label_smoothing']:g}")
    return ", ".join(parts)


__all__ = ["CutMix", "CutMixDraw", "CutMixParams", "TRAINING_OPTION_DEFAULTS", "build_cutmix",
           "check_training_options", "cutmix", "cutmix_box", "cutmix_params", "hard_labels", "training_label",
           "training_options"]
