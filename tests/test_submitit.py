"""Sweeps through submitit (``--backend submitit``) with its ``debug`` and ``local`` executors: the local runner's
folder layout, failures recorded and not requeued, a killed job resumed by the same command while finished
points are skipped, a time-out requeued through checkpointing (within a retry limit), --status and --cancel."""
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from nbformat.v4 import new_code_cell

import atkit.workbench.sweep as sweep_module
from atkit.workbench.cli import main as cli_main
from atkit.training.config import load_config
from atkit.training.runs import data_fingerprint
from atkit.workbench.sweep import SweepSpec, expand_grid, load_grid, make_points, run_sweep
from atkit.core.utils import ConfigError
from helpers import wait_until, write_notebook

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def submitit_api():
    pytest.importorskip("submitit")
    from atkit.workbench import sweep_submitit

    return sweep_submitit


def _resumable_notebook(folder: Path) -> Path:
    """A notebook without torch that does ``steps`` steps, keeping its progress in state.json (so a killed run
    continues where it was), logs where each attempt started in attempts.txt, raises for value == fail_on and
    writes 2*value to result.json. With ``hold_at``, it waits before step ``hold_at`` (after ``hold_at`` steps are
    recorded) until the file ``release`` exists in its folder: the test decides when it goes on, not a clock."""
    params = new_code_cell('value = 1\nfail_on = None\nsteps = 1\nhold_at = None\nout_dir = "."\n')
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell(
        "import json, os, pathlib, time\n"
        "state = pathlib.Path(out_dir, 'state.json')\n"
        "done = json.loads(state.read_text())['done'] if state.is_file() else 0\n"
        "with open(pathlib.Path(out_dir, 'attempts.txt'), 'a') as f:\n"
        "    f.write(f'{done}\\n')\n"
        "if value == fail_on:\n"
        "    raise ValueError(f'point {value} fails on purpose')\n"
        "for i in range(done, steps):\n"
        "    while i == hold_at and not pathlib.Path(out_dir, 'release').exists():\n"
        "        time.sleep(0.05)\n"
        "    tmp = state.with_suffix('.tmp')\n"
        "    tmp.write_text(json.dumps({'done': i + 1}))\n"
        "    os.replace(tmp, state)\n"
        "pathlib.Path(out_dir, 'result.json').write_text(json.dumps({'double': 2 * value}))\n")
    return write_notebook(folder / "nb" / "tiny.ipynb", params, body)


def _layout(out: Path) -> set[str]:
    """Every file's path under ``out`` without the scheduler's own folder."""
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "_submitit" not in p.parts}


def _attempts(folder: Path) -> list[int]:
    return [int(x) for x in (folder / "attempts.txt").read_text().split()]


# ---------------------------------------------------------------------------------- no cluster code
def test_without_submitit_the_backend_exits_with_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    nb = _resumable_notebook(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "grid": {"value": [1]}}))
    monkeypatch.setitem(sys.modules, "submitit", None)  # the import fails as without the package
    rc = cli_main(["sweep", "-f", str(grid), "--out", str(tmp_path / "o"), "--backend", "submitit", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "pip install atkit[slurm]" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_slurm_options_come_from_the_grid_file_then_the_flags_and_are_checked(submitit_api):
    opts = submitit_api.SlurmOptions.from_sources({"partition": "gpu", "time": "1-02:30:00", "gpus": 2, "mem": "32G"},
                                                  {"partition": "long", "time": None, "account": "lab"})
    assert (opts.partition, opts.account, opts.timeout_min(), opts.mem_gb()) == ("long", "lab", 1590, 32.0)
    params = opts.executor_parameters("slurm", "atkit-x")
    assert params["gpus_per_node"] == 2 and params["slurm_partition"] == "long" and params["slurm_account"] == "lab"
    assert params["timeout_min"] == 1590 and params["tasks_per_node"] == 1
    default = submitit_api.SlurmOptions.from_sources(None)
    assert default.gpus_for("slurm") == 1 and default.gpus_for("local") == 0
    assert "slurm_partition" not in opts.executor_parameters("local", "atkit-x")
    with pytest.raises(ConfigError, match="Did you mean 'partition'"):
        submitit_api.SlurmOptions.from_sources({"partiton": "gpu"})
    with pytest.raises(ConfigError, match="time='soon'"):
        submitit_api.SlurmOptions.from_sources({"time": "soon"})
    with pytest.raises(ConfigError, match="mem='lots'"):
        submitit_api.SlurmOptions.from_sources({"mem": "lots"})


def test_multi_gpu_points_train_with_torchrun_and_resume_a_partial_run(submitit_api, tmp_path, monkeypatch):
    """A train-notebook point with G GPUs: torchrun -m atkit train on the notebook's run config, --resume when
    an identical run was interrupted; other notebooks are refused (they run their points in one process)."""
    commands = []
    monkeypatch.setattr(sweep_module, "_run_process", lambda cmd, *a, **k: commands.append(cmd) or 0)
    params = {"method": "pgd_at", "dataset": "synthetic", "data": {"n_train": 64, "n_test": 16}, "model": "small_cnn",
              "epochs": 2, "batch_size": 32, "runs_dir": str(tmp_path / "runs")}
    point = make_points(SweepSpec("train", params, [{"seed": 1}]))[0]
    train_nb = ROOT / "notebooks" / "train.ipynb"
    assert submitit_api._train_with_torchrun(point, tmp_path / "p", train_nb, 4, set(), None) is None
    cmd = commands[-1]
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    written = yaml.safe_load(Path(cmd[-1]).read_text())
    assert written["seed"] == 1 and written["device"] == "cuda" and written["out_dir"] == str(tmp_path / "runs")

    run = tmp_path / "runs" / "interrupted-run"  # an identical run that a preemption left behind
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(Path(cmd[-1]).read_text())
    fingerprint = data_fingerprint(load_config(cmd[-1]))
    (run / "metrics.json").write_text(json.dumps({"status": "running", "data_fingerprint": fingerprint}))
    assert submitit_api._train_with_torchrun(point, tmp_path / "p", train_nb, 4, set(), None) is None
    assert commands[-1][-2:] == ["--resume", str(run)]
    error = submitit_api._train_with_torchrun(point, tmp_path / "p", ROOT / "notebooks" / "ablation.ipynb", 2, set(),
                                              None)
    assert "needs the train notebook" in error


# ------------------------------------------------------------------------------------- executors
def test_debug_executor_gives_the_local_runners_folder_and_records_a_failure(submitit_api, tmp_path, capsys):
    nb = _resumable_notebook(tmp_path)
    spec = SweepSpec(str(nb), {"fail_on": 3}, expand_grid({"value": [1, 3]}))
    local_out, sub_out = tmp_path / "local", tmp_path / "submitit"
    local = run_sweep(spec, local_out, workers=2, gpus=[], progress=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "base": {"fail_on": 3}, "grid": {"value": [1, 3]}}))
    command = ["sweep", "-f", str(grid), "--backend", "submitit", "--cluster", "debug", "--quiet"]
    assert cli_main(command + ["--out", str(sub_out)]) == 1  # one point failed
    assert "FAILED value=3" in capsys.readouterr().out

    assert _layout(sub_out) == _layout(local_out)  # same point folders, same files in them
    local_summary, sub_summary = (json.loads((o / "sweep.json").read_text()) for o in (local_out, sub_out))
    assert [p["status"] for p in sub_summary["points"]] == [r.status for r in local] == ["done", "failed"]
    assert sub_summary["counts"] == local_summary["counts"]
    assert (sub_out / "sweep.csv").read_text().splitlines()[0] == (local_out / "sweep.csv").read_text().splitlines()[0]
    points = make_points(spec)
    assert json.loads((sub_out / points[0].folder / "result.json").read_text())["double"] == 2
    failure = json.loads((sub_out / points[1].folder / "_sweep_failed.json").read_text())
    assert "fails on purpose" in failure["error"] and _attempts(sub_out / points[1].folder) == [0]  # not requeued

    # --status reads either backend's folder.
    capsys.readouterr()
    assert cli_main(["sweep", "--status", str(local_out)]) == 0
    assert capsys.readouterr().out.splitlines() == ["1 done, 1 failed", f"done        {points[0].folder}",
                                                   f"failed      {points[1].folder}: {failure['error']}"]
    # The same command on the local runner's folder: its finished points are skipped, the failed one runs again.
    assert cli_main(command + ["--out", str(local_out)]) == 1
    assert "1 of 2 points already finished" in capsys.readouterr().out
    assert [p["status"] for p in json.loads((local_out / "sweep.json").read_text())["points"]] == ["skipped", "failed"]
    assert _attempts(local_out / points[1].folder) == [0, 0]
    assert _attempts(local_out / points[0].folder) == [0]  # not executed again


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc), parents first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop(0))
        todo += children.get(tree[-1], [])
    return tree


def _done_steps(folder: Path) -> int:
    try:
        return json.loads((folder / "state.json").read_text())["done"]
    except (OSError, ValueError):
        return -1


def _task_pid(controller: int) -> int:
    """The task process of a local submitit job (the controller's child), which handles its signals."""
    wait_until(lambda: len(_process_tree(controller)) > 1, f"job {controller} starting its task")
    return _process_tree(controller)[1]


def _gone(pids) -> bool:
    """Whether none of ``pids`` is a live process any more (a zombie counts as gone)."""
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return False
        except (OSError, IndexError):
            continue
    return True


def test_local_executor_killed_preempted_and_timed_out_jobs_then_the_same_command_resumes(
        submitit_api, tmp_path, capsys):
    """One 3-point sweep (local executor): a point that finishes, one preempted (the USR2 that SLURM sends before
    a preemption: the job stops papermill, is requeued and continues from the point's state) and one killed
    outright (every process at once, as a node failure). The same command then skips the two finished points and
    resumes the killed one. Beside it, a job that keeps timing out is requeued max_requeues times, then reported,
    and a cancelled job stops its notebook. Deterministic: each notebook waits at a gate (hold_at) until the test
    has done what it checks, and the time-outs are the USR2 signals the test sends (with a time limit of at most
    10 minutes, submitit counts any USR2 as a time-out; the executor's own signal would come after 10 minutes)."""
    nb = _resumable_notebook(tmp_path)
    gated = {"steps": 6, "hold_at": 3}
    endless = SweepSpec(str(nb), {}, [{"value": 9, "steps": 2, "hold_at": 1}])
    timing_out = submitit_api.submit_sweep(endless, tmp_path / "timeouts", cluster="local", local_signal_delay_s=0,
                                           options=submitit_api.SlurmOptions.from_sources({"time": 10,
                                                                                           "max_requeues": 1}))
    cancelled = submitit_api.submit_sweep(SweepSpec(str(nb), {}, [{"value": 8, "steps": 2, "hold_at": 1}]),
                                          tmp_path / "cancelled", cluster="local")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "base": {"steps": 1},
                                    "points": [{"value": 1}, {"value": 2, **gated}, {"value": 3, **gated}]}))
    out = tmp_path / "out"
    spec = load_grid(grid)
    sub = submitit_api.submit_sweep(spec, out, cluster="local")  # what the command below does first
    quick, preempted, killed = (out / p.folder for p in make_points(spec))
    jobs = json.loads((out / "_submitit" / "jobs.json").read_text())

    wait_until(lambda: _done_steps(preempted) == 3, "the preempted point reaching its gate")
    os.kill(_task_pid(int(jobs[preempted.name]["job_id"])), signal.SIGUSR2)  # SLURM's warning before a preemption
    wait_until(lambda: len(_attempts(preempted)) == 2, "the preempted job's requeued attempt")
    (preempted / "release").write_text("")
    wait_until(lambda: _done_steps(killed) == 3, "the killed point reaching its gate")
    for pid in _process_tree(int(jobs[killed.name]["job_id"])):
        os.kill(pid, signal.SIGKILL)
    results = submitit_api.wait_for_jobs(sub, poll_s=0.5)
    assert [r.status for r in results] == ["done", "done", "interrupted"], results
    assert _done_steps(killed) == 3 and not (killed / "_sweep_done.json").exists()
    assert _attempts(preempted) == [0, 3]  # requeued, and continued from the state the preempted attempt kept
    logs = (out / "_submitit" / "logs")
    job_log = "".join(p.read_text() for p in logs.glob(f"{jobs[preempted.name]['job_id']}_0_log.*"))
    assert "this job is preempted" in job_log and "Requeued" in job_log
    assert [p["status"] for p in json.loads((out / "sweep.json").read_text())["points"]] == [
        "done", "done", "interrupted"]
    assert cli_main(["sweep", "--status", str(out)]) == 0
    status = capsys.readouterr().out
    assert f"interrupted {killed.name}  job {jobs[killed.name]['job_id']}" in status

    finished = {p.name: (p / "result.json").stat().st_mtime_ns for p in (quick, preempted)}
    (killed / "release").write_text("")
    assert cli_main(["sweep", "-f", str(grid), "--out", str(out), "--backend", "submitit", "--cluster", "local",
                     "--wait", "--quiet"]) == 0
    assert "2 of 3 points already finished, skipped; 1 submitted" in capsys.readouterr().out
    summary = json.loads((out / "sweep.json").read_text())
    assert [p["status"] for p in summary["points"]] == ["skipped", "skipped", "done"]
    assert {f: (out / f / "result.json").stat().st_mtime_ns for f in finished} == finished  # not executed again
    assert _attempts(killed) == [0, 3]  # the second attempt continued where the killed one was
    assert json.loads((killed / "result.json").read_text())["double"] == 6
    assert cli_main(["sweep", "--status", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "3 done"

    # --cancel stops the job and the notebook it runs; the point stays unfinished for the next command.
    cancelled_point = tmp_path / "cancelled" / cancelled.results[0].folder
    wait_until(lambda: _done_steps(cancelled_point) == 1, "the cancelled point reaching its gate")
    processes = _process_tree(int(next(iter(cancelled.jobs.values())).job_id))  # controller, task, papermill, kernel
    assert cli_main(["sweep", "--cancel", str(tmp_path / "cancelled")]) == 0
    assert f"cancelled 1 job(s): {next(iter(cancelled.jobs.values())).job_id}" in capsys.readouterr().out
    result, = submitit_api.wait_for_jobs(cancelled, poll_s=0.5)
    assert result.status == "interrupted" and len(processes) >= 4
    wait_until(lambda: _gone(processes), "every process of the cancelled job (the kernel too) ending")
    assert _done_steps(cancelled_point) == 1 and not (cancelled_point / "result.json").exists()

    # Time-outs: each USR2 below is one; max_requeues=1 allows one requeue, the second time-out ends the job.
    timeout_point = tmp_path / "timeouts" / timing_out.results[0].folder
    controller = int(next(iter(timing_out.jobs.values())).job_id)
    wait_until(lambda: _done_steps(timeout_point) == 1, "the timing-out point reaching its gate")
    os.kill(_task_pid(controller), signal.SIGUSR2)
    wait_until(lambda: len(_attempts(timeout_point)) == 2, "the timed-out job's requeued attempt")
    os.kill(_task_pid(controller), signal.SIGUSR2)
    timed_out, = submitit_api.wait_for_jobs(timing_out, poll_s=0.5)
    assert timed_out.status == "interrupted" and "timed-out too many times" in timed_out.error
    job_log = "".join(p.read_text() for p in (tmp_path / "timeouts" / "_submitit" / "logs").glob("*_log.*"))
    assert job_log.count("Starting with JobEnvironment") == 2  # the first run and one requeue, no more
    point = json.loads((tmp_path / "timeouts" / "sweep.json").read_text())["points"][0]
    assert point["status"] == "interrupted" and "timed-out too many times" in point["error"]
