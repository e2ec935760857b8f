"""mosr: diagnose and mitigate over-refusal in LLMs through their safety representations.

The public API mirrors the command line: :func:`evaluate`, :func:`train`, :func:`analyze`,
:func:`compare` and :func:`run_experiment` (see docs/API.md). Names are re-exported lazily, so
``import mosr`` stays cheap (no torch import) until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from mosr.errors import ConfigError, DataError, JudgeError, ModelLoadError, MosrError, RunError, TrainingError

_LAZY = {
    "evaluate": "mosr.api",
    "train": "mosr.api",
    "analyze": "mosr.api",
    "compare": "mosr.api",
    "run_experiment": "mosr.api",
    "EvalResult": "mosr.api",
    "AnalyzeResult": "mosr.api",
    "CompareResult": "mosr.api",
    "TrainConfig": "mosr.training",
    "TrainResult": "mosr.training",
    "AnalyzeConfig": "mosr.analysis_run",
    "ExperimentConfig": "mosr.experiment",
    "ExperimentResult": "mosr.experiment",
    "Judge": "mosr.judges",
    "register_judge": "mosr.judges",
    "load_model": "mosr.models",
    "format_prompt": "mosr.models",
    "find_layers": "mosr.models",
    "LoadedModel": "mosr.models",
    "Sample": "mosr.data",
    "load_dataset": "mosr.data",
    "load_user_dataset": "mosr.data",
    "find_leaks": "mosr.data",
    "generate": "mosr.generation",
    "get_judge": "mosr.judges",
    "Judgment": "mosr.judges",
    "EvalConfig": "mosr.evaluation",
    "run_eval": "mosr.evaluation",
    "SteeringArtifact": "mosr.steering",
    "SteerConfig": "mosr.steering",
    "run_steer": "mosr.steering",
    "steer": "mosr.steering",
    "load_steering": "mosr.steering",
    "export_bundle": "mosr.bundles",
    "verify_bundle": "mosr.bundles",
    "unpack_bundle": "mosr.bundles",
}

__all__ = [
    "__version__",
    "MosrError",
    "ConfigError",
    "DataError",
    "ModelLoadError",
    "JudgeError",
    "RunError",
    "TrainingError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mosr' has no attribute {name!r}")
