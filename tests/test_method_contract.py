"""The method contract, checked for EVERY registered method and every valid ``<base>+<add-on>`` composite (the
timm habit: one parametrized test over the registry, so a new method or add-on is covered the day it is added).

Each gets: a finite scalar loss and finite named parts, a backward pass with finite gradients that reach the
model, a state-dict round trip of the method's own state, and ``describe()`` with its paper source and a spec
(default, help) for every hyperparameter. The composition contract (:meth:`Method.regularizer`) is checked
against the reference formulas of tests/helpers.py: DUCAT over any base is DUCAT's term plus that base's
regulariser, and a base's own loss is its classification term plus the same regulariser.
"""
from __future__ import annotations

import copy
import dataclasses
import sys
import types
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from atkit.methods import (ADDONS, METHODS, Method, StepContext, bases_of, composite_names, defines_regularizer,
                           describe_methods, get_method, weighted_sum)
from atkit.methods.rpat import rpat_class
from atkit.models import build_model
from atkit.core.utils import ConfigError
from helpers import TinyBatch, fixed_attack, no_grad_logits, ref_ce, ref_regularizer, ref_softmax, doc_block

THREAT = {"steps": 2}
NUM_CLASSES = 4


def all_names() -> list[str]:
    return sorted(METHODS) + composite_names()


def tiny_setup(name: str, **hparams: Any) -> tuple[Method, torch.nn.Module, TinyBatch]:
    """The method with a 2-step attack, a small CNN (with dummy classes when the method needs them) and a
    seeded batch of six 16x16 images (two views when the method needs them)."""
    torch.manual_seed(0)
    method = get_method(name, threat=THREAT, **hparams)
    model = build_model("small_cnn", NUM_CLASSES, dummy_classes=method.needs_dummy_classes, width=4, hidden=8)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, 16, 16, generator=g)
    y = torch.randint(0, NUM_CLASSES, (6,), generator=g)
    x2 = torch.rand(6, 3, 16, 16, generator=g) if method.needs_two_views else None
    return method, model.train(), TinyBatch(x, y, x2, torch.arange(6))


def check_contract(name: str, **hparams: Any) -> None:
    """Finite loss and parts, finite gradients reaching the model, the after-step hook, a state round trip."""
    method, model, batch = tiny_setup(name, **hparams)
    ctx = StepContext(epoch=0, step=0, epochs=2, steps_per_epoch=1)
    out = method.loss(model, batch, ctx)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss), (name, out.loss)
    assert out.parts and all(v.dim() == 0 and torch.isfinite(v) and not v.requires_grad for v in out.parts.values())
    assert out.y.shape[0] in (batch.y.shape[0], 2 * batch.y.shape[0])
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), name
    assert any(g.abs().sum() > 0 for g in grads), f"{name}: the loss does not reach the model's weights"
    method.after_step(model, ctx)
    check_state_round_trip(name, method, model, batch, ctx, hparams)


def check_state_round_trip(name: str, method: Method, model: torch.nn.Module, batch: TinyBatch, ctx: StepContext,
                           hparams: dict[str, Any]) -> None:
    state = method.state_dict()
    assert isinstance(state, dict)
    fresh = get_method(name, threat=THREAT, **hparams)
    with torch.no_grad():  # a different model, so that a lazily built state of `fresh` differs before the load
        other = copy.deepcopy(model)
        for p in other.parameters():
            p.add_(1.0)
    fresh.loss(other, batch, ctx)  # lets a stateful method build its state (ReBAT's weight average)
    fresh.after_step(other, ctx)
    if _has_tensors(state):
        assert not _equal(fresh.state_dict(), state), f"{name}: the round trip below would prove nothing"
    fresh.load_state_dict(copy.deepcopy(state))
    assert _equal(fresh.state_dict(), state), name


def _has_tensors(value: Any) -> bool:
    if torch.is_tensor(value):
        return True
    if isinstance(value, dict):
        return any(_has_tensors(v) for v in value.values())
    return isinstance(value, (list, tuple)) and any(_has_tensors(v) for v in value)


def _equal(a: Any, b: Any) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def check_description(name: str) -> None:
    """``describe()``: the name, a paper source and a (default, help) spec for every hyperparameter."""
    method = get_method(name, threat=THREAT)
    params_cls = type(method.params)
    described = METHODS[name].describe() if name in METHODS else method.describe()
    assert isinstance(described["paper"], str) and len(described["paper"]) > 10, name
    hparams = described["hyperparameters"]
    assert {f.name for f in dataclasses.fields(params_cls)} <= set(hparams), name
    for key, spec in hparams.items():
        assert set(spec) >= {"default", "help"} and isinstance(spec["help"], str) and spec["help"], (name, key)
    if name in METHODS:
        assert described["name"] == name


@pytest.mark.parametrize("name", all_names())
def test_loss_backward_and_state(name):
    check_contract(name)


@pytest.mark.parametrize("name", [n for n in all_names() if n.endswith("+ducat")])
def test_ducat_composites_in_the_window(name):
    check_contract(name, start_epoch=0)


@pytest.mark.parametrize("name", all_names())
def test_describe_has_source_and_parameter_specs(name):
    check_description(name)


def test_every_add_on_is_described_and_composes_with_something():
    listed = {d["name"]: d for d in describe_methods()}
    for addon in ADDONS:
        described = listed[f"<base>+{addon}"]
        assert described["add_on"] and described["paper"] and described["hyperparameters"]
        assert bases_of(addon), addon


def test_refused_composites_say_why_before_building():
    with pytest.raises(ConfigError, match="regularizer"):
        get_method("fait+ducat")
    with pytest.raises(ConfigError, match="no adversarial example"):
        get_method("standard+rpat")
    assert "standard+rpat" not in composite_names() and "fait+ducat" not in composite_names()


# -- the composition contract against the reference formulas ----------------------------------------------
REGULARIZED = ("pgd_at", "trades", "mart", "consistency_at")


def test_the_paper_bases_define_the_regularizer():
    assert set(REGULARIZED) <= set(bases_of("ducat"))
    assert all(defines_regularizer(METHODS[b]) for b in REGULARIZED)
    assert not defines_regularizer(METHODS["fait"]) and not defines_regularizer(METHODS["rebat"])


@pytest.mark.parametrize("base", REGULARIZED)
def test_regularizer_matches_the_reference_formula(base):
    """``weighted_sum(regularizer(...))`` is the reference regulariser of tests/helpers.py."""
    method, model, batch = tiny_setup(base, **({} if base == "pgd_at" else {"lam": 3.0}))
    model.eval()  # every forward independent of its batch, so the reference sees the same logits
    x = torch.cat([batch.x, batch.x2]) if method.needs_two_views else batch.x
    y = torch.cat([batch.y, batch.y]) if method.needs_two_views else batch.y
    x_adv = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    terms = method.regularizer(model, x, x_adv, y, model(x), model(x_adv))
    expected = ref_regularizer(base, no_grad_logits(model, x), no_grad_logits(model, x_adv), y, lam=3.0)
    got = torch.zeros(()) if terms is None else weighted_sum(terms)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("base", ["trades", "consistency_at", "pgd_at"])
def test_own_loss_is_classification_plus_regularizer(base):
    """The base's own loss is its classification term plus the very regulariser DUCAT composes with."""
    method, model, batch = tiny_setup(base, **({} if base == "pgd_at" else {"lam": 2.0}))
    model.eval()
    x = torch.cat([batch.x, batch.x2]) if method.needs_two_views else batch.x
    y = torch.cat([batch.y, batch.y]) if method.needs_two_views else batch.y
    x_adv = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    out = fixed_attack(method, x_adv).loss(model, batch, StepContext())
    z, z_adv = no_grad_logits(model, x), no_grad_logits(model, x_adv)
    classification = ref_ce(z, y).mean() if base == "trades" else ref_ce(z_adv, y).mean()
    expected = classification + ref_regularizer(base, z, z_adv, y, lam=2.0)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_new_base_composes_with_ducat_without_editing_it():
    """A method defined here, with its own regularizer, plugs into DUCAT (and RPAT) by the contract alone."""
    from atkit.methods import LossOutput, Term, register

    class Pairing(Method):
        name = "contract_pairing_test"
        paper = "test-only method: CE(z(x'), y) + 0.5 * mean ||z(x) - z(x')||^2"
        regularizer_uses_clean = True

        def regularizer(self, model, x, x_adv, y, logits_clean, logits_adv):
            return [Term("pairing", (logits_clean - logits_adv).pow(2).sum(1).mean(), 0.5)]

        def loss(self, model, batch, ctx):
            x_adv = self.attack(model, batch.x, batch.y)
            z, z_adv = model(batch.x), model(x_adv)
            terms = self.regularizer(model, batch.x, x_adv, batch.y, z, z_adv)
            return LossOutput(F.cross_entropy(z_adv, batch.y) + weighted_sum(terms), {"pairing": terms[0].value.detach()},
                              batch.y, logits_clean=z, logits_adv=z_adv, x=batch.x, x_adv=x_adv)

    register(Pairing)
    try:
        assert {"contract_pairing_test+ducat", "contract_pairing_test+rpat"} <= set(composite_names())
        method, model, batch = tiny_setup("contract_pairing_test+ducat", start_epoch=0)
        model.eval()
        x_adv = (batch.x + 0.03 * torch.randn_like(batch.x)).clamp(0, 1)
        out = fixed_attack(method, x_adv).loss(model, batch, StepContext(epoch=0, epochs=2))
        z, z_adv = no_grad_logits(model, batch.x), no_grad_logits(model, x_adv)
        soft = lambda beta: torch.cat([beta * F.one_hot(batch.y, NUM_CLASSES), (1 - beta) * F.one_hot(batch.y, NUM_CLASSES)], 1)
        ce = lambda logits, target: -(target * torch.log(ref_softmax(logits))).sum(1).mean()
        ducat = 0.5 * ce(z, soft(0.75)) + 0.5 * ce(z_adv, soft(0.0))
        pairing = 0.5 * (z - z_adv).pow(2).sum(1).mean()
        assert out.loss.item() == pytest.approx((ducat + pairing).item(), rel=1e-5)
        assert out.parts["pairing"].item() == pytest.approx((pairing / 0.5).item(), rel=1e-5)
        check_contract("contract_pairing_test+ducat", start_epoch=0)
        check_contract("contract_pairing_test+rpat")
    finally:
        del METHODS["contract_pairing_test"]
        rpat_class.cache_clear()


# -- the contributor's guide's method example (docs/extending.md), executed as written -----------------------
def test_the_guides_method_example_is_a_working_method():
    module = types.ModuleType("readme_alp")  # dataclasses look their module up in sys.modules
    sys.modules[module.__name__] = module
    try:
        exec(compile(doc_block("docs/extending.md", "adding-a-method"), "docs/extending.md", "exec"), module.__dict__)
        assert METHODS["alp"] is module.ALP
        assert {"alp+ducat", "alp+rpat"} <= set(composite_names())
        check_contract("alp")
        check_contract("alp+ducat", start_epoch=0)
        check_contract("alp+rpat")
        check_description("alp")
        with pytest.raises(ConfigError, match="alp.lam"):
            get_method("alp", lam=-1.0)
        method, model, batch = tiny_setup("alp", lam=0.25)
        model.eval()
        x_adv = (batch.x + 0.03 * torch.randn_like(batch.x)).clamp(0, 1)
        out = fixed_attack(method, x_adv).loss(model, batch, StepContext())
        z, z_adv = no_grad_logits(model, batch.x), no_grad_logits(model, x_adv)
        expected = ref_ce(z_adv, batch.y).mean() + 0.25 * ((z - z_adv) ** 2).sum(1).mean()
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    finally:
        METHODS.pop("alp", None)
        sys.modules.pop(module.__name__)
        rpat_class.cache_clear()
