"""The baseline losses (docs/methods.md, baselines) against their formulas, recomputed by hand."""
import math

import pytest
import torch

from atkit.methods import METHODS, StepContext, ThreatModel, get_method
from atkit.core.utils import ConfigError
from helpers import (
    fixed_attack as _fixed_attack, no_grad_logits as _logits, ref_ce as _ce, ref_kl_rows as _kl_rows,
    ref_softmax as _softmax, tiny_batch, TinyNet)


@pytest.fixture
def setup():
    torch.manual_seed(1)
    model = TinyNet().train()
    batch = tiny_batch(b=8)
    x_adv = (batch.x + 0.03 * torch.randn_like(batch.x)).clamp(0, 1)
    return model, batch, x_adv


def test_pgd_at_is_ce_on_adversarial(setup):
    model, batch, x_adv = setup
    out = _fixed_attack(get_method("pgd_at"), x_adv).loss(model, batch, StepContext())
    expected = _ce(_logits(model, x_adv), batch.y).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_trades_formula(setup):
    model, batch, x_adv = setup
    out = _fixed_attack(get_method("trades", lam=6.0), x_adv).loss(model, batch, StepContext())
    z, z_adv = _logits(model, batch.x), _logits(model, x_adv)
    expected = _ce(z, batch.y).mean() + 6.0 * _kl_rows(_softmax(z), _softmax(z_adv)).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.parts["kl"].item() == pytest.approx(_kl_rows(_softmax(z), _softmax(z_adv)).mean().item(), rel=1e-4, abs=1e-7)


def test_mart_formula(setup):
    model, batch, x_adv = setup
    out = _fixed_attack(get_method("mart", lam=6.0), x_adv).loss(model, batch, StepContext())
    z, z_adv = _logits(model, batch.x), _logits(model, x_adv)
    p, p_adv = _softmax(z), _softmax(z_adv)
    bce = []
    for i in range(len(batch.y)):
        wrong = [p_adv[i, k] for k in range(p_adv.shape[1]) if k != batch.y[i]]
        bce.append(_ce(z_adv[i:i + 1], batch.y[i:i + 1])[0] - math.log(1.0001 - max(wrong).item()))
    bce = torch.stack(bce).mean()
    p_true = p[torch.arange(8), batch.y]
    kl_term = (_kl_rows(p, p_adv) * (1 - p_true)).mean()
    assert out.loss.item() == pytest.approx((bce + 6.0 * kl_term).item(), rel=1e-5)


def test_consistency_at_formula():
    torch.manual_seed(2)
    model = TinyNet().train()
    batch = tiny_batch(b=6, two_views=True)
    x_stack = torch.cat([batch.x, batch.x2])
    x_adv = (x_stack + 0.02 * torch.randn_like(x_stack)).clamp(0, 1)
    method = _fixed_attack(get_method("consistency_at", lam=1.0, temperature=0.5), x_adv)
    out = method.loss(model, batch, StepContext())
    z_adv = _logits(model, x_adv)
    y2 = torch.cat([batch.y, batch.y])
    ce = _ce(z_adv, y2).mean()
    p1, p2 = _softmax(z_adv[:6] / 0.5), _softmax(z_adv[6:] / 0.5)
    m = ((p1 + p2) / 2).clamp(min=1e-8)
    js = (0.5 * (_kl_rows(p1, m) + _kl_rows(p2, m))).mean()
    assert out.loss.item() == pytest.approx((ce + js).item(), rel=1e-5)
    assert out.logits_adv.shape[0] == 12 and out.y.shape[0] == 12


def test_consistency_at_needs_two_views(setup):
    model, batch, _ = setup
    with pytest.raises(ConfigError, match="two_views"):
        get_method("consistency_at").loss(model, batch, StepContext())


def test_standard_and_random_noise(setup):
    model, batch, _ = setup
    out = get_method("standard").loss(model, batch, StepContext())
    assert out.loss.item() == pytest.approx(_ce(_logits(model, batch.x), batch.y).mean().item(), rel=1e-5)
    method = get_method("random_noise", threat={"eps": 8 / 255})
    out = method.loss(model, batch, StepContext())
    delta = out.x_adv - batch.x
    assert delta.abs().max() <= 8 / 255 + 1e-6 and delta.abs().max() > 4 / 255
    assert out.loss.item() == pytest.approx(_ce(_logits(model, out.x_adv), batch.y).mean().item(), rel=1e-5)


def test_attack_defaults_follow_reference():
    # docs/methods.md, common protocol: uniform start for PGD-AT / Consistency-AT, x + 0.001 N for TRADES / MART;
    # BatchNorm in eval mode for this family.
    assert get_method("pgd_at").start == "uniform"
    assert get_method("consistency_at").start == "uniform"
    assert get_method("trades").start == "normal"
    assert get_method("mart").start == "normal"
    assert all(get_method(n).bn_mode == "eval" for n in ["pgd_at", "trades", "mart", "consistency_at"])
    assert get_method("pgd_at", attack_bn_mode="train").bn_mode == "train"
    assert get_method("trades", random_start="none").start is None


def test_trades_attack_uses_kl_and_stays_in_ball():
    torch.manual_seed(3)
    model = TinyNet().eval()
    batch = tiny_batch(b=8)
    method = get_method("trades", threat={"eps": 8 / 255, "step_size": 2 / 255, "steps": 5})
    calls = {}
    import atkit.methods.base as base

    original = base.pgd

    def spy(*args, **kwargs):
        calls.update(kwargs)
        return original(*args, **kwargs)

    base.pgd = spy
    try:
        out = method.loss(model.train(), batch, StepContext())
    finally:
        base.pgd = original
    assert calls["loss"] == "kl" and calls["random_start"] == "normal" and calls["bn_mode"] == "eval"
    assert (out.x_adv - batch.x).abs().max() <= 8 / 255 + 1e-6


def test_unknown_method_and_hyperparameter_errors():
    with pytest.raises(ConfigError, match="'trades'"):
        get_method("tradse")
    with pytest.raises(ConfigError, match="lam"):
        get_method("trades", lamda=6)
    with pytest.raises(ConfigError, match="out of range"):
        get_method("trades", lam=-1.0)
    with pytest.raises(ConfigError, match="8/255"):
        ThreatModel(eps=8)


def test_registry_lists_baselines():
    for name in ["standard", "random_noise", "pgd_at", "trades", "mart", "consistency_at"]:
        assert name in METHODS
        d = METHODS[name].describe()
        assert d["paper"] and "attack_bn_mode" in d["hyperparameters"]
