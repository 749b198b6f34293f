"""Run reuse (atkit.runs): an identical finished run is reused only when it was trained on the same bytes."""
import json

import pytest
import torch

from atkit.config import RunConfig
from atkit.data import load_dataset
from atkit.runs import find_run, train_or_load
from atkit.train import Trainer, train
from atkit.utils import ConfigError

TINY = dict(method="standard", dataset="synthetic", data={"n_train": 128, "n_test": 32, "image_size": 16},
            model="small_cnn", batch_size=64, schedule="constant", epochs=1, max_steps_per_epoch=1,
            eval={"n_test": 32, "pgd_steps": 0, "final_attacks": ["clean"]}, threat={"steps": 1})


def tiny(tmp_path, **kw):
    return RunConfig.from_dict({**TINY, "out_dir": str(tmp_path / "runs"), "device": "cpu", **kw})


def test_fingerprint_is_stable_and_sees_one_pixel():
    a = load_dataset("synthetic", n_train=64, n_test=16, image_size=16)
    b = load_dataset("synthetic", n_train=64, n_test=16, image_size=16)
    assert a.fingerprint() == b.fingerprint()
    b.test_x[3, 1, 5, 7] ^= 1
    assert a.fingerprint() != b.fingerprint()
    c = load_dataset("synthetic", n_train=64, n_test=16, image_size=16)
    c.train_y[0] = (c.train_y[0] + 1) % c.num_classes
    assert a.fingerprint() != c.fingerprint()


def test_finished_run_is_reused_and_records_its_data(tmp_path):
    cfg = tiny(tmp_path)
    _, first, reused = train_or_load(cfg, progress=False)
    assert not reused
    recorded = json.loads((first / "metrics.json").read_text())["data_fingerprint"]
    assert recorded == load_dataset("synthetic", **cfg.data).fingerprint()
    _, again, reused = train_or_load(cfg, progress=False)
    assert reused and again == first
    # A different configuration is not reused.
    _, other, reused = train_or_load(tiny(tmp_path, lr=0.05), progress=False)
    assert not reused and other != first


def test_run_on_other_bytes_is_not_reused(tmp_path):
    # Same configuration, but the run recorded other data (e.g. made by an older synthetic generator).
    cfg = tiny(tmp_path)
    _, first, _ = train_or_load(cfg, progress=False)
    metrics_path = first / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["data_fingerprint"] = "0" * 16
    metrics_path.write_text(json.dumps(metrics))
    assert find_run(cfg) is None
    assert find_run(cfg, check_data=False) == first
    _, second, reused = train_or_load(cfg, progress=False)
    assert not reused and second != first
    # A run that recorded no fingerprint at all is not reused either.
    del metrics["data_fingerprint"]
    metrics_path.write_text(json.dumps(metrics))
    assert find_run(cfg) == second


def test_resume_on_changed_data_is_refused(tmp_path):
    trainer = train(tiny(tmp_path), progress=False)
    last = trainer.run_dir / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    assert state["data_fingerprint"] == trainer.data_fingerprint
    Trainer.resume(trainer.run_dir, progress=False)  # the same data: accepted
    state["data_fingerprint"] = "f" * 16
    torch.save(state, last)
    with pytest.raises(ConfigError, match="fingerprint ffffffffffffffff"):
        Trainer.resume(trainer.run_dir, progress=False)


def test_bad_dataset_option_is_refused_before_a_run_folder_exists(tmp_path):
    with pytest.raises(ConfigError, match=r"'robust_strenght'.*accepted:.*robust_strength"):
        train(tiny(tmp_path, data={"n_train": 128, "robust_strenght": [0.0, 1.0]}), progress=False)
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    with pytest.raises(ConfigError, match=r"robust_strength=\[0.5, 0.2\] must satisfy 0 <= min <= max"):
        load_dataset("synthetic", n_train=8, n_test=8, robust_strength=[0.5, 0.2])
