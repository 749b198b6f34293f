"""DistributedDataParallel training under ``torchrun``: two CPU processes (gloo) against one process.

One ``torchrun --nproc_per_node 2`` launch runs every two-process scenario in sequence (process start-up
dominates the cost); one plain ``python`` launch runs the one-process references. Both are subprocesses
so the test process never holds a process group or a patched model registry.

Why a BatchNorm-free model for the equality with one process: with BN, each process normalises its half
batch with that half's statistics, which is a different function of the weights than one BN over the
whole batch, so two-process and one-process training legitimately diverge. Without BN the per-sample
losses do not depend on how the batch is split; DDP averages the two half-batch mean gradients, which
equals the full-batch mean gradient (halves of equal size), so the weights must agree up to float
summation order. The model is registered (``tiny_nobn``) only inside the subprocesses. BN models are
covered by the other scenario: after the run every rank must hold the *same* BN buffers (they are
averaged over ranks at each epoch end) and the same parameters, and a run interrupted after one epoch
and resumed under torchrun must end with exactly the weights of an uninterrupted one (ReBAT: weight
average, BN in train mode while attacking, uniform random starts from per-rank RNG streams).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

WORKER = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(1)

    from atkit import models
    from atkit.models.base import AtkitModel
    from atkit.training.trainer import Trainer, train


    class TinyNoBN(AtkitModel):
        """conv - relu - pool(4x4) - linear - relu - linear: no BatchNorm, no dropout."""

        def __init__(self, num_classes=10, *, dummy_classes=False, normalize=None, in_channels=3):
            super().__init__(num_classes, dummy_classes=dummy_classes, normalize=normalize, in_channels=in_channels)
            self.conv = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
            self.hidden = nn.Linear(8 * 16, 32)
            self.fc = nn.Linear(32, self.num_outputs)
            self.penultimate_dim, self.third_to_last_dim = 32, 128

        def _trunk(self, x, need_third):
            h = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 4).flatten(1)
            return F.relu(self.hidden(h)), h


    models.MODELS["tiny_nobn"] = TinyNoBN

    from atkit.methods import LossOutput, Method, register


    @register
    class TwoForwards(Method):
        """0.5 CE(z(x)) + 0.5 CE(z(flip(x))): two forwards with parameter gradients before one backward,
        deterministic (unlike TRADES, whose sign steps from x' = x follow rounding noise of the batch shape)."""

        name = "two_forwards_test"

        def loss(self, model, batch, ctx):
            a, b = model(batch.x), model(batch.x.flip(-1))
            loss = 0.5 * F.cross_entropy(a, batch.y) + 0.5 * F.cross_entropy(b, batch.y)
            return LossOutput(loss, {"ce": loss.detach()}, batch.y, logits_clean=a.detach())

    out = Path(sys.argv[1])
    mode = sys.argv[2]
    rank = int(os.environ.get("RANK", "0"))
    BASE = dict(dataset="synthetic", data={"n_train": 256, "n_test": 40, "image_size": 16}, batch_size=64,
                schedule="constant", lr=0.3, device="cpu", out_dir=str(out / f"runs-{mode}"),
                threat={"steps": 2}, eval={"n_test": 40, "pgd_steps": 1, "final_attacks": ["clean"]})


    def cfg(**kw):
        d = dict(BASE)
        d.update(kw)
        return d


    def weights(model):
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


    def dump(name, trainer, init=None):
        state = weights(trainer.model)
        wa = trainer.averaged_model()
        torch.save({"state": state, "init": init, "history": trainer.history, "run_dir": str(trainer.run_dir),
                    "wa": None if wa is None else {k: v.cpu().clone() for k, v in wa.state_dict().items()},
                    "local_batch": trainer.local_batch_size, "world": trainer.dist.world_size},
                   out / f"{name}-{mode}-rank{rank}.pt")


    # A/B: BN-free model, deterministic methods: must equal one process on the same total batch.
    # Inputs are normalised inside the model (x - 0.5) / 0.1 so the BN-free net learns in 8 steps.
    NOBN = dict(model="tiny_nobn", model_params={"normalize": [[0.5], [0.1]]})
    a = Trainer.new(cfg(method="standard", epochs=2, name="a", **NOBN), progress=False)
    init = weights(a.model)
    a.fit()
    a.final_evaluation()
    dump("a", a, init)
    b = train(cfg(method="pgd_at", method_params={"random_start": "none"}, epochs=1, name="b", **NOBN),
              progress=False, evaluate_final=False)
    dump("b", b)
    # T: two forwards with parameter gradients before one backward, both through DDP.
    t = train(cfg(method="two_forwards_test", epochs=1, name="t", **NOBN), progress=False, evaluate_final=False)
    dump("t", t)
    # ACC: A with two micro-batches per step (under torchrun 2 x 16 rows per process, DDP's no_sync on the first).
    acc = train(cfg(method="standard", epochs=2, accumulate_steps=2, name="acc", **NOBN), progress=False,
                evaluate_final=False)
    dump("acc", acc)

    if mode == "ddp":
        # pgd on a bare DDP module unwraps it; a training step through DDP afterwards still reduces.
        from atkit.attacks import pgd
        ddp = b.dist.wrap_ddp(b.model)
        x, y = b.eval_x[:8], b.eval_y[:8]
        x_adv = pgd(ddp, x, y, eps=8 / 255, step_size=2 / 255, steps=2)
        assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
        F.cross_entropy(ddp(x_adv), y).backward()
        # A real two-forward method (clean and adversarial logits with gradients) runs under DDP.
        trades = train(cfg(method="trades", epochs=1, max_steps_per_epoch=2, name="trades", **NOBN),
                       progress=False, evaluate_final=False)
        dump("trades", trades)

        # C: BN model + ReBAT (weight average, BN in train mode while attacking, random starts), exact resume.
        c_cfg = dict(method="rebat", method_params={"wa_start": 0.5}, model="small_cnn",
                     model_params={"width": 4, "hidden": 16}, epochs=2, max_steps_per_epoch=2)
        straight = train(cfg(name="c-straight", **c_cfg), progress=False, evaluate_final=False)
        dump("c-straight", straight)
        cut = Trainer.new(cfg(name="c-cut", **c_cfg), progress=False)
        cut.epochs = 1  # stop after the first epoch, as a killed run would have
        cut.fit()
        resumed = Trainer.resume(cut.run_dir, progress=False)
        resumed.fit()
        dump("c-resumed", resumed)
    print("worker done", mode, rank, flush=True)
''')


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    single = subprocess.run([sys.executable, str(script), str(out), "single"], env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(out), "ddp"], env=_env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    return out


def _rows(history: list[dict]) -> list[dict]:
    """Metric rows without wall-clock times, NaN replaced by a marker so that NaN == NaN."""
    return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
             if not k.endswith("_time_s")} for row in history]


def _load(out: Path, name: str, mode: str, rank: int = 0) -> dict:
    return torch.load(out / f"{name}-{mode}-rank{rank}.pt", weights_only=False)


@pytest.mark.parametrize("name", ["a", "b", "t"])
def test_two_processes_match_one_process_on_the_same_total_batch(runs, name):
    one, two = _load(runs, name, "single"), _load(runs, name, "ddp")
    assert one["world"] == 1 and two["world"] == 2
    assert one["local_batch"] == 64 and two["local_batch"] == 32  # batch_size is the total batch
    assert one["state"].keys() == two["state"].keys()
    for key, w1 in one["state"].items():
        torch.testing.assert_close(two["state"][key], w1, rtol=1e-4, atol=2e-5, msg=f"{name}: {key}")
    # Epoch metrics are reduced over ranks: the same numbers as one process (float summation order aside).
    for row1, row2 in zip(one["history"], two["history"]):
        assert row2["train_loss"] == pytest.approx(row1["train_loss"], rel=1e-4, abs=1e-5)
        assert row2["train_clean_acc"] == pytest.approx(row1["train_clean_acc"], abs=1e-6)
        # Sharded clean evaluation gathered over ranks; one image may flip with 1e-6 weight differences.
        assert abs(row2["test_clean_acc"] - row1["test_clean_acc"]) <= 100.0 / 40 + 1e-9


@pytest.mark.parametrize("mode", ["single", "ddp"])
def test_accumulated_micro_batches_match_one_batch(runs, mode):
    """accumulate_steps=2 (atkit.training.accumulate) gives A's weights, in one process and under torchrun with no_sync."""
    one, acc = _load(runs, "a", "single"), _load(runs, "acc", mode)
    for key, w1 in one["state"].items():
        torch.testing.assert_close(acc["state"][key], w1, rtol=1e-4, atol=2e-5, msg=f"{mode}: {key}")
    assert acc["history"][-1]["steps"] == one["history"][-1]["steps"] == 4


def test_training_actually_moved_the_weights(runs):
    """Guard against a vacuous equality: training moved the weights far more than the tolerance above."""
    first = _load(runs, "a", "ddp")
    moved = max(float((first["state"][k] - v).abs().max()) for k, v in first["init"].items())
    assert moved > 1e-2
    ckpt = torch.load(Path(first["run_dir"]) / "checkpoints" / "last.pt", weights_only=False)
    assert set(ckpt["model"]) == set(first["state"])  # plain keys: no "module." prefix from wrappers
    assert len(ckpt["rng_ranks"]) == 2
    assert ckpt["history"][-1]["epoch"] == 2
    # eval.json is written by rank 0 once; the run finished on both ranks.
    assert (Path(first["run_dir"]) / "eval.json").is_file()
    assert first["history"][-1]["train_loss"] < first["history"][0]["train_loss"]
    assert first["history"][-1]["test_clean_acc"] > 10.0  # above chance, so the accuracy comparison means something


def test_ranks_hold_one_model(runs):
    for name in ("a", "b", "t", "acc", "trades", "c-straight", "c-resumed"):
        r0, r1 = _load(runs, name, "ddp", 0), _load(runs, name, "ddp", 1)
        for key, v0 in r0["state"].items():
            assert torch.equal(v0, r1["state"][key]), f"{name}: {key} differs between ranks"
        assert _rows(r0["history"]) == _rows(r1["history"]), f"{name}: ranks logged different metrics"
    c0, c1 = _load(runs, "c-straight", "ddp", 0), _load(runs, "c-straight", "ddp", 1)
    bn = [k for k in c0["state"] if "running_mean" in k]
    assert bn, "scenario C must use a BatchNorm model"
    assert c0["wa"] is not None and c0["wa"].keys() == c1["wa"].keys()
    for key in c0["wa"]:
        assert torch.equal(c0["wa"][key], c1["wa"][key]), f"weight average {key} differs between ranks"


def test_resume_under_torchrun_is_exact(runs):
    for rank in (0, 1):
        straight, resumed = _load(runs, "c-straight", "ddp", rank), _load(runs, "c-resumed", "ddp", rank)
        for key, v in straight["state"].items():
            torch.testing.assert_close(resumed["state"][key], v, rtol=0, atol=1e-6, msg=f"rank {rank}: {key}")
        for key, v in straight["wa"].items():
            torch.testing.assert_close(resumed["wa"][key], v, rtol=0, atol=1e-6, msg=f"rank {rank}: WA {key}")
        assert _rows(resumed["history"]) == _rows(straight["history"])


def test_batch_must_divide_over_processes():
    from atkit.training.distributed import DistContext
    from atkit.core.utils import ConfigError

    ctx = DistContext(rank=0, world_size=3)
    assert ctx.local_batch_size(96) == 32
    with pytest.raises(ConfigError, match="batch_size=128.*3 processes"):
        ctx.local_batch_size(128)
    one = DistContext()
    assert one.local_batch_size(7) == 7 and one.rank_seed(5) == 5
    assert DistContext(rank=1, world_size=2).rank_seed(5) != DistContext(rank=0, world_size=2).rank_seed(5)
    x = torch.arange(10)
    (a,) = DistContext(rank=1, world_size=3).shard(x)
    assert a.tolist() == [1, 4, 7]
