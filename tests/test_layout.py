"""The shape of the package: wings whose imports run one way, no import circles, no module over 600 lines, and the
imports of earlier versions that keep working or name their replacement (atkit._moved)."""
from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import atkit
from atkit._moved import GONE_NAMES, MOVED_MODULES, MOVED_NAMES

PACKAGE = Path(atkit.__file__).parent

#: What each wing may import besides itself (the "May import" sentence of each wing's docstring).
MAY_IMPORT = {
    "core": set(),
    "data": {"core"},
    "models": {"core"},
    "attacks": {"core"},
    "methods": {"core", "attacks", "models"},
    "evaluation": {"core", "attacks", "models"},
    "training": {"core", "data", "models", "attacks", "methods", "evaluation"},
    "experiments": {"core", "data", "models", "attacks", "methods", "evaluation", "training"},
    "workbench": {"core", "data", "models", "attacks", "methods", "evaluation", "training", "experiments"},
}
#: Files of the package face: the version, the finder of moved imports, ``python -m atkit``.
FACE = {"__init__", "_moved", "__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The atkit modules ``path`` imports (relative imports resolved; ``from pkg import submodule`` counted as
    the submodule)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("atkit"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() or (
                    PACKAGE.parent / sub.replace(".", "/") / "__init__.py").is_file()
                found.add(sub if is_module else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("atkit")}
    return found


def _files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _wing(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_import_runs_down_the_wings():
    wings = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert wings == set(MAY_IMPORT), "a wing was added or removed: give it a MAY_IMPORT row and a docstring"
    wrong = []
    for path in _files():
        module = _module_name(path)
        if module.split(".")[-1] in FACE and module.count(".") == 1 or module == "atkit":
            continue
        wing = _wing(module)
        for target in _imports(path):
            target_wing = _wing(target)
            if target == "atkit" or target_wing in FACE:  # the version string, the moved-imports table
                continue
            if target_wing != wing and target_wing not in MAY_IMPORT[wing]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the wings' order: " + ", ".join(wrong)


def test_no_import_circles_between_modules():
    """Module-level imports form no cycle (a deferred import inside a function says why in a comment)."""
    graph = {}
    for path in _files():
        module = _module_name(path)
        graph[module] = {t for t in _imports(path, top_level_only=True) if t != module}

    seen, on_path, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in on_path:
            cycle = on_path[on_path.index(node):] + [node]
            # a package face and its own members (registration by import, as evaluation/attacks) is not a circle
            if not all(a.startswith(b + ".") or b.startswith(a + ".") or a == b for a, b in zip(cycle, cycle[1:])):
                cycles.append(" -> ".join(cycle))
            return
        if node in seen or node not in graph:
            return
        seen.add(node)
        on_path.append(node)
        for target in sorted(graph[node]):
            visit(target)
        on_path.pop()

    for module in sorted(graph):
        visit(module)
    assert not cycles, cycles


def test_no_module_over_600_lines_and_every_wing_says_what_it_owns_and_may_import():
    long = {_module_name(p): n for p in _files() if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long
    for wing in MAY_IMPORT:
        doc = " ".join((importlib.import_module(f"atkit.{wing}").__doc__ or "").split()).lower()
        assert "owns" in doc, wing
        assert "may import" in doc or "imports nothing" in doc, wing


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_reads_and_writes_the_module_that_replaced_it(old, monkeypatch):
    module = importlib.import_module(old)
    new = importlib.import_module(MOVED_MODULES[old])
    public = [n for n in getattr(new, "__all__", dir(new)) if not n.startswith("_")][:5]
    for name in public:
        assert getattr(module, name) is getattr(new, name), (old, name)
    monkeypatch.setattr(module, "_atkit_layout_probe", 1, raising=False)
    assert new._atkit_layout_probe == 1  # a monkeypatch through the old path patches the real module


def test_the_public_imports_of_the_readme_and_the_issue_keep_working():
    from atkit.ablation import AblationSession
    from atkit.evaluate import evaluate
    from atkit.train import Trainer, train
    from atkit.workbench.ablation import AblationSession as new_session

    assert AblationSession is new_session
    assert evaluate is importlib.import_module("atkit.evaluation").evaluate
    assert Trainer is importlib.import_module("atkit.training").Trainer and callable(train)
    pytest.importorskip("ipywidgets")
    from atkit.widgets import AblationUI

    assert AblationUI is importlib.import_module("atkit.workbench.widgets").AblationUI


@pytest.mark.parametrize("old,name,home", [(old, name, home) for old, names in sorted(MOVED_NAMES.items())
                                          for name, home in sorted(names.items())])
def test_a_name_that_moved_on_keeps_working_with_a_warning_naming_its_new_import(old, name, home):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"from {home} import {name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(home), name)


@pytest.mark.parametrize("key", sorted(GONE_NAMES))
def test_a_gone_name_fails_with_its_replacement(key):
    module_name, name = key
    module = importlib.import_module(module_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ImportError, match="is gone from atkit: .+"):
            getattr(module, name)


def test_the_package_finds_its_checkout_its_notebooks_and_its_commit_from_its_new_place():
    """Paths computed from a module's own file move with it: the checkout, the notebooks and the git commit that
    every evaluation's provenance records."""
    import shutil
    import subprocess

    from atkit.core.paths import PACKAGE_DIR, project_root
    from atkit.core.provenance import git_commit
    from atkit.workbench.notebooks import NOTEBOOK_DIR

    assert PACKAGE_DIR == PACKAGE and project_root() == PACKAGE.parent
    assert (NOTEBOOK_DIR / "train.ipynb").is_file()
    if not (PACKAGE.parent / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: no commit to record")
    head = subprocess.run(["git", "-C", str(PACKAGE.parent), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert git_commit()[0] == head
