"""mosr: diagnose and mitigate over-refusal in LLMs through their safety representations."""

from __future__ import annotations

__version__ = "0.1.0"

from mosr.errors import ConfigError, DataError, JudgeError, ModelLoadError, MosrError, RunError

__all__ = [
    "__version__",
    "MosrError",
    "ConfigError",
    "DataError",
    "ModelLoadError",
    "JudgeError",
    "RunError",
]
