"""The method interface: one small object per AT method with one loss entry point.

A method turns a batch into a scalar loss (and the pieces it is made of). The trainer owns
everything else: optimisation, schedules, logging, checkpoints. A new idea is a subclass that
overrides :meth:`Method.loss`, declares its hyperparameters in a ``Params`` dataclass and is
registered by name with :func:`atkit.methods.register`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Sequence

import torch.nn as nn
from torch import Tensor

from ..attacks import pgd
from ..attacks.mode import eval_logits
from ..attacks.threat import ThreatModel  # noqa: F401  (defined there, the one threat-model source)
from ..core.params import build_params as _build_params
from ..core.params import describe_params


@dataclass
class Params:
    """Hyperparameters every method accepts.

    ``attack_bn_mode`` and ``random_start`` default to ``None``: the method's own protocol
    (class attributes ``default_bn_mode`` and ``default_random_start``) decides.
    """

    attack_bn_mode: Optional[str] = field(default=None, metadata={
        "help": "BatchNorm mode while generating training attacks: 'eval' or 'train' (None: the method's default)",
        "choices": (None, "eval", "train")})
    random_start: Optional[str] = field(default=None, metadata={
        "help": "PGD start: 'uniform' in the ball, 'normal' = x + 0.001 N(0,1), 'none' (None: the method's default)",
        "choices": (None, "uniform", "normal", "none")})


@dataclass
class StepContext:
    """Where in training a step happens; methods with schedules (DUCAT, ReBAT) read it."""

    epoch: int = 0
    step: int = 0
    epochs: int = 1
    steps_per_epoch: int = 1
    track_clean: bool = True
    #: The run's label smoothing (``RunConfig.label_smoothing``); a :attr:`Method.soft_targets` method passes it
    #: to its cross-entropy terms (never to its attack).
    label_smoothing: float = 0.0

    @property
    def progress(self) -> float:
        return (self.epoch + self.step / max(self.steps_per_epoch, 1)) / max(self.epochs, 1)


@dataclass
class LossOutput:
    """What a method's :meth:`Method.loss` returns.

    ``loss`` is the scalar to minimise. ``parts`` holds its named terms (detached scalars) for the
    learning curves. ``logits_clean`` / ``logits_adv`` (may be ``None``) and ``y`` let the trainer
    report training clean and adversarial accuracy without another forward pass; ``x_adv`` and
    ``x`` let add-on terms (RPAT) reuse the perturbation.
    """

    loss: Tensor
    parts: dict[str, Tensor]
    y: Tensor
    logits_clean: Optional[Tensor] = None
    logits_adv: Optional[Tensor] = None
    x: Optional[Tensor] = None
    x_adv: Optional[Tensor] = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Term:
    """One scalar of a loss: it adds ``weight * value`` (``value`` itself when ``weight`` is None); ``name``
    labels ``value`` in the curves."""

    name: str
    value: Tensor
    weight: Optional[float] = None


def weighted_sum(terms: Sequence[Term]) -> Tensor:
    """``sum_k weight_k * value_k`` in the order given (at least one term).

    ``a + weighted_sum([Term("t", t, lam)])`` is the same float computation, value and gradient, as the
    hand-written ``a + lam * t`` (a weight of 1.0 is multiplied too, as the hand-written form does).
    """
    if not terms:
        raise ValueError("weighted_sum needs at least one term")
    total: Optional[Tensor] = None
    for term in terms:
        value = term.value if term.weight is None else term.weight * term.value
        total = value if total is None else total + value
    return total


def build_params(params_cls: type, values: dict[str, Any], method: str) -> Any:
    """A method's hyperparameters from a mapping (:func:`atkit.core.params.build_params`, kind "method")."""
    return _build_params(params_cls, values, method, "method")


class Method:
    """Base class of AT methods.

    Subclasses set ``name``, ``paper`` (source of the formula), optionally ``Params`` (a dataclass
    deriving from :class:`Params`), ``needs_two_views`` (the loader then supplies ``batch.x2``),
    ``default_bn_mode`` and ``default_random_start``, and implement :meth:`loss`.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type] = Params
    needs_two_views: ClassVar[bool] = False
    needs_dummy_classes: ClassVar[bool] = False
    default_bn_mode: ClassVar[str] = "eval"
    default_random_start: ClassVar[str] = "uniform"
    #: The objective its training attack maximises (``pgd(loss=...)``); a composer that rebuilds the loss
    #: around the method (DUCAT) attacks with it.
    attack_loss: ClassVar[str] = "ce"
    #: Whether :meth:`regularizer` reads ``logits_clean``; a composer then runs the clean forward (before the
    #: adversarial one, as the methods' own losses do).
    regularizer_uses_clean: ClassVar[bool] = False
    #: Whether :meth:`loss` fills ``LossOutput.x_adv`` (False for standard training): add-on terms on the
    #: perturbation (RPAT) need it.
    has_adversarial_example: ClassVar[bool] = True
    #: Whether :meth:`loss` reads ``batch.y`` as class indices (B,) *or* class probabilities (B, C) (CutMix's mixed
    #: targets, :mod:`atkit.training.augment`) and passes ``ctx.label_smoothing`` to its cross-entropy terms; the trainer
    #: refuses CutMix and label smoothing for a method without it.
    soft_targets: ClassVar[bool] = False
    #: A single-step method (FGSM-RS, N-FGSM): the trainer also measures FGSM accuracy each epoch and warns of
    #: catastrophic overfitting (:mod:`atkit.training.catastrophic_overfitting`).
    single_step: ClassVar[bool] = False

    def __init__(self, threat: ThreatModel | None = None, **hparams: Any) -> None:
        self.threat = threat if threat is not None else ThreatModel()
        self.params = build_params(self.Params, hparams, self.name or type(self).__name__)

    # -- attacks -------------------------------------------------------------------------------
    @property
    def bn_mode(self) -> str:
        return self.params.attack_bn_mode or self.default_bn_mode

    @property
    def start(self) -> Optional[str]:
        start = self.params.random_start or self.default_random_start
        return None if start == "none" else start

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, **overrides: Any) -> Tensor:
        """The method's training attack: PGD with its threat model, start and BN mode."""
        kwargs: dict[str, Any] = dict(eps=self.threat.eps, step_size=self.threat.step_size, steps=self.threat.steps,
                                      norm=self.threat.norm, random_start=self.start, bn_mode=self.bn_mode)
        kwargs.update(overrides)
        return pgd(model, x, y, **kwargs)

    # -- the loss ------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, ctx: StepContext) -> LossOutput:
        raise NotImplementedError

    # -- the contract for composing methods -----------------------------------------------------
    def regularizer(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, logits_clean: Optional[Tensor],
                    logits_adv: Tensor) -> Optional[list[Term]]:
        """The method's loss beside its classification term, for composers that replace that term (DUCAT).

        Optional. A method whose loss is ``classification + R`` defines it once and returns ``R`` as weighted
        terms (TRADES: ``[Term("kl", KL(p(x) || p(x')), lam)]``), or ``None`` when ``R = 0`` (PGD-AT). It takes
        the model, the clean inputs ``x`` (the stacked 2B batch of a two-view method), their adversarial
        examples ``x_adv``, the labels ``y`` (one per row of ``x``), the clean logits ``z(x)`` (with gradients
        when :attr:`regularizer_uses_clean`, else ``None``) and ``z(x')`` (with gradients); the composer adds
        ``weighted_sum(terms)`` to its loss and logs each term's value under its name. A method that does not
        define it (its loss has no such split: FAIT, ReBAT, ...) cannot be a DUCAT base: see
        :func:`defines_regularizer`.
        """
        raise NotImplementedError(f"{self.name or type(self).__name__} does not split its loss into a "
                                  "classification term and Method.regularizer()")

    # -- optional hooks for stateful methods (weight averages, epoch windows) --------------------
    def setup(self, trainer: Any) -> None:
        """Called once by the trainer before the first step (after a resume, too)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch."""

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Called after each optimiser step, before the trainer's EMA update (AWP restores its weights here)."""

    def epoch_metrics(self, trainer: Any) -> dict[str, float]:
        """Extra numbers to log after each epoch (e.g. FAIT's R and R'); merged into the metrics row."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # -- description ---------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, source and hyperparameters (with defaults and help) for listings."""
        return {"name": cls.name, "paper": cls.paper, "two_views": cls.needs_two_views,
                "attack_bn_mode": cls.default_bn_mode, "random_start": cls.default_random_start,
                "hyperparameters": describe_params(cls.Params)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threat={self.threat}, params={self.params})"


def defines_regularizer(method_cls: type) -> bool:
    """Whether ``method_cls`` defines :meth:`Method.regularizer` (even one returning ``None``)."""
    return getattr(method_cls, "regularizer", None) is not getattr(Method, "regularizer")


def clean_logits_for_metrics(model: nn.Module, x: Tensor, ctx: StepContext) -> Optional[Tensor]:
    """Clean logits for the training-accuracy curve only, when the loss itself has none.

    Computed in eval mode without gradients so that it changes neither BatchNorm statistics nor
    the optimisation; skipped when ``ctx.track_clean`` is off.
    """
    if not ctx.track_clean:
        return None
    return eval_logits(model, x)
