"""Collect training runs into tidy tables, aggregate over seeds, compare with the published numbers.

A run is any folder (at any depth under the scanned root, through symbolic links) holding ``config.yaml`` and, once
training started, ``metrics.json``; a finished run also has ``eval.json`` (see :mod:`atkit.training.trainer`). A foreign or
damaged file is skipped with a warning naming it (:mod:`atkit.workbench.run_files`).

* :func:`collect_runs` -> one row per (run, checkpoint "best"/"final", evaluation protocol), with the
  run's setting (everything that changes training except the seed), its status and every accuracy.
  A run without ``eval.json`` (running, stopped, failed) gives one row from its last evaluated epoch
  (``checkpoint = "last epoch"``), so unfinished work stays visible.
* :func:`aggregate_seeds` -> mean, sample standard deviation and count over the seeds of a setting.
* :func:`paper_table` -> the papers' layout (Clean, PGD-20, AA best/final, Mean, NRR), "mean ± std".
* :func:`compare_with_reference` -> each published row (:mod:`atkit.experiments.reference`) beside the matching
  setting's numbers, or ``status = "missing"`` when no run computes that setting.

Mean and NRR (docs/methods.md, common protocol): ``Mean = (Clean + R)/2``, ``NRR = 2 Clean R/(Clean + R)`` with
``R`` the per-sample worst case over every robust attack of the final evaluation (named in
``robust_metric``, e.g. ``"worst of pgd20, cw"``; a run's last epoch: its strongest attack).

Dummy-class (DUCAT) runs: the rows with ``protocol = "worst_case"`` (the per-sample worst case over
the published and the adaptive protocols) are the headline, and the tables show them by default;
the published protocol, the papers' own, stays beside it.

The labels that name a run and its setting are :mod:`atkit.workbench.run_labels`; the figures
:mod:`atkit.workbench.plots`.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..core.paths import resolve_output_path
from ..core.stats import wilson_interval
# The one robust-metric and Mean/NRR policy, and every attack name, display name and column from the registry.
from ..evaluation import (WORST_CASE, EvalResult, attack_order, checks_summary, default_spellings, display_name,
                          is_attack_name, strongest, trade_off_scores, worst_case_over_protocols)
from ..experiments import reference as ref_mod
from ..training.augment import training_options
from .run_files import find_run_dirs, load_run, safe_run_rows
from .run_labels import dataset_label, run_label, setting_label, setting_of, stable_hash, threat_of, unique_run_labels

# Columns of the accuracy metrics, in the order tables show them: every registered evaluation attack at its
# defaults (atkit.evaluation), so a new attack file is a new column.
ACCURACY_METRICS = tuple(default_spellings())
SCORE_METRICS = ("mean", "nrr")
_SCORE_NAMES = {"mean": "Mean", "nrr": "NRR"}


def column_name(metric: str) -> str:
    """The heading of a metric column: the attack's short name from its file (``aa`` -> ``AA``), Mean, NRR."""
    return _SCORE_NAMES.get(metric) or display_name(metric, short=True)
def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


# --------------------------------------------------------------------------------------- loading
def _worst_case_record(res: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The worst case over the protocols of a dummy-class result: its top level when it is one (atkit
    writes it so), else computed from the protocols' per-sample results (older ``eval.json``); None
    when they carry none."""
    if res.get("protocol") == WORST_CASE:
        return res
    protocols = res.get("protocols") or {}
    if len(protocols) < 2 or not all(isinstance(r, Mapping) and r.get("per_sample") for r in protocols.values()):
        return None
    return worst_case_over_protocols({p: EvalResult.from_dict(r) for p, r in protocols.items()}).to_dict()


def eval_frame(eval_data: Mapping[str, Any]) -> pd.DataFrame:
    """An ``eval.json`` (as :meth:`atkit.training.trainer.Trainer.final_evaluation` writes it) as a table: one row per
    (checkpoint, protocol), columns ``checkpoint``, ``protocol``, the accuracies, ``robust`` (the
    per-sample worst case over the robust attacks, named in ``robust_metric``), ``mean``, ``nrr``, ``n``.
    Dummy-class runs give a ``worst_case`` row (the headline) first, then one per protocol (published,
    the papers' protocol; adaptive; adaptive_max)."""
    rows = []
    for checkpoint in ("best", "final"):
        res = eval_data.get(checkpoint)
        if not isinstance(res, Mapping):
            continue
        by_protocol = dict(res.get("protocols") or {res.get("protocol") or "-": res})
        if res.get("protocols"):
            worst = _worst_case_record(res)
            if worst is not None:
                by_protocol = {"worst_case": worst, **by_protocol}
        for protocol, r in by_protocol.items():
            row: dict[str, Any] = {"checkpoint": checkpoint, "protocol": protocol or "-"}
            row.update({k: float(v) for k, v in (r.get("accuracy") or {}).items()})
            row.update(robust=r.get("robust_accuracy"), mean=r.get("mean"), nrr=r.get("nrr"),
                       robust_metric=r.get("robust_metric"), n=r.get("n"), checks=_checks_cell(r.get("checks")))
            rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["best_epoch"] = eval_data.get("best_epoch")
    return frame


def _checks_cell(checks: Any) -> str:
    """The gradient-masking checks of an evaluation as one cell ("ok", "WARN: ...", "not run")."""
    return checks_summary(checks)


def _last_epoch_row(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracies of the last evaluated epoch (the weight average's when the run keeps one)."""
    for record in reversed(history):
        for prefix in ("wa_test_", "ema_test_", "test_"):
            accs = {k[len(prefix):-len("_acc")]: v for k, v in record.items()
                    if k.startswith(prefix) and k.endswith("_acc")}
            if accs:
                row: dict[str, Any] = dict(accs)
                rob = strongest(accs)
                row["robust_metric"] = rob
                row["mean"], row["nrr"] = trade_off_scores(accs.get("clean"), accs.get(rob) if rob else None)
                row["epoch"] = record.get("epoch")
                row["partial"] = bool(record.get("partial"))  # an epoch cut short by a stop (atkit.training.trainer)
                return row
    return {}


def run_rows(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tidy rows of one loaded run (see :func:`collect_runs`)."""
    config, metrics, ev = run["config"], run["metrics"] or {}, run["eval"]
    method = str(config.get("method", ""))
    params = config.get("method_params") or {}
    dataset, variant = dataset_label(config)
    threat = threat_of(config)
    setting = setting_of(config)
    history = metrics.get("history") or []
    base = {
        "run_dir": str(run["run_dir"]), "run": Path(run["run_dir"]).name, "method": method,
        "method_params": json.dumps(params, sort_keys=True, default=str), "label": setting_label(method, params),
        "training": json.dumps(training_options(config), sort_keys=True),
        "run_label": run_label(config),
        "setting": stable_hash(setting), "dataset": dataset, "data_variant": variant,
        "model": config.get("model"), "norm": threat.get("norm"), "eps": threat.get("eps"),
        "schedule": config.get("schedule"), "epochs": setting.get("epochs", config.get("epochs")),
        "epochs_done": sum(1 for r in history if not r.get("partial")), "seed": config.get("seed"),
        "status": metrics.get("status", "created"),
        "best_epoch": metrics.get("best_epoch"),
    }
    rows = []
    if ev:
        for rec in eval_frame(ev).to_dict(orient="records"):
            rows.append({**base, "source": "eval.json", **rec})
    if not rows:
        last = _last_epoch_row(history)
        rows.append({**base, "checkpoint": "last epoch", "protocol": "-", "source": "metrics.json", **last})
    return rows


def collect_runs(root: str | Path | Sequence[str | Path] = "outputs", *, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (run, checkpoint, protocol) for every run folder under ``root`` (one or several folders).

    ``exclude``: folder names; a run folder with one of them in its path below ``root`` is left out (the
    results notebook passes ``["smoke"]``, so the test suite's tiny runs under ``outputs/smoke/`` stay out).
    Columns: ``run_dir``, ``run``, ``method``, ``method_params`` (JSON), ``training`` (JSON of the CutMix / label
    smoothing options, :func:`atkit.training.augment.training_options`), ``label`` (method and its
    non-default hyperparameters), ``run_label`` (the label with the data and its size, the model, the threat
    model and the epochs: different settings never share one), ``setting`` (hash of everything that changes training except the
    seed), ``dataset``, ``data_variant`` (``jpeg`` for the JPEG CIFAR-10 copy), ``model``, ``norm``,
    ``eps``, ``schedule``, ``epochs``, ``epochs_done``, ``seed``, ``status``, ``best_epoch``,
    ``checkpoint`` (best, final, or "last epoch" without a final evaluation), ``protocol``,
    ``source``, the accuracies (percent), ``mean``, ``nrr``, ``robust_metric``, ``n``.
    """
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    rows: list[dict[str, Any]] = []
    seen = set()
    excluded = set(exclude)
    for r in roots:
        base = resolve_output_path(r)
        for run_dir in find_run_dirs(base):
            key = run_dir.resolve()
            if key in seen or excluded & set(run_dir.relative_to(base).parts):
                continue
            seen.add(key)
            rows.extend(safe_run_rows(load_run(run_dir), run_rows))
    frame = pd.DataFrame(rows)
    for m in ACCURACY_METRICS + SCORE_METRICS:
        if m not in frame.columns:
            frame[m] = np.nan
        frame[m] = pd.to_numeric(frame[m], errors="coerce")
    if not frame.empty:
        frame["run_label"] = unique_run_labels(frame)
    return frame


# ----------------------------------------------------------------------------------- aggregation
_SETTING_COLUMNS = ("label", "run_label", "method", "method_params", "training", "dataset", "data_variant", "model",
                    "norm", "eps", "schedule", "epochs")


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Accuracy and score columns present in ``frame`` (in display order, then other ``pgdN``/``cwN``)."""
    known = [m for m in ACCURACY_METRICS + SCORE_METRICS if m in frame.columns]
    extra = attack_order(c for c in frame.columns if c not in known and is_attack_name(c))
    return known + extra


def aggregate_seeds(frame: pd.DataFrame, metrics: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Mean, sample std (``<metric>_std``, NaN for one seed) and ``n_seeds`` per (setting, checkpoint, protocol).

    Also ``seeds`` (sorted list), ``statuses`` (e.g. "finished x3") and the setting's descriptive columns.
    """
    if frame.empty:
        return pd.DataFrame()
    metrics = list(metrics or metric_columns(frame))
    keys = ["setting", "checkpoint", "protocol"]
    out = []
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        row: dict[str, Any] = dict(zip(keys, key))
        first = group.iloc[0]
        row.update({c: first[c] for c in _SETTING_COLUMNS if c in group.columns})
        row["n_seeds"] = int(group["seed"].nunique()) if "seed" in group else len(group)
        row["seeds"] = sorted(int(s) for s in group["seed"].dropna().unique()) if "seed" in group else []
        counts = group["status"].value_counts()
        row["statuses"] = ", ".join(f"{s} x{n}" for s, n in counts.items())
        if "checks" in group:
            cells = [c for c in dict.fromkeys(group["checks"].dropna()) if c]
            warn = [c for c in cells if c.startswith("WARN")]
            row["checks"] = "; ".join(warn) if warn else ("ok" if "ok" in cells else (cells[0] if cells else "not run"))
        sizes = pd.to_numeric(group["n"], errors="coerce").dropna().unique() if "n" in group else []
        row["n"] = int(sizes[0]) if len(sizes) == 1 else np.nan  # test images per evaluation (NaN: none, or mixed)
        if "robust_metric" in group:  # the attack behind Mean/NRR (one name unless the seeds ran different ones)
            row["robust_metric"] = ", ".join(sorted({str(v) for v in group["robust_metric"].dropna()}))
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce").dropna()
            row[m] = float(values.mean()) if len(values) else np.nan
            row[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        out.append(row)
    return pd.DataFrame(out)


def _cell(mean: Any, std: Any, digits: int = 2, n: Any = None) -> str:
    """``"mean ± std"`` over seeds; one seed with ``n`` test images: ``"acc [low, high]"``, its 95 % Wilson interval."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        if n is not None and not _isnan(n) and n >= 1:
            k = min(max(round(float(mean) * int(n) / 100.0), 0), int(n))  # one evaluation: mean is k/n exactly
            low, high = wilson_interval(k, int(n))
            return f"{mean:.{digits}f} [{100 * low:.1f}, {100 * high:.1f}]"
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# Dummy-class protocols shown beside the chosen one in paper_table, with their column labels.
_BESIDE_PROTOCOLS = {"worst_case": "worst case", "published": "published: papers' protocol", "adaptive": "adaptive",
                     "adaptive_max": "adaptive_max"}


def paper_table(agg: pd.DataFrame, robust: Sequence[str] = ("pgd20", "aa"), protocol: Optional[str] = None,
                digits: int = 2) -> pd.DataFrame:
    """The papers' layout, one row per setting: ``Clean``, each of ``robust`` for the best and the final
    checkpoint, then ``Mean`` and ``NRR`` of the best checkpoint, as ``"mean ± std"`` over the ``seeds``
    (their count is the ``seeds`` column; a single seed shows its 95 % Wilson interval on the ``n`` test
    images, ``"52.30 [45.4, 59.1]"``; ``"n/a"``: not measured). Runs without a final evaluation show their last epoch under "final".
    ``protocol``: the dummy-class protocol to show (default: ``worst_case``, the per-sample worst case
    over the protocols; else the published one, else the only one); dummy-class settings also get the
    last ``robust`` metric under each other protocol beside it: ``"AA best (published: papers' protocol)"``,
    ``"AA best (adaptive)"``, ``"AA best (adaptive_max)"``.
    """
    columns = ["setting", "dataset", "model", "norm", "label", "run_label", "seeds"]
    if agg.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for setting, group in agg.groupby("setting", sort=False):
        protocols = list(group["protocol"].unique())
        chosen = protocol if protocol in protocols else next(
            (p for p in ("worst_case", "published") if p in protocols), protocols[0])
        group = group[group["protocol"] == chosen]
        by_ckpt = {r["checkpoint"]: r for r in group.to_dict(orient="records")}
        best = by_ckpt.get("best")
        final = by_ckpt.get("final") or by_ckpt.get("last epoch")
        first = best or final
        row: dict[str, Any] = {"setting": setting, "dataset": first.get("dataset"), "model": first.get("model"),
                               "norm": first.get("norm"), "label": first.get("label"),
                               "run_label": first.get("run_label"),
                               "protocol": chosen, "seeds": first.get("n_seeds"), "n": first.get("n"),
                               "status": first.get("statuses"),
                               "checks": first.get("checks", "not run")}
        for metric in ("clean",) + tuple(robust):
            name = column_name(metric)
            for tag, rec in (("best", best), ("final", final)):
                row[f"{name} {tag}"] = (_cell(rec.get(metric), rec.get(f"{metric}_std"), digits, rec.get("n"))
                                        if rec else "missing")
        for metric in SCORE_METRICS:
            rec = best or final
            row[column_name(metric)] = _cell(rec.get(metric), rec.get(f"{metric}_std"), digits + 1)
        # Mean and NRR are only comparable between rows scored by the same robust attack: name it.
        scored_by = (best or final).get("robust_metric") or ""
        row["Mean/NRR by"] = ", ".join(column_name(m.strip()) for m in scored_by.split(",")
                                       if m.strip())
        # Dummy-class runs: every other protocol's number beside the one shown (DUCAT protocols).
        for other in [p for p in _BESIDE_PROTOCOLS if p in protocols and p != chosen]:
            beside = agg[(agg["setting"] == setting) & (agg["protocol"] == other)]
            for rec in beside.to_dict(orient="records"):
                if rec["checkpoint"] in ("best", "final"):
                    metric = tuple(robust)[-1] if robust else "aa"
                    name = f"{column_name(metric)} {rec['checkpoint']} ({_BESIDE_PROTOCOLS[other]})"
                    row[name] = _cell(rec.get(metric), rec.get(f"{metric}_std"), digits, rec.get("n"))
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


# ----------------------------------------------------------------------------------- comparison
def compare_with_reference(agg: pd.DataFrame, refs: Optional[Sequence[ref_mod.Reference]] = None, *,
                           require_dataset: bool = True, metrics: Sequence[str] = ref_mod.METRICS) -> pd.DataFrame:
    """Each published entry beside the aggregated runs that compute its setting.

    A run setting matches an entry when method, resolved hyperparameters, training options (CutMix, label
    smoothing), threat norm, schedule, the model family (:data:`atkit.experiments.reference.ARCHITECTURES`) and, with
    ``require_dataset``, the dataset agree (the JPEG CIFAR-10 copy counts as CIFAR-10; ``data_variant`` says
    which one ran). One row per (entry, matching setting); ``status`` is ``"missing"`` when no run matches and
    ``"not in atkit"`` for methods atkit does not implement. Columns ``paper_<metric>``, ``ours_<metric>``,
    ``ours_<metric>_std``, ``diff_<metric>`` (ours - paper) for every printed metric.
    """
    refs = ref_mod.REFERENCES if refs is None else refs
    candidates = agg.to_dict(orient="records") if not agg.empty else []
    params_cache: dict[str, dict[str, Any]] = {}
    rows = []
    for ref in refs:
        base: dict[str, Any] = {"source": ref.source, "table": ref.table, "row": ref.row, "checkpoint": ref.checkpoint,
                                "ref_method": ref.method, "ref_dataset": ref.dataset, "ref_norm": ref.norm,
                                "ref_model": ref.model, "note": ref.note}
        for m in metrics:
            if m in ref.values:
                base[f"paper_{m}"] = ref.values[m]
                if m in ref.std:
                    base[f"paper_{m}_std"] = ref.std[m]
        if ref.method is None:
            rows.append({**base, "status": "not in atkit"})
            continue
        found = []
        for cand in candidates:
            if cand["checkpoint"] != ref.checkpoint and not (ref.checkpoint == "final"
                                                             and cand["checkpoint"] == "last epoch"):
                continue
            if cand.get("protocol") not in ("-", "published", None):
                continue
            params = params_cache.setdefault(cand["method_params"], json.loads(cand["method_params"] or "{}"))
            training = cand.get("training")
            if not ref_mod.matches(ref, method=cand["method"], method_params=params,
                                   dataset=cand["dataset"] if require_dataset else None, norm=cand["norm"],
                                   model=cand["model"], schedule=cand.get("schedule"),
                                   training=json.loads(training) if isinstance(training, str) and training else {}):
                continue
            found.append(cand)
        if not found:
            rows.append({**base, "status": "missing"})
            continue
        for cand in found:
            row = {**base, "status": cand.get("statuses"), "setting": cand["setting"], "label": cand["label"],
                   "data_variant": cand.get("data_variant"), "n_seeds": cand.get("n_seeds"),
                   "ours_checkpoint": cand["checkpoint"]}
            for m in metrics:
                if m in ref.values:
                    ours = cand.get(m)
                    row[f"ours_{m}"] = ours
                    row[f"ours_{m}_std"] = cand.get(f"{m}_std")
                    row[f"diff_{m}"] = (ours - ref.values[m]) if ours is not None and not _isnan(ours) else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def comparison_display(comparison: pd.DataFrame, metrics: Sequence[str] = ("clean", "pgd20", "pgd10", "aa", "mean",
                                                                           "nrr"), digits: int = 2) -> pd.DataFrame:
    """A readable version of :func:`compare_with_reference`: per metric ``"ours / paper"`` (``"missing"`` when
    no run computes the setting)."""
    rows = []
    for rec in comparison.to_dict(orient="records"):
        row = {"source": f"{rec['source']} {rec['table']}", "row": rec["row"], "checkpoint": rec["checkpoint"],
               "status": rec["status"], "seeds": rec.get("n_seeds")}
        for m in metrics:
            paper = rec.get(f"paper_{m}")
            if paper is None or _isnan(paper):
                continue
            ours = rec.get(f"ours_{m}")
            ours_txt = "missing" if ours is None or _isnan(ours) else _cell(ours, rec.get(f"ours_{m}_std"), digits)
            row[column_name(m)] = f"{ours_txt} / {paper:.{digits}f}"
        rows.append(row)
    return pd.DataFrame(rows)


# The threat model of the published CIFAR numbers: l-inf 8/255, l2 128/255 (about 0.5).
PAPER_EPS = {"linf": 8 / 255, "l2": 0.5}
_EPS_TOLERANCE = 0.005


def _same_threat(norm: Any, eps: Any, ref_norm: str) -> bool:
    """Whether a run's ``(norm, eps)`` is the threat model of a published entry of norm ``ref_norm``."""
    if norm != ref_norm or ref_norm not in PAPER_EPS:
        return False
    try:
        return abs(float(eps) - PAPER_EPS[ref_norm]) <= _EPS_TOLERANCE
    except (TypeError, ValueError):
        return False


def threat_label(norm: Any, eps: Any) -> str:
    """``"linf 8/255"``: a threat model in the papers' notation (ε in 1/255)."""
    try:
        return f"{norm} {float(eps) * 255:.4g}/255"
    except (TypeError, ValueError):
        return str(norm)


def tradeoff_points(agg: pd.DataFrame, refs: Sequence[ref_mod.Reference] = (), *, y: str = "aa",
                    checkpoint: str = "best") -> pd.DataFrame:
    """Points for a clean-vs-robust scatter (form of DUCAT, Fig. 5), one robust attack per point, named in
    ``robust_metric``: ours (mean over seeds, with std) on ``y``, or on their strongest robust attack when
    they have no ``y`` (e.g. no AutoAttack in a quick run); a published entry of ``refs`` only beside our
    points of the same dataset (the JPEG copy counts as the original), model family and threat model (norm
    and the papers' ε, :data:`PAPER_EPS`), on each robust attack those points use that the entry reports.
    ``threat`` names the threat model (a published point takes that of our points it stands beside);
    ``key`` numbers the points (ours first) for the numbered legend of :func:`atkit.workbench.plots.tradeoff_figure`."""
    columns = ["key", "who", "label", "dataset", "model", "norm", "eps", "threat", "clean", "robust", "robust_metric",
               "clean_std", "robust_std", "source"]
    rows = []
    if not agg.empty:
        sel = agg[agg["checkpoint"].isin([checkpoint, "last epoch"] if checkpoint == "final" else [checkpoint])]
        if sel.empty:
            sel = agg[agg["checkpoint"] == "last epoch"]
        # Dummy-class settings: the worst case over the protocols where it exists, else the published protocol.
        with_worst = set(sel.loc[sel["protocol"] == "worst_case", "setting"])
        sel = sel[sel["protocol"].isin(["-", "worst_case"])
                  | ((sel["protocol"] == "published") & ~sel["setting"].isin(with_worst))]
        for rec in sel.to_dict(orient="records"):
            names = [m for m in metric_columns(agg) if m not in SCORE_METRICS and not _isnan(rec.get(m, np.nan))]
            metric = y if y in names else strongest(names)
            if metric is None or _isnan(rec.get("clean", np.nan)):
                continue
            rows.append({"who": "this workbook", "label": rec.get("run_label") or rec["label"],
                         "dataset": rec.get("dataset"), "model": rec.get("model"), "norm": rec.get("norm"),
                         "eps": rec.get("eps"), "threat": threat_label(rec.get("norm"), rec.get("eps")),
                         "clean": rec["clean"], "robust": rec[metric], "robust_metric": metric,
                         "clean_std": rec.get("clean_std"), "robust_std": rec.get(f"{metric}_std"), "source": "ours"})
    ours = list(rows)
    by_row: dict[tuple[str, str, str], ref_mod.Reference] = {}
    for r in refs:  # one point per published row: its entry at ``checkpoint`` when it prints both
        k = (r.source, r.table, r.row)
        if k not in by_row or (r.checkpoint == checkpoint and by_row[k].checkpoint != checkpoint):
            by_row[k] = r
    for r in by_row.values():
        if "clean" not in r.values:
            continue
        families = ref_mod.ARCHITECTURES.get(r.model, ())
        panels = dict.fromkeys((o["robust_metric"], o["threat"]) for o in ours
                               if o["dataset"] == r.dataset and o["model"] in families
                               and _same_threat(o["norm"], o["eps"], r.norm) and o["robust_metric"] in r.values)
        for metric, threat in panels:
            rows.append({"who": "published", "label": r.row, "dataset": r.dataset, "model": r.model, "norm": r.norm,
                         "eps": PAPER_EPS.get(r.norm), "threat": threat, "clean": r.values["clean"],
                         "robust": r.values[metric],
                         "robust_metric": metric, "clean_std": r.std.get("clean"), "robust_std": r.std.get(metric),
                         "source": f"{r.source} {r.table}"})
    for i, row in enumerate(rows):
        row["key"] = i + 1
    return pd.DataFrame(rows, columns=columns)


def history_frame(history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A run's per-epoch records (``metrics.json`` ``history``) as a long table for seaborn:
    columns ``epoch``, ``panel`` ("loss" or "accuracy"), ``series``, ``value``."""
    rows = []
    for rec in history:
        epoch = rec.get("epoch")
        for key, value in rec.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or _isnan(float(value)):
                continue
            if key.startswith("train_") and key.endswith("_acc") or re.fullmatch(r"(wa_|ema_)?test_.*_acc", key):
                rows.append({"epoch": epoch, "panel": "accuracy", "series": key[:-4], "value": float(value)})
            elif key.startswith("train_") and not key.endswith("_time_s") and key != "train_time_s":
                rows.append({"epoch": epoch, "panel": "loss", "series": key[len("train_"):], "value": float(value)})
    return pd.DataFrame(rows, columns=["epoch", "panel", "series", "value"])


__all__ = ["ACCURACY_METRICS", "SCORE_METRICS", "aggregate_seeds", "collect_runs", "column_name",
           "compare_with_reference", "comparison_display", "eval_frame", "history_frame", "metric_columns",
           "paper_table", "run_rows", "threat_label", "tradeoff_points"]
