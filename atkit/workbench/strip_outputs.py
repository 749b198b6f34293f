"""The git clean filter of ``notebooks/*.ipynb``: what running a notebook adds never reaches a commit.

``make install`` registers it (``git config filter.atkit-strip-outputs.clean "<python> -m
atkit.workbench.strip_outputs"``) and ``.gitattributes`` applies it to ``notebooks/*.ipynb``, so git reads a notebook
that JupyterLab autosaved with outputs as the notebook without them: ``git status`` and ``git diff`` show no change
after a user runs one, and a commit never holds outputs. The working copy keeps its outputs; git only compares
and stores the stripped form. It is the mechanism of nbstripout (a clean filter), written out here so that it also
removes what papermill and JupyterLab add and nothing else.

Removed, because executing or saving a notebook adds it:

* every code cell's outputs and execution count;
* papermill's injected-parameters cell and its ``papermill`` metadata (notebook and cells);
* timing and view state in cell metadata (``execution``, ``ExecuteTime``, ``collapsed``, ``scrolled``,
  ``jupyter.outputs_hidden``, ``trusted``, an empty ``tags`` list), the notebook's saved widget state
  (``widgets``) and signature;
* what the local Jupyter writes about its kernel: ``language_info`` keeps only the language's name and
  ``kernelspec`` is the project's (:data:`KERNELSPEC`; every notebook runs with kernel ``python3``).

Kept, because a person wrote it: every cell's source (the parameters cell included: an edited default is a real
change that ``git diff`` should show), markdown, attachments, tags and any other metadata.

git lists a notebook whose file size changed as modified without reading it (a shortcut of its index), although
``git diff`` shows nothing and ``git add`` would store nothing new; :func:`refresh_git_status`, JupyterLab's
post-save hook under ``make lab``, runs that ``git add`` when git sees no change, so ``git status`` stays clean too.

The result is written the way nbformat writes a notebook (keys sorted, indent 1, multi-line sources as lists of
lines, a final newline), which is the form JupyterLab saves, so stripping is idempotent and leaves a committed clean
notebook byte-identical. Text that is not a JSON notebook passes through unchanged (a filter must never lose a
file). Standard library only, so git's many calls of the filter start fast.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# The kernelspec every notebook of the project names (:data:`atkit.workbench.notebooks.KERNEL_NAME`; a test checks
# that they agree). JupyterLab rewrites ``display_name`` as it calls the kernel locally ("Python 3 (ipykernel)").
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
NOTEBOOK_METADATA_DROPPED = ("papermill", "widgets", "signature", "orig_nbformat", "orig_nbformat_minor")
CELL_METADATA_DROPPED = ("execution", "ExecuteTime", "papermill", "collapsed", "scrolled", "trusted")
FILTER_NAME = "atkit-strip-outputs"  # the filter's name in .gitattributes and git config
INJECTED_TAG = "injected-parameters"  # papermill's tag on the cell it inserts after the parameters cell


def _is_notebook(nb: Any) -> bool:
    return isinstance(nb, dict) and isinstance(nb.get("cells"), list) and isinstance(nb.get("metadata"), dict)


def _strip_cell(cell: dict[str, Any]) -> None:
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    meta = cell.get("metadata")
    if isinstance(meta, dict):
        for key in CELL_METADATA_DROPPED:
            meta.pop(key, None)
        if meta.get("tags") == []:
            del meta["tags"]
        jupyter = meta.get("jupyter")
        if isinstance(jupyter, dict):
            jupyter.pop("outputs_hidden", None)
            if not jupyter:
                del meta["jupyter"]
    source = cell.get("source")
    if isinstance(source, str) and source:  # nbformat writes a multi-line source as its lines
        cell["source"] = source.splitlines(keepends=True)


def strip_notebook(nb: dict[str, Any]) -> dict[str, Any]:
    """``nb`` (a notebook as parsed JSON, changed in place and returned) without what running or saving adds."""
    nb["cells"] = [c for c in nb["cells"]
                   if not (isinstance(c, dict) and INJECTED_TAG in (c.get("metadata") or {}).get("tags", []))]
    for cell in nb["cells"]:
        if isinstance(cell, dict):
            _strip_cell(cell)
    meta = nb["metadata"]
    for key in NOTEBOOK_METADATA_DROPPED:
        meta.pop(key, None)
    if isinstance(meta.get("language_info"), dict) and "name" in meta["language_info"]:
        meta["language_info"] = {"name": meta["language_info"]["name"]}
    if "kernelspec" in meta:
        meta["kernelspec"] = dict(KERNELSPEC)
    return nb


def notebook_text(nb: dict[str, Any]) -> str:
    """``nb`` as nbformat writes it (``nbformat.writes`` plus the final newline ``nbformat.write`` adds)."""
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False, separators=(",", ": ")) + "\n"


def strip_outputs(text: str) -> str:
    """The stripped form of a notebook's text (see the module docstring); other text unchanged."""
    try:
        nb = json.loads(text)
    except ValueError:
        return text
    if not _is_notebook(nb):
        return text
    return notebook_text(strip_notebook(nb))


def refresh_git_status(os_path: str, model: Any = None, contents_manager: Any = None, **_: Any) -> bool:
    """JupyterLab's post-save hook (``make lab``): when git sees no change in a just-saved notebook that this filter
    covers (``git diff --quiet``: the stripped file equals git's index), ``git add`` it, which stores nothing new and
    only records the file's new size, so that ``git status`` stops listing it. A notebook with a real edit, one the
    filter does not cover or one outside a git checkout is left alone. Returns whether it ran ``git add``; never
    raises (a failing hook must not fail a save)."""
    path = Path(os_path)
    if path.suffix != ".ipynb":
        return False

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=path.parent, capture_output=True, text=True, timeout=120)

    try:
        attr = git("check-attr", "filter", "--", path.name)
        if attr.returncode != 0 or not attr.stdout.strip().endswith(f": filter: {FILTER_NAME}"):
            return False
        if not git("config", "--get", f"filter.{FILTER_NAME}.clean").stdout.strip():
            return False  # not set up (make install): git would see the outputs
        if git("ls-files", "--error-unmatch", "--", path.name).returncode != 0:
            return False  # not tracked: git status lists it as new whatever we do
        if git("ls-files", "--unmerged", "--", path.name).stdout.strip():
            return False  # a merge conflict: a git add would mark it resolved
        if git("diff", "--quiet", "--", path.name).returncode != 0:
            return False  # a real change (or an error): git status should show it
        return git("add", "--", path.name).returncode == 0
    except (OSError, subprocess.SubprocessError) as e:
        log = getattr(contents_manager, "log", None)
        if log is not None:
            log.warning("atkit: could not refresh git status of %s: %s", os_path, e)
        return False


def main() -> int:
    """The clean filter: a notebook on stdin, its stripped form on stdout (bytes that are not UTF-8 pass through)."""
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        sys.stdout.buffer.write(data)
        return 0
    sys.stdout.buffer.write(strip_outputs(text).encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
