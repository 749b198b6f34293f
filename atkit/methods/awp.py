"""AWP: adversarial weight perturbation, an add-on to any base with a classification term (docs/methods.md, AWP).

Wu, Xia & Wang, "Adversarial Weight Perturbation Helps Robust Generalization", NeurIPS 2020, arXiv:2004.05884.
``get_method("trades+awp", lam=6, awp_gamma=5e-3)`` builds TRADES-AWP; ``pgd_at+awp`` is AT-AWP, ``mart+awp``
MART-AWP. Each training step, as in the released AT-AWP and TRADES-AWP scripts:

1. the base method's attack makes ``x'`` at the current weights ``w`` (nothing changes here);
2. a proxy copy of the model (its own BatchNorm statistics, so the model's are untouched) takes ``awp_steps``
   ascent steps of size ``awp_lr`` on the base's own loss at the fixed ``x'`` (AT: ``CE(z(x'), y)``; TRADES:
   ``CE(z(x), y) + lam KL(p(x) || p(x'))``; MART: its BCE + weighted KL), ``w~ <- w~ + awp_lr * grad L(w~)``;
3. per perturbed tensor ``l`` (parameters named ``weight`` with more than one dimension: conv and linear weights,
   not BatchNorm or biases, as the released code selects them), with ``d_l = w~_l - w_l``::

       v_l = awp_gamma * ||w_l|| * d_l / (||d_l|| + 1e-20)

   so ``||v_l|| = awp_gamma * ||w_l||`` (layer-wise relative size, Frobenius norms); ``w <- w + v``;
4. the base's loss is computed at ``w + v`` and the trainer's optimiser step is taken there (weight decay and
   momentum on ``w + v``, as the released scripts' SGD does);
5. :meth:`after_step` subtracts the same ``v`` (``w <- w' - v``), before the trainer's EMA update.

With one step the result does not depend on ``awp_lr`` (the direction is normalised per tensor); it matters for
``awp_steps > 1``, where the released proxy optimiser is plain SGD on every parameter.

Warm-up: no perturbation before epoch ``awp_warmup`` (0-based, fractional epochs ``epoch + step /
steps_per_epoch``) of a run of ``awp_reference_epochs`` epochs (default: the configured schedule's own length);
other run lengths scale it like the learning-rate milestones, as ReBAT's ``wa_start``. The released TRADES-AWP
script's ``--awp-warmup 10`` compares a 1-based epoch counter, i.e. 9 epochs without AWP: ``awp_warmup: 9``.

Composition: the add-on intercepts the base's first ``self.attack`` call inside :meth:`Method.loss` (that is
where ``x'`` exists and the training forwards have not run yet), so it works for any base whose loss attacks
once and then computes its terms; a base that attacks a second time while the weights are perturbed is stopped
with an error. Only one add-on per name: ``pgd_at+rpat+awp`` is not a registered composite.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from ..attacks import ThreatModel
from ..core.fast import AutocastModel, unwrap_model
from ..core.schedules import get_schedule
from ..core.utils import ConfigError
from .base import LossOutput, Method, StepContext, defines_regularizer
from .registry import METHODS, register_addon

#: Added to ``||d_l||`` so that a tensor whose ascent direction is zero gets no perturbation (released code: 1e-20).
NORM_FLOOR = 1e-20


@dataclass
class AWPAddonParams:
    """Hyperparameters of the weight perturbation, prefixed ``awp_`` so they never clash with the base's."""

    awp_gamma: float = field(default=5e-3, metadata={
        "help": "relative size gamma: ||v_l|| = gamma ||w_l|| per conv/linear weight (5e-3: released TRADES-AWP "
                "script; its AT-AWP script uses 1e-2); 0 turns AWP off", "range": (0.0, None)})
    awp_warmup: float = field(default=0.0, metadata={
        "help": "epochs (of awp_reference_epochs) trained without AWP before it starts (0: released AT-AWP; "
                "9: released TRADES-AWP, whose --awp-warmup 10 counts epochs from 1)", "range": (0.0, None)})
    awp_reference_epochs: Optional[int] = field(default=None, metadata={
        "help": "run length awp_warmup refers to (None: the configured schedule's length); other run lengths "
                "scale it like the lr milestones", "range": (1, None)})
    awp_steps: int = field(default=1, metadata={
        "help": "ascent steps of the proxy on the base loss (1 in the released code)",
        "range": (1, None)})
    awp_lr: float = field(default=0.01, metadata={
        "help": "step size of the proxy's ascent (released AT-AWP: 0.01); no effect with awp_steps=1, the "
                "direction being normalised per tensor", "range": (1e-12, None)})


def perturbed_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the tensors AWP perturbs: trainable parameters whose name contains ``weight`` and
    that have more than one dimension (conv and linear weights; not BatchNorm scales or biases), as the released
    code's ``diff_in_weights`` selects them."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1 and "weight" in n]


def relative_perturbation(weight: Tensor, direction: Tensor, gamma: float) -> Tensor:
    """``gamma * ||weight|| * direction / (||direction|| + 1e-20)`` (Frobenius norms): the AWP step of one tensor."""
    return gamma * weight.norm() / (direction.norm() + NORM_FLOOR) * direction


def _average_over_ranks(grads: list[Optional[Tensor]]) -> None:
    """Under torchrun, average the proxy's gradients over ranks in place, so every rank perturbs its weights by
    the same ``v`` (the released scripts compute it on the whole batch) and the ranks never drift apart."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for g in grads:
        if g is not None:
            dist.all_reduce(g)
            g.div_(world)


class AWPAddon(Method):
    """Mixin placed before the base class: the base's loss and update at ``w + v``, then ``w`` restored (see the
    module docstring for ``v``)."""

    def __init__(self, threat: ThreatModel | None = None, **hparams: Any) -> None:
        super().__init__(threat, **hparams)
        self._epoch_scale = 1.0
        self._armed: Optional[tuple[Any, StepContext]] = None  # (batch, ctx) until the base's attack has run
        self._fixed_adv: Optional[Tensor] = None  # x' handed back to the base's loss during the proxy pass
        self._applied: list[tuple[Tensor, Tensor]] = []  # (parameter, v) on the model until after_step
        self._proxy: Optional[tuple[nn.Module, nn.Module]] = None  # (the plain model, its proxy copy)

    # -- warm-up -------------------------------------------------------------------------------
    def setup(self, trainer: Any) -> None:
        """Scale ``awp_warmup`` to the run's length (as ReBAT scales ``wa_start``), then the base's setup."""
        config = trainer.config
        reference = self.params.awp_reference_epochs
        if reference is None:
            sched = get_schedule(config.schedule, **config.schedule_params)
            reference = sched.epochs if sched.name != "constant" else config.resolved_epochs()
        self._epoch_scale = config.resolved_epochs() / reference
        super().setup(trainer)

    def awp_active(self, ctx: StepContext) -> bool:
        """Whether this step perturbs the weights: after the (scaled) warm-up, with ``awp_gamma > 0``."""
        epoch = ctx.epoch + ctx.step / max(ctx.steps_per_epoch, 1)
        return self.params.awp_gamma > 0 and epoch >= self.params.awp_warmup * self._epoch_scale

    # -- the step ------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, ctx: StepContext) -> LossOutput:
        self.restore_weights()  # a perturbation left by a loss whose after_step never ran must not stay
        active = self.awp_active(ctx)
        self._armed = (batch, ctx) if active else None
        try:
            out = super().loss(model, batch, ctx)
        except BaseException:
            self._armed = None
            self.restore_weights()
            raise
        if self._armed is not None:
            self._armed = None
            raise ConfigError(f"{self.name}: the base method's loss never called self.attack, so there is no "
                              "adversarial example to perturb the weights against")
        out.parts = {**out.parts, "awp_on": torch.full((), float(active), device=out.loss.device)}
        return out

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, **overrides: Any) -> Tensor:
        """The base's attack; on the first call of an active step, then the weight perturbation (steps 2-3)."""
        if self._fixed_adv is not None:
            return self._fixed_adv
        if self._applied:
            raise RuntimeError(f"{self.name}: the base method attacks again while the weights are perturbed; AWP "
                               "composes with bases whose loss runs one attack before its training forwards")
        x_adv = super().attack(model, x, y, **overrides)
        if self._armed is not None:
            batch, ctx = self._armed
            self._armed = None
            self.apply_perturbation(model, self.weight_perturbation(model, batch, ctx, x_adv.detach()))
        return x_adv

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Step 5: subtract ``v`` after the optimiser step (the update itself was taken at ``w + v``)."""
        self.restore_weights()
        super().after_step(model, ctx)

    # -- the perturbation ----------------------------------------------------------------------
    def weight_perturbation(self, model: nn.Module, batch: Any, ctx: StepContext,
                            x_adv: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``[(parameter, v)]`` for the model's perturbed tensors (steps 2-3 of the module docstring), computed on
        a proxy copy; the model itself is not changed."""
        plain = unwrap_model(model)
        proxy_plain = self._proxy_copy(plain)
        targets = [p for _, p in perturbed_parameters(plain)]
        if not targets:
            raise ConfigError(f"{self.name}: the model has no conv or linear weight (a parameter named 'weight' "
                              "with more than one dimension) to perturb")
        # The proxy runs in the training step's precision and layout (bf16 autocast, channels_last), never
        # compiled or wrapped in DDP: its gradients are averaged over ranks by hand.
        proxy = (AutocastModel(proxy_plain, dtype=model.dtype, channels_last=model.channels_last)
                 if isinstance(model, AutocastModel) else proxy_plain)
        params = [q for q, p in zip(proxy_plain.parameters(), plain.parameters()) if p.requires_grad]
        proxy_ctx = dataclasses.replace(ctx, track_clean=False)
        self._fixed_adv = x_adv
        try:
            for _ in range(self.params.awp_steps):
                proxy_loss = super().loss(proxy, batch, proxy_ctx).loss
                grads = list(torch.autograd.grad(proxy_loss, params, allow_unused=True))
                _average_over_ranks(grads)
                with torch.no_grad():
                    for q, g in zip(params, grads):
                        if g is not None:
                            q.add_(g, alpha=self.params.awp_lr)
        finally:
            self._fixed_adv = None
        proxy_of = dict(zip((id(p) for p in plain.parameters()), proxy_plain.parameters()))
        with torch.no_grad():
            return [(p, relative_perturbation(p, proxy_of[id(p)] - p, self.params.awp_gamma)) for p in targets]

    def _proxy_copy(self, plain: nn.Module) -> nn.Module:
        """The proxy (built once per model, by deepcopy), loaded with the model's current parameters and buffers
        and put in the model's train/eval mode."""
        if self._proxy is None or self._proxy[0] is not plain:
            proxy = copy.deepcopy(plain)
            for q in proxy.parameters():
                q.grad = None
            self._proxy = (plain, proxy)
        proxy = self._proxy[1]
        with torch.no_grad():
            for q, p in zip(proxy.parameters(), plain.parameters()):
                q.copy_(p)
                q.requires_grad_(p.requires_grad)
            for qb, b in zip(proxy.buffers(), plain.buffers()):
                qb.copy_(b)
        return proxy.train(plain.training)

    @torch.no_grad()
    def apply_perturbation(self, model: nn.Module, perturbation: list[tuple[Tensor, Tensor]]) -> None:
        """``w <- w + v`` for each ``(parameter, v)``; remembered until :meth:`restore_weights`."""
        for p, v in perturbation:
            p.add_(v)
        self._applied = list(perturbation)

    @torch.no_grad()
    def restore_weights(self) -> None:
        """``w <- w - v`` for the perturbation applied last (nothing when none is applied)."""
        applied, self._applied = self._applied, []
        for p, v in applied:
            p.sub_(v)


# ------------------------------------------------------------------------------------------------
# the add-on
# ------------------------------------------------------------------------------------------------
def awp_refusal(base: type[Method]) -> Optional[str]:
    """Why AWP cannot be added to ``base`` (None: it can): the base needs an adversarial example and a loss that
    splits into a classification term and :meth:`Method.regularizer` (the paper's AT, TRADES and MART; any new
    method written that way), and must not carry AWP already."""
    if not base.has_adversarial_example:
        return f"{base.name} has no adversarial example to perturb the weights against"
    if not defines_regularizer(base):
        return (f"{base.name} does not split its loss into a classification term and Method.regularizer(), the "
                "form of the bases AWP was defined on (AT, TRADES, MART)")
    clash = {f.name for f in dataclasses.fields(base.Params)} & {f.name for f in dataclasses.fields(AWPAddonParams)}
    if clash:
        return f"it already perturbs weights (hyperparameters {', '.join(sorted(clash))})"
    return None


@lru_cache(maxsize=None)
def awp_class(base_name: str) -> type[Method]:
    """The class ``<base>+awp``: a subclass of the base method whose loss and update are taken at ``w + v``.

    It inherits everything else from the base (attack, start, BatchNorm mode, two views, regulariser, state).
    """
    base = METHODS.get(base_name)
    refusal = awp_refusal(base)
    if refusal is not None:
        raise ConfigError(f"'+awp' cannot be added to {base_name!r}: {refusal}")
    params_cls = dataclasses.make_dataclass(f"{base.Params.__name__}PlusAWP", [],
                                            bases=(base.Params, AWPAddonParams))
    return type(f"{base.__name__}PlusAWP", (AWPAddon, base), {
        "name": f"{base_name}+awp",
        "paper": f"{base.paper} + AWP (Wu, Xia & Wang, NeurIPS 2020, arXiv:2004.05884; docs/methods.md, AWP)",
        "Params": params_cls,
        "__doc__": f"{base.__name__} with adversarial weight perturbation: its loss and update at w + v.",
        "__module__": __name__,
    })


@register_addon("awp", Params=AWPAddonParams, accepts=awp_refusal,
                paper="Wu, Xia & Wang, NeurIPS 2020 (AWP, arXiv:2004.05884); add-on to any base with a "
                      "classification term, e.g. pgd_at+awp (AT-AWP), trades+awp (TRADES-AWP), mart+awp")
def compose_awp(base_name: str, threat: ThreatModel, **hparams: Any) -> Method:
    """The add-on ``ADDONS["awp"]``: build ``<base_name>+awp`` with base and ``awp_*`` hyperparameters."""
    return awp_class(base_name)(threat, **hparams)


__all__ = ["AWPAddon", "AWPAddonParams", "awp_class", "awp_refusal", "compose_awp", "perturbed_parameters",
           "relative_perturbation"]
