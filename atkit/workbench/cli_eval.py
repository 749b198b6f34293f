"""``atkit eval``: evaluate a run folder or someone else's checkpoint through the one evaluation door, write the
JSON (merged attack by attack with an earlier evaluation of the same setup, never over an input) and print it.

Exit status: 0, 2 for bad input (one line), :data:`EXIT_WARNINGS` when a sanity check failed, the model is at
chance level or its outputs are not finite (the numbers are written, but should not be reported as they are).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..attacks.threat import resolve_threat
from ..core import utils  # atomic_write_json through the module, where the fault tests inject a full disk
from ..core.checkpoint_files import load_checkpoint_with_record
from ..core.provenance import attach_provenance
from ..core.utils import (ConfigError, _json_default, apply_set_options, parse_set_options, resolve_device,
                          unknown_name_error)
from ..data import load_dataset, test_images_record, to_float_images
from ..models import MODELS
from ..models.external import load_external_model, normalization_record
from ..training.checkpoints import load_model, resolve_checkpoint
from ..training.config import RunConfig, load_config
from .output_files import eval_outputs, evaluation_setup, merge_evaluations


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluation in exact fp32 (TF32 off) unless ``--precision`` asks for another (atkit.evaluation.evaluate)."""
    return _cmd_eval_run(args)


_RUN_SET_KEYS = ("data", "threat")
_EXTERNAL_ONLY = ("model", "num_classes", "dummy_classes", "dataset")


def _eval_target_run(args: argparse.Namespace, device: Any) -> dict[str, Any]:
    """Model, dataset, threat and provenance parts for ``atkit eval RUN_DIR_OR_CHECKPOINT`` (atkit's own runs).

    ``--set data.*`` / ``threat.*`` change the run's recorded data options and threat model for this evaluation
    (validated as a run config; the threat used is the one in the result and its provenance); any other key is
    refused, as are the options that describe an external ``--checkpoint``."""
    given = [f"--{k.replace('_', '-')}" for k in _EXTERNAL_ONLY if getattr(args, k, None) not in (None, False)]
    if given:
        raise ConfigError(f"{', '.join(given)} describe an external --checkpoint; an atkit run records its own model "
                          "and data (change its data options with --set data.KEY=VALUE)")
    for key, _ in parse_set_options(args.set):
        if key.split(".", 1)[0] not in _RUN_SET_KEYS:
            raise unknown_name_error("--set key for an atkit run (its model is fixed by its weights)",
                                     key.split(".", 1)[0], _RUN_SET_KEYS)
    target = Path(args.target)
    ckpt = resolve_checkpoint(target)
    state, record = load_checkpoint_with_record(ckpt, "cpu")  # read once: the hash is of the weights evaluated
    model = load_model(ckpt, device=device, which=args.which, state=state)
    run_dir = target if target.is_dir() else target.parent.parent
    state_cfg = state.get("config")
    if state_cfg is None and (run_dir / "config.yaml").is_file():
        state_cfg = load_config(run_dir / "config.yaml").to_dict()
    config = RunConfig.from_dict(apply_set_options(dict(state_cfg or {}), args.set))
    dataset = load_dataset(config.dataset, **config.data)
    model_info = {"name": config.model, "params": dict(config.model_params), "num_classes": dataset.num_classes,
                  "dummy_classes": bool(getattr(model, "dummy_classes", False)), "weights": args.which,
                  "source": "atkit run", "normalization": normalization_record(model, "the run's model")}
    return dict(model=model, dataset=dataset, threat=config.threat_model(), checkpoint=record, model_info=model_info,
                state_dir=run_dir / "aa_state" / f"cli-{args.which}", out=run_dir / f"eval-{args.which}.json")


_EXTERNAL_SET_KEYS = ("dataset", "data", "threat", "model_params")


def _eval_target_external(args: argparse.Namespace, device: Any) -> dict[str, Any]:
    """Someone else's state dict: ``atkit eval --checkpoint FILE --model NAME [--num-classes N] [--dummy-classes]``."""
    if args.which != "model":
        raise ConfigError("--which ema applies to atkit runs; an external checkpoint holds one set of weights")
    if not args.model:
        raise ConfigError(f"--checkpoint needs --model NAME, the architecture of the weights; one of {', '.join(MODELS)}")
    spec: dict[str, Any] = {"dataset": args.dataset or "cifar10", "data": {}, "threat": {}, "model_params": {}}
    spec = apply_set_options(spec, args.set)
    for key in spec:
        if key not in _EXTERNAL_SET_KEYS:
            raise unknown_name_error("--set key for an external checkpoint", key, _EXTERNAL_SET_KEYS)
    for key in ("data", "threat", "model_params"):
        if not isinstance(spec[key], dict):
            raise ConfigError(f"--set {key}: expected a mapping (e.g. --set {key}.NAME=VALUE), got {spec[key]!r}")
    path = Path(args.checkpoint)
    # The file first: a garbage or unsafe checkpoint is reported before the dataset loads (or downloads).
    raw, record = load_checkpoint_with_record(path, "cpu", hint="check that the file is complete (re-download it) and "
                                                                 "is a PyTorch state dict")
    dataset = load_dataset(spec["dataset"], **spec["data"])
    num_classes = dataset.num_classes if args.num_classes is None else args.num_classes
    if num_classes != dataset.num_classes:
        raise ConfigError(f"--num-classes {num_classes} but dataset {spec['dataset']!r} has {dataset.num_classes} "
                          "classes: the checkpoint's class count and the evaluation data disagree")
    # RobustBench key names, the checkpoint's own normalization buffers or a stated one (atkit.models.external)
    model, loaded = load_external_model(args.model, path, num_classes=num_classes, dummy_classes=args.dummy_classes,
                                        model_params=spec["model_params"], checkpoint=raw)
    model = model.to(device).eval()
    model_info = {"name": args.model, "params": dict(spec["model_params"]), "num_classes": num_classes,
                  "dummy_classes": bool(args.dummy_classes), "source": "external state dict", **loaded}
    return dict(model=model, dataset=dataset, threat=spec["threat"] or None, checkpoint=record, model_info=model_info,
                state_dir=path.parent / f"{path.stem}.aa_state", out=path.with_name(f"{path.stem}-eval.json"))


def _accuracy_lines(result: dict[str, Any], tag: str = "") -> list[str]:
    from ..core.stats import format_accuracy  # why: atkit.core.stats imports scipy, heavy for the other commands

    lines = []
    for name, flags in (result.get("per_sample") or {}).items():
        k = flags.count("1")
        lines.append(f"{tag}{name:>8s}: {format_accuracy(k, len(flags))}")
    return lines


def _cmd_eval_run(args: argparse.Namespace) -> int:
    # why: evaluation pulls scipy; only `atkit eval` needs it
    from ..evaluation import PROTOCOL_LABELS, evaluate, parse_attacks, split_attack_list
    from ..evaluation.door import precision_label, resolve_eval_precision

    attacks = split_attack_list(args.attacks)
    parse_attacks(attacks)  # an unknown attack is refused before the model and the data load
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n {args.n}: the number of test images must be >= 1 (omit --n for the whole test set)")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1")
    device = resolve_device(args.device or "auto")
    if args.checkpoint:
        if args.target:
            raise ConfigError("give either a run folder / atkit checkpoint or --checkpoint FILE, not both")
        ctx = _eval_target_external(args, device)
    elif args.target:
        ctx = _eval_target_run(args, device)
    else:
        raise ConfigError("eval needs a run folder, an atkit checkpoint, or --checkpoint FILE --model NAME")
    model, dataset = ctx["model"], ctx["dataset"]
    n_split = len(dataset.test_y)
    n = min(args.n or n_split, n_split)
    if args.n is not None and args.n > n_split:  # said, and recorded: the request was cut to the split
        print(f"atkit: warning: --n {args.n} is more than the {n_split} images of the test split; evaluating all "
              f"{n_split}", file=sys.stderr)
    x, y, indices = dataset.eval_subset(n, split="test")  # class-stratified and seeded when n is below the split's size
    images = test_images_record(dataset, indices)
    precision = precision_label(resolve_eval_precision(args.precision or "fp32", device), device)
    setup = evaluation_setup({"images": images, "threat": resolve_threat(ctx["threat"]), "seed": 0,
                              "provenance": {"precision": precision, "checkpoint": ctx["checkpoint"],
                                             "model": ctx["model_info"]},
                              "protocols": ["per protocol"] if getattr(model, "dummy_classes", False) else []})
    out, state_dir = eval_outputs(Path(args.out) if args.out else None, ctx["out"], ctx["state_dir"], attacks,
                                  setup)  # every place the evaluation writes, checked before hours of work
    x = to_float_images(x)
    parts = dict(images=images, checkpoint=ctx["checkpoint"], model=ctx["model_info"])
    extra = {"images": images} | ({"n_requested": args.n} if args.n is not None and args.n != n else {})
    # A dummy-class model is evaluated under every DUCAT protocol: the headline is their per-image worst case, each
    # protocol's numbers beside it, the published one labelled as the papers' protocol.
    result = evaluate(model, x, y, attacks=attacks, threat=ctx["threat"], precision=args.precision or "fp32",
                      batch_size=args.batch_size, device=device, num_classes=dataset.num_classes,
                      aa_state_dir=state_dir, progress=not args.quiet, sanity=args.sanity)
    payload = result.to_dict() | extra
    attach_provenance(payload, **parts)
    if out.merge_with is not None:  # same setup: one file with the earlier attacks and these (atkit.workbench.output_files)
        payload = merge_evaluations(out.merge_with, payload)
    if not _write_or_print(out.path, payload):
        return 1
    if result.protocols:
        by_protocol = {"worst_case": result, **result.protocols}
        print("\n".join(line for p, r in by_protocol.items()
                        for line in _accuracy_lines(r.to_dict(), f"[{PROTOCOL_LABELS.get(p, p)}] ")))
        print(json.dumps({p: {"protocol": PROTOCOL_LABELS.get(p, p), "n": r.n, **_summary(r)}
                          for p, r in by_protocol.items()} | {"written": str(out.path)}))
    else:
        print("\n".join(_accuracy_lines(payload)))
        summary = {k: payload.get(k) for k in ("accuracy", "robust_accuracy", "robust_metric", "mean", "nrr",
                                               "warnings")}
        print(json.dumps(summary | {"ci95": payload["ci95"], "n": payload["n"], "written": str(out.path)}
                         | ({"n_requested": args.n} if "n_requested" in payload else {})))
    return _eval_exit(result)


#: ``atkit eval``'s exit status when the evaluation finished but its numbers need care (docs/running.md).
EXIT_WARNINGS = 3


def _eval_exit(result: Any) -> int:
    """0, or :data:`EXIT_WARNINGS` when a sanity check failed, the model is at chance level or its outputs are not
    finite (each said on stderr and recorded in the JSON's ``warnings``); AutoAttack's own notes do not count."""
    entries = [result, *result.protocols.values()]
    failed = [c["name"] for r in entries for c in (r.checks or []) if not c.get("passed", True)]
    notes = [n for r in entries for n in r.notes] + [w for r in entries for w in r.attack_warnings
                                                     if "not finite" in w]
    for line in dict.fromkeys([f"sanity check failed: {name}" for name in failed] + notes):
        print(f"atkit: warning: {line}", file=sys.stderr)
    return EXIT_WARNINGS if failed or notes else 0


def _summary(result: Any) -> dict[str, Any]:
    """The printed line of ``atkit eval``: accuracies, the robust accuracy behind Mean/NRR with its name."""
    return {"accuracy": result.accuracy, "robust_accuracy": result.robust_accuracy,
            "robust_metric": result.robust_metric, "mean": result.mean, "nrr": result.nrr,
            "warnings": result.warnings}


def _write_or_print(out: Path, payload: dict[str, Any]) -> bool:
    """Write ``payload`` to ``out``; if that fails after all, print it (whatever ``--quiet`` says) so the numbers
    are not lost; :func:`atkit.core.utils.atomic_write_json` also keeps a copy where it can (named on stderr)."""
    try:
        utils.atomic_write_json(out, payload)
        return True
    except OSError as e:
        print(json.dumps(payload, default=_json_default))
        kept = getattr(e, "recovered_to", None)
        print(f"atkit: error: could not write {str(out)!r} ({e.strerror or e}); the evaluation is printed above"
              + (f" and kept in {kept}" if kept else ""), file=sys.stderr)
        return False


__all__ = ["EXIT_WARNINGS", "cmd_eval"]
