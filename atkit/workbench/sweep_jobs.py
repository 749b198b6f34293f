"""What a sweep owns, and what it checks before its first point: its ``--out`` folder (one sweep at a time, by a
lock), its point markers (a damaged one is a warning, never a traceback), its options (a timeout > 0, an
installed kernel), and the jobs of a submitit sweep: their records in ``OUT/_submitit/jobs.json``, the state of
each, and ``atkit sweep --status`` / ``--cancel`` (either backend's folder).

A job record is used for nothing before it is checked (:mod:`atkit.core.processes`): its job id must have the form of its
cluster's ids, and a local job (a submitit controller process on this machine) must still be the process
recorded at submission: the same start time and command line, not merely a process with that id. Each state
falls in one of three kinds:

* ``live`` (RUNNING, PENDING, ...): the job will still run its point; it is not submitted again, ``--cancel``
  stops it;
* ``ended`` (COMPLETED, FAILED, a controller that is gone, an id of the wrong form, a process id that another
  process now has): the record is stale and never blocks submitting the point again;
* ``unknown`` (the scheduler could not be asked: ``sacct`` failed, ``/proc`` unreadable): reported, never acted
  on (no cancel, no second submission).
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..core.paths import resolve_output_path
from ..core.processes import job_id_problem, process_identity, same_process, signal_verified
from ..core.utils import ConfigError, FolderLock, short_repr, unknown_name_error

DONE_MARKER = "_sweep_done.json"
FAILED_MARKER = "_sweep_failed.json"
LOG_FILE = "sweep.log"
SUBMITIT_DIR = "_submitit"
#: Job states in which a job will still run its point (do not submit it again).
LIVE_STATES = ("RUNNING", "PENDING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
               "REQUEUE_HOLD", "REQUEUE_FED", "SUBMITTED", "QUEUED")
RUNNING_STATES = ("RUNNING", "COMPLETING", "CONFIGURING")
_LOCAL_CONTROLLER = "submitit.local._local"


# ------------------------------------------------------------------- the folder, markers, options
def read_marker(path: Path, key: Optional[str]) -> Optional[dict[str, Any]]:
    """A point's ``_sweep_done.json`` / ``_sweep_failed.json`` when it exists and belongs to the point with
    ``key`` (any point when ``key`` is None), else None. A damaged marker (truncated, not a JSON mapping) is
    a warning naming the file, and counts as absent: the point is run again, nothing is taken from it."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        data, why = None, f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"
    else:
        why = f"it holds a {type(data).__name__}, not a mapping"
    if not isinstance(data, dict):
        warnings.warn(f"{str(path)!r} is damaged ({why}); the point counts as not finished and runs again")
        return None
    return data if key is None or data.get("key") == key else None


def is_done(point_dir: Path, key: Optional[str]) -> bool:
    return read_marker(point_dir / DONE_MARKER, key) is not None


def check_run_options(timeout: Optional[float], kernel_name: str) -> None:
    """Refuse, before the first point, options every point would fail on: a ``timeout`` that is not a positive
    number of seconds, a Jupyter kernel that is not installed (jupyter_client's kernel specs)."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise ConfigError(f"--timeout {short_repr(timeout)}: the seconds a point may run must be a number > 0 "
                          "(omit it for no limit)")
    from jupyter_client.kernelspec import KernelSpecManager  # why: jupyter_client is heavy; only sweeps need it

    kernels = KernelSpecManager().find_kernel_specs()
    if kernel_name not in kernels:
        raise unknown_name_error("Jupyter kernel (--kernel; installed: jupyter kernelspec list)", kernel_name, kernels)


def claim_sweep_folder(out: Path) -> FolderLock:
    """The sweep's lock on ``out`` (:class:`atkit.core.utils.FolderLock`): one sweep per folder, or two would run the
    same points at once (a train point would then train a duplicate run). Released when the sweep ends or dies."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return FolderLock(out).acquire("sweep folder", "is running a sweep into it")
    except OSError as e:
        raise ConfigError(f"sweep folder {str(out)!r} cannot be written: {e.strerror or e}; give a writable --out"
                          ) from None


# ------------------------------------------------------------------------------------ job records
def meta_dir(out: Path) -> Path:
    return Path(out) / SUBMITIT_DIR


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def load_jobs(out: Path, *, strict: bool = False) -> dict[str, dict[str, Any]]:
    """``jobs.json``: point folder -> job record. A damaged file is an error with ``strict`` (``--cancel`` must
    not guess), else a warning and no records (the points are then submitted again)."""
    path = meta_dir(out) / "jobs.json"
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        message = f"{str(path)!r} is damaged (not a JSON mapping of point folders to jobs)"
        if strict:
            raise ConfigError(message + "; check the jobs with squeue (SLURM) or ps, then delete the file")
        warnings.warn(message + "; its jobs are not known, the unfinished points are submitted again")
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


INSTALL_MESSAGE = "--backend submitit needs the submitit package: pip install atkit[slurm]"


def require_submitit() -> Any:
    """The ``submitit`` module, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import submitit  # why: optional dependency, and heavy
    except ImportError:
        raise ConfigError(INSTALL_MESSAGE) from None
    return submitit


def job_record(cluster: str, job_id: str, key: str, submitted: str) -> dict[str, Any]:
    """What ``jobs.json`` keeps of a job just submitted: its id and, for a local job, the identity (start time
    and command line) of its controller process, against which the id is checked before any later use."""
    record: dict[str, Any] = {"job_id": str(job_id), "cluster": cluster, "key": key, "submitted": submitted}
    if cluster == "local" and job_id_problem("local", str(job_id)) is None:
        identity = process_identity(int(job_id))
        for _ in range(40):  # read between fork and exec the command line is empty: wait (2 s at most) for exec
            if identity is None or identity["cmdline"]:
                break
            time.sleep(0.05)
            identity = process_identity(int(job_id))
        record["process"] = identity
    return record


def job_state(record: Mapping[str, Any], logs: Path) -> str:
    """The state of a recorded job now: the scheduler's (``RUNNING``, ``PENDING``, ``COMPLETED``, ...),
    ``ENDED (why)`` for a record that is not a live job of this sweep, ``UNKNOWN (why)`` when nobody can tell."""
    cluster, job_id = record.get("cluster"), record.get("job_id")
    if cluster == "debug":
        return "FINISHED"  # debug jobs run inside the submitting command
    problem = job_id_problem(str(cluster), job_id)
    if problem is not None:
        return f"ENDED ({problem})"
    if cluster == "local":
        if not Path("/proc/self/stat").is_file():
            return "UNKNOWN (this system has no /proc to check the process)"
        now = process_identity(int(job_id))
        if now is None:
            return "FINISHED"
        recorded = record.get("process")
        if recorded is None:  # recorded before atkit kept identities, or unreadable at submission
            looks_like_it = _LOCAL_CONTROLLER in now["cmdline"] and str(logs) in now["cmdline"]
            return ("UNKNOWN (the record has no process identity to check)" if looks_like_it else
                    f"ENDED (process {job_id} is not this sweep's job)")
        if not same_process(recorded, now):
            return f"ENDED (process id {job_id} now belongs to another process)"
        return "RUNNING"
    return slurm_state(str(job_id))


def slurm_state(job_id: str, *, timeout_s: float = 60.0) -> str:
    """The job's state as ``sacct`` reports it (``RUNNING``, ``PENDING``, ``COMPLETED``, ``CANCELLED``, ...), or
    ``UNKNOWN (why)``. sacct is asked directly rather than through ``submitit.SlurmJob.state``: submitit catches a
    failed sacct itself, prints a warning on stdout (which breaks ``--status --json``) and answers ``UNKNOWN``
    without the cause. ``job_id`` has passed :func:`job_id_problem` (digits, optionally ``_`` and an index)."""
    cmd = ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return "UNKNOWN (sacct not found on PATH: run this on the cluster's login node)"
    except subprocess.TimeoutExpired:
        return f"UNKNOWN (sacct did not answer within {timeout_s:.0f} s)"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        return f"UNKNOWN (sacct failed, exit {done.returncode}: {detail[0][:160] if detail else 'no message'})"
    states = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    if not states:  # just submitted, or purged from the accounting database
        return f"UNKNOWN (sacct has no record of job {job_id})"
    return states[0]  # "CANCELLED by 1000" -> "CANCELLED"


def state_kind(state: str) -> str:
    """``"live"``, ``"unknown"`` or ``"ended"`` (the module docstring)."""
    first = state.split(" ")[0]
    if first in LIVE_STATES:
        return "live"
    return "unknown" if first.upper().startswith("UNKNOWN") else "ended"


# ------------------------------------------------------------------------------ status / cancel
def _sweep_points(out: Path) -> list[dict[str, Any]]:
    """The points of the sweep in ``out`` from ``_submitit/submission.json``, else ``sweep.json``; a one-line
    :class:`ConfigError` when neither exists or the one there is damaged."""
    for path, kind in ((meta_dir(out) / "submission.json", "submission"), (out / "sweep.json", "summary")):
        if not path.is_file():
            continue
        data = read_json(path)
        points = data.get("points") if isinstance(data, dict) else None
        if not isinstance(points, list) or not all(isinstance(p, dict) and "folder" in p and "index" in p
                                                   for p in points):
            raise ConfigError(f"{str(path)!r} is damaged (truncated or not a sweep {kind}); run the same sweep "
                              "command again: it rewrites it and skips the finished points")
        if kind == "submission":
            return points
        return [{"index": p["index"], "folder": p["folder"], "key": None,
                 "varied": {k[6:]: v for k, v in p.items() if k.startswith("param:")}} for p in points]
    raise ConfigError(f"{str(out)!r} holds no sweep (no sweep.json or {SUBMITIT_DIR}/submission.json)")


def sweep_status(out_dir: str | Path) -> list[dict[str, Any]]:
    """One row per point of the sweep in ``out_dir`` (either backend; relative: against the project root, as the
    sweep's ``--out``): ``status`` is done / failed / running / pending / interrupted / unknown, or ``started``
    for a local-runner point with a log but no marker (running, or interrupted); submitit points carry their
    ``job_id`` and ``job_state``."""
    out = resolve_output_path(out_dir)
    points = _sweep_points(out)
    jobs = load_jobs(out)
    rows = []
    for p in points:
        folder = out / str(p["folder"])
        key = p.get("key")
        done, failed = read_marker(folder / DONE_MARKER, key), read_marker(folder / FAILED_MARKER, key)
        row: dict[str, Any] = {"index": p["index"], "folder": p["folder"], "status": "pending"}
        job = jobs.get(str(p["folder"]))
        if job:
            row["job_id"] = job.get("job_id")
        if done is not None:
            row["status"] = "done"
        elif failed is not None:
            row["status"], row["error"] = "failed", failed.get("error")
        elif job:
            state = job_state(job, meta_dir(out) / "logs")
            kind = state_kind(state)
            row["job_state"] = state
            row["status"] = ("running" if state.split(" ")[0] in RUNNING_STATES else "pending" if kind == "live"
                             else "unknown" if kind == "unknown" else "interrupted")
        elif (folder / LOG_FILE).is_file():
            row["status"] = "started"
        rows.append(row)
    return rows


def format_status(rows: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = [", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    for r in rows:
        job = f"  job {r['job_id']}" + (f" ({r['job_state']})" if r.get("job_state") else "") if r.get("job_id") else ""
        line = f"{r['status']:11s} {r['folder']}{job}"
        if r.get("error"):
            line += f": {str(r['error']).splitlines()[0][:160]}"
        lines.append(line)
    return "\n".join(lines)


@dataclass
class CancelReport:
    """What ``--cancel`` did: the job ids it stopped, and per job it left alone why (unknown state, ...)."""

    cancelled: list[str] = field(default_factory=list)
    not_cancelled: dict[str, str] = field(default_factory=dict)


def cancel_sweep(out_dir: str | Path) -> CancelReport:
    """Cancel every live job of the sweep in ``out_dir`` whose point is not finished (module docstring: a job
    whose state is unknown, or whose record is not this sweep's job, is left alone and reported). Cancelled
    points keep what they wrote; the same sweep command submits them again."""
    out = resolve_output_path(out_dir)
    jobs = load_jobs(out, strict=True)
    if not jobs:
        raise ConfigError(f"{str(out)!r} has no submitit jobs to cancel ({SUBMITIT_DIR}/jobs.json is missing)")
    report, slurm_ids = CancelReport(), []
    for folder, job in jobs.items():
        if is_done(out / folder, job.get("key")):
            continue
        state = job_state(job, meta_dir(out) / "logs")
        kind, job_id = state_kind(state), str(job.get("job_id"))[:40]
        if kind == "unknown":
            report.not_cancelled[job_id] = state
        elif kind == "live" and job.get("cluster") == "local":
            # the controller stops its task on SIGINT; the task stops its papermill process
            if signal_verified(int(job_id), job.get("process"), signal.SIGINT):
                report.cancelled.append(job_id)
            else:
                report.not_cancelled[job_id] = "its process ended or changed before it could be signalled"
        elif kind == "live" and job.get("cluster") == "slurm":
            slurm_ids.append(job_id)  # checked by job_state: digits and an optional _index, nothing else
    if slurm_ids:
        try:
            subprocess.run(["scancel", *slurm_ids], check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            detail = (getattr(e, "stderr", None) or str(e)).strip().splitlines()
            raise ConfigError(f"scancel {' '.join(slurm_ids)} failed: {detail[0] if detail else e}") from None
        report.cancelled += slurm_ids
    return report


__all__ = ["CancelReport", "DONE_MARKER", "INSTALL_MESSAGE", "FAILED_MARKER", "LIVE_STATES", "LOG_FILE", "SUBMITIT_DIR", "cancel_sweep",
           "check_run_options", "claim_sweep_folder", "format_status", "is_done", "job_record", "job_state",
           "load_jobs", "meta_dir", "read_marker", "require_submitit", "slurm_state", "state_kind", "sweep_status"]
