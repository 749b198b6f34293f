"""Outputs land under the project's outputs/ (or $ATKIT_OUTPUTS) whatever the working directory: the path
helpers, the trainer's run folders, the run scan, and a notebook executed by papermill with cwd notebooks/."""
import json
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
import yaml

from atkit.core import paths
from atkit.training.config import RunConfig
from atkit.workbench.results import collect_runs
from atkit.training.runs import iter_runs
from atkit.training.setup import new_run_dir
from helpers import REPO, figure_outputs


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Work from an unrelated folder with no ATKIT_OUTPUTS set."""
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(paths.OUTPUTS_ENV, raising=False)
    return cwd


def test_the_project_root_is_the_checkout_holding_pyproject(elsewhere):
    assert paths.project_root() == REPO
    assert paths.outputs_root() == REPO / "outputs"


def test_relative_output_paths_ignore_the_working_directory(elsewhere):
    assert paths.resolve_output_path("outputs/runs") == REPO / "outputs" / "runs"
    assert paths.resolve_output_path("outputs") == REPO / "outputs"
    assert paths.resolve_output_path("results/x") == REPO / "results" / "x"
    absolute = elsewhere / "mine"
    assert paths.resolve_output_path(absolute) == absolute
    assert paths.resolve_output_path("~/x") == Path.home() / "x"


def test_atkit_outputs_replaces_the_outputs_folder(elsewhere, tmp_path, monkeypatch):
    monkeypatch.setenv(paths.OUTPUTS_ENV, str(tmp_path / "store"))
    assert paths.resolve_output_path("outputs/runs") == tmp_path / "store" / "runs"
    assert paths.resolve_output_path("other") == REPO / "other"  # only outputs/... moves
    monkeypatch.setenv(paths.OUTPUTS_ENV, "big_disk/out")  # relative: against the project root, not the cwd
    assert paths.outputs_root() == REPO / "big_disk" / "out"


def test_an_installed_copy_without_a_checkout_falls_back_to_atkit_root_or_home(elsewhere, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "PACKAGE_DIR", tmp_path / "site-packages" / "atkit")
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    assert paths.project_root() == Path.home() / "atkit"
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path / "root"))
    assert paths.resolve_output_path("outputs/runs") == tmp_path / "root" / "outputs" / "runs"


def test_config_files_are_found_from_the_project_root(elsewhere):
    assert paths.resolve_input_path("parameters/smoke/train.yaml") == REPO / "parameters" / "smoke" / "train.yaml"
    (elsewhere / "local.yaml").write_text("method: pgd_at\n")
    assert paths.resolve_input_path("local.yaml") == Path("local.yaml")  # a file in the cwd wins


def test_run_folders_and_the_run_scan_use_the_outputs_root(elsewhere, tmp_path, monkeypatch):
    monkeypatch.setenv(paths.OUTPUTS_ENV, str(tmp_path / "store"))
    cfg = RunConfig.from_dict({"method": "pgd_at", "dataset": "synthetic", "out_dir": "outputs/runs"})
    run = new_run_dir(cfg.out_dir, "r")
    assert run == tmp_path / "store" / "runs" / "r" and run.is_dir()
    assert not (elsewhere / "outputs").exists()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run / "metrics.json").write_text(json.dumps({"status": "finished", "history": []}))
    assert [r for r, _, _ in iter_runs("outputs/runs")] == [run]
    assert list(collect_runs("outputs")["run_dir"]) == [str(run)]


def test_sweep_out_is_read_against_the_outputs_root(elsewhere, tmp_path, monkeypatch, capsys):
    from atkit.workbench.cli import main

    monkeypatch.setenv(paths.OUTPUTS_ENV, str(tmp_path / "store"))
    assert main(["sweep", "-f", str(REPO / "parameters" / "demo" / "ablation_sweep.yaml"), "--out", "outputs/sw",
                 "--dry-run"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 3 and all(f" {tmp_path / 'store' / 'sw'}/" in line for line in listed)


def test_papermill_with_cwd_notebooks_writes_under_the_outputs_root(tmp_path, monkeypatch):
    """The results notebook as JupyterLab and `papermill --cwd notebooks` run it: its relative out_dir and
    outputs_dir go to $ATKIT_OUTPUTS (the kernel inherits it), nothing to notebooks/outputs; smoke runs are
    left out by default; the one figure is shown once, as an image."""
    store = tmp_path / "store"
    monkeypatch.setenv(paths.OUTPUTS_ENV, str(store))
    for folder, seed in ((store / "runs" / "a", 0), (store / "smoke" / "runs" / "b", 1)):
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump({"method": "pgd_at", "dataset": "synthetic",
                                                            "data": {"n_train": 64}, "seed": seed}))
        (folder / "metrics.json").write_text(json.dumps(
            {"status": "finished", "history": [{"epoch": 1, "test_clean_acc": 50.0, "test_pgd10_acc": 20.0}]}))
    before = sorted(p.name for p in (REPO / "notebooks").iterdir())
    executed = tmp_path / "results.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "results.ipynb"), str(executed),
                        parameters={"out_dir": "outputs/cwd_test"}, cwd=str(REPO / "notebooks"), progress_bar=False)
    metrics = json.loads((store / "cwd_test" / "metrics.json").read_text())
    assert metrics["n_runs"] == 1  # outputs/smoke/... excluded
    assert sorted(p.name for p in (REPO / "notebooks").iterdir()) == before
    labels = list(pd.read_csv(store / "cwd_test" / "tradeoff_points.csv")["label"])
    assert len(labels) == 1 and "synthetic n_train=64" in labels[0]  # the run's data size is in its label
    assert figure_outputs(executed) == (1, 0)
