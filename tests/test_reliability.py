"""Hostile but fair input and faults: a named one-line error before any work (key, bad value, what is
accepted), no run "finished" without a training step, no result overwritten or lost, no run folder shared
by two live processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from PIL import Image

import atkit.core.utils
from atkit.workbench.cli import main
from atkit.workbench.notebooks import run_notebook
from atkit.training.config import RunConfig, drop_last_batch
from atkit.data import load_dataset
from atkit.training.runs import find_run
from atkit.training.epoch import NonFiniteLossError
from atkit.training.trainer import Trainer, train
from atkit.core.utils import ConfigError, FolderLock, RunInUseError, atomic_write_text, claim_output_folder

REPO = Path(__file__).resolve().parent.parent
# 16 px images, a narrow small_cnn, one epoch of 2 steps (128 / 64) with a 1-step attack: about a second.
RUN = dict(method="pgd_at", dataset="synthetic", data={"n_train": 128, "n_test": 16, "image_size": 16},
           model="small_cnn", model_params={"width": 4, "hidden": 16}, batch_size=64, schedule="constant",
           epochs=1, threat={"steps": 1}, device="cpu", name="run",
           eval={"n_test": 16, "pgd_steps": 1, "select_by": "clean", "final_attacks": ["clean"], "sanity": False})

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path: Path, **kw) -> dict:
    return {**RUN, "out_dir": str(tmp_path / "runs"), **kw}


def _folders(tmp_path: Path) -> list[Path]:
    runs = tmp_path / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("ATKIT_TEST_STOP", None)
    return env


# ------------------------------------------------------------------------------ lost or wrong results
def test_the_only_batch_is_never_dropped(tmp_path):
    # 16 images at batch 128: the last-batch rule used to drop the only batch, giving 0-step "finished" runs.
    assert not drop_last_batch(16, 128, "auto") and not drop_last_batch(16, 128, "drop")
    trainer = train(_config(tmp_path, data={"n_train": 16, "n_test": 16, "image_size": 16}, batch_size=128,
                            last_batch="drop"), progress=False, evaluate_final=False)
    assert trainer.steps_per_epoch == 1
    assert [r["steps"] for r in trainer.history] == [1]


def test_an_epoch_without_a_step_is_an_error(tmp_path):
    class EmptyLoader:  # yields no batch at all
        def set_epoch(self, epoch):
            pass

        def __iter__(self):
            return iter(())

    trainer = Trainer.new(_config(tmp_path), progress=False)
    trainer.loader = EmptyLoader()
    with pytest.raises(RuntimeError, match="no training step"):
        trainer.fit()
    metrics = json.loads((trainer.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "no training step" in metrics["error"]
    assert not (trainer.run_dir / "checkpoints" / "best.pt").exists()


def test_notebooks_do_not_share_an_out_folder(tmp_path):
    out = tmp_path / "out"
    claim_output_folder(out, "train")
    claim_output_folder(out, "train")  # the same notebook again: its own results, fine
    with pytest.raises(ConfigError, match="'train'.*'mse_perception'"):
        claim_output_folder(out, "mse_perception")
    # Results written before markers existed name their notebook in metrics.json.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "metrics.json").write_text(json.dumps({"experiment": "mse_perception", "pairs": []}))
    with pytest.raises(ConfigError, match="mse_perception"):
        claim_output_folder(legacy, "boundary_samples")
    # The CLI's runner refuses before executing anything.
    with pytest.raises(ConfigError, match="holds the results of notebook 'train'"):
        run_notebook("results", None, str(out), progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".atkit-notebook"]


def test_any_exception_marks_the_run_failed_with_its_message(tmp_path):
    trainer = Trainer.new(_config(tmp_path), progress=False)

    def broken(model, batch, ctx):
        raise TypeError("unsupported operand type(s) for *: 'float' and 'str'")

    trainer.method.loss = broken
    with pytest.raises(TypeError):
        trainer.fit()
    metrics = json.loads((trainer.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert metrics["error"] == "TypeError: unsupported operand type(s) for *: 'float' and 'str'"
    assert not FolderLock(trainer.run_dir).is_locked()  # the lock went with the failed fit


# Trains `train_or_load(config)` and blocks (printing STOPPED) before optimiser step ATKIT_TEST_STOP, or
# prints the run folder it used and whether it reused it.
CONTENDER = r'''
import json, os, sys, time
import torch
from atkit.training.runs import train_or_load

stop = int(os.environ.get("ATKIT_TEST_STOP", "0"))
calls = [0]
real_step = torch.optim.SGD.step


def step(self, *a, **k):
    calls[0] += 1
    if calls[0] == stop:
        print("STOPPED", flush=True)
        time.sleep(600)
    return real_step(self, *a, **k)


torch.optim.SGD.step = step
config = json.loads(sys.argv[1])
_, run_dir, reused = train_or_load(config, progress=False)
print(json.dumps({"run_dir": str(run_dir), "reused": reused}), flush=True)
'''


def test_two_processes_never_share_a_run_folder_and_kill_frees_the_lock(tmp_path):
    config = json.dumps(_config(tmp_path, epochs=2))
    first = subprocess.Popen([sys.executable, "-c", CONTENDER, config], env=dict(_env(), ATKIT_TEST_STOP="3"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert first.stdout.readline().strip() == "STOPPED", first.stderr.read()
        (busy,) = _folders(tmp_path)  # status "running", the first process holds its lock mid-epoch 2
        assert json.loads((busy / "metrics.json").read_text())["status"] == "running"
        assert FolderLock(busy).holder() == first.pid and FolderLock(busy).is_locked()
        # Same config, second process: it must not take over the busy folder.
        second = subprocess.run([sys.executable, "-c", CONTENDER, config], env=_env(), capture_output=True,
                                text=True, cwd=tmp_path, timeout=300)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout.splitlines()[-1])["run_dir"] != str(busy)
        assert len(_folders(tmp_path)) == 2
        # Resuming the busy folder by hand is refused, naming the holder.
        refused = subprocess.run([sys.executable, "-m", "atkit", "train", "--resume", str(busy), "--quiet"],
                                 env=_env(), capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert refused.returncode == 2 and f"in use by PID {first.pid}" in refused.stderr, refused.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # kill -9 leaves "running" behind but frees the lock: the next identical request resumes that folder.
    assert json.loads((busy / "metrics.json").read_text())["status"] == "running"
    assert not FolderLock(busy).is_locked()
    assert find_run(RunConfig.from_dict(json.loads(config)), status="running") == busy
    assert train(None, resume=busy, progress=False).status == "finished"
    assert json.loads((busy / "metrics.json").read_text())["status"] == "finished"


def test_resume_of_a_run_in_use_is_refused_in_process(tmp_path):
    trainer = Trainer.new(_config(tmp_path), progress=False)
    with trainer._holding_lock():
        with pytest.raises(RunInUseError, match=f"in use by PID {os.getpid()}"):
            Trainer.resume(trainer.run_dir, progress=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    return train(_config(tmp), progress=False).run_dir


def test_eval_out_unwritable_is_refused_before_work(finished_run, tmp_path, monkeypatch, capsys):
    import atkit.evaluation

    def never(*a, **k):
        raise AssertionError("the evaluation ran although its output cannot be written")

    monkeypatch.setattr(atkit.evaluation, "evaluate", never)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["eval", str(finished_run), "--attacks", "clean", "--quiet", "--out", str(blocker / "e.json")]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_eval_prints_the_numbers_when_the_write_fails_after_all(finished_run, tmp_path, monkeypatch, capsys):
    def full(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atkit.core.utils, "atomic_write_json", full)
    assert main(["eval", str(finished_run), "--attacks", "clean", "--quiet", "--out", str(tmp_path / "e.json")]) == 1
    captured = capsys.readouterr()
    printed = json.loads(captured.out.strip().splitlines()[0])
    assert printed["accuracy"]["clean"] >= 0 and printed["n"] == 16
    assert "No space left" in captured.err and "printed above" in captured.err


def test_non_finite_loss_names_the_kept_checkpoint_or_its_absence(tmp_path):
    def exploding(trainer, at_epoch):
        original = trainer.method.loss

        def loss(model, batch, ctx):
            out = original(model, batch, ctx)
            if ctx.epoch == at_epoch:
                out.loss = out.loss * float("nan")
            return out
        trainer.method.loss = loss

    trainer = Trainer.new(_config(tmp_path, epochs=2), progress=False)
    exploding(trainer, 0)
    with pytest.raises(NonFiniteLossError, match="no checkpoint was kept") as err:
        trainer.fit()
    assert err.value.kept_epoch is None and "last good checkpoint" not in str(err.value)
    trainer = Trainer.new(_config(tmp_path, epochs=2, name="second"), progress=False)
    exploding(trainer, 1)
    with pytest.raises(NonFiniteLossError, match=r"after 1 completed epoch") as err:
        trainer.fit()
    assert err.value.kept_epoch == 1


def test_resume_of_a_finished_run_keeps_its_evaluation(finished_run, monkeypatch, capsys):
    before = (finished_run / "eval.json").read_bytes()

    def never(self, *a, **k):
        raise AssertionError("the final evaluation of a finished run was redone")

    monkeypatch.setattr(Trainer, "final_evaluation", never)
    monkeypatch.setattr(Trainer, "fit", never)
    assert main(["train", "--resume", str(finished_run), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "already finished" in captured.err and json.loads(captured.out)["status"] == "finished"
    assert (finished_run / "eval.json").read_bytes() == before


# ------------------------------------------------------------------------------ named errors
@pytest.mark.parametrize("change, key", [
    ({"epochs": "3"}, "epochs='3'"),
    ({"threat": {"eps": [0.01, 0.02]}}, "threat.eps=[0.01, 0.02]"),
    ({"threat": {"step_size": "big"}}, "threat.step_size='big'"),
    ({"threat": {"steps": True}}, "threat.steps=True must be an integer"),
    ({"threat": [8]}, "threat=[8] must be a mapping"),
    ({"ema_decay": "high"}, "ema_decay='high' must be a number or null"),
    ({"val_size": "ten"}, "val_size='ten' must be an integer"),
    ({"out_dir": 5}, "out_dir=5 must be a string"),
    ({"method_params": [1, 2]}, "method_params=[1, 2] must be a mapping"),
    ({"method": "trades", "method_params": {"lam": "six"}}, "trades.lam='six' must be a number"),
    ({"method": "pgd_at+rpat", "method_params": {"rp_lambda": "one"}}, "rp_lambda='one' must be a number"),
    ({"lr": "1e-3"}, "YAML reads 1e-3 as text: write 1.0e-3"),
    ({"eval": {"n_test": "all"}}, "eval.n_test='all' must be an integer"),
    ({"name": "../../x"}, "name='../../x' must be a plain folder name"),
    ({"data": {"n_train": "1e9", "n_test": 16}}, "data.n_train='1e9' must be an integer"),
    ({"data": {"n_train": 1.0e9, "n_test": 16}}, "would need about .* GiB, but .* GiB of memory is available"),
])
def test_wrong_types_are_refused_before_anything_is_created(tmp_path, change, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")
                       if "GiB" not in key else key):
        Trainer.new(_config(tmp_path, **change), progress=False)
    assert _folders(tmp_path) == []


def test_final_attacks_as_one_string_is_one_name():
    cfg = RunConfig.from_dict({**RUN, "eval": {"final_attacks": "clean"}})
    assert cfg.eval.final_attacks == ["clean"]
    assert RunConfig.from_dict({**RUN, "eval": {"final_attacks": "clean, pgd20"}}).eval.final_attacks == [
        "clean", "pgd20"]


def test_suspicious_values_warn():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RunConfig.from_dict({**RUN, "lr": 0})
        RunConfig.from_dict({**RUN, "threat": {"eps": 0.01, "step_size": 0.02, "steps": 5}})
        RunConfig.from_dict({**RUN, "threat": {"eps": 0.03, "step_size": 0.04, "steps": 1}})  # FGSM-RS: fine
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert messages[0].startswith("lr=0") and "larger than threat.eps=0.01 with 5 steps" in messages[1]


@pytest.mark.parametrize("text, message", [
    ("method: pgd_at\nepochs: 3\n  threat: x\n", "not valid YAML at line 3"),
    ("- method: pgd_at\n", "holds a list"),
    ("pgd_at\n", "holds a str"),
    ("method: pgd_at\nepochs: 3\nepochs: 5\n", "duplicate key 'epochs'"),
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("epochs: 3\n", "names no method"),
])
def test_cli_yaml_config_files(tmp_path, capsys, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["train", str(path), "--out-dir", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atkit: error:") and message in err and len(err.strip().splitlines()) == 1
    assert _folders(tmp_path) == []


def test_duplicate_keys_are_refused_in_nested_mappings_and_parameter_files(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("threat:\n  eps: 0.03\n  eps: 0.01\n")
    with pytest.raises(ConfigError, match="duplicate key 'eps' .*first at line 2"):
        atkit.core.utils.load_yaml_mapping(path)
    with pytest.raises(ConfigError, match="duplicate key 'eps'"):
        run_notebook("results", str(path), str(tmp_path / "out"), progress=False)


def _folder_tree(root: Path) -> None:
    for split in ("train", "test"):
        for c, colour in (("a", (250, 0, 0)), ("b", (0, 0, 250))):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (16, 16), colour).save(d / f"{i}.jpg", quality=95)


def test_corrupt_jpeg_is_named_and_leaves_no_run_folder(tmp_path):
    root = tmp_path / "data"
    _folder_tree(root)
    bad = root / "train" / "b" / "2.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated mid-header
    with pytest.raises(ConfigError, match=f"{bad}.*cannot be decoded"):
        Trainer.new(_config(tmp_path, dataset="folder", data={"root": str(root)}), progress=False)
    assert _folders(tmp_path) == []
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ConfigError, match=f"{bad}"):
        load_dataset("folder", root=root)


def test_any_error_before_training_leaves_no_run_folder(tmp_path, monkeypatch):
    import atkit.training.trainer

    def broken(*a, **k):
        raise RuntimeError("model construction failed")

    monkeypatch.setattr(atkit.training.trainer, "prepare", broken)
    with pytest.raises(RuntimeError, match="model construction failed"):
        Trainer.new(_config(tmp_path), progress=False)
    assert _folders(tmp_path) == []


def test_tiny_imagenet_without_val_annotations_names_the_file(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("n01\nn02\n")
    for w in ("n01", "n02"):
        (base / "train" / w / "images").mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(base / "train" / w / "images" / f"{w}_0.JPEG")
    Image.new("RGB", (64, 64)).save(base / "val" / "images" / "val_0.JPEG")
    with pytest.raises(ConfigError, match="val_annotations.txt' is missing"):
        load_dataset("tiny-imagenet", root=tmp_path, download=False)


def test_sweep_dry_run_checks_dotted_method_keys(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"notebook": "ablation", "base": {"base": {"method": "pgd_at+rpat"}},
                                    "grid": {"method_params.rp_lamda": [0.5, 1.0]}}))
    assert main(["sweep", "--grid", str(grid), "--dry-run", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "grid point 0" in err and "'rp_lamda'" in err and "rp_lambda" in err  # the suggestion
    grid.write_text(yaml.safe_dump({"notebook": "ablation", "base": {"base": {"method": "pgd_at+rpat"}},
                                    "grid": {"method_params.rp_lambda": [0.5, 1.0]}}))
    assert main(["sweep", "--grid", str(grid), "--dry-run", "--out", str(tmp_path / "s")]) == 0


def test_eval_n_must_be_positive(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "no-run"), "--n", "-5"]) == 2
    assert "--n -5" in capsys.readouterr().err


# ------------------------------------------------------------------------------ files
def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
