"""One contract over every registered experiment (the habit of the method and attack registries): a new file in
atkit/experiments/ is held to it without editing this test.

Each experiment: has a notebook whose parameters cell names exactly its ``Params`` fields with the same defaults,
and smoke, demo and paper parameter sets that name only those fields; runs on its smoke parameters and writes
metrics.json (with its parameters), eval_images.json and the files it declares; every claim it judges returns a
verdict with its rule and source; and the written files, judged again by the experiment's own code, give the same
checks (no second assembly).
"""
from __future__ import annotations

import dataclasses
import json
import math

import papermill as pm
import pytest
import torch
import yaml

from atkit.experiments import EXPERIMENTS, judge_folder, run_experiment, write_experiment_notebook
from atkit.experiments.notebook import parameters_source, run_source
from atkit.core.utils import ConfigError
from helpers import REPO

NAMES = sorted(EXPERIMENTS)


def _same(a, b) -> bool:
    """Equal as JSON, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _defaults(cls) -> dict:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_and_parameter_sets_name_the_experiments_fields(name):
    cls = EXPERIMENTS[name]
    defaults = _defaults(cls.Params)
    notebook = {k: eval(v["default"]) for k, v in pm.inspect_notebook(str(REPO / "notebooks" / f"{name}.ipynb")).items()}
    assert set(notebook) == set(defaults)
    for key, value in defaults.items():
        expected = f"outputs/{name}" if key == "out_dir" else value  # None means outputs/<name>
        assert notebook[key] == pytest.approx(expected) if isinstance(value, float) else notebook[key] == expected, key
    sets = [p for p in (REPO / "parameters").rglob(f"{name}*.yaml") if "sweeps" not in p.parts]
    assert {p.parent.name for p in sets} >= {"smoke", "demo", "paper"}
    for path in sets:
        assert set(yaml.safe_load(path.read_text())) <= set(defaults), path
    info = cls.describe()
    assert info["source"] and info["doc"] and set(info["parameters"]) == set(defaults)
    # The notebook's code is what the experiment's class writes: parameters and the one call, nothing else.
    cells = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert code == [parameters_source(name), run_source(name)]


@pytest.mark.parametrize("name", NAMES)
def test_runs_on_smoke_parameters_writes_its_files_and_judges_again_from_them(name, tmp_path):
    params = yaml.safe_load((REPO / "parameters" / "smoke" / f"{name}.yaml").read_text())
    params.update(out_dir=str(tmp_path / "out"), runs_dir=str(tmp_path / "runs"), device="cpu", progress=False)
    result = run_experiment(name, **params)
    out = tmp_path / "out"
    for file in ("metrics.json", "eval_images.json", *EXPERIMENTS[name].outputs):
        assert (out / file).is_file(), file
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == name and metrics["source"] == EXPERIMENTS[name].source
    assert metrics["params"]["seed"] == params.get("seed", 0) and metrics["checks"]
    assert metrics["threads"]["threads"] == torch.get_num_threads() and metrics["threads"]["source"]  # and why
    for check in metrics["checks"]:
        assert check["verdict"] and check["rule"] is not None and check["source"] and check["claim"]
    assert _same(judge_folder(name, out), metrics["checks"]) and _same(result.checks, metrics["checks"])


def test_bad_parameters_are_one_line_errors_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="epochz"):
        run_experiment("mse_perception", epochz=3, out_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="mse_perception.epochs=0"):
        run_experiment("mse_perception", epochs=0, out_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="at least two models"):
        run_experiment("always_failed_overlap", methods=["pgd_at"], out_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="unknown experiment 'mse'"):
        run_experiment("mse")
    assert not (tmp_path / "x").exists()


def test_a_new_experiments_notebook_is_written_from_its_class_and_never_over_a_file(tmp_path):
    path = write_experiment_notebook("robustness_loss", tmp_path / "robustness_loss.ipynb")
    declared = pm.inspect_notebook(str(path))
    assert set(declared) == {f.name for f in dataclasses.fields(EXPERIMENTS["robustness_loss"].Params)}
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="exists"):
        write_experiment_notebook("robustness_loss", path)
    assert path.read_bytes() == before
    with pytest.raises(ConfigError, match="unknown experiment 'robustnes_loss'"):
        write_experiment_notebook("robustnes_loss", tmp_path / "x.ipynb")
    assert not (tmp_path / "x.ipynb").exists()


def test_the_experiments_command_lists_every_experiment_and_refuses_an_existing_notebook(capsys):
    from atkit.workbench.cli import main

    assert main(["experiments", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in listed] == NAMES
    assert all(row["parameters"]["seed"]["help"] for row in listed)
    assert main(["experiments", "mse_perception", "--notebook"]) == 2  # the committed notebook is never replaced
    assert "exists" in capsys.readouterr().err
