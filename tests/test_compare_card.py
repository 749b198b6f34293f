"""Provenance of evaluations, AutoAttack resume keyed by batch size, `atkit compare` (two runs, and two arms of runs
paired by seed) and `atkit card`."""
import json

import pytest
import torch
import yaml

from atkit.evaluation.autoattack import run_autoattack
from atkit.evaluation.card import make_card
from atkit.workbench.cli import main as cli_main
from atkit.evaluation.compare import compare_arms, compare_evaluations, comparison_table, per_sample_flags
from atkit.evaluation import EvalResult, evaluate
from atkit.workbench.results import collect_runs
from atkit.core.stats import mcnemar_test, paired_difference, pool_paired_differences, seed_difference, wilson_interval
from atkit.core.utils import ConfigError
from helpers import TinyConvNet, fit_blobs, make_blobs

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = fit_blobs(TinyConvNet(), steps=100)
    x, y = make_blobs(24, seed=1)
    return model, x, y


# ------------------------------------------------------------------------------------ provenance
def test_evaluation_json_carries_intervals_and_provenance(trained, tmp_path):
    model, x, y = trained
    res = evaluate(model, x, y, attacks=["clean", "pgd10", "apgd"], batch_size=8, device="cpu", num_classes=4)
    d = res.to_dict()
    k = int(res.per_sample["pgd10"].sum())
    assert d["n_correct"]["pgd10"] == k and d["n"] == 24
    assert d["ci95"]["pgd10"] == pytest.approx([100 * v for v in wilson_interval(k, 24)])
    prov = d["provenance"]
    assert prov["batch_size"] == 8 and prov["precision"] == "fp32" and prov["device"]["device"] == "cpu"
    assert prov["software"]["torch"] == torch.__version__ and prov["software"]["pyautoattack"]
    assert prov["attacks"]["pgd10"]["steps"] == 10 and prov["attacks"]["pgd10"]["eps"] == pytest.approx(EPS)
    stages = prov["attacks"]["apgd"]["budget"]["stages"]
    assert stages["apgd-ce"]["n_iter"] == 100 and stages["apgd-dlr"]["n_restarts"] == 1
    assert prov["attacks"]["apgd"]["budget"]["seed"] == 0
    back = EvalResult.from_dict(json.loads(json.dumps(d)))
    assert back.provenance == prov


def test_autoattack_budget_records_standard_settings(trained):
    from atkit.evaluation.autoattack import STANDARD_ATTACKS, _build_autoattack, _WarningRecorder
    from atkit.core.provenance import autoattack_budget

    model, _, _ = trained
    cfg = {"version": "standard", "norm": "linf", "eps": EPS, "attacks": list(STANDARD_ATTACKS), "seed": 0,
           "n_iter": None, "n_restarts": None, "square_queries": None}
    budget = autoattack_budget(_build_autoattack(model, cfg, 4, torch.device("cpu"), _WarningRecorder()), list(STANDARD_ATTACKS))
    stages = budget["stages"]
    assert budget["version"] == "standard" and list(stages) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert stages["apgd-ce"] == {"n_iter": 100, "n_restarts": 1, "eot_iter": 1}
    assert stages["apgd-t"]["n_target_classes"] == 3  # 4 classes: every other class
    assert stages["square"]["n_queries"] == 5000 and stages["fab-t"]["n_restarts"] == 1


AA_KW = dict(eps=EPS, version="custom", attacks=["apgd-ce"], n_iter=5, n_restarts=1)


def test_autoattack_resume_with_another_batch_size_starts_over(trained, tmp_path):
    model, x, y = trained
    state = tmp_path / "aa.json"
    first = run_autoattack(model, x, y, batch_size=8, state_path=state, **AA_KW)
    same = run_autoattack(model, x, y, batch_size=8, state_path=state, **AA_KW)
    assert same.resumed and same.ran_now == []
    other = run_autoattack(model, x, y, batch_size=6, state_path=state, **AA_KW)
    fresh = run_autoattack(model, x, y, batch_size=6, **AA_KW)
    assert not other.resumed and other.ran_now == ["apgd-ce"]
    assert torch.equal(other.x_adv, fresh.x_adv) and torch.equal(other.correct, fresh.correct)
    assert json.loads(state.read_text())["config"]["batch_size"] == 6  # the state now belongs to the new batching
    assert first.config["batch_size"] == 8


# --------------------------------------------------------------------------------------- compare
IMAGES = {"dataset": "synthetic", "fingerprint": "abc123", "split": "test", "n": 10, "of": 10, "selection": "all",
          "indices": "all"}


def _eval_dict(flags_clean, flags_aa, images=IMAGES, **extra):
    per_sample = {"clean": "".join(map(str, flags_clean)), "aa": "".join(map(str, flags_aa))}
    d = {"format": "atkit-eval/1", "n": len(flags_clean), "per_sample": per_sample,
         "accuracy": {k: 100 * v.count("1") / len(v) for k, v in per_sample.items()}, "threat": {"norm": "linf",
                                                                                                   "eps": EPS},
         "details": {"aa": {"attack": "autoattack", "version": "standard"}}, "images": images}
    d.update(extra)
    return d


A_AA = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1]
B_AA = [1, 0, 0, 0, 1, 1, 0, 0, 1, 1]


def test_compare_exact_mcnemar_and_cli(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(_eval_dict([1] * 10, A_AA)))
    (tmp_path / "b.json").write_text(json.dumps(_eval_dict([1] * 10, B_AA)))
    cmp = compare_evaluations(tmp_path / "a.json", tmp_path / "b.json")
    assert cmp["attack"] == "aa"
    assert cmp["test"] == mcnemar_test([bool(v) for v in A_AA], [bool(v) for v in B_AA]).to_dict()
    assert cmp["test"]["only_a"] == 3 and cmp["test"]["only_b"] == 0
    assert cmp["test"]["p_value"] == pytest.approx(0.25)  # 3 of 3 discordant pairs: 2 * 0.5**3
    assert cli_main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "exact McNemar p = 0.25" in out and "A - B = +30.00 points" in out and "n = 10 identical" in out
    assert cli_main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--attack", "clean",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["p_value"] == 1.0


@pytest.mark.parametrize("change,what", [({"fingerprint": "other"}, "data fingerprints differ"),
                                         ({"indices": [0, 1, 2], "n": 3, "selection": "stratified(seed=0)"},
                                          "test indices differ")])
def test_compare_refuses_different_images(tmp_path, capsys, change, what):
    (tmp_path / "a.json").write_text(json.dumps(_eval_dict([1] * 10, A_AA)))
    (tmp_path / "b.json").write_text(json.dumps(_eval_dict([1] * 10, B_AA, images={**IMAGES, **change})))
    with pytest.raises(ConfigError, match=f"evaluated on different images.*{what}"):
        compare_evaluations(tmp_path / "a.json", tmp_path / "b.json")
    assert cli_main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert what in capsys.readouterr().err


def test_dummy_class_worst_case_is_per_image_over_protocols():
    published = _eval_dict([1] * 4 + [0] * 6, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    adaptive = _eval_dict([1] * 4 + [0] * 6, [1, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    both = {"protocols": {"published": published, "adaptive": adaptive}}
    assert per_sample_flags(both, "aa", "worst") == [True, False, True] + [False] * 7
    assert per_sample_flags(both, "aa", "published") == [True, True, True] + [False] * 7


def _fake_run(root, name, method, flags, seed=0):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": method, "dataset": "synthetic", "model": "small_cnn",
                                                     "seed": seed, "epochs": 3}))
    (run / "metrics.json").write_text(json.dumps({"status": "finished", "history": []}))
    final = _eval_dict([1] * 10, flags)
    images = final.pop("images")
    (run / "eval.json").write_text(json.dumps({"final": final, "images": images, "best_epoch": 3}))
    return run


def test_comparison_table_pairs_method_with_its_base(tmp_path):
    _fake_run(tmp_path, "base", "pgd_at", B_AA)
    _fake_run(tmp_path, "rpat", "pgd_at+rpat", A_AA)
    _fake_run(tmp_path, "rpat-s1", "pgd_at+rpat", A_AA, seed=1)  # no seed-1 baseline: not paired
    table = comparison_table(collect_runs(tmp_path))
    assert len(table) == 1
    row = table.iloc[0]
    assert row["method"].startswith("pgd_at+rpat") and row["base"] == "pgd_at" and row["attack"] == "aa"
    assert row["only method"] == 3 and row["McNemar p"] == pytest.approx(0.25)
    assert row["difference"].startswith("+30.00")


# ------------------------------------------------------------------------------------------ card
STANDARD_BUDGET = {"version": "standard", "seed": 0, "stages": {
    "apgd-ce": {"n_iter": 100, "n_restarts": 1}, "apgd-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
    "fab-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9}, "square": {"n_queries": 5000, "n_restarts": 1}}}


def _card_eval(budget=STANDARD_BUDGET, images=IMAGES):
    d = _eval_dict([1] * 9 + [0], A_AA, images=images)
    d["details"]["aa"]["budget"] = budget
    d["provenance"] = {"model": {"name": "wrn34_10"}, "images": images}
    return d


def test_card_fields_and_dummy_class_worst_case(tmp_path, capsys):
    (tmp_path / "ev.json").write_text(json.dumps(_card_eval()))
    card = make_card(tmp_path / "ev.json", name="Tiny", venue="none")
    assert card["clean_acc"] == "90.00" and card["autoattack_acc"] == "80.00" and card["eps"] == "8/255"
    assert card["architecture"] == "WideResNet-34-10" and card["dataset"] == "synthetic"
    assert card["number_forward_passes"] == 1 and card["additional_data"] is False and card["unreliable"] is False
    assert card["atkit"]["autoattack"]["ci95"] == pytest.approx([100 * v for v in wilson_interval(8, 10)])
    assert card["atkit"]["provenance"]["model"]["name"] == "wrn34_10"
    # A dummy-class evaluation: the card's number is the worst case over the protocols, every protocol beside it.
    adaptive = _card_eval()
    adaptive["per_sample"]["aa"] = "0" * 5 + "1" * 5
    (tmp_path / "dummy.json").write_text(json.dumps({"protocols": {"published": _card_eval(), "adaptive": adaptive},
                                                     "images": IMAGES}))
    card = make_card(tmp_path / "dummy.json")
    assert card["autoattack_acc"] == "40.00"  # only images 5..9 survive both, and image 6 fails published
    assert card["atkit"]["autoattack_by_protocol"]["published"]["accuracy"] == 80.0
    out = tmp_path / "card.json"
    assert cli_main(["card", str(tmp_path / "ev.json"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["autoattack_acc"] == "80.00"


@pytest.mark.parametrize("budget,images,what", [
    ({**STANDARD_BUDGET, "stages": {**STANDARD_BUDGET["stages"], "apgd-ce": {"n_iter": 10, "n_restarts": 1}}}, IMAGES,
     "apgd-ce n_iter=10, standard is 100"),
    (STANDARD_BUDGET, {**IMAGES, "n": 5, "indices": [0, 1, 2, 3, 4], "selection": "stratified(seed=0)"},
     "evaluated on 5 of 10 test images, not the full test set"),
    (None, IMAGES, "budget is not recorded"),
])
def test_card_refuses_non_standard_evaluation(tmp_path, capsys, budget, images, what):
    (tmp_path / "ev.json").write_text(json.dumps(_card_eval(budget, images)))
    with pytest.raises(ConfigError, match="not a standard AutoAttack evaluation on the full test set"):
        make_card(tmp_path / "ev.json")
    assert cli_main(["card", str(tmp_path / "ev.json"), "--out", str(tmp_path / "c.json")]) == 2
    assert what in capsys.readouterr().err and not (tmp_path / "c.json").exists()


def test_compare_without_aa_uses_the_worst_case_over_common_robust_attacks(tmp_path):
    def ev(pgd, cw):
        d = _eval_dict([1] * 10, pgd)
        d["per_sample"] = {"clean": "1" * 10, "pgd20": "".join(map(str, pgd)), "cw": "".join(map(str, cw))}
        return d

    (tmp_path / "a.json").write_text(json.dumps(ev(A_AA, [1] * 5 + [0] * 5)))
    (tmp_path / "b.json").write_text(json.dumps(ev(B_AA, B_AA)))
    cmp = compare_evaluations(tmp_path / "a.json", tmp_path / "b.json")
    assert cmp["attack"] == "worst of pgd20, cw"
    assert cmp["test"]["acc_a"] == 40.0  # images 0-4 survive CW, of them 3 fails PGD


# ------------------------------------------------------------------------------ arms of runs, paired by seed
ARM_A = {0: [1, 1, 1, 0, 1, 1, 0, 1, 1, 1], 1: [1, 1, 0, 0, 1, 1, 0, 1, 0, 1], 2: [1, 0, 1, 1, 1, 1, 0, 1, 1, 0]}
ARM_B = {0: [1, 0, 0, 0, 1, 1, 0, 0, 1, 1], 1: [1, 1, 0, 1, 1, 0, 0, 0, 0, 1], 2: [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]}


def _arm_run(root, name, method, seed, flags, **extra):
    run = _fake_run(root, name, method, flags, seed=seed)
    if extra:
        ev = json.loads((run / "eval.json").read_text())
        for key, value in extra.items():
            ev["final"][key] = value
        (run / "eval.json").write_text(json.dumps(ev))
    return run


def test_compare_arms_pools_per_image_differences_paired_by_seed(tmp_path, capsys):
    a = [_arm_run(tmp_path, f"a{s}", "pgd_at+rpat", s, ARM_A[s]) for s in (2, 0, 1)]  # given out of seed order
    b = [_arm_run(tmp_path, f"b{s}", "pgd_at", s, ARM_B[s]) for s in (0, 1, 2)]
    cmp = compare_arms(a, b, margin=1.0)
    assert cmp["paired_by"] == "seed" and cmp["seeds"] == [0, 1, 2] and cmp["attack"] == "aa"
    assert [x.rsplit("/", 1)[-1] for x in cmp["a"]] == ["a0 [final]", "a1 [final]", "a2 [final]"]
    flags = lambda arm, s: [bool(v) for v in arm[s]]
    diffs = [paired_difference(flags(ARM_A, s), flags(ARM_B, s)) for s in (0, 1, 2)]
    pooled = pool_paired_differences(diffs)
    assert cmp["pooled"]["estimate"] == pytest.approx(pooled.estimate, abs=1e-4)
    assert cmp["pooled"]["ci95"] == pytest.approx(list(pooled.interval()), abs=1e-4)
    assert cmp["pooled"]["q"] == pytest.approx(pooled.q, abs=1e-4) and cmp["pooled"]["df"] == 2
    over = seed_difference([10 * sum(ARM_A[s]) for s in (0, 1, 2)], [10 * sum(ARM_B[s]) for s in (0, 1, 2)])
    assert cmp["over_seeds"]["ci95"] == pytest.approx(list(over.ci95), abs=1e-4)
    for row, s in zip(cmp["per_seed"], (0, 1, 2)):
        t = mcnemar_test(flags(ARM_A, s), flags(ARM_B, s))
        assert row["seed"] == s and row["p_value"] == pytest.approx(t.p_value, rel=1e-3)
        assert row["verdict"] == ("differs" if t.p_value < 0.05 else "no difference detected")
    assert cmp["equivalence"]["margin"] == 1.0 and cmp["equivalence"]["equivalent"] is False  # 10 images: wide
    assert cli_main(["compare", *map(str, a), "--vs", *map(str, b)]) == 0
    out = capsys.readouterr().out
    assert "paired by seed (0, 1, 2)" in out and "pooled per image (primary" in out and "Cochran's Q" in out
    assert "sensitivity, Student t" in out and "a test between two trained networks" in out
    assert cli_main(["compare", *map(str, a), "--vs", *map(str, b), "--json", "--margin", "30"]) == 0
    assert json.loads(capsys.readouterr().out)["equivalence"]["margin"] == 30.0
    # The two-run form is unchanged; a margin needs arms; three runs without --vs are refused.
    assert cli_main(["compare", str(a[0]), str(b[0])]) == 0 and "exact McNemar p" in capsys.readouterr().out
    assert cli_main(["compare", str(a[0]), str(b[0]), "--margin", "1"]) == 2
    assert cli_main(["compare", *map(str, a)]) == 2 and "--vs" in capsys.readouterr().err


@pytest.mark.parametrize("change,what", [
    ({"threat": {"norm": "linf", "eps": 4 / 255}}, "different eps"),
    ({"threat": {"norm": "l2", "eps": EPS}}, "different norm"),
    ({"protocol": "adaptive"}, "different protocol"),
    ({"provenance": {"precision": "bf16"}}, "different precision"),
])
def test_compare_arms_refuses_evaluations_that_differ(tmp_path, capsys, change, what):
    a = [_arm_run(tmp_path, f"a{s}", "pgd_at+rpat", s, ARM_A[s], provenance={"precision": "fp32"}) for s in (0, 1)]
    b = [_arm_run(tmp_path, "b0", "pgd_at", 0, ARM_B[0], provenance={"precision": "fp32"}),
         _arm_run(tmp_path, "b1", "pgd_at", 1, ARM_B[1], **{"provenance": {"precision": "fp32"}, **change})]
    with pytest.raises(ConfigError, match=what):
        compare_arms(a, b)
    assert cli_main(["compare", *map(str, a), "--vs", *map(str, b)]) == 2
    err = capsys.readouterr().err.strip()
    assert what in err and len(err.splitlines()) == 1


def test_compare_arms_refuses_unpaired_seeds_and_other_images(tmp_path):
    a = [_arm_run(tmp_path, f"a{s}", "pgd_at+rpat", s, ARM_A[s]) for s in (0, 1)]
    b = [_arm_run(tmp_path, f"b{s}", "pgd_at", s, ARM_B[s]) for s in (0, 2)]
    with pytest.raises(ConfigError, match="different seeds"):
        compare_arms(a, b)
    with pytest.raises(ConfigError, match="one run per seed"):
        compare_arms(a, b[:1])
    other = _arm_run(tmp_path, "b1", "pgd_at", 1, ARM_B[1])
    ev = json.loads((other / "eval.json").read_text())
    ev["images"] = {**IMAGES, "fingerprint": "other"}
    (other / "eval.json").write_text(json.dumps(ev))
    with pytest.raises(ConfigError, match="evaluated on different images"):
        compare_arms(a, [b[0], other])
    with pytest.raises(ConfigError, match="margin"):
        compare_arms(a, [b[0], other], margin=0)
