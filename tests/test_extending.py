"""The contributor's guide (docs/extending.md) shows what ships: each example block is the shipped file (or, for
the method, is executed by tests/test_method_contract.py), and each recipe names a contract test that exists and
runs over its registry."""
from __future__ import annotations

import re

from helpers import REPO, doc_block

GUIDE = "docs/extending.md"


def test_the_dataset_and_experiment_examples_are_the_shipped_files():
    assert doc_block(GUIDE, "adding-a-dataset") == "# atkit/data/arrays.py\n" + (
        REPO / "atkit" / "data" / "arrays.py").read_text().strip()
    assert doc_block(GUIDE, "adding-an-experiment") == "# atkit/experiments/robustness_loss.py\n" + (
        REPO / "atkit" / "experiments" / "robustness_loss.py").read_text().strip()
    assert doc_block(GUIDE, "adding-an-experiment-smoke") == (
        REPO / "parameters" / "smoke" / "robustness_loss.yaml").read_text().strip()


def test_every_recipe_names_a_contract_test_that_runs_over_its_registry():
    text = (REPO / GUIDE).read_text()
    registries = {"test_method_contract.py": "METHODS", "test_eval_attack_contract.py": "EVAL_ATTACKS",
                  "test_dataset_contract.py": "DATASETS", "test_experiment_contract.py": "EXPERIMENTS"}
    named = set(re.findall(r"\*\*Guarded by\*\* `tests/(test_\w+\.py)`", text))
    assert named == set(registries)
    for test, registry in registries.items():
        source = (REPO / "tests" / test).read_text()
        assert registry in source and "parametrize" in source, test
    # every file of the experiment recipe exists for the example
    for path in ("atkit/experiments/robustness_loss.py", "notebooks/robustness_loss.ipynb",
                 "parameters/smoke/robustness_loss.yaml", "parameters/demo/robustness_loss.yaml",
                 "tests/test_experiment_robustness_loss.py"):
        assert (REPO / path).is_file(), path
