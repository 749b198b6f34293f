"""Dummy-class helpers for DUCAT (docs/methods.md, DUCAT): projected prediction and the
merged C-class model used by the adaptive evaluation protocol."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from atkit.core.utils import ConfigError, check_choice
from atkit.models.base import AtkitModel, Features

MERGE_MODES = ("logsumexp", "max")


def _check_outputs(logits: torch.Tensor, num_classes: int, allowed: Tuple[int, ...]) -> None:
    if logits.dim() != 2 or logits.shape[1] not in allowed:
        raise ConfigError(
            f"logits must have shape (B, K) with K in {list(allowed)} for num_classes={num_classes}; "
            f"got {tuple(logits.shape)}"
        )


def predict_labels(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Predicted real class: ``k = argmax_j z_j`` over all outputs, then ``k >= C -> k - C``.

    Works for plain C-output heads (no mapping happens) and DUCAT 2C-output heads, where output
    ``k + C`` is the dummy of class ``k`` (DUCAT).
    """
    _check_outputs(logits, num_classes, (num_classes, 2 * num_classes))
    pred = logits.argmax(dim=1)
    return torch.where(pred >= num_classes, pred - num_classes, pred)


def merge_dummy_logits(logits: torch.Tensor, num_classes: int, how: str = "logsumexp") -> torch.Tensor:
    """C-class logits from a 2C head: ``z̄_k = logsumexp(z_k, z_{k+C})`` (or ``max(z_k, z_{k+C})``).

    With ``logsumexp``, ``softmax(z̄)_k = p_k + p_{k+C}``: the probability of class k and its dummy
    together, so an attack on ``z̄`` cannot win by pushing a point into its own dummy class (DUCAT
    adaptive protocol, docs/methods.md, DUCAT).
    """
    check_choice("dummy merge mode", how, MERGE_MODES)
    _check_outputs(logits, num_classes, (2 * num_classes,))
    pair = torch.stack((logits[:, :num_classes], logits[:, num_classes:]), dim=0)
    if how == "logsumexp":
        return torch.logsumexp(pair, dim=0)
    return pair.max(dim=0).values


class MergedDummyModel(AtkitModel):
    """Wraps a dummy-class model so that ``forward`` returns the merged C-class logits
    (:func:`merge_dummy_logits`); attacks and AutoAttack can run on it unchanged.

    The wrapped model keeps its own input normalization; train/eval mode and device follow it as a
    submodule. With ``how="max"`` the argmax of the merged logits equals the projected prediction of
    the raw 2C logits; with ``logsumexp`` it may differ on a few points, so accuracy "by projected
    prediction" should be computed with :func:`predict_labels` on ``self.base(x)``.
    """

    def __init__(self, model: AtkitModel, how: str = "logsumexp") -> None:
        check_choice("dummy merge mode", how, MERGE_MODES)
        if not getattr(model, "dummy_classes", False):
            raise ConfigError("MergedDummyModel needs a model built with dummy_classes=True (2C outputs)")
        super().__init__(model.num_classes, dummy_classes=False, normalize=None, in_channels=model.in_channels)
        self.base = model
        self.how = how
        self.penultimate_dim = model.penultimate_dim
        self.third_to_last_dim = model.third_to_last_dim

    def forward(self, x: torch.Tensor, return_features: bool = False) -> Union[torch.Tensor, Features]:
        if not return_features:
            return merge_dummy_logits(self.base(x), self.num_classes, self.how)
        feats = self.base(x, return_features=True)
        return feats._replace(logits=merge_dummy_logits(feats.logits, self.num_classes, self.how))

    def _trunk(self, x: torch.Tensor, need_third: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError("MergedDummyModel delegates to its base model")

    def enable_dummy_classes(self, init: str = "random") -> "AtkitModel":
        raise ConfigError("MergedDummyModel is already the merged C-class view of a dummy-class model")

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, how={self.how!r}"


# The DUCAT evaluation protocols (docs/methods.md, DUCAT): "published" attacks the raw 2C logits (the papers'
# protocol), the adaptive ones attack the merged C-class view, each by its merge of real and dummy logits.
PROTOCOLS = ("published", "adaptive", "adaptive_max")
PROTOCOL_MERGE = {"adaptive": "logsumexp", "adaptive_max": "max"}


def protocol_model(model: torch.nn.Module, protocol: Optional[str]) -> Tuple[torch.nn.Module, Optional[str]]:
    """``(the model the attacks see, the protocol used)`` for an evaluation ``protocol`` (:data:`PROTOCOLS`).

    ``None``: the model itself (``"published"`` for a dummy-class model, None for a plain one);
    ``"adaptive"`` / ``"adaptive_max"``: :class:`MergedDummyModel` with ``how="logsumexp"`` / ``"max"``, in the
    model's train/eval mode. Scoring stays with the model's own projected prediction (:func:`predict_labels`).
    A protocol on a model without dummy classes, or an unknown protocol, is a :class:`ConfigError`.
    """
    dummy = bool(getattr(model, "dummy_classes", False))
    if protocol is None:
        return model, ("published" if dummy else None)
    check_choice("evaluation protocol", protocol, PROTOCOLS)
    if not dummy:
        raise ConfigError(f"protocol={protocol!r} is for DUCAT models with dummy classes (2C outputs); "
                          "this model has none, use protocol=None.")
    if protocol == "published":
        return model, protocol
    merged = MergedDummyModel(model, how=PROTOCOL_MERGE[protocol])  # type: ignore[arg-type]
    # A new module starts in train mode; an attack that restores the wrapper's mode on exit would then put the
    # wrapped model (its submodule) in train mode, and the next forward would update its BatchNorm statistics.
    merged.train(model.training)
    return merged, protocol
