"""Other people's checkpoints: RobustBench key names and shapes load into atkit's models (full size on the meta
device, reduced size with values), the DeepMind-style nets compute what RobustBench's definition computes, the
normalization is detected or stated and recorded, files that are not checkpoints get one line each, and a
fine-tuning run starts from the loaded weights.

The RobustBench layouts below are written from RobustBench's model definitions (``resnet.py``, ``wide_resnet.py``,
``dm_wide_resnet.py`` in ``robustbench/model_zoo/architectures``), independently of atkit's code.
"""
from __future__ import annotations

import json
import re
import tarfile
import warnings
import zipfile
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atkit.core.checkpoint_sniff import sniff
from atkit.core.utils import file_sha256
from atkit.core.checkpoint_files import load_checkpoint_file
from atkit.workbench.cli import main as cli_main
from atkit.training.config import RunConfig
from atkit.models import NORMALIZATIONS, build_model, count_parameters
from atkit.models.external import guess_architecture, load_external_model, rename_to_atkit, split_normalization
from atkit.training.trainer import Trainer
from atkit.core.utils import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

CIFAR100 = NORMALIZATIONS["cifar100"]


# ------------------------------------------------------------------------------ RobustBench layouts
def _bn(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{n}", (c,)) for n in ("weight", "bias", "running_mean", "running_var")] + [
        (f"{prefix}.num_batches_tracked", ())]


def rb_resnet(num_classes: int = 10, bottleneck: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """``ResNet(BasicBlock | Bottleneck, [2, 2, 2, 2])`` of RobustBench's resnet.py."""
    exp = 4 if bottleneck else 1
    out = [("conv1.weight", (64, 3, 3, 3))] + _bn("bn1", 64)
    in_planes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for i in range(2):
            stride = 2 if layer > 1 and i == 0 else 1
            p = f"layer{layer}.{i}"
            if bottleneck:
                out += [(f"{p}.conv1.weight", (planes, in_planes, 1, 1))] + _bn(f"{p}.bn1", planes)
                out += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
                out += [(f"{p}.conv3.weight", (4 * planes, planes, 1, 1))] + _bn(f"{p}.bn3", 4 * planes)
            else:
                out += [(f"{p}.conv1.weight", (planes, in_planes, 3, 3))] + _bn(f"{p}.bn1", planes)
                out += [(f"{p}.conv2.weight", (planes, planes, 3, 3))] + _bn(f"{p}.bn2", planes)
            if stride != 1 or in_planes != exp * planes:
                out += [(f"{p}.shortcut.0.weight", (exp * planes, in_planes, 1, 1))] + _bn(f"{p}.shortcut.1",
                                                                                          exp * planes)
            in_planes = exp * planes
    return out + [("linear.weight", (num_classes, 512 * exp)), ("linear.bias", (num_classes,))]


def rb_preact_resnet18(num_classes: int = 10) -> list[tuple[str, tuple[int, ...]]]:
    """``PreActResNet(PreActBlockV2, [2, 2, 2, 2], bn_before_fc=True)`` (Rice et al. 2020's net in RobustBench)."""
    out = [("conv1.weight", (64, 3, 3, 3))]
    in_planes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for i in range(2):
            stride = 2 if layer > 1 and i == 0 else 1
            p = f"layer{layer}.{i}"
            out += _bn(f"{p}.bn1", in_planes) + [(f"{p}.conv1.weight", (planes, in_planes, 3, 3))]
            out += _bn(f"{p}.bn2", planes) + [(f"{p}.conv2.weight", (planes, planes, 3, 3))]
            if stride != 1 or in_planes != planes:
                out += [(f"{p}.shortcut.0.weight", (planes, in_planes, 1, 1))]
            in_planes = planes
    return out + _bn("bn", 512) + [("linear.weight", (num_classes, 512)), ("linear.bias", (num_classes,))]


def rb_wide_resnet(depth: int, widen: int, num_classes: int = 10,
                   sub_block1: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """``WideResNet(depth, num_classes, widen_factor, sub_block1)`` of RobustBench's wide_resnet.py (TRADES)."""
    n = (depth - 4) // 6
    ch = [16, 16 * widen, 32 * widen, 64 * widen]

    def group(name: str, cin: int, cout: int) -> list[tuple[str, tuple[int, ...]]]:
        rows = []
        for i in range(n):
            a = cin if i == 0 else cout
            p = f"{name}.layer.{i}"
            rows += _bn(f"{p}.bn1", a) + [(f"{p}.conv1.weight", (cout, a, 3, 3))]
            rows += _bn(f"{p}.bn2", cout) + [(f"{p}.conv2.weight", (cout, cout, 3, 3))]
            if a != cout:
                rows += [(f"{p}.convShortcut.weight", (cout, a, 1, 1))]
        return rows

    out = [("conv1.weight", (16, 3, 3, 3))] + group("block1", ch[0], ch[1])
    if sub_block1:
        out += group("sub_block1", ch[0], ch[1])
    out += group("block2", ch[1], ch[2]) + group("block3", ch[2], ch[3])
    return out + _bn("bn1", ch[3]) + [("fc.weight", (num_classes, ch[3])), ("fc.bias", (num_classes,))]


def rb_dm_wide_resnet(depth: int, width: int, num_classes: int = 10) -> list[tuple[str, tuple[int, ...]]]:
    """``DMWideResNet(num_classes, depth, width, activation_fn=Swish)`` of RobustBench's dm_wide_resnet.py."""
    n = (depth - 4) // 6
    ch = [16, 16 * width, 32 * width, 64 * width]
    out = [("mean", (3, 1, 1)), ("std", (3, 1, 1)), ("init_conv.weight", (16, 3, 3, 3))]
    for g in range(3):
        for i in range(n):
            a, b = (ch[g] if i == 0 else ch[g + 1]), ch[g + 1]
            p = f"layer.{g}.block.{i}"
            out += _bn(f"{p}.batchnorm_0", a) + [(f"{p}.conv_0.weight", (b, a, 3, 3))]
            out += _bn(f"{p}.batchnorm_1", b) + [(f"{p}.conv_1.weight", (b, b, 3, 3))]
            if a != b:
                out += [(f"{p}.shortcut.weight", (b, a, 1, 1))]
    return out + _bn("batchnorm", ch[3]) + [("logits.weight", (num_classes, ch[3])), ("logits.bias", (num_classes,))]


def rb_dm_preact_resnet18(num_classes: int = 10) -> list[tuple[str, tuple[int, ...]]]:
    """``DMPreActResNet(num_classes, depth=18, activation_fn=Swish)`` of RobustBench's dm_wide_resnet.py."""
    out = [("mean", (3, 1, 1)), ("std", (3, 1, 1)), ("conv_2d.weight", (64, 3, 3, 3))]
    in_planes = 64
    for g, planes in enumerate((64, 128, 256, 512)):
        for i in range(2):
            stride = 2 if g > 0 and i == 0 else 1
            p = f"layer_{g}.{i}"
            out += _bn(f"{p}.batchnorm_0", in_planes) + [(f"{p}.conv_2d_1.weight", (planes, in_planes, 3, 3))]
            out += _bn(f"{p}.batchnorm_1", planes) + [(f"{p}.conv_2d_2.weight", (planes, planes, 3, 3))]
            if stride != 1 or in_planes != planes:
                out += [(f"{p}.shortcut.weight", (planes, in_planes, 3, 3))]
            in_planes = planes
    return out + _bn("batchnorm", 512) + [("logits.weight", (num_classes, 512)), ("logits.bias", (num_classes,))]


def materialize(layout, seed: int = 0, stats=CIFAR100) -> "OrderedDict[str, torch.Tensor]":
    """Random values for a layout: weights ~ N(0, 1/fan_in), BN statistics away from 0/1 (so eval mode matters)."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for key, shape in layout:
        if key in ("mean", "std"):
            out[key] = torch.tensor(stats[0 if key == "mean" else 1]).view(3, 1, 1)
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(("running_mean", "bias")):
            out[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # a BN weight
            out[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            out[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return out


def n_parameters(layout) -> int:
    """Learnable elements of a layout (BN running statistics and normalization buffers are not parameters)."""
    return sum(int(torch.tensor(shape).prod()) for key, shape in layout
               if key not in ("mean", "std") and not key.endswith(("running_mean", "running_var",
                                                                      "num_batches_tracked")))


# ------------------------------------------------------------------------------ independent forward passes
def _bn_eval(sd, prefix, x):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], False, 0.0, 1e-5)


def _pad_same(x, stride):  # the DeepMind code: (1,1,1,1) at stride 1, right/bottom only at stride 2
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


def reference_dm_wide_resnet(sd, x, depth):
    """RobustBench's DMWideResNet.forward (Swish, eval-mode BN) written with functional ops on the state dict."""
    n = (depth - 4) // 6
    out = F.conv2d((x - sd["mean"]) / sd["std"], sd["init_conv.weight"], padding=1)
    for g in range(3):
        for i in range(n):
            p, stride = f"layer.{g}.block.{i}", (2 if g > 0 and i == 0 else 1)
            act = F.silu(_bn_eval(sd, f"{p}.batchnorm_0", out))
            h = F.conv2d(_pad_same(act, stride), sd[f"{p}.conv_0.weight"], stride=stride)
            h = F.conv2d(F.silu(_bn_eval(sd, f"{p}.batchnorm_1", h)), sd[f"{p}.conv_1.weight"], padding=1)
            short = F.conv2d(act, sd[f"{p}.shortcut.weight"], stride=stride) if f"{p}.shortcut.weight" in sd else out
            out = short + h
    out = F.avg_pool2d(F.silu(_bn_eval(sd, "batchnorm", out)), out.shape[-1]).flatten(1)
    return F.linear(out, sd["logits.weight"], sd["logits.bias"])


def reference_dm_preact_resnet18(sd, x):
    """RobustBench's DMPreActResNet.forward (depth 18, Swish, eval-mode BN) with functional ops."""
    out = F.conv2d((x - sd["mean"]) / sd["std"], sd["conv_2d.weight"], padding=1)
    for g in range(4):
        for i in range(2):
            p, stride = f"layer_{g}.{i}", (2 if g > 0 and i == 0 else 1)
            act = F.silu(_bn_eval(sd, f"{p}.batchnorm_0", out))
            short = (F.conv2d(_pad_same(out, stride), sd[f"{p}.shortcut.weight"], stride=stride)
                     if f"{p}.shortcut.weight" in sd else out)
            h = F.conv2d(_pad_same(act, stride), sd[f"{p}.conv_2d_1.weight"], stride=stride)
            out = F.conv2d(F.silu(_bn_eval(sd, f"{p}.batchnorm_1", h)), sd[f"{p}.conv_2d_2.weight"], padding=1) + short
    out = F.avg_pool2d(F.silu(_bn_eval(sd, "batchnorm", out)), out.shape[-1]).flatten(1)
    return F.linear(out, sd["logits.weight"], sd["logits.bias"])


def _images(n=3, size=32, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ full-size names and shapes
FULL = [
    ("resnet18", lambda c: rb_resnet(c), 11.17e6),
    ("resnet18_bottleneck", lambda c: rb_resnet(c, bottleneck=True), None),
    ("preact_resnet18", lambda c: rb_preact_resnet18(c), 11.17e6),
    ("wrn34_10", lambda c: rb_wide_resnet(34, 10, c, sub_block1=True), 46.16e6),
    ("wrn28_10", lambda c: rb_wide_resnet(28, 10, c), 36.48e6),
    ("dm_wrn28_10", lambda c: rb_dm_wide_resnet(28, 10, c), 36.48e6),
    ("dm_wrn70_16", lambda c: rb_dm_wide_resnet(70, 16, c), 266.8e6),
    ("dm_preact_resnet18", lambda c: rb_dm_preact_resnet18(c), 12.55e6),
]


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name,layout,literature", FULL, ids=[f[0] for f in FULL])
def test_full_size_robustbench_names_and_shapes_map_onto_the_model(name, layout, literature, num_classes):
    rows = layout(num_classes)
    with torch.device("meta"):  # a 267M-parameter model without allocating it
        model = build_model(name, num_classes)
    # Weights as shapes only; the normalization buffers with values, as the loader reads them.
    state = {k: torch.ones(shape) if k in ("mean", "std") else torch.empty(shape, device="meta") for k, shape in rows}
    body, stats, found = split_normalization(state)
    assert (found == "mean/std") == name.startswith("dm_")
    mapped, info = rename_to_atkit(model, body)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("input_")}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == want
    assert info["layout"] == "robustbench" and info["renamed"] > 0
    assert info["dropped"] == (["sub_block1.*"] if name == "wrn34_10" else [])
    expected = n_parameters([r for r in rows if not r[0].startswith("sub_block1.")])
    assert count_parameters(model) == expected
    if literature is not None and num_classes == 10:
        assert abs(expected - literature) / literature < 0.01
    assert guess_architecture(body) == f"--model {name}"


# ------------------------------------------------------------------------------ values and forward passes
def test_reduced_dm_wide_resnet_computes_robustbench_forward(tmp_path):
    sd = materialize(rb_dm_wide_resnet(10, 2, 10))
    torch.save({"state_dict": OrderedDict(("module." + k, v) for k, v in sd.items())}, tmp_path / "dm.pt")
    model, record = load_external_model("dm_wide_resnet", tmp_path / "dm.pt", num_classes=10,
                                        model_params={"depth": 10, "width": 2})
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_dm_wide_resnet(sd, x, 10), rtol=1e-4, atol=1e-5)
    norm = record["normalization"]
    assert norm["name"] == "cifar100" and norm["source"] == "checkpoint buffers mean/std"
    assert norm["mean"] == pytest.approx(CIFAR100[0]) and norm["std"] == pytest.approx(CIFAR100[1])
    assert record["keys"] == {"layout": "robustbench", "renamed": 2, "dropped": []}
    # ReLU instead of Swish, or the symmetric padding of an ordinary conv, would give other logits.
    relu = build_model("dm_wide_resnet", 10, depth=10, width=2, activation="relu", normalize=CIFAR100).eval()
    relu.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (relu(x) - model(x)).abs().max() > 1e-3


def test_dm_preact_resnet18_computes_robustbench_forward(tmp_path):
    sd = materialize(rb_dm_preact_resnet18(10), stats=NORMALIZATIONS["cifar10"])
    torch.save(sd, tmp_path / "r18.pt")
    model, record = load_external_model("dm_preact_resnet18", tmp_path / "r18.pt", num_classes=10)
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_dm_preact_resnet18(sd, x), rtol=1e-4, atol=1e-5)
    assert record["normalization"]["name"] == "cifar10"


@pytest.mark.parametrize("name,layout,params", [
    ("resnet18", rb_resnet(10), {}),
    ("preact_resnet18", rb_preact_resnet18(10), {}),
    ("wide_resnet", rb_wide_resnet(10, 2, 10, sub_block1=True), {"depth": 10, "widen_factor": 2}),
])
def test_robustbench_names_load_every_tensor_in_place(tmp_path, name, layout, params):
    sd = materialize(layout)
    sd["mu"], sd["sigma"] = torch.tensor([[[[0.5]], [[0.4]], [[0.3]]]]), torch.tensor([[[[0.2]], [[0.25]], [[0.3]]]])
    torch.save({"model": OrderedDict(("model." + k, v) for k, v in sd.items())}, tmp_path / "rb.pt")
    model, record = load_external_model(name, tmp_path / "rb.pt", num_classes=10, model_params=params)
    # Both definitions register their modules in the same order, so the k-th tensor of each must be the same one.
    source = [v for k, v in sd.items() if not k.startswith("sub_block1.") and k not in ("mu", "sigma")]
    loaded = [v for k, v in model.state_dict().items() if not k.startswith("input_")]
    assert len(source) == len(loaded) and all(torch.equal(a, b) for a, b in zip(source, loaded))
    head = "fc" if name == "wide_resnet" else "linear"
    assert torch.equal(model.fc.weight, sd[f"{head}.weight"])
    if name == "wide_resnet":
        assert torch.equal(model.bn.weight, sd["bn1.weight"])
        assert torch.equal(model.block2[0].shortcut.weight, sd["block2.layer.0.convShortcut.weight"])
        assert record["keys"]["dropped"] == ["sub_block1.*"]
    # The wrapper's mu/sigma buffers are the model's normalization: (x - mu) / sigma before the first layer.
    assert record["normalization"]["source"] == "checkpoint buffers mu/sigma"
    plain = build_model(name, 10, normalize="none", **params).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("input_")})
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain((x - sd["mu"]) / sd["sigma"]), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ normalization stated or detected
def _save_resnet_like(tmp_path, stats=None):
    sd = materialize(rb_wide_resnet(10, 1, 10))
    if stats is not None:
        sd["mean"], sd["std"] = torch.tensor(stats[0]).view(3, 1, 1), torch.tensor(stats[1]).view(3, 1, 1)
    torch.save(sd, tmp_path / "w.pt")
    return tmp_path / "w.pt"


def test_normalization_stated_detected_or_default(tmp_path):
    opts = {"depth": 10, "widen_factor": 1}
    path = _save_resnet_like(tmp_path)
    with pytest.warns(UserWarning, match=r"holds no normalization buffers and none was stated.*"
                                         r"model_params.normalize=cifar10"):
        model, rec = load_external_model("wide_resnet", path, num_classes=10, model_params=opts)
    assert model.input_mean is None and rec["normalization"]["name"] == "none"
    assert rec["normalization"]["source"].startswith("model default (none")
    stated_forms = ("cifar10", [list(NORMALIZATIONS["cifar10"][0]), list(NORMALIZATIONS["cifar10"][1])],
                    {"mean": NORMALIZATIONS["cifar10"][0], "std": NORMALIZATIONS["cifar10"][1]}, "none")
    for stated in stated_forms:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a stated normalization, "none" included, is not warned about
            model, rec = load_external_model("wide_resnet", path, num_classes=10,
                                             model_params={**opts, "normalize": stated})
        if stated == "none":
            assert model.input_mean is None and rec["normalization"]["source"] == "stated (model_params.normalize)"
            continue
        assert model.input_mean.flatten().tolist() == pytest.approx(NORMALIZATIONS["cifar10"][0])
        assert rec["normalization"]["name"] == "cifar10" and rec["normalization"]["source"].startswith("stated")
    with pytest.raises(ConfigError, match=r"unknown normalization 'cifar'.*cifar10, cifar100"):
        load_external_model("wide_resnet", path, num_classes=10, model_params={**opts, "normalize": "cifar"})
    # A checkpoint with its own buffers: used when nothing is stated, refused when the statement contradicts it.
    path = _save_resnet_like(tmp_path, CIFAR100)
    model, rec = load_external_model("wide_resnet", path, num_classes=10, model_params=opts)
    assert rec["normalization"]["name"] == "cifar100"
    for stated in ("cifar10", "none"):
        with pytest.raises(ConfigError, match=r"carries its own input normalization \(mean/std: cifar100\).*"
                                              r"leave model_params.normalize out"):
            load_external_model("wide_resnet", path, num_classes=10, model_params={**opts, "normalize": stated})
    _, rec = load_external_model("wide_resnet", path, num_classes=10, model_params={**opts, "normalize": "cifar100"})
    assert rec["normalization"]["source"] == "stated (model_params.normalize), equal to the checkpoint buffers mean/std"


def test_dm_model_without_buffers_uses_its_cifar10_default(tmp_path):
    sd = materialize(rb_dm_wide_resnet(10, 1, 10))
    del sd["mean"], sd["std"]
    torch.save(sd, tmp_path / "dm.pt")
    model, rec = load_external_model("dm_wide_resnet", tmp_path / "dm.pt", num_classes=10,
                                     model_params={"depth": 10, "width": 1})
    assert rec["normalization"] == {"name": "cifar10", "mean": list(NORMALIZATIONS["cifar10"][0]),
                                    "std": list(NORMALIZATIONS["cifar10"][1]), "source": "model default"}
    assert model.input_std.flatten().tolist() == pytest.approx(NORMALIZATIONS["cifar10"][1])


# ------------------------------------------------------------------------------ the command line
def _eval(tmp_path, capsys, *args):
    rc = cli_main(["eval", *args, "--dataset", "synthetic", "--set", "data.n_train=16", "--set", "data.n_test=24",
                   "--set", "data.image_size=8", "--set", "data.num_classes=4", "--n", "12", "--batch-size", "12",
                   "--attacks", "clean,pgd10", "--device", "cpu", "--quiet"])
    return rc, capsys.readouterr()


DM_ARGS = ("--model", "dm_wide_resnet", "--set", "model_params.depth=10", "--set", "model_params.width=1")


def test_cli_evaluates_and_compares_robustbench_checkpoints_with_provenance(tmp_path, capsys):
    outs = []
    for seed in (0, 1):
        path = tmp_path / f"dm{seed}.pt"
        torch.save(materialize(rb_dm_wide_resnet(10, 1, 4), seed=seed), path)
        out = tmp_path / f"dm{seed}-eval.json"
        rc, cap = _eval(tmp_path, capsys, "--checkpoint", str(path), *DM_ARGS, "--out", str(out))
        assert rc == 0, cap.err
        prov = json.loads(out.read_text())["provenance"]
        assert prov["checkpoint"]["sha256"] == file_sha256(path)
        assert prov["model"]["name"] == "dm_wide_resnet" and prov["model"]["params"] == {"depth": 10, "width": 1}
        assert prov["model"]["normalization"]["name"] == "cifar100"
        assert prov["model"]["normalization"]["source"] == "checkpoint buffers mean/std"
        assert prov["model"]["keys"]["layout"] == "robustbench"
        outs.append(out)
    assert cli_main(["compare", str(outs[0]), str(outs[1])]) == 0
    printed = capsys.readouterr().out
    assert "n = 12 identical test images" in printed and "exact McNemar p" in printed
    assert printed.count("dm_wide_resnet, normalization cifar100") == 2


def test_cli_wrong_architecture_names_the_one_it_looks_like(tmp_path, capsys):
    path = tmp_path / "dm.pt"
    torch.save(materialize(rb_dm_wide_resnet(10, 1, 4)), path)
    rc, cap = _eval(tmp_path, capsys, "--checkpoint", str(path), "--model", "wide_resnet")
    assert rc == 2 and len(cap.err.strip().splitlines()) == 1
    assert "does not fit model WideResNet" in cap.err and "missing keys" in cap.err
    assert ("looks like --model dm_wide_resnet --set model_params.depth=10 --set model_params.width=1 with 4 outputs"
            in cap.err)


def _html(path):
    path.write_bytes(b"\n<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>")


def _tar(path):
    inner = path.with_name("inner.pt")
    torch.save({"w": torch.ones(2)}, inner)
    with tarfile.open(path, "w") as tf:
        tf.add(inner, arcname="model/weights.pt")


def _zip(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("release/weights.pth", b"x" * 10)
        zf.writestr("release/README.txt", b"hello")


class PickledNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)


def _whole(path, legacy=False):
    torch.save(PickledNet(), path, _use_new_zipfile_serialization=not legacy)


CASES = [
    ("html", _html, r"is an HTML page titled 'Google Drive - Virus scan warning', not a checkpoint.*download the file "
                    r"again"),
    ("tar", _tar, r"is a tar archive, not a PyTorch checkpoint \(it holds model/weights\.pt\); unpack it"),
    ("zip", _zip, r"is a zip archive, not a PyTorch checkpoint \(it holds release/weights\.pth, release/README\.txt\)"
                  r"; unzip it"),
    ("pickled", _whole, r"is a whole pickled model \(torch\.save\(model\), class "
                        r"test_external_models\.PickledNet\), not a state dict.*convert it once"),
    ("pickled-legacy", lambda p: _whole(p, legacy=True), r"is a whole pickled model .*class "
                                                         r"test_external_models\.PickledNet"),
]


@pytest.mark.parametrize("kind,make,message", CASES, ids=[c[0] for c in CASES])
def test_cli_files_that_are_not_checkpoints_get_one_line(tmp_path, capsys, kind, make, message, monkeypatch):
    path = tmp_path / "model.pt"
    make(path)
    # Nothing reaches torch.load, let alone unpickles: the first bytes decide.
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    rc, cap = _eval(tmp_path, capsys, "--checkpoint", str(path), "--model", "small_cnn")
    assert rc == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"atkit: error: checkpoint {str(path)!r}"), cap.err
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize("content,words", [
    (b"", "is empty (0 bytes)"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 3\n", "is a Git LFS pointer"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "is gzip-compressed"),
    (len(b'{"w":{}}').to_bytes(8, "little") + b'{"w":{}}', "is a safetensors file"),
])
def test_other_failed_downloads_are_named(tmp_path, content, words):
    (tmp_path / "f.pt").write_bytes(content)
    assert words in sniff(tmp_path / "f.pt")


def test_real_checkpoints_pass_the_sniffer(tmp_path):
    sd = {"fc.weight": torch.ones(2, 2)}
    torch.save(sd, tmp_path / "new.pt")
    torch.save(sd, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    for name in ("new.pt", "old.pt"):
        assert sniff(tmp_path / name) is None
        assert torch.equal(load_checkpoint_file(tmp_path / name)["fc.weight"], sd["fc.weight"])


# ------------------------------------------------------------------------------ fine-tuning from such a checkpoint
DATA = {"n_train": 64, "n_test": 32, "image_size": 8, "num_classes": 4}


def _finetune_config(tmp_path, init, **kw):
    return RunConfig.from_dict(dict(
        method="pgd_at", dataset="synthetic", data=DATA, model="dm_wide_resnet",
        model_params={"depth": 10, "width": 1, **kw}, threat={"steps": 2}, batch_size=32, lr=0.05,
        schedule="constant", epochs=3, init_checkpoint=str(init), out_dir=str(tmp_path / "runs"),
        eval={"n_test": 32, "pgd_steps": 0, "final_attacks": ["clean"]}))


def test_finetuning_starts_from_the_external_weights_and_trains(tmp_path):
    sd = materialize(rb_dm_wide_resnet(10, 1, 4))
    init = tmp_path / "released.pt"
    torch.save({"state_dict": OrderedDict(("module." + k, v) for k, v in sd.items())}, init)
    # The file carries CIFAR-100 constants; the run's model defaults to CIFAR-10: refused, naming what to set.
    with pytest.raises(ConfigError, match=r"init_checkpoint .*released\.pt.* carries its own input normalization "
                                          r"\(mean/std: cifar100\), but the model applies cifar10: set "
                                          r"model_params.normalize to cifar100"):
        Trainer.new(_finetune_config(tmp_path, init), progress=False)
    trainer = Trainer.new(_finetune_config(tmp_path, init, normalize="cifar100"), progress=False)
    expected = {"init_conv.weight": sd["init_conv.weight"], "fc.weight": sd["logits.weight"],
                "fc.bias": sd["logits.bias"], "layer.1.block.0.shortcut.weight": sd["layer.1.block.0.shortcut.weight"],
                "layer.2.block.0.batchnorm_1.weight": sd["layer.2.block.0.batchnorm_1.weight"]}
    seen = {}

    def before_first_step(optimizer, args, kwargs):
        if not seen:
            seen.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    trainer.optimizer.register_step_pre_hook(before_first_step)
    trainer.fit()
    for key, value in expected.items():  # parameters only: BN statistics move in the first forward pass
        assert torch.equal(seen[key], value), key
    assert torch.equal(seen["input_mean"].flatten(), torch.tensor(CIFAR100[0]))
    after = trainer.model.state_dict()
    assert not torch.equal(after["init_conv.weight"], sd["init_conv.weight"])
    losses = [r["train_loss"] for r in trainer.history]
    assert trainer.status == "finished" and losses[-1] < losses[0], losses
