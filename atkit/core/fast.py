"""The fast training path on one GPU: bf16 autocast, channels_last, optional ``torch.compile``.

What makes adversarial training fast on a GPU, and where atkit does it:

* data resident on the device, augmentation on the device: :class:`atkit.data.BatchLoader`;
* input-only gradients in attacks (``torch.autograd.grad`` w.r.t. the perturbation, parameters frozen)
  and no host synchronisation inside the attack loop: :func:`atkit.attacks.pgd`;
* bf16 autocast around the model's forward, channels_last memory layout, optional ``torch.compile``:
  :class:`AutocastModel` here.

:class:`AutocastModel` wraps the plain model for the *training step only*. Its forward runs the
network under ``torch.autocast(dtype=bfloat16)`` and returns **float32** logits (and features), so
everything outside the network stays in fp32: the perturbation ``delta``, its projection onto the
eps-ball, the attack objective, the training loss and its reductions. Methods and attacks receive the
wrapper instead of the model and need no change. The weights stay fp32 (autocast casts per op), so the
optimiser, weight averages and checkpoints are those of the exact path.

``precision``: ``"auto"`` is bf16 on a CUDA device that supports it and fp32 elsewhere; ``"fp32"`` is
the exact path (the plain model, TF32 switched off); ``"tf32"`` keeps fp32 tensors but lets CUDA run fp32
matmuls and convolutions on TF32 tensor cores (10-bit mantissa; a no-op on the CPU); ``"bf16"`` forces
autocast (also on the CPU: with native bf16, AVX512-BF16, a small CNN's training step ran about 1.5x faster
there). :func:`precision_scope` sets the TF32 switches a precision needs. The reported evaluation (PGD, CW,
AutoAttack) runs in exact fp32 unless ``eval.precision`` asks otherwise (:func:`eval_model`,
:func:`exact_fp32`); :func:`evaluation_parity` decides from per-image results whether a reduced evaluation
precision gives a model's fp32 result.

``torch.compile`` (``compile: true`` or a backend name) compiles the network's forward only; the
attack loop and the method's loss stay eager Python. Switching BatchNorm mode or freezing parameters
for an attack adds a few graph variants (recompilations) in the first steps.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

from .stats import equivalence_test, mcnemar_test, paired_difference, pool_paired_differences
from .utils import ConfigError, check_choice, unknown_name_error

PRECISIONS = ("auto", "fp32", "tf32", "bf16")
CHANNELS_LAST_CHOICES = (True, False, "auto")

_DTYPES = {"bf16": torch.bfloat16}


def resolve_precision(precision: str, device: Union[str, torch.device]) -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` on ``device``, or ``None`` for the exact fp32 path.

    ``"auto"``: bf16 on a CUDA device with bf16 support (Ampere and later), fp32 otherwise (the CPU).
    ``"tf32"`` has no autocast dtype (fp32 tensors; :func:`precision_scope` turns TF32 on).
    """
    check_choice("precision", precision, PRECISIONS)
    device = torch.device(device)
    if precision in ("fp32", "tf32"):
        return None
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return _DTYPES[precision]


# Methods whose bf16 training was shown equivalent to fp32 training (benchmarks/README.md,
# "Training precision: the default per method"): the set bf16_parity_decision accepts from the committed parity
# runs in results/cifar10-cpu (tests/test_results_cifar10_cpu.py keeps the two equal). Those runs are small_cnn on
# real CIFAR-10 with bf16 autocast on a CPU, the only hardware at hand; a GPU parity run of the model in use
# (benchmarks/gpu_suite.sh) is the check for larger models. ``precision: auto`` trains these in bf16 on a
# bf16-capable GPU and every other method in exact fp32; ``precision: bf16`` asks for bf16 whatever the method.
BF16_VERIFIED_METHODS: frozenset[str] = frozenset({"pgd_at", "pgd_at+rpat", "trades"})


PARITY_METRICS = ("clean", "pgd20")
PARITY_MIN_SEEDS = 3
PARITY_MARGIN = 1.0  # accuracy points: a bf16 effect smaller than this is accepted as no effect
BF16_EQUIVALENT = "bf16 equivalent to fp32"
BF16_NOT_SHOWN = "equivalence to fp32 not shown"
BF16_NOT_MEASURED = "not measured"


def bf16_parity_decision(bf16: Mapping[str, Sequence[Sequence[bool]]], fp32: Mapping[str, Sequence[Sequence[bool]]], *,
                         metrics: tuple[str, ...] = PARITY_METRICS, min_seeds: int = PARITY_MIN_SEEDS,
                         margin: float = PARITY_MARGIN) -> dict[str, Any]:
    """Whether a method may train in bf16 by default, from its parity runs: an equivalence test, so that parity is
    shown by evidence, not assumed from a difference too small for seed noise to reveal.

    ``bf16[m][i]`` and ``fp32[m][i]``: per-image correctness under metric ``m`` (e.g. clean, PGD-20) of the run
    with seed i trained in bf16 autocast and in exact fp32 (same seed, data and evaluation images; evaluated in
    fp32). Per metric, the per-image paired differences bf16 - fp32 are pooled over the seeds
    (:func:`atkit.core.stats.pool_paired_differences`) and tested by TOST against ``±margin`` points
    (:func:`atkit.core.stats.equivalence_test`: the 90 % interval inside the margin). bf16 is accepted when every metric
    is equivalent; with fewer than ``min_seeds`` seeds of both it is :data:`BF16_NOT_MEASURED` (so fp32).
    """
    rows: dict[str, Any] = {}
    measured = True
    for m in metrics:
        a, b = list(bf16.get(m) or []), list(fp32.get(m) or [])
        if len(a) != len(b):
            raise ValueError(f"metric {m!r}: {len(a)} bf16 seeds against {len(b)} fp32 seeds; pair them by seed")
        if len(a) < max(2, min_seeds):
            measured = False
            rows[m] = {"n_seeds": len(a)}
            continue
        pooled = pool_paired_differences([paired_difference(x, y) for x, y in zip(a, b)])
        mean = lambda runs: round(100.0 * sum(sum(map(bool, r)) / len(r) for r in runs) / len(runs), 2)  # noqa: E731
        rows[m] = {"n_seeds": len(a), "bf16_mean": mean(a), "fp32_mean": mean(b), "pooled": pooled.to_dict(),
                   "equivalence": equivalence_test(pooled, margin).to_dict()}
    if not measured:
        verdict = BF16_NOT_MEASURED
    elif all(r["equivalence"]["equivalent"] for r in rows.values()):
        verdict = BF16_EQUIVALENT
    else:
        verdict = BF16_NOT_SHOWN
    return {"verdict": verdict, "bf16_default": verdict == BF16_EQUIVALENT, "metrics": rows, "margin": margin,
            "rule": f"for each of {', '.join(metrics)}: TOST of the per-image paired difference bf16 - fp32 pooled "
                    f"over at least {min_seeds} seeds, 90 % interval inside ±{margin:g} points"}


# Evaluation-precision parity (evaluation_parity): the largest change of a model's accuracy, in points, that a
# reduced evaluation precision may cause and still count as giving the fp32 result. Half a point is well inside the
# 95 % sampling margin of one accuracy on CIFAR-10's 10,000 test images (about +-1 point near 50 %) and below the
# one-to-two-point gains the AT papers report between methods, so a precision inside it cannot flip such a comparison.
EVAL_PARITY_MARGIN = 0.5
REDUCED_PRECISIONS = ("tf32", "bf16")
EVAL_PARITY_RULE = ("parity when the 95 % Newcombe interval of the paired accuracy difference (reduced - fp32) lies "
                    "inside [-{margin}, +{margin}] points; the exact McNemar p-value is reported, not used to decide")


def evaluation_parity(fp32_correct: Sequence[bool], reduced_correct: Sequence[bool], *, precision: str,
                      margin: float = EVAL_PARITY_MARGIN, evaluation: str = "") -> dict[str, Any]:
    """Whether evaluating a model in a reduced precision gives its fp32 result, from per-image correctness flags.

    Intended use (the evaluation code calls it; nothing here runs an evaluation): before reporting a model's
    numbers from an evaluation in ``eval.precision`` ``"bf16"`` or ``"tf32"``, evaluate the same images once in
    exact fp32 and once in the reduced precision with the same attack and seed (e.g. standard AutoAttack on 1,000
    class-stratified test images), pass the two per-image flags (``True``: the image is still classified
    correctly after the attack), and store the returned record in the evaluation's provenance. Only with
    ``parity`` true may that model's reported numbers come from the reduced precision; otherwise report fp32,
    which stays the default.

    Rule (an equivalence test): with ``d = acc_reduced - acc_fp32`` in points over the same ``n`` images and its
    95 % interval for paired proportions (Newcombe 1998, method 10; :func:`atkit.core.stats.mcnemar_test`), parity holds
    when ``-margin <= low`` and ``high <= margin``. Too few images make the interval wider than the margin, so a
    small sample cannot claim parity (with no discordant image at all, 1,000 images near 30 % accuracy give about
    +-0.25 points). The exact McNemar test (two-sided binomial on the discordant images) is reported beside it: a
    small p says the precisions differ on this model, but a large p alone is no evidence that they agree.
    ``margin`` defaults to :data:`EVAL_PARITY_MARGIN` (0.5 points). Returns a JSON-ready dict.
    """
    if precision not in REDUCED_PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not a reduced evaluation precision; accepted: "
                          f"{', '.join(REDUCED_PRECISIONS)}")
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 0 < margin < 100:
        raise ConfigError(f"margin={margin!r} must be a number of accuracy points in (0, 100)")
    test = mcnemar_test(reduced_correct, fp32_correct)  # a = reduced, b = fp32: difference = reduced - fp32
    low, high = test.diff_ci95
    parity = -margin <= low and high <= margin
    return {
        "precision": precision, "evaluation": evaluation, "n": test.n,
        "fp32_accuracy": test.acc_b, "fp32_ci95": list(test.ci_b),
        "reduced_accuracy": test.acc_a, "reduced_ci95": list(test.ci_a),
        "agreement": 100.0 * (test.both + test.neither) / test.n,
        "only_reduced_correct": test.only_a, "only_fp32_correct": test.only_b,
        "difference": test.difference, "diff_ci95": [low, high], "diff_ci_method": test.diff_ci_method,
        "mcnemar_p": test.p_value, "mcnemar_test": test.test, "margin": float(margin), "parity": parity,
        "verdict": (f"{precision} gives the fp32 result within +-{margin:g} points" if parity else
                    f"{precision} not shown to give the fp32 result within +-{margin:g} points"),
        "rule": EVAL_PARITY_RULE.format(margin=f"{margin:g}"),
    }


def training_precision(precision: str, device: Union[str, torch.device], method: str) -> tuple[str, str]:
    """The precision a run of ``method`` trains in (``"fp32"``, ``"tf32"`` or ``"bf16"``) and a one-line reason.

    ``"auto"`` resolves to bf16 only on a bf16-capable CUDA device and only for a method in
    :data:`BF16_VERIFIED_METHODS`: on a randomly initialised ResNet-18 the RPAT term differed by 31 % between
    bf16 and fp32 while CE moved 0.3 %, and the KL attacks' ``x + 0.001·N(0, 1)`` start is below bf16's
    resolution near 1, so a method trains in bf16 by default only once its parity run says so.
    """
    dtype = resolve_precision(precision, device)
    if precision == "fp32":
        return "fp32", "precision: fp32 was asked for"
    if precision in ("bf16", "tf32"):
        return precision, f"precision: {precision} was asked for"
    if dtype is None:
        return "fp32", f"precision: auto on {torch.device(device).type} (no bf16 fast path here)"
    if method in BF16_VERIFIED_METHODS:
        return "bf16", f"precision: auto, and bf16 training of {method} was shown equivalent to fp32"
    return "fp32", (f"precision: auto, and bf16 training of {method} has not been shown equivalent to fp32 "
                    "(benchmarks/README.md); set precision: bf16 to use it anyway")


def resolve_channels_last(channels_last: Union[bool, str], device: Union[str, torch.device]) -> bool:
    """``"auto"``: channels_last on CUDA (tensor-core convolutions prefer NHWC), off on the CPU."""
    if not (isinstance(channels_last, bool) or channels_last == "auto"):
        raise ConfigError(f"channels_last={channels_last!r} is not accepted; choose true, false or 'auto'.")
    if channels_last == "auto":
        return torch.device(device).type == "cuda"
    return bool(channels_last)


def check_compile(compile: Union[bool, str]) -> None:
    """``compile`` is ``false``, ``true`` (the default backend, inductor) or a backend name."""
    if isinstance(compile, bool):
        return
    if not isinstance(compile, str) or not compile:
        raise ConfigError(f"compile={compile!r} is not accepted; choose false, true or a torch.compile backend "
                          "name such as 'inductor', 'aot_eager' or 'eager'.")
    if compile not in torch._dynamo.list_backends(exclude_tags=()):

        raise unknown_name_error("torch.compile backend", compile, torch._dynamo.list_backends())


def _to_float(out: Any) -> Any:
    """Cast floating outputs (tensors, NamedTuples such as Features, tuples) back to float32."""
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, tuple):
        cast = [_to_float(o) for o in out]
        return type(out)(*cast) if hasattr(out, "_fields") else type(out)(cast)
    return out


class AutocastModel(nn.Module):
    """The model as a training step sees it: autocast forward, channels_last input, fp32 outputs.

    ``module`` is the plain model (registered, so ``parameters()``, ``train()``, ``state_dict()`` are
    its own under the prefix ``module.``). ``dtype``: autocast dtype (``None``: no autocast).
    ``compiled``: an optional ``torch.compile`` of ``module`` used for the forward. ``ddp``: an
    optional ``DistributedDataParallel`` of ``module`` (or of ``compiled``): it runs the forwards that
    build a parameter-gradient graph (grad mode on and parameters trainable), i.e. the training
    forwards whose backward must be all-reduced; every other forward -- attack passes, where
    :func:`atkit.attacks.attack_mode` freezes the parameters, and ``no_grad`` passes -- calls the
    module directly and never touches DDP's gradient reducer.

    Attribute look-ups that fail on the wrapper (``num_classes``, ``dummy_classes``, ``fc``...) fall
    through to ``module``, so methods read them as from the plain model.
    """

    def __init__(self, module: nn.Module, *, dtype: Optional[torch.dtype] = None, channels_last: bool = False,
                 compiled: Optional[nn.Module] = None, ddp: Optional[nn.Module] = None) -> None:
        super().__init__()
        if dtype is not None and dtype != torch.bfloat16:
            # fp16 would need loss scaling (GradScaler) for the training step; bf16 has fp32's range.
            raise ConfigError(f"autocast dtype {dtype} is not accepted; use torch.bfloat16 (or None for fp32)")
        self.module = module
        self.dtype = dtype
        self.channels_last = bool(channels_last)
        # Not registered as submodules: they share ``module``'s parameters, and registering them would
        # duplicate every key in state_dict().
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_ddp", ddp)

    # -- attribute fall-through ----------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            # Through __dict__: during unpickling/deepcopy ``_modules`` may not exist yet (no recursion then).
            module = self.__dict__.get("_modules", {}).get("module")
            if module is None:
                raise
            return getattr(module, name)

    def train(self, mode: bool = True) -> "AutocastModel":
        super().train(mode)
        if self._ddp is not None:  # DDP keeps its own ``training`` flag
            self._ddp.train(mode)
        return self

    # -- forward -------------------------------------------------------------------------------
    def _needs_gradient_sync(self) -> bool:
        if self._ddp is None or not torch.is_grad_enabled():
            return False
        for p in self.module.parameters():
            return p.requires_grad
        return False

    def forward(self, x: Tensor, return_features: bool = False) -> Any:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._needs_gradient_sync():
            target = self._ddp
        else:
            target = self._compiled if self._compiled is not None else self.module
        args = (x, True) if return_features else (x,)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype or torch.bfloat16,
                            enabled=self.dtype is not None):
            out = target(*args)
        return _to_float(out)

    def forward_features(self, x: Tensor) -> Any:
        """Logits and embeddings from one pass, through the same autocast forward (fp32 results)."""
        return self.forward(x, return_features=True)

    def extra_repr(self) -> str:
        return (f"dtype={self.dtype}, channels_last={self.channels_last}, compiled={self._compiled is not None}, "
                f"ddp={self._ddp is not None}")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under any :class:`AutocastModel`, ``DistributedDataParallel`` or ``torch.compile``
    (``_orig_mod``) wrappers: the one whose ``state_dict()`` checkpoints store."""
    seen = 0
    while seen < 16:
        seen += 1
        if isinstance(model, AutocastModel):
            model = model.module
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(getattr(model, "_orig_mod"), nn.Module):
            model = model._orig_mod
        else:
            return model
    return model


def compile_model(model: nn.Module, compile: Union[bool, str]) -> Optional[nn.Module]:
    """``torch.compile(model)`` (backend ``compile`` when a name), or ``None`` when ``compile`` is false."""
    check_compile(compile)
    if compile is False:
        return None
    kwargs: dict[str, Any] = {}
    if isinstance(compile, str):
        kwargs["backend"] = compile
    return torch.compile(model, **kwargs)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert 4-d parameters and buffers to channels_last in place (the same Parameter objects, so an
    optimiser built before or after keeps working); returns ``model``."""
    return model.to(memory_format=torch.channels_last)


def training_model(model: nn.Module, *, device: Union[str, torch.device], precision: str = "auto",
                   channels_last: Union[bool, str] = "auto", compile: Union[bool, str] = False,
                   ddp: Any = None) -> nn.Module:
    """What the trainer hands to ``method.loss``: ``model`` itself on the exact fp32 path (fp32, no
    channels_last, no compile, one process), else an :class:`AutocastModel` around it.

    ``ddp``: a callable ``module -> DistributedDataParallel`` (see :meth:`atkit.training.distributed.DistContext.wrap_ddp`)
    used under ``torchrun``; ``None`` for one process. Converts ``model`` to channels_last in place
    when that is on, and on CUDA turns on ``cudnn.benchmark`` for the fast path.
    """
    dtype = resolve_precision(precision, device)
    cl = resolve_channels_last(channels_last, device)
    check_compile(compile)
    if dtype is None and not cl and compile is False and ddp is None:
        return model
    if torch.device(device).type == "cuda" and (dtype is not None or cl):
        # Fixed training shapes: let cuDNN time its convolution algorithms once (process-wide setting).
        torch.backends.cudnn.benchmark = True
    if cl:
        to_channels_last(model)
    compiled = compile_model(model, compile)
    ddp_model = ddp(compiled if compiled is not None else model) if ddp is not None else None
    return AutocastModel(model, dtype=dtype, channels_last=cl, compiled=compiled, ddp=ddp_model)


def eval_model(model: nn.Module, *, device: Union[str, torch.device], precision: str = "fp32",
               channels_last: bool = False) -> nn.Module:
    """The model evaluation attacks see: ``model`` itself in fp32 (the default, reported numbers), or
    an :class:`AutocastModel` when ``precision`` resolves to bf16 or channels_last input is asked."""
    dtype = resolve_precision(precision, device)
    if dtype is None and not channels_last:
        return model
    return AutocastModel(model, dtype=dtype, channels_last=channels_last)


@contextlib.contextmanager
def tf32_mode(allowed: bool) -> Iterator[None]:
    """CUDA fp32 matmuls and convolutions inside the block run in TF32 (``allowed``) or in full fp32 (restored
    afterwards). Uses the long-standing ``allow_tf32`` flags, which recent releases map onto their
    ``fp32_precision`` settings; on the CPU the flags change nothing."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    try:
        before = (cudnn.allow_tf32, matmul.allow_tf32)
    except RuntimeError:  # flags set through the new per-operator API in an inconsistent way: leave them
        yield
        return
    cudnn.allow_tf32, matmul.allow_tf32 = bool(allowed), bool(allowed)
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


@contextlib.contextmanager
def exact_fp32(enabled: bool = True) -> Iterator[None]:
    """Switch TF32 off for CUDA matmuls and convolutions inside the block (restored afterwards).

    PyTorch runs fp32 cuDNN convolutions in TF32 by default on Ampere and later GPUs (10-bit
    mantissa); the exact fp32 path and the reported evaluation use full fp32. A no-op when
    ``enabled`` is false (:func:`tf32_mode` otherwise).
    """
    if not enabled:
        yield
        return
    with tf32_mode(False):
        yield


def precision_scope(precision: str, device: Union[str, torch.device]) -> contextlib.AbstractContextManager:
    """The TF32 switches ``precision`` runs under: ``"tf32"`` turns TF32 on, a precision that resolves to no
    autocast dtype (``"fp32"``, ``"auto"`` without bf16) turns it off (:func:`exact_fp32`), bf16 leaves the
    switches as they are (autocast decides the matmul and convolution precision)."""
    if precision == "tf32":
        check_choice("precision", precision, PRECISIONS)
        return tf32_mode(True)
    return exact_fp32(resolve_precision(precision, device) is None)


def describe(model: nn.Module) -> dict[str, Any]:
    """Which fast-path features a (possibly wrapped) training model uses, for logs and benchmarks."""
    if isinstance(model, AutocastModel):
        return {"precision": "bf16" if model.dtype == torch.bfloat16 else "fp32",
                "channels_last": model.channels_last, "compile": model._compiled is not None,
                "ddp": model._ddp is not None}
    return {"precision": "fp32", "channels_last": False, "compile": False, "ddp": False}


__all__ = ["AutocastModel", "BF16_EQUIVALENT", "BF16_NOT_MEASURED", "BF16_NOT_SHOWN", "CHANNELS_LAST_CHOICES",
           "EVAL_PARITY_MARGIN", "PARITY_MARGIN", "PRECISIONS", "bf16_parity_decision", "check_compile",
           "compile_model", "describe", "eval_model", "evaluation_parity", "exact_fp32", "precision_scope",
           "resolve_channels_last", "resolve_precision", "tf32_mode", "to_channels_last", "training_model",
           "unwrap_model"]
