"""Exceptions that carry a one-line, actionable message.

The CLI prints ``error: <message>`` for any :class:`MosrError` and exits with status 2, so each
message should name the offending file, row, column, option or value and say how to fix it.
"""

from __future__ import annotations


class MosrError(Exception):
    """Base class for every error mosr raises on purpose."""


class ConfigError(MosrError):
    """A bad option, config key, value or name (unknown judge, dataset, method...)."""


class DataError(MosrError):
    """A dataset file or sample that cannot be used (missing column, empty prompt, leak...)."""


class ModelLoadError(MosrError):
    """A model, GGUF file or adapter that cannot be loaded or does not fit its base model."""


class JudgeError(MosrError):
    """A judge that cannot be built or cannot run."""


class RunError(MosrError):
    """A run directory that cannot be written, resumed or read."""


class TrainingError(MosrError):
    """Training that must stop (non-finite loss, failed leak check...)."""
