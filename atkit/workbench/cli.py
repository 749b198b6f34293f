"""Command line: ``python -m atkit {train,eval,compare,card,methods,attacks,experiments,notebook,sweep}``.

Bad input exits with status 2 and one clear line (the :class:`ConfigError` message), before any work.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from ..core import utils  # atomic_write_json through the module, where the fault tests inject a full disk
from ..core.paths import resolve_output_path
from ..core.processes import exit_status, sigterm_as_interrupt
from ..core.threads import ACCEPTED as THREADS_ACCEPTED, threads_for_command
from ..core.utils import ConfigError, OutputWriteError, apply_set_options
from ..methods import COMPOSERS, describe_methods
from ..training.config import load_config, load_config_dict
from ..training.distributed import cleanup
from ..training.epoch import NonFiniteLossError
from ..training.trainer import train
from .cli_eval import cmd_eval
from .notebooks import KERNEL_NAME, NOTEBOOK_DIR, refuse_other_kind, run_notebook
from .output_files import check_writable
from .sweep import format_summary, load_grid, make_points, run_sweep
from .sweep_jobs import cancel_sweep, format_status, require_submitit, sweep_status
from .sweep_submitit import SlurmOptions, submit_sweep, wait_for_jobs

DESCRIPTION = ("atkit, a research workbook for adversarial training: train and evaluate models, list the methods, "
               "run the notebooks and sweeps. Bad input stops with one line and exit status 2.")


_RESUME_IGNORES = ("set", "device", "out_dir", "precision", "channels_last", "compile")


def _cmd_train(args: argparse.Namespace) -> int:
    """Ctrl-C or SIGTERM: one line (the run records itself "interrupted" and resumes), exit status 130 / 143."""
    try:
        with sigterm_as_interrupt():
            return _cmd_train_run(args)
    except KeyboardInterrupt as e:
        run_dir = getattr(e, "run_dir", None)
        where = (f"run {str(run_dir)!r} keeps its last complete epoch; continue it with: python -m atkit train "
                 f"--resume {shlex.quote(str(run_dir))}") if run_dir else "no run was started"
        print(f"atkit: training interrupted ({str(e) or 'Ctrl-C'}); {where}", file=sys.stderr)
        return exit_status(e)


def _cmd_train_run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.device:
        overrides["device"] = args.device
    if args.out_dir:
        overrides["out_dir"] = args.out_dir
    for key in ("precision", "channels_last", "compile"):  # fast-path switches (atkit.core.fast)
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = {"true": True, "false": False}.get(value, value)
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in _RESUME_IGNORES if getattr(args, k, None)]
        if given or args.config:
            raise ConfigError(f"--resume continues a run with the config it recorded (RUN_DIR/config.yaml); "
                              f"{', '.join(given or ['a CONFIG file'])} cannot change it: give only --resume RUN_DIR "
                              "(and --quiet), or start a new run")
        trainer = train(None, resume=args.resume, progress=not args.quiet)
        if getattr(trainer, "already_finished", False) and trainer.dist.is_main:
            print(f"atkit: run {str(trainer.run_dir)!r} is already finished ({trainer.epochs} epoch(s)); nothing to "
                  f"train, its final evaluation is in {str(trainer.run_dir / 'eval.json')!r}", file=sys.stderr)
    else:
        values = load_config_dict(args.config)
        refuse_other_kind(args.config, values, "run config")  # a notebook's parameters or a grid: name its command
        values = apply_set_options(values, args.set)
        if "method" not in values:  # a file without it would silently train the default for days
            raise ConfigError(f"config file {args.config!r} names no method: add e.g. 'method: pgd_at' "
                              "(atkit methods lists them) or --set method=...")
        config = load_config(values, **overrides)
        trainer = train(config, progress=not args.quiet)
    if trainer.dist.is_main:  # under torchrun: one line, from rank 0
        print(json.dumps({"run_dir": str(trainer.run_dir), "status": trainer.status, "best_epoch": trainer.best_epoch}))
    cleanup()
    return 0 if trainer.status == "finished" else 1


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..evaluation.compare import (compare_arms, compare_evaluations, format_arms,  # why: pulls scipy
                                      format_comparison)

    if args.vs is None:
        if len(args.runs) != 2:
            raise ConfigError(f"compare got {len(args.runs)} runs: give two (A B), or arms of one run per seed "
                              "(A1 A2 ... --vs B1 B2 ...)")
        if args.margin is not None:
            raise ConfigError("--margin (an equivalence test) needs arms: A1 A2 ... --vs B1 B2 ...")
        cmp = compare_evaluations(*args.runs, attack=args.attack, checkpoint=args.checkpoint, protocol=args.protocol)
        print(json.dumps(cmp, indent=2) if args.json else format_comparison(cmp))
        return 0
    cmp = compare_arms(args.runs, args.vs, attack=args.attack, checkpoint=args.checkpoint, protocol=args.protocol,
                       margin=args.margin)
    print(json.dumps(cmp, indent=2) if args.json else format_arms(cmp))
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from ..evaluation.card import make_card  # why: pulls scipy (atkit.core.stats)

    out, target = Path(args.out), Path(args.target)
    source = target / "eval.json" if target.is_dir() else target
    if out.resolve() in (source.resolve(), target.resolve()):
        raise ConfigError(f"--out {str(out)!r} is the evaluation the card is made from; it is never overwritten: "
                          "give another file name, e.g. --out card.json")
    check_writable(out, "--out")  # before the card is built, not after
    card = make_card(args.target, checkpoint=args.checkpoint, name=args.name, link=args.link, authors=args.authors,
                     venue=args.venue, reported=args.reported, footnote=args.footnote,
                     additional_data=args.additional_data, architecture=args.architecture)
    utils.atomic_write_json(args.out, card)
    print(json.dumps({k: card[k] for k in ("dataset", "architecture", "eps", "clean_acc", "autoattack_acc")}
                     | {"written": str(args.out)}))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
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


def _cmd_attacks(args: argparse.Namespace) -> int:
    from ..evaluation import EVAL_ATTACKS, attack_order  # why: evaluation pulls scipy

    rows = [EVAL_ATTACKS[name].describe_class() for name in attack_order(EVAL_ATTACKS)]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        spelling = row["name"] + ("N" if row["suffix"] else "")
        print(f"{spelling}  ({row['paper']}){'' if row['robust'] else '  [not a robust-accuracy attack]'}")
        print(f"    {row['doc']}")
        for key, info in row["settings"].items():
            print(f"    {key} = {info['default']!r}  {info['help']}")
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    from ..experiments import EXPERIMENTS, write_experiment_notebook  # why: the experiments pull scipy and seaborn

    names = [args.name] if args.name else sorted(EXPERIMENTS)
    rows = [EXPERIMENTS.get(name).describe() for name in names]
    if args.notebook:
        if not args.name:
            raise ConfigError("--notebook writes one experiment's notebook: name it (atkit experiments NAME --notebook)")
        path = write_experiment_notebook(args.name, NOTEBOOK_DIR / f"{args.name}.ipynb")
        print(f"wrote {path}: the parameters cell and the one call; its prose is yours to write")
        return 0
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        print(f"{row['name']}  ({row['source']})")
        print(f"    {row['doc']}")
        for key, info in row["parameters"].items():
            print(f"    {key} = {info['default']!r}  {info['help']}")
    return 0


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
    if args.status or args.cancel:
        return _cmd_sweep_status(args)
    if not args.grid:
        raise ConfigError("atkit sweep needs a grid file (-f GRID.yaml), or --status OUT / --cancel OUT")
    spec = load_grid(args.grid, notebook=args.notebook, sets=args.set)
    if args.backend == "submitit":
        return _cmd_sweep_submitit(args, spec)
    out = str(resolve_output_path(args.out or Path("outputs") / "sweeps" / spec.name))
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus is not None else None
    if args.dry_run:
        for r, p in zip(run_sweep(spec, out, workers=args.workers, gpus=gpus, dry_run=True, timeout=args.timeout,
                                  kernel_name=args.kernel), make_points(spec)):
            print(f"{r.status:8s} {out}/{p.folder}  {json.dumps(p.varied, default=str)}")
        return 0
    try:
        results = run_sweep(spec, out, workers=args.workers, gpus=gpus, device=args.device, timeout=args.timeout,
                            kernel_name=args.kernel, progress=not args.quiet)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the running points were stopped and recorded
        print(f"sweep interrupted; finished points are kept in {out} (run the same command again to go on)",
              file=sys.stderr)
        return exit_status(e)
    return _sweep_exit(results, out)


def _sweep_exit(results: Any, out: Any) -> int:
    """Print a sweep's summary (either backend); exit status 1 when a point failed."""
    print(format_summary(results))
    print(f"summary: {Path(out) / 'sweep.csv'}")
    return 0 if all(r.status in ("done", "skipped") for r in results) else 1


_SLURM_FLAGS = ("partition", "time", "gpus_per_point", "cpus_per_point", "mem", "account", "array_parallelism",
                "max_requeues")


def _cmd_sweep_submitit(args: argparse.Namespace, spec: Any) -> int:
    """``--backend submitit``: one job per unfinished point (atkit.workbench.sweep_submitit); waits with ``--wait``."""
    require_submitit()
    flags = {name: getattr(args, name) for name in _SLURM_FLAGS}
    flags["gpus"], flags["cpus"] = flags.pop("gpus_per_point"), flags.pop("cpus_per_point")
    if flags["time"] is not None and str(flags["time"]).isdigit():
        flags["time"] = int(flags["time"])
    options = SlurmOptions.from_sources(spec.slurm, flags)
    out = str(resolve_output_path(args.out or Path("outputs") / "sweeps" / spec.name))  # as the local runner's
    if args.dry_run:
        for r, p in zip(run_sweep(spec, out, gpus=[], dry_run=True, timeout=args.timeout, kernel_name=args.kernel),
                        make_points(spec)):
            print(f"{r.status:8s} {out}/{p.folder}  {json.dumps(p.varied, default=str)}")
        return 0
    sub = submit_sweep(spec, out, cluster=args.cluster, options=options, device=args.device, kernel_name=args.kernel,
                       timeout=args.timeout)
    for folder, why in sub.unknown.items():  # reported, never acted on
        print(f"atkit: warning: {folder} not submitted again: {why}; check the job (squeue / sacct), or if it is gone "
              f"remove its entry from {out}/_submitit/jobs.json and run this command again", file=sys.stderr)
    n_done = sum(r.status == "skipped" for r in sub.results)
    ids = sorted({str(j.job_id).split("_")[0] for j in sub.jobs.values()})
    print(f"sweep {spec.name}: {n_done} of {len(sub.results)} points already finished, skipped; "
          f"{len(sub.jobs)} submitted ({args.cluster}{', job ' + ', '.join(ids) if ids else ''})"
          + (f"; {len(sub.still_queued)} still queued from before" if sub.still_queued else ""), flush=True)
    if not (args.wait or args.cluster == "debug"):
        print(f"follow it with: python -m atkit sweep --status {shlex.quote(str(out))}   "
              f"(cancel: --cancel {shlex.quote(str(out))})")
        return 0

    def report(res: Any) -> None:
        if not args.quiet:
            line = f"[{res.status if res.status == 'done' else res.status.upper()} {res.seconds or 0:.1f}s] {res.folder}"
            print(line + (f": {res.error.splitlines()[0][:200]}" if res.error else ""), flush=True)

    try:
        results = wait_for_jobs(sub, on_result=report)
    except KeyboardInterrupt:
        print(f"stopped waiting; the jobs go on (python -m atkit sweep --status {shlex.quote(str(out))}, "
              f"--cancel {shlex.quote(str(out))})",
              file=sys.stderr)
        return 130
    return _sweep_exit(results, out)


def _cmd_sweep_status(args: argparse.Namespace) -> int:
    if args.cancel:
        report = cancel_sweep(args.cancel)
        cancelled = report.cancelled
        print(f"cancelled {len(cancelled)} job(s){': ' + ', '.join(cancelled) if cancelled else ''}; finished points "
              "are kept, the same sweep command submits the rest again")
        for job_id, why in report.not_cancelled.items():
            print(f"atkit: warning: job {job_id} not cancelled: {why}", file=sys.stderr)
        return 0 if not report.not_cancelled else 1
    rows = sweep_status(args.status)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(format_status(rows))
    return 0


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", help=f"CPU threads of torch here and in every process the command starts: "
                                     f"{THREADS_ACCEPTED} (default: ATKIT_THREADS, else never more than the free "
                                     "cores; see atkit.core.threads)")


def build_parser() -> argparse.ArgumentParser:
    # Plain text: argparse prints help verbatim, so no reST markup (``...``, :class:) belongs here.
    parser = argparse.ArgumentParser(prog="python -m atkit", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train from a YAML config, or resume a run folder")
    p.add_argument("config", nargs="?", help="YAML run config")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint, with the "
                                                        "config it recorded (--set and the config flags are refused)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the config's, 'auto')")
    p.add_argument("--out-dir", help="parent folder of run folders (default: outputs/runs; relative paths are read "
                                          "against the project root, see atkit.core.paths)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override one key without editing a file: KEY=VALUE, dotted keys reach into mappings, values are YAML "
                        "(e.g. --set dataset=folder --set data.root=data/cifar10-jpeg); repeatable")
    p.add_argument("--quiet", action="store_true",
                   help="no progress: no step bar, no line per epoch, no final-evaluation progress")
    p.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16"],
                   help="training precision (default: the config's, 'auto' = bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--channels-last", dest="channels_last", choices=["auto", "true", "false"],
                   help="channels_last memory layout (default: the config's, 'auto' = on CUDA)")
    p.add_argument("--compile", help="torch.compile the model: true, false or a backend name (default: the config's)")
    _add_threads_option(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a run folder, an atkit checkpoint, or someone else's state dict")
    p.add_argument("target", nargs="?", help="run folder (uses checkpoints/best.pt, else last.pt) or an atkit .pt checkpoint")
    p.add_argument("--checkpoint", metavar="FILE", help="a plain PyTorch state dict (wrappers 'state_dict', 'model' and "
                                                        "'module.' prefixes accepted, RobustBench key names mapped), "
                                                        "evaluated with --model")
    p.add_argument("--model", help="architecture of --checkpoint (an atkit model name, e.g. wrn34_10, dm_wrn70_16)")
    p.add_argument("--num-classes", type=int, help="classes of --checkpoint (default: the dataset's)")
    p.add_argument("--dummy-classes", action="store_true", help="--checkpoint has a DUCAT 2C-output head")
    p.add_argument("--dataset", help="evaluation data for --checkpoint (default: cifar10)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="a run: data.* or threat.* options (e.g. --set threat.eps=0.0157, used and recorded); with "
                        "--checkpoint also model_params.* (e.g. --set data.root=data --set threat.norm=l2 "
                        "--set model_params.normalize=cifar10); any other key is refused; repeatable")
    p.add_argument("--attacks", default="clean,pgd20,cw",
                   help="comma-separated evaluation attacks (python -m atkit attacks lists them): e.g. "
                        "clean,pgd20,cw,apgd,aa")
    p.add_argument("--which", default="model", choices=["model", "ema"], help="online weights or the weight average")
    p.add_argument("--sanity", action="store_true",
                   help="also run the gradient-masking sanity checks (steps/eps monotonicity, large eps, black-box, "
                        "zero gradients, randomness, dummy-class protocols)")
    p.add_argument("--n", type=int, default=None,
                   help="evaluate N test images, class-stratified and seeded (default: all)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device")
    p.add_argument("--out", help="JSON file to write (default: RUN_DIR/eval-<which>.json; an earlier evaluation of the "
                                 "same setup there gets these attacks added, one of another setup is kept and this "
                                 "one goes to eval-<which>-2.json)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "auto"],
                   help="fp32 (default, exact: the reported numbers), tf32 (TF32 matmuls/convolutions on CUDA) or bf16 "
                        "autocast (faster; atkit.core.fast.evaluation_parity says per model whether they give the fp32 result)")
    _add_threads_option(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="paired test of two evaluations on the same test images, or of two arms of "
                                       "runs paired by seed (pooled per-image analysis)")
    p.add_argument("runs", nargs="+", help="A B: two runs (run folder, its eval.json, or an `atkit eval` JSON file); "
                                           "with --vs: arm A, one run per seed")
    p.add_argument("--vs", nargs="+", help="arm B (the baseline), one run per seed, paired with arm A by seed")
    p.add_argument("--margin", type=float, help="arms only: also a TOST equivalence test at +-MARGIN points")
    p.add_argument("--attack", help="attack to compare (default: aa when both ran it, else per image the worst case "
                                    "over every robust attack both ran)")
    p.add_argument("--checkpoint", default="final", choices=["final", "best"], help="which model of a run's eval.json")
    p.add_argument("--protocol", default="worst",
                   help="dummy-class models: worst (per image over all protocols, default), published, adaptive, ...")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("card", help="write a RobustBench model-info card from a standard AutoAttack evaluation")
    p.add_argument("target", help="run folder, its eval.json, or an `atkit eval` JSON file")
    p.add_argument("--out", required=True, help="card JSON file to write")
    p.add_argument("--checkpoint", default="final", choices=["final", "best"], help="which model of a run's eval.json")
    for key in ("name", "link", "authors", "venue", "reported", "footnote"):
        p.add_argument(f"--{key}", default="", help=f"the card's {key!r} field")
    p.add_argument("--architecture", help="the card's architecture (default: from the model name)")
    p.add_argument("--additional-data", action="store_true", help="the model was trained with extra data")
    p.set_defaults(func=_cmd_card)

    p = sub.add_parser("methods", help="list the registered methods with their hyperparameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_methods)

    p = sub.add_parser("attacks", help="list the registered evaluation attacks with their settings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_attacks)

    p = sub.add_parser("experiments", help="list the registered experiments with their parameters; --notebook writes "
                                           "a new experiment's notebook")
    p.add_argument("name", nargs="?", help="one experiment (default: all)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--notebook", action="store_true",
                   help="write notebooks/NAME.ipynb from the experiment's class (never over an existing file)")
    p.set_defaults(func=_cmd_experiments)

    p = sub.add_parser("notebook", help="execute a notebook with papermill and a parameter file")
    p.add_argument("notebook", help="name in notebooks/ (e.g. mse_perception) or a path")
    p.add_argument("--params", "-f", help="papermill parameter YAML (parameters/{smoke,demo,paper}/...)")
    p.add_argument("--out", required=True, help="output folder for the executed notebook and its files (relative: "
                                                     "against the project root, see atkit.core.paths)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override one key without editing a file: KEY=VALUE, dotted keys reach into mappings, values are YAML "
                        "(e.g. --set dataset=folder --set data.root=data/cifar10-jpeg); repeatable")
    p.add_argument("--device")
    p.add_argument("--quiet", action="store_true")
    _add_threads_option(p)
    p.set_defaults(func=_cmd_notebook)

    p = sub.add_parser("sweep", help="execute a notebook once per grid point (papermill), one worker per GPU")
    p.add_argument("notebook", nargs="?", help="name in notebooks/ or a path (default: the grid file's 'notebook')")
    p.add_argument("--grid", "-f", help="grid YAML: notebook, base (parameter file or mapping), "
                                        "grid {name: [values]} and/or points [...], slurm {...}")
    p.add_argument("--out", help="folder of the point folders and sweep.json/csv (default: outputs/sweeps/<grid>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override one parameter of every point without editing a file: KEY=VALUE, dotted keys reach "
                        "into mappings, values are YAML (e.g. --set epochs=2 --set data.root=data/cifar10-jpeg); "
                        "applied to the base parameters before the grid's values; repeatable")
    p.add_argument("--workers", type=int, help="parallel points (default: one per visible GPU, else 1 on the CPU)")
    p.add_argument("--gpus", help="comma-separated GPU ids to use (default: all visible; '' for CPU only)")
    p.add_argument("--device", help="device parameter for notebooks that declare one (default: cuda/cpu per worker)")
    p.add_argument("--timeout", type=float, help="seconds per point before it is stopped and marked failed")
    p.add_argument("--kernel", default=KERNEL_NAME, help=f"Jupyter kernel name (default: {KERNEL_NAME}, the one the "
                                                         "notebooks name)")
    p.add_argument("--dry-run", action="store_true", help="list the points and their folders, run nothing")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--status", metavar="OUT", help="show pending/running/done/failed per point of the sweep in OUT "
                                                   "(either backend; job ids for submitit), then exit")
    p.add_argument("--json", action="store_true", help="with --status: one JSON row per point")
    p.add_argument("--cancel", metavar="OUT", help="cancel the submitit jobs of the sweep in OUT (finished points stay)")
    g = p.add_argument_group("cluster (--backend submitit; needs pip install atkit[slurm]); job resources default "
                             "to the grid file's slurm: mapping")
    g.add_argument("--backend", choices=["local", "submitit"], default="local",
                   help="local: worker processes on this machine (default); submitit: one job per point")
    g.add_argument("--cluster", choices=["slurm", "local", "debug"], default="slurm",
                   help="submitit executor: slurm (sbatch job array), local (processes here), debug (in this process)")
    g.add_argument("--wait", action="store_true", help="wait for the jobs and print the summary (debug always waits)")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--time", help="time limit per job: minutes or HH:MM:SS / D-HH:MM:SS (default 1440 minutes)")
    g.add_argument("--gpus-per-point", type=int,
                   help="GPUs per job (default 1 on slurm, 0 for local/debug; >1: train notebook points via torchrun)")
    g.add_argument("--cpus-per-point", type=int, help="CPUs per job")
    g.add_argument("--mem", help="memory per job, e.g. 32G")
    g.add_argument("--account", help="SLURM account")
    g.add_argument("--array-parallelism", type=int, help="jobs of the array running at once (default 256)")
    g.add_argument("--max-requeues", type=int, help="requeues of a timed-out job (default 3; preemptions always requeue)")
    _add_threads_option(p)
    p.set_defaults(func=_cmd_sweep)
    return parser


def _one_line_warning(message: Warning | str, category: type, filename: str, lineno: int, line: Optional[str] = None) -> str:
    """Warnings about the user's input as ``atkit: warning: ...`` (not a source file and line of atkit)."""
    return f"atkit: warning: {message}\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and not args.config and not args.resume:
        parser.error("train needs a CONFIG.yaml or --resume RUN_DIR")
    try:
        with threads_for_command(getattr(args, "threads", None)):  # one thread policy (atkit.core.threads)
            return args.func(args)
    except ConfigError as e:
        print(f"atkit: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        # Failures during a run (non-finite loss, a write that failed) are reported in one line; what the
        # run saved before stays on disk and the run resumes with --resume.
        if isinstance(e, (NonFiniteLossError, OutputWriteError)):
            print(f"atkit: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
