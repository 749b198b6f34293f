"""Sweeps: execute a notebook once per point of a parameter grid with papermill, in parallel.

A grid file (YAML)::

    notebook: ablation                    # a name in notebooks/ or a path (optional when given on the command line)
    base: parameters/demo/ablation.yaml   # a papermill parameter file, or a mapping of parameters
    grid:                                 # cartesian product (a list of such mappings: their products, in turn)
      method_params.rp_distance: [mse, kl]   # dotted names set one key inside a dict parameter
      seeds: [[0], [1]]
    points:                               # and/or explicit points, run after the grid's
      - {method: pgd_at}
    slurm: {partition: gpu, time: "12:00:00", gpus: 1}   # only for --backend submitit (atkit.workbench.sweep_submitit)

Each point runs in its own folder ``<out>/<slug>-<hash>`` (``slug``: the varied parameters, readable;
``hash``: of all the point's parameters, stable across runs and machines) as one ``python -m papermill``
process per point (the notebook's ``out_dir`` parameter is set to that folder), with
``CUDA_VISIBLE_DEVICES`` naming the worker's GPU (one worker per visible GPU; one CPU worker when there
is none, or ``workers``). A point is finished when its ``_sweep_done.json`` exists (written atomically
after papermill succeeded) and is skipped when the sweep runs again; a failure (the exception papermill
reports as ``PapermillExecutionError``, a timeout, a crash) is recorded in ``_sweep_failed.json`` and in
the summary, and the other points go on. ``sweep.json`` and
``sweep.csv`` in ``<out>`` list every point's status; they are rewritten after each point, so an
interrupted sweep (Ctrl-C or SIGTERM) keeps its finished points and a restart runs only the rest. A sweep holds
its ``<out>``'s lock while it runs, and its point processes die with it (:mod:`atkit.workbench.sweep_jobs`,
:mod:`atkit.core.processes`).
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import yaml

from ..core.paths import resolve_output_path
from ..core.processes import dies_with_parent, sigterm_as_interrupt, stop_child
from ..core.threads import worker_env
from ..core.utils import (ConfigError, apply_set_options, atomic_write_json, atomic_write_text, check_plain_name,
                          load_yaml_mapping, parse_set_options, set_dotted, short_repr, unknown_name_error)
from .notebooks import (KERNEL_NAME, check_parameter_names, declared_parameters, headless_defaults, papermill_command,
                        resolve_notebook)
from .sweep_jobs import DONE_MARKER, FAILED_MARKER, LOG_FILE, check_run_options, claim_sweep_folder, is_done

PARAMS_FILE = "_sweep_params.yaml"
# Parameters that never change what a point computes: excluded from its hash.
_HASH_IGNORED = ("out_dir", "device", "progress", "INTERACTIVE")
_GRID_FILE_KEYS = ("notebook", "base", "grid", "points", "name", "slurm")


@dataclass
class SweepPoint:
    """One execution: the notebook parameters (``params``), the varied ones (``varied``) and its folder name."""

    index: int
    params: dict[str, Any]
    varied: dict[str, Any]
    key: str
    folder: str


@dataclass
class SweepSpec:
    """A notebook, its base parameters and the points to run."""

    notebook: str
    base: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)
    name: str = "sweep"
    slurm: dict[str, Any] = field(default_factory=dict)  # job resources for --backend submitit (atkit.workbench.sweep_submitit)


# ------------------------------------------------------------------------------------ the grid
def expand_grid(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]] | None = None,
                points: Optional[Sequence[Mapping[str, Any]]] = None) -> list[dict[str, Any]]:
    """The points of a grid: the cartesian product of each mapping ``{name: [values]}`` (a list of
    mappings gives their products one after the other), then the explicit ``points``, in order.
    No grid and no points: one empty point (the base parameters alone)."""
    out: list[dict[str, Any]] = []
    grids = [] if grid is None else [grid] if isinstance(grid, Mapping) else list(grid)
    for g in grids:
        if not isinstance(g, Mapping):
            raise ConfigError(f"a grid must map parameter names to lists of values; got {short_repr(g)}")
        names = list(g)
        values = []
        for name in names:
            v = g[name]
            if not isinstance(v, (list, tuple)) or len(v) == 0:
                raise ConfigError(f"grid parameter {short_repr(name)} needs a non-empty list of values; got "
                                  f"{short_repr(v)}")
            values.append(list(v))
        for combo in itertools.product(*values):
            out.append(dict(zip(names, combo)))
    for p in points or []:
        if not isinstance(p, Mapping):
            raise ConfigError(f"each entry of 'points' must be a mapping of parameters; got {short_repr(p)}")
        out.append(dict(p))
    return out or [{}]


def point_params(base: Mapping[str, Any], varied: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with the (possibly dotted) ``varied`` values applied."""
    params = copy.deepcopy(dict(base))
    for key, value in varied.items():
        set_dotted(params, key, value)
    return params


def _slug_value(v: Any) -> str:
    if isinstance(v, float):
        text = f"{v:g}"
    elif isinstance(v, (list, tuple)):
        text = "-".join(_slug_value(x) for x in v)
    elif isinstance(v, Mapping):
        text = "-".join(f"{k}-{_slug_value(x)}" for k, x in v.items())
    else:
        text = str(v)
    return re.sub(r"[^A-Za-z0-9._+-]+", "", text.replace("/", "-").replace(" ", "-"))[:24]


def point_key(params: Mapping[str, Any]) -> str:
    """Stable hash of a point's parameters (without ``out_dir``/``device``/``progress``)."""
    from .run_labels import stable_hash  # why: atkit.workbench.results imports pandas; the sweep module stays light

    return stable_hash({k: v for k, v in params.items() if k not in _HASH_IGNORED}, length=8)


def point_folder(varied: Mapping[str, Any], key: str, max_len: int = 60) -> str:
    """``"rp_distance=kl_seeds=0-<hash>"``: the varied values, readable, then the hash that makes it unique."""
    parts = [f"{k.rsplit('.', 1)[-1]}={_slug_value(v)}" for k, v in varied.items() if v not in ({}, [], None, "")]
    slug = "_".join(parts)[:max_len].strip("_-.") or "base"
    return f"{slug}-{key}"


def make_points(spec: SweepSpec) -> list[SweepPoint]:
    points = []
    for i, varied in enumerate(spec.points):
        params = point_params(spec.base, varied)
        key = point_key(params)
        points.append(SweepPoint(i, params, dict(varied), key, point_folder(varied, key)))
    seen: dict[str, int] = {}
    for p in points:
        if p.key in seen:
            raise ConfigError(f"grid points {seen[p.key]} and {p.index} have the same parameters "
                              f"({short_repr(p.varied)}); "
                              "each point must differ")
        seen[p.key] = p.index
    return points


def _load_params_file(path: str | Path, relative_to: Optional[Path]) -> dict[str, Any]:
    candidates = [Path(path)]
    if relative_to is not None and not Path(path).is_absolute():
        candidates.append(relative_to / path)
    for c in candidates:
        if c.is_file():
            return load_yaml_mapping(c, "parameter file", allow_empty=True)
    raise ConfigError(f"base parameter file {str(path)!r} does not exist")


def load_grid(path: str | Path, notebook: Optional[str] = None, sets: Optional[Sequence[str]] = None) -> SweepSpec:
    """Read a grid YAML (see the module docstring). ``notebook`` (the command line's) must agree with the
    file's ``notebook`` when both are given. ``sets``: ``KEY=VALUE`` strings (``atkit sweep --set``: dotted
    keys, YAML values, as ``atkit train --set``), applied to the base parameters, so to every point, before
    the grid's values; a key the grid itself varies is refused (the grid would silently override it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {str(path)!r} does not exist")
    data = load_yaml_mapping(path, "grid file")
    if not isinstance(data, dict):
        raise ConfigError(f"grid file {str(path)!r} must be a mapping with keys {', '.join(_GRID_FILE_KEYS)}")
    for key in data:
        if key not in _GRID_FILE_KEYS:
            raise unknown_name_error("grid file key", key, _GRID_FILE_KEYS)
    nb = data.get("notebook")
    if notebook and nb and Path(str(nb)).stem != Path(str(notebook)).stem:
        raise ConfigError(f"the command names notebook {notebook!r} but grid file {str(path)!r} is for {nb!r}")
    nb = notebook or nb
    if not nb:
        raise ConfigError(f"no notebook: give it on the command line or as 'notebook:' in {str(path)!r}")
    base = data.get("base") or {}
    if isinstance(base, (str, Path)):
        base = _load_params_file(base, path.parent)
    if not isinstance(base, dict):
        raise ConfigError(f"'base' in {str(path)!r} must be a parameter file path or a mapping; got "
                          f"{short_repr(base)}")
    points = expand_grid(data.get("grid"), data.get("points"))
    base = _apply_sets(base, sets, points, path)
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise ConfigError(f"'slurm' in {str(path)!r} must be a mapping of job resources (partition, time, gpus, ...); "
                          f"got {short_repr(slurm)}")
    name = check_plain_name("name", data.get("name") or path.stem, f"the sweeps folder (outputs/sweeps/<name>); "
                                                                   f"grid file {str(path)!r}")
    return SweepSpec(notebook=str(nb), base=base, points=points, name=name, slurm=slurm)


def _apply_sets(base: dict[str, Any], sets: Optional[Sequence[str]], points: Sequence[Mapping[str, Any]],
                grid_file: Path) -> dict[str, Any]:
    """``base`` with the ``--set`` options applied; refuses one that names (or reaches into, or contains) a
    parameter the grid varies."""
    for key, _ in parse_set_options(sets):
        for varied in (name for point in points for name in point):
            if key == varied or key.startswith(varied + ".") or varied.startswith(key + "."):
                raise ConfigError(f"--set {key}=...: the grid in {str(grid_file)!r} varies {varied!r}, which would "
                                  "override it at every point; change the grid's values instead")
    return apply_set_options(base, sets)


def check_parameters(notebook: Path, points: Iterable[SweepPoint]) -> list[str]:
    """Refuse, before anything runs, a point that sets a parameter the notebook does not declare
    (:func:`atkit.workbench.notebooks.check_parameter_names`) or method hyperparameters its method does not accept."""
    declared = declared_parameters(notebook)
    for p in points:
        check_parameter_names(notebook, list(p.params) + list(p.varied), declared, f" (grid point {p.index})")
        check_method_params(p)
    return declared


def _point_method(params: Mapping[str, Any]) -> tuple[Optional[str], Optional[Mapping[str, Any]]]:
    """The method and hyperparameters a point's notebook will train: its ``method`` / ``method_params``
    parameters, else those of its ``base`` mapping or ``config`` file (``(None, None)`` when it names none)."""
    method, method_params = params.get("method"), params.get("method_params")
    fallback: Any = params.get("base")
    if not isinstance(fallback, Mapping) and isinstance(params.get("config"), str):
        try:
            fallback = load_yaml_mapping(params["config"], "config file")
        except ConfigError:
            fallback = None  # the notebook itself reports a missing config file
    if isinstance(fallback, Mapping):
        method = method if method is not None else fallback.get("method")
        method_params = method_params if method_params is not None else fallback.get("method_params")
    return (method if isinstance(method, str) else None), method_params


def check_method_params(point: SweepPoint) -> None:
    """Refuse a point whose method hyperparameters the method does not accept (a misspelled dotted key such as
    ``method_params.rp_lamda``, a wrong type), before any point runs."""
    # why: atkit.methods loads every method and model; a cluster job imports this module before submitit
    # installs its preemption handler, so the module stays light
    from ..methods import get_method

    method, method_params = _point_method(point.params)
    if method is None or method_params is None:
        return
    if not isinstance(method_params, Mapping):
        raise ConfigError(f"grid point {point.index} ({short_repr(point.varied)}): method_params="
                          f"{short_repr(method_params)} must be a mapping")
    try:
        get_method(method, None, **dict(method_params))
    except ConfigError as e:
        raise ConfigError(f"grid point {point.index} ({short_repr(point.varied)}): {e}") from None


# --------------------------------------------------------------------------------------- workers
def visible_gpus() -> list[str]:
    """GPU ids this process may use (``CUDA_VISIBLE_DEVICES`` order, else every device torch sees)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch  # why: inside the try: a broken torch/CUDA install still runs a CPU sweep

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # torch missing or broken CUDA: run on the CPU
        count = 0
    if count == 0:
        return []
    if env:
        ids = [g.strip() for g in env.split(",") if g.strip()]
        return ids[:count]
    return [str(i) for i in range(count)]


def worker_slots(workers: Optional[int] = None, gpus: Optional[Sequence[str]] = None) -> list[Optional[str]]:
    """One slot per worker: a GPU id, or None for a CPU worker. Default: one per visible GPU, else one CPU."""
    gpus = list(visible_gpus() if gpus is None else gpus)
    if workers is not None and workers < 1:
        raise ConfigError(f"workers={workers!r} must be a positive integer")
    if not gpus:
        return [None] * (workers or 1)
    n = workers or len(gpus)
    return [gpus[i % len(gpus)] for i in range(n)]


# ------------------------------------------------------------------------------------- the sweep
@dataclass
class PointResult:
    index: int
    folder: str
    status: str  # done | skipped | failed | interrupted | pending
    seconds: Optional[float] = None
    error: Optional[str] = None
    worker: Optional[str] = None
    varied: dict[str, Any] = field(default_factory=dict)


def _write_summary(out: Path, spec: SweepSpec, notebook: Path, results: Sequence[PointResult]) -> None:
    import pandas as pd  # why: heavy, only when writing

    from ..core.utils import write_table  # why: atkit.workbench.results imports pandas

    rows = [{"index": r.index, "folder": r.folder, "status": r.status, "seconds": r.seconds, "worker": r.worker,
             "error": r.error, **{f"param:{k}": v for k, v in r.varied.items()}} for r in results]
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "interrupted", "pending")}
    atomic_write_json(out / "sweep.json", {"name": spec.name, "notebook": str(notebook), "base": spec.base,
                                           "counts": counts, "points": rows})
    write_table(pd.DataFrame(rows), out / "sweep.csv")


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, workers: Optional[int] = None,
              gpus: Optional[Sequence[str]] = None, device: Optional[str] = None, kernel_name: str = KERNEL_NAME,
              timeout: Optional[float] = None, progress: bool = True, dry_run: bool = False,
              on_result: Optional[Callable[[PointResult], None]] = None) -> list[PointResult]:
    """Run every point of ``spec`` not finished yet into ``out_dir/<point folder>``; see the module docstring.

    ``device``: passed to notebooks that declare a ``device`` parameter (default: ``cuda`` on GPU workers,
    ``cpu`` on CPU workers, unless the point sets it). ``timeout``: seconds per point. Returns one
    :class:`PointResult` per point; failures are reported there (never raised). The sweep holds ``out_dir``'s
    lock while it runs (:func:`claim_sweep_folder`); SIGTERM stops it as Ctrl-C does (the running points are
    stopped and recorded ``interrupted``), and a sweep killed outright takes its point processes with it
    (:func:`atkit.core.processes.dies_with_parent`).
    """
    out = resolve_output_path(out_dir).resolve()  # relative: against the project root, not the cwd
    notebook = resolve_notebook(spec.notebook).resolve()
    points = make_points(spec)
    declared = check_parameters(notebook, points)
    slots = worker_slots(workers, gpus)
    check_run_options(timeout, kernel_name)
    results = {p.index: PointResult(p.index, p.folder, "pending", varied=p.varied) for p in points}
    todo = []
    for p in points:
        if is_done(out / p.folder, p.key):
            results[p.index].status = "skipped"
        else:
            todo.append(p)
    if dry_run:
        return [results[i] for i in sorted(results)]
    lock = claim_sweep_folder(out)
    try:
        with sigterm_as_interrupt():
            return _run_points(spec, out, notebook, points, todo, results, declared, slots, device, kernel_name,
                               timeout, progress, on_result)
    finally:
        lock.release()


def _run_points(spec: SweepSpec, out: Path, notebook: Path, points: list[SweepPoint], todo: list[SweepPoint],
                results: dict[int, PointResult], declared: list[str], slots: list[Optional[str]],
                device: Optional[str], kernel_name: str, timeout: Optional[float], progress: bool,
                on_result: Optional[Callable[[PointResult], None]]) -> list[PointResult]:
    """:func:`run_sweep`'s work once its checks passed and it holds the folder."""
    lock = threading.Lock()
    _write_summary(out, spec, notebook, [results[i] for i in sorted(results)])
    bar = None
    if progress:
        from tqdm.auto import tqdm  # why: tqdm.auto probes for ipywidgets (heavy); only with progress

        bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"sweep {spec.name}", unit="point")
        if len(todo) < len(points):
            bar.write(f"sweep {spec.name}: {len(points) - len(todo)} of {len(points)} points already finished, "
                      f"skipped; {len(todo)} to run on {len(slots)} worker(s) "
                      f"({', '.join('GPU ' + s if s is not None else 'CPU' for s in slots)})")
    free: "queue.Queue[Optional[str]]" = queue.Queue()
    for s in slots:
        free.put(s)
    stop = threading.Event()
    procs: set[subprocess.Popen] = set()

    def run_one(point: SweepPoint) -> None:
        if stop.is_set():
            return
        slot = free.get()
        try:
            if stop.is_set():
                return
            res = _execute_point(point, out / point.folder, notebook, slot, declared, device, kernel_name, timeout,
                                 min(len(slots), len(todo)), procs, lock)  # processes sharing the CPU
            if stop.is_set() and res.status == "failed":
                res.status, res.error = "interrupted", None
        finally:
            free.put(slot)
        with lock:
            results[point.index] = res
            _write_summary(out, spec, notebook, [results[i] for i in sorted(results)])
            if bar is not None:
                bar.update(1)
                n_failed = sum(r.status == "failed" for r in results.values())
                bar.set_postfix(failed=n_failed)
                tag = "done" if res.status == "done" else res.status.upper()
                line = f"[{tag} {res.seconds or 0:.1f}s] {point.folder}"
                if res.error:
                    line += f": {res.error.splitlines()[0][:200]}"
                bar.write(line)
        if on_result is not None:
            on_result(res)

    pool = ThreadPoolExecutor(max_workers=len(slots))
    futures = [pool.submit(run_one, p) for p in todo]
    try:
        for f in futures:
            while True:
                try:
                    f.result(timeout=0.2)
                    break
                except FutureTimeout:
                    continue
                except Exception as e:  # the thread itself crashed (a bug): record and go on
                    if bar is not None:
                        bar.write(f"sweep worker error: {e!r}")
                    break
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (atkit.core.processes.sigterm_as_interrupt)
        stop.set()
        with lock:
            for proc in list(procs):
                _terminate(proc)
        pool.shutdown(wait=True, cancel_futures=True)
        with lock:
            for r in results.values():
                if r.status == "pending":
                    r.status = "interrupted"
            _write_summary(out, spec, notebook, [results[i] for i in sorted(results)])
        if bar is not None:
            bar.close()
        raise
    pool.shutdown(wait=True)
    if bar is not None:
        bar.close()
    final = [results[i] for i in sorted(results)]
    _write_summary(out, spec, notebook, final)
    return final


def _terminate(proc: subprocess.Popen) -> None:
    """Stop a point process and its process group (:func:`atkit.core.processes.stop_child`); its kernel follows.
    No wait without a time limit: this runs in signal handlers too, which may interrupt a wait on ``proc`` that
    holds its lock (a second, unbounded wait there would never return)."""
    stop_child(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        stop_child(proc, signal.SIGKILL)


def _execute_point(point: SweepPoint, point_dir: Path, notebook: Path, slot: Optional[str], declared: list[str],
                   device: Optional[str], kernel_name: str, timeout: Optional[float], n_slots: int,
                   procs: set, lock: threading.Lock) -> PointResult:
    """Run one point with papermill's own command line in a fresh process (its own session, so an
    interrupted sweep can stop it with its kernel), then write the done marker or the failure record."""
    point_dir.mkdir(parents=True, exist_ok=True)
    for marker in (DONE_MARKER, FAILED_MARKER):
        (point_dir / marker).unlink(missing_ok=True)
    params = dict(point.params)
    if "device" in declared and "device" not in params:
        params["device"] = device or ("cuda" if slot is not None else "cpu")
    if "out_dir" in declared:
        params["out_dir"] = str(point_dir)
    headless_defaults(params, declared)  # a sweep point is headless: the batch mode unless the point asks otherwise
    worker = "cpu" if slot is None else f"gpu {slot}"
    atomic_write_text(point_dir / PARAMS_FILE, yaml.safe_dump(params, sort_keys=False))
    executed = point_dir / notebook.name
    env = dict(os.environ)
    env.setdefault("ATKIT_PROGRESS", "lines")  # text progress in the saved notebook (atkit.core.progress), not dead widgets
    env["CUDA_VISIBLE_DEVICES"] = "" if slot is None else slot
    # The workers share the free cores instead of each taking all of them (atkit.core.threads, "auto").
    worker_env(env, n_slots)
    cmd = papermill_command(notebook, executed, point_dir / PARAMS_FILE, kernel_name)
    began = time.time()
    log_path = point_dir / LOG_FILE
    for attempt in range(1 + KERNEL_START_RETRIES):
        _stagger_launch()
        offset = log_path.stat().st_size if attempt > 0 and log_path.is_file() else 0
        rc = _run_process(cmd, env, log_path, timeout, procs, lock, append=attempt > 0)
        # Kernels started at the same moment can race for the same TCP port; such a point never ran any cell.
        if rc in (0, None) or notebook_error(executed) or not _kernel_failed_to_start(log_path, offset):
            break
    seconds = round(time.time() - began, 2)
    res = PointResult(point.index, point.folder, "failed", seconds=seconds, worker=worker, varied=point.varied)
    if rc == 0:
        atomic_write_json(point_dir / DONE_MARKER, {"key": point.key, "varied": point.varied, "params": params,
                                                    "worker": worker, "seconds": seconds,
                                                    "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        res.status = "done"
        return res
    if rc is None:
        res.error = f"timed out after {timeout} s"
    else:
        res.error = notebook_error(executed) or _log_tail(point_dir / LOG_FILE, rc)
    atomic_write_json(point_dir / FAILED_MARKER, {"key": point.key, "varied": point.varied, "error": res.error,
                                                  "exit_status": rc, "seconds": seconds})
    return res


KERNEL_START_RETRIES = 2
LAUNCH_GAP_S = 1.5
_launch_lock = threading.Lock()
_last_launch = [0.0]


def _stagger_launch() -> None:
    """Keep point processes from starting their kernels in the same instant (port races, I/O bursts)."""
    with _launch_lock:
        wait = _last_launch[0] + LAUNCH_GAP_S - time.time()
        if wait > 0:
            time.sleep(wait)
        _last_launch[0] = time.time()


def _run_process(cmd: list[str], env: dict[str, str], log_path: Path, timeout: Optional[float], procs: set,
                 lock: threading.Lock, append: bool = False) -> Optional[int]:
    """Run ``cmd`` in its own session with output to ``log_path``; its exit status, None on timeout."""
    with open(log_path, "ab" if append else "wb") as log:
        # Its own session (an interrupted sweep stops the point's process group), and it dies with the sweep.
        proc = subprocess.Popen(dies_with_parent(cmd), stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        with lock:
            procs.add(proc)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _terminate(proc)
            return None
        finally:
            with lock:
                procs.discard(proc)


def _kernel_failed_to_start(log_path: Path, offset: int = 0) -> bool:
    """Whether the log (from byte ``offset``: the last attempt) says the kernel never started."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return False
    return "Kernel died before replying to kernel_info" in text or "Address already in use" in text


def notebook_error(executed: Path) -> Optional[str]:
    """``"ValueError: ... (cell 3)"`` from the first error output papermill saved in an executed notebook
    (what its ``PapermillExecutionError`` reports), or None."""
    try:
        nb = json.loads(executed.read_text())
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            if output.get("output_type") == "error" and output.get("ename") != "PapermillExecutionError":
                return f"{output.get('ename')}: {output.get('evalue')} (cell {cell.get('execution_count')})"
    return None


def _log_tail(log: Path, rc: int) -> str:
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
    return f"papermill exited with status {rc}" + (f": {' | '.join(tail)}" if tail else "")


def format_summary(results: Sequence[PointResult]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "interrupted")}
    lines = [f"{counts['done']} done, {counts['skipped']} skipped (already finished), {counts['failed']} failed"
             + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else "")]
    for r in results:
        if r.status == "failed":
            lines.append(f"  FAILED {r.folder}: {r.error}")
    return "\n".join(lines)


__all__ = ["KERNEL_NAME", "SweepPoint", "SweepSpec", "PointResult", "expand_grid", "format_summary", "load_grid",
           "make_points", "notebook_error", "point_folder", "point_key", "point_params", "resolve_notebook", "run_sweep",
           "set_dotted", "visible_gpus", "worker_slots"]
