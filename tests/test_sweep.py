"""Sweeps: grid expansion and point folders, parallel execution with papermill, failures that do not stop the
other points, restarts that skip finished points, and an interrupted sweep that keeps what it finished."""
import glob
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from nbformat.v4 import new_code_cell

from atkit.workbench.cli import main as cli_main
from atkit.workbench.sweep import SweepSpec, expand_grid, load_grid, make_points, point_params, run_sweep, worker_slots
from atkit.core.utils import set_dotted
from atkit.core.utils import ConfigError
from helpers import write_notebook

ROOT = Path(__file__).resolve().parent.parent


def _tiny_notebook(folder: Path) -> Path:
    """A notebook without torch: writes 2*value to result.json, raises for value == fail_on, sleeps `sleep` s."""
    params = new_code_cell('value = 1\nfail_on = None\nsleep = 0.0\nnested = {"a": 1, "b": 2}\nout_dir = "."\n')
    params.metadata["tags"] = ["parameters"]
    body = new_code_cell(
        "import json, pathlib, time\n"
        "time.sleep(sleep)\n"
        "if value == fail_on:\n"
        "    raise ValueError(f'point {value} fails on purpose')\n"
        "pathlib.Path(out_dir, 'result.json').write_text(json.dumps({'double': 2 * value, 'nested': nested}))\n")
    return write_notebook(folder / "nb" / "tiny.ipynb", params, body)


# ------------------------------------------------------------------------------------ the grid
def test_expand_grid_is_the_cartesian_product_then_the_explicit_points():
    points = expand_grid({"a": [1, 2], "b": ["x", "y", "z"]}, [{"a": 9}])
    assert points[:6] == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    assert points[6] == {"a": 9} and len(points) == 7
    assert expand_grid([{"a": [1]}, {"b": [2, 3]}]) == [{"a": 1}, {"b": 2}, {"b": 3}]
    assert expand_grid(None, None) == [{}]
    with pytest.raises(ConfigError, match="'a'"):
        expand_grid({"a": []})


def test_dotted_keys_set_one_entry_of_a_dict_parameter_without_touching_the_base():
    base = {"method_params": {"lam": 6.0, "rp_alpha": 0.5}, "epochs": 3}
    params = point_params(base, {"method_params.rp_alpha": 0.2, "epochs": 4})
    assert params == {"method_params": {"lam": 6.0, "rp_alpha": 0.2}, "epochs": 4}
    assert base["method_params"]["rp_alpha"] == 0.5  # the base is not modified
    d = {"x": 1}
    with pytest.raises(ConfigError, match="not a mapping"):
        set_dotted(d, "x.y", 2)


def test_point_folders_are_readable_unique_and_stable():
    spec = SweepSpec("tiny", {"value": 1, "nested": {"a": 1}}, expand_grid({"value": [1, 2], "nested.a": [0.5, 3]}))
    points = make_points(spec)
    folders = [p.folder for p in points]
    assert len(set(folders)) == 4
    assert folders[0].startswith("value=1_a=0.5-")
    # The same parameters give the same folder in another process / run, whatever the key order.
    again = make_points(SweepSpec("tiny", {"nested": {"a": 1}, "value": 1},
                                  expand_grid({"value": [1, 2], "nested.a": [0.5, 3]})))
    assert [p.folder for p in again] == folders
    # out_dir and device never change what a point computes, so they do not change its folder.
    moved = make_points(SweepSpec("tiny", {"value": 1, "nested": {"a": 1}, "out_dir": "/elsewhere", "device": "cuda"},
                                  expand_grid({"value": [1, 2], "nested.a": [0.5, 3]})))
    assert [p.folder for p in moved] == folders
    with pytest.raises(ConfigError, match="same parameters"):
        make_points(SweepSpec("tiny", {}, [{"value": 1}, {"value": 1}]))


def test_load_grid_reads_a_base_parameter_file_and_refuses_unknown_keys(tmp_path):
    (tmp_path / "base.yaml").write_text("value: 5\nsleep: 0.0\n")
    (tmp_path / "g.yaml").write_text("notebook: ablation\nbase: base.yaml\ngrid: {value: [1, 2]}\npoints: [{value: 7}]\n")
    spec = load_grid(tmp_path / "g.yaml")
    assert spec.notebook == "ablation" and spec.base == {"value": 5, "sleep": 0.0} and spec.name == "g"
    assert spec.points == [{"value": 1}, {"value": 2}, {"value": 7}]
    with pytest.raises(ConfigError, match="is for 'ablation'"):
        load_grid(tmp_path / "g.yaml", notebook="train")
    (tmp_path / "bad.yaml").write_text("notebook: ablation\ngrids: {value: [1]}\n")
    with pytest.raises(ConfigError, match="Did you mean 'grid'"):
        load_grid(tmp_path / "bad.yaml")


def test_set_options_change_every_points_base_before_the_grid_and_refuse_a_varied_key(tmp_path):
    (tmp_path / "g.yaml").write_text("notebook: ablation\nbase: {value: 5, nested: {a: 1, b: 2}}\n"
                                     "grid: {value: [1, 2]}\n")
    spec = load_grid(tmp_path / "g.yaml", sets=["nested.b=7", "sleep=0.5", "fail_on=[3, 4]"])
    assert spec.base == {"value": 5, "nested": {"a": 1, "b": 7}, "sleep": 0.5, "fail_on": [3, 4]}  # YAML values
    points = make_points(spec)
    assert [p.params["value"] for p in points] == [1, 2]  # the grid's values still apply on top
    assert all(p.params["nested"] == {"a": 1, "b": 7} and p.params["sleep"] == 0.5 for p in points)
    plain = make_points(load_grid(tmp_path / "g.yaml"))
    assert {p.key for p in points}.isdisjoint(p.key for p in plain)  # a --set changes what a point computes
    for key in ("value", "value.x"):
        with pytest.raises(ConfigError, match=f"--set {key}=...: the grid in .* varies 'value'"):
            load_grid(tmp_path / "g.yaml", sets=[f"{key}=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_grid(tmp_path / "g.yaml", sets=["nested.b"])


def test_worker_slots_one_per_gpu_or_cpu():
    assert worker_slots(gpus=[]) == [None]
    assert worker_slots(workers=3, gpus=[]) == [None, None, None]
    assert worker_slots(gpus=["0", "1"]) == ["0", "1"]
    assert worker_slots(workers=3, gpus=["0", "1"]) == ["0", "1", "0"]
    with pytest.raises(ConfigError):
        worker_slots(workers=0, gpus=[])


def test_an_unknown_notebook_parameter_is_refused_before_anything_runs(tmp_path):
    nb = _tiny_notebook(tmp_path)
    spec = SweepSpec(str(nb), {}, [{"valeu": 1}])
    with pytest.raises(ConfigError, match="Did you mean 'value'"):
        run_sweep(spec, tmp_path / "out", gpus=[], progress=False)
    assert not (tmp_path / "out").exists()


def test_notebook_lookup_and_parameter_check_are_one_implementation(tmp_path):
    import atkit.workbench.cli
    import atkit.workbench.notebooks as notebooks
    import atkit.workbench.sweep

    assert atkit.workbench.cli.run_notebook is notebooks.run_notebook and atkit.workbench.sweep.resolve_notebook is notebooks.resolve_notebook
    assert notebooks.resolve_notebook("ablation") == ROOT / "notebooks" / "ablation.ipynb"
    with pytest.raises(ConfigError, match="notebook 'ablaton' not found; available: .*ablation"):
        notebooks.resolve_notebook("ablaton")
    nb = _tiny_notebook(tmp_path)
    assert notebooks.resolve_notebook(str(nb)) == nb
    declared = notebooks.declared_parameters(nb)
    assert declared == ["value", "fail_on", "sleep", "nested", "out_dir"]
    notebooks.check_parameter_names(nb, ["value", "nested.a"], declared)  # a dotted name: its first part counts
    with pytest.raises(ConfigError, match=r"unknown parameter of notebook tiny.ipynb \(grid point 3\) 'nestd'"):
        notebooks.check_parameter_names(nb, ["nestd.a"], declared, " (grid point 3)")
    cmd = notebooks.papermill_command(nb, tmp_path / "out.ipynb", tmp_path / "p.yaml")
    assert cmd[cmd.index("-k") + 1] == notebooks.KERNEL_NAME and cmd[cmd.index("--cwd") + 1] == str(nb.parent.parent)


# ---------------------------------------------------------------------------------- execution
def test_failures_are_recorded_the_rest_runs_and_a_restart_skips_finished_points(tmp_path):
    nb = _tiny_notebook(tmp_path)
    spec = SweepSpec(str(nb), {"fail_on": 2, "nested": {"a": 1, "b": 2}},
                     expand_grid({"value": [1, 2, 3]}, [{"value": 4, "nested.b": 5}]))
    out = tmp_path / "out"
    results = run_sweep(spec, out, workers=2, gpus=[], progress=False)
    assert [r.status for r in results] == ["done", "failed", "done", "done"]
    assert "ValueError" in results[1].error and "fails on purpose" in results[1].error
    points = make_points(spec)
    for p, r in zip(points, results):
        folder = out / p.folder
        if r.status == "done":
            data = json.loads((folder / "result.json").read_text())
            assert data["double"] == 2 * p.params["value"]
            assert (folder / "_sweep_done.json").is_file() and (folder / "tiny.ipynb").is_file()
        else:
            assert not (folder / "result.json").exists() and not (folder / "_sweep_done.json").exists()
            assert "fails on purpose" in json.loads((folder / "_sweep_failed.json").read_text())["error"]
    assert json.loads((out / points[3].folder / "result.json").read_text())["nested"] == {"a": 1, "b": 5}
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["counts"]["done"] == 3 and summary["counts"]["failed"] == 1
    assert (out / "sweep.csv").read_text().count("\n") == 5

    stamps = {p.folder: (out / p.folder / "result.json").stat().st_mtime_ns for p in points if p.params["value"] != 2}
    again = run_sweep(spec, out, workers=2, gpus=[], progress=False)
    assert [r.status for r in again] == ["skipped", "failed", "skipped", "skipped"]
    assert {f: (out / f / "result.json").stat().st_mtime_ns for f in stamps} == stamps  # not executed again


def test_the_sweep_command_interrupted_keeps_finished_points_and_resumes(tmp_path):
    nb = _tiny_notebook(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(nb), "base": {"sleep": 1.5}, "grid": {"value": [1, 3, 5]}}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "atkit", "sweep", "-f", str(grid), "--out", str(out), "--workers", "1", "--gpus", "",
           "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    began = time.time()
    while not glob.glob(str(out / "*" / "_sweep_done.json")) and time.time() - began < 120 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, log
    summary = json.loads((out / "sweep.json").read_text())
    statuses = [p["status"] for p in summary["points"]]
    assert statuses[0] == "done" and "interrupted" in statuses[1:], statuses
    assert len(glob.glob(str(out / "*" / "_sweep_done.json"))) == statuses.count("done")

    rc = cli_main(["sweep", "-f", str(grid), "--out", str(out), "--workers", "2", "--gpus", "", "--quiet"])
    assert rc == 0
    summary = json.loads((out / "sweep.json").read_text())
    assert [p["status"] for p in summary["points"]][0] == "skipped"
    assert all(p["status"] in ("done", "skipped") for p in summary["points"])
    assert sorted(json.loads(Path(f).read_text())["double"] for f in glob.glob(str(out / "*" / "result.json"))) == [
        2, 6, 10]


def test_the_sweep_command_reports_a_failed_point_with_status_1(tmp_path, capsys):
    nb = _tiny_notebook(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": {"fail_on": 1}, "points": [{"value": 1}]}))
    assert cli_main(["sweep", str(nb), "-f", str(grid), "--out", str(tmp_path / "o"), "--gpus", "", "--quiet"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert cli_main(["sweep", str(nb), "-f", str(grid), "--out", str(tmp_path / "o"), "--dry-run"]) == 0


def test_the_sweep_command_set_option_reaches_every_point_and_is_checked(tmp_path, capsys):
    nb = _tiny_notebook(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": {"value": 1, "nested": {"a": 1, "b": 2}}, "grid": {"value": [3]}}))
    out = tmp_path / "o"
    assert cli_main(["sweep", str(nb), "-f", str(grid), "--out", str(out), "--gpus", "", "--quiet",
                     "--set", "nested.b=7"]) == 0
    (result,) = [json.loads(Path(f).read_text()) for f in glob.glob(str(out / "*" / "result.json"))]
    assert result == {"double": 6, "nested": {"a": 1, "b": 7}}
    capsys.readouterr()
    assert cli_main(["sweep", str(nb), "-f", str(grid), "--out", str(out), "--dry-run", "--set", "nested_b=7"]) == 2
    assert "Did you mean 'nested'" in capsys.readouterr().err  # an unknown parameter, before anything runs
