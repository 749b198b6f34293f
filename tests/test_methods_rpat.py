"""RPAT (+rpat on any base), ReBAT and RPAT++ against their formulas (docs/methods.md, RPAT and ReBAT), recomputed by hand."""
import copy
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from atkit.training.config import RunConfig, load_config
from atkit.methods import METHODS, StepContext, describe_methods, get_method
from atkit.methods.rpat import rpat_term, sample_alpha
from atkit.models import AtkitModel
from atkit.training.trainer import Trainer
from atkit.training.checkpoints import load_model
from atkit.core.utils import ConfigError
from helpers import fixed_attack as _fixed_attack, ref_kl_rows as _kl_rows, ref_softmax as _softmax, tiny_batch, TinyNet

REPO = Path(__file__).resolve().parent.parent
BASES = ("pgd_at", "trades", "mart", "consistency_at")


# -- independent formulas (double precision, plain torch ops) -------------------------------------
def _mse(a, b):
    return ((a - b) ** 2).sum() / a.numel()


def _hand_distance(pred, target, kind):
    pred, target = pred.double(), target.double()
    if kind == "mse":
        return _mse(pred, target)
    p, q = _softmax(pred), _softmax(target)
    if kind == "kl":
        return _kl_rows(q, p).mean()
    if kind == "js":
        m = (p + q) / 2
        return (0.5 * _kl_rows(p, m) + 0.5 * _kl_rows(q, m)).mean()
    cos = (pred * target).sum(1) / (pred.norm(dim=1) * target.norm(dim=1))
    return (1 - cos).mean()


def _train_logits(model, x):
    """Train-mode forward of a copy (BatchNorm batch statistics, running statistics left alone)."""
    with torch.no_grad():
        return copy.deepcopy(model).train()(x).double()


# -- the term ---------------------------------------------------------------------------------------
def _random_perceptions(b=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("alpha", [0.5, 0.2, 0.8])
def test_paper_scale_is_eq3_and_code_over_a_one_minus_a_squared(alpha):
    z, z_mid, z_adv = _random_perceptions()
    eq3 = _mse((z_mid - z) / alpha, (z_adv - z_mid) / (1 - alpha))
    code = _mse(z_mid, (1 - alpha) * z + alpha * z_adv)
    paper_value = rpat_term(z, z_mid, z_adv, alpha, "mse", "paper")
    code_value = rpat_term(z, z_mid, z_adv, alpha, "mse", "code")
    assert paper_value.item() == pytest.approx(eq3.item(), rel=1e-10)
    assert code_value.item() == pytest.approx(code.item(), rel=1e-10)
    assert paper_value.item() == pytest.approx(code_value.item() / (alpha * (1 - alpha)) ** 2, rel=1e-10)
    if alpha == 0.5:
        assert paper_value.item() == pytest.approx(16 * code_value.item(), rel=1e-10)


def test_per_sample_alpha_paper_scale():
    z, z_mid, z_adv = _random_perceptions(b=4)
    a = torch.tensor([0.1, 0.3, 0.5, 0.9], dtype=torch.float64)
    expected = torch.stack([_mse((z_mid[i] - z[i]) / a[i], (z_adv[i] - z_mid[i]) / (1 - a[i]))
                            for i in range(4)]).mean()
    assert rpat_term(z, z_mid, z_adv, a, "mse", "paper").item() == pytest.approx(expected.item(), rel=1e-10)
    code = torch.stack([_mse(z_mid[i], (1 - a[i]) * z[i] + a[i] * z_adv[i]) for i in range(4)]).mean()
    assert rpat_term(z, z_mid, z_adv, a, "mse", "code").item() == pytest.approx(code.item(), rel=1e-10)


@pytest.mark.parametrize("kind", ["mse", "kl", "js", "cosine"])
def test_each_distance_against_hand_computation(kind):
    z, z_mid, z_adv = _random_perceptions(b=5, c=7, seed=3)
    a = 0.3
    target = 0.7 * z + 0.3 * z_adv
    # Element-wise loops, not vectorised, so the check shares nothing with the implementation.
    rows = []
    for i in range(5):
        pi, ti = z_mid[i].tolist(), target[i].tolist()
        if kind == "mse":
            rows.append(sum((u - v) ** 2 for u, v in zip(pi, ti)) / len(pi))
            continue
        sp = [math.exp(u) / sum(math.exp(w) for w in pi) for u in pi]
        st = [math.exp(u) / sum(math.exp(w) for w in ti) for u in ti]
        if kind == "kl":
            rows.append(sum(q * math.log(q / p) for p, q in zip(sp, st)))
        elif kind == "js":
            m = [(p + q) / 2 for p, q in zip(sp, st)]
            rows.append(0.5 * sum(p * math.log(p / mm) for p, mm in zip(sp, m))
                        + 0.5 * sum(q * math.log(q / mm) for q, mm in zip(st, m)))
        else:
            dot = sum(u * v for u, v in zip(pi, ti))
            rows.append(1 - dot / (math.sqrt(sum(u * u for u in pi)) * math.sqrt(sum(v * v for v in ti))))
    expected = sum(rows) / len(rows)
    assert rpat_term(z, z_mid, z_adv, a, kind, "code").item() == pytest.approx(expected, rel=1e-8)
    # The paper scale compares the two difference quotients of eq. 3 with the same distance.
    u, v = (z_mid - z) / a, (z_adv - z_mid) / (1 - a)
    assert rpat_term(z, z_mid, z_adv, a, kind, "paper").item() == pytest.approx(
        _hand_distance(u, v, kind).item(), rel=1e-8)


def test_term_is_zero_when_perception_is_linear_along_delta():
    z, _, z_adv = _random_perceptions()
    for a in (0.2, 0.5):
        z_mid = (1 - a) * z + a * z_adv
        for kind in ("mse", "kl", "js", "cosine"):
            assert abs(rpat_term(z, z_mid, z_adv, a, kind).item()) < 1e-12


def test_alpha_beta_minus_plus_bounds_and_distribution():
    torch.manual_seed(0)
    lo = sample_alpha("beta-", 4000)
    hi = sample_alpha("beta+", 4000)
    assert lo.shape == (4000,) and bool((lo > 0).all()) and bool((lo <= 0.5).all())
    assert bool((hi >= 0.5).all()) and bool((hi < 1).all())
    # Per sample, not one draw for the batch; folded Beta(0.75, 0.75) has mean ~0.24 below 1/2.
    ref = np.random.default_rng(0).beta(0.75, 0.75, 200000)
    assert lo.std() > 0.05
    assert lo.mean().item() == pytest.approx(np.minimum(ref, 1 - ref).mean(), abs=0.01)
    assert hi.mean().item() == pytest.approx(np.maximum(ref, 1 - ref).mean(), abs=0.01)
    assert torch.equal(sample_alpha(0.2, 3), torch.full((3,), 0.2))
    for bad in (0, 1.0, -0.1, "beta", True):
        with pytest.raises(ConfigError, match="rp_alpha"):
            sample_alpha(bad, 3)


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ConfigError, match="rp_alpha"):
        get_method("pgd_at+rpat", rp_alpha=1.0)
    with pytest.raises(ConfigError, match="rp_distance"):
        get_method("pgd_at+rpat", rp_distance="l1")
    with pytest.raises(ConfigError, match="rp_distance"):
        get_method("pgd_at+rpat", rp_distanc="mse")
    with pytest.raises(ConfigError, match="'rpat'"):
        get_method("pgd_at+rpt")
    with pytest.raises(ConfigError, match="already has an RP term"):
        get_method("rpat_pp+rpat")
    with pytest.raises(ConfigError, match="rp_alpha"):
        get_method("rpat_pp", rp_alpha="beta-")


# -- proxies --------------------------------------------------------------------------------------
class ToyFeatureNet(AtkitModel):
    """3x4x4 inputs; third_to_last = tanh(A x), penultimate = tanh(B third), logits = C penultimate."""

    def __init__(self):
        super().__init__(num_classes=4)
        self.l3 = nn.Linear(48, 6)
        self.l2 = nn.Linear(6, 5)
        self.fc = nn.Linear(5, 4)
        with torch.no_grad():  # large weights: strongly curved along delta, so the RP term is far from zero
            for layer in (self.l3, self.l2, self.fc):
                layer.weight.normal_(0.0, 1.0)

    def _trunk(self, x, need_third):
        third = torch.tanh(self.l3(x.flatten(1)))
        return torch.tanh(self.l2(third)), third


def _toy_features(net, x):
    x = x.double().flatten(1)
    third = torch.tanh(x @ net.l3.weight.double().T + net.l3.bias.double())
    pen = torch.tanh(third @ net.l2.weight.double().T + net.l2.bias.double())
    return {"third_to_last": third, "penultimate": pen, "logits": pen @ net.fc.weight.double().T + net.fc.bias.double()}


def test_proxy_selection_uses_the_right_tensor():
    torch.manual_seed(4)
    net = ToyFeatureNet().train()
    batch = tiny_batch(b=6, num_classes=4)
    x_adv = (batch.x + 0.3 * torch.randn_like(batch.x)).clamp(0, 1)
    a = 0.3
    x_mid = batch.x + a * (x_adv - batch.x)
    values = {}
    for proxy in ("logits", "penultimate", "third_to_last"):
        method = _fixed_attack(get_method("pgd_at+rpat", rp_proxy=proxy, rp_alpha=a), x_adv)
        out = method.loss(net, batch, StepContext())
        f, f_mid, f_adv = (_toy_features(net, t)[proxy] for t in (batch.x, x_mid, x_adv))
        expected = _mse(f_mid, (1 - a) * f + a * f_adv)
        assert out.parts["rp"].item() == pytest.approx(expected.item(), rel=1e-5)
        values[proxy] = expected.item()
    assert min(values.values()) > 1e-3
    assert len({round(v, 8) for v in values.values()}) == 3  # the proxies really differ


# -- composition: loss = base loss + lam * term -----------------------------------------------------
class CurvedNet(nn.Module):
    """BatchNorm, then a saturating hidden layer: curved enough along delta for a clearly non-zero RP term."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.bn = nn.BatchNorm1d(48)
        self.hidden = nn.Linear(48, 16)
        self.fc = nn.Linear(16, num_classes)
        with torch.no_grad():
            self.hidden.weight.normal_(0.0, 1.0)

    def forward(self, x):
        return self.fc(torch.tanh(self.hidden(self.bn(x.flatten(1)))))


@pytest.mark.parametrize("base", BASES)
def test_composed_loss_is_base_loss_plus_term(base):
    torch.manual_seed(5)
    model = CurvedNet().train()
    batch = tiny_batch(b=8, two_views=base == "consistency_at")
    threat = {"eps": 0.3, "step_size": 0.1, "steps": 3}
    base_params = {"lam": 6.0} if base in ("trades", "mart") else {}
    torch.manual_seed(11)
    out_base = get_method(base, threat, **base_params).loss(copy.deepcopy(model), batch, StepContext())
    torch.manual_seed(11)
    composed = get_method(f"{base}+rpat", threat, rp_lambda=0.7, **base_params)
    out = composed.loss(copy.deepcopy(model), batch, StepContext())
    assert composed.name == f"{base}+rpat" and composed.start == get_method(base).start
    assert torch.equal(out.x_adv, out_base.x_adv)  # same seed, same attack: the base is unchanged
    x, x_adv = out.x, out.x_adv
    if base == "consistency_at":
        assert x.shape[0] == 2 * batch.x.shape[0]  # the stacked 2B batch
    z, z_mid, z_adv = (_train_logits(model, t) for t in (x, 0.5 * x + 0.5 * x_adv, x_adv))
    term = _mse(z_mid, 0.5 * z + 0.5 * z_adv)
    assert term.item() > 1e-2
    assert (out.loss - out_base.loss).item() == pytest.approx(0.7 * term.item(), rel=1e-4)
    assert out.parts["rp"].item() == pytest.approx(term.item(), rel=1e-4)
    assert out.loss.requires_grad


def _count_forwards(model):
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize("base,extra_separate,extra_stacked", [("pgd_at", 2, 1), ("trades", 1, 1), ("mart", 1, 1),
                                                               ("consistency_at", 2, 1)])
def test_base_forwards_are_reused(base, extra_separate, extra_stacked):
    batch = tiny_batch(b=6, two_views=base == "consistency_at")
    counts = {}
    for name, kw in ((base, {}), (f"{base}+rpat", {}), (f"{base}+rpat", {"rp_forward": "stacked"})):
        model = TinyNet().train()
        calls = _count_forwards(model)
        get_method(name, {"steps": 2}, **kw).loss(model, batch, StepContext())
        counts[(name, kw.get("rp_forward"))] = len(calls)
    assert counts[(f"{base}+rpat", None)] - counts[(base, None)] == extra_separate
    assert counts[(f"{base}+rpat", "stacked")] - counts[(base, None)] == extra_stacked


def test_stacked_forward_matches_a_concatenated_forward():
    torch.manual_seed(6)
    model = TinyNet().train()
    batch = tiny_batch(b=6)
    x_adv = (batch.x + 0.05 * torch.randn_like(batch.x)).clamp(0, 1)
    out = _fixed_attack(get_method("pgd_at+rpat", rp_forward="stacked"), x_adv).loss(
        copy.deepcopy(model), batch, StepContext())
    x_mid = 0.5 * batch.x + 0.5 * x_adv
    z_mid, z = _train_logits(model, torch.cat([x_mid, batch.x])).split(6)
    z_adv = _train_logits(model, x_adv)
    assert out.parts["rp"].item() == pytest.approx(_mse(z_mid, 0.5 * z + 0.5 * z_adv).item(), rel=1e-5)


def test_composed_methods_are_listed():
    d = get_method("trades+rpat").describe()
    assert d["name"] == "trades+rpat" and {"lam", "rp_lambda", "rp_alpha", "rp_distance"} <= set(d["hyperparameters"])
    assert get_method("consistency_at+rpat").needs_two_views
    listed = {m["name"]: m for m in describe_methods()}
    assert {"rebat", "rpat_pp"} <= set(listed) and "rp_scale" in listed["<base>+rpat"]["hyperparameters"]


def test_cli_lists_the_add_on_and_its_hyperparameters(capsys):
    from atkit.workbench.cli import main

    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    assert "<base>+rpat" in text and "rp_alpha" in text and "rp_proxy" in text and "rpat_pp" in text


# -- ReBAT / RPAT++ ---------------------------------------------------------------------------------
def _fake_trainer(model, epochs, schedule="rebat"):
    config = RunConfig.from_dict({"schedule": schedule, "epochs": epochs})
    return SimpleNamespace(config=config, model=model)


def _perturbed_copy(model, scale=0.3, seed=9):
    g = torch.Generator().manual_seed(seed)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def test_wa_start_and_strong_attack_scale_like_lr_milestones():
    method = get_method("rebat", strong_late_attack=True)
    method.setup(_fake_trainer(TinyNet(), epochs=20))  # 200-epoch schedule shortened 10x
    ctx = lambda e, s: StepContext(epoch=e, step=s, epochs=20, steps_per_epoch=10)  # noqa: E731
    assert not method.wa_active(ctx(10, 4)) and method.wa_active(ctx(10, 5))  # 105/10 = 10.5
    assert not method.strong_attack_active(ctx(9, 9)) and method.strong_attack_active(ctx(10, 0))
    # ... which is where the trainer's scaled schedule has its first lr decay ("after the first lr decay").
    sched = RunConfig.from_dict({"schedule": "rebat", "epochs": 20}).resolved_schedule()
    assert sched.multiplier(9.99) == 1.0 and sched.multiplier(10.0) == pytest.approx(0.5)
    full = get_method("rebat")
    full.setup(_fake_trainer(TinyNet(), epochs=200))
    assert not full.wa_active(ctx(104, 9)) and full.wa_active(ctx(105, 0))


def test_wa_equals_online_before_wa_start_and_lags_after():
    torch.manual_seed(7)
    model = TinyNet().train()
    method = get_method("rebat", wa_start=2, reference_epochs=4)
    method.setup(_fake_trainer(model, epochs=4))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = tiny_batch(b=8)

    def step(epoch):
        loss = nn.functional.cross_entropy(model(batch.x), batch.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(model, StepContext(epoch=epoch, step=0, epochs=4, steps_per_epoch=1))

    for epoch in (0, 1):
        step(epoch)
        wa = method.averaged_model().state_dict()
        assert all(torch.equal(v, wa[k]) for k, v in model.state_dict().items())
    before = {k: v.clone() for k, v in method.averaged_model().state_dict().items()}
    step(2)
    wa = method.averaged_model().state_dict()
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            expected = 0.999 * before[k].double() + 0.001 * v.double()
            assert torch.allclose(wa[k].double(), expected, rtol=0, atol=1e-6), k
        else:
            assert torch.equal(wa[k], v), k  # num_batches_tracked is copied
    assert not torch.equal(wa["fc.weight"], model.fc.weight)


def test_boat_term_formula():
    torch.manual_seed(8)
    model = TinyNet().train()
    batch = tiny_batch(b=8)
    x_adv = (batch.x + 0.05 * torch.randn_like(batch.x)).clamp(0, 1)
    method = _fixed_attack(get_method("rebat", boat_lambda=1.5, wa_start=1, reference_epochs=2), x_adv)
    method.setup(_fake_trainer(model, epochs=2))
    method.wa.module.load_state_dict(_perturbed_copy(model).state_dict())
    z_adv = _train_logits(model, x_adv)
    ce = -torch.log(_softmax(z_adv)[torch.arange(8), batch.y]).mean()
    early = method.loss(copy.deepcopy(model), batch, StepContext(epoch=0, epochs=2))
    assert early.loss.item() == pytest.approx(ce.item(), rel=1e-5) and early.parts["boat"].item() == 0
    with torch.no_grad():
        z_wa = method.wa.module.eval()(x_adv).double()
    boat = _kl_rows(_softmax(z_wa), _softmax(z_adv)).mean()  # KL(p_wa(x') || p(x'))
    late = method.loss(copy.deepcopy(model), batch, StepContext(epoch=1, epochs=2))
    assert boat.item() > 1e-3
    assert late.parts["boat"].item() == pytest.approx(boat.item(), rel=1e-4)
    assert late.loss.item() == pytest.approx((ce + 1.5 * boat).item(), rel=1e-5)


@pytest.mark.parametrize("boat_lambda", [None, 1.0])
def test_rpat_pp_term_formula(boat_lambda):
    torch.manual_seed(9)
    model = TinyNet().train()
    batch = tiny_batch(b=8)
    x_adv = (batch.x + 0.05 * torch.randn_like(batch.x)).clamp(0, 1)
    kw = {} if boat_lambda is None else {"boat_lambda": boat_lambda}
    method = _fixed_attack(get_method("rpat_pp", wa_start=1, reference_epochs=2, **kw), x_adv)
    method.setup(_fake_trainer(model, epochs=2))
    method.wa.module.load_state_dict(_perturbed_copy(model).state_dict())
    wa = method.wa.module.eval()
    with torch.no_grad():
        b = wa(batch.x).double()
        m = wa(batch.x + 0.5 * (x_adv - batch.x)).double()
        z_wa_adv = wa(x_adv).double()
    z_adv = _train_logits(model, x_adv)
    ce = -torch.log(_softmax(z_adv)[torch.arange(8), batch.y]).mean()
    # F.kl_div(log_softmax(z(x')/2), softmax(m - b/2), batchmean) = KL(softmax(m - b/2) || softmax(z(x')/2)).
    q, p = _softmax(m - 0.5 * b), _softmax(0.5 * z_adv)
    rp = (q * (torch.log(q) - torch.log(p))).sum() / 8
    boat = _kl_rows(_softmax(z_wa_adv), _softmax(z_adv)).mean()
    out = method.loss(copy.deepcopy(model), batch, StepContext(epoch=1, epochs=2))
    assert rp.item() > 1e-3
    assert out.parts["rp"].item() == pytest.approx(rp.item(), rel=1e-4)
    expected = ce + rp + (boat_lambda or 0.0) * boat  # released RPAT++: the RP term replaces BoAT
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    early = method.loss(copy.deepcopy(model), batch, StepContext(epoch=0, epochs=2))
    assert early.loss.item() == pytest.approx(ce.item(), rel=1e-5)


def test_strong_late_attack_switches_budget():
    seen = []
    method = get_method("rebat", strong_late_attack=True, reference_epochs=4, strong_start=2)
    method.setup(_fake_trainer(TinyNet(), epochs=4))
    method.attack = lambda model, x, y, **kw: (seen.append(kw), x)[1]
    assert method.bn_mode == "train" and method.start == "uniform"
    batch = tiny_batch(b=4)
    method.loss(TinyNet().train(), batch, StepContext(epoch=1, epochs=4))
    method.loss(TinyNet().train(), batch, StepContext(epoch=2, epochs=4))
    assert "eps" not in seen[0]
    assert seen[1]["eps"] == pytest.approx(10 / 255) and seen[1]["steps"] == 12


# -- training -------------------------------------------------------------------------------------
def _tiny_config(tmp_path, method, method_params=None, epochs=1, **kw):
    d = dict(method=method, method_params=method_params or {}, dataset="synthetic",
             data={"n_train": 64, "n_test": 32, "image_size": 16}, model="small_cnn",
             model_params={"width": 8, "hidden": 32}, batch_size=8, schedule="constant", epochs=epochs,
             max_steps_per_epoch=2,
             threat={"steps": 2}, out_dir=str(tmp_path / "runs"),
             eval={"n_test": 8, "pgd_steps": 1, "final_attacks": ["clean"]})
    d.update(kw)
    return RunConfig.from_dict(d)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name,params", [(f"{b}+rpat", {}) for b in BASES] + [
    ("pgd_at+rpat", {"rp_proxy": "third_to_last", "rp_distance": "js", "rp_alpha": "beta+"}),
    ("rebat", {"wa_start": 1, "reference_epochs": 2, "strong_late_attack": True, "strong_start": 1,
               "strong_steps": 3}),
    ("rpat_pp", {"wa_start": 1, "reference_epochs": 2, "boat_lambda": 1.0})])
def test_methods_train_and_change_weights(tmp_path, name, params):
    epochs = 2 if name in ("rebat", "rpat_pp") else 1
    trainer = Trainer.new(_tiny_config(tmp_path, name, params, epochs=epochs), progress=False)
    before = _weights(trainer.model)
    trainer.fit()
    assert trainer.status == "finished"
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].dtype.is_floating_point)
    last = trainer.history[-1]
    assert math.isfinite(last["train_loss"])
    assert ("train_rp" in last) == (name != "rebat")
    if name in ("rebat", "rpat_pp"):
        assert "wa_test_clean_acc" in last and last["train_boat"] > 0
        assert trainer.final_model() is trainer.method.averaged_model()
        best = torch.load(trainer.run_dir / "checkpoints" / "best.pt", weights_only=False)
        assert best["averaged_model"] is not None
        assert trainer.best_model() is not None
        wa = load_model(trainer.run_dir / "checkpoints" / "last.pt", which="ema")
        assert torch.equal(wa.state_dict()["fc.weight"], trainer.method.averaged_model().state_dict()["fc.weight"])


def test_resume_with_weight_average_is_exact(tmp_path):
    params = {"wa_start": 0.5, "reference_epochs": 2, "wa_decay": 0.9}
    straight = Trainer.new(_tiny_config(tmp_path, "rpat_pp", params, epochs=2), progress=False)
    straight.fit()

    partial = Trainer.new(_tiny_config(tmp_path, "rpat_pp", params, epochs=2), progress=False)
    partial.epochs = 1  # stop after the first epoch, as a killed run would have
    partial.fit()
    saved = torch.load(partial.run_dir / "checkpoints" / "last.pt", weights_only=False)
    wa_saved, online_saved = saved["method"]["wa"], saved["model"]
    assert not torch.equal(wa_saved["fc.weight"], online_saved["fc.weight"])  # the WA already lags

    resumed = Trainer.resume(partial.run_dir, progress=False)
    assert resumed.epoch == 1
    assert torch.equal(resumed.method.averaged_model().state_dict()["fc.weight"], wa_saved["fc.weight"])
    resumed.fit()
    for k, v in _weights(straight.model).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for k, v in straight.method.averaged_model().state_dict().items():
        assert torch.equal(v, resumed.method.averaged_model().state_dict()[k]), k
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]
    assert [r["wa_test_pgd1_acc"] for r in straight.history] == [r["wa_test_pgd1_acc"] for r in resumed.history]


# -- parameter files --------------------------------------------------------------------------------
PAPER = REPO / "parameters" / "paper"
# The FAIT/MER paper's TRADES baseline (fait100) is trades_fait100_cifar10_resnet18.yaml, not one of these.
MINE_NAMES = ([f"{m}_cifar10_resnet18{s}.yaml" for m in (*BASES, *(f"{b}+rpat" for b in BASES)) for s in ("", "_l2")]
              + [f"{m}_cifar10_{v}.yaml" for m in ("rebat", "rpat_pp")
                 for v in ("preact_resnet18", "preact_resnet18_l2", "preact_resnet18_strong", "wrn34_10")])
MINE = [PAPER / n for n in MINE_NAMES]


def test_parameter_files_exist():
    missing = [p.name for p in MINE if not p.is_file()]
    assert not missing


@pytest.mark.parametrize("path", MINE, ids=lambda p: p.name)
def test_parameter_files_load(path):
    cfg = load_config(path)
    method = cfg.build_method()
    assert cfg.dataset == "cifar10" and cfg.threat_model().norm == ("l2" if path.stem.endswith("_l2") else "linf")
    if cfg.method in ("rebat", "rpat_pp"):
        assert cfg.schedule == "rebat" and cfg.resolved_epochs() == 200 and cfg.eval.pgd_steps == 10
        assert method.bn_mode == "train" and method.params.wa_start == 105
        assert method.params.strong_late_attack == path.stem.endswith("_strong")
    else:
        assert cfg.schedule == "pang110" and cfg.model == "resnet18" and cfg.eval.pgd_steps == 20
        if cfg.method.endswith("+rpat"):
            assert method.params.rp_lambda == 1.0 and method.params.rp_alpha == 0.5


def test_registered():
    assert {"rebat", "rpat_pp"} <= set(METHODS)
