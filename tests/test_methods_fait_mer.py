"""The FAIT/MER paper's methods (FAIT, MER, FAIT-MER, SCORE, FAIT_S, MER_S) against their formulas, recomputed by hand."""
import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from atkit.attacks import pgd
from atkit.training.config import load_config
from atkit.data import ImageDataset, stratified_indices
from atkit.methods import METHODS, StepContext, get_method
from atkit.methods.divergences import entropy_per_sample, neg_sum_of_squares_per_sample, squared_error_per_sample
from atkit.methods.fait import bregman_trades_objective, robustness_losses
from atkit.core.utils import ConfigError
from helpers import (
    no_grad_logits as _logits, ref_ce as _ce, ref_kl_rows as _kl_rows, ref_softmax as _softmax, tiny_batch, TinyNet)

REPO = Path(__file__).resolve().parents[1]
THREAT = {"eps": 8 / 255, "step_size": 2 / 255, "steps": 4}

# What the FAIT/MER paper says each method is: (divergence, x* interpolation, MER betas or None, lambda).
PAPER = {
    "fait": ("kl", True, None, 12.0),
    "mer": ("kl", False, (1.0, 0.0), 21.0),
    "fait_mer": ("kl", True, (1.0, 0.0), 30.0),
    "score": ("se", False, None, 4.0),
    "fait_s": ("se", True, None, 8.0),
    "mer_s": ("se", False, (1.0, 0.0), 10.0),
}


# -- the formulas, written out again with plain torch ops (softmax, CE, KL rows: tests/helpers.py) ----------
def _kl(zp, zq):
    return _kl_rows(_softmax(zp), _softmax(zq))


def _se(zp, zq):
    return ((_softmax(zp) - _softmax(zq)) ** 2).sum(dim=1)


def _shannon(z):
    p = _softmax(z)
    return -(p * torch.log(p)).sum(dim=1)


def _neg_s(z):
    return -(_softmax(z) ** 2).sum(dim=1)


DIV = {"kl": _kl, "se": _se}
ENT = {"kl": _shannon, "se": _neg_s}


def _expected(kind, lam, z, z_adv, y, z_star=None, betas=None):
    div = DIV[kind]
    robust = div(z, z_adv) if z_star is None else div(z, z_star) + div(z_star, z_adv)
    value = _ce(z, y).mean() + lam * robust.mean()
    if betas is not None:
        value = value - betas[0] * ENT[kind](z).mean() - betas[1] * ENT[kind](z_adv).mean()
    return value


# -- helpers -------------------------------------------------------------------------------------------
def test_divergence_helpers_match_formulas():
    z1, z2 = torch.randn(6, 7, dtype=torch.float64), torch.randn(6, 7, dtype=torch.float64)
    assert torch.allclose(squared_error_per_sample(z1, z2), _se(z1, z2))
    assert torch.allclose(entropy_per_sample(z1), _shannon(z1))
    assert torch.allclose(neg_sum_of_squares_per_sample(z1), _neg_s(z1))
    # Uniform predictions have the largest entropy (log C) and the largest -S (-1/C).
    flat = torch.zeros(1, 7, dtype=torch.float64)
    assert entropy_per_sample(flat).item() == pytest.approx(torch.log(torch.tensor(7.0)).item())
    assert neg_sum_of_squares_per_sample(flat).item() == pytest.approx(-1 / 7)


@pytest.mark.parametrize("psi,kind", [("neg_entropy", "kl"), ("square", "se")])
@pytest.mark.parametrize("with_star", [False, True])
@pytest.mark.parametrize("betas", [None, (1.0, 0.0), (0.7, 0.4)])
def test_objective_matches_formula(psi, kind, with_star, betas):
    g = torch.Generator().manual_seed(3)
    z, z_adv, z_star = (3 * torch.randn(8, 5, generator=g, dtype=torch.float64) for _ in range(3))
    y = torch.randint(0, 5, (8,), generator=g)
    loss, parts = bregman_trades_objective(z, z_adv, y, lam=7.5, psi=psi, logits_star=z_star if with_star else None,
                                           entropy_weights=betas)
    expected = _expected(kind, 7.5, z, z_adv, y, z_star if with_star else None, betas)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    div = DIV[kind]
    if with_star:
        assert parts["div_clean_star"].item() == pytest.approx(div(z, z_star).mean().item(), rel=1e-10)
        assert parts["div_star_adv"].item() == pytest.approx(div(z_star, z_adv).mean().item(), rel=1e-10)
        assert parts["robust"].item() == pytest.approx((div(z, z_star) + div(z_star, z_adv)).mean().item(), rel=1e-10)
    else:
        assert "div_clean_star" not in parts
        assert parts["robust"].item() == pytest.approx(div(z, z_adv).mean().item(), rel=1e-10)
    assert ("entropy_clean" in parts) == (betas is not None)


def test_objective_gradient_flows_through_all_three_predictions():
    z, z_adv, z_star = (torch.randn(4, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    loss, _ = bregman_trades_objective(z, z_adv, torch.tensor([0, 1, 2, 3]), lam=12.0, logits_star=z_star)
    loss.backward()
    for t in (z, z_adv, z_star):
        assert t.grad is not None and t.grad.abs().sum() > 0


# -- each method end to end: the right attack, the right iterate, the right formula --------------------
@pytest.mark.parametrize("name", sorted(PAPER))
def test_method_loss_end_to_end(name):
    kind, interpolates, betas, lam = PAPER[name]
    torch.manual_seed(5)
    model = TinyNet().train()
    reference = copy.deepcopy(model)  # BN running stats change in the method's train-mode forwards
    batch = tiny_batch(b=8)
    method = get_method(name, threat=THREAT)
    assert method.params.lam == lam
    torch.manual_seed(11)
    out = method.loss(model, batch, StepContext())

    torch.manual_seed(11)
    x_adv, x_star = pgd(reference, batch.x, batch.y, eps=8 / 255, step_size=2 / 255, steps=4, norm="linf",
                        loss={"kl": "kl", "se": "sq"}[kind], random_start="normal", bn_mode="eval",
                        return_iterate_at=2)
    assert torch.equal(out.x_adv, x_adv)
    if interpolates:
        assert torch.equal(out.extras["x_star"], x_star)
    reference.train()
    z, z_adv = _logits(reference, batch.x), _logits(reference, x_adv)
    z_star = _logits(reference, x_star) if interpolates else None
    expected = _expected(kind, lam, z, z_adv, batch.y, z_star, betas)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.requires_grad


# -- FAIT decomposition ---------------------------------------------------------------------------------
def _fait_and_trades(interpolation_step):
    torch.manual_seed(7)
    model = TinyNet().train()
    twin = copy.deepcopy(model)
    batch = tiny_batch(b=8, seed=1)
    fait = get_method("fait", threat=THREAT, interpolation_step=interpolation_step, random_start="none", lam=12.0)
    trades = get_method("trades", threat=THREAT, random_start="none", lam=12.0)
    return fait.loss(model, batch, StepContext()), trades.loss(twin, batch, StepContext())


def test_fait_with_i0_is_trades_kl_plus_zero():
    out, trades_out = _fait_and_trades(0)
    # x* = the PGD start = x (no random start), so KL(p(x) || p(x*)) = 0 and R' = KL(p(x) || p(x')).
    assert torch.equal(out.extras["x_star"], out.x)
    assert out.parts["div_clean_star"].item() == pytest.approx(0.0, abs=1e-7)
    assert out.parts["robust"].item() == pytest.approx(trades_out.parts["kl"].item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(trades_out.loss.item(), rel=1e-5)


def test_fait_with_i_steps_is_trades_kl_plus_zero():
    out, trades_out = _fait_and_trades(THREAT["steps"])
    assert torch.equal(out.extras["x_star"], out.x_adv)
    assert out.parts["div_star_adv"].item() == pytest.approx(0.0, abs=1e-7)
    assert out.parts["robust"].item() == pytest.approx(trades_out.parts["kl"].item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(trades_out.loss.item(), rel=1e-5)


def test_fait_x_star_is_the_iterate_of_the_same_attack():
    torch.manual_seed(8)
    model = TinyNet().train()
    twin = copy.deepcopy(model)
    batch = tiny_batch(b=8, seed=2)
    torch.manual_seed(1)
    out = get_method("fait", threat=THREAT, interpolation_step=2).loss(model, batch, StepContext())
    torch.manual_seed(1)  # the same start, stopped after 2 steps
    x_two_steps = pgd(twin, batch.x, batch.y, eps=8 / 255, step_size=2 / 255, steps=2, loss="kl",
                      random_start="normal", bn_mode="eval")
    assert torch.equal(out.extras["x_star"], x_two_steps)
    assert not torch.equal(out.extras["x_star"], out.x_adv)
    parts = out.parts
    assert parts["robust"].item() == pytest.approx((parts["div_clean_star"] + parts["div_star_adv"]).item(), rel=1e-6)


# -- entropy signs ----------------------------------------------------------------------------------------
def _pair(name_a, kw_a, name_b, kw_b):
    torch.manual_seed(9)
    model = TinyNet().train()
    twin = copy.deepcopy(model)
    batch = tiny_batch(b=8, seed=3)
    torch.manual_seed(4)
    a = get_method(name_a, threat=THREAT, **kw_a).loss(model, batch, StepContext())
    torch.manual_seed(4)
    b = get_method(name_b, threat=THREAT, **kw_b).loss(twin, batch, StepContext())
    return a, b, batch


def test_mer_with_zero_betas_is_trades():
    mer, trades, _ = _pair("mer", {"lam": 9.0, "beta_clean": 0.0, "beta_adv": 0.0}, "trades", {"lam": 9.0})
    assert torch.equal(mer.x_adv, trades.x_adv)
    assert mer.loss.item() == pytest.approx(trades.loss.item(), rel=1e-6)


def test_mer_subtracts_the_entropy():
    mer, trades, batch = _pair("mer", {"lam": 9.0, "beta_clean": 1.0, "beta_adv": 0.5}, "trades", {"lam": 9.0})
    h_clean = _shannon(mer.logits_clean.detach().double()).mean()
    h_adv = _shannon(mer.logits_adv.detach().double()).mean()
    assert (mer.loss - trades.loss).item() == pytest.approx(-(h_clean + 0.5 * h_adv).item(), rel=1e-4)
    assert mer.loss.item() < trades.loss.item()


def test_mer_s_adds_the_sum_of_squares():
    mer_s, score, _ = _pair("mer_s", {"lam": 4.0, "beta_clean": 1.0, "beta_adv": 0.0}, "score", {"lam": 4.0})
    s_clean = (_softmax(mer_s.logits_clean.detach().double()) ** 2).sum(dim=1).mean()
    assert (mer_s.loss - score.loss).item() == pytest.approx(s_clean.item(), rel=1e-4)
    assert mer_s.loss.item() > score.loss.item()


@pytest.mark.parametrize("psi,entropy", [("neg_entropy", _shannon), ("square", _neg_s)])
def test_descending_the_mer_term_raises_the_entropy(psi, entropy):
    z = (4 * torch.randn(6, 5, dtype=torch.float64)).requires_grad_(True)
    y = torch.arange(6) % 5
    with_mer, _ = bregman_trades_objective(z, z.detach(), y, lam=0.0, psi=psi, entropy_weights=(1.0, 0.0))
    without, _ = bregman_trades_objective(z, z.detach(), y, lam=0.0, psi=psi)
    (grad,) = torch.autograd.grad(with_mer - without, z)
    stepped = z.detach() - 0.1 * grad
    assert entropy(stepped).mean() > entropy(z.detach()).mean()


# -- SCORE's attack ------------------------------------------------------------------------------------------
def test_score_attack_maximises_squared_error_not_kl():
    torch.manual_seed(10)
    model = TinyNet().train()
    twins = [copy.deepcopy(model) for _ in range(2)]
    batch = tiny_batch(b=8, seed=4)
    out = get_method("score", threat=THREAT, random_start="none").loss(model, batch, StepContext())
    kwargs = dict(eps=8 / 255, step_size=2 / 255, steps=4, random_start=None, bn_mode="eval")
    assert torch.equal(out.x_adv, pgd(twins[0], batch.x, batch.y, loss="sq", **kwargs))
    assert not torch.equal(out.x_adv, pgd(twins[1], batch.x, batch.y, loss="kl", **kwargs))


# -- R and R' (Fig. 4) ------------------------------------------------------------------------------------------
def _fake_trainer(model, n=30):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 5
    dataset = ImageDataset(train_x=x, train_y=y, test_x=x[:5], test_y=y[:5], num_classes=5,
                           class_names=[str(c) for c in range(5)], name="fake")
    return SimpleNamespace(model=model, device=torch.device("cpu"), dataset=dataset,
                           config=SimpleNamespace(eval=SimpleNamespace(batch_size=7)))


@pytest.mark.parametrize("name,kind", [("fait", "kl"), ("mer", "kl"), ("score", "se")])
def test_epoch_metrics_logs_r_and_r_prime(name, kind):
    torch.manual_seed(12)
    model = TinyNet().train()
    reference = copy.deepcopy(model).eval()
    bn_before = model.bn.running_mean.clone()
    trainer = _fake_trainer(model)
    assert get_method(name, threat=THREAT).epoch_metrics(trainer) == {}
    method = get_method(name, threat=THREAT, log_r=True, log_r_samples=20, random_start="none")
    rng_before = torch.get_rng_state()
    metrics = method.epoch_metrics(trainer)
    assert set(metrics) == {"R", "R_prime"}
    assert torch.equal(torch.get_rng_state(), rng_before)  # training's random stream is untouched
    assert model.training and torch.equal(model.bn.running_mean, bn_before)

    idx = stratified_indices(trainer.dataset.train_y, 20)  # the measured images: class-stratified, not the first 20
    x = trainer.dataset.train_x[idx].float() / 255
    y = trainer.dataset.train_y[idx]
    x_adv, x_star = pgd(reference, x, y, eps=8 / 255, step_size=2 / 255, steps=4, loss={"kl": "kl", "se": "sq"}[kind],
                        random_start=None, bn_mode="eval", return_iterate_at=2)
    z, z_star, z_adv = _logits(reference, x), _logits(reference, x_star), _logits(reference, x_adv)
    div = DIV[kind]
    assert metrics["R"] == pytest.approx(div(z, z_adv).mean().item(), rel=1e-4)
    assert metrics["R_prime"] == pytest.approx((div(z, z_star) + div(z_star, z_adv)).mean().item(), rel=1e-4)


def test_r_measurement_is_repeatable_with_random_start():
    torch.manual_seed(13)
    model = TinyNet().train()
    method = get_method("fait", threat=THREAT)
    x, y = torch.rand(10, 3, 4, 4), torch.randint(0, 5, (10,))
    first = robustness_losses(method, model, x, y, batch_size=4)
    assert robustness_losses(method, model, x, y, batch_size=4) == first
    assert first["R"] > 0 and first["R_prime"] > 0


# -- training, registry, errors, parameter files ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PAPER))
def test_every_method_trains_and_logs_r(name, tmp_path):
    from atkit.training.trainer import Trainer

    config = {"method": name, "method_params": {"log_r": True, "log_r_samples": 16}, "dataset": "synthetic",
              "data": {"n_train": 64, "n_test": 32}, "model": "small_cnn",
              "model_params": {"width": 8, "hidden": 32}, "epochs": 1, "batch_size": 16,
              "max_steps_per_epoch": 2, "threat": {"steps": 3}, "device": "cpu", "out_dir": str(tmp_path),
              "eval": {"n_test": 16, "pgd_steps": 2, "final_attacks": ["clean"]}}
    trainer = Trainer.new(config, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    record = trainer.fit()["history"][-1]
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    assert torch.isfinite(torch.tensor([record["R"], record["R_prime"]])).all()
    assert "train_robust" in record and ("train_entropy_clean" in record) == (PAPER[name][2] is not None)


def test_registered_and_described():
    for name in PAPER:
        assert name in METHODS
        d = METHODS[name].describe()
        assert "FAIT/MER paper" in d["paper"] and d["random_start"] == "normal" and d["attack_bn_mode"] == "eval"
        assert {"lam", "interpolation_step", "log_r"} <= set(d["hyperparameters"])


def test_bad_hyperparameters_raise_config_error():
    with pytest.raises(ConfigError, match="interpolation_step"):
        get_method("fait", threat={"steps": 10}, interpolation_step=11)
    with pytest.raises(ConfigError, match="out of range"):
        get_method("mer", beta_clean=-1.0)
    with pytest.raises(ConfigError, match="log_r"):
        get_method("score", log_r="yes")
    with pytest.raises(ConfigError, match="beta_clean"):
        get_method("fait", beta_clean=1.0)  # FAIT has no entropy term
    with pytest.raises(ConfigError, match="psi"):
        bregman_trades_objective(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), lam=1.0,
                                 psi="sqaure")


@pytest.mark.parametrize("name,lam", [("trades", 9.0)] + [(n, PAPER[n][3]) for n in sorted(PAPER)])
def test_paper_parameter_files_load(name, lam):
    # The FAIT/MER paper's TRADES baseline is named after its schedule: trades_cifar10_resnet18.yaml is the RPAT protocol's.
    stem = "trades_fait100" if name == "trades" else name
    config = load_config(REPO / "parameters" / "paper" / f"{stem}_cifar10_resnet18.yaml")
    assert config.method == name and config.model == "resnet18" and config.schedule == "fait100"
    assert config.build_method().params.lam == lam
    assert config.resolved_batch_size() == 512 and config.resolved_lr() == 0.4 and config.resolved_epochs() == 100
    threat = config.threat_model()
    assert threat.norm == "linf" and threat.eps == pytest.approx(8 / 255) and threat.steps == 10
