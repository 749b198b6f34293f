"""A run's final report: the best and the final model evaluated on the test set, written as ``eval.json``.

:func:`final_report` (called by :meth:`atkit.training.trainer.Trainer.final_evaluation` with the run's explicit
state, :class:`atkit.training.state.RunState`) evaluates the final model (the
weight average when one is kept) and the best checkpoint on the same class-stratified test images, with every
attack of ``eval.final_attacks`` and, beside any robust number, the gradient-masking checks of
:mod:`atkit.evaluation.sanity`. A dummy-class model is reported by the per-sample worst case over the DUCAT protocols
(the published protocol alone over-reports; DUCAT evaluation protocols), each protocol's numbers beside it.
Each entry records what produced it (:mod:`atkit.core.provenance`: the images, the checkpoint file, the model).
When the last epoch was the best and no average is kept, one evaluation serves both names.

:func:`has_final_evaluation` says whether a run's ``eval.json`` already holds a set of attacks (a finished run is
not evaluated twice).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from ..core.progress import Phases
from ..core.provenance import attach_provenance, checkpoint_record
from ..core.utils import atomic_write_json, guarded_write
from ..data import test_images_record, to_float_images
from ..evaluation import evaluate
from ..models.external import normalization_record
from .checkpoints import best_model
from .state import RunState


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold identical parameters and buffers (names, shapes and values)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k].to(sb[k].device), sb[k])
                                          for k in sa)


def has_final_evaluation(run_dir: str | Path, attacks: Any) -> bool:
    """Whether ``run_dir/eval.json`` holds every attack of ``attacks`` for the final model."""
    try:
        final = json.loads((Path(run_dir) / "eval.json").read_text()).get("final") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return set(attacks) <= set(final.get("accuracy") or {})


def final_report(state: RunState, dataset: Any, attacks: Optional[list[str]] = None, n_test: Optional[int] = None,
                 phases: Optional[Phases] = None) -> dict[str, Any]:
    """Evaluate the final and best models of the run ``state`` on ``dataset``'s test set and write ``eval.json``
    (module docstring); returns what it wrote.

    ``attacks`` default to ``eval.final_attacks``, ``n_test`` to ``eval.final_n_test`` (else the whole test
    set); ``phases``: where each attack and check reports. The caller holds the run's lock
    (:meth:`atkit.training.trainer.Trainer.final_evaluation`); the evaluation sets its own precision."""
    phases = phases or Phases(show=False)
    config = state.config
    attacks = list(attacks or config.eval.final_attacks)
    n = n_test or config.eval.final_n_test or len(dataset.test_y)
    x, y, indices = dataset.eval_subset(min(n, len(dataset.test_y)), split="test")
    x = to_float_images(x)
    models = {"final": state.final_model()}
    best = best_model(state)
    # The last epoch was the best and no average is kept: one evaluation serves both (same weights, same numbers).
    best_is_final = best is not None and same_weights(best, models["final"])
    if best is not None and not best_is_final:
        models["best"] = best
    # Gradient-masking checks (atkit.evaluation.sanity) beside any robust number; a clean-only evaluation has none to check.
    sanity = ({"n": config.eval.sanity_n_test}
              if config.eval.sanity and any(a not in ("clean", "random") for a in attacks) else None)
    phases.note(f"{' and '.join(models)} model{'s' if len(models) > 1 else ''}"
                f"{' (= the best checkpoint)' if best_is_final else ''}, {', '.join(attacks)} on "
                f"{len(y)} test images" + (f", then sanity checks on {min(sanity['n'] or len(y), len(y))}"
                                           if sanity is not None else "; no sanity checks (eval.sanity: false)"),
                sep=": ")
    results: dict[str, Any] = {}
    for label, model in models.items():
        # A dummy-class model: every DUCAT protocol and their per-image worst case (the headline), in one call.
        results[label] = evaluate(model, x, y, attacks=attacks, threat=config.threat_model(),
                                  precision=config.eval.precision, batch_size=config.eval.batch_size,
                                  device=state.device, num_classes=state.num_classes,
                                  progress=phases.child(f"[{label}]"), aa_state_dir=state.run_dir / "aa_state" / label,
                                  sanity=sanity or False).to_dict()
    results["best_epoch"] = state.best_epoch
    results["images"] = test_images_record(dataset, indices, state.data_fingerprint)
    if best_is_final:  # one evaluation, recorded under both names; each name gets its own checkpoint record
        results["best"] = dict(copy.deepcopy(results["final"]), same_weights_as="final")
    for label in [name for name in ("final", "best") if name in results]:  # last.pt holds final, best.pt best
        path = state.ckpt_dir / ("best.pt" if label == "best" else "last.pt")
        attach_provenance(results[label], images=results["images"],
                          checkpoint=checkpoint_record(path) if path.is_file() else None,
                          model={"name": config.model, "params": dict(config.model_params),
                                 "num_classes": state.num_classes,
                                 "dummy_classes": bool(getattr(state.model, "dummy_classes", False)),
                                 "weights": label, "source": "atkit run",
                                 "normalization": normalization_record(state.model, "the run's model")})
    out = state.run_dir / "eval.json"
    guarded_write(out, lambda: atomic_write_json(out, results))
    return results


__all__ = ["final_report", "has_final_evaluation", "same_weights"]
