"""AWP (Wu, Xia & Wang 2020): the layer-wise relative perturbation, computed on the base loss at x' made on the
unperturbed weights; one trainer step equals the hand-computed SGD step at w + v with v removed afterwards;
no perturbation during warm-up; a tiny pgd_at+awp run learns; the reference rows and parameter files."""
from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.func import functional_call

import atkit.methods.base as method_base
from atkit.experiments import reference
from atkit.experiments.claims import learning_minimum, model_learned
from atkit.training.config import RunConfig, load_config
from atkit.methods import ADDONS, StepContext, bases_of, composite_names, get_method
from atkit.models import build_model
from atkit.training.trainer import Trainer, train
from atkit.core.utils import ConfigError
from helpers import REPO, TinyBatch, ref_ce, ref_regularizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster on a shared machine
NUM_CLASSES = 4
GAMMA = 0.02


def _perturbed(name: str, p: torch.Tensor) -> bool:
    """The released code's selection, written out here: names containing 'weight', more than one dimension."""
    return p.dim() > 1 and "weight" in name


@pytest.fixture
def recorded_attacks(monkeypatch):
    """Every training attack of the methods: the weights it ran at and its x, y, x'."""
    records = []
    real_pgd = method_base.pgd

    def recording_pgd(model, x, y, **kwargs):
        x_adv = real_pgd(model, x, y, **kwargs)
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        records.append(types.SimpleNamespace(weights=weights, x=x.clone(), y=y.clone(), x_adv=x_adv.detach().clone()))
        return x_adv

    monkeypatch.setattr(method_base, "pgd", recording_pgd)
    return records


def _tiny(base: str, **hparams):
    torch.manual_seed(0)
    method = get_method(f"{base}+awp", threat={"steps": 2}, **hparams)
    model = build_model("small_cnn", NUM_CLASSES, width=4, hidden=8).train()
    g = torch.Generator().manual_seed(1)
    batch = TinyBatch(torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, NUM_CLASSES, (8,), generator=g))
    return method, model, batch


def _reference_loss(base: str, model, x, x_adv, y) -> torch.Tensor:
    """The base's training loss from tests/helpers.py formulas: its classification term plus its regulariser."""
    z, z_adv = model(x), model(x_adv)  # train mode: each forward normalises by its own batch statistics
    classification = ref_ce(z if base == "trades" else z_adv, y).mean()
    return classification + ref_regularizer(base, z, z_adv, y, lam=6.0)


# -- (a) the perturbation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["pgd_at", "trades", "mart"])
def test_perturbation_has_the_relative_norm_and_the_base_loss_ascent_direction(base, recorded_attacks):
    method, model, batch = _tiny(base, awp_gamma=GAMMA)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reference_model = copy.deepcopy(model)
    ctx = StepContext(epoch=0, epochs=2)
    out = method.loss(model, batch, ctx)
    assert out.parts["awp_on"].item() == 1.0

    (attack,) = recorded_attacks  # one attack, at the unperturbed weights
    assert all(torch.equal(attack.weights[n], before[n]) for n in before)
    loss = _reference_loss(base, reference_model, batch.x, attack.x_adv, batch.y)
    names = [n for n, _ in reference_model.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, list(reference_model.parameters()), allow_unused=True)))

    perturbed = 0
    for name, p in model.named_parameters():
        v = p.detach() - before[name]
        if _perturbed(name, p):
            perturbed += 1
            assert v.norm().item() == pytest.approx(GAMMA * before[name].norm().item(), rel=1e-5), name
            cosine = F.cosine_similarity(v.flatten(), grads[name].flatten(), dim=0).item()
            assert cosine == pytest.approx(1.0, abs=1e-4), (name, cosine)
        else:
            assert torch.equal(p.detach(), before[name]), f"{name} (BatchNorm scale or bias) must stay unperturbed"
    assert perturbed == sum(_perturbed(n, p) for n, p in model.named_parameters()) >= 4  # 3 convs + 3 linears

    method.after_step(model, ctx)  # no optimiser step: w + v - v is w up to one rounding
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=1e-7)


def test_gamma_zero_and_repeated_losses_leave_no_perturbation():
    method, model, batch = _tiny("pgd_at", awp_gamma=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = method.loss(model, batch, StepContext(epochs=2))
    assert out.parts["awp_on"].item() == 0.0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    method, model, batch = _tiny("pgd_at", awp_gamma=GAMMA)
    method.loss(model, batch, StepContext(epochs=2))
    method.loss(model, batch, StepContext(epochs=2))  # a loss without its after_step: the old v goes first
    method.after_step(model, StepContext(epochs=2))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=1e-6)


def test_a_wrapped_training_model_perturbs_and_restores_the_underlying_weights():
    """The trainer's fast path hands the method a bf16-autocast, channels_last wrapper: v lands on the plain model's
    parameters (the ones the optimiser and checkpoints hold), with the same relative size, and after_step on the
    plain model removes it."""
    from atkit.core.fast import AutocastModel

    method, model, batch = _tiny("trades", awp_gamma=GAMMA)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapped = AutocastModel(model, dtype=torch.bfloat16, channels_last=True)
    out = method.loss(wrapped, batch, StepContext(epochs=2))
    out.loss.backward()
    for name, p in model.named_parameters():
        v = p.detach() - before[name]
        expected = GAMMA * before[name].norm().item() if _perturbed(name, p) else 0.0
        assert v.norm().item() == pytest.approx(expected, rel=1e-5), name
    method.after_step(model, StepContext(epochs=2))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=1e-7)


# -- (b) one trainer step, by hand ----------------------------------------------------------------------------
def _sgd_steps_by_hand(template, records, *, gamma, lr, momentum, weight_decay):
    """For each recorded step: v from the CE gradient at w (layer-wise gamma ||w_l||), the update at w + v with
    SGD's weight decay and momentum, then w + v - lr * buf - v. Also the step without AWP, to show it differs."""
    buffers = {n: b.clone() for n, b in template.named_buffers()}

    def grad_at(params, x_adv, y):
        leaves = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        logits = functional_call(template, ({**leaves}, {n: b.clone() for n, b in buffers.items()}), (x_adv,))
        loss = F.cross_entropy(logits, y)
        return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))

    results, buf = [], None
    for rec in records:
        w = rec.weights
        g1 = grad_at(w, rec.x_adv, rec.y)
        v = {n: gamma * w[n].norm() * g1[n] / g1[n].norm() if _perturbed(n, w[n]) else torch.zeros_like(w[n])
             for n in w}
        w_plus = {n: w[n] + v[n] for n in w}
        g2 = grad_at(w_plus, rec.x_adv, rec.y)
        step = {n: g2[n] + weight_decay * w_plus[n] for n in w}
        buf = step if buf is None else {n: momentum * buf[n] + step[n] for n in w}
        plain = {n: w[n] - lr * (g1[n] + weight_decay * w[n]) for n in w}
        results.append(({n: w_plus[n] - lr * buf[n] - v[n] for n in w}, plain))
    return results


def test_trainer_step_equals_the_hand_computed_step_and_the_ema_sees_restored_weights(tmp_path, recorded_attacks):
    lr, momentum, weight_decay = 0.1, 0.9, 5e-4
    cfg = RunConfig.from_dict(dict(
        method="pgd_at+awp", method_params={"awp_gamma": 0.05}, dataset="synthetic",
        data={"n_train": 64, "n_test": 16, "num_classes": NUM_CLASSES, "image_size": 16}, model="small_cnn",
        model_params={"width": 4, "hidden": 8}, batch_size=32, schedule="constant", epochs=1, lr=lr,
        momentum=momentum, weight_decay=weight_decay, ema_decay=0.5, max_steps_per_epoch=2, threat={"steps": 2},
        eval={"n_test": 16, "pgd_steps": 1, "final_attacks": ["clean"]}, out_dir=str(tmp_path / "runs")))
    trainer = Trainer.new(cfg, progress=False)
    template = copy.deepcopy(trainer.model).train()
    trainer.train_epoch(0)
    assert len(recorded_attacks) == 2

    (w1, plain1), (w2, _) = _sgd_steps_by_hand(template, recorded_attacks, gamma=0.05, lr=lr, momentum=momentum,
                                               weight_decay=weight_decay)
    final = dict(trainer.model.named_parameters())
    for name in w1:
        # The second step started from the first step's result: v was removed exactly (no drift).
        torch.testing.assert_close(recorded_attacks[1].weights[name], w1[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(final[name].detach(), w2[name], rtol=1e-5, atol=1e-6)
    # The step without AWP lands elsewhere, so the comparison above could fail.
    assert max((w1[n] - plain1[n]).abs().max().item() for n in w1) > 1e-3
    # EMA (decay 0.5): the first update copies w1, the second averages w1 and w2 -- restored weights only.
    ema = dict(trainer.ema.module.named_parameters())
    for name in w1:
        torch.testing.assert_close(ema[name].detach(), 0.5 * w1[name] + 0.5 * w2[name], rtol=1e-5, atol=1e-6)
    assert trainer.method.state_dict() == {}  # nothing but warm-up, which follows the epoch: nothing to save


# -- (c) warm-up -------------------------------------------------------------------------------------------------
def test_no_perturbation_before_the_warm_up_ends():
    method, model, batch = _tiny("trades", awp_gamma=GAMMA, awp_warmup=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = method.loss(model, batch, StepContext(epoch=0, step=3, steps_per_epoch=4, epochs=2))
    assert out.parts["awp_on"].item() == 0.0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    method.after_step(model, StepContext(epoch=0, epochs=2))
    out = method.loss(model, batch, StepContext(epoch=1, step=0, steps_per_epoch=4, epochs=2))
    assert out.parts["awp_on"].item() == 1.0
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_warm_up_scales_with_the_run_length_like_the_lr_milestones():
    # The released TRADES-AWP setting: 9 epochs without AWP of a 200-epoch run; a 20-epoch run waits 0.9 epochs.
    method = get_method("trades+awp", awp_warmup=9)
    config = RunConfig.from_dict(dict(method="trades+awp", schedule="sota200", epochs=20))
    method.setup(types.SimpleNamespace(config=config))
    assert not method.awp_active(StepContext(epoch=0, step=8, steps_per_epoch=10, epochs=20))
    assert method.awp_active(StepContext(epoch=0, step=9, steps_per_epoch=10, epochs=20))
    method = get_method("trades+awp", awp_warmup=9, awp_reference_epochs=20)
    method.setup(types.SimpleNamespace(config=config))
    assert not method.awp_active(StepContext(epoch=8, step=9, steps_per_epoch=10, epochs=20))
    assert method.awp_active(StepContext(epoch=9, epochs=20))


def test_resume_across_the_warm_up_is_exact(tmp_path):
    """AWP keeps no state of its own (the warm-up follows the epoch): a run cut after epoch 1 and resumed into the
    first AWP epoch ends with the weights of the straight run."""
    def config(name):
        return RunConfig.from_dict(dict(
            method="pgd_at+awp", method_params={"awp_gamma": 0.05, "awp_warmup": 1.0}, dataset="synthetic",
            data={"n_train": 64, "n_test": 16, "image_size": 16}, model="small_cnn",
            model_params={"width": 4, "hidden": 8}, batch_size=32, schedule="constant", epochs=2, ema_decay=0.5,
            threat={"steps": 1}, eval={"n_test": 16, "pgd_steps": 1, "final_attacks": ["clean"]},
            out_dir=str(tmp_path / name)))

    straight = train(config("straight"), progress=False, evaluate_final=False)
    assert [r["train_awp_on"] for r in straight.history] == [0.0, 1.0]
    partial = Trainer.new(config("cut"), progress=False)
    partial.epochs = 1  # stop after the first epoch, as a killed run would have
    partial.fit()
    resumed = Trainer.resume(partial.run_dir, progress=False)
    resumed.fit()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for name, value in straight.ema.state_dict().items():
        assert torch.equal(value, resumed.ema.state_dict()[name]), name


# -- (d) a tiny run learns -----------------------------------------------------------------------------------
def test_tiny_pgd_at_awp_run_learns(tmp_path):
    n_test = 200
    cfg = RunConfig.from_dict(dict(
        method="pgd_at+awp", method_params={"awp_gamma": 0.01}, dataset="synthetic",
        data={"n_train": 1000, "n_test": n_test, "image_size": 16}, model="small_cnn",
        model_params={"width": 8, "hidden": 32}, batch_size=64, lr=0.1, schedule="pang110", epochs=3,
        threat={"steps": 2}, out_dir=str(tmp_path / "runs"),
        eval={"n_test": n_test, "pgd_steps": 0, "final_attacks": ["clean"]}))
    trainer = train(cfg, progress=False, evaluate_final=False)
    last = trainer.history[-1]
    assert trainer.status == "finished" and last["train_awp_on"] == 1.0
    # 10 balanced classes, chance 10 %; seeded, this run ends near 44 % (the minimum is 25 %).
    learned = model_learned(last["test_clean_acc"], 10, n=n_test, name="pgd_at+awp")
    assert learned.learned, learned.describe()
    assert last["test_clean_acc"] >= learning_minimum(10) > 10.0


# -- composition and refusals -----------------------------------------------------------------------------------
def test_composes_with_the_bases_that_have_a_classification_term():
    # fast AT (fgsm_rs, n_fgsm) has a classification term on its adversarial example too
    assert set(bases_of("awp")) == {"pgd_at", "trades", "mart", "consistency_at", "fgsm_rs", "n_fgsm"}
    assert {"pgd_at+awp", "trades+awp", "mart+awp"} <= set(composite_names())
    with pytest.raises(ConfigError, match="no adversarial example"):
        get_method("standard+awp")
    with pytest.raises(ConfigError, match="classification term"):
        get_method("fait+awp")
    # One add-on per composite name: RPAT and AWP together are not a registered composite.
    with pytest.raises(ConfigError, match="add-on 'rpat\\+awp'"):
        get_method("pgd_at+rpat+awp")
    with pytest.raises(ConfigError, match="awp_gamma"):
        get_method("trades+awp", awp_gamma=-1.0)
    method = get_method("trades+awp", lam=3.0, awp_gamma=0.01)
    assert method.params.lam == 3.0 and method.params.awp_gamma == 0.01 and method.attack_loss == "kl"
    assert "arXiv:2004.05884" in ADDONS["awp"].paper


def test_a_base_that_attacks_twice_at_perturbed_weights_is_stopped():
    """A base whose loss attacks after the perturbation would attack w + v: refused, and v is removed again."""
    from atkit.methods import METHODS, register
    from atkit.methods.awp import awp_class

    pgd_at = METHODS["pgd_at"]

    class AttacksTwice(pgd_at):
        name = "awp_test_attacks_twice"
        paper = "test-only method: PGD-AT that runs its attack twice"

        def loss(self, model, batch, ctx):
            self.attack(model, batch.x, batch.y)
            return super().loss(model, batch, ctx)

    register(AttacksTwice)
    try:
        method = get_method("awp_test_attacks_twice+awp", threat={"steps": 1}, awp_gamma=GAMMA)
        _, model, batch = _tiny("pgd_at")
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        with pytest.raises(RuntimeError, match="attacks again"):
            method.loss(model, batch, StepContext(epochs=2))
        for name, p in model.named_parameters():  # the failed step left no perturbation behind
            torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=1e-7)
    finally:
        del METHODS["awp_test_attacks_twice"]
        awp_class.cache_clear()


# -- reference rows and parameter files --------------------------------------------------------------------------
PARAMETER_FILES = {"pgd_at+awp_cifar10_preact_resnet18.yaml": "RPAT / Table 3", "pgd_at+awp_cifar10_wrn34_10.yaml":
                   "RPAT / Table 4", "pgd_at+awp_cifar10_resnet18.yaml": "DUCAT / Table 2",
                   "trades+awp_fait100_cifar10_resnet18.yaml": "FAIT/MER / Table 4"}


def test_the_awp_rows_of_the_papers_name_the_composites():
    rows = [r for r in reference.REFERENCES if r.method is not None and r.method.endswith("+awp")]
    assert sorted((r.key, r.dataset) for r in rows) == [
        ("DUCAT / Table 2", "cifar10"), ("FAIT/MER / Table 4", "cifar10"), ("FAIT/MER / Table 4", "cifar100"),
        ("RPAT / Table 3", "cifar10"), ("RPAT / Table 3", "cifar100"), ("RPAT / Table 4", "cifar10")]
    assert all("AWP" in r.row and r.note for r in rows)  # each says how the setting was read
    assert not any(r.method is None and "AWP" in r.row for r in reference.REFERENCES)
    trades_awp = next(r for r in rows if r.key == "FAIT/MER / Table 4" and r.dataset == "cifar10")
    assert trades_awp.method == "trades+awp" and trades_awp.label_inferred
    assert trades_awp.values == {"clean": 81.23, "pgd100": 51.77, "aa": 48.62}


@pytest.mark.parametrize("name", PARAMETER_FILES)
def test_parameter_files_follow_the_released_settings_and_match_their_row(name):
    path = REPO / "parameters" / "paper" / name
    assert path.read_text().startswith("# ") and PARAMETER_FILES[name].split(" / ")[1] in path.read_text()
    cfg = load_config(path)
    method = cfg.build_method()
    assert cfg.dataset == "cifar10" and cfg.threat_model().norm == "linf" and method.params.awp_steps == 1
    if cfg.method == "pgd_at+awp":  # the released AT-AWP script (robust-overfitting code base)
        assert (method.params.awp_gamma, method.params.awp_warmup, method.bn_mode) == (0.01, 0.0, "train")
        assert cfg.schedule == "sota200" and cfg.resolved_epochs() == 200
    else:  # the released TRADES-AWP script's gamma, TRADES' lambda, the FAIT/MER paper's schedule
        assert (method.params.awp_gamma, method.params.lam, cfg.schedule) == (0.005, 6.0, "fait100")
    row = next(r for r in reference.select([PARAMETER_FILES[name]], dataset="cifar10") if r.method == cfg.method)
    setting = dict(dataset=cfg.dataset, norm=cfg.threat_model().norm, model=cfg.model, schedule=cfg.schedule)
    assert reference.matches(row, method=cfg.method, method_params=cfg.method_params, **setting)
    base = cfg.method.split("+")[0]  # the base alone is a different setting, and so is another gamma
    assert not reference.matches(row, method=base, method_params={}, **setting)
    assert not reference.matches(row, method=cfg.method, method_params={**cfg.method_params, "awp_gamma": 0.02},
                                 **setting)
    sweep = yaml.safe_load((REPO / "parameters" / "paper" / "sweeps" / "train_all.yaml").read_text())
    assert f"parameters/paper/{name}" in sweep["grid"]["config"]
    assert (REPO / "parameters" / "paper" / "train" / name).is_file()
