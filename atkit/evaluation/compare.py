"""Paired comparison of evaluations on the same test images: two runs (``python -m atkit compare RUN_A RUN_B``) or
two arms of several runs each, paired by seed (``python -m atkit compare A0 A1 A2 --vs B0 B1 B2``).

The per-sample correctness every evaluation stores (``per_sample`` in ``eval.json`` / ``atkit eval``
output) gives an exact McNemar test of A against B (:func:`atkit.core.stats.mcnemar_test`): the two
accuracies with their 95 % Wilson intervals, the difference A - B with its 95 % Newcombe paired
interval, and the two-sided p-value of the discordant pairs. Two evaluations are only compared on
identical images under one evaluation: the recorded dataset fingerprint and test indices must agree, and so
must the threat model (norm, eps), the precision, the dummy-class protocols and the settings of the compared
attacks (steps, step size, AutoAttack version and budget), where both record them; else
:class:`~atkit.core.utils.ConfigError` naming what differs.

A dummy-class model's evaluation holds one result per protocol (published, adaptive, adaptive_max);
the default ``protocol="worst"`` takes per image the worst case over them (a point counts as correct
only if it survives every protocol's attack), the published number alone is ``protocol="published"``.

Two arms (:func:`compare_arms`): runs are paired by training seed (read from each run's ``config.yaml``; by the
order given when a seed is not recorded), and every evaluation of both arms must share images, ε, norm,
protocol and precision. Per seed, the exact McNemar test says whether the two trained networks differ; the
primary analysis is the per-image paired difference pooled over the seeds (:func:`atkit.core.stats.pool_paired_
differences`: fixed effect, or random effects with the Hartung-Knapp interval when Cochran's Q rejects), with
the heterogeneity test beside it and the Student-t interval over the seeds' accuracy differences as a
sensitivity line; ``margin`` adds a TOST equivalence test.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..core.stats import (HETEROGENEITY_LEVEL, Equivalence, McNemarResult, PooledDifference, SeedDifference,
                          equivalence_test, mcnemar_test, minimal_detectable_effect, paired_difference,
                          pool_paired_differences, seed_difference, two_networks_verdict)
from ..core.utils import ConfigError, load_yaml_mapping

CHECKPOINTS = ("final", "best")


def load_evaluation(target: str | Path, checkpoint: str = "final") -> tuple[dict[str, Any], Optional[dict[str, Any]], str]:
    """``(result, images, label)`` from a run folder (its ``eval.json``), a run's ``eval.json`` or an
    ``atkit eval`` JSON file. ``result`` is one evaluation dict (possibly with ``protocols``)."""
    path = Path(target)
    if path.is_dir():
        if not (path / "eval.json").is_file():
            raise ConfigError(f"{str(path)!r} has no eval.json (the run has no final evaluation yet: finish it, or "
                              "pass an `atkit eval` JSON file)")
        path = path / "eval.json"
    if not path.is_file():
        raise ConfigError(f"{str(target)!r} is neither a run folder nor an evaluation JSON file")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{str(path)!r} is not an atkit evaluation (a JSON object was expected)")
    label = str(path.parent if path.name == "eval.json" else path)
    images = data.get("images")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"unknown checkpoint {checkpoint!r}; accepted: {', '.join(CHECKPOINTS)}")
    if any(k in data for k in CHECKPOINTS):  # a run's eval.json: {"final": ..., "best": ..., "images": ...}
        if not isinstance(data.get(checkpoint), Mapping):
            raise ConfigError(f"{str(path)!r} holds no {checkpoint!r} evaluation (has: "
                              f"{', '.join(k for k in CHECKPOINTS if k in data)})")
        result = dict(data[checkpoint])
        label += f" [{checkpoint}]"
    elif "per_sample" in data or "protocols" in data:
        result = dict(data)
    else:
        raise ConfigError(f"{str(path)!r} is not an atkit evaluation (no per_sample results in it)")
    if images is None:
        images = (result.get("provenance") or {}).get("images")
    return result, images, label


def per_sample_flags(result: Mapping[str, Any], attack: str, protocol: str = "worst") -> list[bool]:
    """Per-image correctness under ``attack``; for dummy-class results the chosen protocol or the worst case."""
    protocols = result.get("protocols")
    if protocols:
        if protocol == "worst":
            entries = list(protocols.values())
        elif protocol in protocols:
            entries = [protocols[protocol]]
        else:
            raise ConfigError(f"unknown protocol {protocol!r}; this evaluation has: worst, {', '.join(protocols)}")
    else:
        entries = [result]
    flags: Optional[list[bool]] = None
    for entry in entries:
        stored = (entry.get("per_sample") or {}).get(attack)
        if stored is None:
            have = sorted((entry.get("per_sample") or {}))
            raise ConfigError(f"attack {attack!r} was not run in this evaluation; it has: {', '.join(have) or 'none'}")
        current = [c == "1" for c in stored]
        flags = current if flags is None else [a and b for a, b in zip(flags, current)]
    assert flags is not None
    return flags


def _attacks_of(result: Mapping[str, Any]) -> list[str]:
    entry = next(iter((result.get("protocols") or {}).values()), result)
    return list((entry.get("per_sample") or {}))


NOT_ROBUST = ("clean", "random")


def default_attacks(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """``["aa"]`` when both ran AutoAttack, else every robust attack both ran (compared per image by their worst
    case, as Mean/NRR are), else ``["clean"]``."""
    common = [n for n in _attacks_of(a) if n in _attacks_of(b)]
    if not common:
        raise ConfigError("the two evaluations share no attack")
    if "aa" in common:
        return ["aa"]
    robust = [n for n in common if n not in NOT_ROBUST]
    return robust or (["clean"] if "clean" in common else common[:1])


def check_same_images(images_a: Optional[Mapping[str, Any]], images_b: Optional[Mapping[str, Any]],
                      label_a: str, label_b: str) -> None:
    """Refuse two evaluations on different test images (dataset fingerprint or indices differ, or unrecorded)."""
    for images, label in ((images_a, label_a), (images_b, label_b)):
        if not images:
            raise ConfigError(f"{label} does not record its test images (evaluated before atkit stored them); "
                              "re-run its evaluation so that both sides can be checked to be on the same images")
    for key, what in (("fingerprint", "data fingerprints"), ("split", "splits"), ("indices", "test indices")):
        if images_a.get(key) != images_b.get(key):
            detail = (f"{images_a.get(key)!r} vs {images_b.get(key)!r}" if key != "indices" else
                      f"{_describe_indices(images_a)} vs {_describe_indices(images_b)}")
            raise ConfigError(f"{label_a} and {label_b} were evaluated on different images ({what} differ: {detail}); "
                              "a paired test needs the same images: evaluate both on the same dataset and n")


#: Entries of an attack's ``details`` that are its results, not its settings.
_RESULT_KEYS = ("seconds", "per_attack", "resumed", "ran_now", "autoattack_warnings", "skipped")


def evaluation_settings(result: Mapping[str, Any], attacks: list[str], protocol: str) -> dict[str, Any]:
    """What an evaluation's per-image results depend on besides the model and the images: ``norm``, ``eps``,
    ``precision``, the dummy-class ``protocols`` compared, and each compared attack's settings (None: not recorded)."""
    protocols = result.get("protocols") or {}
    entries = list(protocols.values()) if protocols and protocol == "worst" else (
        [protocols[protocol]] if protocol in protocols else [result])
    entry = entries[0] if entries else result
    threat = entry.get("threat") or {}
    prov = entry.get("provenance") or result.get("provenance") or {}
    settings: dict[str, Any] = {"norm": threat.get("norm"), "eps": threat.get("eps"), "precision": prov.get("precision"),
                                "protocols": (sorted(protocols) if protocol == "worst" else [protocol]) if protocols
                                else None, "protocol": None if protocols else result.get("protocol")}
    for name in attacks:
        info = (entry.get("details") or {}).get(name)
        settings[f"{name} settings"] = ({k: v for k, v in info.items() if k not in _RESULT_KEYS}
                                        if isinstance(info, Mapping) else None)
    return settings


def check_same_evaluation(a: Mapping[str, Any], b: Mapping[str, Any], attacks: list[str], protocol: str,
                          label_a: str, label_b: str) -> None:
    """Refuse two evaluations made differently (:func:`evaluation_settings`: any setting both record and that
    differs), in one line naming each difference."""
    sa, sb = evaluation_settings(a, attacks, protocol), evaluation_settings(b, attacks, protocol)
    # A setting only one side recorded is not compared, except the protocol: None there means a plain model.
    differs = [f"different {key} {_setting_text(sa[key])} vs {_setting_text(sb[key])}" for key in sa
               if (key == "protocol" or (sa[key] is not None and sb[key] is not None)) and sa[key] != sb[key]]
    if differs:
        raise ConfigError(f"{label_a} and {label_b} were evaluated differently ({'; '.join(differs)}); a paired test "
                          "compares two models under one evaluation: evaluate both with the same settings")


def _setting_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe_indices(images: Mapping[str, Any]) -> str:
    idx = images.get("indices")
    if idx == "all":
        return f"all {images.get('of')}"
    return f"{len(idx)} of {images.get('of')} ({images.get('selection')})" if isinstance(idx, list) else repr(idx)


def model_label(result: Mapping[str, Any]) -> Optional[str]:
    """``"dm_wrn28_10, normalization cifar10"`` from an evaluation's provenance (its ``model`` record), or None."""
    entry = next(iter((result.get("protocols") or {}).values()), result)
    model = (entry.get("provenance") or result.get("provenance") or {}).get("model") or {}
    if not model.get("name"):
        return None
    norm = (model.get("normalization") or {}).get("name")
    return str(model["name"]) + (f", normalization {norm}" if norm else "")


def compare_evaluations(target_a: str | Path, target_b: str | Path, *, attack: Optional[str] = None,
                        checkpoint: str = "final", protocol: str = "worst") -> dict[str, Any]:
    """Exact McNemar comparison of A against B; ``{"attack", "checkpoint", "protocol", "a", "b", "images",
    "test": McNemarResult.to_dict()}``."""
    a, images_a, label_a = load_evaluation(target_a, checkpoint)
    b, images_b, label_b = load_evaluation(target_b, checkpoint)
    check_same_images(images_a, images_b, label_a, label_b)
    names = [attack] if attack else default_attacks(a, b)
    check_same_evaluation(a, b, names, protocol, label_a, label_b)
    attack = names[0] if len(names) == 1 else f"worst of {', '.join(names)}"
    flags_a = [all(v) for v in zip(*(per_sample_flags(a, n, protocol) for n in names))]
    flags_b = [all(v) for v in zip(*(per_sample_flags(b, n, protocol) for n in names))]
    if len(flags_a) != len(flags_b):
        raise ConfigError(f"{label_a} has {len(flags_a)} images and {label_b} {len(flags_b)}: not the same images")
    test: McNemarResult = mcnemar_test(flags_a, flags_b)
    return {"attack": attack, "checkpoint": checkpoint, "protocol": protocol if (a.get("protocols") or
                                                                                b.get("protocols")) else None,
            "a": label_a, "b": label_b, "model_a": model_label(a), "model_b": model_label(b),
            "images": {k: v for k, v in images_a.items() if k != "indices"},
            "test": test.to_dict()}


def format_comparison(cmp: Mapping[str, Any]) -> str:
    """The comparison as a few human-readable lines."""
    t = cmp["test"]
    img = cmp["images"]
    proto = f", protocol {cmp['protocol']}" if cmp.get("protocol") else ""
    lines = [
        f"paired comparison on {cmp['attack']} ({cmp['checkpoint']} checkpoint{proto}): n = {t['n']} identical test "
        f"images of {img.get('dataset')} (fingerprint {str(img.get('fingerprint'))[:12]}, {img.get('selection')})",
        f"  A {cmp['a']}{_model_text(cmp.get('model_a'))}: {t['acc_a']:.2f} % [{t['ci_a'][0]:.2f}, "
        f"{t['ci_a'][1]:.2f}] (95 % Wilson)",
        f"  B {cmp['b']}{_model_text(cmp.get('model_b'))}: {t['acc_b']:.2f} % [{t['ci_b'][0]:.2f}, "
        f"{t['ci_b'][1]:.2f}] (95 % Wilson)",
        f"  A - B = {t['difference']:+.2f} points, 95 % CI [{t['diff_ci95'][0]:+.2f}, {t['diff_ci95'][1]:+.2f}] "
        f"({t['diff_ci_method']})",
        f"  both correct {t['both']}, only A {t['only_a']}, only B {t['only_b']}, neither {t['neither']}; "
        f"exact McNemar p = {t['p_value']:.4g}",
    ]
    return "\n".join(lines)


def _model_text(label: Optional[str]) -> str:
    return f" ({label})" if label else ""


def method_base_pairs(frame: Any) -> list[tuple[str, str]]:
    """``(method_run_dir, base_run_dir)`` for each run of ``method = base+addon`` whose ``base`` run has the same
    dataset, model, threat, schedule, epochs and seed (rows of :func:`atkit.workbench.results.collect_runs`)."""
    if frame is None or len(frame) == 0:
        return []
    keys = ("dataset", "data_variant", "model", "norm", "eps", "schedule", "epochs", "seed")
    runs = frame.drop_duplicates("run_dir").to_dict(orient="records")
    pairs = []
    for rec in runs:
        method = str(rec.get("method", ""))
        if "+" not in method:
            continue
        base = method.split("+")[0]
        for other in runs:
            if other["method"] == base and all(str(other.get(k)) == str(rec.get(k)) for k in keys):
                pairs.append((rec["run_dir"], other["run_dir"]))
    return pairs


def comparison_table(frame: Any, *, attack: Optional[str] = None, checkpoint: str = "final") -> Any:
    """One row per method-vs-base pair (:func:`method_base_pairs`) with the exact McNemar test; pairs that
    cannot be compared (no eval.json, different images) get their reason in ``note``."""
    import pandas as pd  # heavy; only the table needs it

    rows = []
    labels = {r["run_dir"]: r for r in frame.to_dict(orient="records")} if len(frame) else {}
    for run_a, run_b in method_base_pairs(frame):
        rec = labels[run_a]
        row: dict[str, Any] = {"method": labels[run_a]["label"], "base": labels[run_b]["label"],
                               "dataset": rec.get("dataset"), "model": rec.get("model"), "seed": rec.get("seed")}
        try:
            cmp = compare_evaluations(run_a, run_b, attack=attack, checkpoint=checkpoint)
        except ConfigError as e:
            rows.append({**row, "note": str(e)})
            continue
        t = cmp["test"]
        row.update({"attack": cmp["attack"], "n": t["n"],
                    "method acc": f"{t['acc_a']:.2f} [{t['ci_a'][0]:.1f}, {t['ci_a'][1]:.1f}]",
                    "base acc": f"{t['acc_b']:.2f} [{t['ci_b'][0]:.1f}, {t['ci_b'][1]:.1f}]",
                    "difference": f"{t['difference']:+.2f} [{t['diff_ci95'][0]:+.1f}, {t['diff_ci95'][1]:+.1f}]",
                    "only method": t["only_a"], "only base": t["only_b"], "McNemar p": t["p_value"], "note": ""})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ two arms of runs, paired by seed
@dataclass(frozen=True)
class PooledComparison:
    """Arm A against arm B over paired seeds: per seed the exact McNemar test of the two networks
    (``per_seed``), the pooled per-image difference (primary), the t interval over seeds (sensitivity, two
    seeds or more) and, with a margin, the TOST equivalence test. Differences in points, A - B."""

    seeds: tuple[Any, ...]
    per_seed: tuple[dict[str, Any], ...]
    pooled: PooledDifference
    over_seeds: Optional[SeedDifference]
    equivalence: Optional[Equivalence]

    @property
    def minimal_detectable_effect(self) -> float:
        """The pooled difference this design (these seeds and images) detects with 80 % power at 5 %."""
        n = sum(d.n for d in self.pooled.per_seed) / len(self.pooled.per_seed)
        return minimal_detectable_effect(self.pooled.per_image_variance, round(n), len(self.seeds))

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "per_seed": list(self.per_seed), "pooled": self.pooled.to_dict(digits),
                "over_seeds": None if self.over_seeds is None else self.over_seeds.to_dict(digits),
                "equivalence": None if self.equivalence is None else self.equivalence.to_dict(digits),
                "minimal_detectable_effect_80": round(self.minimal_detectable_effect, digits)}


def pooled_comparison(flags_a: Sequence[Sequence[bool]], flags_b: Sequence[Sequence[bool]], seeds: Sequence[Any], *,
                      heterogeneity_level: float = HETEROGENEITY_LEVEL,
                      margin: Optional[float] = None) -> PooledComparison:
    """Arm A against arm B from per-image correctness, ``flags_a[s]`` and ``flags_b[s]`` the runs of seed ``seeds[s]``
    on the same images (:class:`PooledComparison`)."""
    if not (len(flags_a) == len(flags_b) == len(seeds)) or not seeds:
        raise ValueError(f"{len(flags_a)} runs in arm A, {len(flags_b)} in arm B and {len(seeds)} seeds: pair them "
                         "one to one")
    per_seed, diffs, acc_a, acc_b = [], [], [], []
    for seed, a, b in zip(seeds, flags_a, flags_b):
        t = mcnemar_test(a, b)
        diffs.append(paired_difference(a, b))
        acc_a.append(t.acc_a)
        acc_b.append(t.acc_b)
        per_seed.append({"seed": seed, "n": t.n, "acc_a": round(t.acc_a, 4), "acc_b": round(t.acc_b, 4),
                         "difference": round(t.difference, 4), "ci95": [round(v, 4) for v in t.diff_ci95],
                         "p_value": float(f"{t.p_value:.4g}"), "only_a": t.only_a, "only_b": t.only_b,
                         "verdict": two_networks_verdict(t.p_value)})
    pooled = pool_paired_differences(diffs, heterogeneity_level=heterogeneity_level)
    return PooledComparison(seeds=tuple(seeds), per_seed=tuple(per_seed), pooled=pooled,
                            over_seeds=seed_difference(acc_a, acc_b) if len(seeds) >= 2 else None,
                            equivalence=None if margin is None else equivalence_test(pooled, margin))


def _training_seed(target: str | Path) -> Optional[int]:
    """The training seed of a run folder, or of the run folder an evaluation file lies in (None: not recorded)."""
    path = Path(target)
    folder = path if path.is_dir() else path.parent
    if not (folder / "config.yaml").is_file():
        return None
    seed = load_yaml_mapping(folder / "config.yaml", "run config").get("seed")
    return None if seed is None else int(seed)


def compare_arms(targets_a: Sequence[str | Path], targets_b: Sequence[str | Path], *, attack: Optional[str] = None,
                 checkpoint: str = "final", protocol: str = "worst", margin: Optional[float] = None,
                 heterogeneity_level: float = HETEROGENEITY_LEVEL) -> dict[str, Any]:
    """Arm A (runs ``targets_a``) against arm B (``targets_b``), paired by training seed (:class:`PooledComparison`
    as a dict, with ``attack``, ``checkpoint``, ``protocol``, ``a``, ``b``, ``paired_by`` and ``images``)."""
    if not targets_a or not targets_b:
        raise ConfigError("each arm needs at least one run: atkit compare A1 [A2 ...] --vs B1 [B2 ...]")
    if margin is not None and (isinstance(margin, bool) or not margin > 0):
        raise ConfigError(f"--margin {margin!r}: the equivalence margin must be a positive number of points")
    if len(targets_a) != len(targets_b):
        raise ConfigError(f"arm A has {len(targets_a)} runs and arm B {len(targets_b)}; runs are paired by seed, so "
                          "give one run per seed on each side")
    loaded = {arm: [(*load_evaluation(t, checkpoint), _training_seed(t)) for t in targets]
              for arm, targets in (("a", targets_a), ("b", targets_b))}
    everything = loaded["a"] + loaded["b"]
    first, first_images, first_label, _ = everything[0]
    for _, images, label, _ in everything[1:]:
        check_same_images(first_images, images, first_label, label)
    seeds = {arm: [seed for *_, seed in runs] for arm, runs in loaded.items()}
    if all(s is not None for s in seeds["a"] + seeds["b"]):
        for arm in ("a", "b"):
            if len(set(seeds[arm])) != len(seeds[arm]):
                raise ConfigError(f"arm {arm.upper()} has two runs of one seed ({seeds[arm]}); one run per seed")
        if set(seeds["a"]) != set(seeds["b"]):
            raise ConfigError(f"the arms ran different seeds (A: {sorted(seeds['a'])}, B: {sorted(seeds['b'])}); runs "
                              "are paired by seed")
        order = sorted(seeds["a"])
        pick = {arm: {s: run for s, run in zip(seeds[arm], loaded[arm])} for arm in ("a", "b")}
        pairs = [(pick["a"][s], pick["b"][s]) for s in order]
        paired_by = "seed"
    else:
        pairs, order, paired_by = list(zip(loaded["a"], loaded["b"])), list(range(len(targets_a))), "order given"
    names = [attack] if attack else default_attacks(pairs[0][0][0], pairs[0][1][0])
    for result, _, label, _ in everything[1:]:  # one rule with the two-run form: the same evaluation everywhere
        check_same_evaluation(first, result, names, protocol, first_label, label)
    label = names[0] if len(names) == 1 else f"worst of {', '.join(names)}"

    def flags(result: Mapping[str, Any]) -> list[bool]:
        return [all(v) for v in zip(*(per_sample_flags(result, name, protocol) for name in names))]

    result = pooled_comparison([flags(a[0]) for a, _ in pairs], [flags(b[0]) for _, b in pairs], order,
                               heterogeneity_level=heterogeneity_level, margin=margin)
    dummy = any(r.get("protocols") for r, *_ in everything)
    return {"attack": label, "checkpoint": checkpoint, "protocol": protocol if dummy else None,
            "a": [a[2] for a, _ in pairs], "b": [b[2] for _, b in pairs], "paired_by": paired_by,
            "images": {k: v for k, v in first_images.items() if k != "indices"}, **result.to_dict()}


def format_arms(cmp: Mapping[str, Any]) -> str:
    """Two arms' comparison as a few human-readable lines: per seed, pooled (primary), heterogeneity, sensitivity."""
    img, pooled = cmp["images"], cmp["pooled"]
    proto = f", protocol {cmp['protocol']}" if cmp.get("protocol") else ""
    n = cmp["per_seed"][0]["n"]
    lines = [f"arms compared on {cmp['attack']} ({cmp['checkpoint']} checkpoint{proto}): {len(cmp['seeds'])} seed(s) "
             f"paired by {cmp['paired_by']} ({', '.join(map(str, cmp['seeds']))}), n = {n} identical test images of "
             f"{img.get('dataset')} each (fingerprint {str(img.get('fingerprint'))[:12]}, {img.get('selection')})",
             "  per seed, exact McNemar (a test between two trained networks, not of a method):"]
    for row in cmp["per_seed"]:
        lines.append(f"    seed {row['seed']}: A {row['acc_a']:.2f} % vs B {row['acc_b']:.2f} %, A - B = "
                     f"{row['difference']:+.2f} [{row['ci95'][0]:+.2f}, {row['ci95'][1]:+.2f}], p = {row['p_value']:.3g}: "
                     f"{row['verdict']}")
    lines.append(f"  pooled per image (primary; {pooled['method']}): A - B = {pooled['estimate']:+.2f} points, 95 % CI "
                 f"[{pooled['ci95'][0]:+.2f}, {pooled['ci95'][1]:+.2f}]")
    if pooled["df"] >= 1:
        lines.append(f"  heterogeneity: Cochran's Q = {pooled['q']:.2f} on {pooled['df']} df, p = "
                     f"{pooled['q_p_value']:.3g}; tau² = {pooled['tau2']:.3g}")
    if cmp.get("over_seeds"):
        o = cmp["over_seeds"]
        lines.append(f"  sensitivity, Student t over the {o['n_seeds']} seeds' accuracy differences: "
                     f"{o['difference']:+.2f} [{o['ci95'][0]:+.2f}, {o['ci95'][1]:+.2f}]")
    lines.append(f"  minimal detectable effect of this design (80 % power, 5 %, no between-seed variance): "
                 f"{cmp['minimal_detectable_effect_80']:.2f} points")
    if cmp.get("equivalence"):
        e = cmp["equivalence"]
        lines.append(f"  equivalence (TOST, ±{e['margin']:g} points): 90 % CI [{e['ci90'][0]:+.2f}, {e['ci90'][1]:+.2f}], "
                     f"p = {e['p_value']:.3g}: {'equivalent' if e['equivalent'] else 'equivalence not shown'}")
    return "\n".join(lines)


__all__ = ["PooledComparison", "check_same_evaluation", "check_same_images", "compare_arms", "compare_evaluations",
           "comparison_table", "default_attacks", "evaluation_settings", "format_arms", "format_comparison",
           "load_evaluation", "method_base_pairs", "model_label", "per_sample_flags", "pooled_comparison"]
