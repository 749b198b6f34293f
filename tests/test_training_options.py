"""Training options: CutMix (areas, labels, the loss on mixed targets), label smoothing (the hand formula), the
refusals, RPAT Table 4's starred rows as runnable settings, and gradient accumulation (k micro-batches = one batch
on a model without BatchNorm)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from atkit import models
from atkit.experiments import reference
from atkit.training.accumulate import micro_batches
from atkit.attacks.losses import ce_objective
from atkit.training.augment import CutMix, CutMixParams, cutmix, cutmix_box, training_options
from atkit.training.config import RunConfig, load_config
from atkit.data import Batch
from atkit.methods import METHODS, StepContext, composite_names, get_method
from atkit.models.base import AtkitModel
from atkit.workbench.run_labels import setting_of
from atkit.training.trainer import train
from atkit.core.utils import ConfigError
from helpers import REPO, ref_log_softmax

C = 10


def constant_images(n: int = 8, size: int = 16) -> torch.Tensor:
    """Image i is the constant (i + 1) / 100, so every pixel says which image it came from."""
    return ((torch.arange(n, dtype=torch.float32) + 1) / 100).view(n, 1, 1, 1).expand(n, 3, size, size).clone()


# -- CutMix ----------------------------------------------------------------------------------------------------
def test_boxes_lie_inside_the_image_and_follow_the_released_sizing():
    rng = np.random.default_rng(0)
    for lam in np.linspace(0.0, 1.0, 41):
        top, bottom, left, right = cutmix_box(32, 24, float(lam), rng)
        assert 0 <= top <= bottom <= 32 and 0 <= left <= right <= 24
        # sides floor(H sqrt(1 - lam)) // 2 each way around the centre, clipped: never larger than that
        assert bottom - top <= 2 * (int(32 * math.sqrt(1 - lam)) // 2)
        assert right - left <= 2 * (int(24 * math.sqrt(1 - lam)) // 2)
    top, bottom, left, right = cutmix_box(32, 32, 1.0, rng)
    assert bottom == top and right == left  # lam = 1: an empty box


def test_mixed_labels_weigh_each_class_by_its_share_of_pixels():
    x, y = constant_images(8), torch.arange(8)  # 8 distinct classes of 10
    mixer = CutMix(CutMixParams(), num_classes=C, seed=3)
    seen_partial = 0
    for step in range(40):
        draw = mixer.draw(8, 16, 16, epoch=0, step=step)
        mixed, target, lam = cutmix(x, y, draw, C)
        box_area = (draw.bottom - draw.top) * (draw.right - draw.left)
        assert lam == pytest.approx(1 - box_area / 256)
        torch.testing.assert_close(target.sum(1), torch.ones(8))
        for i in range(8):
            j = int(draw.perm[i])
            from_partner = (mixed[i] == x[j, 0, 0, 0]).float().mean().item()  # share of pixels pasted from x_j
            if j == i:  # pasted from itself: the image and its label are unchanged
                assert torch.equal(mixed[i], x[i]) and target[i, i] == pytest.approx(1.0)
                continue
            assert from_partner == pytest.approx(1 - lam)
            assert target[i, y[i]].item() == pytest.approx(lam) and target[i, y[j]].item() == pytest.approx(1 - lam)
            assert (target[i] > 0).sum() <= 2
            seen_partial += 0 < box_area < 256
    assert seen_partial > 50  # the draws above were not all empty or full boxes


def test_draws_are_a_function_of_seed_epoch_and_step_and_prob_gates_the_batch():
    a, b = CutMix(CutMixParams(), C, seed=1), CutMix(CutMixParams(), C, seed=1)
    da, db = a.draw(16, 32, 32, 4, 7), b.draw(16, 32, 32, 4, 7)  # a resumed run draws what the first run drew
    assert torch.equal(da.perm, db.perm) and da[1:] == db[1:]
    assert torch.equal(da.perm.sort().values, torch.arange(16))
    others = [a.draw(16, 32, 32, 4, s) for s in range(8, 16)]
    others.append(CutMix(CutMixParams(), C, seed=2).draw(16, 32, 32, 4, 7))
    assert all(not torch.equal(o.perm, da.perm) or o[1:] != da[1:] for o in others)
    assert all(CutMix(CutMixParams(prob=0.0), C).draw(8, 8, 8, 0, s) is None for s in range(50))
    half = sum(CutMix(CutMixParams(prob=0.5), C).draw(8, 8, 8, 0, s) is not None for s in range(400))
    assert 160 < half < 240  # Binomial(400, 0.5): mean 200, sd 10


def test_the_batch_keeps_its_type_and_two_views_share_the_box():
    x = constant_images(6)
    batch = Batch(x, torch.arange(6), x.clone(), torch.arange(6))
    mixed = CutMix(CutMixParams(), C, seed=0)(batch, 0, 1)
    assert isinstance(mixed, Batch) and mixed.y.shape == (6, C) and torch.equal(mixed.index, batch.index)
    assert torch.equal(mixed.x, mixed.x2) and not torch.equal(mixed.x, x)


def test_loss_on_mixed_targets_is_the_mixture_of_the_two_cross_entropies():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, C))
    x, y = torch.rand(8, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    draw = CutMix(CutMixParams(), C, seed=5).draw(8, 16, 16, 0, 0)
    mixed, target, lam = cutmix(x, y, draw, C)
    assert 0 < lam < 1
    with torch.no_grad():
        log_p = ref_log_softmax(model(mixed).double())
    rows = torch.arange(8)
    per_image = -(lam * log_p[rows, y] + (1 - lam) * log_p[rows, y[draw.perm]])  # lam CE(y) + (1 - lam) CE(y_pi)
    out = get_method("standard").loss(model, Batch(mixed, target, None, rows), StepContext())
    assert out.loss.item() == pytest.approx(per_image.mean().item(), rel=1e-6)
    # The training attack's objective on the mixed target is the same mixture, image by image.
    torch.testing.assert_close(ce_objective(model(mixed), target).double(), per_image, rtol=1e-5, atol=1e-6)
    # ... and with label smoothing s: (1 - s) times that plus s times the mean over classes of -log p_c.
    s = 0.1
    smoothed = get_method("standard").loss(model, Batch(mixed, target, None, rows), StepContext(label_smoothing=s))
    expected = ((1 - s) * per_image - s * log_p.mean(dim=1)).mean()
    assert smoothed.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_label_smoothing_is_the_hand_formula_and_leaves_the_attack_alone():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, C))
    x, y = torch.rand(6, 3, 16, 16), torch.tensor([3, 1, 4, 1, 5, 9])
    s = 0.2
    with torch.no_grad():
        log_p = ref_log_softmax(model(x).double())
    target = (1 - s) * F.one_hot(y, C).double() + s / C  # the smoothed target
    expected = -(target * log_p).sum(1).mean()
    out = get_method("standard").loss(model, Batch(x, y, None, torch.arange(6)), StepContext(label_smoothing=s))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # PGD-AT: the attack is the same with or without smoothing (it never sees ctx), the loss is smoothed.
    pgd_at = get_method("pgd_at", threat={"steps": 2})
    batch = Batch(x, y, None, torch.arange(6))
    torch.manual_seed(4)
    plain = pgd_at.loss(model, batch, StepContext())
    torch.manual_seed(4)
    smooth = pgd_at.loss(model, batch, StepContext(label_smoothing=s))
    assert torch.equal(plain.x_adv, smooth.x_adv)
    with torch.no_grad():
        log_p_adv = ref_log_softmax(model(plain.x_adv).double())
    assert smooth.loss.item() == pytest.approx(-((1 - s) * F.one_hot(y, C).double() + s / C).mul(log_p_adv).sum(1)
                                               .mean().item(), rel=1e-6)


def soft_target_names() -> list[str]:
    return sorted(n for n, cls in METHODS.items() if cls.soft_targets) + [
        n for n in composite_names() if n.endswith("+rpat") and METHODS[n.split("+")[0]].soft_targets]


@pytest.mark.parametrize("name", soft_target_names())
def test_every_soft_target_method_reads_one_hot_probabilities_as_the_labels(name):
    """The registry-wide check of ``soft_targets``: probability targets e_y give the loss of the labels y."""
    threat = {"steps": 2}
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 3, 16, 16, generator=g), torch.randint(0, 4, (6,), generator=g)
    losses = []
    for target in (y, F.one_hot(y, 4).float()):
        torch.manual_seed(0)  # the same model (a train-mode attack updates BatchNorm statistics) and random starts
        model = models.build_model("small_cnn", 4, width=4, hidden=8)
        method = get_method(name, threat=threat)
        losses.append(method.loss(model, Batch(x, target, None, torch.arange(6)), StepContext()).loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5), name


# -- the run options -------------------------------------------------------------------------------------------
def test_refusals_name_the_value_and_what_is_accepted():
    with pytest.raises(ConfigError, match="'mart' cannot train with cutmix.*pgd_at"):
        RunConfig.from_dict({"method": "mart", "cutmix": {}})
    with pytest.raises(ConfigError, match="'pgd_at\\+ducat' cannot train with label_smoothing"):
        RunConfig.from_dict({"method": "pgd_at+ducat", "label_smoothing": 0.1})
    with pytest.raises(ConfigError, match="cutmix.prob=1.5 is out of range"):
        RunConfig.from_dict({"cutmix": {"prob": 1.5}})
    with pytest.raises(ConfigError, match="unknown cutmix key 'beta'"):
        RunConfig.from_dict({"cutmix": {"beta": 1.0}})
    with pytest.raises(ConfigError, match="cutmix=0.5 must be a mapping"):
        RunConfig.from_dict({"cutmix": 0.5})
    with pytest.raises(ConfigError, match="label_smoothing=1.0 must be in"):
        RunConfig.from_dict({"label_smoothing": 1.0})
    with pytest.raises(ConfigError, match=r"accumulate_steps=129 must be an integer in \[1, batch_size=128\]"):
        RunConfig.from_dict({"accumulate_steps": 129})
    with pytest.raises(ConfigError, match="accumulate_steps=2.5 must be an integer"):
        RunConfig.from_dict({"accumulate_steps": 2.5})
    assert RunConfig.from_dict({"method": "rebat", "cutmix": {}, "label_smoothing": 0.1}).cutmix == {}


def test_the_starred_rows_of_rpat_table_4_are_runnable_parameter_files():
    starred = {r.row: r for r in reference.select(["RPAT / Table 4"]) if "*" in r.row}
    assert set(starred) == {"ReBAT* (NeurIPS'23)", "RPAT++* (Ours)"}
    files = {"ReBAT* (NeurIPS'23)": "rebat_cutmix_cifar10_wrn34_10.yaml",
             "RPAT++* (Ours)": "rpat_pp_cutmix_cifar10_wrn34_10.yaml"}
    plain = {"ReBAT (NeurIPS'23)": "rebat_cifar10_wrn34_10.yaml", "RPAT++ (Ours)": "rpat_pp_cifar10_wrn34_10.yaml"}
    unstarred = {r.row: r for r in reference.select(["RPAT / Table 4"]) if r.row in plain}
    for row, ref in starred.items():
        assert ref.method is not None and ref.training == {"cutmix": {"prob": 1.0, "alpha": 1.0}}
        cfg = load_config(REPO / "parameters" / "paper" / files[row])
        assert cfg.build_method().soft_targets and cfg.model == "wrn34_10" and cfg.resolved_epochs() == 200
        run = dict(method=cfg.method, method_params=cfg.method_params, dataset=cfg.dataset, norm="linf",
                   model=cfg.model, schedule=cfg.schedule)
        assert reference.matches(ref, **run, training=cfg.to_dict())
        # The same run without CutMix is the unstarred row's setting, never the starred one's, and vice versa.
        assert not reference.matches(ref, **run, training={})
        twin = unstarred[row.replace("*", "")]
        assert not reference.matches(twin, **run, training=cfg.to_dict())
        twin_cfg = load_config(REPO / "parameters" / "paper" / plain[twin.row])
        twin_run = dict(method=twin_cfg.method, method_params=twin_cfg.method_params, model=twin_cfg.model,
                        schedule=twin_cfg.schedule, training=twin_cfg.to_dict())
        assert twin_cfg.cutmix is None and not reference.matches(ref, **twin_run)
        assert reference.matches(twin, **twin_run)  # wa_start: 105 in the file is the default 105.0
    rebat_star = load_config(REPO / "parameters" / "paper" / files["ReBAT* (NeurIPS'23)"])
    assert rebat_star.method_params["boat_lambda"] == 2.0 and rebat_star.resolved_schedule().factors == (0.25, 0.25)


def test_runs_without_the_new_options_keep_their_setting():
    """A run config written before these options existed and one with their defaults are the same setting."""
    old = yaml.safe_load(RunConfig().to_yaml())
    for key in ("cutmix", "label_smoothing", "accumulate_steps"):
        old.pop(key)
    new = yaml.safe_load(RunConfig().to_yaml())
    assert setting_of(old) == setting_of(new) and training_options(new) == {}
    assert setting_of({**new, "cutmix": {}}) != setting_of(new)
    assert training_options({**new, "cutmix": {}, "label_smoothing": 0.1}) == {
        "cutmix": dataclasses.asdict(CutMixParams()), "label_smoothing": 0.1}


# -- gradient accumulation ---------------------------------------------------------------------------------------
class TinyNoBN(AtkitModel):
    """conv - relu - pool(4x4) - linear - relu - linear: no batch statistics."""

    def __init__(self, num_classes=10, *, dummy_classes=False, normalize=None, in_channels=3):
        super().__init__(num_classes, dummy_classes=dummy_classes, normalize=normalize, in_channels=in_channels)
        self.conv = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
        self.hidden = nn.Linear(8 * 16, 32)
        self.fc = nn.Linear(32, self.num_outputs)
        self.penultimate_dim, self.third_to_last_dim = 32, 128

    def _trunk(self, x, need_third):
        h = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 4).flatten(1)
        return F.relu(self.hidden(h)), h


@pytest.fixture
def tiny_nobn():
    """``tiny_nobn`` in the model registry for one test (Registry.get refuses unknown names, so no monkeypatch)."""
    models.MODELS["tiny_nobn"] = TinyNoBN
    yield
    models.MODELS.pop("tiny_nobn", None)


def test_micro_batches_split_rows_in_order():
    batch = Batch(torch.arange(10).view(10, 1).float(), torch.arange(10), None, torch.arange(10))
    parts = micro_batches(batch, 3)
    assert [len(p.y) for p in parts] == [4, 3, 3] and all(isinstance(p, Batch) and p.x2 is None for p in parts)
    assert torch.equal(torch.cat([p.index for p in parts]), batch.index)
    assert micro_batches(batch, 1) == [batch] and len(micro_batches(batch, 50)) == 10


def _weights_after(tmp_path, name, **kw):
    cfg = dict(dataset="synthetic", data={"n_train": 256, "n_test": 32, "image_size": 16}, batch_size=64,
               schedule="constant", lr=0.3, epochs=1, device="cpu", out_dir=str(tmp_path / name), threat={"steps": 2},
               model="tiny_nobn", model_params={"normalize": [[0.5], [0.1]]},
               eval={"n_test": 32, "pgd_steps": 1, "final_attacks": ["clean"]})
    cfg.update(kw)
    trainer = train(cfg, progress=False, evaluate_final=False)
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}, trainer


@pytest.mark.parametrize("method,params,cut", [("standard", {}, None), ("pgd_at", {"random_start": "none"}, None),
                                               ("standard", {}, {})])
def test_k_micro_batches_give_the_weights_of_one_batch_without_batchnorm(tmp_path, tiny_nobn, method, params, cut):
    one, trainer = _weights_after(tmp_path, "one", method=method, method_params=params, cutmix=cut)
    assert trainer.steps_per_epoch == 4
    for k in (4, 3):  # 64 rows: four micro-batches of 16; three of 22, 21, 21
        acc, trainer_k = _weights_after(tmp_path, f"k{k}", method=method, method_params=params, cutmix=cut,
                                        accumulate_steps=k)
        for key, w in one.items():
            torch.testing.assert_close(acc[key], w, rtol=1e-5, atol=1e-6, msg=f"k={k}: {key}")
        assert trainer_k.history[0]["train_loss"] == pytest.approx(trainer.history[0]["train_loss"], rel=1e-5)
        assert trainer_k.history[0]["steps"] == 4  # steps count optimiser steps
    # Guard against a vacuous equality: one batch with a different split of its images trains differently.
    other, _ = _weights_after(tmp_path, "bs32", method=method, method_params=params, cutmix=cut, batch_size=32)
    assert max(float((other[k] - one[k]).abs().max()) for k in one) > 1e-3


def test_with_batchnorm_micro_batches_differ_from_one_batch(tmp_path):
    """Documented, not hidden: BatchNorm normalises each micro-batch with its own statistics."""
    common = dict(model="small_cnn", model_params={"width": 4, "hidden": 8}, method="standard")
    one, _ = _weights_after(tmp_path, "bn1", **common)
    four, _ = _weights_after(tmp_path, "bn4", **common, accumulate_steps=4)
    assert max(float((one[k] - four[k]).float().abs().max()) for k in one if "num_batches" not in k) > 1e-4
    assert four["features.0.1.num_batches_tracked"] == 4 * one["features.0.1.num_batches_tracked"]
