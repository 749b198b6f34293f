"""Running a notebook never shows up in git: the clean filter of ``make install`` (atkit.workbench.strip_outputs)
strips what JupyterLab and papermill add, leaves every committed notebook byte-identical and keeps a person's edits;
the Makefile's git commands set it up in a checkout (tried on a temporary repository, never this one)."""
import json
import os
import shutil
import subprocess
import sys

import nbformat
import papermill as pm
import pytest

from atkit.workbench.notebooks import KERNEL_NAME
from atkit.workbench.strip_outputs import KERNELSPEC, refresh_git_status, strip_outputs
from helpers import REPO, committed_notebooks

FILTER = "atkit-strip-outputs"


def ran_in_jupyterlab(text: str) -> str:
    """``text`` (a notebook) as JupyterLab saves it after a run: outputs (text, an image, a widget view), execution
    counts and timings, collapsed/scrolled view state, saved widget state, the local kernel's names, and papermill's
    injected cell and metadata from an earlier papermill run over the same file."""
    nb = nbformat.reads(text, as_version=4)
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        cell.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text="epoch 1: clean 81.2 %\nrun in ~/atkit/outputs/runs/x\n"),
            nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
            nbformat.v4.new_output("execute_result", execution_count=count, data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                             "version_minor": 0}, "text/plain": "VBox()"}),
        ]
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
        cell.metadata["scrolled"] = True
        cell.metadata["collapsed"] = False
        cell.metadata.setdefault("jupyter", {})["outputs_hidden"] = True
        cell.metadata["papermill"] = {"duration": 1.0, "status": "completed"}
        cell.metadata.setdefault("tags", [])
    injected = nbformat.v4.new_code_cell("# Parameters\nINTERACTIVE = True\n", execution_count=99)
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(2, injected)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                                    "mimetype": "text/x-python", "name": "python", "pygments_lexer": "ipython3",
                                    "version": "3.11.7"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    nb.metadata["papermill"] = {"parameters": {"INTERACTIVE": True}, "duration": 12.5}
    return nbformat.writes(nb) + "\n"


def test_the_filter_leaves_every_committed_notebook_byte_identical_and_writes_what_nbformat_writes():
    notebooks = committed_notebooks()
    assert len(notebooks) == 8
    for name, text in notebooks.items():
        assert strip_outputs(text) == text, name
        # The form JupyterLab saves (nbformat's writer): stripping never reformats a saved notebook.
        assert nbformat.writes(nbformat.reads(text, as_version=4)) + "\n" == text, name
    assert KERNELSPEC["name"] == KERNEL_NAME


@pytest.mark.parametrize("name", ["ablation", "train", "results"])
def test_a_notebook_run_in_jupyterlab_strips_to_its_committed_form_and_stripping_is_idempotent(name):
    committed = committed_notebooks()[name]
    ran = ran_in_jupyterlab(committed)
    assert ran != committed and '"outputs": []' not in ran.split('"source"')[1]
    stripped = strip_outputs(ran)
    assert stripped == committed
    assert strip_outputs(stripped) == stripped


def test_a_notebook_papermill_executed_strips_to_the_notebook_it_ran(tmp_path):
    cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("# x\nprinted below"),
             nbformat.v4.new_code_cell("print(x)\nx")]
    cells[0].metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    original = nbformat.writes(nb) + "\n"  # the metadata every committed notebook has
    (tmp_path / "tiny.ipynb").write_text(original, encoding="utf-8")
    pm.execute_notebook(str(tmp_path / "tiny.ipynb"), str(tmp_path / "ran.ipynb"), parameters={"x": 2},
                        progress_bar=False)
    ran = (tmp_path / "ran.ipynb").read_text(encoding="utf-8")
    assert "injected-parameters" in ran and '"2\\n"' in ran and '"papermill"' in ran
    assert strip_outputs(ran) == original


def test_what_a_person_wrote_survives_the_filter():
    committed = committed_notebooks()["ablation"]
    nb = json.loads(committed)
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] = [line.replace("seeds = [0]", "seeds = [0, 1]") for line in params["source"]]
    nb["cells"][0]["source"][-1] += "\n"
    nb["cells"][0]["source"].append("A note of mine.")
    nb["cells"][-1]["metadata"] = {"tags": ["keep-me"], "jupyter": {"source_hidden": True}}
    edited = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False, separators=(",", ": ")) + "\n"
    stripped = strip_outputs(ran_in_jupyterlab(edited))
    assert stripped == edited != committed
    assert "seeds = [0, 1]" in stripped and "A note of mine." in stripped and '"keep-me"' in stripped


@pytest.mark.parametrize("data", [b"<<<<<<< HEAD\n{\n=======\n", b'["a list, not a notebook"]\n', b"\xff\xfe binary",
                                  b'{"cells": "not a list", "metadata": {}}'])
def test_what_is_not_a_notebook_passes_through_the_filter_unchanged(data):
    done = subprocess.run([sys.executable, "-m", "atkit.workbench.strip_outputs"], input=data, capture_output=True,
                          env=os.environ.copy(), cwd=REPO)
    assert done.returncode == 0 and done.stdout == data


def _git(repo, *args, **kwargs):
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, capture_output=True,
                          text=True, env=os.environ.copy(), **kwargs)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make")
def test_make_install_sets_up_the_filter_so_a_run_notebook_leaves_git_status_clean(tmp_path):
    repo = tmp_path / "clone"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / ".gitattributes", repo / ".gitattributes")
    committed = committed_notebooks()["ablation"]
    (repo / "notebooks" / "ablation.ipynb").write_text(committed, encoding="utf-8")
    # The Makefile's default interpreter, .venv/bin/python, relative to the checkout: here this test's Python.
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (repo / ".venv" / "bin" / "python").chmod(0o755)
    (repo / "pyproject.toml").touch()  # the install target's prerequisite
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "clean")

    # `make install` runs the notebook-filter target (its pip steps are not tried here: -n lists them).
    listed = subprocess.run(["make", "-n", "-f", str(REPO / "Makefile"), "-C", str(repo), "install"],
                            capture_output=True, text=True).stdout
    assert "git config filter.atkit-strip-outputs.clean" in listed
    made = subprocess.run(["make", "-f", str(REPO / "Makefile"), "-C", str(repo), "notebook-filter"],
                          capture_output=True, text=True, env=os.environ.copy())
    assert made.returncode == 0, made.stderr
    assert _git(repo, "config", "--get", f"filter.{FILTER}.clean").strip() == \
        ".venv/bin/python -m atkit.workbench.strip_outputs"

    # A user runs the notebook in JupyterLab: outputs on disk, no change for git (asked from a subfolder too).
    notebook = repo / "notebooks" / "ablation.ipynb"
    ran = ran_in_jupyterlab(committed)
    notebook.write_text(ran, encoding="utf-8")
    assert _git(repo, "diff") == "" and _git(repo / "notebooks", "diff") == ""
    # git status lists a file whose size changed without reading it; JupyterLab's post-save hook (make lab) records
    # the new size by a git add that stores nothing new.
    assert _git(repo, "status", "--porcelain") == " M notebooks/ablation.ipynb\n"
    assert refresh_git_status(os_path=str(notebook), model={"type": "notebook"}) is True
    assert _git(repo, "status", "--porcelain") == "" and _git(repo, "diff", "--cached") == ""
    assert notebook.read_text(encoding="utf-8") == ran  # the outputs stay on disk
    assert committed_notebooks(repo)["ablation"] == committed  # what the tests read
    # A real edit still shows, and the hook leaves it unstaged; a new notebook with outputs is stored stripped.
    notebook.write_text(ran.replace("seeds = [0]", "seeds = [1]"), encoding="utf-8")
    assert refresh_git_status(os_path=str(notebook)) is False
    assert _git(repo, "status", "--porcelain") == " M notebooks/ablation.ipynb\n"
    (repo / "notebooks" / "mine.ipynb").write_text(ran, encoding="utf-8")
    assert refresh_git_status(os_path=str(repo / "notebooks" / "mine.ipynb")) is False  # untracked: left alone
    _git(repo, "add", "notebooks/mine.ipynb")
    assert _git(repo, "show", ":notebooks/mine.ipynb") == committed
    # make lab passes the hook to JupyterLab.
    listed = subprocess.run(["make", "-n", "-f", str(REPO / "Makefile"), "-C", str(repo), "lab"],
                            capture_output=True, text=True).stdout
    assert "--ContentsManager.post_save_hook=atkit.workbench.strip_outputs.refresh_git_status" in listed


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_post_save_hook_does_nothing_where_the_filter_is_not_set_up(tmp_path):
    notebook = tmp_path / "notebooks" / "a.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(ran_in_jupyterlab(committed_notebooks()["train"]), encoding="utf-8")
    assert refresh_git_status(os_path=str(notebook)) is False  # not a git checkout
    shutil.copy(REPO / ".gitattributes", tmp_path / ".gitattributes")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "with outputs (no filter configured)")
    notebook.write_text(committed_notebooks()["train"], encoding="utf-8")
    assert refresh_git_status(os_path=str(notebook)) is False  # no filter in git config: git sees the change
    assert _git(tmp_path, "status", "--porcelain") == " M notebooks/a.ipynb\n"
    assert refresh_git_status(os_path=str(tmp_path / ".gitattributes")) is False  # not a notebook


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_post_save_hook_leaves_a_merge_conflict_unresolved(tmp_path):
    notebook = tmp_path / "notebooks" / "a.ipynb"
    notebook.parent.mkdir()
    shutil.copy(REPO / ".gitattributes", tmp_path / ".gitattributes")
    committed = committed_notebooks()["ablation"]
    notebook.write_text(committed, encoding="utf-8")
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", f"filter.{FILTER}.clean", f"{sys.executable} -m atkit.workbench.strip_outputs")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "base")
    _git(tmp_path, "checkout", "-q", "-b", "other")
    notebook.write_text(committed.replace("seeds = [0]", "seeds = [1]"), encoding="utf-8")
    _git(tmp_path, "commit", "-q", "-am", "other")
    _git(tmp_path, "checkout", "-q", "main")
    notebook.write_text(committed.replace("seeds = [0]", "seeds = [2]"), encoding="utf-8")
    _git(tmp_path, "commit", "-q", "-am", "main")
    merged = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "merge", "other"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert merged.returncode != 0 and "CONFLICT" in merged.stdout
    assert refresh_git_status(os_path=str(notebook)) is False
    assert _git(tmp_path, "ls-files", "--unmerged", "--", "notebooks/a.ipynb").strip()
