"""TensorBoard scalars (``logging: {tensorboard: true}``): read back with TensorBoard's EventAccumulator, they
equal metrics.csv and eval.json; a resumed run neither loses nor doubles an epoch; a missing package is one line."""
import csv
import json
import math
import sys

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from atkit.training.config import load_config  # noqa: E402
from atkit.training.trainer import Trainer, train  # noqa: E402
from atkit.core.utils import ConfigError  # noqa: E402


def _config(tmp_path, epochs=2, **extra):
    return load_config({"method": "pgd_at", "dataset": "synthetic", "data": {"n_train": 64, "n_test": 16},
                        "model": "small_cnn", "threat": {"steps": 1}, "schedule": "constant", "epochs": epochs,
                        "batch_size": 32, "max_steps_per_epoch": 1, "device": "cpu", "out_dir": str(tmp_path / "runs"),
                        "eval": {"n_test": 16, "pgd_steps": 1, "batch_size": 16, "final_attacks": ["clean", "pgd1"],
                                 "sanity": False},
                        "logging": {"tensorboard": True}, **extra})


def _scalars(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _csv_rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _assert_events_equal_csv(run_dir, scalars):
    rows = _csv_rows(run_dir)
    numeric = [k for k in rows[0] if k != "epoch"]
    assert {"train_loss", "lr", "train_time_s", "test_clean_acc", "test_pgd1_acc"} <= set(numeric)
    for key in numeric:
        events = scalars[key]
        assert [step for step, _ in events] == [int(r["epoch"]) for r in rows], key  # each epoch once, in order
        for (_, value), row in zip(events, rows):
            expected = float(row[key])
            assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected, rel=1e-6, abs=1e-6), key


def test_event_file_holds_the_metrics_csv_scalars_and_the_final_evaluation(tmp_path):
    trainer = train(_config(tmp_path), progress=False)
    scalars = _scalars(trainer.run_dir)
    _assert_events_equal_csv(trainer.run_dir, scalars)
    ev = json.loads((trainer.run_dir / "eval.json").read_text())
    for label in ("final", "best"):
        for attack in ("clean", "pgd1"):
            (step, value), = scalars[f"eval/{label}/{attack}_acc"]
            assert step == 2 and value == pytest.approx(ev[label]["accuracy"][attack], rel=1e-6)


def test_a_resumed_run_hides_what_a_killed_process_logged_and_misses_no_epoch(tmp_path):
    stop_after_first = [lambda t, record: t.request_stop()]
    trainer = Trainer.new(_config(tmp_path, epochs=3), progress=False, callbacks=stop_after_first)
    trainer.fit()
    assert trainer.status == "stopped" and trainer.epoch == 1
    # A process killed after logging epoch 2 but before its checkpoint: stale events beyond the last epoch.
    from torch.utils.tensorboard import SummaryWriter

    stale = SummaryWriter(str(trainer.run_dir / "tensorboard"))
    stale.add_scalar("train_loss", 1234.0, global_step=2)
    stale.add_scalar("train_loss", 5678.0, global_step=1)
    stale.close()

    resumed = train(None, resume=trainer.run_dir, progress=False, evaluate_final=False)
    resumed.close_tensorboard()
    assert resumed.status == "finished"
    _assert_events_equal_csv(resumed.run_dir, _scalars(resumed.run_dir))


def test_missing_tensorboard_is_one_line_naming_the_extra_before_any_run_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails as without the package
    with pytest.raises(ConfigError, match=r"pip install atkit\[tensorboard\]") as info:
        Trainer.new(_config(tmp_path), progress=False)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "runs").glob("*"))  # the run folder was removed again


def test_logging_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'tensorboard'"):
        _config(tmp_path, logging={"tensorbord": True})
    with pytest.raises(ConfigError, match="must be true or false"):
        _config(tmp_path, logging={"tensorboard": "yes"})
