"""Training: MOSR, representation rerouting (RR) and the SFT baselines through one loop.

``train(TrainConfig(method="mosr"), "runs/train-mosr")`` builds the training data (leak-checked,
with the base model's own completions cached on disk), adds LoRA, trains, and writes a peft adapter
folder that :func:`mosr.models.load_model` can attach. The loss terms, OALW weights and CAA rows
are pure functions in :mod:`~mosr.training.losses`, :mod:`~mosr.training.oalw` and
:mod:`~mosr.training.caa`.
"""

from __future__ import annotations

from mosr.training.config import METHODS, MethodSpec, TrainConfig
from mosr.training.export import checkpoint_steps, export_checkpoint
from mosr.training.data import Pair, TrainingData, build_training_data, own_completions
from mosr.training.refusals import REFUSAL_TEMPLATES
from mosr.training.run import train
from mosr.training.trainer import Trainer, TrainResult

__all__ = [
    "METHODS",
    "MethodSpec",
    "TrainConfig",
    "Pair",
    "TrainingData",
    "build_training_data",
    "own_completions",
    "REFUSAL_TEMPLATES",
    "Trainer",
    "TrainResult",
    "train",
    "checkpoint_steps",
    "export_checkpoint",
]
