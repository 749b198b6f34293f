"""Putting a model into the state an attack needs, and back."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from ..core.utils import check_choice

BN_MODES = ("eval", "train")


@contextmanager
def attack_mode(model: nn.Module, bn_mode: str = "eval") -> Iterator[nn.Module]:
    """Run an attack with BatchNorm/dropout in ``bn_mode`` and parameter gradients switched off.

    ``bn_mode="eval"`` uses running statistics (TRADES/MART/Consistency-AT family);
    ``"train"`` uses batch statistics and updates the running ones, as robust_overfitting and ReBAT
    generate their training attacks (docs/methods.md, common protocol). Freezing ``requires_grad`` keeps the
    attack's backward passes from building parameter-gradient graphs at all, which is both faster
    and guarantees nothing leaks into ``.grad``. The previous mode and flags are restored on exit,
    also when the attack raises.
    """
    check_choice("bn_mode", bn_mode, BN_MODES)
    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    model.train(bn_mode == "train")
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Forward passes in eval mode without autograd, the model's mode restored on exit.

    For indicators computed from the current model during training (clean logits for the accuracy
    curve, RAAT's boundary mask): running statistics are used and left untouched, and nothing joins
    the loss's graph.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` under :func:`frozen_eval`."""
    with frozen_eval(model):
        return model(x)
