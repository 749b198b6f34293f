"""Run reuse (atkit.training.runs): an identical finished run is reused only when it was trained on the same bytes; one
policy (reuse_action) decides reuse, resume or refuse for open_run and train_or_load alike."""
import json
from pathlib import Path

import pytest
import torch

from atkit.training.config import RunConfig
from atkit.data import load_dataset
from atkit.training.runs import data_fingerprint, find_run, open_run, reuse_action, select_run, train_or_load
from atkit.training.trainer import Trainer, train
from atkit.core.utils import ConfigError, FolderLock

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


# ------------------------------------------------------------------------------ the one reuse policy
@pytest.mark.parametrize("status, locked, action", [
    ("finished", False, "reuse"), ("finished", True, "refuse"),
    ("stopped", False, "resume"), ("stopped", True, "refuse"),
    ("interrupted", False, "resume"), ("interrupted", True, "refuse"),
    ("running", False, "resume"),  # its process died: the kernel freed the lock
    ("running", True, "refuse"),  # another live process trains there
    ("failed", False, "refuse"), ("created", False, "refuse"), (None, False, "refuse"), ("bogus", False, "refuse"),
])
def test_reuse_policy_table(status, locked, action):
    assert reuse_action(status, locked) == action


def _fake_run(cfg, name, status, fingerprint):
    """A run folder as the trainer leaves it, without training: config.yaml and metrics.json."""
    run_dir = Path(cfg.out_dir) / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    (run_dir / "metrics.json").write_text(json.dumps({"status": status, "data_fingerprint": fingerprint}))
    return run_dir


def test_select_run_prefers_finished_then_the_newest_resumable_and_never_a_failed_or_busy_one(tmp_path):
    cfg = tiny(tmp_path)
    fp = data_fingerprint(cfg)
    assert select_run(cfg) == (None, None)
    _fake_run(cfg, "a-failed", "failed", fp)
    _fake_run(cfg, "b-created", "created", fp)
    assert select_run(cfg) == (None, None)  # failed and never-started runs are left alone: a new run starts
    stopped = _fake_run(cfg, "c-stopped", "stopped", fp)
    assert select_run(cfg) == ("resume", stopped)
    dead = _fake_run(cfg, "d-running", "running", fp)  # its process died: the lock is free
    assert select_run(cfg) == ("resume", dead)
    with FolderLock(dead):  # a live process holds it now: the older stopped run is resumed instead
        assert select_run(cfg) == ("resume", stopped)
    finished = _fake_run(cfg, "a0-finished", "finished", fp)  # older than every other folder
    assert select_run(cfg) == ("reuse", finished)
    with FolderLock(finished):  # being evaluated by another process: left alone
        assert select_run(cfg) == ("resume", dead)
    assert select_run(tiny(tmp_path, lr=0.05)) == (None, None)  # another setting matches nothing


def test_open_run_and_train_or_load_resume_the_same_stopped_run(tmp_path):
    cfg = tiny(tmp_path, epochs=2)
    stopped = Trainer.new(cfg, progress=False, on_step=lambda trainer, steps: trainer.request_stop())
    stopped.fit()
    assert stopped.status == "stopped" and stopped.epoch == 1
    trainer, how = open_run(cfg, progress=False)
    assert how == "resumed" and trainer.run_dir == stopped.run_dir and trainer.epoch == 1
    _, run_dir, reused = train_or_load(cfg, progress=False)  # before the one policy, this trained a new run
    assert run_dir == stopped.run_dir and not reused
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
    trainer, how = open_run(cfg, progress=False)
    assert how == "reused" and trainer.run_dir == run_dir
