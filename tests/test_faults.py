"""Runs that survive faults: a real training process killed mid-epoch or mid-checkpoint-write resumes
to the same weights and metrics as an uninterrupted run (bit for bit on the CPU); a full disk or an
unwritable folder is reported with the path and loses nothing saved; bad input is refused first."""
from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

import atkit.core.utils
from atkit.core.utils import file_sha256
from atkit.training.config import RunConfig
from atkit.core.utils import OutputWriteError
from atkit.training.trainer import Trainer
from atkit.core.utils import ConfigError

REPO = Path(__file__).resolve().parent.parent
# 16 px images and a narrow small_cnn; 4 optimiser steps per epoch (256 / 64), 3 epochs, PGD-AT with
# 2 attack steps: a few seconds per run.
RUN = dict(method="pgd_at", dataset="synthetic", data={"n_train": 256, "n_test": 32, "image_size": 16},
           model="small_cnn", model_params={"width": 8, "hidden": 32}, batch_size=64, schedule="constant",
           epochs=3, threat={"steps": 2}, device="cpu", name="run",
           eval={"n_test": 32, "pgd_steps": 2, "select_by": "clean", "final_attacks": ["clean"]})
TIME_KEYS = ("train_time_s", "eval_time_s", "seconds")

# Run by the test in place of `python -m atkit`: the same CLI, with one fault point patched in.
# ATKIT_TEST_STOP="step:N" blocks before the N-th optimiser step; "write:NAME:K" blocks in the K-th
# atomic write of a file called NAME after writing half of its temporary file, as a crash mid-write
# would leave it. Either way it prints STOPPED and waits to be killed.
WRAPPER = r'''
import os, sys, tempfile, time
from pathlib import Path

import torch
import atkit.core.utils

kind, *arg = os.environ["ATKIT_TEST_STOP"].split(":")


def stop_here():
    print("STOPPED", flush=True)
    time.sleep(600)


if kind == "step":
    target, calls = int(arg[0]), [0]
    real_step = torch.optim.SGD.step

    def step(self, *a, **k):
        calls[0] += 1
        if calls[0] == target:
            stop_here()
        return real_step(self, *a, **k)

    torch.optim.SGD.step = step
else:
    name, target, calls = arg[0], int(arg[1]), [0]
    real_write = atkit.core.utils.atomic_write_bytes

    def write(path, data):
        path = Path(path)
        if path.name == name:
            calls[0] += 1
            if calls[0] == target:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                os.write(fd, data[: len(data) // 2])
                os.fsync(fd)
                stop_here()
        return real_write(path, data)

    atkit.core.utils.atomic_write_bytes = write

from atkit.workbench.cli import main

sys.exit(main(sys.argv[1:]))
'''


pytestmark = pytest.mark.usefixtures("one_thread")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # One thread per process: several torch processes on two cores otherwise spin against each other
    # (10x slower). Every run here uses the same setting, which is what bit-identity needs.
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "atkit", "train", *extra, "--quiet"]


def _write_config(tmp: Path, out: str) -> Path:
    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump(dict(RUN, out_dir=str(tmp / out))))
    return path


def _run(cmd: list[str], tmp: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=tmp, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _run_and_kill(tmp: Path, config: Path, stop: str) -> None:
    """Start a training process, wait until it reaches the fault point, SIGKILL it."""
    script = tmp / "stop_wrapper.py"
    script.write_text(WRAPPER)
    env = _env() | {"ATKIT_TEST_STOP": stop}
    proc = subprocess.Popen([sys.executable, str(script), "train", str(config), "--quiet"], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watchdog = threading.Timer(300, proc.kill)  # never hang the test suite
    watchdog.start()
    try:
        reached = any(line.strip() == "STOPPED" for line in proc.stdout)
        assert reached, f"the training process ended (status {proc.poll()}) before reaching {stop}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        proc.kill()
        proc.stdout.close()


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _strip_times(obj):
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if k not in TIME_KEYS}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


def _csv_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in csv.DictReader(f)]


def _assert_same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same_tensors(u, v, f"{where}[{i}]")
    else:
        assert a == b, where


def _assert_same_run(ref: Path, other: Path) -> None:
    """Bit-identical weights, optimiser state and metrics; only wall-clock times may differ."""
    for name in ("last.pt", "best.pt"):
        a, b = _load(ref / "checkpoints" / name), _load(other / "checkpoints" / name)
        assert a["epoch"] == b["epoch"] == (3 if name == "last.pt" else a["epoch"])
        _assert_same_tensors(a["model"], b["model"], f"{name}:model")
        if name == "last.pt":
            _assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")
            assert _strip_times(a["history"]) == _strip_times(b["history"])
    m_ref, m_other = (json.loads((d / "metrics.json").read_text()) for d in (ref, other))
    assert m_ref["status"] == m_other["status"] == "finished"
    assert _strip_times(m_ref["history"]) == _strip_times(m_other["history"]) and len(m_ref["history"]) == 3
    assert _csv_rows(ref / "metrics.csv") == _csv_rows(other / "metrics.csv")
    e_ref, e_other = (json.loads((d / "eval.json").read_text()) for d in (ref, other))
    # Provenance names each run's own checkpoint file (whose history holds wall-clock times) and command line.
    for label, name in (("final", "last.pt"), ("best", "best.pt")):
        p_ref, p_other = e_ref[label].pop("provenance"), e_other[label].pop("provenance")
        assert p_other["checkpoint"]["sha256"] == file_sha256(other / "checkpoints" / name)
        assert p_ref["images"] == p_other["images"] and p_ref["attacks"] == p_other["attacks"]
    assert _strip_times(e_ref) == _strip_times(e_other)
    # No leftovers of interrupted writes anywhere in the resumed run.
    assert not list(other.rglob("*.tmp"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted run everything is compared with (a real `python -m atkit train` process)."""
    tmp = tmp_path_factory.mktemp("reference")
    _run(_train_cmd(str(_write_config(tmp, "ref"))), tmp)
    return tmp / "ref" / "run"


def test_kill_mid_epoch_then_resume_is_exact(tmp_path, reference_run):
    config = _write_config(tmp_path, "killed")
    run_dir = tmp_path / "killed" / "run"
    _run_and_kill(tmp_path, config, "step:6")  # the 2nd step of epoch 2 (4 steps per epoch)
    # What a killed run leaves: its last complete epoch, and metrics files that parse.
    assert _load(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "running" and len(metrics["history"]) == 1
    assert len(_csv_rows(run_dir / "metrics.csv")) == 1
    _run(_train_cmd("--resume", str(run_dir)), tmp_path)
    _assert_same_run(reference_run, run_dir)


def test_kill_during_checkpoint_write_then_resume_is_exact(tmp_path, reference_run):
    config = _write_config(tmp_path, "killed")
    run_dir = tmp_path / "killed" / "run"
    _run_and_kill(tmp_path, config, "write:last.pt:2")  # while writing epoch 2's last.pt
    ckpt = run_dir / "checkpoints"
    stray = list(ckpt.glob(".last.pt.*.tmp"))
    assert len(stray) == 1  # the half-written temporary file...
    assert _load(ckpt / "last.pt")["epoch"] == 1  # ...never replaced the complete checkpoint
    assert len(json.loads((run_dir / "metrics.json").read_text())["history"]) == 1
    _run(_train_cmd("--resume", str(run_dir)), tmp_path)
    assert not stray[0].exists()
    _assert_same_run(reference_run, run_dir)


# ------------------------------------------------------------------------------- in-process faults
FAST = dict(RUN, method="standard", data={"n_train": 128, "n_test": 16, "image_size": 16},
            eval={"n_test": 16, "pgd_steps": 0, "final_attacks": ["clean"]})


def _fast_config(tmp_path: Path, **kw) -> RunConfig:
    return RunConfig.from_dict(dict(FAST, out_dir=str(tmp_path / "runs")) | kw)


def _fail_writes(monkeypatch, code: int, names: tuple[str, ...], after: int) -> None:
    """Make the atomic writes of files called ``names`` fail with ``code`` from the ``after``-th such write on."""
    real = atkit.core.utils.atomic_write_bytes
    calls = {"n": 0}

    def write(path, data):
        if Path(path).name in names:
            calls["n"] += 1
            if calls["n"] >= after:
                raise OSError(code, os.strerror(code))
        return real(path, data)

    monkeypatch.setattr(atkit.core.utils, "atomic_write_bytes", write)


def test_disk_full_names_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer.new(_fast_config(tmp_path), progress=False)
    last = trainer.run_dir / "checkpoints" / "last.pt"
    _fail_writes(monkeypatch, errno.ENOSPC, ("last.pt",), after=2)  # epoch 2's checkpoint hits a full disk
    with pytest.raises(OutputWriteError) as info:
        trainer.fit()
    message = str(info.value)
    assert str(last) in message and os.strerror(errno.ENOSPC) in message and "--resume" in message
    assert info.value.errno == errno.ENOSPC and info.value.path == last
    assert _load(last)["epoch"] == 1  # the previous checkpoint is intact
    metrics = json.loads((trainer.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and str(last) in metrics["error"]
    assert not list(trainer.run_dir.rglob("*.tmp"))
    monkeypatch.undo()  # space freed: the run continues from epoch 1 to the end
    resumed = Trainer.resume(trainer.run_dir, progress=False)
    assert resumed.epoch == 1
    resumed.fit()
    assert resumed.status == "finished" and _load(last)["epoch"] == 3


def test_nothing_writable_still_reports_the_path(tmp_path, monkeypatch):
    trainer = Trainer.new(_fast_config(tmp_path), progress=False)
    trainer.epochs = 1
    trainer.fit()
    trainer.epochs = 3
    before = (trainer.run_dir / "metrics.json").read_text()
    _fail_writes(monkeypatch, errno.EACCES, ("last.pt", "best.pt", "metrics.json", "metrics.csv"), after=1)
    with pytest.raises(OutputWriteError, match="metrics.json.*Permission denied"):
        trainer.fit()  # fit's first write is metrics.json
    assert (trainer.run_dir / "metrics.json").read_text() == before
    assert _load(trainer.run_dir / "checkpoints" / "last.pt")["epoch"] == 1


def test_unwritable_out_dir_is_refused_before_work(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.parent == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(ConfigError, match=f"{out}.*Permission denied.*out_dir"):
        Trainer.new(_fast_config(tmp_path), progress=False)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores file permissions; the monkeypatched tests above cover this case")
def test_read_only_folders(tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="out_dir"):
            Trainer.new(_fast_config(tmp_path), progress=False)
    finally:
        out.chmod(0o755)
    trainer = Trainer.new(_fast_config(tmp_path), progress=False)
    trainer.epochs = 1
    trainer.fit()
    trainer.epochs = 3
    ckpt = trainer.run_dir / "checkpoints"
    ckpt.chmod(0o555)
    try:
        with pytest.raises(OutputWriteError, match="last.pt"):
            trainer.fit()
    finally:
        ckpt.chmod(0o755)
    assert _load(ckpt / "last.pt")["epoch"] == 1


class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing after it runs, not even except clauses for Exception."""


def test_kill_between_last_and_best_checkpoint_is_repaired(tmp_path, monkeypatch):
    trainer = Trainer.new(_fast_config(tmp_path), progress=False)
    ckpt = trainer.run_dir / "checkpoints"
    real = atkit.core.utils.atomic_write_bytes

    def write(path, data):
        if Path(path).name == "best.pt":
            raise Killed()
        return real(path, data)

    monkeypatch.setattr(atkit.core.utils, "atomic_write_bytes", write)
    with pytest.raises(Killed):
        trainer.fit()  # epoch 1 is always the best so far: last.pt is written, best.pt is not
    monkeypatch.undo()
    assert _load(ckpt / "last.pt")["best_epoch"] == 1 and not (ckpt / "best.pt").exists()
    (ckpt / ".last.pt.leftover.tmp").write_bytes(b"half")
    resumed = Trainer.resume(trainer.run_dir, progress=False)
    assert not (ckpt / ".last.pt.leftover.tmp").exists()
    best, last = _load(ckpt / "best.pt"), _load(ckpt / "last.pt")
    assert best["epoch"] == 1 and best["best_metric"] == last["best_metric"]
    _assert_same_tensors(best["model"], last["model"], "best.pt")
    assert resumed.epoch == 1


# ------------------------------------------------------------------------------------- bad input
def test_checkpoint_with_other_class_count_is_refused(tmp_path):
    source = Trainer.new(_fast_config(tmp_path, epochs=1, name="ten"), progress=False)
    source.fit()
    ckpt = source.run_dir / "checkpoints" / "last.pt"
    other = _fast_config(tmp_path, epochs=1, name="five", init_checkpoint=str(ckpt),
                         data={"n_train": 64, "n_test": 16, "image_size": 16, "num_classes": 5})
    with pytest.raises(ConfigError, match="10 outputs.*5"):
        Trainer.new(other, progress=False)
    assert not (tmp_path / "runs" / "five").exists()  # refused before any run folder was kept
    with pytest.raises(ConfigError, match="does not exist"):
        _fast_config(tmp_path, init_checkpoint=str(tmp_path / "missing.pt"))


def test_missing_dataset_folder_says_what_to_put_there(tmp_path):
    cfg = _fast_config(tmp_path, dataset="folder", data={"root": str(tmp_path / "nowhere")}, name="folder")
    with pytest.raises(ConfigError, match=r"nowhere.*does not exist.*train/<class>"):
        Trainer.new(cfg, progress=False)
    assert not (tmp_path / "runs" / "folder").exists()


def test_budget_in_pixel_units_is_refused():
    with pytest.raises(ConfigError, match="2/255"):
        RunConfig.from_dict({"threat": {"step_size": 2}})
    with pytest.raises(ConfigError, match="8/255"):
        RunConfig.from_dict({"threat": {"eps": 8}})
