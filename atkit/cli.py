"""Command line: ``python -m atkit {train,eval,methods,notebook,sweep}``.

Bad input exits with status 2 and one clear line (the :class:`ConfigError` message), before any work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .utils import ConfigError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
DESCRIPTION = ("atkit, a research workbook for adversarial training: train and evaluate models, list the methods, "
               "run the notebooks and sweeps. Bad input stops with one line and exit status 2.")


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import train

    overrides: dict[str, Any] = {}
    if args.device:
        overrides["device"] = args.device
    if args.out_dir:
        overrides["out_dir"] = args.out_dir
    for key in ("precision", "channels_last", "compile"):  # fast-path switches (atkit.fast)
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = {"true": True, "false": False}.get(value, value)
    if args.resume:
        trainer = train(None, resume=args.resume, progress=not args.quiet)
    else:
        from .config import load_config_dict
        from .utils import apply_set_options

        config = load_config(apply_set_options(load_config_dict(args.config), args.set), **overrides)
        trainer = train(config, progress=not args.quiet)
    if trainer.dist.is_main:  # under torchrun: one line, from rank 0
        print(json.dumps({"run_dir": str(trainer.run_dir), "status": trainer.status, "best_epoch": trainer.best_epoch}))
    from .distributed import cleanup

    cleanup()
    return 0 if trainer.status == "finished" else 1


def _cmd_eval(args: argparse.Namespace) -> int:
    """Evaluation in exact fp32 (TF32 off) unless ``--precision`` asks for bf16 (atkit.fast)."""
    from .fast import exact_fp32, resolve_precision
    from .utils import resolve_device

    precision = getattr(args, "precision", None) or "fp32"
    with exact_fp32(resolve_precision(precision, resolve_device(args.device or "auto")) is None):
        return _cmd_eval_run(args)


def _cmd_eval_run(args: argparse.Namespace) -> int:
    import torch

    from .config import RunConfig
    from .data import load_dataset
    from .evaluate import evaluate
    from .train import load_model
    from .utils import atomic_write_json, resolve_device

    target = Path(args.target)
    device = resolve_device(args.device or "auto")
    model = load_model(target, device=device, which=args.which)
    if getattr(args, "precision", None) not in (None, "fp32"):
        from .fast import eval_model

        model = eval_model(model, device=device, precision=args.precision, channels_last=device.type == "cuda")
    ckpt = target if target.is_file() else None
    run_dir = target if target.is_dir() else target.parent.parent
    state_cfg = None
    if ckpt is not None:
        state_cfg = torch.load(ckpt, map_location="cpu", weights_only=False)["config"]
    elif (run_dir / "config.yaml").is_file():
        from .config import load_config

        state_cfg = load_config(run_dir / "config.yaml").to_dict()
    config = RunConfig.from_dict(state_cfg)
    dataset = load_dataset(config.dataset, **config.data)
    n = min(args.n or len(dataset.test_y), len(dataset.test_y))
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    from .train import to_float_images

    x, y, _ = dataset.eval_subset(n, split="test")  # class-stratified and seeded when n is below the split's size
    x = to_float_images(x)
    kwargs = dict(attacks=attacks, threat=config.threat_model(), batch_size=args.batch_size, device=device,
                  num_classes=dataset.num_classes, aa_state_dir=run_dir / "aa_state" / f"cli-{args.which}",
                  progress=not args.quiet, sanity=args.sanity)
    out = Path(args.out) if args.out else run_dir / f"eval-{args.which}.json"
    if getattr(model, "dummy_classes", False):
        # Dummy-class models: the published protocol never without the adaptive one (REFERENCE.md 3, DUCAT).
        from .evaluate import evaluate_dummy_protocols

        by_protocol = evaluate_dummy_protocols(model, x, y, **kwargs)
        payload = {p: r.to_dict() for p, r in by_protocol.items()}
        atomic_write_json(out, {"protocols": payload})
        print(json.dumps({p: {"accuracy": r.accuracy, "mean": r.mean, "nrr": r.nrr} for p, r in by_protocol.items()}
                         | {"written": str(out)}))
        return 0
    result = evaluate(model, x, y, **kwargs)
    atomic_write_json(out, result.to_dict())
    print(json.dumps({"accuracy": result.accuracy, "mean": result.mean, "nrr": result.nrr,
                      "warnings": result.warnings, "written": str(out)}))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import COMPOSERS, describe_methods

    methods = describe_methods()
    if args.json:
        print(json.dumps({"methods": methods, "add_ons": sorted(COMPOSERS)}, indent=2, default=str))
        return 0
    for m in methods:
        print(f"{m['name']}  ({m['paper']})")
        for hp, info in m["hyperparameters"].items():
            print(f"    {hp} = {info['default']!r}  {info['help']}")
    if COMPOSERS:
        print("add-on terms (use as <base>+<add-on>, e.g. trades+rpat): " + ", ".join(sorted(COMPOSERS)))
    return 0


def run_notebook(name_or_path: str, params_file: Optional[str], out_dir: str, *, device: Optional[str] = None,
                 extra: Optional[dict[str, Any]] = None, kernel_name: str = "python3",
                 progress: bool = True, sets: Optional[Sequence[str]] = None) -> Path:
    """Execute a notebook with papermill into ``out_dir`` (executed copy and the notebook's own outputs).

    The notebook receives ``out_dir`` (and ``device`` when given) as parameters, on top of the
    YAML parameter file and ``sets`` (``KEY=VALUE`` strings, dotted keys, YAML values, as the CLI's
    ``--set``); unknown parameter names are refused before execution. The kernel shows progress as text
    lines (``ATKIT_PROGRESS=lines`` unless set): widget bars would be saved in the executed copy as dead bars;
    with ``progress`` its printed output is also copied to stderr as it comes.
    """
    import papermill as pm
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = NOTEBOOK_DIR / f"{name_or_path}.ipynb"
    if not path.is_file():
        names = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
        raise ConfigError(f"notebook {name_or_path!r} not found; available: {', '.join(names)}")
    params: dict[str, Any] = {}
    if params_file:
        pf = Path(params_file)
        if not pf.is_file():
            raise ConfigError(f"parameter file {params_file!r} does not exist")
        params = yaml.safe_load(pf.read_text()) or {}
    params.update(extra or {})
    from .utils import apply_set_options

    params = apply_set_options(params, sets)
    params["out_dir"] = str(out_dir)
    if device:
        params["device"] = device
    declared = pm.inspect_notebook(str(path))
    unknown = sorted(set(params) - set(declared))
    if unknown:
        from .utils import unknown_name_error

        raise unknown_name_error(f"parameter of notebook {path.name}", unknown[0], declared)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    executed = out / path.name
    from .progress import PROGRESS_ENV

    previous = os.environ.get(PROGRESS_ENV)
    os.environ.setdefault(PROGRESS_ENV, "lines")  # inherited by the kernel papermill starts
    try:
        # With progress, the kernel's printed lines (one per epoch, the evaluation's) also reach this terminal.
        pm.execute_notebook(str(path), str(executed), parameters=params, kernel_name=kernel_name,
                            cwd=str(path.parent.parent), progress_bar=progress,
                            stdout_file=sys.stderr if progress else None, stderr_file=sys.stderr if progress else None)
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
    return executed


def _cmd_notebook(args: argparse.Namespace) -> int:
    try:
        executed = run_notebook(args.notebook, args.params, args.out, device=args.device, progress=not args.quiet,
                                sets=args.set)
    except KeyboardInterrupt:
        print(f"notebook interrupted; what it wrote so far is in {args.out} (run the same command again: finished "
              "training runs are reused, an interrupted one resumes)", file=sys.stderr)
        return 130
    print(f"executed notebook: {executed}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import format_summary, load_grid, run_sweep

    spec = load_grid(args.grid, notebook=args.notebook)
    out = args.out or str(Path("outputs") / "sweeps" / spec.name)
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus is not None else None
    if args.dry_run:
        from .sweep import make_points

        for r, p in zip(run_sweep(spec, out, workers=args.workers, gpus=gpus, dry_run=True), make_points(spec)):
            print(f"{r.status:8s} {out}/{p.folder}  {json.dumps(p.varied, default=str)}")
        return 0
    try:
        results = run_sweep(spec, out, workers=args.workers, gpus=gpus, device=args.device, timeout=args.timeout,
                            kernel_name=args.kernel, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"sweep interrupted; finished points are kept in {out} (run the same command again to go on)",
              file=sys.stderr)
        return 130
    print(format_summary(results))
    print(f"summary: {Path(out) / 'sweep.csv'}")
    return 0 if all(r.status in ("done", "skipped") for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    # Plain text: argparse prints help verbatim, so no reST markup (``...``, :class:) belongs here.
    parser = argparse.ArgumentParser(prog="python -m atkit", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train from a YAML config, or resume a run folder")
    p.add_argument("config", nargs="?", help="YAML run config")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the config's, 'auto')")
    p.add_argument("--out-dir", help="parent folder of run folders (default: outputs/runs)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override one key without editing a file: KEY=VALUE, dotted keys reach into mappings, values are YAML "
                        "(e.g. --set dataset=folder --set data.root=data/cifar10-jpeg); repeatable")
    p.add_argument("--quiet", action="store_true",
                   help="no progress: no step bar, no line per epoch, no final-evaluation progress")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="training precision (default: the config's, 'auto' = bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--channels-last", dest="channels_last", choices=["auto", "true", "false"],
                   help="channels_last memory layout (default: the config's, 'auto' = on CUDA)")
    p.add_argument("--compile", help="torch.compile the model: true, false or a backend name (default: the config's)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a run folder or a checkpoint")
    p.add_argument("target", help="run folder (uses checkpoints/best.pt, else last.pt) or a .pt checkpoint")
    p.add_argument("--attacks", default="clean,pgd20,cw", help="comma-separated: clean,pgd10,pgd20,pgd100,cw,aa,apgd")
    p.add_argument("--which", default="model", choices=["model", "ema"], help="online weights or the weight average")
    p.add_argument("--sanity", action="store_true",
                   help="also run the gradient-masking sanity checks (steps/eps monotonicity, large eps, black-box, "
                        "zero gradients, randomness, dummy-class protocols)")
    p.add_argument("--n", type=int, default=None, help="evaluate the first N test images (default: all)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device")
    p.add_argument("--out", help="JSON file to write (default: RUN_DIR/eval-<which>.json)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                   help="fp32 (default, exact: the reported numbers) or bf16 autocast (faster, for screening)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("methods", help="list the registered methods with their hyperparameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_methods)

    p = sub.add_parser("notebook", help="execute a notebook with papermill and a parameter file")
    p.add_argument("notebook", help="name in notebooks/ (e.g. mse_perception) or a path")
    p.add_argument("--params", "-f", help="papermill parameter YAML (parameters/{smoke,demo,paper}/...)")
    p.add_argument("--out", required=True, help="output folder for the executed notebook and its files")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override one key without editing a file: KEY=VALUE, dotted keys reach into mappings, values are YAML "
                        "(e.g. --set dataset=folder --set data.root=data/cifar10-jpeg); repeatable")
    p.add_argument("--device")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_notebook)

    p = sub.add_parser("sweep", help="execute a notebook once per grid point (papermill), one worker per GPU")
    p.add_argument("notebook", nargs="?", help="name in notebooks/ or a path (default: the grid file's 'notebook')")
    p.add_argument("--grid", "-f", required=True, help="grid YAML: notebook, base (parameter file or mapping), "
                                                       "grid {name: [values]} and/or points [...]")
    p.add_argument("--out", help="folder of the point folders and sweep.json/csv (default: outputs/sweeps/<grid>)")
    p.add_argument("--workers", type=int, help="parallel points (default: one per visible GPU, else 1 on the CPU)")
    p.add_argument("--gpus", help="comma-separated GPU ids to use (default: all visible; '' for CPU only)")
    p.add_argument("--device", help="device parameter for notebooks that declare one (default: cuda/cpu per worker)")
    p.add_argument("--timeout", type=float, help="seconds per point before it is stopped and marked failed")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    p.add_argument("--dry-run", action="store_true", help="list the points and their folders, run nothing")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_sweep)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and not args.config and not args.resume:
        parser.error("train needs a CONFIG.yaml or --resume RUN_DIR")
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"atkit: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        # Failures during a run (non-finite loss, a write that failed) are reported in one line; what the
        # run saved before stays on disk and the run resumes with --resume.
        from .train import NonFiniteLossError, OutputWriteError

        if isinstance(e, (NonFiniteLossError, OutputWriteError)):
            print(f"atkit: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
