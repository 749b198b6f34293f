"""Each notebook runs under papermill with its smoke parameters and writes the files it promises."""
import ast
import json
import logging

import nbformat
import pandas as pd
import papermill as pm
import pytest
import yaml

from atkit.experiments.claims import NOT_LEARNED, model_learned
from atkit.workbench.notebooks import run_notebook
from atkit.workbench.notebooks import KERNEL_NAME
from atkit.core.utils import ConfigError
from atkit.workbench.widgets import interactive_mode
from helpers import REPO, committed_notebooks, figure_outputs, run_smoke_notebook


def committed_notebook_files(folder):
    """The committed notebooks (:func:`helpers.committed_notebooks`) written to ``folder``, for papermill to read:
    what JupyterLab autosaved into the working copies never decides these tests."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, text in committed_notebooks().items():
        (folder / f"{name}.ipynb").write_text(text, encoding="utf-8")
        out.append(folder / f"{name}.ipynb")
    return out


def test_mse_perception_notebook(tmp_path):
    out = run_smoke_notebook("mse_perception", tmp_path)
    assert (out / "mse_perception.ipynb").is_file()
    assert (out / "mse_perception.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    assert [p["training"] for p in metrics["pairs"]] == ["standard", "random_noise", "pgd_at"]
    for pair in metrics["pairs"]:
        assert 0 <= pair["clean_acc"] <= 100 and 0 <= pair["perturbed_acc"] <= 100
        assert pair["n_success"] + pair["n_failure"] == metrics["n_eval"]
    table = pd.read_csv(out / "mse_perception.csv")
    assert list(table["training"]) == ["standard", "random_noise", "pgd_at"]
    assert figure_outputs(out / "mse_perception.ipynb") == (1, 0)  # the figure shown once, as an image
    for pair in metrics["pairs"]:  # a verdict only on a model that learned
        learned = model_learned(pair["clean_acc"], 10, n=metrics["n_eval"]).learned
        assert pair["verdict"].startswith(NOT_LEARNED) != learned
        assert (pair["agrees_with_paper"] is None) or learned
    per_sample = pd.read_csv(out / "mse_per_sample.csv")
    assert len(per_sample) == 3 * metrics["n_eval"] and (per_sample["mse"] >= 0).all()
    # Per-image clean correctness (the clean-correct contrast's input) agrees with each pair's clean accuracy, and
    # each pair has its second check, among the clean-correct images.
    for pair in metrics["pairs"]:
        rows = per_sample[per_sample["pair"] == pair["pair"]]
        assert 100.0 * rows["clean_correct"].mean() == pytest.approx(pair["clean_acc"])
    assert [c["claim"].endswith("among clean-correct images") for c in metrics["checks"]] == [False] * 3 + [True] * 3
    assert "verdict_clean_correct" in table.columns
    # A second execution reuses the three finished runs instead of training again.
    runs_before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    run_smoke_notebook("mse_perception", tmp_path)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == runs_before


def test_unknown_notebook_parameter_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="epochz"):
        run_notebook("mse_perception", None, str(tmp_path / "x"), extra={"epochz": 3}, progress=False)


def test_committed_notebooks_are_output_free_with_their_default_parameters(tmp_path):
    """What JupyterLab autosaves must not reach the repository: outputs, execution counts, papermill's
    injected cell, or an edited parameter such as INTERACTIVE = True (which made every batch run of the
    ablation notebook train nothing). Read from the commit (git show HEAD:...), so running a notebook in
    JupyterLab leaves this test green; the clean filter of ``make install`` keeps the outputs out of commits."""
    notebooks = committed_notebook_files(tmp_path)
    assert sorted(p.stem for p in notebooks) == ["ablation", "always_failed_overlap", "boundary_samples",
                                                   "mse_perception", "results", "robustness_loss",
                                                   "rpat_comparison", "train"]
    for path in notebooks:
        nb = nbformat.read(str(path), as_version=4)
        assert nb.metadata["kernelspec"]["name"] == KERNEL_NAME, path.name
        assert "papermill" not in nb.metadata, path.name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        for cell in nb.cells:
            assert "injected-parameters" not in cell.metadata.get("tags", []), path.name
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (path.name, cell.source[:60])
        defaults = {k: v["default"] for k, v in pm.inspect_notebook(str(path)).items()}
        assert defaults["out_dir"] == f'"outputs/{path.stem}"', path.name
        expected = {"INTERACTIVE": "None", "runs_dir": '"outputs/runs"', "device": '"auto"', "progress": "True",
                    "outputs_dir": '"outputs"', "exclude": '["smoke"]'}
        for name, value in expected.items():
            if name in defaults:
                assert defaults[name] == value, (path.name, name, defaults[name])


@pytest.mark.parametrize("name", sorted(committed_notebooks()))
def test_every_parameter_line_parses_without_warnings_and_every_default_evaluates(name, caplog, tmp_path):
    """papermill reads a parameters cell line by line and drops, with only a logged warning, a line it cannot
    parse (a comment holding '=' was one): that parameter is then refused as unknown by ``atkit notebook --set``."""
    path = tmp_path / f"{name}.ipynb"
    path.write_text(committed_notebooks()[name], encoding="utf-8")
    cell = next(c for c in nbformat.read(str(path), as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    with caplog.at_level(logging.DEBUG, logger="papermill"):
        declared = pm.inspect_notebook(str(path))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [], path.name
    assert list(declared) == assigned, path.name
    namespace: dict = {}
    exec(cell.source, namespace)  # the cell as the kernel runs it
    for name, info in declared.items():
        assert eval(info["default"], {}) == namespace[name], (path.name, name)  # the default papermill shows


def test_results_query_is_a_parameter_the_command_line_sets(tmp_path, monkeypatch):
    """``atkit notebook results --set query=...`` reaches papermill (its execution is stubbed: the query's effect on
    real runs is checked with the smoke runs in test_notebooks_train_ablation_results.py)."""
    import papermill

    from atkit.workbench.cli import main

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, parameters, **kw: seen.update(parameters))
    assert main(["notebook", "results", "--params", str(REPO / "parameters" / "smoke" / "results.yaml"),
                 "--out", str(tmp_path / "results"), "--set", "query=epochs >= 1", "--quiet"]) == 0
    assert seen["query"] == "epochs >= 1" and seen["outputs_dir"] == "outputs/smoke"


def test_smoke_parameter_sets_write_under_outputs_smoke_only(tmp_path):
    """Running a smoke set by hand never mixes its tiny runs into the user's outputs/runs."""
    for path in committed_notebook_files(tmp_path):
        declared = pm.inspect_notebook(str(path))
        params = yaml.safe_load((REPO / "parameters" / "smoke" / f"{path.stem}.yaml").read_text())
        for key in ("runs_dir", "out_dir", "outputs_dir"):
            if key in declared:
                assert str(params.get(key, "")).startswith("outputs/smoke/") or params.get(key) == "outputs/smoke", (
                    path.stem, key, params.get(key))


def _tiny_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from atkit.workbench.widgets import interactive_mode\nprint('interactive:', interactive_mode(None))")]
    nbformat.write(nb, str(path))
    return path


def _printed(executed):
    nb = nbformat.read(str(executed), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_interactive_mode_is_the_ui_in_a_kernel_and_batch_under_papermill(tmp_path):
    assert interactive_mode(True) is True and interactive_mode(False) is False
    assert interactive_mode(None) is False  # plain Python: no front end
    with pytest.raises(ConfigError, match="INTERACTIVE='yes'"):
        interactive_mode("yes")
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    # papermill with parameters (as every papermill command line of the README): its injected cell says batch.
    pm.execute_notebook(str(nb), str(tmp_path / "batch.ipynb"), parameters={"x": 2}, progress_bar=False)
    assert "interactive: False" in _printed(tmp_path / "batch.ipynb")
    # The same kernel without papermill's cell (as a front end runs it) gets the UI.
    pm.execute_notebook(str(nb), str(tmp_path / "ui.ipynb"), progress_bar=False)
    assert "interactive: True" in _printed(tmp_path / "ui.ipynb")


def test_ablation_batch_mode_with_an_empty_plan_is_an_error(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="batch mode has nothing to run"):
        run_notebook("ablation", str(REPO / "parameters" / "smoke" / "ablation.yaml"), str(tmp_path / "a"),
                     device="cpu", extra={"seeds": [], "runs_dir": str(tmp_path / "runs")}, progress=False)
