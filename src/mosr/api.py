"""The public API: one function per ``mosr`` verb, each returning a typed result.

``mosr.evaluate``, ``mosr.train``, ``mosr.analyze``, ``mosr.compare`` and ``mosr.run_experiment``
take a config dataclass, or keyword arguments for one, and return what the run produced (metrics,
judgments, paths). A run folder is written only where ``out`` names one: with ``out=None``,
:func:`evaluate` and :func:`analyze` work in a temporary folder that is removed before they return,
and :func:`compare` returns its records without writing a report.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mosr.analysis_run import AnalyzeConfig, run_analyze
from mosr.comparison import parse_entry, shared_records, write_comparison
from mosr.errors import ConfigError
from mosr.evaluation import EvalConfig, run_eval
from mosr.experiment import ExperimentConfig, ExperimentResult
from mosr.experiment import run_experiment as _run_experiment
from mosr.judges import Judge
from mosr.models import LoadedModel
from mosr.records import Completion, JudgmentRecord, RunMeta, read_completions, read_judgments, read_run_meta
from mosr.training import TrainConfig, TrainingData, TrainResult
from mosr.training import train as _train

__all__ = ["EvalResult", "AnalyzeResult", "CompareResult", "evaluate", "train", "analyze", "compare", "run_experiment"]

C = TypeVar("C")


@dataclass(frozen=True)
class EvalResult:
    """An evaluation: its metrics, one judgment and one completion per prompt, its metadata, and the run folder (None: not kept)."""

    metrics: dict[str, Any]
    judgments: list[JudgmentRecord]
    completions: list[Completion]
    meta: RunMeta
    out: Path | None


@dataclass(frozen=True)
class AnalyzeResult:
    """A representation analysis: its metrics and the run folder (None: not kept)."""

    metrics: dict[str, Any]
    out: Path | None


@dataclass(frozen=True)
class CompareResult:
    """Eval runs compared on their shared prompts: one record per run; the report when ``out`` was given."""

    records: list[dict[str, Any]]
    n_shared: int
    report_html: Path | None


def _config(cls: type[C], config: C | None, overrides: dict[str, Any]) -> C:
    """``config`` with ``overrides`` applied, or ``cls(**overrides)``; unknown keys are named."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    if config is None:
        return cls(**overrides)
    return dataclasses.replace(config, **overrides) if overrides else config  # type: ignore[type-var]


def evaluate(config: EvalConfig | None = None, out: str | Path | None = None, *, loaded: LoadedModel | None = None,
             judge: Judge | None = None, **kwargs: Any) -> EvalResult:
    """Generate, judge and score (``mosr eval``). ``kwargs`` are :class:`~mosr.evaluation.EvalConfig` fields.

    ``loaded`` replaces loading ``config.model``; ``judge`` is any :class:`mosr.judges.Judge` object.
    """
    cfg = _config(EvalConfig, config, kwargs)
    if out is not None:
        return _eval_in(cfg, Path(out), loaded, judge, keep=True)
    with tempfile.TemporaryDirectory(prefix="mosr-eval-") as tmp:
        return _eval_in(cfg, Path(tmp) / "run", loaded, judge, keep=False)


def _eval_in(cfg: EvalConfig, out: Path, loaded: LoadedModel | None, judge: Judge | None, *, keep: bool) -> EvalResult:
    metrics = run_eval(cfg, out, loaded=loaded, judge=judge)
    return EvalResult(metrics=metrics, judgments=read_judgments(out), completions=read_completions(out),
                      meta=read_run_meta(out), out=out if keep else None)


def train(config: TrainConfig | None = None, out: str | Path | None = None, *, loaded: LoadedModel | None = None,
          data: TrainingData | None = None, resume: bool | str = False, **kwargs: Any) -> TrainResult:
    """Train a LoRA adapter (``mosr train``) into ``out``. ``kwargs`` are :class:`~mosr.training.TrainConfig` fields.

    The adapter is the product, so ``out`` is required. After it returns, ``loaded`` (when given) is the
    trained model.
    """
    if out is None:
        raise ConfigError("train needs out=: the folder the adapter is saved in")
    return _train(_config(TrainConfig, config, kwargs), out, loaded=loaded, data=data, resume=resume, command="mosr.train")


def analyze(config: AnalyzeConfig | None = None, out: str | Path | None = None, *, loaded: LoadedModel | None = None,
            **kwargs: Any) -> AnalyzeResult:
    """Where benign, malicious and pseudo-malicious prompts sit (``mosr analyze``). ``kwargs`` are
    :class:`~mosr.analysis_run.AnalyzeConfig` fields; tuples may be given as lists."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    cfg = _config(AnalyzeConfig, config, kwargs)
    if out is not None:
        return AnalyzeResult(metrics=run_analyze(cfg, out, loaded=loaded), out=Path(out))
    with tempfile.TemporaryDirectory(prefix="mosr-analyze-") as tmp:
        return AnalyzeResult(metrics=run_analyze(cfg, Path(tmp) / "run", loaded=loaded), out=None)


def compare(runs: Mapping[str, str | Path] | Sequence[str | Path | tuple[str, str | Path]], out: str | Path | None = None, *,
            title: str | None = None) -> CompareResult:
    """Compare eval runs on the prompts they all judged (``mosr compare``).

    ``runs``: ``{label: folder}``, ``(label, folder)`` pairs, or folders (``"label=folder"`` strings
    work too); a folder may be an eval run's result bundle (:mod:`mosr.bundles`). A report is written only when ``out`` is given.
    """
    items = runs.items() if isinstance(runs, Mapping) else runs
    entries = [(str(r[0]), Path(r[1])) if isinstance(r, tuple) else parse_entry(str(r)) for r in items]
    if out is None:
        records, n = shared_records(entries)
        return CompareResult(records=records, n_shared=n, report_html=None)
    result = write_comparison(entries, out, title=title)
    return CompareResult(records=result.records, n_shared=result.n_shared, report_html=result.report_html)


def run_experiment(config: ExperimentConfig | Mapping[str, Any] | str | Path, out: str | Path, *, only: Sequence[str] = (),
                   shard: str | None = None) -> ExperimentResult:
    """Train, evaluate and analyse every method with cached stages (``mosr experiment``).

    ``config``: an :class:`~mosr.experiment.ExperimentConfig`, a dict of its YAML keys, or a YAML path.
    ``only`` (glob patterns on stage names) and ``shard`` (``"I/N"``): finish only those stages and
    what they read (docs/EXPERIMENT.md, "Bundles").
    """
    if isinstance(config, (str, Path)):
        config = ExperimentConfig.load(config)
    elif isinstance(config, Mapping):
        config = ExperimentConfig.from_dict(dict(config))
    return _run_experiment(config, out, only=only, shard=shard)
