"""The thread policy (atkit.core.threads): the auto count against stubbed cores and loads, the order of the
sources, bad values refused before any work, and the choice reaching torch, metrics.json and provenance."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
import torch
import yaml

from atkit.core import threads
from atkit.core.provenance import build_provenance
from atkit.core.utils import ConfigError
from atkit.training.config import load_config
from atkit.training.runs import _comparable
from atkit.workbench.cli import main
from atkit.workbench.run_labels import setting_of
from helpers import one_line, write_notebook

TINY_RUN = dict(method="pgd_at", dataset="synthetic", data={"n_train": 32, "n_test": 16, "image_size": 8},
                model="small_cnn", epochs=1, max_steps_per_epoch=1, threat={"steps": 1}, device="cpu",
                eval={"n_test": 16, "pgd_steps": 0, "final_attacks": ["clean"], "sanity": False})


@pytest.fixture
def policy(monkeypatch):
    """A fresh process as the policy sees it (no decision yet, torch at its default 4, no thread variables), on a
    stubbed machine of 4 cores at load 1.0; torch's count and the module's state are restored afterwards."""
    saved = (torch.get_num_threads(), threads._torch_default, threads._last_set, threads._choice)
    for name in (threads.THREADS_ENV, threads.WORKERS_ENV, *threads.USER_ENV):
        monkeypatch.delenv(name, raising=False)
    machine = {"cores": 4, "load": 1.0}
    monkeypatch.setattr(threads, "usable_cores", lambda: machine["cores"])
    monkeypatch.setattr(threads, "load_average", lambda: machine["load"])
    torch.set_num_threads(4)
    threads._torch_default, threads._last_set, threads._choice = 4, None, None
    yield machine
    torch.set_num_threads(saved[0])
    threads._torch_default, threads._last_set, threads._choice = saved[1:]


@pytest.mark.parametrize("cores, load, workers, torch_default, expected", [
    (2, 0.0, 1, 2, 2), (2, 0.49, 1, 2, 2), (2, 0.5, 1, 2, 1),  # the load rounded half up
    (2, 9.0, 1, 2, 1), (2, 20.0, 1, 2, 1),  # a busy machine: at least one thread, never more than free cores
    (16, 3.4, 1, 16, 13), (16, 3.4, 4, 16, 3), (16, 0.0, 32, 16, 1),  # shared by sweep workers
    (32, 0.0, 1, 16, 16),  # never above torch's own default (its physical cores)
])
def test_auto_threads_takes_the_free_cores_shared_by_the_workers(cores, load, workers, torch_default, expected):
    choice = threads.auto_threads(workers=workers, cores=cores, load=load, torch_default=torch_default)
    assert choice.threads == expected and choice.source == "auto"
    assert f"{cores} cores" in choice.why and f"load {load:.2f}" in choice.why
    assert ("shared by" in choice.why) == (workers > 1)


def test_free_cores_is_cores_minus_rounded_load_at_least_one():
    assert [threads.free_cores(4, x) for x in (0.0, 1.49, 1.5, 3.6, 40.0)] == [4, 3, 2, 1, 1]


def test_sources_in_order_and_the_first_decision_stands(policy, monkeypatch):
    first = threads.apply_threads()
    assert (first.threads, first.source) == (3, "auto") and torch.get_num_threads() == 3  # 4 cores - load 1
    policy["load"] = 3.0  # our own work raised the load: the next trainer of the process keeps the decision
    assert threads.apply_threads("auto") == first and torch.get_num_threads() == 3
    torch.set_num_threads(1)  # the caller's own choice, made after atkit's: left as it is
    mine = threads.apply_threads()
    assert (mine.threads, mine.source) == (1, "torch.set_num_threads") and torch.get_num_threads() == 1
    explicit = threads.apply_threads(2)  # a config's threads: 2
    assert (explicit.threads, explicit.source) == (2, "threads") and torch.get_num_threads() == 2
    monkeypatch.setenv(threads.THREADS_ENV, "1")  # --threads / ATKIT_THREADS beats the config
    assert threads.apply_threads(2).source == threads.THREADS_ENV and torch.get_num_threads() == 1


def test_omp_num_threads_and_sweep_workers(policy, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # torch read it at start-up
    torch.set_num_threads(2)
    threads._torch_default = 2
    choice = threads.apply_threads()
    assert (choice.threads, choice.source) == (2, "OMP_NUM_THREADS") and "left as it is" in choice.why
    threads._choice, threads._last_set = None, None
    torch.set_num_threads(3)  # a program that set its own count before importing atkit (as tests/conftest.py does)
    threads._torch_default = 3
    choice = threads.apply_threads()
    assert (choice.threads, choice.source) == (3, "torch.set_num_threads") and "OMP_NUM_THREADS=2" in choice.why
    monkeypatch.delenv("OMP_NUM_THREADS")
    threads._choice, threads._last_set = None, None
    policy["load"] = 0.0
    monkeypatch.setenv(threads.WORKERS_ENV, "2")  # two sweep workers on 4 free cores: two threads each
    assert threads.apply_threads().threads == 2 and torch.get_num_threads() == 2
    assert threads.worker_env({}, 3) == {threads.WORKERS_ENV: "3"} and threads.worker_env({}, 1) == {}
    assert threads.worker_env({"OMP_NUM_THREADS": "4"}, 3) == {"OMP_NUM_THREADS": "4"}  # the person's count stays
    assert threads.worker_env({threads.THREADS_ENV: "2"}, 3) == {threads.THREADS_ENV: "2"}


@pytest.mark.parametrize("bad", [0, -1, "0", "two", "", 1.5, True, [2]])
def test_bad_thread_counts_are_one_line_errors_naming_the_accepted_values(bad, policy, monkeypatch):
    before = torch.get_num_threads()
    with pytest.raises(ConfigError, match=r"threads=\S+ is not a thread count: give a positive integer .* or 'auto'"):
        threads.apply_threads(bad)
    with pytest.raises(ConfigError, match="threads"):
        load_config(dict(TINY_RUN, threads=bad))
    if isinstance(bad, (str, int)) and not isinstance(bad, bool) and bad != "":  # an empty variable is unset
        monkeypatch.setenv(threads.THREADS_ENV, str(bad))
        with pytest.raises(ConfigError, match=f"{threads.THREADS_ENV}="):
            threads.apply_threads()
    assert torch.get_num_threads() == before and threads._choice is None  # nothing was set


def test_threads_do_not_change_what_a_run_computes():
    a, b = load_config(dict(TINY_RUN)), load_config(dict(TINY_RUN, threads=3))
    assert a.threads == "auto" and b.threads == 3
    assert _comparable(a) == _comparable(b)  # an identical finished run is reused whatever the thread count
    old = {k: v for k, v in a.to_dict().items() if k != "threads"}  # a run written before the key existed
    assert setting_of(old) == setting_of(b.to_dict())


def test_provenance_records_the_count_its_source_and_a_later_change(policy):
    assert build_provenance()["threads"]["source"] == "torch"  # no decision in this process yet
    threads.apply_threads(2)
    assert build_provenance()["threads"] == {"threads": 2, "source": "threads", "why": "threads: 2"}
    torch.set_num_threads(1)
    record = build_provenance()["threads"]
    assert record["threads"] == 1 and record["source"] == "torch.set_num_threads" and "after atkit chose 2" in record["why"]


def test_train_flag_reaches_torch_metrics_and_eval_provenance_then_is_restored(policy, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(dict(TINY_RUN, out_dir=str(tmp_path / "runs"))))
    assert main(["train", str(config), "--threads", "1", "--quiet"]) == 0
    run_dir = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["threads"]["threads"] == 1 and metrics["threads"]["source"] == threads.THREADS_ENV
    # The final evaluation reads torch's count as it ran: 1, not the 4 it had before the command.
    prov = json.loads((run_dir / "eval.json").read_text())["final"]["provenance"]
    assert prov["threads"] == metrics["threads"]
    assert torch.get_num_threads() == 4 and threads.THREADS_ENV not in os.environ  # restored after the command


@pytest.mark.parametrize("command", [["train", "{cfg}"], ["eval", "{tmp}/no-such-run"],
                                     ["notebook", "results", "--out", "{tmp}/nb"], ["sweep", "-f", "{tmp}/no.yaml"]])
def test_bad_threads_flag_is_refused_before_any_work(command, policy, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(dict(TINY_RUN, out_dir=str(tmp_path / "runs"))))
    argv = [a.format(cfg=config, tmp=tmp_path) for a in command]
    assert main(argv + ["--threads", "0"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("atkit: error: --threads 0 is not a thread count") and "'auto'" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nb").exists()


def test_notebook_kernel_gets_the_flag(policy, tmp_path):
    """``atkit notebook --threads 1``: the kernel papermill starts applies the same count."""
    nb = write_notebook(
        tmp_path / "probe.ipynb",
        nbformat.v4.new_code_cell("out_dir = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import json, pathlib, torch\nfrom atkit.core.threads import apply_threads\n"
                                  "choice = apply_threads().to_dict()\n"
                                  "pathlib.Path(out_dir, 'threads.json').write_text(json.dumps("
                                  "dict(choice, torch=torch.get_num_threads())))"))
    assert main(["notebook", str(nb), "--out", str(tmp_path / "out"), "--threads", "1", "--quiet"]) == 0
    seen = json.loads((tmp_path / "out" / "threads.json").read_text())
    assert seen["torch"] == 1 and seen["source"] == threads.THREADS_ENV


def test_sweep_workers_share_the_free_cores(policy, tmp_path):
    """Two CPU workers: each point's kernel is told it shares the CPU and takes its half of the free cores."""
    from atkit.workbench.sweep import SweepSpec, expand_grid, run_sweep

    params = nbformat.v4.new_code_cell("value = 0\nout_dir = '.'", metadata={"tags": ["parameters"]})
    probe = nbformat.v4.new_code_cell(
        "import json, os, pathlib, torch\nfrom atkit.core.threads import apply_threads\n"
        "choice = apply_threads().to_dict()\n"
        "pathlib.Path(out_dir, 'threads.json').write_text(json.dumps(dict(choice, torch=torch.get_num_threads(), "
        "workers=os.environ.get('ATKIT_WORKERS'))))")
    nb = write_notebook(tmp_path / "nb" / "probe.ipynb", params, probe)
    spec = SweepSpec(str(nb), {}, expand_grid({"value": [1, 2]}, None))
    results = run_sweep(spec, tmp_path / "out", workers=2, gpus=[], progress=False)
    assert [r.status for r in results] == ["done", "done"], [r.error for r in results]
    real_cores = len(os.sched_getaffinity(0))
    for folder in sorted((tmp_path / "out").glob("*/threads.json")):
        seen = json.loads(folder.read_text())
        assert seen["workers"] == "2" and seen["source"] == "auto" and "shared by 2 worker processes" in seen["why"]
        assert seen["torch"] == seen["threads"] <= max(1, real_cores // 2)


def test_the_ablation_session_applies_the_policy_in_the_notebooks_thread(policy, tmp_path):
    from atkit.workbench.ablation import AblationSession

    session = AblationSession(dict(TINY_RUN, threads=1), runs_dir=str(tmp_path / "runs"))
    assert (session.threads.threads, session.threads.source) == (1, "threads") and torch.get_num_threads() == 1
    assert AblationSession(dict(TINY_RUN), runs_dir=str(tmp_path / "runs")).threads.threads == 1  # the decision stands
