"""Reliability, round three (issue 26): a number is labelled only with what produced it, nothing is lost after the
work is done, and signals and bad files give true states and one-line errors (part 1, what a sweep owns, is in
tests/test_sweep_ownership.py). Each test failed before the fix it accompanies."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import atkit.workbench.cli_eval
import atkit.core.utils
from atkit.workbench.cli import main
from atkit.training.trainer import train
from atkit.core.utils import ConfigError
from helpers import one_line

REPO = Path(__file__).resolve().parent.parent
# 16 px images, a narrow small_cnn, one epoch of 2 steps: about a second (as tests/test_reliability.py).
RUN = dict(method="pgd_at", dataset="synthetic", data={"n_train": 128, "n_test": 16, "image_size": 16},
           model="small_cnn", model_params={"width": 4, "hidden": 16}, batch_size=64, schedule="constant",
           epochs=1, threat={"steps": 1}, device="cpu", name="run",
           eval={"n_test": 16, "pgd_steps": 1, "select_by": "clean", "final_attacks": ["clean"], "sanity": False})

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path: Path, **kw) -> dict:
    return {**RUN, "out_dir": str(tmp_path / "runs"), **kw}


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ATKIT_TEST_STOP", None)
    return env


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return train(_config(tmp_path_factory.mktemp("finished")), progress=False).run_dir


def _copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy" / run.name
    shutil.copytree(run, copy)
    return copy


# =========================================================== 2. a number is labelled only with what produced it
def test_eval_set_takes_effect_or_is_refused(finished_run, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["eval", str(finished_run), "--attacks", "clean,pgd10", "--quiet", "--out", str(out),
                 "--set", "threat.eps=0.0078431372549", "--set", "threat.step_size=0.002"]) == 0
    written = json.loads(out.read_text())
    assert written["threat"]["eps"] == pytest.approx(2 / 255) and written["threat"]["step_size"] == 0.002
    assert written["provenance"]["threat"]["eps"] == pytest.approx(2 / 255)
    assert written["provenance"]["attacks"]["pgd10"]["eps"] == pytest.approx(2 / 255)
    capsys.readouterr()
    for extra, message in ((["--set", "model_params.width=8"], "unknown --set key for an atkit run"),
                           (["--set", "threat.eps=8"], "8/255"),
                           (["--dataset", "cifar10"], "--dataset describe an external --checkpoint")):
        assert main(["eval", str(finished_run), "--attacks", "clean", "--quiet", "--out", str(tmp_path / "x.json"),
                     *extra]) == 2
        assert message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "x.json").exists()


def test_resume_refuses_options_it_cannot_apply(finished_run, capsys):
    assert main(["train", "--resume", str(finished_run), "--set", "epochs=5", "--quiet"]) == 2
    assert "--set cannot change it" in one_line(capsys.readouterr().err)


def _evaluation(flags, eps=8 / 255, norm="linf", precision="fp32", steps=20, protocols=None):
    per_sample = {"clean": "1" * len(flags), "pgd20": "".join(map(str, flags))}
    entry = {"format": "atkit-eval/1", "n": len(flags), "per_sample": per_sample,
             "accuracy": {k: 100 * v.count("1") / len(v) for k, v in per_sample.items()},
             "threat": {"norm": norm, "eps": eps, "step_size": 2 / 255},
             "details": {"clean": {"attack": "clean", "seconds": 0.1},
                         "pgd20": {"attack": "pgd", "loss": "ce", "steps": steps, "step_size": 2 / 255,
                                   "seconds": 1.0}},
             "provenance": {"precision": precision}}
    images = {"dataset": "synthetic", "fingerprint": "f", "split": "test", "n": len(flags), "of": len(flags),
              "selection": "all", "indices": "all"}
    if protocols:
        return {"protocols": {p: entry for p in protocols}, "images": images}
    return {**entry, "images": images}


A_FLAGS = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1]


@pytest.mark.parametrize("other, what", [
    ({"eps": 4 / 255}, "eps 0.0313725 vs 0.0156863"),
    ({"norm": "l2"}, "norm linf vs l2"),
    ({"precision": "bf16"}, "precision fp32 vs bf16"),
    ({"steps": 10}, "pgd20 settings"),
    ({"protocols": ["published"]}, "protocols"),
])
def test_compare_refuses_evaluations_made_differently(tmp_path, capsys, other, what):
    mine = {"protocols": ["published", "adaptive"]} if "protocols" in other else {}
    (tmp_path / "a.json").write_text(json.dumps(_evaluation(A_FLAGS, **mine)))
    (tmp_path / "b.json").write_text(json.dumps(_evaluation(A_FLAGS[::-1], **other)))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "were evaluated differently" in line and what in line
    (tmp_path / "b.json").write_text(json.dumps(_evaluation(A_FLAGS[::-1], **mine)))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0


def test_the_checkpoint_hash_is_of_the_bytes_evaluated(finished_run, tmp_path, monkeypatch):
    run = _copy_run(finished_run, tmp_path)
    ckpt = run / "checkpoints" / "best.pt"
    loaded = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    real_load_dataset = atkit.workbench.cli_eval.load_dataset

    def replaced_meanwhile(*a, **k):  # another process writes the file after atkit read it
        ckpt.write_bytes(ckpt.read_bytes() + b"another file now")
        return real_load_dataset(*a, **k)

    monkeypatch.setattr(atkit.workbench.cli_eval, "load_dataset", replaced_meanwhile)
    assert main(["eval", str(run), "--attacks", "clean", "--quiet", "--out", str(tmp_path / "e.json")]) == 0
    record = json.loads((tmp_path / "e.json").read_text())["provenance"]["checkpoint"]
    assert record["sha256"] == loaded and record["sha256"] != hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_eval_n_beyond_the_split_is_said_and_recorded(finished_run, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["eval", str(finished_run), "--attacks", "clean", "--quiet", "--n", "100000", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "--n 100000 is more than the 16 images of the test split; evaluating all 16" in captured.err
    written = json.loads(out.read_text())
    assert written["n"] == 16 and written["n_requested"] == 100000
    assert json.loads(captured.out.splitlines()[-1])["n_requested"] == 100000


# ======================================================================= 3. nothing is lost after the work
def test_eval_with_out_elsewhere_writes_nothing_into_the_run(finished_run, tmp_path):
    """AutoAttack keeps its resume state beside --out, so a read-only run is never written (it was written into
    the run, after hours of work, and failed there)."""
    run = _copy_run(finished_run, tmp_path)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    out = tmp_path / "elsewhere" / "e.json"
    assert main(["eval", str(run), "--attacks", "clean,apgd", "--quiet", "--out", str(out), "--batch-size", "16"]) == 0
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before
    assert list((tmp_path / "elsewhere" / "e.aa_state").glob("apgd*.json"))


def test_eval_refuses_an_unwritable_autoattack_state_before_work(finished_run, tmp_path, monkeypatch, capsys):
    import atkit.evaluation

    monkeypatch.setattr(atkit.evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated before the check"))
    run = _copy_run(finished_run, tmp_path)
    (run / "aa_state").write_text("a file where the state folder goes")  # as unwritable as a read-only folder
    assert main(["eval", str(run), "--attacks", "clean,apgd", "--quiet"]) == 2
    assert "AutoAttack's resume state folder" in one_line(capsys.readouterr().err)


def test_card_never_overwrites_its_input_and_checks_its_output_first(tmp_path, capsys):
    source = tmp_path / "e.json"
    source.write_text(json.dumps(_evaluation(A_FLAGS)))
    before = source.read_bytes()
    for out, message in ((source, "is the evaluation the card is made from"), (tmp_path, "is a folder"),
                         (source / "card.json", "cannot be written")):
        assert main(["card", str(source), "--out", str(out)]) == 2
        assert message in one_line(capsys.readouterr().err)
    assert source.read_bytes() == before


def test_a_second_eval_keeps_the_first(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    assert main(["eval", str(run), "--attacks", "clean", "--quiet"]) == 0
    first = json.loads((run / "eval-model.json").read_text())
    assert main(["eval", str(run), "--attacks", "pgd10", "--quiet"]) == 0  # same setup: merged by attack
    merged = json.loads((run / "eval-model.json").read_text())
    assert list(merged["per_sample"]) == ["clean", "pgd10"]
    assert merged["per_sample"]["clean"] == first["per_sample"]["clean"]
    assert merged["robust_metric"] == "pgd10" and merged["provenance"]["earlier_commands"]
    capsys.readouterr()
    assert main(["eval", str(run), "--attacks", "pgd10", "--quiet", "--set", "threat.eps=0.0156862745098"]) == 0
    assert "this one goes to" in capsys.readouterr().err  # another setup: a new file, the first is kept
    assert json.loads((run / "eval-model.json").read_text()) == merged
    assert json.loads((run / "eval-model-2.json").read_text())["threat"]["eps"] == pytest.approx(4 / 255)
    assert main(["eval", str(run), "--attacks", "clean", "--quiet", "--out", str(run / "eval-model.json"),
                 "--set", "threat.eps=0.0156862745098"]) == 2  # named explicitly: refused, before any work
    assert "holds an earlier evaluation of another setup (threat" in one_line(capsys.readouterr().err)


def test_a_full_disk_at_the_final_write_keeps_the_numbers(tmp_path, monkeypatch, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path)))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    real = atkit.core.utils.atomic_write_bytes

    def full(path, data):
        if Path(path).name == "eval.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)

    monkeypatch.setattr(atkit.core.utils, "atomic_write_bytes", full)
    assert main(["train", str(config), "--quiet"]) == 1
    line = one_line(capsys.readouterr().err)
    kept = next((tmp_path / "tmp" / "atkit-unsaved").glob("*-eval.json"))
    assert f"kept in {kept}" in line and "No space left" in line
    assert json.loads(kept.read_text())["final"]["accuracy"]["clean"] >= 0


# ======================================================== 4. signals and bad files: true states, one line
STOPPER = r'''
import sys, time
import torch
calls = [0]
real_step = torch.optim.SGD.step


def step(self, *a, **k):
    calls[0] += 1
    if calls[0] == 2:
        print("STOPPED", flush=True)
        time.sleep(600)
    return real_step(self, *a, **k)


torch.optim.SGD.step = step
from atkit.workbench.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_training_is_recorded_and_said_inone_line(tmp_path, sig, status):
    tmp_path = tmp_path / "a folder's name"  # the printed command must survive a space and a quote when pasted
    tmp_path.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path)))
    script = tmp_path / "stopper.py"
    script.write_text(STOPPER)
    proc = subprocess.Popen([sys.executable, str(script), "train", str(config), "--quiet"], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "STOPPED", proc.stderr.read()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    run = tmp_path / "runs" / "run"
    assert proc.returncode == status, err
    line = one_line(err)
    assert "training interrupted" in line and "()" not in line  # the cause is named, never empty
    assert ("Ctrl-C" in line) == (sig == signal.SIGINT) and ("SIGTERM" in line) == (sig == signal.SIGTERM)
    assert shlex.split(line.split("continue it with: ", 1)[1]) == ["python", "-m", "atkit", "train", "--resume",
                                                                    str(run)]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert ("SIGTERM" in metrics["error"]) == (sig == signal.SIGTERM)
    assert train(None, resume=run, progress=False).status == "finished"


# Nine levels of nine aliases: under 500 bytes that stand for 9**9 (387 million) strings.
BOMB = "[" + ", ".join(f"&{b} [{', '.join([f'*{a}'] * 9) if a else ', '.join(['lol'] * 9)}]"
                       for a, b in zip(["", *"abcdefgh"], "abcdefghi")) + "]"


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, command):
    path = tmp_path / "bomb.yaml"
    if command == "train":
        path.write_text(f"method: pgd_at\nepochs: {BOMB}\n")
        cmd = ["train", str(path), "--out-dir", str(tmp_path / "runs"), "--quiet"]
    else:
        path.write_text(f"notebook: ablation\ngrid: {{seeds: {BOMB}}}\n")
        cmd = ["sweep", "-f", str(path), "--dry-run", "--out", str(tmp_path / "s")]
    assert len(path.read_bytes()) < 700
    done = subprocess.run([sys.executable, "-m", "atkit", *cmd], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "aliases (*name) expand to more than 100,000 values" in one_line(done.stderr)


def test_yaml_size_check_and_bounded_messages():
    from atkit.core.utils import parse_set_options, short_repr, yaml_expanded_size

    node = yaml.compose(BOMB)
    assert yaml_expanded_size(node, limit=10 ** 12) > 9 ** 9  # counted without expanding anything
    with pytest.raises(yaml.YAMLError, match="recursive alias"):
        yaml_expanded_size(yaml.compose("a: &a [1, *a]\n"))
    with pytest.raises(ConfigError, match="expand to more than"):  # --set values are YAML too
        parse_set_options(["epochs=[&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a], "
                           "&c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c],"
                           " &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]]"])
    nested: list = ["x"]
    for _ in range(60):  # 2**60 leaves once expanded
        nested = [nested, nested]
    began = time.time()
    text = short_repr(nested)
    assert len(text) <= 160 and time.time() - began < 1


def test_resume_of_a_torn_last_checkpoint_gives_a_remedy_that_works(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path / "a folder's name")  # the remedy must survive a space and a quote
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "cannot read checkpoint" in line and "try the run's other checkpoint" not in line
    words = shlex.split(line.split("move it aside (", 1)[1])  # read as a shell reads it
    assert words[:3] == ["mv", str(last), f"{last}.damaged)"] and words[words.index("--resume") + 1] == str(run)
    shutil.move(last, f"{last}.damaged")  # the remedy, as the message says
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"


def test_a_garbage_checkpoint_is_reported_before_the_dataset_loads(tmp_path, monkeypatch, capsys):
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(b"<html>404 Not Found</html>")
    monkeypatch.setattr(atkit.workbench.cli_eval, "load_dataset", lambda *a, **k: pytest.fail("the dataset was loaded first"))
    assert main(["eval", "--checkpoint", str(garbage), "--model", "small_cnn", "--quiet"]) == 2
    message = one_line(capsys.readouterr().err)  # one line naming the file and what it is (atkit.core.checkpoint_sniff)
    assert "weights.pt" in message and "is an HTML page" in message


def test_a_zip_bomb_checkpoint_is_refused_from_its_declared_sizes(tmp_path, monkeypatch):
    import atkit.core.checkpoint_files as checkpoints

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w") as f:
            for _ in range(32):
                f.write(bytes(1 << 20))  # 32 MiB of zeros: about 32 KiB deflated
    assert bomb.stat().st_size < (1 << 20)
    monkeypatch.setattr(checkpoints, "MIN_DECLARED_LIMIT", 1 << 20)  # the floor, scaled down
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("inflated before the size check"))
    with pytest.raises(ConfigError, match=r"declare 33,554,432 bytes once unpacked.*zip bomb"):
        checkpoints.load_checkpoint_file(bomb)
    monkeypatch.undo()
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(300, 300)}, plain)  # torch's own files are stored: far below the limit
    assert checkpoints.load_checkpoint_file(plain)["w"].shape == (300, 300)


def _image_tree(root: Path, save) -> None:
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                save(root / split / c, i)


def test_sixteen_bit_images_are_scaled_and_unknown_ranges_refused(tmp_path):
    from atkit.data import load_dataset

    root = tmp_path / "grey16"
    _image_tree(root, lambda d, i: Image.fromarray(np.full((8, 8), 32768 + i, np.uint16)).save(d / f"{i}.png"))
    data = load_dataset("folder", root=root, cache_dir=tmp_path / "cache")
    assert data.train_x.dtype == torch.uint8 and set(data.train_x.unique().tolist()) == {128}  # not 255
    floats = tmp_path / "float"
    _image_tree(floats, lambda d, i: Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(d / f"{i}.tif"))
    with pytest.raises(ConfigError, match=r"float.*\.tif' has floating-point pixels of unknown range"):
        load_dataset("folder", root=floats, cache_dir=tmp_path / "cache")


def test_a_decompression_bomb_image_is_named_inone_line(tmp_path, monkeypatch):
    from atkit.data import load_dataset

    root = tmp_path / "images"
    _image_tree(root, lambda d, i: Image.new("RGB", (16, 16), (i, 0, 0)).save(d / f"{i}.png"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16 x 16 images are then "bombs"
    with pytest.raises(ConfigError, match=r"image file '.*\.png' is refused: Image size \(256 pixels\) exceeds"):
        load_dataset("folder", root=root, cache_dir=tmp_path / "cache")


def _fake_run(folder: Path, config, eval_text=None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    (folder / "metrics.json").write_text(json.dumps({"status": "finished", "history": [
        {"epoch": 1, "test_clean_acc": 50.0, "test_pgd10_acc": 20.0}]}))
    if eval_text is not None:
        (folder / "eval.json").write_text(eval_text)
    return folder


def test_results_tables_follow_links_and_skip_foreign_or_damaged_files(tmp_path):
    from atkit.workbench.results import collect_runs

    good = {"method": "pgd_at", "dataset": "synthetic", "model": "small_cnn", "seed": 0, "epochs": 1}
    _fake_run(tmp_path / "store" / "linked", good)
    root = tmp_path / "outputs"
    _fake_run(root / "runs" / "plain", {**good, "seed": 1})
    (root / "runs" / "linked").symlink_to(tmp_path / "store" / "linked", target_is_directory=True)
    (root / "runs" / "loop").symlink_to(root, target_is_directory=True)  # walked once, not forever
    _fake_run(root / "runs" / "foreign", "- a hydra list\n- not an atkit config\n")
    _fake_run(root / "runs" / "bad-eval", {**good, "seed": 2}, '{"final": {"accuracy": {"clean": "n/a"}}}')
    _fake_run(root / "runs" / "cut-eval", {**good, "seed": 3}, '{"final": {"accur')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = collect_runs(root)
    assert sorted(frame["run"]) == ["bad-eval", "cut-eval", "linked", "plain"]
    assert set(frame["clean"]) == {50.0} and set(frame["source"]) == {"metrics.json"}
    messages = " | ".join(str(w.message) for w in caught)
    assert "foreign' skipped: its config.yaml is not an atkit run config" in messages
    assert "bad-eval/eval.json' is not what atkit writes" in messages and "cut-eval/eval.json' is damaged" in messages
