"""RPAT: the Robust Perception term, an add-on to any base AT method (RPAT, Eq. 3; docs/methods.md, RPAT).

``get_method("trades+rpat", lam=6, rp_lambda=1, rp_alpha=0.5)`` builds TRADES whose loss gets
``+ rp_lambda * L_RP``. The add-on reuses the base method's ``x`` and ``x'`` (``LossOutput.x`` /
``x_adv``; for Consistency-AT the stacked 2B batch) and, when the base already computed them with
gradients in train mode, its logits ``z(x)`` / ``z(x')``.

With ``x~ = x + a * (x' - x)`` and the perception proxy ``z`` (logits or an embedding):

- ``rp_scale="code"`` (default, the released code, which the published lambda = 1 was tuned with):
  ``D(z(x~), (1 - a) z(x) + a z(x'))``;
- ``rp_scale="paper"``: eq. 3 written literally, ``D((z(x~) - z(x)) / a, (z(x') - z(x~)) / (1 - a))``.
  For MSE it equals the code value divided by ``(a (1 - a))^2`` (16x at a = 0.5).

``D`` is ``mse`` (mean over B x D), ``kl`` = ``KL(softmax(target) || softmax(pred))`` (target = the
second argument; summed over classes, batch mean, i.e. ``F.kl_div(log_softmax(pred), softmax(target),
reduction="batchmean")``), ``js`` (Jensen-Shannon of the two softmaxes, batch mean) or ``cosine``
(``1 - cos``, batch mean). Forwards run in train mode and nothing is detached, as in the released code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attacks import ThreatModel
from ..core.utils import ConfigError, check_choice
from .base import LossOutput, Method, StepContext, Term, weighted_sum
from .registry import METHODS, register_addon

DISTANCES = ("mse", "kl", "js", "cosine")
PROXIES = ("logits", "penultimate", "third_to_last")
SCALES = ("code", "paper")
FORWARD_MODES = ("separate", "stacked")
BETA_ALPHAS = ("beta-", "beta+")

AlphaSpec = Union[float, str]


# ------------------------------------------------------------------------------------------------
# the term itself
# ------------------------------------------------------------------------------------------------
def check_alpha(alpha: Any, where: str = "rp_alpha") -> AlphaSpec:
    """Accept a float strictly inside (0, 1) or ``"beta-"`` / ``"beta+"``; raise ConfigError otherwise."""
    if isinstance(alpha, str):
        return check_choice(where, alpha, BETA_ALPHAS)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"{where}={alpha!r} is not accepted: give a number strictly between 0 and 1 "
                          f"(0.5 in the paper) or one of {', '.join(map(repr, BETA_ALPHAS))}.")
    return float(alpha)


def sample_alpha(alpha: AlphaSpec, n: int, *, concentration: float = 0.75, device: Any = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """Per-sample interpolation rates ``a``, shape ``(n,)``.

    A float gives the same ``a`` for every sample; ``"beta-"`` / ``"beta+"`` draw ``b ~ Beta(c, c)``
    per sample (c = 0.75, RPAT, Sec. 5.4 after Zhang et al.'s mixup) and take ``min(b, 1-b)`` /
    ``max(b, 1-b)``. Draws use the global torch RNG, so a seeded run is reproducible.
    """
    alpha = check_alpha(alpha)
    if isinstance(alpha, float):
        return torch.full((n,), alpha, device=device, dtype=dtype)
    conc = torch.tensor(float(concentration))
    b = torch.distributions.Beta(conc, conc).sample((n,)).to(device=device, dtype=dtype)
    # The endpoints 0 and 1 would make x~ equal x or x' (and the paper scale divide by zero).
    b = b.clamp(1e-4, 1.0 - 1e-4)
    return torch.minimum(b, 1 - b) if alpha == "beta-" else torch.maximum(b, 1 - b)


def _softmax_kl_rows(pred: Tensor, target: Tensor) -> Tensor:
    """``KL(softmax(target) || softmax(pred))`` per row."""
    log_p = F.log_softmax(pred, dim=1)
    log_q = F.log_softmax(target, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=1)


def distance(pred: Tensor, target: Tensor, kind: str = "mse", weight: Optional[Tensor] = None) -> Tensor:
    """``D(pred, target)`` averaged to a scalar; ``weight`` (shape ``(B,)``) scales each sample first.

    ``mse``: mean over B x D of ``(pred - target)^2``; ``kl``: ``KL(softmax(target) || softmax(pred))``;
    ``js``: ``1/2 KL(p || m) + 1/2 KL(q || m)``, ``m = (p + q)/2``; ``cosine``: ``1 - cos(pred, target)``.
    The last three are per-sample values averaged over the batch.
    """
    check_choice("rp_distance", kind, DISTANCES)
    pred, target = pred.flatten(1), target.flatten(1)
    if kind == "mse":
        per_sample = (pred - target).pow(2).mean(dim=1)
    elif kind == "kl":
        per_sample = _softmax_kl_rows(pred, target)
    elif kind == "js":
        p, q = F.softmax(pred, dim=1), F.softmax(target, dim=1)
        log_m = (0.5 * (p + q)).clamp_min(1e-12).log()
        per_sample = 0.5 * ((torch.xlogy(p, p) - p * log_m).sum(1) + (torch.xlogy(q, q) - q * log_m).sum(1))
    else:
        per_sample = 1.0 - F.cosine_similarity(pred, target, dim=1, eps=1e-8)
    if weight is not None:
        per_sample = per_sample * weight
    return per_sample.mean()


def rpat_term(z_clean: Tensor, z_mid: Tensor, z_adv: Tensor, alpha: Union[float, Tensor],
              distance_kind: str = "mse", scale: str = "code") -> Tensor:
    """The Robust Perception term ``L_RP`` for perceptions of ``x``, ``x~ = x + a (x' - x)`` and ``x'``.

    ``scale="code"``: ``D(z(x~), (1 - a) z(x) + a z(x'))`` (released code, docs/methods.md, RPAT);
    ``scale="paper"``: ``D((z(x~) - z(x)) / a, (z(x') - z(x~)) / (1 - a))`` (RPAT, Eq. 3).
    ``alpha`` is a float or a per-sample tensor ``(B,)``.
    """
    check_choice("rp_scale", scale, SCALES)
    z_clean, z_mid, z_adv = z_clean.flatten(1), z_mid.flatten(1), z_adv.flatten(1)
    a = torch.as_tensor(alpha, dtype=z_mid.dtype, device=z_mid.device)
    a = a.view(-1, 1) if a.dim() > 0 else a
    if scale == "code":
        return distance(z_mid, (1 - a) * z_clean + a * z_adv, distance_kind)
    return distance((z_mid - z_clean) / a, (z_adv - z_mid) / (1 - a), distance_kind)


# ------------------------------------------------------------------------------------------------
# the perceptions
# ------------------------------------------------------------------------------------------------
def _reusable(logits: Optional[Tensor], n: int) -> bool:
    """A base's logits can stand in for ``z`` only if they carry gradients (a train-mode loss forward,
    not the eval-mode no-grad forward some bases keep for the accuracy curve) and match the batch."""
    return logits is not None and logits.requires_grad and logits.dim() == 2 and logits.shape[0] == n


def _proxy_forward(model: nn.Module, inputs: list[Tensor], proxy: str, mode: str) -> list[Tensor]:
    """The proxy of each input: one forward each (``separate``) or one of the concatenation (``stacked``).

    ``stacked`` is faster but normalises all inputs with one set of BatchNorm batch statistics, which
    the released code (one forward each) does not.
    """
    if mode == "stacked" and len(inputs) > 1:
        sizes = [t.shape[0] for t in inputs]
        return list(_proxy_of(model, torch.cat(inputs), proxy).split(sizes))
    return [_proxy_of(model, t, proxy) for t in inputs]


def _proxy_of(model: nn.Module, x: Tensor, proxy: str) -> Tensor:
    if proxy == "logits":
        return model(x)
    # ``return_features`` goes through ``__call__`` so wrappers such as DDP see the forward.
    feats = model(x, return_features=True)
    return getattr(feats, proxy)


def perceptions(model: nn.Module, x: Tensor, x_mid: Tensor, x_adv: Tensor, *, proxy: str = "logits",
                forward: str = "separate", logits_clean: Optional[Tensor] = None,
                logits_adv: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(z(x), z(x~), z(x'))`` for the chosen proxy, reusing the base's logits where possible.

    Missing forwards run in the released code's order (``x~``, then ``x``, then ``x'``).
    """
    n = x.shape[0]
    have: dict[str, Tensor] = {}
    if proxy == "logits":
        if _reusable(logits_clean, n):
            have["clean"] = logits_clean
        if _reusable(logits_adv, n):
            have["adv"] = logits_adv
    todo = [(k, t) for k, t in (("mid", x_mid), ("clean", x), ("adv", x_adv)) if k not in have]
    outs = _proxy_forward(model, [t for _, t in todo], proxy, forward)
    have.update({k: z for (k, _), z in zip(todo, outs)})
    return have["clean"], have["mid"], have["adv"]


# ------------------------------------------------------------------------------------------------
# the add-on
# ------------------------------------------------------------------------------------------------
@dataclass
class RPATAddonParams:
    """Hyperparameters of the RP term, prefixed ``rp_`` so they never clash with the base's."""

    rp_lambda: float = field(default=1.0, metadata={"help": "weight lambda of the Robust Perception term (1 in "
                                                            "the paper)", "range": (0.0, None)})
    rp_alpha: Any = field(default=0.5, metadata={
        "help": "interpolation rate a of x~ = x + a*delta: a number in (0,1), or 'beta-' / 'beta+' "
                "(per-sample min/max(b, 1-b), b ~ Beta(c, c))"})
    rp_beta_concentration: float = field(default=0.75, metadata={
        "help": "c of Beta(c, c) for rp_alpha 'beta-'/'beta+' (0.75 in RPAT, Sec. 5.4)", "range": (1e-3, None)})
    rp_distance: str = field(default="mse", metadata={
        "help": "distance D: mse, kl = KL(softmax(target)||softmax(z(x~))), js, cosine = 1-cos", "choices": DISTANCES})
    rp_proxy: str = field(default="logits", metadata={
        "help": "perception proxy: logits, penultimate or third_to_last embedding (RPAT, Table 5)",
        "choices": PROXIES})
    rp_scale: str = field(default="code", metadata={
        "help": "'code': D(z(x~), (1-a)z(x)+a z(x')) as released; 'paper': eq. 3 literally, "
                "D((z(x~)-z(x))/a, (z(x')-z(x~))/(1-a)) (MSE: code/(a(1-a))^2)", "choices": SCALES})
    rp_forward: str = field(default="separate", metadata={
        "help": "forwards of the missing perceptions: 'separate' (one per input, as released: own BatchNorm "
                "batch statistics) or 'stacked' (one concatenated forward, faster, shared statistics)",
        "choices": FORWARD_MODES})


class RPATAddon(Method):
    """Mixin placed before the base class: ``loss = base loss + rp_lambda * L_RP`` (see module docstring).

    The RP term is a :class:`Term` computed from what :meth:`Method.regularizer` receives (model, ``x``,
    ``x'``, the base's logits) and added with :func:`weighted_sum`, as DUCAT adds a base's regularizer.
    """

    def __init__(self, threat: ThreatModel | None = None, **hparams: Any) -> None:
        super().__init__(threat, **hparams)
        self.params.rp_alpha = check_alpha(self.params.rp_alpha)

    def loss(self, model: nn.Module, batch: Any, ctx: StepContext) -> LossOutput:
        out = super().loss(model, batch, ctx)
        if out.x is None or out.x_adv is None:
            raise ConfigError(f"{self.name}: the base method does not expose x and x_adv in its LossOutput, "
                              "so the RP term cannot be added to it")
        terms = self.rp_terms(model, out.x, out.x_adv, out.logits_clean, out.logits_adv)
        out.loss = out.loss + weighted_sum(terms)
        out.parts = {**out.parts, **{t.name: t.value.detach() for t in terms}}
        return out

    def rp_terms(self, model: nn.Module, x: Tensor, x_adv: Tensor, logits_clean: Optional[Tensor],
                 logits_adv: Optional[Tensor]) -> list[Term]:
        """``[Term("rp", L_RP, rp_lambda)]``, reusing the logits where they carry gradients."""
        return [Term("rp", self.rp_term(model, x, x_adv, logits_clean, logits_adv), self.params.rp_lambda)]

    def rp_term(self, model: nn.Module, x: Tensor, x_adv: Tensor, logits_clean: Optional[Tensor],
                   logits_adv: Optional[Tensor]) -> Tensor:
        p = self.params
        x, x_adv = x.detach(), x_adv.detach()
        alpha = sample_alpha(p.rp_alpha, x.shape[0], concentration=p.rp_beta_concentration, device=x.device,
                             dtype=x.dtype)
        x_mid = x + alpha.view(-1, *([1] * (x.dim() - 1))) * (x_adv - x)
        z_clean, z_mid, z_adv = perceptions(model, x, x_mid, x_adv, proxy=p.rp_proxy, forward=p.rp_forward,
                                            logits_clean=logits_clean, logits_adv=logits_adv)
        return rpat_term(z_clean, z_mid, z_adv, alpha, p.rp_distance, p.rp_scale)


@lru_cache(maxsize=None)
def rpat_class(base_name: str) -> type[Method]:
    """The class ``<base>+rpat``: a subclass of the base method with the RP term added to its loss.

    It inherits everything else from the base (attack, start, BatchNorm mode, two views, hooks, state).
    """
    base = METHODS.get(base_name)
    refusal = rpat_refusal(base)
    if refusal is not None:
        raise ConfigError(f"'+rpat' cannot be added to {base_name!r}: {refusal}")
    params_cls = dataclasses.make_dataclass(f"{base.Params.__name__}PlusRP", [],
                                            bases=(base.Params, RPATAddonParams))
    name = f"{base_name}+rpat"
    return type(f"{base.__name__}PlusRPAT", (RPATAddon, base), {
        "name": name,
        "paper": f"{base.paper} + RPAT (Wang & Liu, ICCV 2025, Eq. 3; docs/methods.md, RPAT)",
        "Params": params_cls,
        "__doc__": f"{base.__name__} plus the Robust Perception term: loss = {base_name} loss + rp_lambda * L_RP.",
        "__module__": __name__,
    })


def rpat_refusal(base: type[Method]) -> Optional[str]:
    """Why the RP term cannot be added to ``base`` (None: it can): it needs the base's adversarial example and
    must not be there already."""
    if not base.has_adversarial_example:
        return f"{base.name} has no adversarial example for the RP term to interpolate"
    clash = {f.name for f in dataclasses.fields(base.Params)} & {f.name for f in dataclasses.fields(RPATAddonParams)}
    if clash:
        return f"it already has an RP term (hyperparameters {', '.join(sorted(clash))})"
    return None


@register_addon("rpat", Params=RPATAddonParams, accepts=rpat_refusal,
                paper="Wang & Liu, ICCV 2025 (RPAT, Eq. 3); add-on to any adversarial method, e.g. pgd_at+rpat, "
                      "trades+rpat, mart+rpat, consistency_at+rpat")
def compose_rpat(base_name: str, threat: ThreatModel, **hparams: Any) -> Method:
    """The add-on ``ADDONS["rpat"]``: build ``<base_name>+rpat`` with base and ``rp_*`` hyperparameters."""
    return rpat_class(base_name)(threat, **hparams)
