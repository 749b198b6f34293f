"""How many CPU threads torch uses: one policy for every entry point, decided once per process and recorded.

PyTorch starts as many intra-op threads as the machine has cores, whatever else runs on them. On a busy shared
machine those threads wait for each other at every parallel region: the same training step took 4-8x longer
with 2 threads than with 1 on a 2-core machine at load 9-20. :func:`apply_threads` chooses, in this order:

1. ``ATKIT_THREADS=N`` in the environment (``--threads N`` on ``atkit train|eval|notebook|sweep`` sets it for the
   command and everything it starts: the notebook's kernel, the sweep's workers);
2. an explicit ``threads: N`` of a run config or a caller (:class:`atkit.training.config.RunConfig`);
3. your own choice, left as it is: a ``torch.set_num_threads`` call made after atkit was imported (the count
   differs from the one atkit found or last set), or ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the environment
   (torch read it at start-up);
4. otherwise (``"auto"``) :func:`auto_threads`: the free cores (usable cores minus the 1-minute load average,
   rounded, at least 1) shared by the ``ATKIT_WORKERS`` processes a sweep runs side by side, at most torch's own
   default: never more threads than free cores.

The first decision of a process stands: a later ``"auto"`` (the next trainer of an experiment, whose own work
now raises the load) keeps it. :func:`threads_record` is what provenance and ``metrics.json`` store: the count, its
source and why.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional

import torch

from .utils import ConfigError, short_repr

#: The person's thread count for this process and every process it starts (``--threads`` sets it).
THREADS_ENV = "ATKIT_THREADS"
#: How many atkit processes share this machine's CPU (a sweep sets it for its workers); ``"auto"`` divides by it.
WORKERS_ENV = "ATKIT_WORKERS"
#: Thread settings of OpenMP / MKL that torch reads at start-up; atkit leaves them as they are.
USER_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
ACCEPTED = "a positive integer (1, 2, ...) or 'auto'"


@dataclass(frozen=True)
class ThreadChoice:
    """A decision of :func:`apply_threads`: ``threads`` torch uses, the ``source`` that decided (``"ATKIT_THREADS"``,
    ``"threads"``, ``"torch.set_num_threads"``, ``"OMP_NUM_THREADS"``, ``"auto"``, ...) and ``why`` in words."""

    threads: int
    source: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_threads(value: Any, name: str = "threads") -> Optional[int]:
    """A thread setting as a count, or None for ``"auto"`` (and None); anything else is a one-line
    :class:`ConfigError` naming ``name``, the value and :data:`ACCEPTED`."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    count: Optional[int] = None
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and value.strip().isdigit():
        count = int(value.strip())
    if count is None or count < 1:
        flag, variable = name.startswith("--"), name.isupper()  # --threads 0, ATKIT_THREADS=0, threads=-1
        shown = short_repr(value)[1:-1] if isinstance(value, str) and (flag or variable) else short_repr(value)
        raise ConfigError(f"{name}{' ' if flag else '='}{shown} is not a thread count: give {ACCEPTED}")
    return count


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM allocation), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float:
    """The 1-minute load average (0.0 where the system has none, e.g. Windows)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def free_cores(cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """``cores`` minus the 1-minute ``load`` rounded half up, at least 1 (defaults: :func:`usable_cores`,
    :func:`load_average`)."""
    cores = usable_cores() if cores is None else cores
    load = load_average() if load is None else load
    return max(1, cores - math.floor(load + 0.5))


def auto_threads(*, workers: int = 1, cores: Optional[int] = None, load: Optional[float] = None,
                 torch_default: Optional[int] = None) -> ThreadChoice:
    """The ``"auto"`` choice: ``max(1, free_cores // workers)``, at most ``torch_default`` (torch's own count
    when atkit was imported: its physical cores, or what the caller had set)."""
    cores = usable_cores() if cores is None else cores
    load = load_average() if load is None else load
    torch_default = _torch_default if torch_default is None else torch_default
    free = free_cores(cores, load)
    count = max(1, min(free // max(1, workers), torch_default))
    shared = f", shared by {workers} worker processes" if workers > 1 else ""
    cap = f", capped at torch's default {torch_default}" if free // max(1, workers) > torch_default else ""
    return ThreadChoice(count, "auto", f"{cores} cores, load {load:.2f}: {free} free{shared}{cap}")


# torch's count when atkit was first imported, and the count atkit set last (None: not yet); the decision.
_torch_default: int = torch.get_num_threads()
_last_set: Optional[int] = None
_choice: Optional[ThreadChoice] = None


def _user_env() -> Optional[tuple[str, int]]:
    for name in USER_ENV:
        try:
            count = parse_threads(os.environ.get(name), name)
        except ConfigError:  # torch ignores a value it cannot read, and so does atkit
            continue
        if count is not None:
            return name, count
    return None


def _set(choice: ThreadChoice) -> ThreadChoice:
    global _last_set, _choice
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    _last_set, _choice = choice.threads, choice
    return choice


def apply_threads(setting: Any = None, *, name: str = "threads") -> ThreadChoice:
    """Set torch's intra-op threads by the policy of the module docstring and return the decision.

    ``setting``: an explicit count (or ``"auto"``/None) from a config or caller, checked under ``name``. Bad values,
    there or in ``ATKIT_THREADS`` / ``ATKIT_WORKERS``, are one-line :class:`ConfigError` s before anything is set."""
    env = parse_threads(os.environ.get(THREADS_ENV) or None, THREADS_ENV)  # empty: unset
    explicit = parse_threads(setting, name)
    workers = parse_threads(os.environ.get(WORKERS_ENV) or None, WORKERS_ENV) or 1
    if env is not None:
        return _set(ThreadChoice(env, THREADS_ENV, f"{THREADS_ENV}={env} (--threads or the environment)"))
    if explicit is not None:
        return _set(ThreadChoice(explicit, name, f"{name}: {explicit}"))
    now = torch.get_num_threads()
    if _choice is not None and now == _choice.threads:  # decided earlier in this process: it stands
        return _choice
    if now != (_torch_default if _last_set is None else _last_set):
        return _set(ThreadChoice(now, "torch.set_num_threads", f"set to {now} by the caller, left as it is"))
    user = _user_env()
    if user is not None and user[1] == now:
        return _set(ThreadChoice(now, user[0], f"{user[0]}={user[1]} in the environment, left as it is"))
    if user is not None:  # the caller set torch's count before importing atkit, over the variable's
        return _set(ThreadChoice(now, "torch.set_num_threads", f"set to {now} by the caller before atkit was "
                                 f"imported ({user[0]}={user[1]} in the environment), left as it is"))
    return _set(auto_threads(workers=workers))


def threads_record() -> dict[str, Any]:
    """What provenance stores: the count torch uses now, and the source and reason of atkit's decision (or that
    none was made in this process, or that the count was changed after it)."""
    now = torch.get_num_threads()
    if _choice is None:
        return {"threads": now, "source": "torch", "why": "not set by atkit in this process"}
    if now != _choice.threads:
        return {"threads": now, "source": "torch.set_num_threads",
                "why": f"changed after atkit chose {_choice.threads} ({_choice.source}: {_choice.why})"}
    return _choice.to_dict()


@contextmanager
def threads_for_command(setting: Any = None, *, name: str = "--threads") -> Iterator[ThreadChoice]:
    """A command's thread policy: ``setting`` (its ``--threads``) goes into ``ATKIT_THREADS`` for the command and every
    process it starts, then :func:`apply_threads`; on exit the environment, torch's count and the decision are
    restored (the command may run inside a test or another program)."""
    global _last_set, _choice
    count = parse_threads(setting, name)
    saved_env, saved = os.environ.get(THREADS_ENV), (torch.get_num_threads(), _last_set, _choice)
    try:
        if count is not None:
            os.environ[THREADS_ENV] = str(count)
        yield apply_threads()
    finally:
        if saved_env is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = saved_env
        if torch.get_num_threads() != saved[0]:
            torch.set_num_threads(saved[0])
        _, _last_set, _choice = saved


def worker_env(env: dict[str, str], workers: int) -> dict[str, str]:
    """``env`` for one of ``workers`` processes that share this CPU (sweep points): ``ATKIT_WORKERS`` so that each
    one's ``"auto"`` takes its share of the free cores; a thread count the person set is kept as it is."""
    if workers > 1 and not any(env.get(k) for k in (THREADS_ENV, *USER_ENV)):
        env.setdefault(WORKERS_ENV, str(workers))
    return env


__all__ = ["ACCEPTED", "THREADS_ENV", "ThreadChoice", "USER_ENV", "WORKERS_ENV", "apply_threads", "auto_threads",
           "free_cores", "load_average", "parse_threads", "threads_for_command", "threads_record", "usable_cores",
           "worker_env"]
