"""One policy each: the eval-attack name grammar (config and evaluate agree), the threat defaults, the DUCAT
protocol view, the robust metric and Mean/NRR, the AutoAttack runs as registered attacks, the device of a model."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from dataclasses import dataclass, field

import atkit.workbench.results
from atkit.experiments import measures
from atkit.attacks import THREAT_DEFAULTS, ThreatModel, pgd, resolve_threat
from atkit.training.config import RunConfig
from atkit.evaluation import (EVAL_ATTACKS, EvalAttack, evaluate, parse_attack, register_eval_attack, robust_attacks,
                              strongest, trade_off_scores)
from atkit.methods import ThreatModel as MethodsThreatModel
from atkit.models import MergedDummyModel, build_model
from atkit.models.dummy import protocol_model
from atkit.core.utils import ConfigError, model_device

ACCEPTED = ("clean", "pgd7", "pgd20", "cw", "cw50", "fgsm", "random")
REFUSED = ("pgd05", "pgd0", "pgd", "pgd010", "cw0", "aa3", "pgd-20", "PGD20", "pgd 20", "autoattack")


def _config_with(name: str) -> RunConfig:
    return RunConfig.from_dict({"method": "pgd_at", "eval": {"final_attacks": ["clean", name]}})


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    return model, torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("name", ACCEPTED)
def test_config_and_evaluate_accept_the_same_names(name):
    model, x, y = _tiny()
    assert _config_with(name).eval.final_attacks == ["clean", name]
    res = evaluate(model, x, y, attacks=(name,), batch_size=4)
    assert 0.0 <= res.accuracy[name] <= 100.0
    if name.startswith(("pgd", "cw")) and name != "cw":
        assert res.details[name]["steps"] == int(name.lstrip("pgdcw"))  # cw50 is 50 CW steps, not the default 30


@pytest.mark.parametrize("name", REFUSED)
def test_config_and_evaluate_refuse_the_same_names_with_the_same_message(name):
    model, x, y = _tiny()
    with pytest.raises(ConfigError) as from_config:
        _config_with(name)
    with pytest.raises(ConfigError) as from_evaluate:
        evaluate(model, x, y, attacks=(name,))
    assert str(from_config.value) == str(from_evaluate.value)
    assert str(from_config.value).startswith(f"unknown evaluation attack {name!r}.")


def test_the_error_names_the_bad_value_the_closest_and_every_spelling():
    with pytest.raises(ConfigError) as err:
        parse_attack("pgd05")
    message = str(err.value)
    assert "'pgd05'" in message and "Did you mean" in message
    accepted = message.split("Accepted: ")[1].rstrip(".").split(", ")
    assert sorted(accepted) == sorted(["aa", "apgd", "apgd_dlr", "clean", "cw", "cwN", "fgsm", "pgd10", "pgd100",
                                       "pgd20", "pgdN", "random", "square", "NAME(key=value)"])
    with pytest.raises(ConfigError, match="Did you mean 'pgd20'"):
        parse_attack("pgd-20")
    with pytest.raises(ConfigError, match="must be strings"):
        parse_attack(20)


def test_a_registered_attack_takes_its_number_and_settings_from_its_params():
    assert parse_attack("cw").params.steps == 30 and parse_attack("cw").label() == "cw"
    assert parse_attack("cw50").params.steps == 50 and parse_attack("pgd3").label() == "pgd3"
    assert parse_attack("pgd50(random_start=none)").params.random_start == "none"
    assert parse_attack({"aa": {"n_iter": 20}}).label() == "aa(n_iter=20)"
    with pytest.raises(ConfigError, match="'probe9'"):
        parse_attack("probe9")

    @dataclass
    class ProbeParams:
        steps: int = field(default=4, metadata={"help": "steps", "range": (1, None)})

    @register_eval_attack
    class Probe(EvalAttack):
        """A CE-PGD under another name: a new file is a new attack everywhere."""

        name = "probe"
        Params = ProbeParams
        suffix = "steps"
        strength = 11.0

        def perturb(self, target, x, y):
            t = target.threat
            return pgd(target.model, x, y, eps=t["eps"], step_size=t["step_size"], steps=self.params.steps,
                       norm=t["norm"], loss="ce", random_start="uniform", bn_mode="eval")

    try:
        assert parse_attack("probe").params.steps == 4 and parse_attack("probe9").params.steps == 9
        assert _config_with("probe9").eval.final_attacks == ["clean", "probe9"]  # config reads the same registry
        assert strongest(["pgd20", "probe9"]) == "probe9"  # its rank comes from its file
        model, x, y = _tiny()
        res = evaluate(model, x, y, attacks=("clean", "probe9"), batch_size=4)
        assert res.robust_metric == "probe9" and res.details["probe9"]["passes"]["backward_per_image"] == 9
    finally:
        del EVAL_ATTACKS["probe"]
    with pytest.raises(ConfigError):
        parse_attack("probe9")


def test_threat_defaults_have_one_source():
    linf, l2 = THREAT_DEFAULTS["linf"], THREAT_DEFAULTS["l2"]
    assert MethodsThreatModel is ThreatModel  # atkit.methods re-exports the one class
    assert ThreatModel().to_dict() == {"norm": "linf", **linf}
    assert ThreatModel.l2().to_dict() == {"norm": "l2", **l2}
    assert ThreatModel.from_dict({"norm": "l2"}).to_dict() == {"norm": "l2", **l2}
    assert RunConfig.from_dict({"method": "pgd_at"}).threat_model() == ThreatModel()
    assert resolve_threat(None) == {"norm": "linf", "eps": linf["eps"], "step_size": linf["step_size"]}
    assert resolve_threat({"norm": "l2"}) == {"norm": "l2", "eps": l2["eps"], "step_size": l2["step_size"]}
    assert resolve_threat(ThreatModel.l2(eps=0.25)) == {"norm": "l2", "eps": 0.25, "step_size": l2["step_size"]}
    with pytest.raises(ConfigError, match="'epsilon'"):
        resolve_threat({"epsilon": 0.1})
    with pytest.raises(ConfigError, match="'l3'"):
        resolve_threat({"norm": "l3"})


def test_protocol_model_is_the_view_the_attacks_see():
    plain = build_model("small_cnn", 4)
    assert protocol_model(plain, None) == (plain, None)
    with pytest.raises(ConfigError, match="dummy classes"):
        protocol_model(plain, "adaptive")
    dummy = build_model("small_cnn", 4, dummy_classes=True).eval()
    assert protocol_model(dummy, None) == (dummy, "published")
    assert protocol_model(dummy, "published") == (dummy, "published")
    merged, used = protocol_model(dummy, "adaptive_max")
    assert used == "adaptive_max" and isinstance(merged, MergedDummyModel) and merged.how == "max"
    assert not merged.training  # in the model's mode: a forward never updates its BatchNorm statistics
    with pytest.raises(ConfigError, match="Did you mean 'adaptive'"):
        protocol_model(dummy, "adaptiv")


def test_robust_metric_and_mean_nrr_are_one_policy():
    assert atkit.workbench.results.trade_off_scores is trade_off_scores
    assert strongest(["clean", "pgd10", "pgd20", "cw"]) == "pgd20"
    assert strongest(["clean", "pgd100", "apgd"]) == "apgd" and strongest(["aa", "apgd"]) == "aa"
    assert strongest(["clean", "pgd05", "mean"]) is None  # not attack names: never a robust metric
    assert robust_attacks(["clean", "pgd20", "cw50", "fgsm", "aa", "nrr"]) == ["pgd20", "cw50", "aa"]
    mean, nrr = trade_off_scores(80.0, 40.0)
    assert mean == 60.0 and math.isclose(nrr, 2 * 80 * 40 / 120)
    assert trade_off_scores(80.0, float("nan")) == (None, None) and trade_off_scores(None, 1.0) == (None, None)
    assert trade_off_scores(0.0, 0.0) == (0.0, 0.0)


def test_autoattack_runs_are_registered_attacks_with_their_budgets():
    aa, apgd = parse_attack("aa").describe({"norm": "linf", "eps": 0.1}), parse_attack("apgd").describe({})
    assert aa["version"] == "standard" and aa["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert apgd["version"] == "custom" and apgd["attacks"] == ["apgd-ce", "apgd-dlr"] and apgd["n_restarts"] == 1
    assert parse_attack("aa(n_iter=20)").describe({})["version"] == "standard-reduced"
    assert parse_attack("aa(n_iter=20)").display_name().endswith("not standard)")
    assert measures.autoattack_spec("apgd", 50) == {"name": "apgd", "n_iter": 50}
    assert parse_attack(measures.autoattack_spec(["apgd-ce"], 2, 1)).describe({})["attacks"] == ["apgd-ce"]
    with pytest.raises(ConfigError, match="'fast'.*Accepted: <list of attacks>, apgd, standard"):
        measures.autoattack_spec("fast")
    with pytest.raises(ConfigError, match="'apgd_ce'"):
        parse_attack("aa(attacks=[apgd_ce])")


def test_model_device_is_the_first_parameter_or_buffer_else_the_cpu():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(nn.BatchNorm1d(2, affine=False, device="meta")) == torch.device("meta")  # buffers only
    assert model_device(nn.ReLU()) == torch.device("cpu")
