"""Sweeps on a cluster: every point of a grid as one job of a SLURM job array, through submitit.

``atkit sweep NOTEBOOK -f GRID.yaml --out OUT --backend submitit --cluster slurm`` submits one job per point
that is not finished yet. A job runs the local runner's point function (:func:`atkit.workbench.sweep._execute_point`:
papermill in its own process, into ``OUT/<point folder>``), so the folder is the local runner's exactly:
point folders with ``_sweep_done.json`` / ``_sweep_failed.json``, ``sweep.json`` and ``sweep.csv``. Running the
same command again (on either backend) skips the finished points. What only the scheduler needs lives in
``OUT/_submitit/``: ``submission.json`` (the points), ``jobs.json`` (point folder -> job record) and ``logs/``
(submitit's pickles and each job's stdout/stderr). The job records, their checks before any use, and
``--status`` / ``--cancel`` are :mod:`atkit.workbench.sweep_jobs`.

Preemption and time limits: SLURM sends ``SIGUSR2`` (submitit's ``--signal``) shortly before it stops a
job; the job then stops its papermill process (the run inside keeps its last complete epoch in
``checkpoints/last.pt``: atkit resumes bit-identically) and submitit requeues it, so it continues instead of
starting over. Time-outs are requeued at most ``max_requeues`` times; a preempted job is always requeued. A
point that fails for its own reason (an exception in the notebook) is recorded in ``_sweep_failed.json`` and
is not requeued; running the command again tries it again.

Multi-GPU points (``gpus`` > 1, the ``train`` notebook): the job first trains the point's run with
``torchrun --standalone --nproc_per_node G -m atkit train`` (DDP, :mod:`atkit.training.distributed`; a partial run
under ``runs_dir`` is resumed with ``--resume``), then executes the notebook, which reuses the finished run.
"""
from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from ..core.paths import resolve_output_path
from ..core.utils import ConfigError, atomic_write_json, atomic_write_text, short_repr, unknown_name_error
from . import sweep
from .notebooks import KERNEL_NAME, resolve_notebook
from .sweep import (PointResult, SweepPoint, SweepSpec, _execute_point, _terminate, _write_summary, check_parameters,
                    make_points, visible_gpus)
from .sweep_jobs import (DONE_MARKER, FAILED_MARKER, check_run_options, claim_sweep_folder, is_done, job_record,
                         job_state, load_jobs, meta_dir, read_json, read_marker, require_submitit, state_kind)

CLUSTERS = ("slurm", "local", "debug")
_TRAIN_NOTEBOOK_KEYS = ("method", "method_params", "dataset", "data", "model", "threat", "schedule", "epochs",
                        "batch_size", "lr", "seed", "max_steps_per_epoch", "eval")


# ------------------------------------------------------------------------------------- options
@dataclass
class SlurmOptions:
    """Scheduler resources of every job of a sweep (grid file ``slurm:`` mapping, overridden by flags).

    ``time``: minutes, or ``"HH:MM:SS"`` / ``"D-HH:MM:SS"``; ``gpus``/``cpus``: per point (one job, one node;
    ``gpus`` defaults to 1 on SLURM, 0 for the local and debug executors);
    ``mem``: ``"32G"``-style or GB as a number; ``array_parallelism``: jobs of the array running at once;
    ``max_requeues``: how often a timed-out job is requeued; ``additional``: other ``#SBATCH`` options
    (``{qos: high, constraint: a100}``).
    """

    partition: Optional[str] = None
    time: Any = 1440
    gpus: Optional[int] = None
    cpus: Optional[int] = None
    mem: Any = None
    account: Optional[str] = None
    array_parallelism: int = 256
    max_requeues: int = 3
    additional: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sources(cls, grid: Optional[Mapping[str, Any]], flags: Optional[Mapping[str, Any]] = None) -> "SlurmOptions":
        """The grid file's ``slurm:`` mapping with the command line's (non-None) ``flags`` on top, checked."""
        names = [f.name for f in fields(cls)]
        values: dict[str, Any] = {}
        if grid is not None and not isinstance(grid, Mapping):
            raise ConfigError(f"'slurm' in the grid file must be a mapping of {', '.join(names)}; got "
                              f"{short_repr(grid)}")
        for key, value in {**dict(grid or {}), **{k: v for k, v in (flags or {}).items() if v is not None}}.items():
            if key not in names:
                raise unknown_name_error("slurm option", key, names)
            values[key] = value
        opts = cls(**values)
        opts.validate()
        return opts

    def validate(self) -> None:
        self.timeout_min()
        for key in ("gpus", "cpus", "array_parallelism", "max_requeues"):
            value = getattr(self, key)
            lowest = 0 if key in ("gpus", "max_requeues") else 1
            if value is None and key in ("cpus", "gpus"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ConfigError(f"slurm option {key}={short_repr(value)} must be an integer >= {lowest}")
        self.mem_gb()
        if not isinstance(self.additional, Mapping):
            raise ConfigError(f"slurm option additional={short_repr(self.additional)} must be a mapping of #SBATCH "
                              "options")

    def timeout_min(self) -> int:
        """``time`` in minutes (``90``, ``"1:30:00"``, ``"2-00:00:00"``)."""
        value = self.time
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return max(1, int(round(value)))
        if isinstance(value, str):
            try:
                days, _, clock = value.rpartition("-")
                parts = [int(p) for p in clock.split(":")]
                while len(parts) < 3:
                    parts.insert(0, 0)
                h, m, s = parts[-3:]
                minutes = int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)
                if minutes > 0:
                    return minutes
            except ValueError:
                pass
        raise ConfigError(f"slurm option time={short_repr(value)} must be minutes (e.g. 720) or 'HH:MM:SS' / "
                          "'D-HH:MM:SS'")

    def mem_gb(self) -> Optional[float]:
        value = self.mem
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        if isinstance(value, str):
            text = value.strip().upper().rstrip("B")
            scale = {"G": 1.0, "M": 1 / 1024, "T": 1024.0}.get(text[-1:], None)
            try:
                number = float(text[:-1]) if scale else float(text)
            except ValueError:
                number = -1.0
            if number > 0:
                return number * (scale or 1.0)
        raise ConfigError(f"slurm option mem={short_repr(value)} must be e.g. '32G', '500M' or a number of GB")

    def gpus_for(self, cluster: str) -> int:
        return self.gpus if self.gpus is not None else 1 if cluster == "slurm" else 0

    def executor_parameters(self, cluster: str, name: str) -> dict[str, Any]:
        """``AutoExecutor.update_parameters`` arguments: one task per node, ``gpus`` GPUs and ``cpus`` CPUs."""
        params: dict[str, Any] = {"name": name, "timeout_min": self.timeout_min(), "nodes": 1, "tasks_per_node": 1,
                                  "gpus_per_node": self.gpus_for(cluster)}
        if self.cpus is not None:
            params["cpus_per_task"] = self.cpus
        if self.mem_gb() is not None:
            params["mem_gb"] = self.mem_gb()
        if cluster == "slurm":
            params["slurm_array_parallelism"] = self.array_parallelism
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.account:
                params["slurm_account"] = self.account
            if self.additional:
                params["slurm_additional_parameters"] = dict(self.additional)
        return params


# ------------------------------------------------------------------------------------ the job
class _PointProcesses(set):
    """The point's running processes (the set :func:`atkit.workbench.sweep._execute_point` keeps) and every process it
    started: an interrupt that cuts a wait short removes the process from the set before we can stop it."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list = []

    def add(self, proc: Any) -> None:
        self.started.append(proc)
        super().add(proc)


class PointJob:
    """One sweep point as a submitit job: the local runner's point function, checkpointable for requeueing.

    submitit calls :meth:`checkpoint` when the scheduler signals a preemption or time-out; it stops the
    papermill process (and with it the kernel) so that the requeued job starts from the run's last
    checkpoint rather than next to a still-running copy.
    """

    def __init__(self, out: str, notebook: str, declared: Sequence[str], device: Optional[str], kernel_name: str,
                 timeout: Optional[float], gpus: int) -> None:
        self.out, self.notebook, self.declared = out, notebook, list(declared)
        self.device, self.kernel_name, self.timeout, self.gpus = device, kernel_name, timeout, gpus
        self._procs = _PointProcesses()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_procs", None)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._procs, self._lock = _PointProcesses(), threading.Lock()

    def __call__(self, point: SweepPoint) -> dict[str, Any]:
        out = Path(self.out)
        point_dir = out / point.folder
        if is_done(point_dir, point.key):  # a requeued or duplicated job never redoes a finished point
            return asdict(PointResult(point.index, point.folder, "skipped", varied=point.varied))
        gpus = _job_gpus() if self.gpus > 0 else []
        if not gpus:
            cpus = os.environ.get("SLURM_CPUS_PER_TASK")
            if cpus:  # the allocation's cores, not the node's
                os.environ.setdefault("OMP_NUM_THREADS", cpus)
        try:
            error = None
            if self.gpus > 1:
                error = _train_with_torchrun(point, point_dir, Path(self.notebook), self.gpus, self._procs, self._lock)
            if error is None:
                res = _execute_point(point, point_dir, Path(self.notebook), ",".join(gpus) or None, self.declared,
                                     self.device, self.kernel_name, self.timeout, 1, self._procs, self._lock)
            else:
                res = PointResult(point.index, point.folder, "failed", error=error, varied=point.varied)
                atomic_write_json(point_dir / FAILED_MARKER, {"key": point.key, "varied": point.varied, "error": error,
                                                              "exit_status": None, "seconds": None})
        except BaseException:  # cancelled (SIGINT) or requeued: never leave the notebook running behind us
            self._stop_processes()
            raise
        write_summary_files(out)
        return asdict(res)

    def checkpoint(self, point: SweepPoint) -> Any:
        """Called by submitit on preemption / time-out: stop the point's process, requeue the same point."""
        from submitit.helpers import DelayedSubmission  # why: submitit is optional (pip install atkit[slurm])

        self._stop_processes()
        return DelayedSubmission(self, point)

    def _stop_processes(self) -> None:
        for proc in list(self._procs.started):  # those still running (a finished one is left alone)
            _terminate(proc)


def _job_gpus() -> list[str]:
    """The GPUs the scheduler gave this job (``CUDA_VISIBLE_DEVICES``, as SLURM sets it for ``--gpus-per-node``),
    else every GPU torch sees."""
    env = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if env:
        return env
    return visible_gpus()


def torchrun_command(nproc: int, run_config: Optional[Path], resume: Optional[Path]) -> list[str]:
    """``torchrun --standalone --nproc_per_node G -m atkit train`` for a new run (``run_config``) or ``--resume``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "atkit", "train", "--quiet"]
    return cmd + (["--resume", str(resume)] if resume is not None else [str(run_config)])


def _train_with_torchrun(point: SweepPoint, point_dir: Path, notebook: Path, nproc: int, procs: set,
                         lock: threading.Lock) -> Optional[str]:
    """Train a multi-GPU point's run with DDP before its notebook runs (the notebook then reuses it).

    Only the ``train`` notebook describes exactly one run; the run config is the notebook's own
    (``run_config_from`` with its parameters). An identical finished run is used as is, a partial one resumed.
    Returns an error message, or None."""
    # why: atkit.training.runs imports every method: only multi-GPU points need it, and a job imports this module before
    # submitit installs its preemption handler
    from ..training.runs import run_config_from, select_run

    if notebook.stem != "train":
        return (f"gpus={nproc} per point needs the train notebook (one run per point, trained with torchrun); "
                f"{notebook.name} runs its points in one process: use gpus: 1")
    params = point.params
    root = notebook.parent.parent  # the notebooks' working directory (relative paths in parameters)
    runs_dir = Path(params.get("runs_dir") or "outputs/runs")
    runs_dir = runs_dir if runs_dir.is_absolute() else root / runs_dir
    overrides = {**(params.get("overrides") or {}), "device": "cuda", "out_dir": str(runs_dir)}
    if params.get("logging") is not None:
        overrides["logging"] = params["logging"]
    config_path = params.get("config")
    if config_path and not Path(config_path).is_absolute():
        config_path = str(root / config_path)
    cfg = run_config_from(config_path, overrides=overrides, **{k: params.get(k) for k in _TRAIN_NOTEBOOK_KEYS})
    action, partial = select_run(cfg, runs_dir) if params.get("reuse_runs", True) else (None, None)
    if action == "reuse":
        return None
    point_dir.mkdir(parents=True, exist_ok=True)
    config_file = point_dir / "_sweep_run_config.yaml"
    atomic_write_text(config_file, cfg.to_yaml())
    cmd = torchrun_command(nproc, config_file, partial)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, int(os.environ.get("SLURM_CPUS_PER_TASK", nproc)) // nproc)))
    with open(point_dir / "torchrun.log", "ab") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
    rc = sweep._run_process(cmd, env, point_dir / "torchrun.log", None, procs, lock, append=True)  # through the module
    return None if rc == 0 else f"torchrun training exited with status {rc} (see {point_dir / 'torchrun.log'})"


# ---------------------------------------------------------------------------------- bookkeeping
@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One writer of the sweep files at a time (jobs finishing together, the submitting command)."""
    meta = meta_dir(out)
    meta.mkdir(parents=True, exist_ok=True)
    with open(meta / "summary.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def point_results(out: Path, submission: Mapping[str, Any],
                  interrupted: Optional[Mapping[str, Optional[str]]] = None) -> list[PointResult]:
    """Every point's status from its markers, as the local runner reports it: ``done`` (finished by the latest
    submission), ``skipped`` (finished before it), ``failed``, ``interrupted`` (``interrupted``: folder -> why
    its job ended without either marker) or ``pending``."""
    interrupted = interrupted or {}
    submitted = set(submission.get("submitted", []))
    results = []
    for p in submission["points"]:
        folder = out / p["folder"]
        res = PointResult(p["index"], p["folder"], "pending", varied=p["varied"])
        done = read_marker(folder / DONE_MARKER, p["key"])
        failed = read_marker(folder / FAILED_MARKER, p["key"])
        if done is not None:
            res.status = "done" if p["folder"] in submitted else "skipped"
            res.seconds, res.worker = done.get("seconds"), done.get("worker")
        elif failed is not None:
            res.status, res.seconds, res.error = "failed", failed.get("seconds"), failed.get("error")
        elif p["folder"] in interrupted:
            res.status, res.error = "interrupted", interrupted[p["folder"]]
        results.append(res)
    return results


def write_summary_files(out: str | Path, interrupted: Optional[Mapping[str, Optional[str]]] = None
                        ) -> list[PointResult]:
    """Rewrite ``sweep.json``/``sweep.csv`` from the point markers (under a lock); the per-point results."""
    out = Path(out)
    submission = read_json(meta_dir(out) / "submission.json")
    if not submission:
        return []
    with _locked(out):
        results = point_results(out, submission, interrupted)
        spec = SweepSpec(submission["notebook"], submission["base"], name=submission["name"])
        _write_summary(out, spec, Path(submission["notebook"]), results)
    return results


# ------------------------------------------------------------------------------------ jobs
@dataclass
class Submission:
    """What :func:`submit_sweep` did: the jobs it submitted (submitit objects), the points still queued from
    an earlier submission, the points held back because their earlier job's state is unknown (folder -> why),
    and the results known so far."""

    out: Path
    cluster: str
    jobs: dict[str, Any]
    still_queued: dict[str, str]
    results: list[PointResult]
    unknown: dict[str, str] = field(default_factory=dict)


def submit_sweep(spec: SweepSpec, out_dir: str | Path, *, cluster: str = "slurm",
                 options: Optional[SlurmOptions] = None, device: Optional[str] = None, kernel_name: str = KERNEL_NAME,
                 timeout: Optional[float] = None, local_signal_delay_s: Optional[int] = None) -> Submission:
    """Submit every unfinished point of ``spec`` as one job array (see the module docstring).

    Points whose job from an earlier submission is still pending or running are not submitted again, nor are
    those whose earlier job's state is unknown (:mod:`atkit.workbench.sweep_jobs`: reported in ``unknown``); a stale record
    (the job ended, or the record is not this sweep's job) never holds a point back. The submission holds
    ``out_dir``'s sweep lock; a relative ``out_dir`` is read against the project root, as the local runner's.
    ``local_signal_delay_s``: for ``cluster="local"``, seconds before the time limit at which the
    time-out signal comes (submitit's ``signal_delay_s``; tests use it to exercise requeueing).
    """
    if cluster not in CLUSTERS:
        raise unknown_name_error("cluster", cluster, CLUSTERS)
    submitit = require_submitit()
    missing = [tool for tool in ("sbatch", "srun") if cluster == "slurm" and shutil.which(tool) is None]
    if missing:  # before any file is written (submitit would fail later, with a traceback)
        raise ConfigError(f"--cluster slurm: {' and '.join(missing)} not found on PATH, so this machine cannot submit "
                          "to SLURM; run the command on the cluster's login node, or use --cluster local (this "
                          "machine, in the background) or --backend local")
    options = options or SlurmOptions.from_sources(spec.slurm)
    out = resolve_output_path(out_dir).resolve()
    notebook = resolve_notebook(spec.notebook).resolve()
    points = make_points(spec)
    declared = check_parameters(notebook, points)
    check_run_options(timeout, kernel_name)
    lock = claim_sweep_folder(out)
    try:
        return _submit(spec, out, notebook, points, declared, submitit, cluster, options, device, kernel_name,
                       timeout, local_signal_delay_s)
    finally:
        lock.release()


def _submit(spec: SweepSpec, out: Path, notebook: Path, points: list[SweepPoint], declared: list[str], submitit: Any,
            cluster: str, options: SlurmOptions, device: Optional[str], kernel_name: str, timeout: Optional[float],
            local_signal_delay_s: Optional[int]) -> Submission:
    """:func:`submit_sweep`'s work once its checks passed and it holds the folder."""
    meta = meta_dir(out)
    old_jobs = load_jobs(out)
    todo, still_queued, unknown = [], {}, {}
    for p in points:
        if is_done(out / p.folder, p.key):
            continue
        old = old_jobs.get(p.folder)
        if old and old.get("key") == p.key and old.get("cluster") == cluster:
            state = job_state(old, meta / "logs")
            if state_kind(state) == "live":
                still_queued[p.folder] = str(old["job_id"])
                continue
            if state_kind(state) == "unknown":
                unknown[p.folder] = f"job {str(old.get('job_id'))[:40]}: {state}"
                continue
        todo.append(p)
    meta.mkdir(parents=True, exist_ok=True)
    submission = {"name": spec.name, "notebook": str(notebook), "base": spec.base, "cluster": cluster,
                  "submitted": [p.folder for p in todo] + list(still_queued),
                  "points": [{"index": p.index, "folder": p.folder, "key": p.key, "varied": p.varied} for p in points],
                  "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(meta / "submission.json", submission)
    jobs: dict[str, Any] = {}
    if todo:
        executor = submitit.AutoExecutor(folder=meta / "logs", cluster=cluster,
                                         slurm_max_num_timeout=options.max_requeues)
        if cluster == "local":
            executor._executor.max_num_timeout = options.max_requeues  # AutoExecutor passes it to SLURM only
        executor.update_parameters(**options.executor_parameters(cluster, f"atkit-{spec.name}"))
        if cluster == "local" and local_signal_delay_s is not None:  # AutoExecutor does not pass it on
            executor._executor.parameters["signal_delay_s"] = int(local_signal_delay_s)
        job_fn = PointJob(str(out), str(notebook), declared, device, kernel_name, timeout, options.gpus_for(cluster))
        for p in todo:  # a stale failure record would otherwise read as this submission's result
            (out / p.folder / FAILED_MARKER).unlink(missing_ok=True)
        submitted = executor.map_array(job_fn, todo)
        jobs = {p.folder: job for p, job in zip(todo, submitted)}
        with _locked(out):
            records = load_jobs(out)
            for p, job in zip(todo, submitted):
                records[p.folder] = job_record(cluster, str(job.job_id), p.key, submission["time"])
            atomic_write_json(meta / "jobs.json", records)
    results = write_summary_files(out)
    return Submission(out, cluster, jobs, still_queued, results, unknown)


def wait_for_jobs(submission: Submission, *, poll_s: float = 2.0, on_result: Any = None) -> list[PointResult]:
    """Wait until every submitted job has ended; rewrite the summary as they do. A job that ended without a
    done or failure record (killed, cancelled, out of requeues) is reported ``interrupted``."""
    pending = dict(submission.jobs)
    interrupted: dict[str, Optional[str]] = {}
    while pending:
        for folder, job in list(pending.items()):
            if submission.cluster == "debug":
                _wait_quietly(job)
            elif not job.done():
                continue
            elif submission.cluster == "local":
                _wait_quietly(job)
            del pending[folder]
            res = next(r for r in write_summary_files(submission.out, interrupted) if r.folder == folder)
            if res.status == "pending":
                interrupted[folder] = _job_error(job)
                res = next(r for r in write_summary_files(submission.out, interrupted) if r.folder == folder)
            if on_result is not None:
                on_result(res)
        if pending:
            time.sleep(poll_s)
    return write_summary_files(submission.out, interrupted)


def _wait_quietly(job: Any) -> None:
    try:
        job.result()
    except Exception:  # reported from the markers (or as interrupted) by the caller
        pass


def _job_error(job: Any) -> str:
    """Why a job ended without a marker: submitit's reason (``Job not requeued because: timed-out too many
    times``), else the first line of its error (e.g. killed: no result)."""
    try:
        job.result()
    except Exception as e:
        text = str(e)
        reason = re.search(r"Job not requeued because: [^\n]*", text)
        detail = reason.group(0) if reason else (text.strip().splitlines() or [type(e).__name__])[0]
        return f"job {job.job_id} ended without finishing its point: {detail[:200]}"
    return f"job {job.job_id} ended without finishing its point"


__all__ = ["CLUSTERS", "PointJob", "SlurmOptions", "Submission", "point_results", "submit_sweep", "torchrun_command",
           "wait_for_jobs", "write_summary_files"]
