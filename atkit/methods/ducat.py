"""DUCAT: dummy classes-based adversarial training, a plug-in to PGD-AT, TRADES, MART and Consistency-AT.

DUCAT ("New paradigm of adversarial training ... via dummy classes"), docs/methods.md, DUCAT.
The model has a 2C-output head; output ``k + C`` is the dummy of class ``k`` and the prediction is
the argmax over the 2C outputs mapped ``k >= C -> k - C`` (:func:`atkit.models.predict_labels`).

Composite names ``"<base>+ducat"`` are built by the add-on registered as ``"ducat"``
(:func:`atkit.methods.register_addon`) for any base that defines :meth:`Method.regularizer` (``pgd_at``,
``trades``, ``mart``, ``consistency_at``, and any new method that splits its loss the same way); the
hyperparameters of the base method and of DUCAT go in one dict and are split by name.

How the loss is assembled (our reading of DUCAT, Eq. 9-10 and Algorithm 1, checked against the
released code of the paper, which keeps each base method's regulariser):

* Every base loss is split into a *classification term* and a *regulariser* (the base's
  :meth:`Method.regularizer`, defined once in the base's own file):
  PGD-AT: ``CE(z(x'), y)`` | none.
  TRADES: ``CE(z(x), y)`` | ``lam * KL(p(x) || p(x'))``.
  MART: the ``CE(z(x'), y)`` part of its BCE | the BCE margin ``-log(1.0001 - max_{k != y} p_k(x'))``
  plus ``lam * KL(p(x) || p(x')) (1 - p_y(x))``.
  Consistency-AT: ``CE`` over the 2B adversarial views | ``lam * JS(p_T(x1'), p_T(x2'))``.
  All of them on the raw 2C outputs with the real label ``y`` (so the MART margin's
  ``max_{k != y}`` also ranges over the dummy classes, as in the released code).
* In the window ``[t, end of the run]`` the classification term becomes
  ``alpha * CE(z(x), l(y, beta1)) + (1 - alpha) * CE(z(x'), l(y, 1 - beta2))`` with the soft label
  ``l(y, b) = b e_y || (1 - b) e_y`` (eq. 8-10); clean and adversarial images go through one
  forward of the stacked batch, as in the released code.
* Before ``t`` (``before_window``): ``"ce_adv"`` (default, released code) uses ``CE(z(x'), y)`` as
  the classification term for every base, TRADES included; ``"base"`` runs the base method's own
  loss unchanged (labels ``y`` on the 2C outputs).
* ``base_regularizer=False`` drops the regulariser, leaving exactly the formula of docs/methods.md,
  DUCAT (window) and plain ``CE(z(x'), y)`` (before the window).

The adversarial example, in and out of the window, is the base method's own training attack run on
the current 2C model with the real label ``y`` (Algorithm 1 line 4: the training adversary
``A(theta')`` of the doubled model; the released code calls the unchanged PGD-AT / TRADES / MART /
Consistency-AT attacks on the 2C logits). So a CE attack maximises ``-log p_y`` over 2C outputs and
is free to push ``x'`` into the dummy class ``y + C``. ``attack_logits="merged"`` attacks the merged
C-class logits ``logsumexp(z_k, z_{k+C})`` instead (an option for studying adaptive training).

Window start. ``start_epoch`` (t, 0-based epoch index) refers to a run of ``reference_epochs``
epochs (105 of 130 for CIFAR-10; the paper uses 100 for CIFAR-100 / Tiny-ImageNet). A run of E
epochs opens the window at epoch ``t * E / reference_epochs``, the same proportional rescaling as
:meth:`atkit.core.schedules.Schedule.scaled_to` applies to the learning-rate milestones, so a shortened
run keeps DUCAT on the same final fraction of training. (The released code compares its epoch
counter with 105; whether that counter starts at 0 or 1 is not visible in the released files, so
the window may start one epoch earlier there.)

Fine-tuning (Algorithm 1 with resuming epoch T_r): set ``RunConfig.init_checkpoint`` to a robust
C-class checkpoint and ``start_epoch = T_r``. :meth:`DUCAT.adapt_init_checkpoint` grows the
checkpoint's C-row head to 2C rows ("doubleLastLayer"): the real rows keep the trained weights and
the dummy rows are a copy of them (``head_init="copy"``, default: the doubled model then predicts
exactly what the checkpoint predicted, under both evaluation protocols) or the fresh initialisation
of the new model (``head_init="random"``). The paper does not say which; "copy" is our reading of
"doubling" the last layer.

Table 4 (targeted PGD-10 with random original or dummy targets): :func:`targeted_eval`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attacks import ThreatModel, eval_logits, pgd
from ..core.utils import ConfigError, check_choice, model_device
from ..models import merge_dummy_logits, predict_labels
from .base import LossOutput, Method, StepContext, build_params, defines_regularizer, weighted_sum
from .registry import METHODS, register_addon

TARGET_KINDS = ("original", "dummy")


# ------------------------------------------------------------------------------------------ labels
def soft_label(y: Tensor, beta: float, num_classes: int) -> Tensor:
    """``l(y, beta) = beta e_y || (1 - beta) e_y``: shape ``(B, 2C)``, ``beta`` on the real class
    ``y`` and ``1 - beta`` on its dummy ``y + C`` (DUCAT, Eq. 8)."""
    target = torch.zeros(y.shape[0], 2 * num_classes, device=y.device, dtype=torch.float32)
    rows = torch.arange(y.shape[0], device=y.device)
    target[rows, y] = beta
    target[rows, y + num_classes] = 1.0 - beta
    return target


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy with a probability target, per sample: ``-sum_k target_k log softmax(z)_k``."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)


def ducat_classification_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, num_classes: int, *,
                              alpha: float = 0.5, beta1: float = 0.75, beta2: float = 1.0) -> Tensor:
    """``alpha * CE(z(x), l(y, beta1)) + (1 - alpha) * CE(z(x'), l(y, 1 - beta2))``, batch mean (DUCAT, Eq. 10).

    The hard-label toy case of Fig. 4 is ``beta1 = beta2 = 1``: clean target ``e_y || 0``,
    adversarial target ``0 || e_y``.
    """
    clean = soft_cross_entropy(logits_clean, soft_label(y, beta1, num_classes)).mean()
    adv = soft_cross_entropy(logits_adv, soft_label(y, 1.0 - beta2, num_classes)).mean()
    return alpha * clean + (1.0 - alpha) * adv


# ------------------------------------------------------------------------------------ head growth
def expand_head_state(checkpoint_sd: dict[str, Tensor], model_sd: dict[str, Tensor], num_classes: int,
                      init: str = "copy") -> dict[str, Tensor]:
    """Grow every C-row head tensor of a C-class state dict to the 2C rows of ``model_sd``.

    A tensor is grown when the model's tensor of the same name (an optional ``module.`` prefix, as in
    weight-average state dicts, is ignored) has 2C rows and the checkpoint's has C rows with the same
    remaining shape. Rows ``0..C-1`` keep the checkpoint's values; rows ``C..2C-1`` (the dummies)
    are a copy of them (``init="copy"``) or the model's own (fresh) rows (``init="random"``).
    Everything else is returned unchanged.
    """
    check_choice("dummy head init", init, ("copy", "random"))
    out = dict(checkpoint_sd)
    for key, value in checkpoint_sd.items():
        model_key = key if key in model_sd else key[len("module."):] if key.startswith("module.") else key
        target = model_sd.get(model_key)
        if (target is None or not torch.is_tensor(value) or value.dim() == 0 or target.dim() != value.dim()
                or value.shape[0] != num_classes or target.shape[0] != 2 * num_classes
                or tuple(value.shape[1:]) != tuple(target.shape[1:])):
            continue
        dummy_rows = value if init == "copy" else target[num_classes:].to(value.device, value.dtype)
        out[key] = torch.cat([value, dummy_rows.clone()], dim=0)
    return out


# ---------------------------------------------------------------------------------------- method
@dataclass
class DUCATParams:
    start_epoch: int = field(default=105, metadata={
        "help": "epoch t (0-based) that opens the dummy-class window, for a run of reference_epochs epochs "
                "(105 for CIFAR-10, 100 for CIFAR-100/Tiny-ImageNet); rescaled to the run's length",
        "range": (0, None)})
    reference_epochs: int = field(default=130, metadata={
        "help": "run length start_epoch refers to (the paper's 130); a run of E epochs opens the window at "
                "start_epoch * E / reference_epochs", "range": (1, None)})
    alpha: float = field(default=0.5, metadata={"help": "weight of the clean term (1 - alpha: adversarial term)",
                                                "range": (0.0, 1.0)})
    beta1: float = field(default=0.75, metadata={"help": "clean soft label: beta1 on y, 1 - beta1 on its dummy",
                                                 "range": (0.0, 1.0)})
    beta2: float = field(default=1.0, metadata={"help": "adversarial soft label: beta2 on the dummy y + C, "
                                                        "1 - beta2 on y", "range": (0.0, 1.0)})
    hard_labels: bool = field(default=False, metadata={
        "help": "toy case of DUCAT, Fig. 4: clean target e_y || 0, adversarial 0 || e_y (overrides beta1, beta2)",
        "choices": (False, True)})
    before_window: str = field(default="ce_adv", metadata={
        "help": "loss before the window: 'ce_adv' = CE(z(x'), y) as classification term (released code, even for "
                "TRADES), 'base' = the base method's own loss; labels y on the 2C outputs either way",
        "choices": ("ce_adv", "base")})
    base_regularizer: bool = field(default=True, metadata={
        "help": "keep the base method's regulariser (TRADES KL, MART margin + weighted KL, Consistency-AT JS) next "
                "to the DUCAT term, as the released code does; False = the bare formula", "choices": (False, True)})
    attack_logits: str = field(default="raw", metadata={
        "help": "what the training attack maximises the base objective on: 'raw' 2C logits (paper, released "
                "code) or the 'merged' C-class logits logsumexp(z_k, z_k+C)", "choices": ("raw", "merged")})
    head_init: str = field(default="copy", metadata={
        "help": "growing a C-class init_checkpoint to the 2C head: dummy rows 'copy' the real rows or keep the "
                "model's fresh 'random' initialisation", "choices": ("copy", "random")})


class DUCAT(Method):
    """``<base>+ducat``: the base method with the DUCAT soft-label term in the window ``[t, end]``.

    See the module docstring for the exact loss, attack, window and fine-tuning rules.
    """

    name = "ducat"
    paper = "DUCAT (Wang et al., arXiv:2410.12671), Eq. 8-10, Algorithm 1; docs/methods.md, DUCAT"
    Params = DUCATParams
    needs_dummy_classes = True

    def __init__(self, base: str, threat: ThreatModel | None = None, **hparams: Any) -> None:
        refusal = ducat_refusal(METHODS.get(base))
        if refusal is not None:
            raise ConfigError(f"{base}+ducat: {refusal}.")
        self.threat = threat if threat is not None else ThreatModel()
        own = {f.name for f in dataclasses.fields(DUCATParams)}
        ducat_hp = {k: v for k, v in hparams.items() if k in own}
        base_hp = {k: v for k, v in hparams.items() if k not in own}
        self.base_name = base
        self.name = f"{base}+ducat"
        self.base: Method = METHODS[base](self.threat, **base_hp)
        self.params = build_params(DUCATParams, ducat_hp, self.name)
        self.needs_two_views = self.base.needs_two_views
        self.single_step = self.base.single_step  # a single-step base keeps the catastrophic-overfitting check

    # -- attacks follow the base method -----------------------------------------------------------
    @property
    def bn_mode(self) -> str:
        return self.base.bn_mode

    @property
    def start(self) -> Optional[str]:
        return self.base.start

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, **overrides: Any) -> Tensor:
        """The base method's training attack (its objective, start and BN mode) on the 2C model."""
        kwargs: dict[str, Any] = {"loss": self.base.attack_loss}
        if self.params.attack_logits == "merged":
            num_classes = _real_classes(model)
            kwargs["forward"] = lambda inputs: merge_dummy_logits(model(inputs), num_classes)
        kwargs.update(overrides)
        return self.base.attack(model, x, y, **kwargs)

    # -- window ----------------------------------------------------------------------------------
    def window_start(self, epochs: int) -> float:
        """The (fractional) epoch that opens the window in a run of ``epochs`` epochs."""
        return self.params.start_epoch * epochs / self.params.reference_epochs

    def in_window(self, ctx: StepContext) -> bool:
        return ctx.epoch + 1e-9 >= self.window_start(ctx.epochs)

    def label_weights(self) -> tuple[float, float]:
        """(beta1, beta2) in use: the hard-label toy case forces (1, 1)."""
        return (1.0, 1.0) if self.params.hard_labels else (self.params.beta1, self.params.beta2)

    # -- the loss ---------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, ctx: StepContext) -> LossOutput:
        window = self.in_window(ctx)
        if not window and self.params.before_window == "base":
            out = self.base.loss(model, batch, ctx)
            out.parts["ducat_window"] = torch.zeros((), device=out.loss.device)
            return out
        x, y = batch.x, batch.y
        if self.needs_two_views:
            if batch.x2 is None:
                raise ConfigError(f"{self.name} needs two augmented views: build the loader with two_views=True")
            x, y = torch.cat([batch.x, batch.x2]), torch.cat([batch.y, batch.y])
        x_adv = self.attack(model, x, y)
        num_classes = _real_classes(model)
        reg = self.params.base_regularizer
        parts: dict[str, Tensor] = {}
        if window:
            logits = model(torch.cat([x, x_adv]))
            logits_clean, logits_adv = logits[: x.shape[0]], logits[x.shape[0]:]
            beta1, beta2 = self.label_weights()
            cls = ducat_classification_loss(logits_clean, logits_adv, y, num_classes,
                                            alpha=self.params.alpha, beta1=beta1, beta2=beta2)
            parts["ducat_ce"] = cls.detach()
        else:
            needs_clean = reg and self.base.regularizer_uses_clean
            logits_clean = model(x) if needs_clean else None
            logits_adv = model(x_adv)
            cls = F.cross_entropy(logits_adv, y)
            parts["ce_adv"] = cls.detach()
        loss = cls
        terms = self.base.regularizer(model, x, x_adv, y, logits_clean, logits_adv) if reg else None
        if terms:
            parts.update({t.name: t.value.detach() for t in terms})
            loss = loss + weighted_sum(terms)
        parts["ducat_window"] = torch.full((), float(window), device=loss.device)
        if logits_clean is None:
            logits_clean = eval_logits(model, x) if ctx.track_clean else None
        return LossOutput(loss, parts, y, logits_clean=None if logits_clean is None else logits_clean.detach(),
                          logits_adv=logits_adv.detach(), x=x, x_adv=x_adv)

    # -- fine-tuning from a C-class checkpoint (Algorithm 1, resuming epoch T_r) ------------------------
    def adapt_init_checkpoint(self, state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
        """Grow a C-class checkpoint's head (and its weight average's) to this run's 2C head.

        Called by the trainer before it loads ``RunConfig.init_checkpoint``; a checkpoint that already
        has 2C outputs is returned unchanged. See :func:`expand_head_state` and ``head_init``.
        """
        num_classes = getattr(model, "num_classes", None)
        if num_classes is None or state.get("num_outputs") not in (None, num_classes):
            return state
        model_sd = model.state_dict()
        state = dict(state)
        state["model"] = expand_head_state(state["model"], model_sd, num_classes, self.params.head_init)
        if state.get("ema") is not None:
            state["ema"] = expand_head_state(state["ema"], model_sd, num_classes, self.params.head_init)
        state["num_outputs"] = 2 * num_classes
        return state

    # -- hooks delegate to the base ------------------------------------------------------------------
    def setup(self, trainer: Any) -> None:
        self.base.setup(trainer)

    def on_epoch_start(self, epoch: int) -> None:
        self.base.on_epoch_start(epoch)

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        self.base.after_step(model, ctx)

    def epoch_metrics(self, trainer: Any) -> dict[str, float]:
        return self.base.epoch_metrics(trainer)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)

    def __repr__(self) -> str:
        return f"DUCAT(base={self.base!r}, params={self.params})"


def _real_classes(model: nn.Module) -> int:
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None or not getattr(model, "dummy_classes", False):
        raise ConfigError("DUCAT needs a model with dummy classes (2C outputs): build it with dummy_classes=True "
                          "(the trainer does this for methods with needs_dummy_classes).")
    return int(num_classes)


def ducat_refusal(base_cls: type[Method]) -> Optional[str]:
    """Why DUCAT cannot plug into ``base_cls`` (None: it can): the base must split its loss into a
    classification term and :meth:`Method.regularizer`."""
    if not defines_regularizer(base_cls):
        return f"{base_cls.name} does not define Method.regularizer() (its loss is no classification term plus a regulariser)"
    return None


@register_addon("ducat", Params=DUCATParams, accepts=ducat_refusal,
                paper="DUCAT (Wang et al., arXiv:2410.12671), Algorithm 1; add-on to any method that defines "
                      "Method.regularizer (pgd_at, trades, mart, consistency_at), e.g. trades+ducat; 2C-output head")
def make_ducat(base: str, threat: ThreatModel | None = None, **hparams: Any) -> DUCAT:
    """Composer for ``"<base>+ducat"`` names (the add-on ``ADDONS["ducat"]``)."""
    return DUCAT(base, threat, **hparams)


# ------------------------------------------------------------------------------ targeted attacks
def random_targets(y: Tensor, num_classes: int, kind: str = "original",
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """Random attack targets for DUCAT, Table 4: a uniformly drawn *other* real class ``k != y``
    (``kind="original"``, in ``[0, C)``) or the dummy ``k + C`` of such a class (``kind="dummy"``,
    in ``[C, 2C)``). The own dummy ``y + C`` is never drawn: reaching it is projected back to ``y``,
    i.e. it is no attack at all."""
    check_choice("targeted attack kind", kind, TARGET_KINDS)
    shift = torch.randint(1, num_classes, y.shape, generator=generator, device="cpu").to(y.device)
    other = (y + shift) % num_classes
    return other if kind == "original" else other + num_classes


def targeted_eval(model: nn.Module, x: Tensor, y: Tensor, *, target_kind: str = "original",
                  eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10, norm: str = "linf",
                  random_start: Optional[str] = "uniform", num_classes: Optional[int] = None,
                  batch_size: int = 500, seed: int = 0, return_targets: bool = False):
    """Accuracy (percent) under targeted PGD towards random targets, by projected prediction (DUCAT, Table 4).

    Targets come from :func:`random_targets` (``"original"`` works for any model, ``"dummy"`` needs a
    2C head). The attack minimises ``CE(z(x'), target)`` on the raw logits (PGD-10, step 2/255 by
    default, BatchNorm in eval mode); a sample counts as robust when ``predict_labels(z(x'), C) == y``.
    The model's mode and the caller's RNG state are restored. With ``return_targets=True`` returns
    ``(accuracy, targets)``.
    """
    check_choice("targeted attack kind", target_kind, TARGET_KINDS)
    if num_classes is None:
        num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ConfigError("targeted_eval needs num_classes (or a model with a num_classes attribute)")
    num_classes = int(num_classes)
    if target_kind == "dummy" and not getattr(model, "dummy_classes", False):
        raise ConfigError("target_kind='dummy' needs a model with dummy classes (2C outputs); use 'original'.")
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    targets = random_targets(y.detach().cpu().long(), num_classes, target_kind, generator)
    was_training = model.training
    correct = 0
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device, torch.float32)
            yb = y[start:start + batch_size].to(device).long()
            tb = targets[start:start + batch_size].to(device)
            x_adv = pgd(model, xb, tb, eps=eps, step_size=step_size, steps=steps, norm=norm, loss="ce",
                        random_start=random_start, targeted=True, bn_mode="eval")
            model.eval()
            with torch.no_grad():
                correct += int((predict_labels(model(x_adv), num_classes) == yb).sum())
    model.train(was_training)
    accuracy = 100.0 * correct / max(x.shape[0], 1)
    return (accuracy, targets) if return_targets else accuracy


__all__ = ["DUCAT", "DUCATParams", "ducat_classification_loss", "expand_head_state",
           "make_ducat", "random_targets", "soft_cross_entropy", "soft_label", "targeted_eval"]
