"""Published numbers of the papers atkit implements, each with its source (paper short name, table, row
label as printed). Short names (RPAT, RAAT, DUCAT, FAIT/MER) and full references: docs/references.md.

The results notebook shows these beside the workbook's own runs. Accuracies are in percent, as
printed; ``mean = (Clean + AA) / 2`` and ``nrr = 2 Clean AA / (Clean + AA)`` (docs/methods.md, common protocol).

Caveats, carried into every table built from here (:data:`CAVEATS`):

* The papers trained and tested on the original CIFAR-10 (and CIFAR-100, Tiny-ImageNet). The
  GPU runs of this project read a JPEG (quality 75) copy of CIFAR-10 (``dataset: folder``), so
  absolute accuracies are expected a few points lower: compare directions and rough sizes.
* "best" is the checkpoint with the highest PGD-20 (RPAT) or PGD-10 (DUCAT, RAAT) test
  accuracy, as the papers did; the FAIT/MER paper selects by PGD robustness as well.
* DUCAT reports its numbers under its *published* protocol (attacks on the raw 2C logits); the
  workbook also reports the adaptive protocol, which is lower (docs/methods.md, DUCAT).
* FAIT/MER paper, Table 4: the text this project was built from lost its method column; rows 1-5 are labelled from the order in
  which the text names the methods (PGD-AT, GAIRAT, MART, TRADES-AWP, HAT; ``label_inferred``),
  rows 6-8 from the values they share with Tables 1 and 3 (FAIT, TRADES-MER) and the text (FAIT-MER).
* Rows of methods atkit does not implement keep ``method=None``: they are shown, never matched.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping, Optional, Sequence

import pandas as pd

CAVEATS = (
    "Papers: original CIFAR-10; this project's GPU runs: a JPEG (q=75) copy, expect a few points lower.",
    "best = checkpoint with the highest PGD-20 (RPAT) or PGD-10 (DUCAT, RAAT) test accuracy.",
    "DUCAT numbers are under the published protocol (attacks on the raw 2C logits).",
    "FAIT/MER paper, Table 4 rows 1-5: method labels inferred from the text (the label column is lost).",
)

# Short name used as ``Reference.source`` -> the paper (full entries with authors and links: docs/references.md).
PAPERS: dict[str, str] = {
    "RPAT": "Wang & Liu, Failure Cases Are Better Learned But Boundary Says Sorry, ICCV 2025, arXiv:2508.02186",
    "RAAT": "Wang et al., Robust Alignment: Harmonizing Clean Accuracy and Adversarial Robustness in Adversarial "
            "Training, arXiv:2604.26496",
    "DUCAT": "Wang et al., New Paradigm of Adversarial Training: Breaking Inherent Trade-Off between Accuracy and "
             "Robustness via Dummy Classes, arXiv:2410.12671",
    "FAIT/MER": "Wu et al., Lower Difficulty and Better Robustness: A Bregman Divergence Perspective for Adversarial "
                "Training, arXiv:2208.12511",
}

METRICS = ("clean", "pgd10", "pgd20", "pgd100", "cw", "aa", "mean", "nrr",
           "pgd10_targeted", "pgd10_targeted_original", "pgd10_targeted_dummy")

# Paper architecture name -> atkit model names that implement it (the RPAT/DUCAT code's "ResNet-18"
# is a Bottleneck net, so both ResNet-18 variants count).
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "ResNet-18": ("resnet18", "resnet18_bottleneck"),
    "PreActResNet-18": ("preact_resnet18",),
    "WideResNet-34-10": ("wrn34_10",),
    "WideResNet-28-10": ("wrn28_10",),
}

_DATASETS = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "Tiny-ImageNet": "tiny-imagenet"}
_BASES = {"PGD-AT": "pgd_at", "TRADES": "trades", "MART": "mart", "Consistency-AT": "consistency_at",
          "Cons-AT": "consistency_at"}


@dataclass(frozen=True)
class Reference:
    """One published row at one checkpoint.

    ``method``/``method_params``: the atkit method and the hyperparameters that differ from its
    defaults (None: atkit has no such method). ``values``/``std``: metric -> percent.
    """

    source: str
    table: str
    row: str
    method: Optional[str]
    dataset: str
    norm: str
    model: str
    checkpoint: str
    values: Mapping[str, float]
    std: Mapping[str, float] = field(default_factory=dict)
    method_params: Mapping[str, Any] = field(default_factory=dict)
    schedule: Optional[str] = None
    note: str = ""
    label_inferred: bool = False

    @property
    def key(self) -> str:
        """``"RPAT / Table 1"``: the paper (short name, docs/references.md) and table this number is printed in."""
        return f"{self.source} / {self.table}"


def _num(token: str) -> tuple[float, Optional[float]]:
    if "±" in token:
        v, s = token.split("±")
        return float(v), float(s)
    return float(token), None


def _rows(block: str) -> list[tuple[list[str], list[str]]]:
    """``label | label | n n n`` lines -> (labels, number tokens)."""
    out = []
    for line in block.strip().splitlines():
        parts = [p.strip() for p in line.split("|")]
        out.append((parts[:-1], parts[-1].split()))
    return out


def _entry(refs: list[Reference], *, values: Mapping[str, str], **kw: Any) -> None:
    vals, std = {}, {}
    for metric, token in values.items():
        v, s = _num(token)
        vals[metric] = v
        if s is not None:
            std[metric] = s
    refs.append(Reference(values=vals, std=std, **kw))


# -------------------------------------------------------------------------------------------------
# RPAT, Tables 1 and 2: ResNet-18, benchmarks vs +RPAT, best and final, pang110 schedule.
# Columns as printed: base Clean PGD-20 AA Mean NRR (best) | +RPAT Clean b/f, PGD-20 b/f, AA b/f, Mean, NRR.
_S002_T1 = """
CIFAR-10 | PGD-AT | 82.92 50.61 46.74 64.830 59.782 83.20 82.99 51.29 50.97 48.00 47.60 65.600 60.878
CIFAR-10 | TRADES | 79.67 51.91 47.62 63.645 59.610 80.02 80.02 51.21 51.21 47.47 47.45 63.745 59.590
CIFAR-10 | MART | 77.93 53.00 46.70 62.315 58.402 75.44 75.95 52.88 52.87 47.03 47.30 61.235 57.940
CIFAR-10 | Consistency-AT | 83.42 51.96 47.72 65.570 60.711 84.12 84.04 52.33 52.14 48.98 49.06 66.550 61.911
CIFAR-100 | PGD-AT | 56.56 28.80 25.02 40.790 34.693 58.22 58.58 29.16 28.57 24.88 24.23 41.550 34.862
CIFAR-100 | TRADES | 55.39 29.36 24.51 39.950 33.983 57.50 57.25 29.42 29.00 25.05 24.45 41.275 34.897
CIFAR-100 | MART | 49.83 30.38 25.00 37.415 33.295 50.72 50.72 30.33 30.33 25.34 25.06 38.030 33.796
CIFAR-100 | Consistency-AT | 58.53 29.28 25.39 41.960 35.417 60.33 60.51 29.97 29.64 26.31 25.97 43.320 36.641
Tiny-ImageNet | PGD-AT | 46.32 21.58 17.07 31.695 24.947 47.68 48.32 22.13 22.00 17.77 17.91 32.725 25.891
Tiny-ImageNet | TRADES | 46.75 21.52 16.60 31.675 24.500 48.77 48.85 21.98 21.93 16.92 16.71 32.845 25.124
Tiny-ImageNet | MART | 39.70 22.90 17.18 28.440 23.982 41.76 41.66 23.40 23.29 17.79 17.78 29.775 24.951
Tiny-ImageNet | Consistency-AT | 46.54 21.89 17.60 32.070 25.541 49.74 49.85 23.16 22.84 18.84 18.74 34.290 27.329
"""
_S002_T2 = """
CIFAR-10 | PGD-AT | 87.76 67.92 66.36 77.060 75.574 88.20 88.45 68.56 68.52 67.63 67.62 77.915 76.557
CIFAR-10 | TRADES | 83.99 68.60 65.93 74.960 73.872 85.17 84.80 68.95 68.90 67.67 67.37 76.420 75.418
CIFAR-10 | MART | 84.09 68.32 66.28 75.185 74.130 84.65 84.65 68.60 68.60 66.69 66.70 75.670 74.604
CIFAR-10 | Consistency-AT | 88.76 69.35 67.46 78.110 76.658 89.38 89.52 70.41 70.36 69.44 69.55 79.410 78.158
CIFAR-100 | PGD-AT | 65.00 41.54 39.27 52.135 48.960 65.14 65.44 41.61 41.28 39.23 39.20 52.185 48.969
CIFAR-100 | TRADES | 61.25 43.05 40.15 50.70 48.505 62.41 62.64 43.56 43.10 40.36 40.12 51.385 49.020
CIFAR-100 | MART | 60.08 43.42 39.85 49.965 47.92 60.57 60.57 43.92 43.90 40.36 40.36 50.465 48.442
CIFAR-100 | Consistency-AT | 65.14 42.28 39.92 52.530 49.503 65.54 66.81 42.81 42.51 40.26 40.61 52.900 49.880
Tiny-ImageNet | PGD-AT | 59.36 43.12 40.90 50.130 48.431 60.28 60.28 44.06 44.06 41.89 41.87 51.085 49.430
Tiny-ImageNet | TRADES | 57.61 44.70 42.33 49.970 48.802 58.46 58.50 44.87 44.65 42.42 42.44 50.440 49.165
Tiny-ImageNet | MART | 56.47 44.84 42.22 49.345 48.316 57.17 56.95 45.02 44.67 42.51 42.16 49.840 48.762
Tiny-ImageNet | Consistency-AT | 61.49 44.92 42.59 52.040 50.324 62.19 62.64 45.28 44.87 43.17 42.85 52.680 50.963
"""


def _rpat_benchmark_tables(refs: list[Reference]) -> None:
    for table, block, norm in (("Table 1", _S002_T1, "linf"), ("Table 2", _S002_T2, "l2")):
        for (ds, label), t in _rows(block):
            common = dict(source="RPAT", table=table, dataset=_DATASETS[ds], norm=norm, model="ResNet-18",
                          schedule="pang110")
            base = _BASES[label]
            _entry(refs, row=f"{ds} {label}", method=base, checkpoint="best",
                   values=dict(clean=t[0], pgd20=t[1], aa=t[2], mean=t[3], nrr=t[4]), **common)
            _entry(refs, row=f"{ds} {label} +RPAT", method=f"{base}+rpat", checkpoint="best",
                   values=dict(clean=t[5], pgd20=t[7], aa=t[9], mean=t[11], nrr=t[12]), **common)
            _entry(refs, row=f"{ds} {label} +RPAT", method=f"{base}+rpat", checkpoint="final",
                   values=dict(clean=t[6], pgd20=t[8], aa=t[10]), **common)


# RPAT, Table 3: PreActResNet-18, Clean AA Mean NRR for CIFAR-10 then CIFAR-100 (SOTA numbers are from
# their papers, Kanai et al., Wang et al. or the authors' reproduction, as the paper says).
_S002_T3 = """
linf | WA | UAI'18 | 83.50 49.89 66.695 62.461 57.26 25.83 41.545 35.601
linf | MMA | ICLR'20 | 85.50 37.20 61.350 51.844 60.60 18.40 39.500 28.229
linf | AWP | NeurIPS'20 | 81.11 50.09 65.600 61.933 54.10 25.16 39.630 34.347
linf | GAIRAT | ICLR'21 | 78.70 37.70 58.200 50.979 52.00 19.80 35.900 28.680
linf | KD+SWA | ICLR'21 | 84.06 49.82 66.940 62.562 57.17 25.66 41.415 35.422
linf | EWAT | ICML'21 | 82.80 48.20 65.500 60.931 54.20 23.52 38.860 32.805
linf | MAIL | NeurIPS'21 | 79.50 39.60 59.550 52.867 46.50 16.70 31.600 24.574
linf | TE | ICLR'22 | 82.04 50.12 66.080 62.225 56.41 25.84 41.125 35.444
linf | SOVR | ICML'23 | 81.90 49.40 65.650 61.628 52.10 24.30 38.200 33.142
linf | ReBAT | NeurIPS'23 | 82.09 50.72 66.405 62.700 56.13 27.60 41.865 37.004
linf | RPAT++ | Ours | 82.63 51.00 66.815 63.072 56.84 27.68 42.260 37.230
l2 | ReBAT | NeurIPS'23 | 88.79 71.00 79.895 78.905 65.58 42.67 54.125 51.701
l2 | RPAT++ | Ours | 89.06 71.26 80.160 79.172 65.63 42.85 54.240 51.848
"""
# RPAT, Table 4: WideResNet-34-10, CIFAR-10, l-inf: Clean AA Mean NRR ("*": with CutMix).
_S002_T4 = """
WA | UAI'18 | 87.66 52.65 70.155 65.787
MMA | ICLR'20 | 87.80 43.10 65.450 57.818
AWP | NeurIPS'20 | 85.63 53.32 69.475 65.718
GAIRAT | ICLR'21 | 83.00 41.80 62.400 55.599
KD+SWA | ICLR'21 | 87.45 53.59 70.520 66.456
EWAT | ICML'21 | 86.00 51.60 68.800 64.500
MAIL | NeurIPS'21 | 82.20 43.30 62.750 56.721
TE | ICLR'22 | 85.97 52.88 69.425 65.482
SOVR | ICML'23 | 85.00 53.10 69.050 65.366
ReBAT | NeurIPS'23 | 85.25 54.78 70.015 66.700
ADR | ICLR'24 | 84.67 53.25 68.960 65.381
CURE | ICLR'24 | 87.05 52.10 69.575 65.186
RPAT++ | Ours | 86.76 54.97 70.865 67.300
ReBAT* | NeurIPS'23 | 86.66 55.64 71.150 67.769
RPAT++* | Ours | 87.57 55.79 71.680 68.158
"""
_REBAT_FAMILY = {"ReBAT": "rebat", "RPAT++": "rpat_pp"}


def _rpat_sota_tables(refs: list[Reference]) -> None:
    for (norm, label, venue), t in _rows(_S002_T3):
        for ds, off in (("cifar10", 0), ("cifar100", 4)):
            _entry(refs, source="RPAT", table="Table 3", row=f"{label} ({venue})", method=_REBAT_FAMILY.get(label),
                   dataset=ds, norm=norm, model="PreActResNet-18", checkpoint="best", schedule="rebat",
                   values=dict(clean=t[off], aa=t[off + 1], mean=t[off + 2], nrr=t[off + 3]))
    for (label, venue), t in _rows(_S002_T4):
        cutmix = label.endswith("*")
        method = None if cutmix else _REBAT_FAMILY.get(label)
        _entry(refs, source="RPAT", table="Table 4", row=f"{label} ({venue})", method=method, dataset="cifar10",
               norm="linf", model="WideResNet-34-10", checkpoint="best", schedule="rebat",
               note="* = trained with CutMix (not in atkit)" if cutmix else "",
               values=dict(clean=t[0], aa=t[1], mean=t[2], nrr=t[3]))


# RPAT, Table 5 (appendix): perception proxy of PGD-AT+RPAT, CIFAR-10, ResNet-18, l-inf: Clean AA Mean NRR.
_S001_T5 = """
PGD-AT (the baseline as in Table 1) | pgd_at | - | 82.92 46.74 64.83 59.78
+ RPAT, logits (the proxy of Table 1) | pgd_at+rpat | logits | 83.20 48.00 65.60 60.88
+ RPAT, embedding from the second-to-last layer | pgd_at+rpat | penultimate | 83.19 47.89 65.54 60.79
+ RPAT, embedding from the third-to-last layer | pgd_at+rpat | third_to_last | 83.14 48.02 65.58 60.88
"""
# RPAT, Table 6 (appendix): stronger training adversary ("$"), PreActResNet-18, CIFAR-10, l-inf:
# Clean b/f, PGD-20 b/f, AA b/f, Mean, NRR.
_S001_T6 = """
ReBAT | rebat | 0 | 82.09 82.05 55.77 56.03 50.72 50.70 66.405 62.700
RPAT++ | rpat_pp | 0 | 82.63 82.76 56.27 56.02 51.00 50.71 66.815 63.072
ReBAT$ | rebat | 1 | 77.57 78.82 56.79 56.46 50.91 51.09 64.240 61.474
RPAT++$ | rpat_pp | 1 | 79.25 79.47 57.04 56.52 51.25 51.09 65.250 62.246
"""


def _rpat_appendix_tables(refs: list[Reference]) -> None:
    for (label, method, proxy), t in _rows(_S001_T5):
        _entry(refs, source="RPAT", table="Table 5", row=label, method=method, dataset="cifar10", norm="linf",
               model="ResNet-18", checkpoint="best", schedule="pang110",
               method_params={} if proxy == "-" else {"rp_proxy": proxy},
               values=dict(clean=t[0], aa=t[1], mean=t[2], nrr=t[3]))
    for (label, method, strong), t in _rows(_S001_T6):
        params = {"strong_late_attack": True} if strong == "1" else {}
        common = dict(source="RPAT", table="Table 6", row=label, method=method, dataset="cifar10", norm="linf",
                      model="PreActResNet-18", schedule="rebat", method_params=params,
                      note="$ = stronger training attack (eps 10/255, 12 steps) after the first decay" if params else "")
        _entry(refs, checkpoint="best", values=dict(clean=t[0], pgd20=t[2], aa=t[4], mean=t[6], nrr=t[7]), **common)
        _entry(refs, checkpoint="final", values=dict(clean=t[1], pgd20=t[3], aa=t[5]), **common)


# RAAT, Table 5 (appendix D): ResNet-18, l2, mean ± std of three runs: Clean PGD-10 PGD-100 C&W AA.
_S000_T5 = """
CIFAR-10 | PGD-AT | 87.76±0.51 68.82±0.23 67.72±0.23 66.64±0.43 66.36±0.37
CIFAR-10 | TRADES | 83.99±0.28 68.74±0.32 68.59±0.63 67.05±0.55 65.93±0.30
CIFAR-10 | MART | 84.09±0.19 68.96±0.37 68.19±0.21 67.22±0.43 66.28±0.27
CIFAR-10 | Cons-AT | 88.76±0.41 70.21±0.49 69.16±0.45 68.10±0.42 67.46±0.26
CIFAR-10 | RAAT | 89.17±0.26 69.76±0.35 68.67±0.17 68.13±0.30 67.95±0.24
CIFAR-10 | RAAT++ | 86.54±0.33 70.84±0.17 70.01±0.15 69.07±0.28 67.96±0.24
CIFAR-100 | PGD-AT | 65.00±0.41 42.47±0.29 41.29±0.18 40.03±0.17 39.27±0.39
CIFAR-100 | TRADES | 61.25±0.48 43.52±0.58 42.96±0.19 41.22±0.38 40.15±0.42
CIFAR-100 | MART | 60.08±0.19 43.92±0.16 43.28±0.35 41.63±0.33 39.85±0.20
CIFAR-100 | Cons-AT | 65.14±0.30 43.16±0.37 42.09±0.32 40.99±0.36 39.92±0.26
CIFAR-100 | RAAT | 66.12±0.11 43.47±0.20 42.22±0.26 41.33±0.17 40.25±0.20
CIFAR-100 | RAAT++ | 62.43±0.09 44.95±0.15 43.96±0.12 42.35±0.23 40.61±0.15
Tiny-ImageNet | PGD-AT | 59.36±0.18 43.52±0.16 43.05±0.20 42.81±0.18 40.90±0.24
Tiny-ImageNet | TRADES | 57.61±0.44 44.84±0.42 44.65±0.54 43.23±0.21 42.33±0.27
Tiny-ImageNet | MART | 56.47±0.22 45.05±0.23 44.77±0.16 43.10±0.15 42.22±0.16
Tiny-ImageNet | Cons-AT | 61.49±0.24 45.32±0.28 44.85±0.19 43.57±0.30 42.59±0.25
Tiny-ImageNet | RAAT | 61.20±0.12 45.43±0.13 44.66±0.19 43.82±0.13 42.63±0.11
Tiny-ImageNet | RAAT++ | 57.95±0.10 45.38±0.12 44.92±0.12 43.61±0.08 42.35±0.11
"""


def _raat_tables(refs: list[Reference]) -> None:
    methods = dict(_BASES, **{"RAAT": "raat", "RAAT++": "raat_pp"})
    for (ds, label), t in _rows(_S000_T5):
        _entry(refs, source="RAAT", table="Table 5", row=f"{ds} {label}", method=methods[label],
               dataset=_DATASETS[ds], norm="l2", model="ResNet-18", checkpoint="best", schedule="pang110",
               values=dict(clean=t[0], pgd10=t[1], pgd100=t[2], cw=t[3], aa=t[4]))


# DUCAT, Tables 1 (ResNet-18) and 3 (WideResNet-28-10), l-inf, ducat130 schedule:
# Original Clean PGD-10 PGD-100 AA | +DUCAT Clean PGD-10 PGD-100 AA.
_S003_T1 = """
CIFAR-10 | PGD-AT | 82.92 51.81 50.34 46.74 88.81 65.10 62.71 58.61
CIFAR-10 | TRADES | 79.67 52.14 51.88 47.62 77.74 52.66 51.98 48.17
CIFAR-10 | MART | 77.93 53.61 52.83 46.70 80.65 58.42 57.81 50.18
CIFAR-10 | Consistency-AT | 83.42 53.20 51.68 47.72 89.51 66.83 63.80 57.18
CIFAR-100 | PGD-AT | 56.56 29.27 28.71 25.02 70.71 33.17 29.56 25.20
CIFAR-100 | TRADES | 55.39 29.61 29.28 24.51 55.41 30.69 30.38 25.23
CIFAR-100 | MART | 49.83 30.60 30.31 25.00 56.73 41.78 34.32 27.44
CIFAR-100 | Consistency-AT | 58.53 29.99 29.13 25.39 72.29 33.98 30.73 25.66
Tiny-ImageNet | PGD-AT | 46.32 21.75 21.52 17.07 56.18 24.23 22.54 18.68
Tiny-ImageNet | TRADES | 46.75 21.62 21.52 16.60 46.90 22.38 22.08 17.27
Tiny-ImageNet | MART | 39.70 22.98 22.79 17.18 43.37 25.23 25.68 18.41
Tiny-ImageNet | Consistency-AT | 46.54 22.58 21.70 17.60 59.64 25.40 23.22 18.92
"""
_S003_T3 = """
CIFAR-10 | PGD-AT | 87.49 55.81 54.37 50.96 90.02 64.53 62.76 58.77
CIFAR-10 | TRADES | 85.35 57.15 56.17 51.88 83.62 57.77 57.00 53.78
CIFAR-10 | MART | 82.78 58.47 57.47 50.89 84.64 58.26 57.07 54.64
CIFAR-10 | Consistency-AT | 86.90 55.71 54.41 50.83 89.86 67.89 64.17 59.44
CIFAR-100 | PGD-AT | 59.95 32.18 31.21 27.27 70.02 34.28 30.73 27.95
CIFAR-100 | TRADES | 59.51 32.51 32.34 27.71 59.70 33.77 33.38 28.55
CIFAR-100 | MART | 56.84 34.12 33.70 27.97 60.97 36.80 35.98 32.40
CIFAR-100 | Consistency-AT | 60.84 32.48 31.64 27.74 72.97 35.90 32.24 28.31
Tiny-ImageNet | PGD-AT | 47.79 23.97 23.59 20.00 62.58 25.86 23.68 18.65
Tiny-ImageNet | TRADES | 51.14 24.84 24.58 20.02 51.91 25.77 25.39 20.22
Tiny-ImageNet | MART | 45.57 26.21 25.92 21.07 50.71 28.48 28.64 26.15
Tiny-ImageNet | Consistency-AT | 50.12 25.05 24.42 20.64 62.77 25.62 25.01 22.09
"""
# DUCAT, Table 2: CIFAR-10, ResNet-18, SOTAs on the trade-off (the raw data of its Fig. 5): Clean AA, record source.
_S003_T2 = """
AWP (Wu et al., 2020) | Liu et al. (2021) | 85.17 47.00
FAT (Zhang et al., 2020) | Liu et al. (2021) | 87.97 43.90
MMA (Ding et al., 2020) | original paper | 85.50 37.20
GAIRAT (Zhang et al., 2021) | Liu et al. (2021) | 83.22 33.35
ACAT (Addepalli et al., 2022b) | original paper | 82.41 49.80
DAAT (Yang & Xu, 2022) | original paper | 88.31 44.32
DAJAT (Addepalli et al., 2022b) | RobustBench | 85.71 52.48
HAT (Rade & Moosavi-Dezfooli, 2022) | original paper | 84.90 49.08
OAAT (Addepalli et al., 2022a) | RobustBench | 80.24 51.06
TE (Dong et al., 2022) | original paper | 83.66 49.40
RiFT (Zhu et al., 2023) | original paper | 83.44 53.65
SOVR (Kanai et al., 2023) | original paper | 81.90 49.40
ADR (Wu et al., 2024) | original paper | 82.41 50.38
CURE (Gowda et al., 2024) | original paper | 86.76 49.69
PART (Zhang et al., 2024) | original paper | 83.77 41.41
VFD (Cao et al., 2024) | original paper | 88.30 46.60
Ours (PGD-AT + DUCAT) | - | 88.81 58.61
Ours (Consistency-AT + DUCAT) | - | 89.51 57.18
"""
# DUCAT, Table 4: PGD-10 robustness, untargeted vs targeted (random original / dummy targets); CIFAR-10 ResNet-18
# (the untargeted column equals Table 1's CIFAR-10 PGD-10): Original untargeted, targeted | +DUCAT untargeted,
# targeted (original), targeted (dummy).
_S003_T4 = """
PGD-AT | 51.81 73.02 65.10 70.23 70.77
TRADES | 52.14 72.68 52.66 73.63 73.32
MART | 53.61 70.48 58.42 73.87 72.89
Consistency-AT | 53.20 74.26 66.83 72.41 72.80
"""
_DUCAT_NOTE = "published protocol: attacks on the raw 2C logits"


def _ducat_tables(refs: list[Reference]) -> None:
    for table, block, model in (("Table 1", _S003_T1, "ResNet-18"), ("Table 3", _S003_T3, "WideResNet-28-10")):
        for (ds, label), t in _rows(block):
            common = dict(source="DUCAT", table=table, dataset=_DATASETS[ds], norm="linf", model=model,
                          checkpoint="best", schedule="ducat130")
            base = _BASES[label]
            _entry(refs, row=f"{ds} {label}", method=base,
                   values=dict(clean=t[0], pgd10=t[1], pgd100=t[2], aa=t[3]), **common)
            _entry(refs, row=f"{ds} {label} +DUCAT", method=f"{base}+ducat", note=_DUCAT_NOTE,
                   values=dict(clean=t[4], pgd10=t[5], pgd100=t[6], aa=t[7]), **common)
    ours = {"Ours (PGD-AT + DUCAT)": "pgd_at+ducat", "Ours (Consistency-AT + DUCAT)": "consistency_at+ducat"}
    for (label, record), t in _rows(_S003_T2):
        _entry(refs, source="DUCAT", table="Table 2", row=label, method=ours.get(label), dataset="cifar10",
               norm="linf", model="ResNet-18", checkpoint="best", schedule="ducat130" if label in ours else None,
               note=_DUCAT_NOTE if label in ours else f"record source: {record}",
               values=dict(clean=t[0], aa=t[1]))
    for (label,), t in _rows(_S003_T4):
        common = dict(source="DUCAT", table="Table 4", dataset="cifar10", norm="linf", model="ResNet-18",
                      checkpoint="best", schedule="ducat130")
        base = _BASES[label]
        _entry(refs, row=label, method=base, values=dict(pgd10=t[0], pgd10_targeted=t[1]), **common)
        _entry(refs, row=f"{label} +DUCAT", method=f"{base}+ducat", note=_DUCAT_NOTE,
               values=dict(pgd10=t[2], pgd10_targeted_original=t[3], pgd10_targeted_dummy=t[4]), **common)


# FAIT/MER paper, Table 1: CIFAR-10 ResNet-18, lambda sweep, Clean and AA (± std) for TRADES, FAT for TRADES,
# FAIT (I = 2), TRADES-MER (beta_cle = 1, beta_adv = 0).
_S004_T1 = """
3 | 83.62±0.25 46.92±0.15 84.45±0.36 45.75±0.14 84.98±0.81 46.84±1.11 87.14±0.17 44.22±0.13
6 | 81.45±0.19 48.04±0.16 82.48±0.34 47.48±0.23 83.20±0.17 48.82±0.11 85.64±0.17 46.58±0.25
9 | 79.42±0.05 48.53±0.19 81.06±0.27 47.98±0.11 81.37±0.06 49.40±0.34 84.69±0.07 47.82±0.05
12 | 77.91±0.18 48.20±0.33 80.27±0.32 48.08±0.32 80.31±0.16 49.41±0.1 83.52±0.39 48.71±0.5
15 | 76.60±0.15 48.39±0.18 79.41±0.06 48.48±0.13 79.03±0.09 49.15±0.13 82.54±0.05 48.39±0.32
18 | 75.74±0.39 47.72±0.4 78.78±0.35 48.16±0.15 78.36±0.09 49.05±0.04 81.58±0.07 48.69±0.33
21 | 75.03±0.46 47.64±0.26 78.18±0.3 48.40±0.19 77.18±0.3 48.72±0.16 81.23±0.18 49.04±0.25
"""
# Table 2: FAIT with lambda = 12, I = 1..9: Clean row then AA row.
_S004_T2 = """
Clean | 79.29 80.31 80.57 78.99 78.32 78.80 78.03 77.73 78.30
AA | 49.07 49.41 48.89 48.70 49.02 49.13 49.27 48.46 48.75
"""
# Table 3: TRADES-MER with lambda = 21: beta_cle beta_adv Clean AA.
_S004_T3 = """
0 | 1 | 81.14 48.9
0.5 | 0.5 | 81.37 48.69
1 | 0 | 81.23 49.04
"""
# Table 4: ResNet-18, CIFAR-10 Clean PGD-100 AA | CIFAR-100 Clean PGD-100 AA (method labels: see module docstring).
_S004_T4 = """
PGD-AT | pgd_at | - | 1 | 83.59±0.24 48.68±0.15 45.83±0.1 58.97±0.1 25.58±0.39 22.79±0.31
GAIRAT | - | - | 1 | 83.21±0.23 49.30±0.33 46.82±0.28 56.73±0.25 24.78±0.17 22.00±0.15
MART | mart | - | 1 | 78.49±0.51 52.71±0.18 46.24±0.17 53.3±0.16 30.08±0.26 24.61±0.24
TRADES-AWP | - | - | 1 | 81.23±0.21 51.77±0.06 48.62±0.03 57.02±0.13 28.97±0.33 24.56±0.12
HAT | - | - | 1 | 84.98±0.14 51.61±0.14 48.63±0.22 60.18±0.33 26.84±0.46 22.62±0.34
FAIT | fait | 12 | 0 | 80.31±0.16 53.04±0.08 49.41±0.1 57.14±0.19 29.38±0.03 24.79±0.07
TRADES-MER | mer | 21 | 0 | 81.23±0.18 53.4±0.27 49.04±0.25 58.64±0.08 30.04±0.12 24.63±0.26
FAIT-MER | fait_mer | 30 | 0 | 81.4±0.28 53.87±0.24 49.49±0.37 58.87±0.11 30.48±0.06 24.84±0.12
"""
# Table 5: CIFAR-10, other architectures (SENet18, VGG16, ShuffleNetv2; not in atkit): Clean AA per architecture.
_S004_T5 = """
TRADES | trades | - | 81.63 49.41 77.48 43.46 71.84 38.32
FAIT | fait | 12 | 81.70 49.60 78.21 44.63 72.35 38.45
TRADES-MER | mer | 21 | 81.94 49.71 76.97 43.60 71.79 38.67
"""
# Table 6: psi = S (squared error), CIFAR-10 ResNet-18: lambda Clean PGD-100 AA.
_S004_T6 = """
SCORE | score | 4 | 83.94 52.94 49.04
FAIT_{psi=S} | fait_s | 8 | 82.11 53.93 49.48
TRADES-MER_{psi=S} | mer_s | 10 | 82.56 54.21 49.42
"""


def _lam(v: str) -> dict[str, float]:
    return {} if v == "-" else {"lam": float(v)}


def _fait_mer_tables(refs: list[Reference]) -> None:
    common = dict(source="FAIT/MER", norm="linf", checkpoint="best", schedule="fait100")
    t1_methods = (("TRADES", "trades"), ("FAT for TRADES", None), ("FAIT", "fait"), ("TRADES-MER", "mer"))
    for (lam,), t in _rows(_S004_T1):
        for i, (label, method) in enumerate(t1_methods):
            _entry(refs, table="Table 1", row=f"{label}, lambda = {lam}", method=method, dataset="cifar10",
                   model="ResNet-18", method_params=_lam(lam), values=dict(clean=t[2 * i], aa=t[2 * i + 1]), **common)
    (_, clean), (_, aa) = _rows(_S004_T2)
    for i, (c, a) in enumerate(zip(clean, aa), start=1):
        _entry(refs, table="Table 2", row=f"FAIT, lambda = 12, I = {i}", method="fait", dataset="cifar10",
               model="ResNet-18", method_params={"lam": 12.0, "interpolation_step": i}, values=dict(clean=c, aa=a),
               **common)
    for (bc, ba), t in _rows(_S004_T3):
        _entry(refs, table="Table 3", row=f"TRADES-MER, lambda = 21, beta_cle = {bc}, beta_adv = {ba}", method="mer",
               dataset="cifar10", model="ResNet-18",
               method_params={"lam": 21.0, "beta_clean": float(bc), "beta_adv": float(ba)},
               values=dict(clean=t[0], aa=t[1]), **common)
    for (label, method, lam, inferred), t in _rows(_S004_T4):
        for ds, off in (("cifar10", 0), ("cifar100", 3)):
            _entry(refs, table="Table 4", row=label, method=None if method == "-" else method, dataset=ds,
                   model="ResNet-18", method_params=_lam(lam), label_inferred=inferred == "1",
                   note="row label inferred from the text's order of methods" if inferred == "1" else "",
                   values=dict(clean=t[off], pgd100=t[off + 1], aa=t[off + 2]), **common)
    for (label, method, lam), t in _rows(_S004_T5):
        for i, arch in enumerate(("SENet18", "VGG16", "ShuffleNetv2")):
            _entry(refs, table="Table 5", row=label, method=method, dataset="cifar10", model=arch,
                   method_params=_lam(lam), values=dict(clean=t[2 * i], aa=t[2 * i + 1]), **common)
    for (label, method, lam), t in _rows(_S004_T6):
        _entry(refs, table="Table 6", row=f"{label}, lambda = {lam}", method=method, dataset="cifar10",
               model="ResNet-18", method_params=_lam(lam), values=dict(clean=t[0], pgd100=t[1], aa=t[2]), **common)


def _build() -> tuple[Reference, ...]:
    refs: list[Reference] = []
    _rpat_benchmark_tables(refs)
    _rpat_sota_tables(refs)
    _rpat_appendix_tables(refs)
    _raat_tables(refs)
    _ducat_tables(refs)
    _fait_mer_tables(refs)
    return tuple(refs)


REFERENCES: tuple[Reference, ...] = _build()


# -------------------------------------------------------------------------------------------------
def table_keys() -> list[str]:
    """Every ``"<paper> / Table N"`` (paper: RPAT, RAAT, DUCAT, FAIT/MER) that has numbers here, in order of
    appearance."""
    return list(dict.fromkeys(r.key for r in REFERENCES))


def _parse_table_key(key: str) -> str:
    """Accept ``"RPAT / Table 1"``, ``"RPAT, Table 1"``, ``"rpat table 1"`` or ``"RPAT/1"`` (any case; ``FAIT``
    or ``MER`` for ``FAIT/MER``)."""
    keys = table_keys()
    if key in keys:
        return key
    match = re.fullmatch(r"\s*(.+?)\s*(?:,|/)?\s*(?:table\s*)?(\d+)\s*", str(key), flags=re.IGNORECASE)
    if match:
        sources = {r.source.lower(): r.source for r in REFERENCES}
        sources.update({"fait": "FAIT/MER", "mer": "FAIT/MER"})
        source = sources.get(match.group(1).strip(" ,/").lower())
        candidate = f"{source} / Table {match.group(2)}"
        if candidate in keys:
            return candidate
    from .utils import unknown_name_error

    raise unknown_name_error("reference table", key, keys)


def select(tables: Optional[Iterable[str]] = None, *, dataset: Optional[str] = None, norm: Optional[str] = None,
           method: Optional[str] = None, checkpoint: Optional[str] = None) -> list[Reference]:
    """References filtered by table keys (see :func:`table_keys`; None: all) and fields."""
    wanted = None if tables is None else {_parse_table_key(t) for t in tables}
    out = []
    for r in REFERENCES:
        if wanted is not None and r.key not in wanted:
            continue
        if dataset is not None and r.dataset != dataset:
            continue
        if norm is not None and r.norm != norm:
            continue
        if method is not None and r.method != method:
            continue
        if checkpoint is not None and r.checkpoint != checkpoint:
            continue
        out.append(r)
    return out


def reference_frame(refs: Optional[Sequence[Reference]] = None) -> pd.DataFrame:
    """Tidy table: one row per reference entry, one column per metric (NaN where not printed) plus
    ``<metric>_std`` where the paper gives a spread, and the source columns."""
    refs = REFERENCES if refs is None else refs
    rows = []
    for r in refs:
        row: dict[str, Any] = {"source": r.source, "table": r.table, "row": r.row, "method": r.method,
                               "method_params": dict(r.method_params), "dataset": r.dataset, "norm": r.norm,
                               "model": r.model, "schedule": r.schedule, "checkpoint": r.checkpoint,
                               "note": r.note, "label_inferred": r.label_inferred}
        row.update({m: r.values.get(m) for m in METRICS})
        row.update({f"{m}_std": s for m, s in r.std.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for m in METRICS:
        frame[m] = pd.to_numeric(frame[m])
    return frame


def resolved_params(method: str, params: Optional[Mapping[str, Any]] = None,
                    ignore: Iterable[str] = ("log_r", "log_r_samples")) -> dict[str, Any]:
    """All hyperparameters of ``method`` with ``params`` applied (defaults filled in, including a
    composite's base and add-on), minus those that only change logging. Two settings train the same
    way iff these dicts are equal."""
    from .methods import get_method

    built = get_method(method, None, **dict(params or {}))
    values: dict[str, Any] = {}
    obj: Any = built
    while obj is not None:  # DUCAT keeps its base method's hyperparameters on .base
        if dataclasses.is_dataclass(getattr(obj, "params", None)):
            for k, v in dataclasses.asdict(obj.params).items():
                values.setdefault(k, v)
        obj = getattr(obj, "base", None)
    for key in ignore:
        values.pop(key, None)
    return values


def matches(ref: Reference, *, method: str, method_params: Optional[Mapping[str, Any]] = None,
            dataset: Optional[str] = None, norm: Optional[str] = None, model: Optional[str] = None,
            schedule: Optional[str] = None) -> bool:
    """Whether a run of ``method`` with ``method_params`` (and, when given, on ``dataset``/``norm``/
    ``model``/``schedule``) computes the setting ``ref`` reports."""
    if ref.method is None or ref.method != method:
        return False
    if dataset is not None and ref.dataset != dataset:
        return False
    if norm is not None and ref.norm != norm:
        return False
    if model is not None and model not in ARCHITECTURES.get(ref.model, ()):
        return False
    if schedule is not None and ref.schedule is not None and ref.schedule != schedule:
        return False
    ours = _resolved_key(method, _params_key(method_params))
    return ours is not None and ours == _resolved_key(ref.method, _params_key(ref.method_params))


def _params_key(params: Optional[Mapping[str, Any]]) -> str:
    import json

    return json.dumps(dict(params or {}), sort_keys=True, default=str)


@lru_cache(maxsize=4096)
def _resolved_key(method: str, params_json: str) -> Optional[str]:
    """Canonical text of :func:`resolved_params` (None when the method refuses the hyperparameters)."""
    import json

    try:
        return json.dumps(resolved_params(method, json.loads(params_json)), sort_keys=True, default=str)
    except Exception:  # an unknown method or a refused hyperparameter: never the same setting as anything
        return None


__all__ = ["ARCHITECTURES", "CAVEATS", "METRICS", "PAPERS", "REFERENCES", "Reference", "matches", "reference_frame",
           "resolved_params", "select", "table_keys"]
