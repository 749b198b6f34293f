"""Other people's checkpoints in atkit's models: RobustBench key names, their input normalization, and a guess
of the architecture when a state dict does not fit.

A state dict from RobustBench's model zoo (or the code it collects) differs from atkit's own in names only:

=======================  ==========================================  ========================================
atkit model              RobustBench definition                      renames (RobustBench -> atkit)
=======================  ==========================================  ========================================
``resnet18``,            ``resnet.py`` ``ResNet(BasicBlock or        ``linear.*`` -> ``fc.*``
``resnet18_bottleneck``  Bottleneck, [2, 2, 2, 2])``
``preact_resnet18``      ``resnet.py`` ``PreActResNet(PreActBlockV2, ``linear.*`` -> ``fc.*``
                         [2, 2, 2, 2], bn_before_fc=True)``
``wrn34_10``,            ``wide_resnet.py`` ``WideResNet`` (TRADES)  ``blockK.layer.I.*`` -> ``blockK.I.*``,
``wrn28_10``,                                                        ``convShortcut`` -> ``shortcut``, the
``wide_resnet``                                                      last ``bn1.*`` -> ``bn.*``; the unused
                                                                     ``sub_block1.*`` is dropped
``dm_wrn28_10``,         ``dm_wide_resnet.py`` ``DMWideResNet``,     ``logits.*`` -> ``fc.*``
``dm_wrn70_16``,         ``DMPreActResNet`` (Swish)
``dm_wide_resnet``,
``dm_preact_resnet18``
=======================  ==========================================  ========================================

Input normalization: RobustBench keeps it inside the model as buffers, ``mean``/``std`` (``(C, 1, 1)``, the
DeepMind nets) or ``mu``/``sigma`` (``(1, C, 1, 1)``, its wrappers of older models); atkit's models keep it as
``input_mean``/``input_std`` and apply ``(x - mean) / std`` first in ``forward``, so inputs and attacks stay in
[0, 1] pixel space. :func:`split_normalization` takes those buffers out of a state dict (*detected*), the user may
*state* one (``model_params.normalize``), and :func:`choose_normalization` decides which the model is built
with, refusing a stated one that contradicts the checkpoint's own. A checkpoint without buffers whose model was
trained on normalized inputs cannot be recognised from its weights: it must be stated (``cifar10`` ...).

Nothing here reads files; :func:`load_external_model` does, through :func:`atkit.training.checkpoints.load_checkpoint_file`
(``weights_only``, with the file-type checks of :mod:`atkit.core.checkpoint_sniff`).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from atkit.core.utils import ConfigError
from atkit.models.base import NORMALIZATIONS, AtkitModel, resolve_normalization
from atkit.models.dm_wideresnet import DMPreActResNet, DMWideResNet
from atkit.models.preact_resnet import PreActResNet
from atkit.models.resnet import ResNet
from atkit.models.wideresnet import WideResNet

Stats = Tuple[Tuple[float, ...], Tuple[float, ...]]

#: Normalization buffers of other people's models, ``(mean key, std key)``, atkit's own first.
NORMALIZATION_KEYS = (("input_mean", "input_std"), ("mean", "std"), ("mu", "sigma"),
                      ("normalize.mean", "normalize.std"))

#: Per model family: ``(pattern, replacement)`` renames from RobustBench's names to atkit's, applied in order,
#: and the prefixes of modules RobustBench's class builds but never calls (dropped with a note).
RENAMES: dict[type, Tuple[Sequence[Tuple[str, str]], Sequence[str]]] = {
    ResNet: (((r"^linear\.", "fc."),), ()),
    PreActResNet: (((r"^linear\.", "fc."),), ()),
    WideResNet: (((r"^(block\d+)\.layer\.", r"\1."), (r"\.convShortcut\.", ".shortcut."), (r"^bn1\.", "bn.")),
                 ("sub_block1.",)),
    DMWideResNet: (((r"^logits\.", "fc."),), ()),
    DMPreActResNet: (((r"^logits\.", "fc."),), ()),
}

#: What a state dict's "no normalization stated" means in provenance.
NOT_STATED = "not stated"


def _stats(mean: torch.Tensor, std: torch.Tensor) -> Stats:
    return (tuple(float(v) for v in mean.flatten().tolist()), tuple(float(v) for v in std.flatten().tolist()))


def split_normalization(state: Mapping[str, torch.Tensor]) -> Tuple[dict[str, torch.Tensor], Optional[Stats], str]:
    """``(state without normalization buffers, (mean, std) or None, the key names found)``.

    Recognises :data:`NORMALIZATION_KEYS` at the top level of the state dict (a pair with one key only, or
    shapes that are not per-channel, is left alone and will be reported as unexpected keys by the loader)."""
    out = dict(state)
    for mean_key, std_key in NORMALIZATION_KEYS:
        mean, std = out.get(mean_key), out.get(std_key)
        if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)):
            continue
        if mean.numel() != std.numel() or mean.numel() < 1 or mean.dim() > 4 or not mean.is_floating_point():
            continue
        del out[mean_key], out[std_key]
        return out, _stats(mean, std), f"{mean_key}/{std_key}"
    return out, None, ""


def describe_stats(stats: Optional[Stats]) -> str:
    """``cifar10`` for a named normalization, ``mean=[...], std=[...]`` otherwise, ``none`` for None."""
    if stats is None:
        return "none"
    for name, (mean, std) in NORMALIZATIONS.items():
        if _close(stats, (mean, std)):
            return name
    return f"mean={[round(v, 6) for v in stats[0]]}, std={[round(v, 6) for v in stats[1]]}"


def _close(a: Optional[Stats], b: Optional[Stats], tol: float = 1e-4) -> bool:
    """Same normalization up to ``tol`` (float32 storage and 4-decimal constants differ by ~1e-5)."""
    if a is None or b is None:
        return a is b
    if len(a[0]) == 1 and len(b[0]) > 1:  # one value for every channel
        a = (a[0] * len(b[0]), a[1] * len(b[1]))
    if len(b[0]) == 1 and len(a[0]) > 1:
        b = (b[0] * len(a[0]), b[1] * len(a[1]))
    return len(a[0]) == len(b[0]) and all(abs(x - y) <= tol for x, y in zip(a[0] + a[1], b[0] + b[1]))


def model_stats(model: nn.Module) -> Optional[Stats]:
    """The normalization ``model`` applies (its ``input_mean``/``input_std``), None when it applies none."""
    mean, std = getattr(model, "input_mean", None), getattr(model, "input_std", None)
    if mean is None or std is None or mean.is_meta:
        return None
    return _stats(mean, std)


def stated_stats(value: Any) -> Optional[Stats]:
    """A stated ``normalize`` (:func:`atkit.models.base.resolve_normalization`) as ``(mean, std)`` floats."""
    resolved = resolve_normalization(value)
    if resolved is None:
        return None
    mean, std = resolved
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def choose_normalization(stated: Any, detected: Optional[Stats], found_keys: str, source: str,
                         default: Any) -> Tuple[Any, dict[str, Any]]:
    """``(normalize to build the model with, provenance record)`` from a stated normalization (``NOT_STATED``
    when the user gave none), the checkpoint's own (``detected``) and the model's ``default``.

    The checkpoint's buffers win when nothing is stated; a stated normalization that contradicts them is a
    :class:`ConfigError` (one of the two is wrong, and guessing would change every number)."""
    if stated is NOT_STATED:
        if detected is not None:
            return detected, _record(detected, f"checkpoint buffers {found_keys}")
        chosen = stated_stats(default)
        return default, _record(chosen, "model default" + ("" if chosen is not None else
                                                            " (none; the checkpoint holds no mean/std buffers)"))
    wanted = stated_stats(stated)
    if detected is not None and not _close(wanted, detected):
        raise ConfigError(f"{source} carries its own input normalization ({found_keys}: {describe_stats(detected)}), "
                          f"but model_params.normalize={stated!r} states {describe_stats(wanted)}; leave "
                          "model_params.normalize out to use the checkpoint's (atkit applies it inside the model)")
    return stated, _record(wanted, "stated (model_params.normalize)" + (
        f", equal to the checkpoint buffers {found_keys}" if detected is not None else ""))


def normalization_record(model: nn.Module, source: str) -> dict[str, Any]:
    """The provenance record of the normalization ``model`` applies: ``{"name", "mean", "std", "source"}``."""
    return _record(model_stats(model), source)


def _record(stats: Optional[Stats], source: str) -> dict[str, Any]:
    return {"name": describe_stats(stats), "mean": list(stats[0]) if stats else None,
            "std": list(stats[1]) if stats else None, "source": source}


def strip_model_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without a ``model.`` prefix that every key has (a wrapper module; RobustBench strips it too)."""
    if state and all(k.startswith("model.") for k in state):
        return {k[len("model."):]: v for k, v in state.items()}
    return dict(state)


def rename_to_atkit(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Tuple[dict[str, torch.Tensor],
                                                                                   dict[str, Any]]:
    """``state`` with RobustBench's names mapped to ``model``'s (:data:`RENAMES`), and what was done:
    ``{"layout": "atkit" | "robustbench" | "unknown", "renamed": n, "dropped": [prefixes]}``. Keys that already
    fit are left alone."""
    expected = set(model.state_dict())
    out = dict(state)
    if set(out) <= expected:
        return out, {"layout": "atkit", "renamed": 0, "dropped": []}
    rules, unused = next(((r, u) for cls, (r, u) in RENAMES.items() if isinstance(model, cls)), ((), ()))
    renamed, dropped, result = 0, set(), {}
    for key, value in out.items():
        prefix = next((p for p in unused if key.startswith(p)), None)
        if prefix is not None:
            dropped.add(prefix + "*")
            continue
        new = key
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        renamed += new != key
        result[new] = value
    layout = "robustbench" if renamed or dropped else "unknown"
    return result, {"layout": layout, "renamed": renamed, "dropped": sorted(dropped)}


def fit_state_to_model(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                       hint: str = "set model_params.normalize") -> Tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Someone else's state dict made loadable into an already built ``model`` (a fine-tuning start):
    renamed (:func:`rename_to_atkit`), its normalization checked against the model's, the model's own
    normalization buffers added when the file has none. Returns ``(state, {"keys": ..., "normalization": ...})``.

    A checkpoint whose buffers disagree with the model's normalization (or that has buffers the model lacks) is
    a :class:`ConfigError` naming both and ``hint``."""
    body, detected, found = split_normalization(strip_model_prefix(state))
    own = model_stats(model)
    if detected is not None and not _close(detected, own):
        raise ConfigError(f"{source} carries its own input normalization ({found}: {describe_stats(detected)}), but "
                          f"the model applies {describe_stats(own)}: {hint} to {_normalize_value(detected)} "
                          "(atkit applies it inside the model, inputs stay in [0, 1])")
    body, keys = rename_to_atkit(model, body)
    if own is not None:  # the model's own buffers (stated, default or equal to the file's): not in the file's keys
        body["input_mean"], body["input_std"] = model.input_mean.detach().clone(), model.input_std.detach().clone()
    source_text = f"checkpoint buffers {found}" if detected is not None else "the model's (the file has none)"
    return body, {"keys": keys, "normalization": _record(own, source_text)}


def _normalize_value(stats: Stats) -> str:
    name = describe_stats(stats)
    return name if name in NORMALIZATIONS else f"[{list(stats[0])}, {list(stats[1])}]"


# ------------------------------------------------------------------------------ architecture guess
def _blocks(keys: Sequence[str], pattern: str) -> list[int]:
    """Per captured group value (a stage), how many distinct block indices ``pattern`` matches."""
    seen: dict[str, set[str]] = {}
    for key in keys:
        m = re.match(pattern, key)
        if m:
            seen.setdefault(m.group(1), set()).add(m.group(2))
    return [len(seen[g]) for g in sorted(seen, key=lambda s: int(s))]


def guess_architecture(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The atkit model (with options) a state dict looks like, from its key names and shapes (either naming), as
    the flags to pass: ``--model dm_wrn70_16``; None when it matches no family atkit has."""
    keys = list(state)

    def width_of(key: str) -> int:  # output channels of a conv weight
        return int(state[key].shape[0])

    if "init_conv.weight" in state and "layer.0.block.0.conv_0.weight" in state:
        n = _blocks(keys, r"^layer\.(\d+)\.block\.(\d+)\.")
        depth, width = 6 * n[0] + 4, width_of("layer.0.block.0.conv_0.weight") // 16
        named = {(28, 10): "dm_wrn28_10", (70, 16): "dm_wrn70_16"}.get((depth, width))
        return f"--model {named}" if named else (f"--model dm_wide_resnet --set model_params.depth={depth} "
                                                 f"--set model_params.width={width}")
    if "conv_2d.weight" in state and "layer_0.0.conv_2d_1.weight" in state:
        n = _blocks(keys, r"^layer_(\d+)\.(\d+)\.")
        return "--model dm_preact_resnet18" if n == [2, 2, 2, 2] else None
    for stem in ("block1.layer.0.conv1.weight", "block1.0.conv1.weight"):
        if stem in state:
            n = _blocks(keys, r"^block(\d+)\.(?:layer\.)?(\d+)\.")
            depth, width = 6 * n[0] + 4, width_of(stem) // 16
            named = {(34, 10): "wrn34_10", (28, 10): "wrn28_10"}.get((depth, width))
            return f"--model {named}" if named else (f"--model wide_resnet --set model_params.depth={depth} "
                                                     f"--set model_params.widen_factor={width}")
    if "layer1.0.conv1.weight" in state:
        n = _blocks(keys, r"^layer(\d+)\.(\d+)\.")
        if n != [2, 2, 2, 2]:
            return None
        if "layer1.0.conv3.weight" in state:
            return "--model resnet18_bottleneck"
        if "bn1.weight" in state:
            return "--model resnet18"
        return "--model preact_resnet18" if "bn.weight" in state else None
    return None


def output_count(state: Mapping[str, torch.Tensor]) -> Optional[int]:
    """Rows of the classifier head (``fc``, ``linear`` or ``logits``), if the state dict has one."""
    for key in ("fc.weight", "linear.weight", "logits.weight"):
        if key in state and state[key].dim() == 2:
            return int(state[key].shape[0])
    return None


# ------------------------------------------------------------------------------ reading a file
def load_external_model(name: str, path: str | Path, *, num_classes: int, dummy_classes: bool = False,
                        model_params: Optional[Mapping[str, Any]] = None,
                        checkpoint: Any = None) -> Tuple[AtkitModel, dict[str, Any]]:
    """Build model ``name`` and load someone else's state dict from ``path`` into it (CPU, eval mode).

    Returns ``(model, record)``; ``record`` holds the normalization used and where it came from, and what was
    renamed (for the evaluation's provenance). ``model_params`` may state ``normalize`` (see
    :func:`choose_normalization`). ``checkpoint``: the file's content when the caller has read it already (once:
    the hash in provenance is of those bytes). Every failure is a one-line :class:`ConfigError`."""
    # why: atkit.training.checkpoints imports this module for init_checkpoint; importing it here breaks the cycle.
    from atkit.core.checkpoint_files import extract_state_dict, load_checkpoint_file, load_weights
    from atkit.models import MODELS, build_model

    params = dict(model_params or {})
    stated = params.pop("normalize", NOT_STATED)
    default = MODELS.options(name).get("normalize", None)  # an unknown model name fails here
    with torch.device("meta"):  # every option checked before a large file is read, without allocating weights
        build_model(name, num_classes=num_classes, dummy_classes=dummy_classes,
                    normalize=default if stated is NOT_STATED else stated, **params)
    path = Path(path)
    source = f"checkpoint {str(path)!r}"
    raw = checkpoint if checkpoint is not None else load_checkpoint_file(
        path, "cpu", hint="check that the file is complete (download it again) and is a PyTorch state dict")
    state = strip_model_prefix(extract_state_dict(raw, source))
    body, detected, found = split_normalization(state)
    normalize, norm_record = choose_normalization(stated, detected, found, source, default)
    if norm_record["mean"] is None and stated is NOT_STATED:
        # The most common silent error with other people's models: a Normalize that was outside the saved weights.
        warnings.warn(f"{source} holds no normalization buffers and none was stated, so inputs reach the first layer "
                      "in [0, 1]; if the model was trained on normalized inputs, pass --set "
                      "model_params.normalize=cifar10 (or [[mean...], [std...]])", stacklevel=2)
    model = build_model(name, num_classes=num_classes, dummy_classes=dummy_classes, normalize=normalize, **params)
    fitted, info = fit_state_to_model(model, state, source)
    flags = f"--model {name} --num-classes {num_classes}" + (" --dummy-classes" if dummy_classes else "")
    guess = guess_architecture(body)
    looks = f"; the checkpoint looks like {guess}" if guess and guess != f"--model {name}" else ""
    heads = output_count(body)
    looks += f" with {heads} outputs" if looks and heads else ""
    load_weights(model, fitted, source, hint=f"check {flags} (and --set model_params.*) against the checkpoint{looks}"
                                             "; a 2C-output DUCAT head needs --dummy-classes")
    return model.eval(), {"normalization": norm_record, "keys": info["keys"]}


__all__ = ["NORMALIZATION_KEYS", "NOT_STATED", "RENAMES", "choose_normalization", "describe_stats",
           "fit_state_to_model", "guess_architecture", "load_external_model", "model_stats", "normalization_record",
           "output_count",
           "rename_to_atkit", "split_normalization", "stated_stats", "strip_model_prefix"]
