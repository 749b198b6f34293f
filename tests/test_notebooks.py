"""Each notebook runs under papermill with its smoke parameters and writes the files it promises."""
import json

import pandas as pd
import pytest

from atkit.cli import run_notebook
from atkit.utils import ConfigError
from helpers import run_smoke_notebook


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
    per_sample = pd.read_csv(out / "mse_per_sample.csv")
    assert len(per_sample) == 3 * metrics["n_eval"] and (per_sample["mse"] >= 0).all()
    # A second execution reuses the three finished runs instead of training again.
    runs_before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    run_smoke_notebook("mse_perception", tmp_path)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == runs_before


def test_unknown_notebook_parameter_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="epochz"):
        run_notebook("mse_perception", None, str(tmp_path / "x"), extra={"epochz": 3}, progress=False)
