"""Inference-time steering baselines: SCANS, the refusal direction (add or ablate), AlphaSteer.

* :func:`run_steer` (``mosr steer``) extracts what a method needs from ``:train`` splits, chooses
  its knobs on ``:val`` splits by a fixed rule, and saves a :class:`SteeringArtifact`.
* :func:`steer` applies an artifact to a model inside a ``with`` block; the hooks are removed on
  exit, also on errors.
* :func:`load_steering` reads a steering run folder.

See docs/STEERING.md for the methods, what follows the papers and what is our choice.
"""

from __future__ import annotations

from mosr.steering.artifact import METHODS, MODES, SteeringArtifact, is_steering_run
from mosr.steering.hooks import SteeringState, steer
from mosr.steering.run import SteerConfig, run_steer
from mosr.steering.select import SelectionRule, choose


def load_steering(folder: str) -> SteeringArtifact:
    """The artifact of a ``mosr steer`` run folder."""
    return SteeringArtifact.load(folder)


__all__ = [
    "METHODS", "MODES", "SelectionRule", "SteerConfig", "SteeringArtifact", "SteeringState", "choose",
    "is_steering_run", "load_steering", "run_steer", "steer",
]
