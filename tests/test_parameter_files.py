"""Parameter files reach the data users have: paper settings read torchvision's CIFAR-10, overrides need no edits;
run configs and notebook parameter files tell themselves apart, and each command names the other's command."""
from __future__ import annotations

import pytest
import yaml

from atkit.training.config import RunConfig, load_config, load_config_dict
from atkit.core.utils import ConfigError, apply_set_options
from atkit.workbench.cli import main
from atkit.workbench.notebooks import (NOTEBOOK_DIR, declared_parameters, notebook_names, parameter_file_kind,
                                       run_notebook)
from helpers import REPO, one_line

PAPER = REPO / "parameters" / "paper"


def _paper_files():
    return sorted(p for p in PAPER.rglob("*.yaml"))


def test_paper_files_use_the_torchvision_dataset_not_a_local_folder():
    offenders = []
    for path in _paper_files():
        spec = yaml.safe_load(path.read_text()) or {}
        bases = [spec] + ([spec["base"]] if isinstance(spec.get("base"), dict) else [])
        for d in bases:
            if d.get("dataset") == "folder" or "cifar10-jpeg" in str(d.get("data", "")):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders


def test_paper_run_configs_validate_and_take_set_overrides():
    run_configs = [p for p in PAPER.glob("*.yaml") if "method" in (yaml.safe_load(p.read_text()) or {})]
    assert len(run_configs) > 20
    for path in run_configs:
        cfg = RunConfig.from_dict(load_config_dict(path))
        assert cfg.dataset == "cifar10" and cfg.data.get("root") == "data"
    over = load_config(apply_set_options(load_config_dict(run_configs[0]),
                                         ["dataset=folder", "data.root=elsewhere/cifar", "threat.steps=5"]))
    assert over.dataset == "folder" and over.data["root"] == "elsewhere/cifar" and over.threat["steps"] == 5


# --------------------------------------------------- two kinds of parameter file, each refused by the other command
PARAMETERS = REPO / "parameters"


def _kind_its_folder_implies(path):
    """The convention of parameters/: sweeps/ and *_sweep.yaml are grids, round2/ holds run configs, a folder named
    after a notebook (train/, ablation/) holds that notebook's files, and elsewhere a file named after a notebook
    (mse_perception.yaml, mse_perception_cifar10_resnet18.yaml) is that notebook's, any other a run config."""
    names = notebook_names()
    if "sweeps" in path.parts or path.stem.endswith("_sweep"):
        return "sweep grid", []
    if path.parent.name == "round2":
        return "run config", []
    if path.parent.name in names:
        return "notebook", [path.parent.name]
    named = [n for n in names if path.stem == n or path.stem.startswith(n + "_")]
    return ("notebook", named) if named else ("run config", [])


def test_every_committed_parameter_file_is_the_kind_its_folder_implies():
    """Run configs load as RunConfigs, notebook files name only parameters their notebook declares, grids are
    grids: the kind read from the keys (what the commands use to refuse a file meant for another command) agrees."""
    files = sorted(PARAMETERS.rglob("*.yaml"))
    kinds = {}
    for path in files:
        values = yaml.safe_load(path.read_text()) or {}
        expected = _kind_its_folder_implies(path)
        assert parameter_file_kind(path, values) == expected, path.relative_to(REPO)
        kinds[expected[0]] = kinds.get(expected[0], 0) + 1
        if expected[0] == "run config":
            assert load_config(path).method, path
        elif expected[0] == "notebook":
            assert set(values) <= set(declared_parameters(NOTEBOOK_DIR / f"{expected[1][0]}.ipynb")), path
    assert kinds["run config"] > 40 and kinds["notebook"] > 80 and kinds["sweep grid"] > 10, kinds


def test_a_notebook_parameter_file_given_to_train_names_the_notebook_command(tmp_path, capsys):
    path = "parameters/cpu/train/pgd_at_cifar10_small_cnn.yaml"
    assert main(["train", str(REPO / path), "--set", f"out_dir={tmp_path}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == (f"atkit: error: {REPO / path} is a parameter file of the train notebook: run python -m atkit "
                    f"notebook train --params {REPO / path} --out outputs/cpu/train/pgd_at")
    assert list(tmp_path.iterdir()) == []  # refused before any work
    assert main(["train", str(REPO / "parameters/paper/sweeps/train_all.yaml")]) == 2
    assert "is a sweep grid: run python -m atkit sweep -f" in one_line(capsys.readouterr().err)


def test_a_run_config_given_to_a_notebook_names_the_train_command(tmp_path, capsys, monkeypatch):
    import papermill

    def never(*args, **kwargs):
        raise AssertionError("the notebook was executed; the file should have been refused before")

    monkeypatch.setattr(papermill, "execute_notebook", never)
    path = REPO / "parameters/cpu/round2/pgd_at_cifar10_small_cnn.yaml"
    assert main(["notebook", "mse_perception", "--params", str(path), "--out", str(tmp_path / "out")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"atkit: error: {path} is a run configuration, not parameters of the mse_perception "
                           f"notebook: run python -m atkit train {path} (or give it to the train notebook as config:")
    assert not (tmp_path / "out").exists()
    # Another notebook's file is named as that notebook's.
    other = REPO / "parameters/cpu/train/pgd_at_cifar10_small_cnn.yaml"
    assert main(["notebook", "mse_perception", "--params", str(other), "--out", str(tmp_path / "out")]) == 2
    assert "is a parameter file of the train notebook, not of mse_perception: run python -m atkit notebook train " \
           "--params" in one_line(capsys.readouterr().err)
    # A misspelt key is neither kind: the usual error names it and the closest parameter.
    typo = tmp_path / "typo.yaml"
    typo.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match="unknown parameter of notebook mse_perception.ipynb 'epochz'"):
        run_notebook("mse_perception", str(typo), str(tmp_path / "out"), progress=False)
