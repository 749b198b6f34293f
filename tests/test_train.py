"""The trainer: a tiny run learns, runs never share a folder, resume is exact, bad configs are refused."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from atkit.training.config import RunConfig, load_config
from atkit.training.epoch import NonFiniteLossError
from atkit.training.trainer import Trainer, train
from atkit.training.checkpoints import load_model
from atkit.core.utils import ConfigError

TINY = dict(dataset="synthetic", data={"n_train": 256, "n_test": 64}, model="small_cnn", batch_size=64,
            schedule="constant", epochs=2, eval={"n_test": 64, "pgd_steps": 2, "final_attacks": ["clean"]},
            threat={"steps": 2})


def tiny(tmp_path, **kw):
    d = dict(TINY, out_dir=str(tmp_path / "runs"))
    d.update(kw)
    return RunConfig.from_dict(d)


def test_tiny_run_learns(tmp_path):
    # The pang110 shape scaled to 4 epochs decays the lr in the last epoch, as a real run does at 100/105.
    cfg = tiny(tmp_path, method="standard", data={"n_train": 1000, "n_test": 200}, epochs=4, lr=0.1,
               schedule="pang110", eval={"n_test": 200, "pgd_steps": 0, "final_attacks": ["clean"]})
    trainer = train(cfg, progress=False)
    losses = [r["train_loss"] for r in trainer.history]
    assert trainer.status == "finished"
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    # 10 balanced classes: chance is 10%; seeded, this run ends near 70%.
    assert trainer.history[-1]["test_clean_acc"] > 50.0
    files = {p.name for p in trainer.run_dir.iterdir()}
    assert {"config.yaml", "metrics.csv", "metrics.json", "eval.json", "checkpoints"} <= files
    rows = (trainer.run_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4 and "train_clean_acc" in rows[0]
    ev = json.loads((trainer.run_dir / "eval.json").read_text())
    assert set(ev) >= {"final", "best", "best_epoch"}


def test_runs_never_share_a_folder(tmp_path):
    a = Trainer.new(tiny(tmp_path, name="same"), progress=False)
    b = Trainer.new(tiny(tmp_path, name="same"), progress=False)
    assert a.run_dir != b.run_dir and a.run_dir.name == "same" and b.run_dir.name == "same-2"


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_is_exact(tmp_path):
    cfg = tiny(tmp_path, method="pgd_at", epochs=2, ema_decay=0.9)
    straight = train(cfg, progress=False, evaluate_final=False)

    cut = tiny(tmp_path, method="pgd_at", epochs=2, ema_decay=0.9)
    partial = Trainer.new(cut, progress=False)
    partial.epochs = 1  # stop after the first epoch, as a killed run would have
    partial.fit()
    assert partial.epoch == 1
    resumed = Trainer.resume(partial.run_dir, progress=False)
    assert resumed.epoch == 1 and resumed.epochs == 2
    resumed.fit()
    for k, v in _weights(straight.model).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for k, v in straight.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k
    h1, h2 = straight.history, resumed.history
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert [r["test_pgd2_acc"] for r in h1] == [r["test_pgd2_acc"] for r in h2]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = tiny(tmp_path, method="standard", epochs=3)
    trainer = Trainer.new(cfg, progress=False)
    trainer.epochs = 1
    trainer.fit()
    good = torch.load(trainer.run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    trainer = Trainer.resume(trainer.run_dir, progress=False)
    original = trainer.method.loss

    def exploding(model, batch, ctx):
        out = original(model, batch, ctx)
        if ctx.step == 2:
            out.loss = out.loss * float("nan")
        return out

    trainer.method.loss = exploding
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 2"):
        trainer.fit()
    metrics = json.loads((trainer.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "step 2" in metrics["error"]
    kept = torch.load(trainer.run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_config_errors_name_key_and_accepted(tmp_path):
    with pytest.raises(ConfigError, match="'epochs'"):
        RunConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="'pgd_at'"):
        RunConfig.from_dict({"method": "pgd-at"})
    with pytest.raises(ConfigError, match="'resnet18'"):
        RunConfig.from_dict({"model": "resnet-18"})
    with pytest.raises(ConfigError, match="'synthetic'"):
        RunConfig.from_dict({"dataset": "synthtic"})
    with pytest.raises(ConfigError, match="8/255"):
        RunConfig.from_dict({"threat": {"eps": 8}})
    with pytest.raises(ConfigError, match="'pang110'"):
        RunConfig.from_dict({"schedule": "pang"})
    with pytest.raises(ConfigError, match="eval config key"):
        RunConfig.from_dict({"eval": {"n_tests": 5}})
    with pytest.raises(ConfigError, match="lam"):
        RunConfig.from_dict({"method": "trades", "method_params": {"lambda": 6}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_schedule_defaults_and_scaling():
    cfg = RunConfig.from_dict({"schedule": "fait100"})
    assert cfg.resolved_batch_size() == 512 and cfg.resolved_lr() == 0.4 and cfg.resolved_epochs() == 100
    sched = cfg.resolved_schedule()
    assert sched.multiplier(0.0) < 0.01 and sched.multiplier(5.0) == 1.0
    assert sched.multiplier(80) == pytest.approx(0.1) and sched.multiplier(95) == pytest.approx(0.01)
    short = RunConfig.from_dict({"schedule": "pang110", "epochs": 11}).resolved_schedule()
    assert short.multiplier(9.9) == 1.0 and short.multiplier(10.0) == pytest.approx(0.1)
    rebat = RunConfig.from_dict({"schedule": "rebat"}).resolved_schedule()
    assert rebat.multiplier(120) == pytest.approx(0.5) and rebat.multiplier(160) == pytest.approx(0.25)


def test_checkpoint_from_other_model_is_refused(tmp_path):
    trainer = Trainer.new(tiny(tmp_path, method="standard", epochs=1), progress=False)
    trainer.fit()
    other = tiny(tmp_path, method="standard", model="resnet18", epochs=1,
                 init_checkpoint=str(trainer.run_dir / "checkpoints" / "last.pt"))
    with pytest.raises(ConfigError, match="small_cnn"):
        Trainer.new(other, progress=False)
    model = load_model(trainer.run_dir)
    assert model.num_classes == 10 and not model.training


def test_cli_train_and_bad_yaml(tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(dict(TINY, method="standard", epochs=1, out_dir=str(tmp_path / "runs"))))
    done = subprocess.run([sys.executable, "-m", "atkit", "train", str(cfg_path), "--quiet"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run_dir = Path(json.loads(done.stdout.strip().splitlines()[-1])["run_dir"])
    assert (run_dir / "eval.json").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: pgd_at\nlearning_rate: 0.1\n")
    done = subprocess.run([sys.executable, "-m", "atkit", "train", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "learning_rate" in done.stderr and "Accepted" in done.stderr


def test_last_batch_policy():
    from atkit.training.config import drop_last_batch

    # The standard datasets at their standard batch sizes keep every image, as the papers' code does.
    assert not drop_last_batch(50000, 128) and not drop_last_batch(50000, 512) and not drop_last_batch(73257, 128)
    assert not drop_last_batch(100000, 128)  # 32 left: exactly a quarter, kept
    # A handful of images does not get a full-lr step with BatchNorm statistics of its own.
    assert drop_last_batch(5000, 128)  # 8 left
    assert not drop_last_batch(5000, 128, "keep") and drop_last_batch(50000, 128, "drop")
    assert not drop_last_batch(5120, 128, "drop")  # nothing to drop
    with pytest.raises(ConfigError, match="sometimes"):
        drop_last_batch(5000, 128, "sometimes")


def test_last_batch_setting_reaches_the_trainer(tmp_path):
    data = {"n_train": 520, "n_test": 64, "image_size": 16}  # 520 = 8 x 64 + 8
    auto = Trainer.new(tiny(tmp_path, method="standard", data=data), progress=False)
    keep = Trainer.new(tiny(tmp_path, method="standard", data=data, last_batch="keep"), progress=False)
    assert auto.steps_per_epoch == 8 and keep.steps_per_epoch == 9
    assert sum(len(b.y) for b in auto.loader) == 512 and sum(len(b.y) for b in keep.loader) == 520
    with pytest.raises(ConfigError, match=r"unknown last_batch 'sometimes'\. Accepted: auto, drop, keep"):
        tiny(tmp_path, method="standard", last_batch="sometimes").validate()


def test_the_step_callback_sees_every_step_and_a_stop_from_it_ends_the_run_cleanly(tmp_path):
    cfg = tiny(tmp_path, method="standard", epochs=2, max_steps_per_epoch=3,
               eval={"n_test": 64, "pgd_steps": 0, "final_attacks": ["clean"]})
    seen = []
    full = Trainer.new(cfg, progress=False, on_step=lambda t, steps: seen.append((t.epoch, steps)))
    full.fit()
    assert seen == [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (1, 6)]  # (epoch running, steps since the start)

    def stop_at_five(trainer, steps):
        seen.append(steps)
        if steps == 5:
            trainer.request_stop()

    seen.clear()
    stopped = Trainer.new(cfg, progress=False, on_step=stop_at_five)
    stopped.fit()
    assert seen == [1, 2, 3, 4, 5] and stopped.status == "stopped"  # no step after the stop
    assert [r["epoch"] for r in stopped.history] == [1] and stopped.partial_record["steps"] == 2
    resumed = Trainer.resume(stopped.run_dir, progress=False)
    resumed.step_callbacks.append(lambda t, steps: seen.append(steps))
    seen.clear()
    resumed.fit()
    assert seen == [4, 5, 6] and resumed.status == "finished"  # epoch 2 again from its start, numbered on
