"""Judges: every completion gets a behaviour verdict (refusal / partial / gibberish / compliance,
or unjudged) and, where the judge reads for harm, a harm-view flag (docs/JUDGES.md).

Registered judges (see ``docs/JUDGES.md`` for their measured accuracy):

* ``gibberish`` -- heuristics only (repetition, non-words, odd characters, empty output, and an
  optional perplexity callable); returns gibberish or compliance.
* ``keyword`` -- gibberish first, then clause-initial refusal phrases with exceptions.
* ``learned`` -- gibberish first, then a logistic regression on MiniLM sentence embeddings plus
  keyword flags, trained on human-labelled completions (``scripts/train_judge.py``).
* ``harm`` -- the keyword judge's verdict, read again by the learned coherence check where it says
  compliance (``scripts/train_coherence_check.py``), plus the harm view: a logistic regression on
  MiniLM features that flags meaningful harmful content (``scripts/train_harm_judge.py``).
* ``hub`` -- a classifier from the Hugging Face hub (HarmBench, WildGuard, Llama Guard formats).
* ``default`` -- ``harm``: the judge with the best measured verdict accuracy on the default model's
  own outputs (judge-test), and the only one with a harm view.

A judge is any object with a ``name`` and ``judge(prompts, completions) -> list[Judgment]``
(:class:`Judge`); pass one to :func:`mosr.evaluation.judge_records` or ``run_eval(judge=...)``, or
register a factory with :func:`register_judge` to make it available by name.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mosr.errors import ConfigError
from mosr.judges.base import VERDICTS, Judge, Judgment, Verdict, check_lengths, count_verdicts, screen, unjudged
from mosr.judges.embedding import EMBEDDING_NAME, Embedder, LogisticHead, embedding_model_dir, file_sha256, get_embedder
from mosr.judges.harm import HARM_META, HARM_WEIGHTS, HarmJudge, harm_features
from mosr.judges.gibberish import WEIGHTS_DIR, WORDLIST_FILE, GibberishJudge, GibberishThresholds, gibberish_reason
from mosr.judges.hub import DEFAULT_HUB_MODEL, HUB_FORMATS, HubJudge, build_hub_prompt, parse_hub_output
from mosr.judges.keyword import KEYWORDS_FILE, KeywordJudge, KeywordRules, load_keyword_rules
from mosr.judges.learned import CHEAP_FEATURES, LEARNED_META, LEARNED_WEIGHTS, LearnedJudge, cheap_features, learned_features

__all__ = [
    "CHEAP_FEATURES", "DEFAULT_HUB_MODEL", "HARM_META", "HARM_WEIGHTS", "HarmJudge", "harm_features", "EMBEDDING_NAME", "HUB_FORMATS", "JUDGES", "KEYWORDS_FILE", "LEARNED_META",
    "LEARNED_WEIGHTS", "VERDICTS", "WEIGHTS_DIR", "WORDLIST_FILE", "Embedder", "GibberishJudge", "GibberishThresholds",
    "HubJudge", "Judge", "Judgment", "KeywordJudge", "KeywordRules", "LearnedJudge", "LogisticHead", "Verdict",
    "build_hub_prompt", "cheap_features", "check_lengths", "count_verdicts", "embedding_model_dir", "file_sha256",
    "get_embedder", "get_judge", "gibberish_reason", "learned_features", "load_keyword_rules", "parse_hub_output",
    "register_judge", "resolve_judge", "rules_fingerprint", "screen", "unjudged",
]

_FACTORIES: dict[str, Callable[..., Judge]] = {
    "keyword": KeywordJudge,
    "gibberish": GibberishJudge,
    "learned": LearnedJudge,
    "hub": HubJudge,
    "harm": HarmJudge,
    # chosen by accuracy on the judge-test part of the labelled set (docs/JUDGES.md): the keyword
    # verdict (91.9% against the learned judge's 90.3%) plus the harm view, which only `harm` has
    "default": HarmJudge,
}
JUDGES: tuple[str, ...] = tuple(_FACTORIES)

F = TypeVar("F", bound=Callable[..., Judge])


def register_judge(name: str) -> Callable[[F], F]:
    """Decorator: make a judge factory (a class or function returning a :class:`Judge`) available
    to :func:`get_judge`, ``mosr eval --judge NAME`` and ``mosr judge --judge NAME``."""
    global JUDGES

    def deco(factory: F) -> F:
        if name in _FACTORIES:
            raise ConfigError(f"a judge named {name!r} is already registered")
        _FACTORIES[name] = factory
        globals()["JUDGES"] = tuple(_FACTORIES)
        return factory

    return deco


def get_judge(name: str, **options: Any) -> Judge:
    """Build a registered judge; ``options`` are its dataclass fields (e.g. ``model_id=`` for hub)."""
    if name not in _FACTORIES:
        raise ConfigError(f"unknown judge {name!r}; valid judges: {', '.join(_FACTORIES)}")
    factory = _FACTORIES[name]
    if dataclasses.is_dataclass(factory):
        valid = {f.name for f in dataclasses.fields(factory) if f.init and f.name != "name"}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} for judge {name!r}; valid options: {', '.join(sorted(valid))}")
    return factory(**options)


def resolve_judge(judge: str | Judge) -> Judge:
    """A judge object from a registered name or an object that follows the :class:`Judge` protocol."""
    if isinstance(judge, str):
        return get_judge(judge)
    if not isinstance(judge, Judge):
        raise ConfigError(f"{judge!r} is not a judge: it needs a `name` and a `judge(prompts, completions)` method")
    return judge


@functools.lru_cache(maxsize=1)
def rules_fingerprint() -> str:
    """A hash of everything the built-in judges decide with: this package's code, the judge weights
    and the refusal-phrase file. Stored with every judged run, and part of an experiment's eval-stage
    inputs, so that a change of rules re-judges cached completions instead of keeping stale verdicts."""
    h = hashlib.sha256()
    files = sorted(Path(__file__).parent.glob("*.py")) + sorted(p for p in WEIGHTS_DIR.iterdir() if p.is_file()) + [KEYWORDS_FILE]
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]
