"""The processes atkit starts and signals: only its own, verified first, and never a group it did not create.

* :func:`sigterm_as_interrupt`: SIGTERM (what ``kill``, SLURM and torchrun send) handled as Ctrl-C is, so a
  run or a sweep stopped either way leaves a true state on disk (:class:`Interrupted`, a ``KeyboardInterrupt``);
* :func:`dies_with_parent`: a command line whose process gets SIGTERM when the process that started it dies,
  even by ``kill -9`` (Linux ``PR_SET_PDEATHSIG``), so a sweep's papermill children never run on as orphans;
* :func:`stop_child`: stop a child this process started in its own session (its process group, which this
  process created and has not reaped, so the group id cannot belong to anyone else);
* :func:`job_id_problem`: the forms a recorded job id must have before any use (a local submitit job: a process
  id above 1; SLURM: digits with an optional ``_<array index>``), so ``0``, ``-1`` or ``--user=x`` never
  reach ``os.kill`` or ``scancel``;
* :func:`process_identity` / :func:`signal_verified`: a recorded local job is signalled only when the process
  with its id still has the start time and command line recorded when it was submitted (a reused process id
  belongs to someone else).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence


class Interrupted(KeyboardInterrupt):
    """A stop by signal: Ctrl-C (SIGINT) or SIGTERM; ``signum`` says which (exit status ``128 + signum``)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = int(signum)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Interrupted` (a ``KeyboardInterrupt``) in the main thread, so the
    code that records a Ctrl-C records a ``kill`` too. Only where SIGTERM has its default action (which would
    end the process without a word): a handler someone else installed is left alone; off the main thread the
    block runs unchanged (Python delivers signals to the main thread only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exit_status(interrupt: BaseException) -> int:
    """The shell's exit status for a process stopped by ``interrupt``: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


# A child that dies with its parent: set PR_SET_PDEATHSIG (1) to SIGTERM, check that the parent did not die before
# that (then the child belongs to init already), and become the real command. The setting survives the exec.
_DEATH_SIGNAL_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(143)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n")


def dies_with_parent(cmd: Sequence[str]) -> list[str]:
    """``cmd`` run through a small launcher that makes it receive SIGTERM when this process dies (Linux; on other
    systems ``cmd`` unchanged). A papermill process that gets it stops, and its kernel follows (ipykernel exits
    when its parent does)."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-c", _DEATH_SIGNAL_LAUNCHER, str(os.getpid()), *cmd]


def stop_child(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a child started with ``start_new_session=True`` and to its process group. The group is
    signalled only while the child is not reaped (its id is then still this process's child) and leads its own
    group; otherwise only the child itself."""
    if proc.poll() is not None or proc.pid <= 1:
        return
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
            return
    except (ProcessLookupError, PermissionError, AttributeError, OSError):
        pass
    with contextlib.suppress(ProcessLookupError, OSError):
        proc.send_signal(sig)


# ----------------------------------------------------------------------------------- recorded jobs
_LOCAL_JOB_ID = re.compile(r"[1-9][0-9]{0,9}")
_SLURM_JOB_ID = re.compile(r"[1-9][0-9]{0,15}(_[0-9]{1,9})?")


def job_id_problem(cluster: str, job_id: Any) -> Optional[str]:
    """Why ``job_id`` is not a job id of ``cluster`` (None when its form is right): a local submitit job is the
    process id (above 1) of its controller; a SLURM job is digits with an optional ``_<array index>``."""
    text = job_id if isinstance(job_id, str) else None
    if cluster == "local":
        if text is None or not _LOCAL_JOB_ID.fullmatch(text) or int(text) <= 1:
            return f"job id {str(job_id)[:40]!r} is not a local job's process id (an integer above 1)"
        return None
    if cluster == "slurm":
        if text is None or not _SLURM_JOB_ID.fullmatch(text):
            return f"job id {str(job_id)[:40]!r} is not a SLURM job id (digits, optionally _<array index>)"
        return None
    return f"cluster {str(cluster)[:20]!r} has no jobs to look up"


def process_identity(pid: int) -> Optional[dict[str, Any]]:
    """``{"start_time": <clock ticks after boot>, "cmdline": [...]}`` of a live process (Linux ``/proc``), or None
    when there is none with that id, it is a zombie, or ``/proc`` cannot tell."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError, ValueError):
        return None
    if fields[0] == "Z":
        return None
    return {"start_time": int(fields[19]), "cmdline": [c.decode(errors="replace") for c in cmdline if c]}


def same_process(recorded: Any, now: Optional[dict[str, Any]]) -> bool:
    """Whether the live process ``now`` is the one whose identity was ``recorded`` (same start time and command)."""
    if not isinstance(recorded, dict) or now is None or recorded.get("start_time") != now["start_time"]:
        return False
    # An empty recorded command line was read between fork and exec; the start time (clock ticks since boot) and the
    # id then still name one process, since an id is not reused within the tick its process started in.
    return not recorded.get("cmdline") or recorded.get("cmdline") == now["cmdline"]


def signal_verified(pid: int, recorded: Any, sig: int) -> bool:
    """Send ``sig`` to process ``pid`` only if it is the process ``recorded`` (:func:`same_process`); whether it was
    sent. Through a pidfd where the system has one, so that the process checked is the process signalled."""
    if not isinstance(pid, int) or pid <= 1 or pid == os.getpid():
        return False
    pidfd = None
    if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError:
            pidfd = None  # an old kernel: fall back to the id (checked just before)
    try:
        if not same_process(recorded, process_identity(pid)):
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


__all__ = ["Interrupted", "dies_with_parent", "exit_status", "job_id_problem", "process_identity", "same_process",
           "sigterm_as_interrupt", "signal_verified", "stop_child"]
