"""Published numbers of the papers atkit implements, each with its source (paper short name, table, row
label as printed). Short names (RPAT, RAAT, DUCAT, FAIT/MER) and full references: docs/references.md.

The results notebook shows these beside the workbook's own runs. Accuracies are in percent, as
printed; ``mean = (Clean + AA) / 2`` and ``nrr = 2 Clean AA / (Clean + AA)`` (docs/methods.md, common protocol).

Caveats, carried into every table built from here (:data:`CAVEATS`):

* The papers trained and tested on the original CIFAR-10 (and CIFAR-100, Tiny-ImageNet). The
  GPU runs of this project read a JPEG (quality 75) copy of CIFAR-10 (``dataset: folder``), so
  absolute accuracies are expected a few points lower: compare directions and rough sizes.
* "best" is the checkpoint with the highest PGD-20 (RPAT) or PGD-10 (DUCAT, RAAT) test
  accuracy, as the papers did; the FAIT/MER paper selects by PGD robustness as well.
* DUCAT reports its numbers under its *published* protocol (attacks on the raw 2C logits); the
  workbook also reports the adaptive protocol, which is lower (docs/methods.md, DUCAT).
* FAIT/MER paper, Table 4: the text this project was built from lost its method column; rows 1-5 are labelled from the order in
  which the text names the methods (PGD-AT, GAIRAT, MART, TRADES-AWP, HAT; ``label_inferred``),
  rows 6-8 from the values they share with Tables 1 and 3 (FAIT, TRADES-MER) and the text (FAIT-MER).
* Rows of methods atkit does not implement keep ``method=None``: they are shown, never matched.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

import pandas as pd

from ..core.utils import unknown_name_error
from ..methods import get_method
from ..training.augment import training_options

if TYPE_CHECKING:  # importlib.resources.abc exists from Python 3.11; the annotation alone needs it
    from importlib.resources.abc import Traversable

CAVEATS = (
    "Papers: original CIFAR-10; this project's GPU runs: a JPEG (q=75) copy, expect a few points lower.",
    "best = checkpoint with the highest PGD-20 (RPAT) or PGD-10 (DUCAT, RAAT) test accuracy.",
    "DUCAT numbers are under the published protocol (attacks on the raw 2C logits).",
    "FAIT/MER paper, Table 4 rows 1-5: method labels inferred from the text (the label column is lost).",
)

METRICS = ("clean", "pgd10", "pgd20", "pgd100", "cw", "aa", "mean", "nrr",
           "pgd10_targeted", "pgd10_targeted_original", "pgd10_targeted_dummy")

# Paper architecture name -> atkit model names that implement it (the RPAT/DUCAT code's "ResNet-18"
# is a Bottleneck net, so both ResNet-18 variants count).
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "ResNet-18": ("resnet18", "resnet18_bottleneck"),
    "PreActResNet-18": ("preact_resnet18",),
    "WideResNet-34-10": ("wrn34_10",),
    "WideResNet-28-10": ("wrn28_10",),
}

@dataclass(frozen=True)
class Reference:
    """One published row at one checkpoint.

    ``method``/``method_params``: the atkit method and the hyperparameters that differ from its
    defaults (None: atkit has no such method). ``training``: the run options that change the targets (CutMix,
    label smoothing; :func:`atkit.training.augment.training_options`), empty for a plain run. ``values``/``std``: metric ->
    percent.
    """

    source: str
    table: str
    row: str
    method: Optional[str]
    dataset: str
    norm: str
    model: str
    checkpoint: str
    values: Mapping[str, float]
    std: Mapping[str, float] = field(default_factory=dict)
    method_params: Mapping[str, Any] = field(default_factory=dict)
    schedule: Optional[str] = None
    note: str = ""
    label_inferred: bool = False
    training: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``"RPAT / Table 1"``: the paper (short name, docs/references.md) and table this number is printed in."""
        return f"{self.source} / {self.table}"


#: The data files, one per paper, in the order their rows appear in :data:`REFERENCES` (the papers' order in
#: docs/references.md); each is ``{"paper", "reference", "tables": {table: what its columns are}, "entries"}``.
DATA_FILES = ("rpat.json", "raat.json", "ducat.json", "fait_mer.json")
#: Keys every entry has (RobustBench habit: one self-describing record per published row and checkpoint);
#: ``values`` maps each printed metric (attack) to its value in percent.
REQUIRED_KEYS = ("paper", "table", "row", "dataset", "model", "threat_model", "checkpoint", "method", "values")
OPTIONAL_KEYS = ("std", "method_params", "schedule", "note", "label_inferred", "training")


def data_folder() -> Traversable:
    """``atkit/experiments/reference_data`` inside the installed package (package data, see pyproject.toml)."""
    return resources.files("atkit.experiments") / "reference_data"


def _reference(entry: Mapping[str, Any], where: str) -> Reference:
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    unknown = sorted(set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if missing or unknown:
        raise ValueError(f"{where}: missing keys {missing}, unknown keys {unknown}; "
                         f"an entry has {', '.join(REQUIRED_KEYS)} and optionally {', '.join(OPTIONAL_KEYS)}")
    bad = sorted(set(entry["values"]) - set(METRICS)) + sorted(set(entry.get("std", {})) - set(entry["values"]))
    if bad:
        raise ValueError(f"{where}: metrics {bad} are not among {', '.join(METRICS)} (std: only for printed values)")
    return Reference(source=entry["paper"], table=entry["table"], row=entry["row"], method=entry["method"],
                     dataset=entry["dataset"], norm=entry["threat_model"], model=entry["model"],
                     checkpoint=entry["checkpoint"], values={k: float(v) for k, v in entry["values"].items()},
                     std={k: float(v) for k, v in entry.get("std", {}).items()},
                     method_params=dict(entry.get("method_params", {})), schedule=entry.get("schedule"),
                     note=entry.get("note", ""), label_inferred=bool(entry.get("label_inferred", False)),
                     training=training_options(entry.get("training") or {}))


def load_references(folder: Optional[Union[Traversable, Path]] = None) -> tuple[dict[str, str], tuple[Reference, ...]]:
    """``(papers, references)`` from the data files of ``folder`` (default :func:`data_folder`): short name ->
    full reference, and every entry as a :class:`Reference`, in :data:`DATA_FILES` order. A file not listed
    there, or an entry that does not name its file's paper, raises ValueError."""
    folder = data_folder() if folder is None else folder
    present = sorted(f.name for f in folder.iterdir() if f.name.endswith(".json"))
    if sorted(DATA_FILES) != present:
        raise ValueError(f"reference data files {present} in {folder} differ from DATA_FILES {sorted(DATA_FILES)}")
    papers: dict[str, str] = {}
    refs: list[Reference] = []
    for name in DATA_FILES:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
        papers[data["paper"]] = data["reference"]
        for i, entry in enumerate(data["entries"]):
            where = f"{name}, entry {i}"
            if entry.get("paper") != data["paper"]:
                raise ValueError(f"{where}: paper {entry.get('paper')!r} in the file of {data['paper']!r}")
            refs.append(_reference(entry, where))
    return papers, tuple(refs)


#: Short name used as ``Reference.source`` -> the paper (full entries with authors and links: docs/references.md).
PAPERS: dict[str, str]
REFERENCES: tuple[Reference, ...]
PAPERS, REFERENCES = load_references()


# -------------------------------------------------------------------------------------------------
def table_keys() -> list[str]:
    """Every ``"<paper> / Table N"`` (paper: RPAT, RAAT, DUCAT, FAIT/MER) that has numbers here, in order of
    appearance."""
    return list(dict.fromkeys(r.key for r in REFERENCES))


def _parse_table_key(key: str) -> str:
    """Accept ``"RPAT / Table 1"``, ``"RPAT, Table 1"``, ``"rpat table 1"`` or ``"RPAT/1"`` (any case; ``FAIT``
    or ``MER`` for ``FAIT/MER``)."""
    keys = table_keys()
    if key in keys:
        return key
    match = re.fullmatch(r"\s*(.+?)\s*(?:,|/)?\s*(?:table\s*)?(\d+)\s*", str(key), flags=re.IGNORECASE)
    if match:
        sources = {r.source.lower(): r.source for r in REFERENCES}
        sources.update({"fait": "FAIT/MER", "mer": "FAIT/MER"})
        source = sources.get(match.group(1).strip(" ,/").lower())
        candidate = f"{source} / Table {match.group(2)}"
        if candidate in keys:
            return candidate
    raise unknown_name_error("reference table", key, keys)


def select(tables: Optional[Iterable[str]] = None, *, dataset: Optional[str] = None, norm: Optional[str] = None,
           method: Optional[str] = None, checkpoint: Optional[str] = None) -> list[Reference]:
    """References filtered by table keys (see :func:`table_keys`; None: all) and fields."""
    wanted = None if tables is None else {_parse_table_key(t) for t in tables}
    out = []
    for r in REFERENCES:
        if wanted is not None and r.key not in wanted:
            continue
        if dataset is not None and r.dataset != dataset:
            continue
        if norm is not None and r.norm != norm:
            continue
        if method is not None and r.method != method:
            continue
        if checkpoint is not None and r.checkpoint != checkpoint:
            continue
        out.append(r)
    return out


def reference_frame(refs: Optional[Sequence[Reference]] = None) -> pd.DataFrame:
    """Tidy table: one row per reference entry, one column per metric (NaN where not printed) plus
    ``<metric>_std`` where the paper gives a spread, and the source columns."""
    refs = REFERENCES if refs is None else refs
    rows = []
    for r in refs:
        row: dict[str, Any] = {"source": r.source, "table": r.table, "row": r.row, "method": r.method,
                               "method_params": dict(r.method_params), "dataset": r.dataset, "norm": r.norm,
                               "model": r.model, "schedule": r.schedule, "checkpoint": r.checkpoint,
                               "note": r.note, "label_inferred": r.label_inferred, "training": dict(r.training)}
        row.update({m: r.values.get(m) for m in METRICS})
        row.update({f"{m}_std": s for m, s in r.std.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for m in METRICS:
        frame[m] = pd.to_numeric(frame[m])
    return frame


def resolved_params(method: str, params: Optional[Mapping[str, Any]] = None,
                    ignore: Iterable[str] = ("log_r", "log_r_samples")) -> dict[str, Any]:
    """All hyperparameters of ``method`` with ``params`` applied (defaults filled in, including a
    composite's base and add-on), minus those that only change logging. Two settings train the same
    way iff these dicts are equal."""
    built = get_method(method, None, **dict(params or {}))
    values: dict[str, Any] = {}
    obj: Any = built
    while obj is not None:  # DUCAT keeps its base method's hyperparameters on .base
        if dataclasses.is_dataclass(getattr(obj, "params", None)):
            for k, v in dataclasses.asdict(obj.params).items():
                values.setdefault(k, v)
        obj = getattr(obj, "base", None)
    for key in ignore:
        values.pop(key, None)
    return values


def matches(ref: Reference, *, method: str, method_params: Optional[Mapping[str, Any]] = None,
            dataset: Optional[str] = None, norm: Optional[str] = None, model: Optional[str] = None,
            schedule: Optional[str] = None, training: Optional[Mapping[str, Any]] = None) -> bool:
    """Whether a run of ``method`` with ``method_params`` (and, when given, on ``dataset``/``norm``/
    ``model``/``schedule``) computes the setting ``ref`` reports. ``training``: the run config (or a mapping with
    its ``cutmix``/``label_smoothing``); None is a run without them, which never matches a CutMix row."""
    if ref.method is None or ref.method != method:
        return False
    if dataset is not None and ref.dataset != dataset:
        return False
    if norm is not None and ref.norm != norm:
        return False
    if model is not None and model not in ARCHITECTURES.get(ref.model, ()):
        return False
    if schedule is not None and ref.schedule is not None and ref.schedule != schedule:
        return False
    if training_options(training or {}) != dict(ref.training):
        return False
    ours = _resolved_key(method, _params_key(method_params))
    return ours is not None and ours == _resolved_key(ref.method, _params_key(ref.method_params))


def _params_key(params: Optional[Mapping[str, Any]]) -> str:
    return json.dumps(dict(params or {}), sort_keys=True, default=str)


@lru_cache(maxsize=4096)
def _resolved_key(method: str, params_json: str) -> Optional[str]:
    """Canonical text of :func:`resolved_params` (None when the method refuses the hyperparameters)."""
    try:
        values = resolved_params(method, json.loads(params_json))
        # 105 (YAML int) and 105.0 (a float field's default) are the same setting
        values = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in values.items()}
        return json.dumps(values, sort_keys=True, default=str)
    except Exception:  # an unknown method or a refused hyperparameter: never the same setting as anything
        return None


__all__ = ["ARCHITECTURES", "CAVEATS", "DATA_FILES", "METRICS", "PAPERS", "REFERENCES", "Reference", "data_folder",
           "load_references", "matches", "reference_frame", "resolved_params", "select", "table_keys"]
