"""A sweep acts only on what it owns (issue 26, part 1): job ids checked before any use, a local job identified by
more than its process id, no signal to anything not verified as the sweep's own, an unknown state reported and never
acted on, a stale record never blocking a point; one sweep per --out, point processes that stop with their sweep,
and options checked before the first point. Each test failed before the fix it accompanies."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from nbformat.v4 import new_code_cell

from atkit.workbench.cli import main
from atkit.workbench.sweep import SweepSpec, make_points
from atkit.core.utils import FolderLock
from helpers import one_line, wait_until, write_notebook

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _gate_notebook(folder: Path) -> Path:
    """A notebook that records its kernel's process id, then (with ``wait``) waits until the file ``go`` exists in
    its folder."""
    params = new_code_cell('value = 1\nwait = True\nout_dir = "."\n')
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell("import os, pathlib, time\n"
                         "pathlib.Path(out_dir, 'kernel.pid').write_text(str(os.getpid()))\n"
                         "while wait and not pathlib.Path(out_dir, 'go').exists():\n"
                         "    time.sleep(0.05)\n"
                         "pathlib.Path(out_dir, 'result.json').write_text(str(2 * value))\n")
    return write_notebook(folder / "nb" / "gate.ipynb", params, body)


class _Signals:
    """Stands in for os.kill / os.killpg / pidfd_send_signal: records every signal and sends none (a probe with
    signal 0 is answered truthfully, so the old code's liveness checks behave as on a real system)."""

    def __init__(self, monkeypatch) -> None:
        self.sent: list[tuple] = []
        real_kill = os.kill

        def kill(pid, sig):
            if sig == 0 and pid > 0:
                return real_kill(pid, 0)
            self.sent.append(("kill", pid, sig))

        monkeypatch.setattr(os, "kill", kill)
        monkeypatch.setattr(os, "killpg", lambda pid, sig: self.sent.append(("killpg", pid, sig)))
        if hasattr(signal, "pidfd_send_signal"):
            monkeypatch.setattr(signal, "pidfd_send_signal", lambda fd, sig, *a: self.sent.append(("pidfd", fd, sig)))


@pytest.fixture
def fake_slurm(monkeypatch, tmp_path_factory):
    """A fake ``sacct`` on PATH answering RUNNING, except for job 123, where it fails as a cluster without
    accounting does; scancel recorded, not run."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path_factory.mktemp("slurm-bin")
    sacct = bin_dir / "sacct"
    sacct.write_text("#!/bin/sh\n"
                     'case " $* " in *" -j 123 "*) echo "sacct: error: Slurm accounting storage is disabled" >&2; '
                     "exit 1;; esac\necho RUNNING\n")
    sacct.chmod(0o755)
    for tool in ("sbatch", "srun"):  # present, as on a login node; the tests' executors never call them
        (bin_dir / tool).write_text(f"#!/bin/sh\necho '{tool} must not run in the tests' >&2\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    calls = []
    real_run = subprocess.run

    def run(cmd, *a, **k):
        if cmd and cmd[0] == "scancel":
            calls.append(list(cmd))
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return real_run(cmd, *a, **k)

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def _hand_made_sweep(out: Path, jobs: dict[str, dict]) -> None:
    """A submitit sweep folder with one unfinished point per job record."""
    meta = out / "_submitit"
    meta.mkdir(parents=True)
    points = [{"index": i, "folder": f, "key": f"k{i}", "varied": {}} for i, f in enumerate(jobs)]
    (meta / "submission.json").write_text(json.dumps({"name": "s", "notebook": "x", "base": {}, "cluster": "local",
                                                      "submitted": list(jobs), "points": points}))
    for i, (folder, job) in enumerate(jobs.items()):
        job.setdefault("key", f"k{i}")
        (out / folder).mkdir()
    (meta / "jobs.json").write_text(json.dumps(jobs))


def test_status_and_cancel_act_only_on_verified_jobs_of_their_own(tmp_path, monkeypatch, capsys, fake_slurm):
    """Job ids 0 and -1 (this process group, every process of the user), a local job whose process id another
    process now has, a SLURM id that is an scancel option, and a job whose sacct query fails: none is signalled
    or cancelled; the first four are stale, the last is reported as unknown."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        signals = _Signals(monkeypatch)
        out = tmp_path / "sweep"
        _hand_made_sweep(out, {"zero": {"job_id": "0", "cluster": "local"},
                               "minus": {"job_id": "-1", "cluster": "local"},
                               "reused": {"job_id": str(stranger.pid), "cluster": "local",  # recorded for another
                                          "process": {"start_time": 1, "cmdline": ["python", "-m", "x"]}},
                               "option": {"job_id": "--user=someone", "cluster": "slurm"},
                               "sacct": {"job_id": "123", "cluster": "slurm"}})
        assert main(["sweep", "--status", str(out), "--json"]) == 0
        rows = {r["folder"]: r for r in json.loads(capsys.readouterr().out)}
        assert {f: r["status"] for f, r in rows.items()} == {"zero": "interrupted", "minus": "interrupted",
                                                             "reused": "interrupted", "option": "interrupted",
                                                             "sacct": "unknown"}
        assert "sacct failed" in rows["sacct"]["job_state"] and "another process" in rows["reused"]["job_state"]
        assert "accounting storage is disabled" in rows["sacct"]["job_state"]  # the cause, from sacct itself
        assert main(["sweep", "--cancel", str(out)]) == 1  # 1: a job was left alone
        captured = capsys.readouterr()
        assert captured.out.startswith("cancelled 0 job(s)")
        assert "job 123 not cancelled: UNKNOWN (sacct failed" in captured.err
        assert signals.sent == [] and fake_slurm == []
        assert stranger.poll() is None
    finally:
        monkeypatch.undo()  # the real os.kill again
        stranger.kill()
        stranger.wait()


def test_a_live_job_of_the_sweep_is_recognised_and_cancelled(tmp_path, monkeypatch, capsys):
    """The other side of the check: the process recorded at submission (same start time, same command line) is
    the sweep's, shown running and cancelled with SIGINT."""
    from atkit.workbench.sweep_jobs import job_record

    signals = _Signals(monkeypatch)
    logs = tmp_path / "sweep" / "_submitit" / "logs"
    controller = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "submitit.local._local",
                                   str(logs)])
    try:
        wait_until(lambda: "submitit.local._local" in Path(f"/proc/{controller.pid}/cmdline").read_text(),
                    "the stand-in controller starting")
        _hand_made_sweep(tmp_path / "sweep", {"live": job_record("local", str(controller.pid), "k0", "now")})
        assert main(["sweep", "--status", str(tmp_path / "sweep")]) == 0
        assert f"running     live  job {controller.pid} (RUNNING)" in capsys.readouterr().out
        assert main(["sweep", "--cancel", str(tmp_path / "sweep")]) == 0
        assert capsys.readouterr().out.startswith(f"cancelled 1 job(s): {controller.pid}")
        assert [s[-1] for s in signals.sent] == [signal.SIGINT]
    finally:
        monkeypatch.undo()  # the real os.kill again
        controller.kill()
        controller.wait()


class _FakeExecutor:
    """submitit's AutoExecutor without a scheduler: map_array returns jobs that never run."""

    def __init__(self, folder, cluster, **kw):
        self._executor = types.SimpleNamespace(parameters={}, max_num_timeout=0)

    def update_parameters(self, **kw):
        pass

    def map_array(self, fn, items):
        return [types.SimpleNamespace(job_id=str(4_000_000_000 + i)) for i, _ in enumerate(items)]


def test_a_stale_record_never_blocks_a_point_and_an_unknown_state_is_held(tmp_path, monkeypatch, fake_slurm):
    submitit = pytest.importorskip("submitit")
    from atkit.workbench import sweep_submitit

    monkeypatch.setattr(submitit, "AutoExecutor", _FakeExecutor)
    nb = _gate_notebook(tmp_path)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        spec = SweepSpec(str(nb), {}, [{"value": 1}])
        point = make_points(spec)[0]
        out = tmp_path / "sweep"
        (out / "_submitit").mkdir(parents=True)
        (out / "_submitit" / "jobs.json").write_text(json.dumps(
            {point.folder: {"job_id": str(stranger.pid), "cluster": "local", "key": point.key}}))
        sub = sweep_submitit.submit_sweep(spec, out, cluster="local")
        assert list(sub.jobs) == [point.folder] and sub.still_queued == {}  # the stranger is not the point's job
        (out / "_submitit" / "jobs.json").write_text(json.dumps(
            {point.folder: {"job_id": "123", "cluster": "slurm", "key": point.key}}))
        held = sweep_submitit.submit_sweep(spec, out, cluster="slurm")
        assert held.jobs == {} and "sacct failed" in held.unknown[point.folder]  # reported, not submitted twice
    finally:
        stranger.kill()
        stranger.wait()


def test_job_id_forms():
    from atkit.core.processes import job_id_problem

    for bad in ("0", "1", "-1", "", "12 34", "1e3", "--user=x", "0x10", 7):
        assert job_id_problem("local", bad) is not None, bad
    for bad in ("--user=someone", "123;rm", "12_", "_3", "0", "123_4_5", 123):
        assert job_id_problem("slurm", bad) is not None, bad
    assert job_id_problem("local", "4242") is None
    assert job_id_problem("slurm", "4242") is None and job_id_problem("slurm", "4242_17") is None


def _sweep_command(grid: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "atkit", "sweep", "-f", str(grid), "--out", str(out), "--gpus", "", "--quiet"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_points_of_a_stopped_sweep_stop_with_it(tmp_path, sig):
    """SIGTERM: recorded as Ctrl-C is (points "interrupted", exit status 143) and the point's papermill process
    and kernel stop; SIGKILL: nothing can be recorded, but the point processes die with the sweep all the same."""
    nb = _gate_notebook(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "points": [{"value": 1}]}))
    out = tmp_path / "out"
    sweep = subprocess.Popen(_sweep_command(grid, out), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    kernel = None
    try:
        wait_until(lambda: any(out.glob("*/kernel.pid")), "the point's kernel starting")
        kernel = int(next(out.glob("*/kernel.pid")).read_text())
        sweep.send_signal(sig)
        log, _ = sweep.communicate(timeout=120)
        wait_until(lambda: not _alive(kernel), "the point's kernel stopping", timeout=60)
        if sig == signal.SIGTERM:
            assert sweep.returncode == 143, log
            assert [p["status"] for p in json.loads((out / "sweep.json").read_text())["points"]] == ["interrupted"]
        assert not FolderLock(out).is_locked()
    finally:
        sweep.kill()
        if kernel is not None and _alive(kernel):
            os.kill(kernel, signal.SIGKILL)


def test_one_sweep_per_out_folder(tmp_path, capsys):
    nb = _gate_notebook(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "points": [{"value": 1, "wait": False}]}))
    out = tmp_path / "out"
    out.mkdir()
    with FolderLock(out):  # another sweep runs into out
        assert main(["sweep", "-f", str(grid), "--out", str(out), "--gpus", "", "--quiet"]) == 2
    assert f"in use by PID {os.getpid()}" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no point started


@pytest.mark.parametrize("extra, message", [
    (["--timeout", "-5"], "--timeout -5.0: the seconds a point may run must be a number > 0"),
    (["--timeout", "0"], "must be a number > 0"),
    (["--kernel", "pyhton3"], "unknown Jupyter kernel"),
])
def test_sweep_options_are_checked_before_the_first_point(tmp_path, capsys, extra, message):
    nb = _gate_notebook(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "points": [{"value": 1}]}))
    out = tmp_path / "out"
    assert main(["sweep", "-f", str(grid), "--out", str(out), "--gpus", "", "--quiet", *extra]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_grid_name_is_a_plain_name_and_the_submitit_default_out_is_the_local_runners(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    nb = _gate_notebook(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "name": "../../escaped", "points": [{"value": 1}]}))
    assert main(["sweep", "-f", str(grid), "--dry-run"]) == 2
    assert "name='../../escaped' must be a plain folder name" in one_line(capsys.readouterr().err)
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "name": "mine", "points": [{"value": 1}]}))
    monkeypatch.setenv("ATKIT_OUTPUTS", str(tmp_path / "outputs-root"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for backend in ("local", "submitit"):
        assert main(["sweep", "-f", str(grid), "--dry-run", "--backend", backend]) == 0
        line = capsys.readouterr().out.splitlines()[0]
        assert line.split()[1].startswith(str(tmp_path / "outputs-root" / "sweeps" / "mine") + "/"), (backend, line)


def test_damaged_sweep_files_give_a_warning_orone_line(tmp_path, capsys):
    from atkit.workbench.sweep_jobs import is_done

    out = tmp_path / "sweep"
    (out / "p0").mkdir(parents=True)
    (out / "p0" / "sweep.log").write_text("")
    (out / "p0" / "_sweep_done.json").write_text("[]")  # valid JSON, not a marker
    (out / "sweep.json").write_text(json.dumps({"name": "s", "points": [{"index": 0, "folder": "p0",
                                                                          "status": "done"}]}))
    with pytest.warns(UserWarning, match="_sweep_done.json' is damaged.*runs again"):
        assert not is_done(out / "p0", "k0")
    with pytest.warns(UserWarning, match="is damaged"):
        assert main(["sweep", "--status", str(out)]) == 0
    assert "started     p0" in capsys.readouterr().out
    (out / "sweep.json").write_text('{"name": "s", "poin')  # truncated mid-write by a full disk
    assert main(["sweep", "--status", str(out)]) == 2
    assert "sweep.json' is damaged (truncated" in one_line(capsys.readouterr().err)


def test_a_process_identity_read_before_exec_still_names_only_that_process():
    """A controller's command line can be empty when read between fork and exec; its start time then identifies it,
    and a process with another start time (the id reused) is never taken for it."""
    from atkit.core.processes import process_identity, same_process

    now = process_identity(os.getpid())
    assert now is not None and now["cmdline"]
    assert same_process({"start_time": now["start_time"], "cmdline": []}, now)
    assert not same_process({"start_time": now["start_time"] + 1, "cmdline": []}, now)
    assert not same_process({"start_time": now["start_time"], "cmdline": ["python", "other.py"]}, now)
    assert not same_process(None, now)


def test_sacct_is_asked_directly_and_every_failure_names_its_cause(tmp_path, monkeypatch):
    """No sacct, sacct failing, sacct not knowing the job yet: UNKNOWN with the cause (held, never acted on); a
    state with a suffix ("CANCELLED by 1000") reads as its first word."""
    from atkit.workbench.sweep_jobs import slurm_state, state_kind

    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct anywhere
    assert slurm_state("7").startswith("UNKNOWN (sacct not found on PATH")
    sacct = tmp_path / "sacct"
    for body, expected in (('echo "sacct: error: Problem talking to the database" >&2; exit 1',
                            "UNKNOWN (sacct failed, exit 1: sacct: error: Problem talking to the database)"),
                           ("exit 0", "UNKNOWN (sacct has no record of job 7)"),
                           ('echo "CANCELLED by 1000"', "CANCELLED"),
                           ('[ "$2" = 7_3 ] && echo PENDING', "PENDING")):
        sacct.write_text(f"#!/bin/sh\n{body}\n")
        sacct.chmod(0o755)
        job = "7_3" if expected == "PENDING" else "7"
        assert slurm_state(job) == expected
    assert state_kind("UNKNOWN (sacct has no record of job 7)") == "unknown" and state_kind("CANCELLED") == "ended"


def test_slurm_without_sbatch_or_srun_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """A machine with no SLURM: one line naming the missing tools and the alternatives, no lock, no folder."""
    pytest.importorskip("submitit")
    from atkit.workbench.cli import main

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # neither sbatch nor srun
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"notebook: {_gate_notebook(tmp_path)}\ngrid: {{value: [1]}}\n")
    out = tmp_path / "sweep"
    assert main(["sweep", "-f", str(grid), "--backend", "submitit", "--cluster", "slurm", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sbatch and srun not found on PATH" in err[0] and "--cluster local" in err[0], err
    assert not out.exists()
