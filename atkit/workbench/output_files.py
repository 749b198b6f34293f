"""Where commands write: checked before the work, never over an input or an earlier result.

* :func:`check_writable`: an output file (or folder) that cannot be written is refused before any work;
* :func:`eval_outputs`: every place ``atkit eval`` writes (its JSON file, AutoAttack's resume state), decided
  and checked before the evaluation;
* :func:`evaluation_setup`: what makes two evaluations comparable attack by attack: the test images (dataset
  fingerprint, split, indices), the threat model (norm, eps, step size), the precision, the weights (checkpoint
  SHA-256, which weights, the model) and the seed;
* :func:`plan_output`: the file to write. A new file is written as it is; an earlier evaluation there with the
  same setup is merged with the new one attack by attack (:func:`merge_evaluations`: a second ``atkit eval RUN
  --attacks aa`` adds AutoAttack beside the first's PGD instead of replacing it); an earlier evaluation of
  another setup is kept: the default output moves on to the next free name (``eval-model-2.json``, ...), an
  explicit ``--out`` is refused before any work.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..core.utils import ConfigError


def check_writable(path: Path, what: str, *, folder: bool = False) -> None:
    """Refuse, before any work, an output file (or, with ``folder``, a folder) whose place cannot be created or
    written, and a file name that is an existing folder."""
    if not folder and path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder; give a file name such as {str(path / 'eval.json')!r}")
    place = path if folder else path.parent
    try:
        place.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=place, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{what} {str(path)!r} cannot be written: {e.strerror or e}; give a writable path") from None


def evaluation_setup(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The setup of an evaluation (a plain ``atkit eval`` JSON: see the module docstring); None where unrecorded."""
    prov = payload.get("provenance") or {}
    images = payload.get("images") or prov.get("images") or {}
    threat = payload.get("threat") or {}
    model = prov.get("model") or {}
    return {"images": {k: images.get(k) for k in ("fingerprint", "split", "indices")},
            "threat": {k: threat.get(k) for k in ("norm", "eps", "step_size")},
            "precision": prov.get("precision"), "checkpoint": (prov.get("checkpoint") or {}).get("sha256"),
            "weights": model.get("weights"), "model": model.get("name"), "seed": payload.get("seed", 0),
            "protocols": sorted(payload.get("protocols") or [])}


@dataclass
class OutputPlan:
    """The file to write and, when it holds an evaluation of the same setup, that evaluation (to merge with)."""

    path: Path
    merge_with: Optional[dict[str, Any]] = None
    note: Optional[str] = None  # said on stderr: why the default name moved on


def _read_evaluation(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and ("per_sample" in data or "protocols" in data) else None


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [f"{k} {old[k]!s:.60} vs {new[k]!s:.60}" for k in new if old.get(k) != new[k]]


def plan_output(path: Path, setup: Mapping[str, Any], *, explicit: bool) -> OutputPlan:
    """Where to write an evaluation of ``setup`` asked for at ``path`` (module docstring)."""
    if not path.exists():
        return OutputPlan(path)
    old = _read_evaluation(path)
    if old is not None and not old.get("protocols") and not setup.get("protocols"):
        differs = _differences(evaluation_setup(old), setup)
        if not differs:
            return OutputPlan(path, merge_with=old)
    else:
        differs = ["it is not a plain atkit evaluation of one model" if old is None or old.get("protocols")
                   or setup.get("protocols") else ""]
    why = "; ".join(d for d in differs if d)
    if explicit:
        raise ConfigError(f"--out {str(path)!r} holds an earlier evaluation of another setup ({why}); it is kept: "
                          "give another --out")
    for i in range(2, 10000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return OutputPlan(candidate, note=f"{str(path)!r} holds an evaluation of another setup ({why}); it is "
                                              f"kept, this one goes to {str(candidate)!r}")
        again = _read_evaluation(candidate)
        if again is not None and not again.get("protocols") and not _differences(evaluation_setup(again), setup):
            return OutputPlan(candidate, merge_with=again)
    raise ConfigError(f"no free file name next to {str(path)!r}; give --out")


def merge_evaluations(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """One evaluation holding every attack of ``old`` and ``new`` (same setup; an attack in both: ``new``'s),
    with the robust metric, Mean and NRR recomputed over all of them; provenance: ``new``'s, its per-attack
    budgets joined with ``old``'s, and ``old``'s command kept in ``earlier_commands``."""
    # why: atkit.evaluation pulls scipy; only a merge needs it. set_robust is the one robust-metric policy.
    from ..evaluation import EvalResult

    a, b = EvalResult.from_dict(old), EvalResult.from_dict(new)
    if a.n != b.n:
        raise ConfigError(f"cannot merge evaluations of {a.n} and {b.n} images")
    kept = [name for name in a.per_sample if name not in b.per_sample]
    merged = EvalResult(
        accuracy={**{k: a.accuracy[k] for k in kept}, **b.accuracy},
        per_sample={**{k: a.per_sample[k] for k in kept}, **b.per_sample}, n=b.n, threat=b.threat,
        protocol=b.protocol, num_classes=b.num_classes, seed=b.seed,
        details={**{k: a.details[k] for k in kept if k in a.details}, **b.details},
        checks=b.checks if b.checks is not None else a.checks,
        attack_warnings=[w for w in a.attack_warnings if w.split(":", 1)[0] in kept] + list(b.attack_warnings))
    merged.set_robust()
    old_prov, new_prov = dict(old.get("provenance") or {}), dict(new.get("provenance") or {})
    new_prov["attacks"] = {**{k: v for k, v in (old_prov.get("attacks") or {}).items() if k in kept},
                           **(new_prov.get("attacks") or {})}
    earlier = list(old_prov.get("earlier_commands") or []) + [old_prov.get("command")]
    new_prov["earlier_commands"] = [c for c in earlier if c]
    merged.provenance = new_prov
    out = merged.to_dict()
    for key in ("images", "n_requested"):
        if key in new:
            out[key] = new[key]
    return out


def eval_outputs(explicit: Optional[Path], default: Path, default_state_dir: Path, attacks: Sequence[str],
                 setup: Mapping[str, Any]) -> tuple[OutputPlan, Optional[Path]]:
    """Every place ``atkit eval`` will write, decided and checked before the work: the JSON file
    (:func:`plan_output`; ``explicit`` is ``--out``, else ``default``) and, when an AutoAttack-type attack runs,
    its resume-state folder: beside an explicit ``--out`` (a read-only run can then be evaluated), else
    ``default_state_dir`` in the run."""
    from ..evaluation import parse_attacks  # why: the attack registry loads every attack

    wanted = explicit or default
    check_writable(wanted, "--out")
    out = plan_output(wanted, setup, explicit=explicit is not None)
    if out.note:
        print(f"atkit: {out.note}", file=sys.stderr)
    state_dir = None
    if any(attack.whole_set for attack in parse_attacks(list(attacks)).values()):  # resumable: keeps state
        state_dir = explicit.parent / f"{explicit.stem}.aa_state" if explicit else default_state_dir
        check_writable(state_dir, "AutoAttack's resume state folder" + (" (beside --out)" if explicit else
                                                                      " (in the run; give --out to keep it elsewhere)"),
                       folder=True)
    return out, state_dir


__all__ = ["OutputPlan", "check_writable", "eval_outputs", "evaluation_setup", "merge_evaluations", "plan_output"]
