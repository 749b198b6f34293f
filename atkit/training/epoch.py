"""One training epoch's bookkeeping: the device-side tally of losses and accuracies, the log line, and the error
a diverged loss raises (:class:`atkit.training.trainer.Trainer` uses all three)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from ..methods import LossOutput
from ..models import predict_labels
from .augment import hard_labels


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops and keeps its last good checkpoint, if any.

    ``epoch`` counts from 0 (the epoch that diverged); ``kept_epoch`` is the number of completed epochs in
    the kept ``checkpoints/last.pt``, or ``None`` when the run had written no checkpoint yet.
    """

    def __init__(self, epoch: int, step: int, kept_epoch: Optional[int] = None) -> None:
        if kept_epoch is None:
            kept = ("no checkpoint was kept: the run diverged before its first checkpoint (lower the learning rate "
                    "or check the method's terms, then start a new run)")
        else:
            kept = (f"its last good checkpoint, checkpoints/last.pt after {kept_epoch} completed epoch(s), was kept "
                    "(lower the learning rate or check the method's terms)")
        super().__init__(f"non-finite training loss at epoch {epoch}, step {step}; the run was stopped and {kept}")
        self.epoch, self.step, self.kept_epoch = epoch, step, kept_epoch


def epoch_line(record: Mapping[str, Any], epochs: int, n_eval: Optional[int] = None) -> str:
    """One log line per epoch: ``epoch 3/10  loss 1.2345  test clean 45.20%, pgd10 30.10% (n=500)  4.1 s + eval 0.8 s``.

    Test accuracies are the per-epoch selection evaluation (online model; ``ema``/``wa`` for the averages);
    a partial epoch (stopped by :meth:`Trainer.request_stop`) says how many of its steps ran; an epoch's
    ``warning`` (catastrophic overfitting, :mod:`atkit.training.catastrophic_overfitting`) ends the line.
    """
    head = f"epoch {record.get('epoch')}/{epochs}"
    if record.get("partial"):
        head += f" (partial: {record.get('steps')}/{record.get('steps_per_epoch')} steps, not counted)"
    parts = [head]
    if record.get("train_loss") is not None:
        parts.append(f"loss {float(record['train_loss']):.4f}")
    tests = []
    for prefix, tag in (("test_", ""), ("ema_test_", "ema "), ("wa_test_", "wa ")):
        tests += [f"{tag}{k[len(prefix):-4]} {float(v):.2f}%" for k, v in record.items()
                  if k.startswith(prefix) and k.endswith("_acc")]
    if tests:
        parts.append("test " + ", ".join(tests) + (f" (n={n_eval})" if n_eval else ""))
    else:
        parts.append("test not evaluated this epoch (eval.every)")
    seconds = f"{float(record.get('train_time_s', 0.0)):.1f} s"
    if record.get("eval_time_s") is not None:
        seconds += f" + eval {float(record['eval_time_s']):.1f} s"
    parts.append(seconds)
    if record.get("warning"):
        parts.append(f"WARNING: {record['warning']}")
    return "  ".join(parts)


class EpochTally:
    """One epoch's loss sums and train accuracy counts, kept on the device (no host sync per step)."""

    def __init__(self, device: torch.device, num_classes: int) -> None:
        self.num_classes = num_classes
        self.sums: dict[str, Any] = {}
        self.correct_clean = torch.zeros((), device=device)
        self.correct_adv = torch.zeros((), device=device)
        self.n_seen = self.n_clean = self.n_adv = 0
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss

    def add(self, out: LossOutput, n: int, step: int) -> None:
        """Count one step's loss (and its parts, weighted by the ``n`` images) and its predictions."""
        finite = torch.isfinite(out.loss.detach())
        self.first_bad = torch.where((self.first_bad < 0) & ~finite, self.first_bad.new_full((), step), self.first_bad)
        for k, v in out.parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float() * n
        self.sums["loss"] = self.sums.get("loss", 0.0) + out.loss.detach().float() * n
        self.n_seen += n
        labels = hard_labels(out.y)  # a CutMix target counts as its larger share's class
        if out.logits_clean is not None:
            self.correct_clean += (predict_labels(out.logits_clean.detach(), self.num_classes) == labels).sum()
            self.n_clean += out.y.shape[0]
        if out.logits_adv is not None:
            self.correct_adv += (predict_labels(out.logits_adv.detach(), self.num_classes) == labels).sum()
            self.n_adv += out.y.shape[0]

    def sum_over_ranks(self, dist: Any) -> None:
        """Sum the sums and counts over torchrun ranks (one collective) and take the earliest bad step of any."""
        self.first_bad = dist.max(self.first_bad)
        counts = (self.correct_clean, self.correct_adv, self.n_seen, self.n_clean, self.n_adv)
        packed = {f"sum/{k}": v for k, v in self.sums.items()} | {f"count/{i}": c for i, c in enumerate(counts)}
        total = dist.sum(packed)
        self.sums = {k: total[f"sum/{k}"] for k in self.sums}
        (self.correct_clean, self.correct_adv, self.n_seen, self.n_clean,
         self.n_adv) = (total[f"count/{i}"] for i in range(len(counts)))

    def train_metrics(self) -> dict[str, float]:
        """``train_<part>`` (mean loss per image), ``train_clean_acc`` and ``train_adv_acc`` (percent, NaN if none)."""
        record = {f"train_{k}": float(v) / max(self.n_seen, 1) for k, v in self.sums.items()}
        record["train_clean_acc"] = 100.0 * float(self.correct_clean) / self.n_clean if self.n_clean else float("nan")
        record["train_adv_acc"] = 100.0 * float(self.correct_adv) / self.n_adv if self.n_adv else float("nan")
        return record


__all__ = ["EpochTally", "NonFiniteLossError", "epoch_line"]
