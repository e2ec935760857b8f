"""Training data for every method: malicious, benign-retain and pseudo-malicious pairs, and refusals.

Only training splits are used, and a leak check against every evaluation set runs before anything
is generated: leaking prompts are dropped (and counted), then the clean union is checked again with
:func:`mosr.data.assert_no_leaks`; anything left stops training with :class:`TrainingError`.

The base model's own completions (of harmful training prompts, pseudo-malicious prompts and,
optionally, benign instructions) are generated once and cached on disk under
``<mosr cache>/completions/<model fingerprint>/<prompts hash>-n<tokens>.json``. For the embedded
default model, the completions of the default training sets ship with the package
(``datafiles/own_completions``, same layout, gzipped; see its SOURCE.md): a cache miss whose key and
prompts match a shipped file reads it instead of generating (``MOSR_SHIPPED_COMPLETIONS=0`` turns
this off), and the training run records which it was (``own_completions`` in ``training_data``).

They are sorted with the evaluation judge (``data_judge``, default ``"default"``): a harmful
completion the judge calls a refusal leaves the erase set, and a pseudo-malicious completion enters
the retain / compliance sets only if the judge calls it compliance. The verdicts are written to the run
folder (``own_answers_<role>.json``), keyed by the fields they depend on, so a resumed run keeps the
same training data even if the default judge changes in between.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mosr.data import Sample, assert_no_leaks, drop_leaks, evaluation_samples, load_dataset, samples_hash
from mosr.errors import ConfigError, DataError, TrainingError
from mosr.models import LoadedModel, cache_dir
from mosr.runs import atomic_write_text
from mosr.training.config import TrainConfig
from mosr.training.refusals import load_templates

log = logging.getLogger(__name__)

Role = Literal["malicious", "benign", "pseudo"]
_SELECT_SEED = 20251128  # fixed, so capped subsets (and their cached completions) do not depend on the training seed


@dataclass(frozen=True)
class Pair:
    """A prompt and the response trained on (harmful, benign or compliant-to-scary)."""

    id: str
    prompt: str
    response: str
    role: Role
    source: str


@dataclass
class TrainingData:
    malicious: list[Pair]
    benign: list[Pair]
    pseudo: list[Pair]
    refusals: list[str]
    hashes: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    pseudo_refused: list[Pair] = field(default_factory=list)  # pseudo-malicious prompts the base model did not simply answer

    def describe(self) -> dict[str, Any]:
        return {"counts": {"malicious": len(self.malicious), "benign": len(self.benign), "pseudo": len(self.pseudo),
                           "refusal_templates": len(self.refusals)}, **self.summary}


# ------------------------------------------------------------------------------------ own completions
SHIPPED_COMPLETIONS = Path(__file__).resolve().parents[1] / "datafiles" / "own_completions"


def model_key(fingerprint: str) -> str:
    """The folder of a base model's own completions, in the cache and among the shipped files."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def _completion_key(loaded: LoadedModel, samples: Sequence[Sample], max_new_tokens: int) -> Path:
    prompts_key = hashlib.sha256("\n".join(s.prompt for s in samples).encode()).hexdigest()[:16]
    return Path(model_key(loaded.fingerprint)) / f"{prompts_key}-n{max_new_tokens}.json"


def completion_cache_path(loaded: LoadedModel, samples: Sequence[Sample], max_new_tokens: int) -> Path:
    return cache_dir() / "completions" / _completion_key(loaded, samples, max_new_tokens)


def _matching(payload: Any, loaded: LoadedModel, samples: Sequence[Sample], max_new_tokens: int) -> list[str] | None:
    """The completions of ``payload`` if it holds exactly these prompts, of this model and length, else None."""
    try:
        if payload["fingerprint"] != loaded.fingerprint or payload["max_new_tokens"] != max_new_tokens:
            return None
        items = payload["items"]
        if [c["prompt"] for c in items] != [s.prompt for s in samples]:
            return None
        texts = [c["completion"] for c in items]
    except (KeyError, TypeError):
        return None
    return texts if all(isinstance(t, str) for t in texts) else None


def shipped_completions(loaded: LoadedModel, samples: Sequence[Sample], max_new_tokens: int) -> list[str] | None:
    """The shipped own completions of these prompts (embedded default model only), or None.

    A shipped file is used only if its recorded model fingerprint, token budget and prompts all match;
    ``MOSR_SHIPPED_COMPLETIONS=0`` turns them off.
    """
    if os.environ.get("MOSR_SHIPPED_COMPLETIONS", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None
    path = SHIPPED_COMPLETIONS / _completion_key(loaded, samples, max_new_tokens).with_suffix(".json.gz")
    if not samples or not path.is_file():
        return None
    try:
        payload = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"shipped own completions {path} cannot be read ({exc}); set MOSR_SHIPPED_COMPLETIONS=0 to generate them") from exc
    return _matching(payload, loaded, samples, max_new_tokens)


def _stored(loaded: LoadedModel, samples: Sequence[Sample], max_new_tokens: int) -> tuple[list[str] | None, str, bool]:
    """(completions, origin, whether the cache holds them) of the stored own completions of these prompts.

    The cache comes first, then the shipped files (base model only); ``(None, "generated", False)`` when
    neither holds them. Origin: ``cache`` (generated earlier on this machine) or ``shipped`` (a shipped
    file, or the cache's copy of one).
    """
    path = completion_cache_path(loaded, samples, max_new_tokens)
    if path.is_file():
        payload = json.loads(path.read_text(encoding="utf-8"))
        texts = _matching(payload, loaded, samples, max_new_tokens)
        if texts is not None:
            return texts, "shipped" if payload.get("source") == "shipped" else "cache", True
    texts = shipped_completions(loaded, samples, max_new_tokens) if loaded.adapter is None else None
    return (texts, "shipped", False) if texts is not None else (None, "generated", False)


def completion_origin(loaded: LoadedModel, samples: Sequence[Sample], max_new_tokens: int) -> str:
    """Where :func:`own_completions` takes these completions from: ``shipped`` (the shipped file, or the
    cache's copy of it), ``cache`` (generated by an earlier run on this machine) or ``generated``."""
    return _stored(loaded, samples, max_new_tokens)[1] if samples else "none"


def _write_cache(path: Path, loaded: LoadedModel, samples: Sequence[Sample], max_new_tokens: int, outs: Sequence[str],
                 source: str) -> None:
    payload = {"fingerprint": loaded.fingerprint, "max_new_tokens": max_new_tokens, "source": source,
               "items": [{"id": s.id, "prompt": s.prompt, "completion": o} for s, o in zip(samples, outs)]}
    atomic_write_text(path, json.dumps(payload, ensure_ascii=False, indent=0))


def own_completions(loaded: LoadedModel, samples: Sequence[Sample], *, max_new_tokens: int, batch_size: int, desc: str) -> list[str]:
    """Greedy completions of the base model, cached on disk by model fingerprint + prompts hash.

    On a cache miss, the shipped completions of the embedded default model are used when their key and
    prompts match (:func:`shipped_completions`); otherwise they are generated.
    """
    if not samples:
        return []
    path = completion_cache_path(loaded, samples, max_new_tokens)
    stored, _, in_cache = _stored(loaded, samples, max_new_tokens)
    if stored is not None:
        if not in_cache:
            log.info("%s: %d shipped with mosr (%s), not generated", desc, len(stored), SHIPPED_COMPLETIONS)
            _write_cache(path, loaded, samples, max_new_tokens, stored, "shipped")
        return stored
    if loaded.adapter is not None:
        raise TrainingError(f"own completions must come from the base model, but an adapter is attached ({loaded.adapter})")
    from mosr.generation import generate

    log.info("generating %d completions for %s (cached in %s)", len(samples), desc, path)
    outs = generate(loaded, [s.prompt for s in samples], max_new_tokens=max_new_tokens, batch_size=batch_size, desc=desc)
    _write_cache(path, loaded, samples, max_new_tokens, outs, "generated")
    return outs


# ---------------------------------------------------------------------------------------- judging
def judged_answers(loaded: LoadedModel, samples: Sequence[Sample], texts: Sequence[str], *, cfg: TrainConfig, role: str,
                   run_dir: Path | None = None) -> list[str]:
    """The ``data_judge`` verdict of each own completion, cached in ``run_dir/own_answers_<role>.json``.

    The cache key covers everything the verdicts depend on: the model fingerprint, the prompts and
    completions, ``own_max_new_tokens``, ``data_judge`` and the judge it resolves to.
    """
    if not samples:
        return []
    from mosr.judges import get_judge

    judge = get_judge(cfg.data_judge)
    key_fields = {"role": role, "fingerprint": loaded.fingerprint, "own_max_new_tokens": cfg.own_max_new_tokens,
                  "data_judge": cfg.data_judge, "judge": getattr(judge, "name", type(judge).__name__),
                  "items": hashlib.sha256(json.dumps([[s.id, s.prompt, t] for s, t in zip(samples, texts)]).encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    path = None if run_dir is None else Path(run_dir) / f"own_answers_{role}.json"
    if path is not None and path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return [item["verdict"] for item in cached["items"]]
    verdicts = [j.verdict for j in judge.judge([s.prompt for s in samples], list(texts))]
    if path is not None:
        payload = {"key": key, "fields": {k: v for k, v in key_fields.items() if k != "items"},
                   "items": [{"id": s.id, "prompt": s.prompt, "completion": t, "verdict": v} for s, t, v in zip(samples, texts, verdicts)]}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False, indent=0))
    return verdicts


# -------------------------------------------------------------------------------------------- builder
def _load_many(specs: Sequence[str], key: str) -> list[Sample]:
    out: list[Sample] = []
    for spec in specs:
        name = spec.partition(":")[0]
        if name and ":" not in spec and spec.partition(".")[2] == "":
            from mosr.data import REGISTRY

            info = REGISTRY.get(name)
            if info is not None and "eval" in info.role and info.splits:
                raise ConfigError(f"{key}: {spec!r} names the whole dataset, which includes evaluation splits; use {name}:train")
        if spec.endswith(":test"):
            raise ConfigError(f"{key}: {spec!r} is a test split; train on :train and choose settings on :val")
        try:
            out.extend(load_dataset(spec))
        except DataError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
    return out


def _cap(samples: list[Sample], cap: int | None) -> list[Sample]:
    if cap is None or len(samples) <= cap:
        return samples
    order = sorted(samples, key=lambda s: s.id)
    random.Random(_SELECT_SEED).shuffle(order)
    return order[:cap]


def _drop_leaks_fixed_point(samples: list[Sample], evals: Sequence[Sample], threshold: float) -> list[Sample]:
    """Drop leaking samples until none is left (near-duplicate scores depend on the whole set, so repeat)."""
    kept = samples
    for _ in range(10):
        new, leaks = drop_leaks(kept, evals, threshold=threshold)
        if not leaks:
            return new
        kept = new
    return kept


def build_training_data(loaded: LoadedModel, cfg: TrainConfig, *, evals: Sequence[Sample] | None = None,
                        run_dir: str | Path | None = None) -> TrainingData:
    """Load, leak-check, complete (with the base model) and filter the sets the method needs.

    ``run_dir``: where the judge verdicts on the own completions are cached (see :func:`judged_answers`).
    """
    spec = cfg.spec
    evals = list(evals) if evals is not None else evaluation_samples(validation=cfg.leak_check_val)
    summary: dict[str, Any] = {}
    need_malicious = spec.rep_loss or spec.refusal_ce
    need_benign = spec.rep_loss or spec.ce_retain or cfg.retain_gamma > 0
    need_pseudo = spec.pseudo_retain or spec.oalw or cfg.compliance_gamma > 0

    pairs = _cap(_load_many(cfg.pair_datasets, "pair_datasets"), cfg.max_pairs) if need_malicious else []
    harmful = _cap(_load_many(cfg.harmful_datasets, "harmful_datasets"), cfg.max_harmful) if need_malicious else []
    benign = _cap(_load_many(cfg.retain_datasets, "retain_datasets"), cfg.max_retain) if need_benign else []
    pseudo = _cap(_load_many(cfg.pseudo_datasets, "pseudo_datasets"), cfg.max_pseudo) if need_pseudo else []
    if any(s.reference is None for s in pairs):
        bad = next(s for s in pairs if s.reference is None)
        raise ConfigError(f"pair_datasets: sample {bad.id} has no reference response; put prompt-only sets in harmful_datasets")

    roles = {"pair_datasets": pairs, "harmful_datasets": harmful, "retain_datasets": benign, "pseudo_datasets": pseudo}
    union = [s for group in roles.values() for s in group]
    kept_ids = {s.id for s in _drop_leaks_fixed_point(union, evals, cfg.leak_threshold)}
    dropped: dict[str, int] = {}
    for key, group in roles.items():
        clean = [s for s in group if s.id in kept_ids]
        dropped[key] = len(group) - len(clean)
        if group and not clean:
            raise TrainingError(f"{key}: every sample leaks into the evaluation sets; choose another dataset")
        roles[key] = clean
    summary["leaks_dropped"] = dropped
    pairs, harmful, benign, pseudo = roles["pair_datasets"], roles["harmful_datasets"], roles["retain_datasets"], roles["pseudo_datasets"]
    try:
        assert_no_leaks(pairs + harmful + benign + pseudo, evals, threshold=cfg.leak_threshold)
    except DataError as exc:
        raise TrainingError(f"leak check failed: {exc}") from exc
    log.info("leak check: dropped %s; %d training prompts left, none leaks", dropped, len(kept_ids))
    summary["leak_check"] = {"eval_samples": len(evals), "threshold": cfg.leak_threshold, "passed": True}

    gen = {"max_new_tokens": cfg.own_max_new_tokens, "batch_size": cfg.gen_batch_size}
    malicious = [Pair(s.id, s.prompt, s.reference or "", "malicious", s.source) for s in pairs]
    own_refusals = 0
    run = Path(run_dir) if run_dir is not None else None
    origin = {"harmful": completion_origin(loaded, harmful, cfg.own_max_new_tokens)}
    texts = own_completions(loaded, harmful, desc="own completions (harmful)", **gen)
    for s, text, verdict in zip(harmful, texts, judged_answers(loaded, harmful, texts, cfg=cfg, role="harmful", run_dir=run)):
        if not text.strip() or verdict == "refusal":  # a refusal is nothing to erase
            own_refusals += 1
            continue
        malicious.append(Pair(s.id, s.prompt, text, "malicious", s.source))
    summary["harmful_prompts_refused_by_base"] = own_refusals
    summary["data_judge"] = cfg.data_judge

    if cfg.retain_answers == "own":
        origin["benign"] = completion_origin(loaded, benign, cfg.own_max_new_tokens)
        answers = own_completions(loaded, benign, desc="own completions (benign)", **gen)
    else:
        missing = [s.id for s in benign if not s.reference]
        if missing:
            raise ConfigError(f"retain_answers=reference but {len(missing)} retain samples have no reference (e.g. {missing[0]}); use retain_answers=own")
        answers = [s.reference or "" for s in benign]
    benign_pairs = [Pair(s.id, s.prompt, a, "benign", s.source) for s, a in zip(benign, answers)]

    pseudo_pairs, pseudo_other = [], []
    pseudo_refused = 0
    origin["pseudo"] = completion_origin(loaded, pseudo, cfg.own_max_new_tokens)
    texts = own_completions(loaded, pseudo, desc="own completions (pseudo-malicious)", **gen)
    for s, text, verdict in zip(pseudo, texts, judged_answers(loaded, pseudo, texts, cfg=cfg, role="pseudo", run_dir=run)):
        if not text.strip() or verdict != "compliance":
            pseudo_refused += 1  # a refusal (or gibberish, or a partial answer) is not a compliant answer to retain
            pseudo_other.append(Pair(s.id, s.prompt, text, "pseudo", s.source))  # OALW reference only (oalw_reference: all)
            continue
        pseudo_pairs.append(Pair(s.id, s.prompt, text, "pseudo", s.source))
    summary["pseudo_prompts_refused_by_base"] = pseudo_refused
    summary["own_completions"] = {role: where for role, where in origin.items() if where != "none"}  # cache, shipped or generated

    if need_malicious and not malicious:
        raise ConfigError("pair_datasets/harmful_datasets: no malicious samples left after the leak check and refusal filter")
    if need_benign and not benign_pairs:
        raise ConfigError("retain_datasets: no benign samples left after the leak check")
    if need_pseudo and not pseudo_pairs:
        raise ConfigError("pseudo_datasets: no pseudo-malicious samples with a compliant answer left")

    hashes = {"malicious": samples_hash(pairs + harmful), "benign": samples_hash(benign), "pseudo": samples_hash(pseudo)}
    return TrainingData(malicious, benign_pairs, pseudo_pairs, load_templates(cfg.refusal_templates), hashes, summary, pseudo_other)


def save_pairs(data: TrainingData) -> list[dict[str, Any]]:
    """All pairs as JSON-friendly records (written to the run folder as ``train_data.jsonl``)."""
    return [asdict(p) for p in data.malicious + data.benign + data.pseudo]
