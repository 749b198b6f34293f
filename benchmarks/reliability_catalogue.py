"""Re-count issue 26's hostile catalogue (reliability, round three) against the checkout this file lives in.

Issue 26 counts 49 cases in four classes; it does not number them, so the split below is this script's own: 41
cases read off its bullets, and 8 from its list of what already held in that round ("unsafe checkpoints and YAML
tags", "``--set`` parsing", "unicode and spaces in every path", "the run lock", "the notebook folder marker",
"Ctrl-C of a sweep", "TensorBoard across kill -9 and resume", "``card``'s protocol checks"; marked ``[held]``),
each in the class it belongs to:

1. a sweep acts only on what it owns: job ids, process identity, SLURM ``sacct``/``scancel``, stale records,
   signals to the sweep and its children, one sweep per ``--out``, options checked before the first point;
2. a number is labelled only with what produced it: ``eval --set``, ``compare`` across settings, non-finite
   outputs, the checkpoint hash, ``eval --n`` beyond the split, ``card``'s protocol checks;
3. nothing is lost after the work is done: where ``eval`` and ``card`` write, a second evaluation, a full disk,
   the run lock, the notebook folder marker, awkward path names;
4. signals and bad files give true states and one-line errors: SIGTERM and Ctrl-C of training, YAML alias bombs,
   torn and hostile checkpoints, folder-dataset images, the results tables, damaged sweep files.

Each case is tried as a user or an attacker would, through atkit's command line (``python -m atkit ...`` in a
process of its own, or several command lines through ``atkit.workbench.cli.main`` in one process, so that torch
is imported once) or a few lines of Python where only Python can observe the result, inside one temporary
folder: the outputs go there (``ATKIT_OUTPUTS``), and so does ``$TMPDIR``. Where a wrong answer would be
dangerous the harness stands in: sacrificial ``sleep`` processes it starts itself take the place of "an
unrelated process"; ``sacct``, ``scancel``, ``sbatch`` and ``srun`` are fake scripts on ``PATH`` that log their
arguments; a job id of ``-1`` is only ever tried with ``os.kill`` replaced by a recorder. A full disk is a small
tmpfs filled to the last byte (for training, by a hook that fills it just before ``eval.json`` is written) when
this machine lets us mount one, else the write fails with ENOSPC raised in Python (the evidence says which); a
read-only run is a read-only bind mount (else ``chmod``, which binds only non-root users).

Verdicts: ``clear`` (refused or handled, with one line naming the bad value and the remedy where there is
something to refuse), ``fixed-by-design`` (the case can no longer arise; the evidence says why), ``unclear``
(traceback, hang, wrong cause, a remedy that cannot be followed), ``silent`` (wrong behaviour without a word),
``lost`` (a result lost or overwritten). Every line printed: number, class, verdict, case, evidence. The exit
status is 1 when any case is neither clear nor fixed-by-design (or the harness itself failed on one), else 0.

Usage: ``python benchmarks/reliability_catalogue.py [--only 3,17] [--keep]`` from the checkout (any working
directory); about five to eight minutes on two busy cores (``--keep`` leaves the temporary folder for a look).
Every process it starts carries a token in its environment and is ended, by its own id, before the script exits.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLASSES = {1: "sweep-owns", 2: "labels", 3: "nothing-lost", 4: "signals-files"}
OK_VERDICTS = ("clear", "fixed-by-design")
VERDICTS = ("clear", "fixed-by-design", "unclear", "silent", "lost")

# ------------------------------------------------------------------------------------------------ the harness


@dataclass
class Result:
    """What one command did."""

    cmd: str
    rc: Optional[int]
    out: str
    err: str
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.strip().splitlines() if line.strip()]

    @property
    def first(self) -> str:
        lines = self.err_lines
        return lines[0] if lines else ""

    @property
    def one_line(self) -> bool:
        """Exactly one non-empty line on stderr and no traceback."""
        return len(self.err_lines) == 1 and "Traceback" not in self.err


@dataclass
class Verdict:
    verdict: str
    evidence: str


@dataclass
class Case:
    number: int
    klass: int
    title: str
    run: Callable[["Lab"], Verdict]


CASES: list[Case] = []


def case(number: int, klass: int, title: str) -> Callable[[Callable[["Lab"], Verdict]], Callable[["Lab"], Verdict]]:
    def register(fn: Callable[["Lab"], Verdict]) -> Callable[["Lab"], Verdict]:
        CASES.append(Case(number, klass, title, fn))
        return fn
    return register


def judge(ok: bool, evidence: str, otherwise: str) -> Verdict:
    """``clear`` when ``ok``, else the verdict ``otherwise``, with the evidence either way."""
    return Verdict("clear" if ok else otherwise, evidence)


def quote(text: str, limit: int = 150) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    began = time.time()
    while not condition():
        if time.time() - began > timeout:
            return False
        time.sleep(0.05)
    return True


FAKE_SLURM = {
    # sacct: answers the state in $FAKE_DIR/sacct_state for every -j id, or fails when the state is "fail"; in the
    # format each caller asks for (atkit: -n -P -o State; submitit: a JobID|State|NodeList table)
    "sacct": r'''#!/bin/sh
echo "sacct $*" >> "$FAKE_DIR/calls.log"
state=$(cat "$FAKE_DIR/sacct_state" 2>/dev/null || echo fail)
if [ "$state" = fail ]; then
  echo "sacct: error: Slurm accounting storage is disabled" >&2
  exit 1
fi
case " $* " in *" -o State "*)  # atkit's own query (-X -n -P -o State): the state alone, no header
  echo "$state"; exit 0;;
esac
echo "JobID|State|NodeList"  # submitit's query
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then shift; echo "$1|$state|node1"; echo "${1}_0|$state|node1"; fi
  shift
done
''',
    "scancel": '#!/bin/sh\necho "scancel $*" >> "$FAKE_DIR/calls.log"\n',
    "srun": '#!/bin/sh\necho "srun $*" >> "$FAKE_DIR/calls.log"\nexit 1\n',  # submitit looks for it
    "sbatch": r'''#!/bin/sh
echo "sbatch $*" >> "$FAKE_DIR/calls.log"
n=$(cat "$FAKE_DIR/next_job" 2>/dev/null || echo 4242)
echo $((n + 1)) > "$FAKE_DIR/next_job"
echo "Submitted batch job $n"
''',
}

GATE_NOTEBOOK_BODY = ("import os, pathlib, time\n"
                      "pathlib.Path(out_dir, 'kernel.pid').write_text(str(os.getpid()))\n"
                      "while wait and not pathlib.Path(out_dir, 'go').exists():\n"
                      "    time.sleep(0.05)\n"
                      "pathlib.Path(out_dir, 'result.json').write_text(str(2 * value))\n")

# Six epochs of PGD-AT on 1,024 synthetic 16 px images, a narrow small_cnn: a few seconds, about 60 % clean and
# 30 % PGD-5 accuracy on its 64 test images (above chance, so an attack's eps shows in the numbers).
TINY_RUN = {"method": "pgd_at", "dataset": "synthetic", "data": {"n_train": 1024, "n_test": 64, "image_size": 16},
            "model": "small_cnn", "model_params": {"width": 4, "hidden": 16}, "batch_size": 64,
            "schedule": "constant", "epochs": 6, "threat": {"steps": 1}, "device": "cpu", "name": "tiny",
            "eval": {"n_test": 64, "pgd_steps": 1, "select_by": "clean", "final_attacks": ["clean"],
                     "sanity": False}}

# Training that stops at its second optimiser step and says so, then waits to be signalled (a few lines of Python
# standing in for "a long run in progress").
STOPPER = r'''
import sys, time
import torch
calls = [0]
real_step = torch.optim.SGD.step


def step(self, *a, **k):
    calls[0] += 1
    if calls[0] == int(__import__("os").environ.get("STOP_AT_STEP", "2")):
        print("STOPPED", flush=True)
        time.sleep(600)
    return real_step(self, *a, **k)


torch.optim.SGD.step = step
from atkit.workbench.cli import main
sys.exit(main(sys.argv[1:]))
'''

# Several atkit command lines in one process (see Lab.atkit_many).
MANY_DRIVER = r"""
import contextlib, io, json, os, sys, time, traceback, warnings
from atkit.workbench.cli import main
rows = []
for call in json.loads(sys.argv[1]):
    if call[0] == "@chdir":
        os.chdir(call[1])
        continue
    out, err = io.StringIO(), io.StringIO()
    began = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as in a fresh process: each call shows its warnings
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(call)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                rc = 1
    rows.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "seconds": time.time() - began})
print("RESULTS " + json.dumps(rows))
"""

# Nine levels of nine aliases: under 500 bytes standing for 9**9 (387 million) strings.
ALIAS_BOMB = "[" + ", ".join(f"&{b} [{', '.join([f'*{a}'] * 9) if a else ', '.join(['lol'] * 9)}]"
                             for a, b in zip(["", *"abcdefgh"], "abcdefghi")) + "]"


class Lab:
    """The temporary folder, the environment every command gets, and the processes started (ended at close)."""

    def __init__(self, keep: bool) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="atkit-recount-"))
        self.keep = keep
        self.token = uuid.uuid4().hex
        self.fake = self.tmp / "fake-slurm"
        self.fake.mkdir()
        for name, text in FAKE_SLURM.items():
            (self.fake / name).write_text(text)
            (self.fake / name).chmod(0o755)
        (self.tmp / "tmp").mkdir()
        env = dict(os.environ)
        for key in ("ATKIT_TEST_STOP", "ATKIT_ROOT", "PYTHONSTARTUP"):
            env.pop(key, None)
        env.update(PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ATKIT_THREADS="1", ATKIT_PROGRESS="lines",
                   ATKIT_OUTPUTS=str(self.tmp / "outputs"), TMPDIR=str(self.tmp / "tmp"),
                   PATH=os.pathsep.join([str(self.fake), str(Path(PY).parent), env.get("PATH", "")]),
                   FAKE_DIR=str(self.fake), ATKIT_RECOUNT_TOKEN=self.token, PYTHONWARNINGS="default")
        self.env = env
        self.procs: list[subprocess.Popen] = []
        self.mounts: list[Path] = []
        self._tiny: Optional[Path] = None
        self._n = 0

    # ---------------------------------------------------------------- commands
    def path(self, name: str) -> Path:
        """A fresh folder under the temporary folder."""
        self._n += 1
        p = self.tmp / f"{self._n:03d}-{name}"
        p.mkdir(parents=True)
        return p

    def run(self, args: Sequence[str], *, cwd: Optional[Path] = None, timeout: float = 300,
            env: Optional[dict[str, str]] = None) -> Result:
        cmd = [str(a) for a in args]
        began = time.time()
        proc = self.popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
            rc: Optional[int] = proc.returncode
        except subprocess.TimeoutExpired:
            self.end(proc)
            out, err = proc.communicate()
            rc = None
        return Result(shlex.join(cmd), rc, out, err, time.time() - began)

    def atkit(self, *args: Any, **kw: Any) -> Result:
        return self.run([PY, "-m", "atkit", *map(str, args)], **kw)

    def atkit_many(self, calls: Sequence[Sequence[Any]], *, cwd: Optional[Path] = None,
                   timeout: float = 400) -> list[Result]:
        """Several ``python -m atkit`` command lines run one after the other in one process
        (``atkit.workbench.cli.main``, what ``python -m atkit`` calls), each with its own stdout/stderr and exit
        status: one import of torch for all. A call may be ``("@chdir", folder)`` to change the working directory
        for the calls after it."""
        spec = json.dumps([[str(a) for a in call] for call in calls])
        done = self.python(MANY_DRIVER, spec, cwd=cwd, timeout=timeout)
        rows = next((json.loads(line[8:]) for line in done.out.splitlines() if line.startswith("RESULTS ")), None)
        if rows is None:
            raise RuntimeError(f"the in-process driver failed: rc {done.rc} {done.err[-400:]}")
        return [Result(shlex.join(["atkit", *map(str, call)]), r["rc"], r["out"], r["err"], r["seconds"])
                for call, r in zip(calls, rows) if call[0] != "@chdir"]

    def python(self, code: str, *args: Any, **kw: Any) -> Result:
        return self.run([PY, "-c", textwrap.dedent(code), *map(str, args)], **kw)

    def popen(self, cmd: Sequence[str], *, cwd: Optional[Path] = None, env: Optional[dict[str, str]] = None,
              **kw: Any) -> subprocess.Popen:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=str(cwd or ROOT), env={**self.env, **(env or {})},
                                text=True, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def sleeper(self) -> subprocess.Popen:
        """A sacrificial process: 'an unrelated process' of the same user."""
        return self.popen(["sleep", "600"])

    def end(self, proc: subprocess.Popen) -> None:
        """SIGKILL one process this harness started, by its id (its session too: it leads one)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def descendants(self) -> list[int]:
        """Every live process that carries this harness's token (whatever started it), but this one."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if f"ATKIT_RECOUNT_TOKEN={self.token}".encode() in environ.split(b"\0") and alive(int(entry.name)):
                found.append(int(entry.name))
        return found

    def close(self) -> list[int]:
        """End what is left; returns the ids of processes that were still alive (leftovers of some case)."""
        for proc in self.procs:
            self.end(proc)
        leftovers = self.descendants()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return leftovers

    # ------------------------------------------------------------- shared material
    def tiny_run(self) -> Path:
        """A finished one-epoch run (trained once; cases work on copies)."""
        if self._tiny is None:
            folder = self.path("tiny-run")
            config = folder / "tiny.yaml"
            config.write_text(json.dumps(TINY_RUN))
            done = self.atkit("train", config, "--out-dir", folder / "runs", "--quiet")
            if done.rc != 0:
                raise RuntimeError(f"the tiny run did not train: {done.first}")
            self._tiny = folder / "runs" / "tiny"
        return self._tiny

    def run_copy(self, name: str) -> Path:
        target = self.path(name) / "tiny"
        shutil.copytree(self.tiny_run(), target)
        (target / ".lock").unlink(missing_ok=True)
        return target

    def config(self, folder: Path, **changes: Any) -> Path:
        cfg = {**TINY_RUN, **changes}
        path = folder / "tiny.yaml"
        path.write_text(json.dumps(cfg))
        return path

    def gate_notebook(self, folder: Path) -> Path:
        import nbformat
        from nbformat.v4 import new_code_cell, new_notebook

        params = new_code_cell('value = 1\nwait = True\nout_dir = "."\n')
        params.metadata["tags"] = ["parameters"]
        nb = new_notebook(cells=[params, new_code_cell(GATE_NOTEBOOK_BODY)])
        nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        path = folder / "gate.ipynb"
        nbformat.write(nb, path)
        return path

    def grid(self, folder: Path, points: list[dict[str, Any]], **extra: Any) -> Path:
        path = folder / "grid.yaml"
        path.write_text(json.dumps({"notebook": str(self.gate_notebook(folder)), "points": points, **extra}))
        return path

    def hand_made_sweep(self, out: Path, jobs: dict[str, dict[str, Any]]) -> None:
        """A submitit sweep folder with one unfinished point per job record (as an earlier submission leaves)."""
        meta = out / "_submitit"
        meta.mkdir(parents=True)
        points = [{"index": i, "folder": f, "key": f"k{i}", "varied": {}} for i, f in enumerate(jobs)]
        (meta / "submission.json").write_text(json.dumps({"name": "s", "notebook": "x", "base": {},
                                                          "cluster": "local", "submitted": list(jobs),
                                                          "points": points}))
        for i, (folder, job) in enumerate(jobs.items()):
            job.setdefault("key", f"k{i}")
            (out / folder).mkdir()
        (meta / "jobs.json").write_text(json.dumps(jobs))

    def fake_calls(self) -> list[str]:
        log = self.fake / "calls.log"
        return log.read_text().splitlines() if log.is_file() else []

    def reset_fakes(self, sacct_state: str = "fail") -> None:
        (self.fake / "calls.log").unlink(missing_ok=True)
        (self.fake / "sacct_state").write_text(sacct_state + "\n")

    def mount_tmpfs(self, folder: Path, size: str) -> bool:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode == 0:
            self.mounts.append(folder)
        return done.returncode == 0

    def bind_read_only(self, folder: Path) -> bool:
        if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode != 0:
            return False
        self.mounts.append(folder)
        return subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode == 0

    def unmount(self, folder: Path) -> None:
        if folder in self.mounts:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
            self.mounts.remove(folder)


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time (to tell whether anything was written)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def descendants_of(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    return [p for p in found if alive(p)]


def start_gate_sweep(lab: Lab, folder: Path, out: Path) -> tuple[subprocess.Popen, int]:
    """A local sweep of one gate point, waiting at its gate; returns the sweep and the point's kernel id."""
    grid = lab.grid(folder, [{"value": 1}])
    sweep = lab.popen([PY, "-m", "atkit", "sweep", "-f", grid, "--out", out, "--gpus", "", "--quiet"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait_for(lambda: any(out.glob("*/kernel.pid")) or sweep.poll() is not None, 180):
        raise RuntimeError("the sweep's point did not start within 180 s")
    if sweep.poll() is not None:
        raise RuntimeError(f"the sweep ended before its point started: {sweep.communicate()[1][-300:]}")
    kernel_file = next(out.glob("*/kernel.pid"))
    wait_for(lambda: kernel_file.read_text().strip() != "", 10)
    return sweep, int(kernel_file.read_text())


# ============================================================================ 1. a sweep acts only on what it owns
def _status_rows(lab: Lab, out: Path) -> tuple[Result, dict[str, dict[str, Any]]]:
    """``sweep --status OUT --json``'s rows by folder; ``done.out_is_json`` says whether stdout was JSON alone."""
    return _rows(lab.atkit("sweep", "--status", out, "--json"))


def _rows(done: Result) -> tuple[Result, dict[str, dict[str, Any]]]:
    text = done.out
    try:
        data, pure = json.loads(text), True
    except ValueError:  # something else on stdout: read the JSON from its first '[' line
        start = text.find("\n[")
        try:
            data = json.loads(text[start + 1:]) if start >= 0 else []
        except ValueError:
            data = []
        pure = False
    done.out_is_json = pure  # type: ignore[attr-defined]
    return done, {row["folder"]: row for row in data if isinstance(row, dict) and "folder" in row}


@case(1, 1, "--status counts a local job alive when any process has its PID (PID reuse)")
def pid_reuse_status(lab: Lab) -> Verdict:
    stranger = lab.sleeper()
    out = lab.path("pid-reuse-status") / "sweep"
    lab.hand_made_sweep(out, {"legacy": {"job_id": str(stranger.pid), "cluster": "local"},
                              "other": {"job_id": str(stranger.pid), "cluster": "local",
                                        "process": {"start_time": 1, "cmdline": ["python", "-m", "x"]}}})
    done, rows = _status_rows(lab, out)
    states = {f: (r.get("status"), r.get("job_state")) for f, r in rows.items()}
    ok = (done.rc == 0 and all(s == "interrupted" for s, _ in states.values())
          and all("not this sweep's job" in str(j) or "another process" in str(j) for _, j in states.values()))
    return judge(ok, f"`sweep --status --json` on records naming a live `sleep` (PID {stranger.pid}), without and with "
                     f"another recorded identity: rc {done.rc}, {states}", "silent")


@case(2, 1, "--cancel interrupts an unrelated process that reuses a recorded PID")
def pid_reuse_cancel(lab: Lab) -> Verdict:
    stranger = lab.sleeper()
    out = lab.path("pid-reuse-cancel") / "sweep"
    lab.hand_made_sweep(out, {"legacy": {"job_id": str(stranger.pid), "cluster": "local"},
                              "other": {"job_id": str(stranger.pid), "cluster": "local",
                                        "process": {"start_time": 1, "cmdline": ["python", "-m", "x"]}}})
    done = lab.atkit("sweep", "--cancel", out)
    time.sleep(0.5)
    survived = stranger.poll() is None
    evidence = (f"`sweep --cancel` with two records naming a live `sleep` (PID {stranger.pid}): rc {done.rc}, "
                f"stdout {quote(done.out)}; the sleep {'survived' if survived else 'was KILLED'}")
    return judge(survived and done.out.startswith("cancelled 0 job(s)"), evidence, "silent")


@case(3, 1, "a job id of 0 signals atkit's own process group")
def job_id_zero(lab: Lab) -> Verdict:
    out = lab.path("job-id-0") / "sweep"
    lab.hand_made_sweep(out, {"zero": {"job_id": "0", "cluster": "local"}})
    # a sleep in the same process group as the atkit process (the driver execs into atkit): os.kill(0, ...) reaches it
    driver = ("import os, subprocess, sys\n"
              "s = subprocess.Popen(['sleep', '600'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
              "print(s.pid, flush=True)\n"
              "os.execv(sys.executable, [sys.executable, '-m', 'atkit', *sys.argv[1:]])\n")
    proc = lab.popen([PY, "-c", driver, "sweep", "--cancel", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_text, err = proc.communicate(timeout=120)
    sleep_pid = int(out_text.splitlines()[0])
    time.sleep(0.3)
    survived = alive(sleep_pid)
    if survived:
        os.kill(sleep_pid, signal.SIGKILL)  # started (indirectly) by this case
    status, rows = _status_rows(lab, out)
    row = rows.get("zero", {})
    evidence = (f"`sweep --cancel` in a process group holding a `sleep`: rc {proc.returncode}, stdout "
                f"{quote(out_text.splitlines()[1:] and out_text.splitlines()[1])}, the group's sleep "
                f"{'survived' if survived else 'was SIGNALLED'}; --status: {row.get('status')} "
                f"{quote(row.get('job_state'))}")
    ok = survived and proc.returncode == 0 and row.get("status") == "interrupted" and "'0'" in str(row.get("job_state"))
    return judge(ok, evidence, "silent")


@case(4, 1, "a job id of -1 would reach os.kill (every process of the user)")
def job_id_minus_one(lab: Lab) -> Verdict:
    out = lab.path("job-id-minus-1") / "sweep"
    lab.hand_made_sweep(out, {"minus": {"job_id": "-1", "cluster": "local"}})
    driver = """
        import json, os, signal, sys
        sent = []
        real_kill = os.kill
        def kill(pid, sig):
            if sig == 0 and pid > 0:
                return real_kill(pid, 0)
            sent.append(("kill", pid, int(sig)))
        os.kill = kill
        os.killpg = lambda pid, sig: sent.append(("killpg", pid, int(sig)))
        if hasattr(signal, "pidfd_send_signal"):
            signal.pidfd_send_signal = lambda fd, sig, *a: sent.append(("pidfd", fd, int(sig)))
        from atkit.workbench.cli import main
        rc = main(["sweep", "--cancel", sys.argv[1]])
        rc2 = main(["sweep", "--status", sys.argv[1]])
        print("RECORD", json.dumps({"rc": rc, "status_rc": rc2, "sent": sent}))
    """
    done = lab.python(driver, out)
    record = next((json.loads(line[7:]) for line in done.out.splitlines() if line.startswith("RECORD ")), None)
    if record is None:
        return Verdict("unclear", f"driver failed: rc {done.rc}, {quote(done.err[-300:])}")
    status_line = next((line for line in done.out.splitlines() if "minus" in line), "")
    evidence = (f"`sweep --cancel` and `--status` with os.kill/killpg/pidfd_send_signal replaced by a recorder: "
                f"signals sent {record['sent']}, rc {record['rc']}/{record['status_rc']}, status {quote(status_line)}")
    return judge(record["sent"] == [] and "'-1'" in status_line and "interrupted" in status_line, evidence, "silent")


@case(5, 1, "a SLURM job id such as '--user=someone' is handed to scancel unchecked")
def slurm_option_id(lab: Lab) -> Verdict:
    lab.reset_fakes("RUNNING")
    out = lab.path("slurm-option-id") / "sweep"
    hostile = {"option": "--user=someone", "spaced": "4242 --user=someone", "shell": "4242;touch PWNED",
               "array": "4242_1 -u someone"}
    lab.hand_made_sweep(out, {k: {"job_id": v, "cluster": "slurm"} for k, v in hostile.items()})
    cancel, status = lab.atkit_many([["sweep", "--cancel", out], ["sweep", "--status", out, "--json"]])
    status, rows = _rows(status)
    calls = lab.fake_calls()
    row = rows.get("option", {})
    stale = all(rows.get(k, {}).get("status") == "interrupted" and "not a SLURM job id" in
                str(rows.get(k, {}).get("job_state")) for k in hostile)
    evidence = (f"records with job ids {list(hostile.values())}, fake sacct (RUNNING)/scancel on PATH: `--cancel` rc "
                f"{cancel.rc} {quote(cancel.out, 40)}; --status of '--user=someone': {row.get('status')} "
                f"{quote(row.get('job_state'))} (all four so: {stale}); calls to the fakes: {calls}")
    return judge(calls == [] and stale and cancel.rc == 0, evidence, "silent")


@case(6, 1, "a failed sacct makes the state 'unknown', treated as live (cancelled, resubmitted)")
def sacct_fails(lab: Lab) -> Verdict:
    folder = lab.path("sacct-fails")
    lab.reset_fakes("fail")
    out = folder / "sweep"
    lab.hand_made_sweep(out, {"p": {"job_id": "123", "cluster": "slurm"}})
    status, rows = _status_rows(lab, out)  # a process of its own: is its stdout JSON alone?
    # then --cancel, and a real grid submitted twice: the second time its point's earlier job cannot be looked up
    grid = lab.grid(folder, [{"value": 1, "wait": False}])
    sub_out = folder / "submitted"
    submit = ["sweep", "-f", grid, "--out", sub_out, "--backend", "submitit", "--cluster", "slurm"]
    cancel, first, again = lab.atkit_many([["sweep", "--cancel", out], submit, submit])
    calls = [c for c in lab.fake_calls() if not c.startswith("sbatch")]
    sbatch = [c for c in lab.fake_calls() if c.startswith("sbatch")]
    resubmitted = sbatch[1:]
    # the control: a job sacct answers RUNNING is cancelled, so the fakes are used at all
    lab.reset_fakes("RUNNING")
    control = folder / "control"
    lab.hand_made_sweep(control, {"p": {"job_id": "124", "cluster": "slurm"}})
    lab.atkit("sweep", "--cancel", control)
    control_calls = lab.fake_calls()
    row = rows.get("p", {})
    held_line = next((line for line in (again.out + again.err).splitlines() if "not submitted again" in line), "")
    cancel_line = next((line for line in cancel.err_lines if "not cancelled" in line), "")
    evidence = (f"sacct exits 1: --status {row.get('status')} {quote(row.get('job_state'))}, stdout of --json is JSON "
                f"alone: {status.out_is_json} (first line "
                f"{quote(status.out.splitlines()[0] if status.out else '', 70)}); "
                f"--cancel rc {cancel.rc} {quote(cancel_line)}, scancel calls "
                f"{[c for c in calls if c.startswith('scancel')]}; resubmission (first sbatch rc {first.rc}): "
                f"rc {again.rc}, sbatch calls after the first {resubmitted}, says {quote(held_line, 110)}; "
                "control (sacct RUNNING): "
                f"{[c for c in control_calls if c.startswith('scancel')]}")
    held = (row.get("status") == "unknown" and cancel.rc == 1 and not any(c.startswith("scancel") for c in calls)
            and first.rc == 0 and len(sbatch) == 1 and held_line != ""
            and any(c.startswith("scancel 124") for c in control_calls))
    if not held:
        return Verdict("silent", evidence)
    said_why = "sacct" in str(row.get("job_state")) and "sacct" in cancel_line
    return judge(status.out_is_json and said_why, evidence, "unclear")


@case(7, 1, "a stale record (its PID now another process's) blocks a point from being resubmitted")
def stale_record(lab: Lab) -> Verdict:
    folder = lab.path("stale-record")
    grid = lab.grid(folder, [{"value": 3, "wait": False}])
    out = folder / "sweep"
    lab.reset_fakes("RUNNING")
    first = lab.atkit("sweep", "-f", grid, "--out", out, "--backend", "submitit", "--cluster", "slurm")
    jobs_file = out / "_submitit" / "jobs.json"
    if first.rc != 0 or not jobs_file.is_file():
        return Verdict("unclear", f"first submission failed: rc {first.rc} {quote(first.first)}")
    stranger = lab.sleeper()
    jobs = json.loads(jobs_file.read_text())
    for record in jobs.values():  # the point's record now names a local job whose PID is a stranger's
        record.update(job_id=str(stranger.pid), cluster="local")
        record.pop("process", None)
    jobs_file.write_text(json.dumps(jobs))
    again = lab.atkit("sweep", "-f", grid, "--out", out, "--backend", "submitit", "--cluster", "local", "--wait",
                      timeout=300)
    results = list(out.glob("*/result.json"))
    survived = stranger.poll() is None
    evidence = (f"record rewritten to a live `sleep`'s PID, then `sweep --backend submitit --cluster local --wait`: "
                f"rc {again.rc}, {quote(again.out.strip().splitlines()[-1] if again.out.strip() else again.first)}; "
                f"point result written: {bool(results)}; sleep {'survived' if survived else 'was KILLED'}")
    return judge(again.rc == 0 and bool(results) and survived, evidence, "silent")


@case(8, 1, "SIGTERM of a local sweep leaves its papermill child and kernel running (orphans)")
def sweep_sigterm_orphans(lab: Lab) -> Verdict:
    folder = lab.path("sweep-sigterm")
    out = folder / "out"
    sweep, kernel = start_gate_sweep(lab, folder, out)
    below = descendants_of(sweep.pid)
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=120)
    gone = wait_for(lambda: not any(alive(p) for p in below), 30)
    left = [p for p in below if alive(p)]
    summary = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").is_file() else {}
    lab._sigterm_sweep = (sweep.returncode, err, summary)  # read by case 9
    evidence = (f"SIGTERM to `sweep -f grid --gpus ''` while its point waits: rc {sweep.returncode}; "
                f"{len(below)} processes below it (papermill, kernel {kernel}), "
                f"{'all gone' if gone else f'still alive: {left}'}")
    return judge(gone and not alive(kernel), evidence, "silent")


@case(9, 1, "after SIGTERM, sweep.json says 'pending'")
def sweep_sigterm_state(lab: Lab) -> Verdict:
    if not hasattr(lab, "_sigterm_sweep"):
        sweep_sigterm_orphans(lab)
    rc, err, summary = lab._sigterm_sweep
    statuses = [p.get("status") for p in summary.get("points", [])]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    evidence = (f"(the sweep of case 8) rc {rc}, sweep.json points {statuses}, stderr {len(lines)} line(s): "
                f"{quote(lines[0] if lines else '')}")
    return judge(rc == 143 and statuses == ["interrupted"] and len(lines) == 1 and "Traceback" not in err,
                 evidence, "silent")


@case(10, 1, "two sweeps into one --out run the same point at once")
def two_sweeps_one_out(lab: Lab) -> Verdict:
    folder = lab.path("two-sweeps")
    out = folder / "out"
    sweep, kernel = start_gate_sweep(lab, folder, out)
    before = sorted(p.name for p in out.iterdir())
    second = lab.atkit("sweep", "-f", folder / "grid.yaml", "--out", out, "--gpus", "", "--quiet")
    after = sorted(p.name for p in out.iterdir())
    point = next(out.glob("*/kernel.pid")).parent
    (point / "go").write_text("")  # let the first sweep finish
    sweep.communicate(timeout=180)
    evidence = (f"a second `sweep` into the --out of a running one: rc {second.rc}, {quote(second.first)}; "
                f"folder unchanged by it: {before == after}; first sweep rc {sweep.returncode}")
    return judge(second.rc == 2 and second.one_line and "in use by PID" in second.first and before == after
                 and sweep.returncode == 0, evidence, "silent")


@case(11, 1, "a grid's name: ../../x writes the sweep outside outputs/sweeps")
def grid_name_escapes(lab: Lab) -> Verdict:
    folder = lab.path("grid-name")
    grid = lab.grid(folder, [{"value": 1, "wait": False}], name="../../escaped")
    dry, real = lab.atkit_many([["sweep", "-f", grid, "--dry-run"], ["sweep", "-f", grid, "--gpus", "", "--quiet"]])
    escaped = [p for p in (lab.tmp, lab.tmp / "outputs", ROOT) if (p / "escaped").exists()]
    evidence = (f"`sweep -f grid` with name '../../escaped': --dry-run rc {dry.rc} {quote(dry.first)}; a real run rc "
                f"{real.rc}; an 'escaped' folder appeared in {escaped or 'none of the candidate places'}")
    return judge(dry.rc == 2 and real.rc == 2 and dry.one_line and "plain folder name" in dry.first and not escaped,
                 evidence, "silent")


@case(12, 1, "the submitit backend's default --out depends on the working directory")
def default_out_cwd(lab: Lab) -> Verdict:
    folder = lab.path("default-out")
    grid = lab.grid(folder, [{"value": 1}], name="mine")
    places = {}
    calls: list[list[Any]] = []
    for cwd in (ROOT, folder):
        calls.append(["@chdir", cwd])
        calls += [["sweep", "-f", grid, "--dry-run", "--backend", backend] for backend in ("local", "submitit")]
    labels = [f"{b}@{w}" for w in ("root", "elsewhere") for b in ("local", "submitit")]
    for label, done in zip(labels, lab.atkit_many(calls)):
        first = done.out.splitlines()[0] if done.out.strip() else done.first
        places[label] = first.split()[1].rsplit("/", 1)[0] if len(first.split()) > 1 else first
    want = str(lab.tmp / "outputs" / "sweeps" / "mine")
    same = set(places.values()) == {want}
    evidence = (f"`sweep --dry-run` from the checkout and from another folder, both backends: "
                f"{sorted(set(places.values()))}; one resolver (atkit.core.paths.resolve_output_path) reads --out for "
                "both backends against the project root")
    return Verdict("fixed-by-design" if same else "silent", evidence)


@case(13, 1, "--timeout -5 and an unknown --kernel are accepted and fail per point")
def options_before_points(lab: Lab) -> Verdict:
    folder = lab.path("options")
    grid = lab.grid(folder, [{"value": 1}])
    seen, ok = [], True
    extras = (["--timeout", "-5"], ["--timeout", "0"], ["--kernel", "pyhton3"])
    outs = [folder / f"out{i}" for i in range(len(extras))]
    results = lab.atkit_many([["sweep", "-f", grid, "--out", out, "--gpus", "", "--quiet", *extra]
                              for out, extra in zip(outs, extras)])
    for out, extra, done in zip(outs, extras, results):
        ok &= done.rc == 2 and done.one_line and not out.exists()
        seen.append(f"{' '.join(extra)}: rc {done.rc} {quote(done.first, 110)}, --out created {out.exists()}")
    return judge(ok, "; ".join(seen), "unclear")


@case(14, 1, "[held] Ctrl-C of a sweep: one line, points recorded, nothing left running")
def sweep_ctrl_c(lab: Lab) -> Verdict:
    folder = lab.path("sweep-ctrl-c")
    out = folder / "out"
    sweep, kernel = start_gate_sweep(lab, folder, out)
    below = descendants_of(sweep.pid)
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=120)
    gone = wait_for(lambda: not any(alive(p) for p in below), 30)
    summary = json.loads((out / "sweep.json").read_text())
    statuses = [p.get("status") for p in summary.get("points", [])]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    evidence = (f"SIGINT to a running sweep: rc {sweep.returncode}, stderr {quote(lines[0] if lines else '')} "
                f"({len(lines)} line(s)); sweep.json {statuses}; point processes gone: {gone}")
    return judge(sweep.returncode == 130 and len(lines) == 1 and statuses == ["interrupted"] and gone, evidence,
                 "unclear")


# ============================================================== 2. a number is labelled only with what produced it
def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _eval(lab: Lab, run: Path, out: Path, *extra: Any) -> tuple[Result, dict[str, Any]]:
    done = lab.atkit("eval", run, "--quiet", "--out", out, *extra)
    data = json.loads(out.read_text()) if out.is_file() else {}
    return done, data


@case(15, 2, "eval RUN --set threat.eps=... evaluates at the run's eps while provenance records the --set")
def eval_set_eps(lab: Lab) -> Verdict:
    run = lab.run_copy("eval-set-eps")
    done, base = lab.atkit_many([
        ["eval", run, "--quiet", "--out", run.parent / "e.json", "--attacks", "clean,pgd5",
         "--set", "threat.eps=0.0078431372549"],
        ["eval", run, "--quiet", "--out", run.parent / "base.json", "--attacks", "clean,pgd5"]])
    data = _read(run.parent / "e.json")
    base_data = _read(run.parent / "base.json")
    eps = data.get("threat", {}).get("eps")
    attack_eps = data.get("provenance", {}).get("attacks", {}).get("pgd5", {}).get("eps")
    differs = data.get("per_sample", {}).get("pgd5") != base_data.get("per_sample", {}).get("pgd5") or \
        data.get("accuracy", {}).get("pgd5") != base_data.get("accuracy", {}).get("pgd5")
    evidence = (f"`eval RUN --set threat.eps=2/255 --attacks clean,pgd5`: rc {done.rc}, threat.eps {eps}, pgd5's "
                f"recorded eps {attack_eps}; pgd5 {data.get('accuracy', {}).get('pgd5')} % vs "
                f"{base_data.get('accuracy', {}).get('pgd5')} % at the run's 8/255")
    ok = done.rc == 0 and base.rc == 0 and eps is not None and abs(eps - 2 / 255) < 1e-9 and attack_eps is not None \
        and abs(attack_eps - 2 / 255) < 1e-9 and differs
    return judge(ok, evidence, "silent")


@case(16, 2, "a --set key a command cannot apply is ignored (eval model_params.*, train --resume, notebook, sweep)")
def set_keys_refused(lab: Lab) -> Verdict:
    run = lab.run_copy("set-refused")
    calls = {
        "eval --set model_params.width=8": ["eval", run, "--quiet", "--attacks", "clean",
                                            "--set", "model_params.width=8"],
        "eval --set threat.eps=8": ["eval", run, "--quiet", "--attacks", "clean", "--set", "threat.eps=8"],
        "train --resume --set epochs=5": ["train", "--resume", run, "--set", "epochs=5", "--quiet"],
        "train --resume --device cpu": ["train", "--resume", run, "--device", "cpu", "--quiet"],
        "notebook train --set epochz=2": ["notebook", "train", "--params", ROOT / "parameters/smoke/train.yaml",
                                          "--out", run.parent / "nb", "--set", "epochz=2"],
        "sweep --set valeu=2 --dry-run": ["sweep", "-f", lab.grid(run.parent, [{"value": 1}]), "--dry-run",
                                          "--set", "valeu=2"],
    }
    tries = dict(zip(calls, lab.atkit_many(list(calls.values()))))
    ok = all(r.rc == 2 and r.one_line for r in tries.values()) and not (run / "eval-model.json").exists()
    evidence = "; ".join(f"{k}: rc {r.rc} {quote(r.first, 90)}" for k, r in tries.items())
    return judge(ok, evidence, "silent")


def _two_evals(lab: Lab, name: str, extra_b: Sequence[str]) -> tuple[Result, Result, Result]:
    run = lab.run_copy(name)
    a, b, cmp = lab.atkit_many([["eval", run, "--quiet", "--out", run.parent / "a.json", "--attacks", "clean,pgd5"],
                                ["eval", run, "--quiet", "--out", run.parent / "b.json", "--attacks", "clean,pgd5",
                                 *extra_b],
                                ["compare", run.parent / "a.json", run.parent / "b.json"]])
    return a, b, cmp


def _compare_verdict(a: Result, b: Result, cmp: Result, what: str, label: str) -> Verdict:
    evidence = (f"two real evaluations of one run ({label}; eval rc {a.rc}/{b.rc}), `compare a.json b.json`: "
                f"rc {cmp.rc} {quote(cmp.first, 200)}")
    if a.rc != 0 or b.rc != 0:
        return Verdict("unclear", evidence)
    return judge(cmp.rc == 2 and cmp.one_line and "evaluated differently" in cmp.first and what in cmp.first,
                 evidence, "silent")


@case(17, 2, "compare pairs evaluations made at different eps")
def compare_eps(lab: Lab) -> Verdict:
    return _compare_verdict(*_two_evals(lab, "compare-eps", ["--set", "threat.eps=0.0156862745098"]), "eps",
                            "8/255 vs 4/255")


@case(18, 2, "compare pairs evaluations made under different norms")
def compare_norm(lab: Lab) -> Verdict:
    return _compare_verdict(*_two_evals(lab, "compare-norm", ["--set", "threat.norm=l2", "--set", "threat.eps=0.5",
                                                              "--set", "threat.step_size=0.1"]), "norm",
                            "linf 8/255 vs l2 0.5")


@case(19, 2, "compare pairs evaluations made under different dummy-class protocols")
def compare_protocol(lab: Lab) -> Verdict:
    folder = lab.path("compare-protocol")
    config = lab.config(folder, method="pgd_at+ducat", name="ducat")
    run = folder / "runs" / "ducat"
    train, a = lab.atkit_many([["train", config, "--out-dir", folder / "runs", "--quiet"],
                               ["eval", run, "--quiet", "--out", folder / "a.json", "--attacks", "clean,pgd5"]])
    data = _read(folder / "a.json")
    protocols = list(data.get("protocols", {}))
    if train.rc != 0 or a.rc != 0 or len(protocols) < 2:
        return Verdict("unclear", f"a DUCAT run and its evaluation: train rc {train.rc}, eval rc {a.rc}, "
                                  f"protocols {protocols} {quote(train.first or a.first)}")
    b = dict(data)  # the same evaluation with one protocol only, as an evaluation made under that protocol alone
    b["protocols"] = {protocols[0]: data["protocols"][protocols[0]]}
    (folder / "b.json").write_text(json.dumps(b))
    cmp = lab.atkit("compare", folder / "a.json", folder / "b.json")
    return _compare_verdict(a, a, cmp, "protocol", f"protocols {protocols} vs [{protocols[0]}]")


@case(20, 2, "compare pairs evaluations made in different precisions")
def compare_precision(lab: Lab) -> Verdict:
    return _compare_verdict(*_two_evals(lab, "compare-precision", ["--precision", "bf16"]), "precision",
                            "fp32 vs bf16")


@case(21, 2, "a model with NaN weights (non-finite outputs) gets ordinary-looking accuracies")
def nan_weights(lab: Lab) -> Verdict:
    run = lab.run_copy("nan-weights")
    code = """
        import sys, torch
        for name in ("best.pt", "last.pt"):
            path = f"{sys.argv[1]}/checkpoints/{name}"
            state = torch.load(path, weights_only=False)
            for key in ("model", "ema"):
                if isinstance(state.get(key), dict):
                    for k, v in state[key].items():
                        if torch.is_tensor(v) and v.is_floating_point():
                            v.fill_(float("nan"))
            torch.save(state, path)
    """
    poisoned = lab.python(code, run)
    done, data = _eval(lab, run, run.parent / "e.json", "--attacks", "clean,pgd5")
    recorded = [w for w in data.get("warnings", []) if "finite" in str(w)]
    evidence = (f"all float weights set to NaN (rc {poisoned.rc}), `eval RUN`: rc {done.rc} (3 = checks failed), "
                f"stderr {quote(next((line for line in done.err_lines if 'finite' in line), done.first), 160)}; "
                f"recorded warnings {len(recorded)}; accuracy {data.get('accuracy')}")
    return judge(done.rc == 3 and bool(recorded), evidence, "silent")


@case(22, 2, "the checkpoint hash in provenance can name a file written after the weights were loaded")
def hash_of_loaded_bytes(lab: Lab) -> Verdict:
    run = lab.run_copy("hash")
    out = run.parent / "e.json"
    code = """
        import hashlib, json, sys
        from pathlib import Path
        import atkit.workbench.cli_eval as cli_eval
        from atkit.workbench.cli import main
        run, out = Path(sys.argv[1]), sys.argv[2]
        ckpt = run / "checkpoints" / "best.pt"
        loaded = hashlib.sha256(ckpt.read_bytes()).hexdigest()
        real = cli_eval.load_dataset
        def replaced_meanwhile(*a, **k):  # another process rewrites the file while atkit loads the data
            ckpt.write_bytes(ckpt.read_bytes() + b"another file now")
            return real(*a, **k)
        cli_eval.load_dataset = replaced_meanwhile
        rc = main(["eval", str(run), "--attacks", "clean", "--quiet", "--out", out])
        recorded = json.loads(Path(out).read_text())["provenance"]["checkpoint"]["sha256"]
        print("RECORD", json.dumps({"rc": rc, "loaded": recorded == loaded,
                                    "file_now": recorded == hashlib.sha256(ckpt.read_bytes()).hexdigest()}))
    """
    done = lab.python(code, run, out)
    record = next((json.loads(line[7:]) for line in done.out.splitlines() if line.startswith("RECORD ")), None)
    if record is None:
        return Verdict("unclear", f"driver failed: rc {done.rc} {quote(done.err[-200:])}")
    evidence = (f"best.pt rewritten by 'another process' while the dataset loads: eval rc {record['rc']}, recorded "
                f"sha256 = the bytes loaded: {record['loaded']}, = the file now: {record['file_now']}; the checkpoint "
                "is read once, hashed and loaded from the same bytes (atkit.core.checkpoint_files)")
    return Verdict("fixed-by-design" if record["loaded"] and not record["file_now"] else "silent", evidence)


@case(23, 2, "eval --n 100000 on 64 images evaluates 64 without saying it cut the request")
def eval_n_beyond(lab: Lab) -> Verdict:
    run = lab.run_copy("eval-n")
    done, data = _eval(lab, run, run.parent / "e.json", "--attacks", "clean", "--n", "100000")
    line = next((line for line in done.err_lines if "--n" in line), "")
    evidence = f"rc {done.rc}, stderr {quote(line)}; recorded n {data.get('n')}, n_requested {data.get('n_requested')}"
    return judge(done.rc == 0 and "64" in line and data.get("n_requested") == 100000 and data.get("n") == 64,
                 evidence, "silent")


@case(24, 2, "[held] --set parsing: a malformed --set is one line naming it")
def set_parsing(lab: Lab) -> Verdict:
    folder = lab.path("set-parsing")
    config = lab.config(folder)
    seen, ok = [], True
    values = ("epochs", "epochs=two", "data.n_train=[1", "=3", "epochz=3")
    results = lab.atkit_many([["train", config, "--out-dir", folder / "runs", "--quiet", "--set", v] for v in values])
    for value, done in zip(values, results):
        ok &= done.rc == 2 and done.one_line
        seen.append(f"--set {value}: rc {done.rc} {quote(done.first, 80)}")
    return judge(ok and not (folder / "runs").exists(), "; ".join(seen), "unclear")


@case(25, 2, "[held] card's protocol checks: a card only from standard AutoAttack on the full test set")
def card_protocol(lab: Lab) -> Verdict:
    run = lab.run_copy("card-protocol")
    _, done = lab.atkit_many([["eval", run, "--quiet", "--out", run.parent / "e.json", "--attacks", "clean,pgd5"],
                              ["card", run.parent / "e.json", "--out", run.parent / "card.json"]])
    evidence = f"`card` of a clean+PGD evaluation: rc {done.rc} {quote(done.first, 200)}"
    return judge(done.rc == 2 and done.one_line and not (run.parent / "card.json").exists(), evidence, "silent")


# =========================================================================== 3. nothing is lost after the work
@case(26, 3, "eval of a read-only run with --out elsewhere dies when AutoAttack writes its state into the run")
def eval_read_only_run(lab: Lab) -> Verdict:
    run = lab.run_copy("read-only-run")
    before = tree(run)
    how = "read-only bind mount" if lab.bind_read_only(run) else "chmod a-w"
    if how == "chmod a-w":
        for p in [run, *run.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    out = run.parent / "elsewhere" / "e.json"
    try:
        done, inside = lab.atkit_many([
            ["eval", run, "--quiet", "--out", out, "--attacks", "clean,apgd", "--batch-size", "64"],
            ["eval", run, "--quiet", "--attacks", "clean,apgd", "--batch-size", "64"]])  # into the run: refused first
        data = _read(out)
    finally:
        lab.unmount(run)
    unchanged = tree(run) == before
    state = list((run.parent / "elsewhere").glob("*aa_state*"))
    evidence = (f"{how} on the run, `eval RUN --attacks clean,apgd --out elsewhere/e.json`: rc {done.rc} "
                f"{quote(done.first) if done.rc else ''}; result attacks {list(data.get('accuracy', {}))}; run "
                f"unchanged {unchanged}; AutoAttack state beside --out: {[p.name for p in state]}; without --out "
                f"(into the "
                f"read-only run): rc {inside.rc} in {inside.seconds:.1f} s {quote(inside.first, 160)}")
    if done.rc != 0:
        return Verdict("lost" if "Traceback" in done.err else "unclear", evidence)
    if inside.rc != 2 or not inside.one_line:
        return Verdict("lost" if "Traceback" in inside.err else "unclear", evidence)
    return judge(unchanged and "apgd" in data.get("accuracy", {}), evidence, "lost")


@case(27, 3, "card E --out E replaces the evaluation with the card")
def card_over_input(lab: Lab) -> Verdict:
    run = lab.run_copy("card-over-input")
    source = run.parent / "e.json"
    copy = run.parent / "e-before.json"
    _, _, done = lab.atkit_many([["eval", run, "--quiet", "--out", source, "--attacks", "clean"],
                                 ["eval", run, "--quiet", "--out", copy, "--attacks", "clean"],
                                 ["card", source, "--out", source]])
    before = copy.read_bytes()
    same = json.loads(source.read_bytes())["per_sample"] == json.loads(before)["per_sample"] \
        if "per_sample" in _read(source) else False
    evidence = f"`card e.json --out e.json`: rc {done.rc} {quote(done.first, 200)}; e.json still the evaluation {same}"
    if not same:
        return Verdict("lost", evidence)
    return judge(done.rc == 2 and done.one_line, evidence, "unclear")


@case(28, 3, "card --out an existing folder or an unwritable place gives a traceback")
def card_bad_out(lab: Lab) -> Verdict:
    run = lab.run_copy("card-bad-out")
    source = run.parent / "e.json"
    seen, ok = [], True
    outs = (run.parent, source / "card.json", Path("/proc/card.json"))
    results = lab.atkit_many([["eval", run, "--quiet", "--out", source, "--attacks", "clean"],
                              *[["card", source, "--out", out] for out in outs]])[1:]
    for out, done in zip(outs, results):
        ok &= done.rc == 2 and done.one_line
        seen.append(f"--out {out if out.parts[1] == 'proc' else out.relative_to(lab.tmp)}: rc {done.rc} "
                    f"{quote(done.first, 100)}")
    return judge(ok, "; ".join(seen), "unclear")


@case(29, 3, "a second eval RUN with other attacks replaces the first's eval-model.json (AutoAttack's too)")
def second_eval(lab: Lab) -> Verdict:
    run = lab.run_copy("second-eval")
    first = lab.atkit("eval", run, "--quiet", "--attacks", "clean,apgd", "--batch-size", "64")
    first_data = json.loads((run / "eval-model.json").read_text()) if (run / "eval-model.json").is_file() else {}
    second, third = lab.atkit_many([["eval", run, "--quiet", "--attacks", "pgd5"],
                                    ["eval", run, "--quiet", "--attacks", "clean",
                                     "--set", "threat.eps=0.0156862745098"]])
    merged = _read(run / "eval-model.json")  # the third evaluation, of another setup, must not touch it
    kept = (run / "eval-model-2.json").is_file()
    ps = merged.get("per_sample", {})
    same_apgd = ps.get("apgd") == first_data.get("per_sample", {}).get("apgd") and "apgd" in ps
    evidence = (f"eval clean,apgd (rc {first.rc}), then pgd5 (rc {second.rc}): eval-model.json holds "
                f"{list(ps)} (apgd's per-image results kept: {same_apgd}); then another eps (rc {third.rc}) "
                f"{quote(next((line for line in third.err_lines if 'goes to' in line), ''), 120)}: "
                f"eval-model-2.json {kept} (eps {_read(run / 'eval-model-2.json').get('threat', {}).get('eps')}), "
                "eval-model.json "
                f"eps {merged.get('threat', {}).get('eps')}")
    if not same_apgd or abs(float(merged.get("threat", {}).get("eps", 0)) - 8 / 255) > 1e-9:
        return Verdict("lost", evidence)
    return judge(first.rc == second.rc == third.rc == 0 and kept and "pgd5" in ps, evidence, "silent")


FILL_BEFORE_WRITE = r"""
import contextlib, errno, os, sys
from pathlib import Path
import atkit.core.utils as utils
from atkit.workbench.cli import main
disk, name, real = Path(sys.argv[1]), sys.argv[2], utils.atomic_write_bytes
def full_now(path, data):
    if Path(path).name == name:
        if os.path.ismount(disk):  # another writer takes the last bytes of the disk just now
            with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 1024)
        else:  # no tmpfs on this machine: the write fails as it would on a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(path, data)
utils.atomic_write_bytes = full_now
sys.exit(main(sys.argv[3:]))
"""


@case(30, 3, "a full disk at the final eval.json write under --quiet loses the numbers")
def full_disk(lab: Lab) -> Verdict:
    folder = lab.path("full-disk")
    disk = folder / "disk"
    disk.mkdir()
    real = lab.mount_tmpfs(disk, "2m")
    how = ("a 2 MiB tmpfs holding the run, filled by another writer when eval.json is written" if real else
           "no tmpfs here: ENOSPC raised in Python at the eval.json write")
    train = lab.python(FILL_BEFORE_WRITE, disk, "eval.json", "train", lab.config(folder, name="full"),
                       "--out-dir", disk / "runs", "--quiet")
    kept = sorted((lab.tmp / "tmp" / "atkit-unsaved").glob("*-eval.json"))
    kept_train = _read(kept[-1]) if kept else {}
    line = train.first
    status = _read(disk / "runs" / "full" / "metrics.json").get("status")
    # the remedy the line gives: free space, then --resume the run
    (disk / "filler").unlink(missing_ok=True)
    resumed = lab.atkit("train", "--resume", disk / "runs" / "full", "--quiet")
    written = bool(_read(disk / "runs" / "full" / "eval.json").get("final", {}).get("accuracy"))
    # atkit eval's own JSON on the same full disk
    run = lab.run_copy("full-disk-eval")
    ev = lab.python(FILL_BEFORE_WRITE, disk, "e.json", "eval", run, "--quiet", "--attacks", "clean,pgd5",
                    "--out", disk / "e.json")
    kept_eval = sorted((lab.tmp / "tmp" / "atkit-unsaved").glob("*-e.json"))
    lab.unmount(disk)
    evidence = (f"{how}: `train --quiet` rc {train.rc}, {len(train.err_lines)} line(s) {quote(line, 320)}; kept copy "
                f"holds the final accuracies {bool(kept_train.get('final', {}).get('accuracy'))}, metrics.json status "
                f"{status!r}; the remedy (space freed, --resume) rc {resumed.rc}, eval.json written {written}; "
                f"`eval --quiet --out "
                f"DISK/e.json` rc {ev.rc} {quote(ev.first, 100)}, numbers on stdout {'accuracy' in ev.out}, kept "
                f"{[p.name for p in kept_eval]}")
    if not kept_train.get("final", {}).get("accuracy") or not kept_eval:
        return Verdict("lost", evidence)
    ok = (train.rc == 1 and train.one_line and str(kept[-1]) in line and ev.rc != 0 and "Traceback" not in ev.err
          and str(kept_eval[-1]) in ev.err and resumed.rc == 0 and written)
    return judge(ok, evidence, "unclear")


@case(31, 3, "[held] the run lock: a run in progress is never resumed or written by another process")
def run_lock(lab: Lab) -> Verdict:
    folder = lab.path("run-lock")
    config = lab.config(folder, name="locked")
    script = folder / "stopper.py"
    script.write_text(STOPPER)
    proc = lab.popen([PY, script, "train", config, "--out-dir", folder / "runs", "--quiet"], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
    try:
        if proc.stdout.readline().strip() != "STOPPED":
            return Verdict("unclear", f"the held run did not start: {quote(proc.communicate()[1][-300:])}")
        resume, second = lab.atkit_many([["train", "--resume", folder / "runs" / "locked", "--quiet"],
                                         ["train", config, "--out-dir", folder / "runs", "--quiet"]])
    finally:
        lab.end(proc)
    second_dir = json.loads(second.out.strip().splitlines()[-1]).get("run_dir") if second.rc == 0 else None
    evidence = (f"while a training holds its run: `--resume` it rc {resume.rc} {quote(resume.first, 120)}; the same "
                f"config again rc {second.rc}, into {Path(second_dir).name if second_dir else None}")
    return judge(resume.rc == 2 and resume.one_line and str(proc.pid) in resume.first and second_dir is not None
                 and Path(second_dir).name != "locked", evidence, "unclear")


@case(32, 3, "[held] the notebook folder marker: another notebook's out folder is refused")
def notebook_marker(lab: Lab) -> Verdict:
    folder = lab.path("notebook-marker")
    out = folder / "nbout"
    first = lab.atkit("notebook", "results", "--params", ROOT / "parameters/smoke/results.yaml", "--out", out,
                      "--set", f"outputs_dir={folder / 'empty'}", timeout=400)
    before = tree(out) if out.is_dir() else {}
    second = lab.atkit("notebook", "mse_perception", "--params", ROOT / "parameters/smoke/mse_perception.yaml",
                       "--out", out, "--set", f"runs_dir={folder / 'runs'}")
    evidence = (f"`notebook results --out F` (rc {first.rc}), then `notebook mse_perception --out F`: rc "
                f"{second.rc} {quote(second.first, 200)}; F unchanged {tree(out) == before if out.is_dir() else None}")
    if first.rc != 0:
        return Verdict("unclear", evidence + f"; first notebook failed {quote(first.err[-200:])}")
    return judge(second.rc == 2 and second.one_line and tree(out) == before, evidence, "lost")


@case(33, 3, "[held] unicode and spaces in every path (config, run folder, --out, compare, printed remedies)")
def awkward_paths(lab: Lab) -> Verdict:
    folder = lab.path("pfad mit ü und leer zeichen")
    (folder / "cönfig dir").mkdir()
    config = lab.config(folder / "cönfig dir", name="rün ü")
    runs = folder / "rüns/ä b"
    run = runs / "rün ü"
    # a training stopped by Ctrl-C: its one line says how to continue; that command, pasted into a shell
    script = folder / "stopper.py"
    script.write_text(STOPPER)
    proc = lab.popen([PY, script, "train", config, "--out-dir", runs, "--quiet"], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
    try:
        if proc.stdout.readline().strip() != "STOPPED":
            return Verdict("unclear", f"the training did not start: {quote(proc.communicate()[1][-300:])}")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        lab.end(proc)
    printed = err.split("continue it with: ", 1)[1].strip() if "continue it with: " in err else ""
    pasted = lab.run(["sh", "-c", printed.replace("python -m atkit", f"{shlex.quote(PY)} -m atkit", 1)]) \
        if printed.startswith("python -m atkit") else None
    result = folder / "é v" / "eins ü.json"
    resume, e1, cmp = lab.atkit_many([["train", "--resume", run, "--quiet"],
                                      ["eval", run, "--quiet", "--attacks", "clean,pgd5", "--out", result],
                                      ["compare", result, result]])
    followed = pasted is not None and pasted.rc == 0
    evidence = (f"config, run folder and --out with spaces and ü/é/ä: Ctrl-C of the training rc {proc.returncode}, "
                f"its remedy {quote(printed, 200)} pasted into sh: rc {pasted.rc if pasted else None} "
                f"{quote(pasted.err_lines[-1] if pasted and pasted.err_lines else '', 150)}"
                f"{'' if followed else ' (its path is not shell-quoted: atkit/workbench/cli.py)'}; "
                f"then --resume (argv) rc {resume.rc}, eval rc {e1.rc}, compare rc {cmp.rc}")
    works = resume.rc in (0, 2) and e1.rc == 0 and cmp.rc == 0 and "Traceback" not in resume.err + e1.err + cmp.err
    return judge(proc.returncode == 130 and followed and works, evidence, "unclear")


# ============================================================ 4. signals and bad files: true states, one line
def _stopped_training(lab: Lab, name: str, sig: int) -> tuple[Result, Path, Result]:
    folder = lab.path(name)
    config = lab.config(folder, name="run")
    script = folder / "stopper.py"
    script.write_text(STOPPER)
    proc = lab.popen([PY, script, "train", config, "--out-dir", folder / "runs", "--quiet"], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
    began = time.time()
    try:
        line = proc.stdout.readline().strip()
        if line != "STOPPED":
            raise RuntimeError(f"training did not reach its second step: {proc.communicate()[1][-300:]}")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        lab.end(proc)
    stopped = Result(f"stopper.py train ... <- {signal.Signals(sig).name}", proc.returncode, "", err,
                     time.time() - began)
    run = folder / "runs" / "run"
    stopped.recorded = _read(run / "metrics.json").get("status")  # type: ignore[attr-defined]
    resume = lab.atkit("train", "--resume", run, "--quiet")
    return stopped, run, resume


@case(34, 4, "SIGTERM during training leaves metrics.json at 'running' for good")
def train_sigterm(lab: Lab) -> Verdict:
    stopped, run, resume = _stopped_training(lab, "train-sigterm", signal.SIGTERM)
    after = _read(run / "metrics.json").get("status")
    evidence = (f"SIGTERM at the second optimiser step: rc {stopped.rc}, metrics.json status {stopped.recorded!r}, "
                f"{quote(stopped.first, 160)} ({len(stopped.err_lines)} line(s)); then `--resume`: rc {resume.rc}, "
                f"status {after}")
    return judge(stopped.rc == 143 and stopped.one_line and stopped.recorded == "interrupted" and resume.rc == 0
                 and after == "finished", evidence, "silent")


@case(35, 4, "Ctrl-C of atkit train prints a long traceback")
def train_ctrl_c(lab: Lab) -> Verdict:
    stopped, run, resume = _stopped_training(lab, "train-ctrl-c", signal.SIGINT)
    glitch = " (the cause reads '()': an empty KeyboardInterrupt formatted, atkit/workbench/cli.py)" \
        if "interrupted ()" in stopped.first else ""
    evidence = (f"SIGINT at the second optimiser step: rc {stopped.rc}, metrics.json status {stopped.recorded!r}, "
                f"{len(stopped.err_lines)} line(s): {quote(stopped.first, 160)}{glitch}; `--resume` rc {resume.rc}")
    return judge(stopped.rc == 130 and stopped.one_line and "--resume" in stopped.err and resume.rc == 0
                 and stopped.recorded == "interrupted", evidence, "unclear")


def _bomb(lab: Lab, name: str, text: str, args: Callable[[Path, Path], list[Any]]) -> Verdict:
    folder = lab.path(name)
    path = folder / "bomb.yaml"
    path.write_text(text)
    done = lab.atkit(*args(path, folder), timeout=120)
    evidence = (f"{len(path.read_bytes())}-byte file: rc {done.rc} in {done.seconds:.1f} s, "
                f"{quote(done.first, 160)}")
    if done.rc is None:
        return Verdict("unclear", evidence + " (hung: killed after 120 s)")
    return judge(done.rc == 2 and done.one_line and "100,000" in done.first and done.seconds < 60, evidence, "unclear")


@case(36, 4, "a YAML alias bomb in a run config hangs atkit train")
def bomb_config(lab: Lab) -> Verdict:
    return _bomb(lab, "bomb-config", f"method: pgd_at\nepochs: {ALIAS_BOMB}\n",
                 lambda p, f: ["train", p, "--out-dir", f / "runs", "--quiet"])


@case(37, 4, "a YAML alias bomb in a grid hangs sweep --dry-run")
def bomb_grid(lab: Lab) -> Verdict:
    return _bomb(lab, "bomb-grid", f"notebook: ablation\ngrid: {{seeds: {ALIAS_BOMB}}}\n",
                 lambda p, f: ["sweep", "-f", p, "--dry-run", "--out", f / "s"])


@case(38, 4, "--resume with a torn last.pt suggests best.pt, which --resume cannot take")
def torn_last(lab: Lab) -> Verdict:
    run = lab.run_copy("torn-last")
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    done = lab.atkit("train", "--resume", run, "--quiet")
    # follow the remedy as printed: its shell commands, in order
    message = done.err_lines[0] if done.err_lines else ""
    words = shlex.split(message.split("move it aside (", 1)[1]) if "move it aside (" in message else []
    moved = words[1:3] if words[:1] == ["mv"] and len(words) >= 3 else None  # mv SRC DST) and run --resume RUN ...
    resume_named = words[words.index("--resume") + 1] if "--resume" in words[:-1] else None
    followed = None
    if moved:
        shutil.move(moved[0], moved[1].rstrip(")"))
        followed = lab.atkit("train", "--resume", run, "--quiet")
    status = json.loads((run / "metrics.json").read_text()).get("status")
    evidence = (f"last.pt cut to 1000 bytes, `train --resume RUN`: rc {done.rc} {quote(done.first, 220)}; the remedy "
                f"followed (mv, then --resume): rc {followed.rc if followed else None}, status {status}")
    ok = done.rc == 2 and done.one_line and followed is not None and followed.rc == 0 and status == "finished" \
        and resume_named is not None and Path(resume_named) == run
    return judge(ok, evidence, "unclear")


@case(39, 4, "a garbage --checkpoint is reported only after the dataset loads (or fails to download)")
def garbage_checkpoint(lab: Lab) -> Verdict:
    folder = lab.path("garbage-checkpoint")
    garbage = folder / "weights.pt"
    garbage.write_bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>")
    done = lab.atkit("eval", "--checkpoint", garbage, "--model", "small_cnn", "--dataset", "cifar10",
                     "--set", f"data.root={folder / 'no-data-here'}", "--quiet")
    evidence = (f"an HTML page saved as weights.pt, CIFAR-10 absent (and no network): rc {done.rc} in "
                f"{done.seconds:.1f} s, {quote(done.first, 200)}")
    return judge(done.rc == 2 and done.one_line and "weights.pt" in done.first and "HTML" in done.first,
                 evidence, "unclear")


@case(40, 4, "a deflate zip-bomb checkpoint is inflated in full before any check")
def zip_bomb(lab: Lab) -> Verdict:
    folder = lab.path("zip-bomb")
    bomb = folder / "bomb.pt"
    size = 1 << 30  # 1 GiB of zeros declared, about 1 MiB on disk
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/version", b"3\n")
        with archive.open("archive/data/0", "w", force_zip64=True) as f:
            chunk = bytes(1 << 24)
            for _ in range(size // len(chunk)):
                f.write(chunk)
    garbage = folder / "garbage.pt"
    garbage.write_bytes(b"<html>not a checkpoint</html>")

    def measured(path: Path) -> tuple[Result, Optional[int]]:
        """The command under /usr/bin/time (when there is one): its result and peak memory in MiB."""
        cmd = [PY, "-m", "atkit", "eval", "--checkpoint", path, "--model", "small_cnn", "--dataset", "synthetic",
               "--quiet"]
        timed = Path("/usr/bin/time").exists()
        done = lab.run((["/usr/bin/time", "-f", "MAXRSS_KB=%M"] if timed else []) + cmd, timeout=120)
        rss = re.search(r"MAXRSS_KB=(\d+)", done.err)
        done.err = re.sub(r"(MAXRSS_KB=\d+|Command exited with non-zero status \d+)\n?", "", done.err)
        return done, int(rss.group(1)) // 1024 if rss else None

    done, mib = measured(bomb)
    _, baseline = measured(garbage)  # the same command refusing a 29-byte file: what the process takes anyway
    grew = mib - baseline if mib is not None and baseline is not None else None
    evidence = (f"{bomb.stat().st_size:,}-byte zip declaring {size:,} bytes: rc {done.rc} in {done.seconds:.1f} s, "
                f"peak memory {mib} MiB vs {baseline} MiB refusing a garbage file, {quote(done.first, 200)}")
    ok = done.rc == 2 and done.one_line and "zip bomb" in done.first and (grew is None or grew < 256)
    return judge(ok, evidence, "unclear")


def _image_tree(root: Path, save: Callable[[Path, int], None]) -> None:
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                save(root / split / c, i)


@case(41, 4, "folder datasets: 16-bit PNGs are clipped to white without a word")
def sixteen_bit(lab: Lab) -> Verdict:
    import numpy as np
    from PIL import Image

    folder = lab.path("grey16")
    _image_tree(folder / "data",
                lambda d, i: Image.fromarray(np.full((8, 8), 32768 + i, np.uint16)).save(d / f"{i}.png"))
    done = lab.python("""
        import sys
        from atkit.data import load_dataset
        data = load_dataset("folder", root=sys.argv[1], cache_dir=sys.argv[2])
        print("VALUES", sorted(set(data.train_x.flatten().tolist())), data.train_x.dtype)
    """, folder / "data", folder / "cache")
    values = next((line for line in done.out.splitlines() if line.startswith("VALUES")), "")
    evidence = f"16-bit greyscale PNGs at half range (32768): rc {done.rc}, pixels read as {values[7:]}"
    return judge(done.rc == 0 and "[128]" in values, evidence, "silent")


def _png_bomb(path: Path, side: int) -> None:
    """A 1-bit greyscale PNG of side x side pixels, all zero: a few hundred KiB for hundreds of megapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@case(42, 4, "folder datasets: a decompression-bomb image gives a traceback instead of a named file")
def decompression_bomb(lab: Lab) -> Verdict:
    from PIL import Image

    folder = lab.path("image-bomb")
    root = folder / "data"
    _image_tree(root, lambda d, i: Image.new("RGB", (8, 8), (i, 0, 0)).save(d / f"{i}.png"))
    _png_bomb(root / "train" / "a" / "bomb.png", 20000)  # 400 megapixels, over PIL's limit
    config = lab.config(folder, dataset="folder", data={"root": str(root)})
    done = lab.atkit("train", config, "--out-dir", folder / "runs", "--quiet")
    evidence = (f"a {(root / 'train/a/bomb.png').stat().st_size:,}-byte PNG of 20000x20000 pixels among the images, "
                f"`atkit train` with dataset: folder: rc {done.rc}, {quote(done.first, 200)}")
    return judge(done.rc == 2 and done.one_line and "bomb.png" in done.first, evidence, "unclear")


def _results_tree(lab: Lab, name: str) -> Path:
    """outputs/runs with one plain run (a copy of the tiny run)."""
    root = lab.path(name) / "outputs"
    (root / "runs").mkdir(parents=True)
    shutil.copytree(lab.tiny_run(), root / "runs" / "plain")
    return root


def _collect(lab: Lab, root: Path) -> tuple[Result, list[str], list[str]]:
    done = lab.python("""
        import json, sys, warnings
        from atkit.workbench.results import collect_runs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = collect_runs(sys.argv[1])
        print("RUNS", json.dumps(sorted(set(frame["run"]))))
        print("WARNINGS", json.dumps([str(w.message) for w in caught]))
    """, root)
    runs = next((json.loads(line[5:]) for line in done.out.splitlines() if line.startswith("RUNS ")), [])
    warns = next((json.loads(line[9:]) for line in done.out.splitlines() if line.startswith("WARNINGS ")), [])
    return done, runs, warns


@case(43, 4, "the results tables skip symlinked run folders (which the trainer's reuse follows)")
def results_symlinks(lab: Lab) -> Verdict:
    root = _results_tree(lab, "results-links")
    store = root.parent / "store"
    shutil.copytree(lab.tiny_run(), store / "linked")
    (root / "runs" / "linked").symlink_to(store / "linked", target_is_directory=True)
    (root / "runs" / "loop").symlink_to(root, target_is_directory=True)
    done, runs, warns = _collect(lab, root)
    evidence = f"collect_runs over a plain run, a symlinked run and a symlink loop: rc {done.rc}, runs {runs}"
    if done.rc is None:
        return Verdict("unclear", evidence + " (hung on the loop)")
    return judge(done.rc == 0 and runs == ["linked", "plain"], evidence, "silent")


@case(44, 4, "the results tables crash on one foreign config.yaml")
def results_foreign_config(lab: Lab) -> Verdict:
    root = _results_tree(lab, "results-foreign")
    (root / "runs" / "hydra").mkdir()
    (root / "runs" / "hydra" / "config.yaml").write_text("- a hydra list\n- not an atkit config\n")
    (root / "runs" / "hydra" / "metrics.json").write_text("{}")
    done, runs, warns = _collect(lab, root)
    named = [w for w in warns if "hydra" in w]
    evidence = (f"a foreign config.yaml beside a run: rc {done.rc}, runs {runs}, "
                f"warning {quote(named[0] if named else '')}")
    return judge(done.rc == 0 and runs == ["plain"] and bool(named), evidence, "unclear")


@case(45, 4, "the results tables crash on a malformed eval.json")
def results_bad_eval(lab: Lab) -> Verdict:
    root = _results_tree(lab, "results-bad-eval")
    for name, text in (("cut", '{"final": {"accur'), ("odd", '{"final": {"accuracy": {"clean": "n/a"}}}')):
        shutil.copytree(lab.tiny_run(), root / "runs" / name)
        (root / "runs" / name / "eval.json").write_text(text)
    done, runs, warns = _collect(lab, root)
    named = [w for w in warns if "eval.json" in w]
    evidence = (f"a truncated and a foreign-shaped eval.json: rc {done.rc}, runs {runs}, warnings "
                f"{[quote(w, 90) for w in named]}")
    return judge(done.rc == 0 and runs == ["cut", "odd", "plain"] and len(named) == 2, evidence, "unclear")


@case(46, 4, "a malformed _sweep_done.json gives a traceback")
def bad_done_marker(lab: Lab) -> Verdict:
    folder = lab.path("bad-marker")
    grid = lab.grid(folder, [{"value": 2, "wait": False}])
    out = folder / "out"
    first = lab.atkit("sweep", "-f", grid, "--out", out, "--gpus", "", "--quiet")
    markers = list(out.glob("*/_sweep_done.json"))
    if first.rc != 0 or not markers:
        return Verdict("unclear", f"the sweep did not finish: rc {first.rc} {quote(first.first)}")
    markers[0].write_text("[]")
    status, again = lab.atkit_many([["sweep", "--status", out], ["sweep", "-f", grid, "--out", out, "--gpus", "",
                                                                  "--quiet"]])
    redone = json.loads(markers[0].read_text()) if markers[0].is_file() else None
    warn = next((line for line in status.err_lines if "damaged" in line), "")
    evidence = (f"a finished point's marker replaced by '[]': --status rc {status.rc} {quote(warn, 150)}, "
                f"{quote(status.out.splitlines()[1] if len(status.out.splitlines()) > 1 else status.out, 60)}; the "
                f"sweep again rc {again.rc}, the point re-run (marker rewritten) {isinstance(redone, dict)}")
    return judge(status.rc == 0 and bool(warn) and "Traceback" not in status.err + again.err and again.rc == 0
                 and isinstance(redone, dict), evidence, "unclear")


@case(47, 4, "a truncated sweep.json gives a traceback or a wrong 'holds no sweep'")
def truncated_summary(lab: Lab) -> Verdict:
    out = lab.path("truncated-summary") / "out"
    (out / "p0").mkdir(parents=True)
    (out / "sweep.json").write_text('{"name": "s", "poin')
    done = lab.atkit("sweep", "--status", out)
    evidence = f"sweep.json cut mid-write: `sweep --status` rc {done.rc}, {quote(done.first, 220)}"
    return judge(done.rc == 2 and done.one_line and "damaged" in done.first and "holds no sweep" not in done.first
                 and "again" in done.first, evidence, "unclear")


@case(48, 4, "[held] unsafe checkpoints and YAML tags: no code runs (a pickle payload, !!python/object)")
def no_code_executed(lab: Lab) -> Verdict:
    folder = lab.path("code-execution")
    pwned = folder / "PWNED"
    payload = folder / "evil.pt"
    lab.python("""
        import os, sys, torch
        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {sys.argv[2]}",))
        torch.save({"model": Evil()}, sys.argv[1])
    """, payload, pwned)
    tag = folder / "tag.yaml"
    tag.write_text(f"method: !!python/object/apply:os.system ['touch {pwned}-yaml']\nepochs: 1\n")
    ev, tr = lab.atkit_many([["eval", "--checkpoint", payload, "--model", "small_cnn", "--dataset", "synthetic",
                              "--quiet"], ["train", tag, "--out-dir", folder / "runs", "--quiet"]])
    ran = [p.name for p in folder.glob("PWNED*")]
    evidence = (f"pickle payload as --checkpoint: rc {ev.rc} {quote(ev.first, 120)}; !!python tag in a config: rc "
                f"{tr.rc} {quote(tr.first, 100)}; files the payloads would create: {ran}")
    if ran:
        return Verdict("silent", evidence + " (CODE RAN)")
    return judge(ev.rc == 2 and tr.rc == 2 and ev.one_line and tr.one_line, evidence, "unclear")


@case(49, 4, "[held] TensorBoard across kill -9 and resume: no epoch missing or doubled")
def tensorboard_kill(lab: Lab) -> Verdict:
    folder = lab.path("tensorboard")
    config = lab.config(folder, name="tb", epochs=3, logging={"tensorboard": True},
                        data={"n_train": 128, "n_test": 64, "image_size": 16})
    script = folder / "stopper.py"
    script.write_text(STOPPER)
    # 2 steps per epoch: the 5th step is in epoch 3, after epoch 2's events and checkpoint
    proc = lab.popen([PY, script, "train", config, "--out-dir", folder / "runs", "--quiet"], env={"STOP_AT_STEP": "5"},
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if proc.stdout.readline().strip() != "STOPPED":
            return Verdict("unclear", f"training did not reach epoch 3: {quote(proc.communicate()[1][-300:])}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        lab.end(proc)
    run = folder / "runs" / "tb"
    resume = lab.atkit("train", "--resume", run, "--quiet")
    done = lab.python("""
        import json, sys
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
        acc.Reload()
        print("STEPS", json.dumps({t: [e.step for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]
                                   if not t.startswith("eval/")}))
    """, run / "tensorboard")
    steps = next((json.loads(line[6:]) for line in done.out.splitlines() if line.startswith("STEPS ")), {})
    bad = {t: s for t, s in steps.items() if s != [1, 2, 3]}
    evidence = (f"kill -9 in epoch 3 of 3, `--resume` rc {resume.rc}: {len(steps)} per-epoch tags, steps "
                f"{sorted({tuple(s) for s in steps.values()})}, tags with missing/doubled epochs: {len(bad)}")
    return judge(resume.rc == 0 and bool(steps) and not bad, evidence, "silent")


# ------------------------------------------------------------------------------------------------- the run
def scrubbed(text: str, lab: Lab) -> str:
    """``text`` with this machine's paths replaced: the temporary folder by ``$TMP``, the checkout by ``<checkout>``
    (the printed lines are committed; they should read the same on any machine)."""
    text = text.replace(str(lab.tmp), "$TMP").replace(str(ROOT), "<checkout>")
    text = re.sub(re.escape(str(lab.tmp.parent / "atkit-recount-")) + r"[\w.]*", "$TMP", text)  # cut short by quote()
    return re.sub(r"(?<![\w.~])/(work|home|root|tmp)/", r"<\1>/", text)


def commit_of(root: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown (no git)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated case numbers (default: all 49)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args(argv)
    only = {int(n) for n in args.only.split(",")} if args.only else None
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started in the background (`&`, nohup): the shell ignored SIGINT, and the Ctrl-C cases would wait for an
        # interrupt their processes never get; a handler here gives every child the default disposition at exec
        signal.signal(signal.SIGINT, signal.default_int_handler)
    began = time.time()
    print(f"# issue 26 reliability catalogue, re-counted at commit {commit_of(ROOT)}")
    print(f"# date {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"1-min load {os.getloadavg()[0]:.1f}; paths: $TMP the temporary folder, <checkout> this checkout")
    print("# number  class  verdict  case | evidence")
    lab = Lab(keep=args.keep)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for s in previous:
        signal.signal(s, stop)
    tally: dict[str, int] = {v: 0 for v in (*VERDICTS, "error")}
    try:
        for c in sorted(CASES, key=lambda c: c.number):
            if only is not None and c.number not in only:
                continue
            t0 = time.time()
            try:
                verdict = c.run(lab)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # the harness failed on this case: say so, count it as not clear
                verdict = Verdict("error", f"harness error {type(e).__name__}: {quote(str(e), 200)} "
                                           f"at {traceback.extract_tb(e.__traceback__)[-1].lineno}")
            tally[verdict.verdict] = tally.get(verdict.verdict, 0) + 1
            line = (f"{c.number:2d}  {CLASSES[c.klass]:13s} {verdict.verdict:15s} {c.title} | {verdict.evidence} "
                    f"[{time.time() - t0:.0f} s]")
            print(scrubbed(line, lab), flush=True)
    finally:
        leftovers = lab.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    counted = sum(tally.values())
    print(f"# totals over {counted} case(s): " + ", ".join(f"{n} {v}" for v, n in tally.items() if n or v in VERDICTS))
    print(f"# processes left by the cases and ended by the harness: {leftovers or 'none'}")
    print(f"# runtime {time.time() - began:.0f} s" + (f"; kept the temporary folder {lab.tmp}" if args.keep else ""))
    return 0 if all(tally[v] == 0 for v in tally if v not in OK_VERDICTS) else 1


if __name__ == "__main__":
    sys.exit(main())
