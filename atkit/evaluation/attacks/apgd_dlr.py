"""``apgd_dlr``: APGD on the DLR loss alone (Croce & Hein 2020, arXiv:2003.01690)."""
from dataclasses import dataclass, field
from typing import Optional

from atkit.evaluation.attack import EvalAttack, register_eval_attack
from atkit.evaluation.attacks.aa import run_official


@dataclass
class APGDDLRParams:
    n_restarts: int = field(default=1, metadata={"help": "restarts", "range": (1, None)})
    n_iter: Optional[int] = field(default=None, metadata={"help": "iterations (None: 100)", "range": (1, None)})


@register_eval_attack
class APGDDLR(EvalAttack):
    """APGD on ``DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (Croce & Hein 2020, arXiv:2003.01690,
    Eq. 6): shift- and scale-invariant in the logits, so it is not fooled by a rescaled or saturated softmax."""

    name = "apgd_dlr"
    paper = "Croce & Hein 2020, arXiv:2003.01690 (official pyautoattack)"
    Params = APGDDLRParams
    strength = 80.0      # above PGD and CW, below APGD-CE+DLR and AutoAttack
    margin = True        # a margin loss: the black-box check accepts it as the margin reference
    whole_set = True     # the official driver runs it on all images at once (resumable)
    scored_view = True   # APGD keeps its own record of broken points: it sees the scored prediction
    smoke_settings = {"n_iter": 5}  # cheap enough for the registry-wide contract test

    def display_name(self):
        return "APGD-DLR"

    def run_whole(self, target, x, y):
        return run_official(self, target, x, y, version="custom", attacks=["apgd-dlr"],
                            n_restarts=self.params.n_restarts, n_iter=self.params.n_iter)
