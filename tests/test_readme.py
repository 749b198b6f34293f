"""The README's quick start runs as written and prints what the README says it prints."""
from __future__ import annotations

import re

from helpers import doc_block


def test_the_quick_start_trains_evaluates_and_prints_each_accuracy_with_its_interval(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATKIT_OUTPUTS", str(tmp_path / "outputs"))  # its run folder goes here, not into outputs/
    exec(compile(doc_block("README.md", "quick-start"), "README.md", "exec"), {"__name__": "quick_start"})
    printed = capsys.readouterr().out.splitlines()
    lines = [line for line in printed if re.match(r"^\s*(clean|pgd20|apgd|robust): ", line)]
    assert [line.split(":")[0].strip() for line in lines] == ["clean", "pgd20", "apgd", "robust"]
    for line in lines:
        assert re.search(r"\d+\.\d\d % \[\d+\.\d, \d+\.\d\] \(n=200\)", line), line
    assert "Mean" in lines[-1] and "NRR" in lines[-1]
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert [r.name for r in runs] == ["trades+rpat-synthetic-small_cnn-s0"] and (runs[0] / "eval.json").is_file()
