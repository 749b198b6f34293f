"""The fast path (atkit/core/fast.py): bf16 autocast forward with fp32 outputs, channels_last, compile, DDP routing,
the exact fp32 switch, and the trainer's use of them. Runs on the CPU (autocast bf16 works there, slowly)."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from atkit.attacks import attack_mode, pgd
from atkit.core import fast
from atkit.training.config import RunConfig
from atkit.core.fast import (AutocastModel, compile_model, describe, eval_model, evaluation_parity, exact_fp32,
                        precision_scope, resolve_channels_last, resolve_precision, tf32_mode, training_model,
                        training_precision, unwrap_model)
from atkit.core.stats import newcombe_paired_interval
from atkit.models import Features, build_model
from atkit.training.trainer import Trainer
from atkit.training.checkpoints import load_model
from atkit.core.utils import ConfigError


def _model(**kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model("small_cnn", num_classes=10, width=4, hidden=16, **kw)


def _images(n: int = 6, size: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_precision_and_layout_resolve_by_device():
    assert resolve_precision("auto", "cpu") is None  # exact fp32 on the CPU
    assert resolve_precision("fp32", "cpu") is None
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "cuda") is None  # no usable GPU: never autocast blindly
    with pytest.raises(ConfigError, match="fp16.*bf16"):
        resolve_precision("fp16", "cpu")
    assert resolve_channels_last("auto", "cpu") is False
    assert resolve_channels_last("auto", torch.device("cuda")) is True
    assert resolve_channels_last(False, "cuda") is False
    with pytest.raises(ConfigError, match="channels_last=1"):
        resolve_channels_last(1, "cpu")


def test_config_fields_are_validated():
    base = dict(model="small_cnn")
    cfg = RunConfig.from_dict(base)
    assert (cfg.precision, cfg.channels_last, cfg.compile, cfg.eval.precision) == ("auto", "auto", False, "fp32")
    for bad, pattern in (({"precision": "half"}, "precision 'half'"), ({"channels_last": "yes"}, "channels_last"),
                         ({"compile": "no-such-backend"}, "no-such-backend"),
                         ({"eval": {"precision": "fp8"}}, "eval.precision 'fp8'")):
        with pytest.raises(ConfigError, match=pattern):
            RunConfig.from_dict(dict(base, **bad))


def test_autocast_forward_runs_the_network_in_bf16_and_returns_fp32():
    model = _model().eval()
    seen = {}
    model.fc.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    x, _ = _images()
    reference = model(x)
    assert seen["dtype"] == torch.float32
    wrapped = AutocastModel(model, dtype=torch.bfloat16)
    logits = wrapped(x)
    assert seen["dtype"] == torch.bfloat16  # the layer itself ran in bf16 ...
    assert logits.dtype == torch.float32  # ... but what methods see is fp32
    assert not torch.equal(logits, reference)
    torch.testing.assert_close(logits, reference, atol=0.05, rtol=0.05)  # bf16 rounding, same function
    feats = wrapped(x, return_features=True)
    assert isinstance(feats, Features) and all(t.dtype == torch.float32 for t in feats)
    torch.testing.assert_close(wrapped.forward_features(x).penultimate, feats.penultimate)
    # Attributes fall through to the plain model; its state_dict is the one checkpoints store.
    assert wrapped.num_classes == 10 and wrapped.num_outputs == 10 and wrapped.dummy_classes is False
    assert unwrap_model(wrapped) is model
    clone = copy.deepcopy(wrapped)  # attribute fall-through must not recurse while a copy is half built
    assert clone.num_classes == 10 and unwrap_model(clone) is not model
    assert describe(wrapped)["precision"] == "bf16" and describe(model)["precision"] == "fp32"


def test_pgd_through_the_wrapper_keeps_the_perturbation_fp32_and_parameters_clean():
    model = _model()
    wrapped = AutocastModel(model, dtype=torch.bfloat16)
    x, y = _images()
    eps = 8 / 255
    x_adv = pgd(wrapped, x, y, eps=eps, step_size=2 / 255, steps=3, random_start="uniform")
    assert x_adv.dtype == torch.float32
    assert float((x_adv - x).abs().max()) <= eps + 1e-6 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float((x_adv - x).abs().max()) > eps / 2  # it moved: the bf16 gradient reached the fp32 delta
    assert all(p.grad is None for p in model.parameters())  # input-only gradients
    assert all(p.requires_grad for p in model.parameters()) and model.training  # restored after the attack
    # The attack increases the fp32 loss of the plain model on most points, like the fp32 attack does.
    with torch.no_grad():
        model.eval()
        gain = F.cross_entropy(model(x_adv), y, reduction="none") - F.cross_entropy(model(x), y, reduction="none")
    assert float(gain.mean()) > 0


def test_channels_last_converts_input_and_weights_in_place():
    model = _model()
    params_before = list(model.parameters())
    conv = model.features[0][0]
    layouts = []
    conv.register_forward_pre_hook(lambda m, i: layouts.append(i[0].is_contiguous(memory_format=torch.channels_last)))
    fast = training_model(model, device="cpu", precision="fp32", channels_last=True)
    assert isinstance(fast, AutocastModel) and fast.dtype is None
    assert list(model.parameters()) == params_before  # same Parameter objects: an optimiser keeps working
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, _ = _images()
    out = fast(x)
    assert layouts[-1] is True
    torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-5)  # layout only: same numbers in fp32


def test_exact_fp32_path_is_the_plain_model():
    model = _model()
    assert training_model(model, device="cpu", precision="fp32", channels_last=False) is model
    assert training_model(model, device="cpu", precision="auto", channels_last="auto") is model  # CPU default
    assert eval_model(model, device="cpu") is model
    assert isinstance(eval_model(model, device="cpu", precision="bf16"), AutocastModel)


def test_exact_fp32_switches_tf32_off_and_restores_it():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = True
    try:
        with exact_fp32():
            assert cudnn.allow_tf32 is False and matmul.allow_tf32 is False
        assert cudnn.allow_tf32 is True
        with pytest.raises(RuntimeError, match="boom"):
            with exact_fp32():
                raise RuntimeError("boom")
        assert cudnn.allow_tf32 is True
        with exact_fp32(enabled=False):
            assert cudnn.allow_tf32 is True
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def test_compiled_forward_matches_and_unwraps():
    model = _model().eval()
    compiled = compile_model(model, "eager")  # the eager backend: the wiring, without a C++ toolchain
    assert compile_model(model, False) is None
    fast = AutocastModel(model, compiled=compiled)
    x, _ = _images()
    torch.testing.assert_close(fast(x), model(x))
    assert unwrap_model(compiled) is model and unwrap_model(fast) is model
    assert set(fast.state_dict()) == {f"module.{k}" for k in model.state_dict()}  # no duplicated entries


class _Spy(nn.Module):
    """Stands in for DistributedDataParallel: records that it was called, then runs the module."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args):
        self.calls += 1
        return self.module(*args)


def test_only_parameter_gradient_forwards_go_through_ddp():
    model = _model()
    spy = _Spy(model)
    fast = AutocastModel(model, ddp=spy)
    x, y = _images()
    fast(x).sum().backward()  # a training forward: through DDP
    assert spy.calls == 1
    with torch.no_grad():
        fast(x)  # metrics pass
    pgd(fast, x, y, eps=8 / 255, step_size=2 / 255, steps=3)  # attack passes (parameters frozen)
    with attack_mode(fast, "train"):
        assert spy.training and model.training
    fast.eval()
    assert not spy.training  # DDP's own mode flag follows the wrapper
    assert spy.calls == 1


def test_trainer_bf16_path_trains_and_checkpoints_the_plain_model(tmp_path):
    cfg = dict(dataset="synthetic", data={"n_train": 64, "n_test": 16, "image_size": 16}, model="small_cnn",
               model_params={"width": 4, "hidden": 16}, method="pgd_at", batch_size=32, schedule="constant",
               epochs=1, threat={"steps": 2}, device="cpu", precision="bf16", channels_last=True,
               eval={"n_test": 16, "pgd_steps": 1, "final_attacks": ["clean"]}, out_dir=str(tmp_path))
    trainer = Trainer.new(cfg, progress=False)
    assert isinstance(trainer.train_model, AutocastModel) and trainer.train_model.module is trainer.model
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    seen = []
    trainer.model.fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.fit()
    assert torch.bfloat16 in seen  # training forwards autocast
    assert seen[-1] == torch.float32  # the epoch evaluation ran the plain fp32 model
    after = trainer.model.state_dict()
    assert all(after[k].dtype == before[k].dtype for k in before)  # fp32 master weights
    assert max(float((after[k].float() - before[k].float()).abs().max()) for k in before) > 1e-4
    ckpt = torch.load(trainer.ckpt_dir / "last.pt", weights_only=False)
    assert set(ckpt["model"]) == set(before)  # no "module." prefix
    reloaded = load_model(trainer.run_dir)
    x, _ = _images(size=16)
    trainer.model.eval()
    torch.testing.assert_close(reloaded(x), trainer.model(x))


def test_auto_precision_is_per_method_and_recorded(monkeypatch, tmp_path):
    """precision: auto trains in bf16 only for a method whose bf16 parity was measured; the run records why."""
    from atkit.core import fast
    from atkit.training.trainer import Trainer

    monkeypatch.setattr(fast, "resolve_precision",
                        lambda p, d: None if p == "fp32" else torch.bfloat16)  # a bf16-capable device
    monkeypatch.setattr(fast, "BF16_VERIFIED_METHODS", frozenset())  # whatever the committed parity runs decided
    assert fast.training_precision("auto", "cpu", "pgd_at+rpat")[0] == "fp32"
    assert "not been shown equivalent" in fast.training_precision("auto", "cpu", "pgd_at+rpat")[1]
    monkeypatch.setattr(fast, "BF16_VERIFIED_METHODS", frozenset({"pgd_at"}))
    assert fast.training_precision("auto", "cpu", "pgd_at")[0] == "bf16"
    assert fast.training_precision("auto", "cpu", "trades")[0] == "fp32"
    assert fast.training_precision("bf16", "cpu", "trades")[0] == "bf16"  # asked for explicitly
    assert fast.training_precision("fp32", "cpu", "pgd_at")[0] == "fp32"
    monkeypatch.undo()
    trainer = Trainer.new(dict(method="trades", dataset="synthetic", data={"n_train": 32, "n_test": 16, "image_size": 8},
                               model="small_cnn", epochs=1, max_steps_per_epoch=1, threat={"steps": 1}, device="cpu",
                               out_dir=str(tmp_path), eval={"n_test": 16, "pgd_steps": 0, "final_attacks": ["clean"]}),
                          progress=False)
    trainer.write_metrics()
    note = json.loads((trainer.run_dir / "metrics.json").read_text())["training_precision"]
    assert note["precision"] == "fp32" and note["requested"] == "auto" and "cpu" in note["why"]


def _parity_runs(flipped_up, n=2000, seeds=3, base=800):
    """Per seed, fp32 flags with ``base`` of ``n`` images correct, and bf16 flags that also get ``flipped_up``
    of the fp32-wrong images right (a bf16 - fp32 difference of ``flipped_up / n``, no image lost)."""
    fp32 = [[i < base for i in range(n)] for _ in range(seeds)]
    bf16 = [[i < base + flipped_up for i in range(n)] for _ in range(seeds)]
    return bf16, fp32


def _tost_upper(k, n=2000, seeds=3):
    """The 90 % upper end of the pooled difference for _parity_runs(k), written out: k discordant images of n per
    seed, equal seeds, so the pooled se is sqrt(v / seeds) with v = 100² (k - k² / n) / ((n - 1) n)."""
    d = 100 * k / n
    v = 1e4 * (k - k * k / n) / ((n - 1) * n)
    return d + 1.6448536269514722 * math.sqrt(v / seeds)


def test_bf16_parity_decision_is_a_tost_with_a_one_point_margin():
    edge = max(k for k in range(0, 60) if _tost_upper(k) < 1.0)  # the most images bf16 may gain per seed
    bf16, fp32 = _parity_runs(edge)
    pgd_b, pgd_f = _parity_runs(1)  # PGD-20: one image of 2,000 per seed, well inside the margin
    ok = fast.bf16_parity_decision({"clean": bf16, "pgd20": pgd_b}, {"clean": fp32, "pgd20": pgd_f})
    assert ok["verdict"] == fast.BF16_EQUIVALENT and ok["bf16_default"] and ok["margin"] == fast.PARITY_MARGIN == 1.0
    clean = ok["metrics"]["clean"]
    assert clean["pooled"]["estimate"] == pytest.approx(100 * edge / 2000)
    assert clean["equivalence"]["ci90"][1] == pytest.approx(_tost_upper(edge), abs=1e-2)
    assert clean["bf16_mean"] == pytest.approx(100 * (800 + edge) / 2000) and clean["fp32_mean"] == 40.0
    bf16, fp32 = _parity_runs(edge + 1)  # one image more per seed: the 90 % interval reaches past +1 point
    no = fast.bf16_parity_decision({"clean": bf16, "pgd20": pgd_b}, {"clean": fp32, "pgd20": pgd_f})
    assert no["verdict"] == fast.BF16_NOT_SHOWN and not no["bf16_default"]
    assert not no["metrics"]["clean"]["equivalence"]["equivalent"]
    # A stated margin moves the edge; absence of evidence (few images, wide interval) is not parity.
    assert fast.bf16_parity_decision({"clean": bf16, "pgd20": pgd_b}, {"clean": fp32, "pgd20": pgd_f},
                                     margin=2.0)["bf16_default"]
    assert no["metrics"]["pgd20"]["equivalence"]["equivalent"]  # one metric short of the margin is enough to refuse
    tiny_b, tiny_f = _parity_runs(0, n=40, base=20)
    tiny_b = [[*f[:-1], not f[-1]] for f in tiny_f]  # one image of 40 differs: no effect seen, interval wide
    assert fast.bf16_parity_decision({"clean": tiny_b, "pgd20": tiny_b}, {"clean": tiny_f, "pgd20": tiny_f}
                                     )["verdict"] == fast.BF16_NOT_SHOWN


def test_bf16_parity_decision_needs_three_paired_seeds():
    bf16, fp32 = _parity_runs(5, seeds=2)
    d = fast.bf16_parity_decision({"clean": bf16, "pgd20": bf16}, {"clean": fp32, "pgd20": fp32})
    assert d["verdict"] == fast.BF16_NOT_MEASURED and not d["bf16_default"]
    with pytest.raises(ValueError, match="pair them by seed"):
        fast.bf16_parity_decision({"clean": bf16, "pgd20": bf16}, {"clean": fp32[:1], "pgd20": fp32})


def _tf32() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_tf32_precision_turns_tf32_on_and_each_precision_sets_its_switches():
    """``tf32``: fp32 tensors (no autocast), TF32 switches on inside the scope; fp32 turns them off; bf16 leaves
    them; all restored afterwards. It is a training and an evaluation precision."""
    before = _tf32()
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # torch's defaults
        assert resolve_precision("tf32", "cpu") is None and training_precision("tf32", "cpu", "mart")[0] == "tf32"
        with precision_scope("tf32", "cpu"):
            assert _tf32() == (True, True)
            with precision_scope("fp32", "cpu"):
                assert _tf32() == (False, False)
            assert _tf32() == (True, True)
        with precision_scope("bf16", "cpu"):
            assert _tf32() == (True, False)
        with tf32_mode(False):
            assert _tf32() == (False, False)
        assert _tf32() == (True, False)
        assert eval_model(_model(), device="cpu", precision="tf32").__class__ is not AutocastModel
        cfg = RunConfig.from_dict({"model": "small_cnn", "precision": "tf32", "eval": {"precision": "tf32"}})
        cfg.validate()
        with pytest.raises(ConfigError, match="tf32"):  # the error lists the accepted precisions
            RunConfig.from_dict({"model": "small_cnn", "eval": {"precision": "fp16"}}).validate()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _paired_flags(both: int, only_reduced: int, only_fp32: int, neither: int) -> tuple[list[bool], list[bool]]:
    fp32 = [True] * both + [False] * only_reduced + [True] * only_fp32 + [False] * neither
    reduced = [True] * both + [True] * only_reduced + [False] * only_fp32 + [False] * neither
    return fp32, reduced


def test_evaluation_parity_decides_by_the_interval_against_the_margin():
    """Parity iff the 95 % Newcombe interval of (reduced - fp32) lies inside +-margin: on both sides of the edge,
    in both directions, and never from a sample too small to resolve the margin."""
    fp32, reduced = _paired_flags(300, 0, 0, 700)  # 1,000 images, identical results
    rec = evaluation_parity(fp32, reduced, precision="bf16", evaluation="AutoAttack standard")
    assert rec["parity"] is True and rec["agreement"] == 100.0 and rec["difference"] == 0.0
    assert rec["n"] == 1000 and rec["fp32_accuracy"] == rec["reduced_accuracy"] == 30.0
    assert -0.5 < rec["diff_ci95"][0] < 0 < rec["diff_ci95"][1] < 0.5 and rec["mcnemar_p"] == 1.0
    json.dumps(rec)  # JSON-ready for provenance

    # Find the edge: k images correct only under the reduced precision, on 4,000 images.
    def high(k: int) -> float:
        return 100 * newcombe_paired_interval(1500, k, 0, 2500 - k)[1]
    edge = next(k for k in range(1, 40) if high(k) > 0.5)
    assert high(edge - 1) <= 0.5 < high(edge)
    for k, expected in ((edge - 1, True), (edge, False)):
        fp32, reduced = _paired_flags(1500, k, 0, 2500 - k)
        rec = evaluation_parity(fp32, reduced, precision="tf32")
        assert rec["parity"] is expected, (k, rec["diff_ci95"])
        assert rec["only_reduced_correct"] == k and rec["difference"] == pytest.approx(100 * k / 4000)
        # The other direction (reduced precision worse) is decided by the same margin.
        rec = evaluation_parity(reduced, fp32, precision="tf32")
        assert rec["parity"] is expected and rec["difference"] == pytest.approx(-100 * k / 4000)
        assert rec["diff_ci95"][0] == pytest.approx(-high(k))
    # A wider margin accepts what 0.5 rejects; a clear shift is rejected with a small McNemar p-value.
    fp32, reduced = _paired_flags(1500, edge, 0, 2500 - edge)
    assert evaluation_parity(fp32, reduced, precision="tf32", margin=1.0)["parity"] is True
    fp32, reduced = _paired_flags(300, 40, 5, 655)
    rec = evaluation_parity(fp32, reduced, precision="bf16")
    assert rec["parity"] is False and rec["mcnemar_p"] < 1e-4 and rec["difference"] == pytest.approx(3.5)
    # 16 identical images cannot show parity within half a point.
    fp32, reduced = _paired_flags(8, 0, 0, 8)
    assert evaluation_parity(fp32, reduced, precision="bf16")["parity"] is False
    with pytest.raises(ConfigError, match="precision='fp32'.*tf32, bf16"):
        evaluation_parity(fp32, reduced, precision="fp32")
    with pytest.raises(ConfigError, match="margin=0"):
        evaluation_parity(fp32, reduced, precision="bf16", margin=0)
    with pytest.raises(ValueError, match="same non-zero length"):
        evaluation_parity(fp32, reduced[:-1], precision="bf16")
