"""The project stands on its own: no pointers to files a user does not have, papers cited by short name with
an entry in docs/references.md, a valid CITATION.cff, and a licence that matches the package metadata."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from atkit.experiments import reference
from atkit.core.utils import ConfigError
from atkit.workbench.strip_outputs import strip_outputs

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("atkit", "notebooks", "parameters", "docs", "benchmarks", "tests", "README.md", "Makefile", "CITATION.cff",
           "pyproject.toml")
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", "outputs", "data", ".pytest_cache"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".ipynb", ".json", ".txt", ".cff", ".toml", ".cfg", ".sh"}

# What a user of a clone does not have, or what reads as a random seed rather than a paper.
FORBIDDEN = {
    "a path into the development machine's shared folder": re.compile(r"\.\./shared|(?<![\w.])shared/(?:seeds|data)\b"),
    "an absolute path of the development machine": re.compile(r"(?<![\w.~])/(?:work|home|root|tmp)/[\w.-]"),
    "a paper cited by seed number": re.compile(r"\bseeds?[-_ ]?00[0-4](?!\d)", re.IGNORECASE),
    "the development specification": re.compile(r"REFERENCE\.md|\bREFERENCE\b(?!S)"),
}
# A citation in the field's form: short name, then a figure, table, equation, section, appendix or algorithm.
CITATION = re.compile(r"\b(RPAT|RAAT|DUCAT|FAIT/MER)(?: paper)?, (?:Figs?\.|Tables?|Eqs?\.|Secs?\.|App\.|Algorithm)")
REQUIRED_CFF_KEYS = ("cff-version", "message", "title", "authors")


def shipped_files(root: Path = ROOT) -> list[Path]:
    """Text files of the shipped tree (this test excluded: it has to spell out what it forbids)."""
    out = []
    for name in SHIPPED:
        top = root / name
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else []
        for path in paths:
            if SKIP_DIRS & set(path.relative_to(root).parts) or path == Path(__file__).resolve():
                continue
            if path.suffix in TEXT_SUFFIXES or path.name == "Makefile":
                out.append(path)
    return out


def forbidden_mentions(paths: list[Path], root: Path = ROOT) -> list[str]:
    """``file:line: what (the text)`` for every forbidden mention in ``paths``."""
    hits = []
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".ipynb":  # as git stores it: outputs of a user's run (their own paths) are not shipped
            text = strip_outputs(text)
        for number, line in enumerate(text.splitlines(), start=1):
            for what, pattern in FORBIDDEN.items():
                match = pattern.search(line)
                if match:
                    hits.append(f"{path.relative_to(root)}:{number}: {what} ({match.group(0)!r})")
    return hits


def test_the_scan_sees_the_shipped_tree_and_flags_each_forbidden_form(tmp_path):
    files = {p.relative_to(ROOT).as_posix() for p in shipped_files()}
    assert {"README.md", "Makefile", "atkit/experiments/reference.py", "notebooks/results.ipynb", "docs/references.md",
            "parameters/paper/results.yaml", "CITATION.cff"} <= files
    assert "tests/test_docs.py" not in files
    bad = {"see ../shared/REFERENCE.md", "data in /work/shared/data", "Table 1 of seed 002", "seeds 002/001",
           "parameters/paper/ablation/seed004_table1_lambda.yaml", "REFERENCE section 3"}
    fine = {"seed: 0", "three seeds, seed 0 and seed 1", "reference.REFERENCES", "RPAT, Fig. 2",
            "shared statistics", "outputs/runs/<method>-s<seed>/"}
    for i, text in enumerate(sorted(bad | fine)):
        (tmp_path / f"f{i}.md").write_text(f"line one\n{text}\n")
    hits = forbidden_mentions(sorted(tmp_path.glob("*.md")), root=tmp_path)
    flagged = {(tmp_path / h.split(":")[0]).read_text().splitlines()[1] for h in hits}
    assert flagged == bad and all(":2: " in h for h in hits)


def test_the_scan_reads_a_notebook_as_git_stores_it_not_the_outputs_of_a_users_run(tmp_path):
    import nbformat  # why: only this test builds a notebook

    cell = nbformat.v4.new_code_cell("print('see /work/x')", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="run in /home/alice/outputs/runs\n")]
    nb = nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    (tmp_path / "a.ipynb").write_text(nbformat.writes(nb), encoding="utf-8")
    hits = forbidden_mentions([tmp_path / "a.ipynb"], root=tmp_path)
    assert len(hits) == 1 and "'/work/x'" in hits[0]


def test_the_shipped_tree_names_no_seed_number_shared_path_absolute_path_or_reference_md():
    hits = forbidden_mentions(shipped_files())
    assert not hits, "\n".join(hits)


def _reference_entries() -> dict[str, str]:
    """Short name -> its section of docs/references.md (``### NAME`` headings; "FAIT/MER paper" -> FAIT/MER)."""
    text = (ROOT / "docs" / "references.md").read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    return {s.splitlines()[0].strip().removesuffix(" paper"): s for s in sections}


def test_every_cited_paper_has_a_full_entry_in_references_md():
    entries = _reference_entries()
    cited = {m.group(1) for path in shipped_files() for m in CITATION.finditer(path.read_text(encoding="utf-8"))}
    assert {"RPAT", "RAAT", "DUCAT", "FAIT/MER"} <= cited  # the scan finds the citations it is meant to check
    sources = {r.source for r in reference.REFERENCES}
    assert sources == set(reference.PAPERS)
    for name in cited | sources:
        assert name in entries, f"{name} is cited but has no '### {name}' entry in docs/references.md"
        entry = entries[name]
        assert re.search(r"\*\*[^*]{20,}\.\*\*", entry), f"{name}: no title in bold"
        assert re.search(r"\b(19|20)\d\d\b", entry), f"{name}: no year"
        arxiv = re.search(r"arXiv:\[?(\d{4}\.\d{4,5})", entry)
        assert arxiv, f"{name}: no arXiv id"
        assert arxiv.group(1) in reference.PAPERS[name]  # atkit.experiments.reference names the same paper


def test_every_docs_page_is_linked_from_the_readme_and_every_relative_link_resolves():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in readme, f"docs/{page.name} is not linked from the README"
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
             ROOT / "results" / "cifar10-cpu" / "README.md"]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
    methods = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    from atkit.methods.registry import describe_methods

    for described in describe_methods():
        name = described["name"].replace("<base>", "")
        assert f"`{name}`" in methods or f"`<base>{name}`" in methods, f"method {name} missing from docs/methods.md"


def test_citation_cff_is_valid_yaml_with_the_required_keys_and_the_package_licence():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    for key in REQUIRED_CFF_KEYS:
        assert cff.get(key), key
    assert cff["cff-version"] == "1.2.0"
    assert all(isinstance(a, dict) and (a.get("name") or a.get("family-names")) for a in cff["authors"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT" == cff["license"]  # SPDX string form, not the deprecated table
    assert cff["version"] == project["version"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert "LICENSE" in project["license-files"]


def test_reference_tables_are_keyed_by_paper_short_name():
    assert reference.select(["RPAT, Table 1"]) == reference.select(["RPAT / Table 1"]) == reference.select(["rpat/1"])
    assert reference.select(["FAIT/MER / Table 4"]) == reference.select(["mer table 4"])
    assert {r.source for r in reference.select(["DUCAT / Table 1"])} == {"DUCAT"}
    with pytest.raises(ConfigError, match=r"'seed 002 / Table 1'.*RPAT / Table 1"):
        reference.select(["seed 002 / Table 1"])
    with pytest.raises(ConfigError, match="RAAT / Table 1"):  # RAAT's Table 1 is not carried
        reference.select(["RAAT / Table 1"])
