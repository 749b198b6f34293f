"""Tests for atkit.models: shapes, one-pass features, normalization, dummy-class helpers, registry."""
from __future__ import annotations

import math

import pytest
import torch

from atkit.models import (
    MODELS,
    AtkitModel,
    MergedDummyModel,
    build_model,
    count_parameters,
    merge_dummy_logits,
    predict_labels,
    wide_resnet,
)
from atkit.core.utils import ConfigError

# (model name, num_classes, dummy, batch, expected penultimate dim, expected third-to-last dim,
#  module whose output (pooled) is third_to_last, or None when it is the input of `fc2`)
BIG_CASES = [
    ("resnet18", 100, False, 2, 512, 256, "layer3"),
    ("preact_resnet18", 7, True, 2, 512, 256, "layer3"),
    ("resnet18_bottleneck", 10, False, 2, 2048, 1024, "layer3"),
    ("wrn28_10", 7, False, 2, 640, 320, "block2"),
    ("wrn34_10", 100, True, 1, 640, 320, "block2"),
]


def _inputs(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g)


def _check_features_against_hooks(model: AtkitModel, x: torch.Tensor, third_module: str | None) -> None:
    """Recover penultimate/third-to-last independently through hooks and compare."""
    seen: dict = {}
    handles = [model.fc.register_forward_pre_hook(lambda m, inp: seen.__setitem__("pen", inp[0]))]
    if third_module is None:  # small_cnn: input of the second-to-last linear layer
        handles.append(model.fc2.register_forward_pre_hook(lambda m, inp: seen.__setitem__("third", inp[0])))
    else:
        handles.append(
            getattr(model, third_module).register_forward_hook(
                lambda m, inp, out: seen.__setitem__("third", out.mean(dim=(2, 3)))
            )
        )
    feats = model.forward_features(x)
    for h in handles:
        h.remove()
    torch.testing.assert_close(feats.penultimate, seen["pen"], rtol=0, atol=0)
    torch.testing.assert_close(feats.third_to_last, seen["third"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,num_classes,dummy,batch,pen_dim,third_dim,third_module", BIG_CASES)
def test_big_models_shapes_and_features(name, num_classes, dummy, batch, pen_dim, third_dim, third_module):
    torch.manual_seed(0)
    model = build_model(name, num_classes, dummy_classes=dummy).eval()
    outputs = 2 * num_classes if dummy else num_classes
    assert (model.num_classes, model.num_outputs, model.dummy_classes) == (num_classes, outputs, dummy)
    assert (model.penultimate_dim, model.third_to_last_dim) == (pen_dim, third_dim)
    x = _inputs(batch)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert logits.shape == (batch, outputs)
        assert feats.penultimate.shape == (batch, pen_dim)
        assert feats.third_to_last.shape == (batch, third_dim)
        assert torch.equal(logits, feats.logits)
        _check_features_against_hooks(model, x, third_module)


@pytest.mark.parametrize("num_classes", [10, 100, 7])
@pytest.mark.parametrize("size", [32, 64])
def test_small_cnn_any_classes_and_size(num_classes, size):
    torch.manual_seed(1)
    model = build_model("small_cnn", num_classes).eval()
    x = _inputs(4, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model(x).shape == (4, num_classes)
        assert torch.equal(model(x), feats.logits)
        assert feats.penultimate.shape == (4, 128) and feats.third_to_last.shape == (4, 128)
        _check_features_against_hooks(model, x, None)


def test_forward_equals_features_in_train_mode_with_grad():
    torch.manual_seed(2)
    model = build_model("small_cnn", 5, dummy_classes=True).train()
    x = _inputs(6)
    a = model(x)
    b = model.forward_features(x).logits
    assert a.shape == (6, 10)
    assert torch.equal(a, b)
    b.sum().backward()
    assert model.fc.weight.grad is not None and model.features[0][0].weight.grad.abs().sum() > 0


def test_bn_mode_changes_small_cnn_output():
    torch.manual_seed(3)
    model = build_model("small_cnn", 4)
    x = _inputs(8)
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert not torch.allclose(train_out, eval_out)


def test_normalization_inside_forward():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    torch.manual_seed(4)
    plain = build_model("small_cnn", 10).eval()
    normed = build_model("small_cnn", 10, normalize=(mean, std)).eval()
    missing, unexpected = normed.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["input_mean", "input_std"] and unexpected == []
    x = _inputs(3)
    manual = torch.empty_like(x)
    for c in range(3):
        manual[:, c] = (x[:, c] - mean[c]) / std[c]
    with torch.no_grad():
        torch.testing.assert_close(normed(x), plain(manual), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(normed.forward_features(x).penultimate,
                                   plain.forward_features(manual).penultimate, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(normed(x), plain(x), atol=1e-3)
    # The statistics live in the state_dict so checkpoints carry them.
    assert {"input_mean", "input_std"} <= set(normed.state_dict())
    assert not any(k.startswith("input_") for k in plain.state_dict())


@pytest.mark.parametrize(
    "bad",
    [((0.5, 0.5), (0.2, 0.2)), ((0.5, 0.5, 0.5), (0.2, 0.0, 0.2)), ("cifar",), 3.0],
)
def test_bad_normalization_rejected(bad):
    with pytest.raises(ConfigError):
        build_model("small_cnn", 10, normalize=bad)


def test_predict_labels_maps_dummy_outputs():
    C = 3
    logits = torch.tensor(
        [
            [5.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # real class 0
            [0.0, 1.0, 0.0, 0.0, 0.0, 9.0],  # dummy of class 2
            [0.0, 0.0, 0.0, 0.0, 7.0, 1.0],  # dummy of class 1
            [0.0, 0.0, 2.0, 1.0, 0.0, 0.0],  # real class 2
        ]
    )
    assert predict_labels(logits, C).tolist() == [0, 2, 1, 2]
    plain = torch.tensor([[0.0, 3.0, 1.0], [4.0, 0.0, 1.0]])
    assert predict_labels(plain, C).tolist() == [1, 0]
    with pytest.raises(ConfigError):
        predict_labels(torch.zeros(2, 5), C)


def test_merge_dummy_logits_against_hand_computation():
    C = 3
    logits = torch.tensor([[1.0, -2.0, 0.5, 0.0, 3.0, -1.0], [10.0, 0.0, -5.0, 10.0, 2.0, 1.0]])
    lse = merge_dummy_logits(logits, C, "logsumexp")
    mx = merge_dummy_logits(logits, C, "max")
    rows = logits.tolist()
    exp_lse = [[math.log(math.exp(r[k]) + math.exp(r[k + C])) for k in range(C)] for r in rows]
    exp_max = [[max(r[k], r[k + C]) for k in range(C)] for r in rows]
    torch.testing.assert_close(lse, torch.tensor(exp_lse), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mx, torch.tensor(exp_max), rtol=0, atol=0)
    # softmax of the logsumexp merge is the summed probability of a class and its dummy
    p = logits.softmax(1)
    torch.testing.assert_close(lse.softmax(1), p[:, :C] + p[:, C:], rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="logsumexp"):
        merge_dummy_logits(logits, C, "logsumexpp")
    with pytest.raises(ConfigError):
        merge_dummy_logits(logits[:, :C], C)


@pytest.mark.parametrize("how", ["logsumexp", "max"])
def test_merged_dummy_model(how):
    torch.manual_seed(5)
    base = build_model("small_cnn", 4, dummy_classes=True).eval()
    merged = MergedDummyModel(base, how)
    assert (merged.num_classes, merged.num_outputs, merged.dummy_classes) == (4, 4, False)
    x = _inputs(5).requires_grad_(True)
    out = merged(x)
    raw = base(x)
    z = torch.stack((raw[:, :4], raw[:, 4:]))
    expected = z.logsumexp(0) if how == "logsumexp" else z.max(0).values
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert torch.equal(merged.forward_features(x).logits, out)
    out[:, 0].sum().backward()  # attacks need input gradients through the merge
    assert x.grad is not None and x.grad.abs().sum() > 0
    merged.train()
    assert base.training
    if how == "max":
        with torch.no_grad():
            assert torch.equal(merged.eval()(x).argmax(1), predict_labels(base(x), 4))
    with pytest.raises(ConfigError):
        MergedDummyModel(build_model("small_cnn", 4), how)


def test_enable_dummy_classes_keeps_real_rows():
    torch.manual_seed(6)
    model = build_model("small_cnn", 6).eval()
    x = _inputs(3)
    with torch.no_grad():
        before = model(x)
        model.enable_dummy_classes("random")
        after = model(x)
    assert (model.num_outputs, model.dummy_classes, after.shape) == (12, True, (3, 12))
    torch.testing.assert_close(after[:, :6], before, rtol=1e-5, atol=1e-6)
    copy_model = build_model("small_cnn", 6).enable_dummy_classes("copy").eval()
    with torch.no_grad():
        out = copy_model(x)
    torch.testing.assert_close(out[:, 6:], out[:, :6], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError):
        model.enable_dummy_classes()


def test_unknown_name_and_options():
    with pytest.raises(ConfigError, match="'resnet18'"):
        build_model("resnet_18")
    with pytest.raises(ConfigError, match="'wrn34_10'"):
        build_model("wrn34-10")
    with pytest.raises(ConfigError, match="'width'"):
        build_model("small_cnn", 10, widht=16)
    with pytest.raises(ConfigError):
        build_model("small_cnn", 1)
    with pytest.raises(ConfigError):
        wide_resnet(depth=30, widen_factor=2)
    assert set(MODELS) >= {"small_cnn", "resnet18", "preact_resnet18", "resnet18_bottleneck", "wrn34_10",
                           "wrn28_10"}


def test_generic_wide_resnet_and_options():
    torch.manual_seed(7)
    model = build_model("wide_resnet", 7, depth=10, widen_factor=2, drop_rate=0.3).eval()
    assert (model.penultimate_dim, model.third_to_last_dim) == (128, 64)
    assert model(_inputs(2)).shape == (2, 7)
    slim = build_model("small_cnn", 3, width=8, hidden=32, in_channels=1)
    assert slim(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    assert count_parameters(slim) < count_parameters(build_model("small_cnn", 3))


@pytest.mark.parametrize("name,expected", [("resnet18", 11.17e6), ("wrn34_10", 46.16e6)])
def test_parameter_counts_match_literature(name, expected):
    # ResNet-18 (CIFAR) ~11.2M and WRN-34-10 ~46.2M parameters at 10 classes.
    n = count_parameters(build_model(name, 10))
    assert abs(n - expected) / expected < 0.02
    model = build_model(name, 10)
    for p in model.fc.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == n - model.fc.weight.numel() - model.fc.bias.numel()


def test_features_through_call_and_deepcopy():
    import copy

    torch.manual_seed(8)
    model = build_model("small_cnn", 3).eval()
    x = _inputs(2)
    with torch.no_grad():
        via_call = model(x, return_features=True)
        feats = model.forward_features(x)
        twin = copy.deepcopy(model)  # EMA / weight averaging copies models this way
        assert torch.equal(twin(x), model(x))
    for a, b in zip(via_call, feats):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------ registry-wide contract
#: Options that build a registered entry small enough to compute with on the CPU (the same class, reduced).
REDUCED = {"wide_resnet": {"depth": 10, "widen_factor": 1}, "dm_wide_resnet": {"depth": 10, "width": 1}}
#: Parameters at 10 classes: ResNet-18 and the WRNs as the literature counts them (CIFAR variants).
KNOWN_PARAMETERS = {"resnet18": 11.17e6, "preact_resnet18": 11.17e6, "wrn34_10": 46.16e6, "wrn28_10": 36.48e6,
                    "dm_wrn28_10": 36.48e6, "dm_wrn70_16": 266.8e6}
#: Above this many parameters an entry without reduced options is checked on the meta device only: its values are
#: computed with in BIG_CASES above, through its generic entry at reduced size, or (the DeepMind nets) against
#: RobustBench's forward pass in test_external_models.py.
REAL_LIMIT = 2e6


def _meta_build(name, num_classes, dummy):
    with torch.device("meta"):  # structure without allocating weights (WRN-70-16 has 267M parameters)
        return build_model(name, num_classes, dummy_classes=dummy)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_keeps_the_model_contract(name, tmp_path):
    from atkit.core.checkpoint_files import load_checkpoint_file, load_weights

    counts = {}
    for num_classes in (10, 100):
        for dummy in (False, True):
            model = _meta_build(name, num_classes, dummy)
            outputs = 2 * num_classes if dummy else num_classes
            assert (model.num_classes, model.num_outputs, model.dummy_classes) == (num_classes, outputs, dummy)
            assert model.fc.in_features == model.penultimate_dim and model.fc.out_features == outputs
            with torch.device("meta"):
                feats = model(torch.empty(2, 3, 32, 32), return_features=True)
            assert feats.logits.shape == (2, outputs)
            assert feats.penultimate.shape == (2, model.penultimate_dim)
            assert feats.third_to_last.shape == (2, model.third_to_last_dim)
            _meta_build(name, num_classes, dummy).load_state_dict(model.state_dict())  # same keys and shapes
            counts[num_classes, dummy] = count_parameters(model)
    n = counts[10, False]
    assert 1e4 < n < 1e9
    if name in KNOWN_PARAMETERS:
        assert abs(n - KNOWN_PARAMETERS[name]) / KNOWN_PARAMETERS[name] < 0.01, n
    # Only the head grows with the classes: one row of (penultimate_dim weights + 1 bias) per output.
    pen = _meta_build(name, 10, False).penultimate_dim
    assert counts[100, False] - n == 90 * (pen + 1) and counts[10, True] - n == 10 * (pen + 1)
    options = REDUCED.get(name, {})
    if n > REAL_LIMIT and not options:
        return
    torch.manual_seed(0)
    model = build_model(name, 100, dummy_classes=True, **options).eval()
    x = _inputs(2, size=16)  # every model pools adaptively; 16 px keeps the ResNets fast
    seen = {}
    handle = model.fc.register_forward_pre_hook(lambda m, inp: seen.__setitem__("pen", inp[0]))
    with torch.no_grad():
        logits, feats = model(x), model.forward_features(x)
    handle.remove()
    assert logits.shape == (2, 200) and torch.equal(logits, feats.logits)
    assert torch.equal(feats.penultimate, seen["pen"])
    # State-dict round trip through a file, loaded the way atkit loads every checkpoint (weights_only).
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(1)
    twin = build_model(name, 100, dummy_classes=True, **options).eval()
    with torch.no_grad():
        assert not torch.equal(twin(x), logits)
        load_weights(twin, load_checkpoint_file(tmp_path / "w.pt"))
        assert torch.equal(twin(x), logits)
