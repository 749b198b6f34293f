"""Checkpoints load without executing code, accept the common wrappers, and fail with named, actionable errors."""
import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from atkit.core.checkpoint_files import extract_state_dict, load_checkpoint_file, load_weights
from atkit.core.utils import file_sha256
from atkit.workbench.cli import main as cli_main
from atkit.training.config import RunConfig
from atkit.models import build_model
from atkit.training.trainer import Trainer
from atkit.training.checkpoints import load_model
from atkit.core.utils import ConfigError
from helpers import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {"n_train": 64, "n_test": 24, "image_size": 8, "num_classes": 4}
RUN = dict(method="standard", dataset="synthetic", data=DATA, model="small_cnn", batch_size=32, schedule="constant",
           epochs=1, eval={"n_test": 24, "pgd_steps": 0, "final_attacks": ["clean"]})


def _config(tmp_path, **kw):
    return RunConfig.from_dict(dict(RUN, out_dir=str(tmp_path / "runs"), **kw))


class _Payload:
    """Unpickling this object would write a file: proof that loading ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_atkit_checkpoint_with_numpy_rng_state_loads_weights_only(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "rng": {"numpy": np.random.get_state(), "python": random.getstate(),
                                                    "torch": torch.get_rng_state()}}
    torch.save(state, tmp_path / "last.pt")
    loaded = load_checkpoint_file(tmp_path / "last.pt")
    np.random.set_state(loaded["rng"]["numpy"])  # a usable numpy RNG state comes back
    assert torch.equal(loaded["model"]["w"], torch.ones(2))


def test_checkpoint_that_needs_unpickling_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned.txt"
    torch.save({"model": {"w": torch.ones(1)}, "extra": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match=r"refused to load checkpoint .*evil\.pt.*arbitrary code.*weights_only=True"
                                          r".*convert it once to a plain state dict") as err:
        load_checkpoint_file(tmp_path / "evil.pt")
    assert "write_text" in str(err.value) or "Path" in str(err.value)  # names what it asks for
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"not a checkpoint at all\n", None])
def test_truncated_or_foreign_file_names_file_and_suggests_the_other_checkpoint(tmp_path, content):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    torch.save({"model": {"w": torch.ones(1000)}}, ckpt / "best.pt")
    data = (ckpt / "best.pt").read_bytes()[:300] if content is None else content
    (ckpt / "last.pt").write_bytes(data)
    with pytest.raises(ConfigError, match=r"cannot read checkpoint .*last\.pt.*truncated or not a PyTorch checkpoint"
                                          r".*other checkpoint .*best\.pt.*fresh run"):
        load_checkpoint_file(ckpt / "last.pt")


def test_wrappers_and_prefixes_are_accepted():
    sd = {"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)}
    assert extract_state_dict(sd) == sd
    wrapped = {"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}
    assert set(extract_state_dict(wrapped)) == set(sd)
    assert set(extract_state_dict({"model": {"_orig_mod." + k: v for k, v in sd.items()}})) == set(sd)
    with pytest.raises(ConfigError, match="holds no state dict of tensors.*state_dict"):
        extract_state_dict({"epoch": 3, "optimizer": {}})
    with pytest.raises(ConfigError, match="found list"):
        extract_state_dict([1, 2])


def test_key_and_shape_mismatch_names_the_first_keys():
    model = build_model("small_cnn", num_classes=4)
    sd = model.state_dict()
    bad = dict(sd)
    first = next(iter(bad))
    del bad[first]
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match=rf"missing keys \['{first}'\].*unexpected keys \['extra.weight'\]"):
        load_weights(model, bad, "checkpoint 'x.pt'")
    other = build_model("small_cnn", num_classes=7).state_dict()
    with pytest.raises(ConfigError, match="7-output classifier head.*4 outputs.*checkpoint and the run's config "
                                          "disagree on the class count"):
        load_weights(model, other, "checkpoint 'x.pt'")


def test_resume_with_truncated_last_checkpoint_names_file_and_a_remedy(tmp_path):
    trainer = Trainer.new(_config(tmp_path), progress=False)
    trainer.save_checkpoint(best=True)
    last = trainer.ckpt_dir / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    # best.pt cannot be resumed (no optimiser state): move last.pt aside and resume, or start anew from best.pt
    with pytest.raises(ConfigError,
                       match=r"last\.pt.*truncated.*mv .*last\.pt\.damaged.*--resume.*init_checkpoint.*best\.pt"):
        Trainer.resume(trainer.run_dir, progress=False)
    # An intact last.pt resumes (weights_only with the numpy RNG state allow-listed).
    trainer.save_checkpoint()
    assert Trainer.resume(trainer.run_dir, progress=False).epoch == trainer.epoch


def test_init_checkpoint_of_another_class_count_says_config_disagrees(tmp_path):
    donor = Trainer.new(_config(tmp_path, data=dict(DATA, num_classes=6)), progress=False)
    donor.save_checkpoint()
    with pytest.raises(ConfigError, match="6 outputs, but the model has 4.*checkpoint and the run's config disagree"):
        Trainer.new(_config(tmp_path, init_checkpoint=str(donor.ckpt_dir / "last.pt")), progress=False)
    # A plain state dict (someone else's weights) of the right shape is accepted as a fine-tuning start ...
    plain = tmp_path / "plain.pt"
    weights = build_model("small_cnn", num_classes=4).state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in weights.items()}}, plain)
    tuned = Trainer.new(_config(tmp_path, init_checkpoint=str(plain)), progress=False)
    assert all(torch.equal(tuned.model.state_dict()[k], v) for k, v in weights.items())
    # ... and one of the wrong class count gets the same diagnosis.
    torch.save(build_model("small_cnn", num_classes=6).state_dict(), plain)
    with pytest.raises(ConfigError, match="6-output classifier head.*disagree on the class count"):
        Trainer.new(_config(tmp_path, init_checkpoint=str(plain)), progress=False)


def test_load_model_refuses_foreign_file(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match=r"plain\.pt.*not an atkit checkpoint.*atkit eval --checkpoint FILE --model"):
        load_model(tmp_path / "plain.pt")


def _eval_cli(tmp_path, *args, capsys):
    rc = cli_main(["eval", *args, "--dataset", "synthetic", "--set", "data.n_train=16", "--set", "data.n_test=24",
                   "--set", "data.image_size=8", "--set", "data.num_classes=4", "--n", "12", "--batch-size", "6",
                   "--attacks", "clean,pgd10", "--device", "cpu", "--quiet"])
    return rc, capsys.readouterr()


def test_eval_external_state_dict_with_provenance(tmp_path, capsys):
    model = build_model("small_cnn", num_classes=4)
    ckpt = tmp_path / "released.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 99}, ckpt)
    out = tmp_path / "ev.json"
    rc, cap = _eval_cli(tmp_path, "--checkpoint", str(ckpt), "--model", "small_cnn", "--out", str(out), capsys=capsys)
    assert rc == 0, cap.err
    data = json.loads(out.read_text())
    prov = data["provenance"]
    assert prov["checkpoint"]["sha256"] == file_sha256(ckpt)
    assert prov["model"] == {"name": "small_cnn", "params": {}, "num_classes": 4, "dummy_classes": False,
                             "source": "external state dict",
                             "normalization": {"name": "none", "mean": None, "std": None, "source": "model default "
                                               "(none; the checkpoint holds no mean/std buffers)"},
                             "keys": {"layout": "atkit", "renamed": 0, "dropped": []}}
    assert data["images"]["dataset"] == "synthetic" and data["images"]["n"] == 12
    assert data["images"]["indices"] == prov["images"]["indices"] and len(data["images"]["indices"]) == 12
    assert prov["batch_size"] == 6 and prov["software"]["torch"] == torch.__version__
    assert data["n"] == 12 and set(data["ci95"]) == {"clean", "pgd10"}
    printed = cap.out.strip().splitlines()
    assert printed[0].strip().startswith("clean:") and "(n=12)" in printed[0] and "[" in printed[0]
    assert json.loads(printed[-1])["ci95"] == data["ci95"]


def test_eval_external_wrong_class_count_or_head(tmp_path, capsys):
    ckpt = tmp_path / "released.pt"
    torch.save(build_model("small_cnn", num_classes=4, dummy_classes=True).state_dict(), ckpt)
    rc, cap = _eval_cli(tmp_path, "--checkpoint", str(ckpt), "--model", "small_cnn", capsys=capsys)
    assert rc == 2 and "8-output classifier head" in cap.err and "--dummy-classes" in cap.err
    rc, cap = _eval_cli(tmp_path, "--checkpoint", str(ckpt), "--model", "small_cnn", "--num-classes", "10",
                        capsys=capsys)
    assert rc == 2 and "--num-classes 10" in cap.err and "disagree" in cap.err
    rc, cap = _eval_cli(tmp_path, "--checkpoint", str(ckpt), "--model", "small_cnn", "--dummy-classes",
                        "--out", str(tmp_path / "d.json"), capsys=capsys)
    assert rc == 0, cap.err
    data = json.loads((tmp_path / "d.json").read_text())
    assert set(data["protocols"]) == {"published", "adaptive", "adaptive_max"}
    assert data["protocols"]["adaptive"]["provenance"]["checkpoint"]["sha256"] == file_sha256(ckpt)
    assert "worst case over the protocols" in cap.out  # the headline of a dummy-class model is printed


def test_no_weights_only_false_left_in_atkit():
    # Only the conversion advice printed to the user spells weights_only=False; every load in atkit is weights_only=True.
    hits = subprocess.run(["git", "grep", "-n", "torch.load(", "--", "atkit"], cwd=REPO, capture_output=True,
                          text=True).stdout.splitlines()
    assert hits
    advice_file = "atkit/core/checkpoint_files.py"  # the one place that prints the conversion advice
    assert Path(REPO, advice_file).is_file(), advice_file
    for line in hits:
        assert "weights_only=True" in line or line.startswith(advice_file) and "m = torch.load(" in line, line


def test_run_eval_json_records_provenance_and_truncated_best_is_named_by_eval(tmp_path, capsys):
    from atkit.training.trainer import train

    trainer = train(_config(tmp_path), progress=False)
    ev = json.loads((trainer.run_dir / "eval.json").read_text())
    for label, name in (("final", "last.pt"), ("best", "best.pt")):
        prov = ev[label]["provenance"]
        assert prov["checkpoint"]["sha256"] == file_sha256(trainer.ckpt_dir / name)
        assert prov["images"] == ev["images"] and prov["model"]["name"] == "small_cnn"
        assert prov["model"]["normalization"] == {"name": "none", "mean": None, "std": None,
                                                  "source": "the run's model"}
        assert prov["software"]["atkit"] and prov["batch_size"] == trainer.config.eval.batch_size
    best = trainer.ckpt_dir / "best.pt"
    best.write_bytes(best.read_bytes()[:500])
    rc = cli_main(["eval", str(trainer.run_dir), "--attacks", "clean", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "best.pt" in err and "truncated" in err and "last.pt" in err


def test_resume_after_the_config_changed_class_count_says_they_disagree(tmp_path):
    trainer = Trainer.new(_config(tmp_path, data=dict(DATA, num_classes=6)), progress=False)
    trainer.save_checkpoint()
    cfg = yaml.safe_load((trainer.run_dir / "config.yaml").read_text())
    cfg["data"]["num_classes"] = 4
    (trainer.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"last\.pt.* has 6 outputs, but the model has 4.*checkpoint and the run's "
                                          "config disagree"):
        Trainer.resume(trainer.run_dir, progress=False)


def test_checkpoints_and_the_final_report_take_an_explicit_run_state_without_a_trainer(tmp_path):
    """A RunState built by hand (no Trainer) is saved, damaged and restored exactly, and its best model rebuilt."""
    import torch

    from atkit.data import load_dataset
    from atkit.methods import get_method
    from atkit.models import build_model
    from atkit.training.checkpoints import best_model, restore_checkpoint, save_checkpoint
    from atkit.training.distributed import init_from_env
    from atkit.training.report import final_report
    from atkit.training.state import RunState

    config = RunConfig.from_dict({"method": "pgd_at", "dataset": "synthetic", "model": "small_cnn", "epochs": 2,
                                  "eval": {"final_attacks": ["clean"], "sanity": False}})
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10)
    state = RunState(config=config, run_dir=tmp_path, device=torch.device("cpu"), model=model,
                     optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), method=get_method("pgd_at"),
                     num_classes=10, data_fingerprint="abc", epoch=1, history=[{"epoch": 1}], best_metric=12.5,
                     best_epoch=1)
    dist = init_from_env("cpu")
    save_checkpoint(state, dist, best=True)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    state.epoch, state.history, state.best_metric = 0, [], -1.0
    restore_checkpoint(state, tmp_path / "checkpoints" / "last.pt", dist)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert (state.epoch, state.history, state.best_metric, state.best_epoch) == (1, [{"epoch": 1}], 12.5, 1)
    best = best_model(state)
    assert best is not model and all(torch.equal(best.state_dict()[k], v) for k, v in saved.items())
    dataset = load_dataset("synthetic", n_train=32, n_test=16, image_size=32)
    state.data_fingerprint = dataset.fingerprint()
    report = final_report(state, dataset, n_test=16)
    assert report["best"]["same_weights_as"] == "final" and (tmp_path / "eval.json").is_file()
    assert report["images"]["n"] == 16 and report["final"]["accuracy"]["clean"] >= 0
