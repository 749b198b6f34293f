"""RobustBench model-info cards (``python -m atkit card RUN_OR_EVAL.json --out FILE.json``).

A card has the fields of RobustBench's ``model_info/<dataset>/<threat>/<Name>.json`` (``link``, ``name``,
``authors``, ``additional_data``, ``number_forward_passes``, ``dataset``, ``venue``, ``architecture``,
``eps``, ``clean_acc``, ``reported``, ``autoattack_acc``, ``footnote``, ``unreliable``; accuracies as
strings with two decimals, as RobustBench writes them), plus an ``atkit`` block: n, the 95 % Wilson
intervals, the provenance of the evaluation and, for dummy-class models, the AutoAttack accuracy under
every protocol. The card's ``autoattack_acc`` of a dummy-class model is the per-image worst case over the
protocols (the published protocol alone over-reports the robustness of dummy-class models, see DUCAT).

RobustBench numbers are standard AutoAttack on the whole test set; :func:`make_card` refuses anything
else and says what is missing. atkit does not import the robustbench package.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from ..core.stats import accuracy_record
from ..core.utils import ConfigError, UniqueKeyLoader
from .compare import load_evaluation, per_sample_flags

#: AutoAttack "standard" budget per stage (Croce & Hein 2020; pyautoattack's version="standard").
STANDARD_AA_STAGES = {
    "apgd-ce": {"n_iter": 100, "n_restarts": 1},
    "apgd-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
    "fab-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
    "square": {"n_queries": 5000, "n_restarts": 1},
}
ARCHITECTURES = {"wrn34_10": "WideResNet-34-10", "wrn28_10": "WideResNet-28-10", "resnet18": "ResNet-18",
                 "preact_resnet18": "PreActResNet-18", "resnet18_bottleneck": "ResNet-18 (bottleneck)",
                 "small_cnn": "SmallCNN", "wide_resnet": "WideResNet",
                 # RobustBench's cards name the DeepMind-style nets by size alone
                 "dm_wrn28_10": "WideResNet-28-10", "dm_wrn70_16": "WideResNet-70-16", "dm_wide_resnet": "WideResNet",
                 "dm_preact_resnet18": "PreActResNet-18"}
THREAT_NAMES = {"linf": "Linf", "l2": "L2"}


def _eps_text(eps: float) -> str:
    """``8/255`` for multiples of 1/255 (RobustBench's spelling), else the number."""
    frac = Fraction(eps).limit_denominator(255)
    if frac.denominator == 255 and abs(float(frac) - eps) < 1e-9:
        return f"{frac.numerator}/255"
    if abs(float(frac) - eps) < 1e-9 and 255 % frac.denominator == 0:
        return f"{frac.numerator * (255 // frac.denominator)}/255"
    return f"{eps:g}"


def standard_aa_problems(result: Mapping[str, Any], images: Optional[Mapping[str, Any]]) -> list[str]:
    """What keeps an evaluation from being standard AutoAttack on the whole test set (empty when nothing)."""
    problems = []
    entry = next(iter((result.get("protocols") or {}).values()), result)
    per_sample = entry.get("per_sample") or {}
    if "aa" not in per_sample:
        problems.append(f"no AutoAttack ('aa') result (attacks run: {', '.join(per_sample) or 'none'})")
    else:
        info = (entry.get("details") or {}).get("aa") or {}
        if info.get("version") != "standard":
            problems.append(f"AutoAttack version {info.get('version')!r}, not 'standard'")
        stages = (info.get("budget") or {}).get("stages")
        if not stages:
            problems.append("the AutoAttack budget is not recorded (evaluated before atkit stored it)")
        else:
            for stage, want in STANDARD_AA_STAGES.items():
                have = stages.get(stage)
                if have is None:
                    problems.append(f"AutoAttack stage {stage} did not run")
                    continue
                for key, value in want.items():
                    if key == "n_target_classes" and have.get(key) is not None and have[key] < value:
                        problems.append(f"{stage} targeted {have[key]} classes, standard is {value} "
                                        "(fewer than 10 classes)")
                    elif key != "n_target_classes" and have.get(key) != value:
                        problems.append(f"{stage} {key}={have.get(key)}, standard is {value}")
    if "clean" not in per_sample:
        problems.append("no clean accuracy ('clean' not among the attacks)")
    if not images:
        problems.append("the test images are not recorded")
    elif images.get("indices") != "all" or images.get("n") != images.get("of"):
        problems.append(f"evaluated on {images.get('n')} of {images.get('of')} test images, not the full test set")
    return problems


def _model_info(target: Path, result: Mapping[str, Any]) -> dict[str, Any]:
    """Model name, dataset and dummy-class flag from the provenance, else the run folder's config.yaml."""
    prov = result.get("provenance") or {}
    info = dict(prov.get("model") or {})
    run_dir = target if target.is_dir() else target.parent
    cfg_path = run_dir / "config.yaml"
    if not info.get("name") and cfg_path.is_file():
        try:
            cfg = yaml.load(cfg_path.read_text(), Loader=UniqueKeyLoader)  # bounded: no alias bombs
        except (OSError, yaml.YAMLError):
            cfg = None
        info["name"] = cfg.get("model") if isinstance(cfg, dict) else None
    return info


def make_card(target: str | Path, *, checkpoint: str = "final", name: str = "", link: str = "", authors: str = "",
              venue: str = "", reported: str = "", footnote: str = "", additional_data: bool = False,
              architecture: Optional[str] = None) -> dict[str, Any]:
    """The RobustBench model-info card of an evaluation (a run folder, its eval.json, or ``atkit eval`` output)."""
    target = Path(target)
    result, images, label = load_evaluation(target, checkpoint)
    problems = standard_aa_problems(result, images)
    if problems:
        raise ConfigError(f"{label} is not a standard AutoAttack evaluation on the full test set, so no RobustBench "
                          f"card: {'; '.join(problems)}")
    clean = per_sample_flags(result, "clean", "worst")
    robust = per_sample_flags(result, "aa", "worst")
    n = len(clean)
    clean_rec, aa_rec = accuracy_record(sum(clean), n), accuracy_record(sum(robust), n)
    entry = next(iter((result.get("protocols") or {}).values()), result)
    threat = entry.get("threat") or {}
    model = _model_info(target, result)
    checks = [c for c in (entry.get("checks") or []) if not c.get("passed", True)]
    card: dict[str, Any] = {
        "link": link, "name": name, "authors": authors, "additional_data": bool(additional_data),
        "number_forward_passes": 1, "dataset": (images or {}).get("dataset"), "venue": venue,
        "architecture": architecture or ARCHITECTURES.get(str(model.get("name")), model.get("name")),
        "eps": _eps_text(float(threat.get("eps", 8 / 255))), "clean_acc": f"{clean_rec['accuracy']:.2f}",
        "reported": reported, "autoattack_acc": f"{aa_rec['accuracy']:.2f}", "footnote": footnote,
        "unreliable": bool(checks),
    }
    atkit_block: dict[str, Any] = {
        "threat_model": THREAT_NAMES.get(threat.get("norm"), threat.get("norm")), "n": n,
        "clean": clean_rec, "autoattack": aa_rec, "source": label,
        "failed_sanity_checks": [f"{c['name']}: {c.get('detail')}" for c in checks],
        "sanity_checks_run": entry.get("checks") is not None, "provenance": result.get("provenance"),
    }
    if result.get("protocols"):
        atkit_block["autoattack_by_protocol"] = {
            p: accuracy_record(sum(per_sample_flags(result, "aa", p)), n) for p in result["protocols"]}
        atkit_block["autoattack_headline"] = "worst case per image over the protocols " + ", ".join(result["protocols"])
    card["atkit"] = atkit_block
    return card


__all__ = ["ARCHITECTURES", "STANDARD_AA_STAGES", "make_card", "standard_aa_problems"]
