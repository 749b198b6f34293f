"""Training: one trainer for every method, its run folders, checkpoints and final report.

Owns the run configuration (:mod:`.config`), what a config resolves to (:mod:`.setup`), the trainer
(:mod:`.trainer`) and an epoch's bookkeeping (:mod:`.epoch`), the run's explicit state (:mod:`.state`), which the
checkpoints (:mod:`.checkpoints`) and the final report (:mod:`.report`) take instead of the trainer, multi-GPU
training (:mod:`.distributed`), the training options (gradient accumulation :mod:`.accumulate`, CutMix and label
smoothing :mod:`.augment`, the catastrophic-overfitting flag :mod:`.catastrophic_overfitting`, TensorBoard
:mod:`.tensorboard_log`) and finding, reusing and resuming runs (:mod:`.runs`). May import evaluation, methods,
attacks, models, data and core; experiments and the workbench import it, never the other way round.

    from atkit.training import train
    trainer = train({"method": "trades", "dataset": "cifar10", "model": "preact_resnet18"})
"""
from .checkpoints import load_model
from .config import RunConfig, load_config
from .state import RunState
from .trainer import Trainer, train, train_to_end

__all__ = ["RunConfig", "RunState", "Trainer", "load_config", "load_model", "train", "train_to_end"]
