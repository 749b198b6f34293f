"""Parameter files reach the data users have: paper settings read torchvision's CIFAR-10, overrides need no edits."""
from __future__ import annotations

import yaml

from atkit.training.config import RunConfig, load_config, load_config_dict
from atkit.core.utils import apply_set_options
from helpers import REPO

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
