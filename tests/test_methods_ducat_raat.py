"""DUCAT and RAAT / RAAT++: losses recomputed by hand, partitions, head growth,
targeted evaluation, the two DUCAT evaluation protocols, and a few training steps of every variant."""
import math

import pytest
import torch
import torch.nn as nn

from atkit.methods import StepContext, get_method
from atkit.models.base import AtkitModel
from atkit.methods.ducat import expand_head_state, random_targets, soft_label, targeted_eval
from atkit.methods.raat import boundary_mask, reduced_adversarial
from atkit.core.utils import ConfigError
from helpers import (
    fixed_attack as _fixed_attack, no_grad_logits as _logits, ref_ce as _ce, ref_js_rows as _js_rows,
    ref_kl_rows as _kl_rows, ref_log_softmax as _log_softmax, ref_softmax as _softmax, tiny_batch, TinyNet)

C = 5


class TinyDummyNet(nn.Module):
    """Linear 2C head on flattened 3x4x4 images (BatchNorm so that modes matter), dummy of k is k + C."""

    def __init__(self, num_classes: int = C) -> None:
        super().__init__()
        self.num_classes, self.dummy_classes, self.num_outputs = num_classes, True, 2 * num_classes
        self.bn = nn.BatchNorm1d(48)
        self.fc = nn.Linear(48, 2 * num_classes)

    def forward(self, x):
        return self.fc(self.bn(x.flatten(1)))


# ------------------------------------------------------------------ independent formula pieces
def _ctx(epoch=200, epochs=130):
    return StepContext(epoch=epoch, epochs=epochs)


def _ducat_ce(z, z_adv, y, alpha, beta1, beta2):
    """alpha * CE(z(x), l(y, beta1)) + (1 - alpha) * CE(z(x'), l(y, 1 - beta2)), written per term."""
    ls, ls_adv = _log_softmax(z), _log_softmax(z_adv)
    r = torch.arange(len(y))
    clean = -(beta1 * ls[r, y] + (1 - beta1) * ls[r, y + C])
    adv = -((1 - beta2) * ls_adv[r, y] + beta2 * ls_adv[r, y + C])
    return alpha * clean.mean() + (1 - alpha) * adv.mean()


@pytest.fixture
def dummy_setup():
    torch.manual_seed(1)
    model = TinyDummyNet().eval()  # eval: every forward is independent of the batch it is in
    batch = tiny_batch(b=8, num_classes=C, two_views=True)
    x_adv = (batch.x + 0.03 * torch.randn_like(batch.x)).clamp(0, 1)
    return model, batch, x_adv


# =============================================================================== DUCAT
def test_soft_label_by_hand():
    y = torch.tensor([0, 2])
    expected = torch.tensor([[0.75, 0, 0, 0.25, 0, 0],
                             [0, 0, 0.75, 0, 0, 0.25]])
    assert torch.allclose(soft_label(y, 0.75, 3), expected)
    # The adversarial target of the defaults, l(y, 1 - beta2) with beta2 = 1, is all on the dummy.
    assert torch.allclose(soft_label(y, 0.0, 3), torch.tensor([[0., 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]]))


def test_pgd_at_ducat_window_loss(dummy_setup):
    model, batch, x_adv = dummy_setup
    method = _fixed_attack(get_method("pgd_at+ducat", alpha=0.3, beta1=0.8, beta2=0.9), x_adv)
    out = method.loss(model, batch, _ctx(epoch=105))
    z, z_adv = _logits(model, batch.x), _logits(model, x_adv)
    expected = _ducat_ce(z, z_adv, batch.y, 0.3, 0.8, 0.9)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.parts["ducat_window"].item() == 1.0


def test_trades_mart_consistency_ducat_window_keep_their_regularisers(dummy_setup):
    model, batch, x_adv = dummy_setup
    y = batch.y
    z, z_adv = _logits(model, batch.x), _logits(model, x_adv)
    p, p_adv = _softmax(z), _softmax(z_adv)
    ducat = _ducat_ce(z, z_adv, y, 0.5, 0.75, 1.0)

    out = _fixed_attack(get_method("trades+ducat", lam=6.0), x_adv).loss(model, batch, _ctx())
    assert out.loss.item() == pytest.approx((ducat + 6.0 * _kl_rows(p, p_adv).mean()).item(), rel=1e-5)
    bare = _fixed_attack(get_method("trades+ducat", base_regularizer=False), x_adv).loss(model, batch, _ctx())
    assert bare.loss.item() == pytest.approx(ducat.item(), rel=1e-5)

    out = _fixed_attack(get_method("mart+ducat", lam=6.0), x_adv).loss(model, batch, _ctx())
    # MART's margin over all 2C outputs except y (the dummy y + C included, as in the released code).
    margin = torch.tensor([-math.log(1.0001 - max(p_adv[i, k].item() for k in range(2 * C) if k != y[i]))
                           for i in range(len(y))], dtype=torch.float64)
    weighted_kl = (_kl_rows(p, p_adv) * (1 - p[torch.arange(len(y)), y])).mean()
    assert out.loss.item() == pytest.approx((ducat + margin.mean() + 6.0 * weighted_kl).item(), rel=1e-5)

    xs = torch.cat([batch.x, batch.x2])
    xs_adv = (xs + 0.03 * torch.randn_like(xs)).clamp(0, 1)
    out = _fixed_attack(get_method("consistency_at+ducat", lam=1.0), xs_adv).loss(model, batch, _ctx())
    zs, zs_adv, y2 = _logits(model, xs), _logits(model, xs_adv), torch.cat([y, y])
    js = _js_rows(_softmax(zs_adv[:8] / 0.5), _softmax(zs_adv[8:] / 0.5)).mean()
    assert out.loss.item() == pytest.approx((_ducat_ce(zs, zs_adv, y2, 0.5, 0.75, 1.0) + js).item(), rel=1e-5)
    assert out.y.shape[0] == 16


def test_before_window_losses(dummy_setup):
    model, batch, x_adv = dummy_setup
    z, z_adv = _logits(model, batch.x), _logits(model, x_adv)
    kl = _kl_rows(_softmax(z), _softmax(z_adv)).mean()
    # Released code: the classification term is CE(z(x'), y) on the 2C outputs, even for TRADES.
    out = _fixed_attack(get_method("trades+ducat"), x_adv).loss(model, batch, _ctx(epoch=104))
    assert out.parts["ducat_window"].item() == 0.0
    assert out.loss.item() == pytest.approx((_ce(z_adv, batch.y).mean() + 6.0 * kl).item(), rel=1e-5)
    # "base": TRADES's own CE(z(x), y) + lam KL with labels y on the 2C outputs.
    method = get_method("trades+ducat", before_window="base")
    method.base.attack = lambda model, x, y, **kw: x_adv
    out = method.loss(model, batch, _ctx(epoch=104))
    assert out.loss.item() == pytest.approx((_ce(z, batch.y).mean() + 6.0 * kl).item(), rel=1e-5)
    out = _fixed_attack(get_method("pgd_at+ducat"), x_adv).loss(model, batch, _ctx(epoch=0))
    assert out.loss.item() == pytest.approx(_ce(z_adv, batch.y).mean().item(), rel=1e-5)


def test_window_start_scales_with_run_length():
    method = get_method("pgd_at+ducat")  # t = 105 of 130
    assert not method.in_window(StepContext(epoch=104, epochs=130))
    assert method.in_window(StepContext(epoch=105, epochs=130))
    # A 26-epoch run keeps DUCAT on the same final fraction: t = 105 * 26 / 130 = 21.
    assert not method.in_window(StepContext(epoch=20, epochs=26)) and method.in_window(StepContext(epoch=21, epochs=26))
    custom = get_method("pgd_at+ducat", start_epoch=100, reference_epochs=110)
    assert custom.window_start(110) == 100 and custom.window_start(55) == 50


def test_hard_label_toy_case_targets(dummy_setup):
    model, batch, x_adv = dummy_setup
    out = _fixed_attack(get_method("pgd_at+ducat", hard_labels=True, beta1=0.3, beta2=0.2), x_adv).loss(
        model, batch, _ctx())
    z, z_adv = _logits(model, batch.x), _logits(model, x_adv)
    # Clean target e_y || 0, adversarial target 0 || e_y (DUCAT, Fig. 4), whatever beta1 / beta2 say.
    expected = 0.5 * _ce(z, batch.y).mean() + 0.5 * _ce(z_adv, batch.y + C).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ducat_config_errors():
    with pytest.raises(ConfigError, match="pgd_at"):
        get_method("standard+ducat")
    with pytest.raises(ConfigError, match="beta1"):
        get_method("pgd_at+ducat", beta1=1.5)
    with pytest.raises(ConfigError, match="before_window"):
        get_method("pgd_at+ducat", before_window="plain")
    with pytest.raises(ConfigError, match="lam"):
        get_method("pgd_at+ducat", lam=1.0)  # PGD-AT has no lam; the error names the bad key
    m = get_method("trades+ducat", lam=3.0, beta2=0.9, attack_bn_mode="train")
    assert m.base.params.lam == 3.0 and m.params.beta2 == 0.9 and m.bn_mode == "train" and m.start == "normal"
    assert m.needs_dummy_classes and get_method("consistency_at+ducat").needs_two_views


def test_expand_head_state_copy_and_random():
    torch.manual_seed(0)
    ckpt = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3), "body.weight": torch.randn(4, 4),
            "module.fc.weight": torch.randn(3, 4)}
    model_sd = {"fc.weight": torch.randn(6, 4), "fc.bias": torch.randn(6), "body.weight": torch.randn(4, 4)}
    grown = expand_head_state(ckpt, model_sd, 3, "copy")
    assert torch.equal(grown["fc.weight"], torch.cat([ckpt["fc.weight"], ckpt["fc.weight"]]))
    assert torch.equal(grown["fc.bias"][3:], ckpt["fc.bias"]) and torch.equal(grown["body.weight"], ckpt["body.weight"])
    assert grown["module.fc.weight"].shape == (6, 4)  # weight-average state dicts carry a "module." prefix
    grown = expand_head_state(ckpt, model_sd, 3, "random")
    assert torch.equal(grown["fc.weight"][:3], ckpt["fc.weight"])
    assert torch.equal(grown["fc.weight"][3:], model_sd["fc.weight"][3:])


TINY_RUN = dict(dataset="synthetic", data={"n_train": 64, "n_test": 32, "image_size": 16}, model="small_cnn",
                model_params={"width": 8, "hidden": 32}, batch_size=32, schedule="constant", epochs=1,
                max_steps_per_epoch=2, threat={"steps": 2},
                eval={"n_test": 16, "pgd_steps": 2, "final_attacks": ["clean"]})


def _trainer(tmp_path, **kw):
    from atkit.training.trainer import Trainer

    cfg = dict(TINY_RUN, out_dir=str(tmp_path / "runs"))
    cfg.update(kw)
    return Trainer.new(cfg, progress=False)


@pytest.mark.parametrize("head_init", ["copy", "random"])
def test_fine_tuning_grows_a_c_class_checkpoint(tmp_path, head_init):
    robust = _trainer(tmp_path, method="pgd_at")
    robust.train_epoch(0)
    robust.save_checkpoint()
    ckpt = robust.ckpt_dir / "last.pt"
    ducat = _trainer(tmp_path, method="pgd_at+ducat", init_checkpoint=str(ckpt), epochs=3, start_epoch=2,
                     method_params={"head_init": head_init})
    fresh = _trainer(tmp_path, method="pgd_at+ducat", epochs=3)  # same seed: the fresh 2C initialisation
    c = robust.num_classes
    w_c, w_2c = robust.model.fc.weight, ducat.model.fc.weight
    assert ducat.model.num_outputs == 2 * c and ducat.epoch == 2
    assert torch.equal(w_2c[:c], w_c)
    assert torch.equal(w_2c[c:], w_c if head_init == "copy" else fresh.model.fc.weight[c:])
    for name, p in robust.model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(ducat.model.state_dict()[name], p), name
    if head_init == "copy":  # the doubled model predicts exactly what the checkpoint predicted
        x = torch.rand(16, 3, 16, 16)
        robust.model.eval(), ducat.model.eval()
        from atkit.models import predict_labels

        with torch.no_grad():
            assert torch.equal(predict_labels(ducat.model(x), c), robust.model(x).argmax(1))


def test_random_targets_lie_in_the_right_half():
    y = torch.arange(C).repeat(40)
    g = torch.Generator().manual_seed(0)
    orig = random_targets(y, C, "original", g)
    dummy = random_targets(y, C, "dummy", g)
    assert ((orig >= 0) & (orig < C)).all() and (orig != y).all()
    assert ((dummy >= C) & (dummy < 2 * C)).all() and (dummy != y + C).all()
    assert len(set(orig.tolist())) == C and len(set(dummy.tolist())) == C  # every other class gets drawn


def test_targeted_eval():
    torch.manual_seed(4)
    model = TinyDummyNet().eval()
    x, y = torch.rand(40, 3, 4, 4), torch.randint(0, C, (40,))
    with torch.no_grad():
        pred = model(x).argmax(1)
    clean = 100.0 * float(((pred % C) == y).float().mean())
    # No step, no start: accuracy by projected prediction of the clean images.
    assert targeted_eval(model, x, y, steps=0, random_start=None) == pytest.approx(clean)
    acc, targets = targeted_eval(model, x, y, target_kind="dummy", eps=1.0, step_size=0.2, steps=20,
                                 return_targets=True)
    assert ((targets >= C) & (targets < 2 * C)).all()
    assert acc < clean  # with the whole image space as budget the attack reaches other classes
    with pytest.raises(ConfigError, match="dummy"):
        targeted_eval(TinyNet(C), x, y, target_kind="dummy", num_classes=C)


def test_ducat_variants_train_and_change_weights(tmp_path):
    for name, params in [("pgd_at+ducat", {"start_epoch": 0}), ("trades+ducat", {"start_epoch": 0}),
                         ("mart+ducat", {"start_epoch": 0}), ("consistency_at+ducat", {"start_epoch": 0}),
                         ("mart+ducat", {})]:  # the last one stays before the window
        trainer = _trainer(tmp_path, method=name, method_params=params)
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        record = trainer.train_epoch(0)
        assert math.isfinite(record["train_loss"]), name
        assert record["train_ducat_window"] == (1.0 if params else 0.0)
        after = trainer.model.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point()), name


class DummyMLP(AtkitModel):
    """A two-layer MLP with a 2C head and no BatchNorm: trains in seconds, evaluates like the big nets."""

    def __init__(self, num_classes: int, size: int = 8, hidden: int = 256) -> None:
        super().__init__(num_classes, dummy_classes=True)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, self.num_outputs)
        self.penultimate_dim = self.third_to_last_dim = hidden

    def _trunk(self, x, need_third):
        h = self.body(x)
        return h, h


@pytest.fixture
def one_thread():
    # A thousand steps of a tiny MLP: one thread is faster than two contending ones for matrices this small.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_adaptive_protocol_is_not_more_robust_than_published(one_thread):
    from atkit.attacks import pgd
    from atkit.data import load_dataset
    from atkit.evaluation import evaluate
    from helpers import TinyBatch

    k, steps = 4, 1000
    data = load_dataset("synthetic", n_train=512, n_test=16, image_size=8, num_classes=k)
    x_all, y_all = data.train_x.float() / 255, data.train_y
    torch.manual_seed(0)
    model = DummyMLP(k)
    # As in the paper: the base method (PGD-AT) first, then the DUCAT window (epoch 1 of a 2-epoch run).
    method = get_method("pgd_at+ducat", start_epoch=1, reference_epochs=2, threat={"steps": 3, "step_size": 4 / 255})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(y_all), (64,), generator=g)
        ctx = StepContext(epoch=int(step >= steps // 2), epochs=2)
        out = method.loss(model.train(), TinyBatch(x_all[idx], y_all[idx]), ctx)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    # Training images: the question is how each protocol scores one fixed model, not generalisation.
    x, y = x_all[:256], y_all[:256]
    res = evaluate(model, x, y, attacks=("clean", "pgd10"), batch_size=256, seed=0).protocols
    published = res["published"].accuracy
    assert published["clean"] > 60.0
    # The comparison is meaningful because the model behaves as DUCAT intends: clean images in real
    # classes, raw-logit PGD-10 examples pushed into dummy classes (where projection rescues them).
    x_adv = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=10)
    with torch.no_grad():
        assert (model(x).argmax(1) >= k).float().mean() < 0.5 < (model(x_adv).argmax(1) >= k).float().mean()
    for protocol in ("adaptive", "adaptive_max"):
        assert res[protocol].accuracy["clean"] == published["clean"]
        assert res[protocol].accuracy["pgd10"] <= published["pgd10"], protocol


# =============================================================================== RAAT
def test_boundary_mask_by_hand():
    y = torch.tensor([0, 0, 0, 0])
    right, wrong = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])
    clean = torch.stack([wrong, right, right, right])
    adv = torch.stack([wrong, wrong, wrong, right])
    reduced = torch.stack([wrong, right, wrong, wrong])
    # clean wrong -> never boundary; x' wrong but x'' right -> not; all three -> boundary;
    # x' right (however x'' ends up) -> not (released code's extra condition).
    assert boundary_mask(clean, adv, reduced, y).tolist() == [False, False, True, False]
    # With num_classes the prediction is projected (dummy heads): output 2 is the dummy of class 0.
    dummy_right = torch.tensor([0.0, 0.0, 3.0, 0.0])
    dummy_wrong = torch.tensor([0.0, 0.0, 0.0, 3.0])
    mask = boundary_mask(dummy_right[None], dummy_wrong[None], dummy_wrong[None], torch.tensor([0]), num_classes=2)
    assert mask.tolist() == [True]


def test_reduced_adversarial_scales_the_perturbation():
    x, x_adv = torch.rand(4, 3, 4, 4), torch.rand(4, 3, 4, 4)
    assert torch.allclose(reduced_adversarial(x, x_adv, 0.1) - x, 0.1 * (x_adv - x), atol=1e-6)
    torch.manual_seed(0)
    model = TinyNet().eval()
    batch = tiny_batch(b=8)
    method = get_method("raat", eta_mode="ball", eta=0.25, dicar=False, threat={"steps": 3})
    x_red = method.reduced(model, batch.x, batch.y, None)
    assert (x_red - batch.x).abs().max() <= 0.25 * 8 / 255 + 1e-6


@pytest.fixture
def raat_setup():
    """A linear model and a far-away fixed x' so that boundary, non-boundary and misclassified samples all occur."""
    torch.manual_seed(5)
    model = TinyNet().eval()
    batch = tiny_batch(b=48, two_views=True, seed=3)
    xs = torch.cat([batch.x, batch.x2])
    x_adv = (xs + 0.8 * torch.randn_like(xs)).clamp(0, 1)
    return model, batch, xs, x_adv


def _partition(model, xs, x_adv, y, eta):
    z, z_adv, z_red = (_logits(model, v) for v in (xs, x_adv, xs + eta * (x_adv - xs)))
    ok = z.argmax(1) == y
    return ok, ok & (z_adv.argmax(1) != y) & (z_red.argmax(1) != y)


def test_raat_bound_and_dicar_terms(raat_setup):
    model, batch, xs, x_adv = raat_setup
    y2, b, eta = torch.cat([batch.y, batch.y]), batch.x.shape[0], 0.9
    ok, boundary = _partition(model, xs, x_adv, y2, eta)
    assert 0 < int(boundary.sum()) < int(ok.sum()) < len(y2)  # boundary, non-boundary and misclassified all occur
    x_red = xs + eta * (x_adv - xs)
    train_x = torch.where(boundary[:, None, None, None], x_red, x_adv)
    ce = _ce(_logits(model, train_x), y2).mean()

    out = _fixed_attack(get_method("raat", eta=eta, dicar=False, two_views=True), x_adv).loss(model, batch, _ctx())
    assert out.loss.item() == pytest.approx(ce.item(), rel=1e-5)
    assert torch.equal(out.extras["boundary"], boundary)
    assert out.parts["boundary_frac"].item() == pytest.approx(boundary.float().mean().item())

    # DICAR (code form): r = max(0.3, 0.7) = 0.7, input r x1' + (1 - r) x2', target softmax of the
    # same mix of the clean views' logits, JS at T = 0.5 over images whose two views are clean-correct.
    r, idx = 0.7, (ok[:b] & ok[b:]).nonzero().flatten()
    assert idx.numel() > 0
    z_mix = _logits(model, r * x_adv[:b][idx] + (1 - r) * x_adv[b:][idx])
    z1, z2 = _logits(model, xs[:b])[idx], _logits(model, xs[b:])[idx]
    js = _js_rows(_softmax(z_mix / 0.5), _softmax((r * z1 + (1 - r) * z2) / 0.5)).mean()
    out = _fixed_attack(get_method("raat", eta=eta, mix_lambda=0.3, lam=2.0), x_adv).loss(model, batch, _ctx())
    assert out.loss.item() == pytest.approx((ce + 2.0 * js).item(), rel=1e-5)
    # Probability-space target (the option of docs/methods.md, RAAT) on the same draw.
    js_p = _js_rows(_softmax(z_mix / 0.5), r * _softmax(z1 / 0.5) + (1 - r) * _softmax(z2 / 0.5)).mean()
    out = _fixed_attack(get_method("raat", eta=eta, mix_lambda=0.3, dicar_target_space="probs"), x_adv).loss(
        model, batch, _ctx())
    assert out.loss.item() == pytest.approx((ce + js_p).item(), rel=1e-5)
    # Paper form (Table 4): beta = 0.3 as drawn, input beta x1' + (1 - beta) x1, target in probabilities.
    beta = 0.3
    z_mix = _logits(model, beta * x_adv[:b][idx] + (1 - beta) * xs[:b][idx])
    js_paper = _js_rows(_softmax(z_mix / 0.5), beta * _softmax(z1 / 0.5) + (1 - beta) * _softmax(z2 / 0.5)).mean()
    out = _fixed_attack(get_method("raat", eta=eta, mix_lambda=0.3, dicar_form="paper"), x_adv).loss(
        model, batch, _ctx())
    assert out.loss.item() == pytest.approx((ce + js_paper).item(), rel=1e-5)


def test_raat_switches_off_is_pgd_at(raat_setup):
    model, batch, xs, x_adv = raat_setup
    one_view = tiny_batch(b=48, seed=3)
    x_adv1 = x_adv[:48]
    plain = _fixed_attack(get_method("raat", bound=False, dicar=False), x_adv1)
    assert not plain.needs_two_views
    out = plain.loss(model, one_view, _ctx())
    reference = _fixed_attack(get_method("pgd_at"), x_adv1).loss(model, one_view, _ctx())
    assert out.loss.item() == pytest.approx(reference.loss.item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(_ce(_logits(model, x_adv1), one_view.y).mean().item(), rel=1e-5)
    # Switching BOUND on changes the loss exactly when boundary samples exist (they do here).
    bound = _fixed_attack(get_method("raat", eta=0.9, dicar=False), x_adv1).loss(model, one_view, _ctx())
    assert bound.extras["boundary"].any() and bound.loss.item() != pytest.approx(out.loss.item(), rel=1e-4)


def test_raat_pp_formula(raat_setup):
    model, batch, xs, x_adv = raat_setup
    y2, b, eta = torch.cat([batch.y, batch.y]), batch.x.shape[0], 0.9
    ok, boundary = _partition(model, xs, x_adv, y2, eta)
    train_x = torch.where(boundary[:, None, None, None], xs + eta * (x_adv - xs), x_adv)
    z_train, z, z_adv = _logits(model, train_x), _logits(model, xs), _logits(model, x_adv)
    p_train, p, p_adv = _softmax(z_train), _softmax(z), _softmax(z_adv)
    bce = torch.tensor([_ce(z_train[i:i + 1], y2[i:i + 1])[0].item()
                        - math.log(1.0001 - max(p_train[i, k].item() for k in range(C) if k != y2[i]))
                        for i in range(len(y2))], dtype=torch.float64).mean()
    kl_term = (_kl_rows(p, p_adv) * (1 - p[torch.arange(len(y2)), y2])).mean()
    method = _fixed_attack(get_method("raat_pp", eta=eta, dicar=False, two_views=True, mart_lam=6.0), x_adv)
    out = method.loss(model, batch, _ctx())
    assert out.loss.item() == pytest.approx((bce + 6.0 * kl_term).item(), rel=1e-5)
    assert get_method("raat_pp").start == "normal" and get_method("raat").start == "uniform"
    assert get_method("raat_pp").needs_two_views and get_method("raat").bn_mode == "eval"


def test_raat_config_errors():
    with pytest.raises(ConfigError, match="two_views"):
        get_method("raat", dicar=True, two_views=False)
    with pytest.raises(ConfigError, match="eta_mode"):
        get_method("raat", eta_mode="shrink")
    with pytest.raises(ConfigError, match="two_views"):
        get_method("raat").loss(TinyNet(), tiny_batch(b=4), _ctx())


@pytest.mark.parametrize("name,params", [("raat", {}), ("raat_pp", {}),
                                         ("raat", {"eta_mode": "ball", "dicar_form": "paper"})])
def test_raat_variants_train_and_change_weights(tmp_path, name, params):
    trainer = _trainer(tmp_path, method=name, method_params=params)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    record = trainer.train_epoch(0)
    assert math.isfinite(record["train_loss"]) and 0.0 <= record["train_boundary_frac"] <= 1.0
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
