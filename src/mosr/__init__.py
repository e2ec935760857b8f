"""mosr: diagnose and mitigate over-refusal in LLMs through their safety representations.

The public API is re-exported here lazily, so ``import mosr`` stays cheap (no torch import) until a
name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from mosr.errors import ConfigError, DataError, JudgeError, ModelLoadError, MosrError, RunError, TrainingError

_LAZY = {
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
    "EvalConfig": "mosr.evaluate",
    "run_eval": "mosr.evaluate",
    "SteeringArtifact": "mosr.steering",
    "SteerConfig": "mosr.steering",
    "run_steer": "mosr.steering",
    "steer": "mosr.steering",
    "load_steering": "mosr.steering",
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
